"""The plaintext view (``pqseal.open(path, "rb")``, issue 9 item 3): real readers
(pyarrow, polars, pandas with both engines, DuckDB) read PME files of every dialect
through it and get what they get from the plaintext file; the view's bytes, read by the
independent reference reader, hold the same pages, indexes, bloom filters and column
metadata as the encrypted file; a read decrypts only what it touches; tampering, wrong
keys and damage surface as pqseal's typed errors through each reader."""

from __future__ import annotations

import base64
import functools
import io
import os
import warnings

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pyarrow.parquet.encryption as pe
import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

import pqseal
from pqseal.crypto import ModuleType
from pqseal.errors import InvalidTag, KeyAccessDenied, KeyNotFound, MalformedFile
from pqseal.format import DecryptionProperties, EncryptionProperties, thrift
from pqseal.io.view import open_view, padded, view_size
from pqseal.kms import KeyListKms

import parquet_gen as G
from interop import require
from pme_reference import RefFile

pl = require("polars")
pd = require("pandas")
duckdb = require("duckdb")
fastparquet = require("fastparquet")

K = G.K16
DEC = DecryptionProperties(K)
MASTER = {"kf": os.urandom(16), "kc1": os.urandom(16), "kc2": os.urandom(32)}
KEY_LIST = ", ".join(f"{k}: {base64.b64encode(v).decode()}" for k, v in MASTER.items())
PYARROW_WRITER = dict(row_group_size=4_000, data_page_size=8 << 10, write_page_index=True)


class PyarrowKeyList(pe.KmsClient):
    """pyarrow's KMS client for the KMS dialect: InMemoryKMS wrapping done with
    `cryptography` directly, independent of pqseal."""

    def __init__(self, cfg):
        super().__init__()

    def wrap_key(self, key_bytes, master_key_identifier):
        nonce = os.urandom(12)
        ct = AESGCM(MASTER[master_key_identifier]).encrypt(nonce, bytes(key_bytes), master_key_identifier.encode())
        return base64.b64encode(nonce + ct).decode()

    def unwrap_key(self, wrapped_key, master_key_identifier):
        raw = base64.b64decode(wrapped_key)
        return AESGCM(MASTER[master_key_identifier]).decrypt(raw[:12], raw[12:], master_key_identifier.encode())


# ---- the files: every dialect, with the plaintext file it must read as ----------------------


@pytest.fixture(scope="module")
def table():
    return G.make_table(12_000)


@pytest.fixture(scope="module")
def files(tmp_path_factory, table):
    """``files(dialect)`` -> (encrypted path, view options, plaintext oracle path)."""
    d = tmp_path_factory.mktemp("view")
    plain = G.write_pyarrow(d / "plain.parquet", table, bloom_filter_options={"id": True, "cat": True},
                            write_page_checksum=True, **PYARROW_WRITER)
    plain_v2 = G.write_pyarrow(d / "plain_v2.parquet", table, data_page_version="2.0", **PYARROW_WRITER)

    def seal(name, src=plain, dec=DEC, **enc):
        out = d / f"{name}.parquet"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)   # the DataPageV2 framing notice
            pqseal.encrypt_file(src, out, EncryptionProperties(K, **enc))
        return str(out), dict(decryption=dec), src

    def pyarrow_written(name, **kw):
        out, ref = d / f"{name}.parquet", d / f"{name}-plain.parquet"
        G.write_pyarrow(out, table, encryption_properties=pe.create_encryption_properties(K, **kw), **PYARROW_WRITER)
        G.write_pyarrow(ref, table, **PYARROW_WRITER)
        return str(out), dict(decryption=DEC), str(ref)

    def kms_written(name):
        out, ref = d / f"{name}.parquet", d / f"{name}-plain.parquet"
        cfg = pe.EncryptionConfiguration(footer_key="kf", column_keys={"kc1": ["x", "l.list.element"],
                                                                       "kc2": ["cat"]})
        props = pe.CryptoFactory(PyarrowKeyList).file_encryption_properties(pe.KmsConnectionConfig(), cfg, str(out))
        G.write_pyarrow(out, table, encryption_properties=props, **PYARROW_WRITER)
        G.write_pyarrow(ref, table, **PYARROW_WRITER)
        return str(out), dict(decryption=pe.DecryptionConfiguration(), kms=KeyListKms(KEY_LIST)), str(ref)

    def duckdb_written(name):
        out, ref = d / f"{name}.parquet", d / f"{name}-plain.parquet"
        G.write_duckdb(out, 9_000, key=K, row_group_size=3_000)
        G.write_duckdb(ref, 9_000, row_group_size=3_000)
        return str(out), dict(decryption=DEC), str(ref)

    builders = {
        "gcm": lambda: seal("gcm"),
        "gcm-plainfooter": lambda: seal("gcm-pf", plaintext_footer=True),
        "ctr": lambda: seal("ctr", algorithm="AES_GCM_CTR_V1"),
        "ctr-plainfooter": lambda: seal("ctr-pf", algorithm="AES_GCM_CTR_V1", plaintext_footer=True),
        "aad-stored": lambda: seal("aad", aad_prefix=b"prefix"),
        "aad-supplied": lambda: seal("aads", aad_prefix=b"prefix", store_aad_prefix=False,
                                     dec=DecryptionProperties(K, aad_prefix=b"prefix")),
        "column-keys": lambda: seal("ck", column_keys={"x": G.KC1, "s.b": G.KC2, "m.key_value.value": G.KC3},
                                    dec=DecryptionProperties(K, column_keys={"x": G.KC1, "s.b": G.KC2,
                                                                             "m.key_value.value": G.KC3})),
        "pyarrow-gcm": lambda: pyarrow_written("pa-gcm"),
        "pyarrow-ctr-plainfooter": lambda: pyarrow_written("pa-ctr", encryption_algorithm="AES_GCM_CTR_V1",
                                                           plaintext_footer=True),
        "pyarrow-kms": lambda: kms_written("pa-kms"),
        "duckdb": lambda: duckdb_written("duck"),
        "v2-arrow": lambda: seal("v2a", src=plain_v2),
        "v2-parquet-java": lambda: seal("v2j", src=plain_v2, v2_framing="parquet-java"),
    }
    return functools.cache(lambda dialect: builders[dialect]())


DIALECTS = ["gcm", "gcm-plainfooter", "ctr", "ctr-plainfooter", "aad-stored", "aad-supplied", "column-keys",
            "pyarrow-gcm", "pyarrow-ctr-plainfooter", "pyarrow-kms", "duckdb", "v2-arrow", "v2-parquet-java"]


def view_of(files, dialect, **kw):
    path, opts, _ = files(dialect)
    return pqseal.open(path, "rb", **opts, **kw)


# ---- real readers ----------------------------------------------------------------------------


def _pandas(engine):
    def read(src):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")   # pandas deprecates its fastparquet engine
            return pd.read_parquet(src, engine=engine)
    return read


READERS = {
    "pyarrow.read_table": (lambda f: pq.read_table(f), lambda a, b: a.equals(b)),
    "pyarrow.ParquetFile": (lambda f: pq.ParquetFile(f).read(), lambda a, b: a.equals(b)),
    "polars.read_parquet": (lambda f: pl.read_parquet(f), lambda a, b: a.equals(b)),
    "polars.scan_parquet": (lambda f: pl.scan_parquet(f).collect(), lambda a, b: a.equals(b)),
    "pandas-pyarrow": (_pandas("pyarrow"), lambda a, b: a.equals(b)),
    "pandas-fastparquet": (_pandas("fastparquet"), lambda a, b: a.equals(b)),
    "duckdb": (lambda f: duckdb.read_parquet(f).fetchall(), lambda a, b: a == b),
}


@pytest.mark.parametrize("reader", list(READERS))
@pytest.mark.parametrize("dialect", DIALECTS)
def test_readers_read_the_view_as_the_plaintext_file(files, dialect, reader):
    read, same = READERS[reader]
    _, _, plain = files(dialect)
    with view_of(files, dialect) as v:
        got = read(v)
        assert v.decrypted_bytes > 0
    want = read(plain)
    assert same(got, want)


def test_view_equals_source_table(files, table):
    """Independent of any reader's handling of the plaintext file: the table pyarrow wrote."""
    for dialect in ("gcm", "ctr-plainfooter", "column-keys", "v2-parquet-java"):
        with view_of(files, dialect) as v:
            assert pq.read_table(v).equals(table)


def _view_file(v, path):
    v.seek(0)
    with open(path, "wb") as f:
        f.write(v.read())
    return path


def _indexes(path, dec=None):
    """G.indexes with the bloom filter headers' pad fields (unknown ids) left out."""
    out = G.indexes(path, dec)
    for ix in out.values():
        if ix["bloom"] is not None:
            hdr, bits = ix["bloom"]
            ix["bloom"] = ({f: x for f, x in hdr.items() if not isinstance(f, int)}, bits)
    return out


def _no_pad(page_map):
    return {k: [({f: x for f, x in h.items() if not isinstance(f, int)}, body) for h, body in pages]
            for k, pages in page_map.items()}


@pytest.mark.parametrize("dialect", DIALECTS)
def test_view_holds_the_encrypted_files_pages_indexes_and_metadata(files, dialect, tmp_path):
    """Read by the reference reader: the view's pages (headers without their CRC, which
    covered encrypted bytes), offset and column indexes, bloom filters and column
    metadata (statistics included, also where a plaintext footer redacted them) are the
    encrypted file's, at the same offsets."""
    path, opts, _ = files(dialect)
    dec = pqseal.api.decryption_properties(path, opts["decryption"], kms=opts.get("kms"))
    with view_of(files, dialect) as v:
        out = _view_file(v, tmp_path / "view.parquet")
    ref, enc = RefFile(out), RefFile(path, dec)
    assert ref.data[:4] == b"PAR1" and ref.magic == b"PAR1" and ref.algorithm_union is None
    assert _no_pad(G.pages(out)) == _no_pad(G.pages(path, dec))
    assert _indexes(out) == _indexes(path, dec)
    if dialect in ("gcm", "gcm-plainfooter", "ctr"):
        assert any(ix["bloom"] for ix in _indexes(out).values())
        assert any(ix["offset_index"] for ix in _indexes(out).values())
    for a, b in zip(ref.columns(), enc.columns()):
        assert a.meta == b.meta and "crypto_metadata" not in a.chunk and "encrypted_column_metadata" not in a.chunk
    assert {k: v for k, v in ref.fmd.items() if k != "row_groups"} == \
        {k: v for k, v in enc.fmd.items() if k not in ("row_groups", "encryption_algorithm",
                                                       "footer_signing_key_metadata")}


def test_statistics_and_row_group_filters(files, table):
    """Statistics of a plaintext footer are redacted in the file; the view carries them."""
    with view_of(files, "gcm-plainfooter") as v:
        md = pq.ParquetFile(v).metadata
        stats = md.row_group(1).column(0).statistics
        assert (stats.min, stats.max) == (4_000, 7_999)
        got = pq.read_table(v, filters=[("id", ">=", 8_000)])
        assert got.equals(table.slice(8_000))


@pytest.mark.parametrize("dialect,where", [("gcm", "cat = 'c7'"), ("duckdb", "cat = '7'")])
def test_duckdb_filters_through_the_view(files, dialect, where):
    """DuckDB prunes with statistics and bloom filters ("gcm": encrypted bloom filters,
    presented with padded headers)."""
    _, _, plain = files(dialect)
    with view_of(files, dialect) as v:
        got = duckdb.read_parquet(v).filter(where).aggregate("count(*)").fetchall()
    assert got == duckdb.read_parquet(plain).filter(where).aggregate("count(*)").fetchall() and got[0][0] > 0


# ---- decrypting only what is read ------------------------------------------------------------


@pytest.fixture(scope="module")
def wide(tmp_path_factory):
    """20 columns, 4 row groups, ~6 MB."""
    d = tmp_path_factory.mktemp("wide")
    rng = np.random.default_rng(1)
    n = 40_000
    t = pa.table({f"c{i}": rng.standard_normal(n) if i % 2 else rng.integers(0, 1 << 40, n) for i in range(20)})
    plain = d / "plain.parquet"
    pq.write_table(t, plain, row_group_size=10_000)
    enc = d / "enc.parquet"
    pqseal.encrypt_file(plain, enc, EncryptionProperties(K))
    return t, str(enc)


def test_reading_one_of_twenty_columns_decrypts_only_that_column(wide):
    t, enc = wide
    with pqseal.open(enc, decryption=DEC) as v:
        opened = v.decrypted_bytes
        got = pq.read_table(v, columns=["c7"])
        assert got.equals(t.select(["c7"]))
        md = pq.ParquetFile(enc, decryption_properties=pe.create_decryption_properties(K)).metadata
        chunk = sum(md.row_group(r).column(7).total_compressed_size for r in range(md.num_row_groups))
        assert chunk <= v.decrypted_bytes - opened                     # the column was decrypted...
        assert v.decrypted_bytes <= 0.1 * os.path.getsize(enc)         # ...and little else


def test_fastparquet_reads_one_column_selectively(wide):
    t, enc = wide
    with pqseal.open(enc, decryption=DEC) as v:
        got = _pandas_columns(v, ["c7"])
        assert np.array_equal(got["c7"].to_numpy(), t["c7"].to_numpy())
        assert v.decrypted_bytes <= 0.1 * os.path.getsize(enc)


def _pandas_columns(src, columns):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pd.read_parquet(src, engine="fastparquet", columns=columns)


def test_reading_one_row_group_decrypts_only_that_row_group(wide):
    t, enc = wide
    with pqseal.open(enc, decryption=DEC) as v:
        got = pq.ParquetFile(v).read_row_group(2)
        assert got.equals(t.slice(20_000, 10_000))
        assert v.decrypted_bytes <= (0.25 + 0.05) * os.path.getsize(enc)


def test_small_reads_and_bounded_cache(files):
    """A reader stepping through the file in small reads gets the same bytes, decrypts
    each page about once, and the cache stays within its bound (plus one page)."""
    with view_of(files, "gcm") as v:
        whole = v.read()
        full_cost = v.decrypted_bytes
    with view_of(files, "gcm", cache_bytes=32 << 10) as v:
        start = v.decrypted_bytes
        parts, largest = [], 0
        while chunk := v.read(1000):
            parts.append(chunk)
            largest = max(largest, v.cached_bytes)
        assert b"".join(parts) == whole
        assert largest <= (32 << 10) + (16 << 10)    # the bound plus at most one page (8 KiB pages)
        assert v.decrypted_bytes - start <= 1.05 * full_cost


def test_seek_tell_size_and_view_size(files):
    path, opts, _ = files("gcm-plainfooter")
    with pqseal.open(path, **opts) as v:
        data = v.read()
        assert len(data) == v.size == view_size(path, **opts)
        assert v.seekable() and v.readable() and not v.writable()
        assert v.seek(-8, os.SEEK_END) == v.size - 8 and v.read() == data[-8:]
        assert v.read() == b"" and v.tell() == v.size
        v.seek(100)
        buf = bytearray(50)
        assert v.readinto(buf) == 50 and bytes(buf) == data[100:150]
        assert v.seek(10, os.SEEK_CUR) == 160
        assert bytes(v.pread(5, 10)) == data[5:15] and v.tell() == 160
        with pytest.raises(ValueError):
            v.seek(-1)
    assert v.closed
    with pytest.raises(ValueError):
        v.read()


def test_file_objects_and_memory_as_source(files):
    path, opts, _ = files("ctr")
    with pqseal.open(path, **opts) as v:
        want = v.read()
    with open(path, "rb") as f:
        with open_view(f, **opts) as v:
            assert v.read() == want
        assert not f.closed
        with open_view(f, close_source=True, **opts) as v:
            assert bytes(v.pread(0, 64)) == want[:64]
        assert f.closed
    with open(path, "rb") as f:
        data = f.read()
    with open_view(io.BytesIO(data), **opts) as v:
        assert v.read() == want
    with open_view(data, **opts) as v:
        assert v.read() == want


def test_plaintext_file_passes_through(files):
    _, _, plain = files("gcm")
    with open(plain, "rb") as f:
        want = f.read()
    with pqseal.open(plain) as v:
        assert v.read() == want and v.size == len(want) == view_size(plain)
        assert v.decrypted_bytes == 0


def test_padded_struct_fits_every_size():
    """Header + pad fill any size from 2 bytes over the header on, read back by pqseal's
    codec and by fastparquet's own Thrift reader (the strictest one: no long-form field
    headers)."""
    from fastparquet.cencoding import NumpyIO, ThriftObject

    hdr = {"type": 0, "uncompressed_page_size": 100, "compressed_page_size": 50,
           "data_page_header": {"num_values": 10, "encoding": 0, "definition_level_encoding": 3,
                                "repetition_level_encoding": 3}}
    base = len(thrift.encode("PageHeader", hdr))
    for size in list(range(base + 2, base + 300)) + list(range(base + 16_370, base + 16_400)):
        out = padded("PageHeader", hdr, size)
        assert len(out) == size
        back, end = thrift.decode("PageHeader", out, 0)
        assert end == size and {k: x for k, x in back.items() if not isinstance(k, int)} == hdr
        stream = NumpyIO(np.frombuffer(out + b"\xff" * 4, np.uint8))
        ph = ThriftObject.from_buffer(stream, "PageHeader")
        assert stream.tell() == size and ph.compressed_page_size == 50
    with pytest.raises(MalformedFile):
        padded("PageHeader", hdr, base)


# ---- errors through the readers ----------------------------------------------------------


def _module(path, dec, kind, col=None):
    mods = [m for m in G.module_map(path, dec) if m.kind == kind and (col is None or m.col == col)]
    return mods[len(mods) // 2]


TAMPER_READERS = {
    "pyarrow": lambda f: pq.read_table(f),
    "pandas-pyarrow": _pandas("pyarrow"),
    "pandas-fastparquet": _pandas("fastparquet"),
    "duckdb": lambda f: duckdb.read_parquet(f).fetchall(),
}


@pytest.mark.parametrize("reader", list(TAMPER_READERS) + ["polars"])
@pytest.mark.parametrize("kind", [ModuleType.DATA_PAGE, ModuleType.DICTIONARY_PAGE, ModuleType.DATA_PAGE_HEADER])
def test_tampered_page_fails_in_every_reader(files, tmp_path, kind, reader):
    path, opts, _ = files("gcm")
    mod = _module(path, DEC, kind, col=1)      # column "cat"
    bad = G.flip_bit(path, tmp_path / "bad.parquet", mod.ciphertext_offset)
    v = pqseal.open(bad, **opts)
    named = rf"(?s)(?=.*\b{kind.name}\b)(?=.*\bcolumn cat\b)"     # the module and its column
    if reader == "polars":
        # polars 2.1 reads a file object whole and turns an exception of its read() into a
        # PanicException (a BaseException) that carries the exception's message
        with pytest.raises(BaseException, match=named) as ei:
            pl.read_parquet(v)
        assert "InvalidTag" in str(ei.value)
    else:
        with G.raises(InvalidTag, match=named) as ei:
            TAMPER_READERS[reader](v)
        assert ei.value.module_type in (kind, ModuleType(kind)) and ei.value.column == 1
    v.close()


@pytest.mark.parametrize("kind", [ModuleType.COLUMN_INDEX, ModuleType.OFFSET_INDEX, ModuleType.BLOOM_FILTER_HEADER,
                                  ModuleType.BLOOM_FILTER_BITSET])
def test_tampered_index_or_bloom_filter_fails_where_read(files, tmp_path, kind):
    path, opts, _ = files("gcm")
    mod = _module(path, DEC, kind)
    bad = G.flip_bit(path, tmp_path / "bad.parquet", mod.ciphertext_offset)
    with pqseal.open(bad, **opts) as v:
        # (pyarrow may read it too: its pre-buffering coalesces the gaps between the
        # chunks it reads, and the view decrypts whatever a read covers)
        with G.raises(InvalidTag, match=rf"\b{kind.name}\b"):
            v.read_buffer()


def test_ctr_page_tampering_caught_by_the_encrypted_crc(files, tmp_path):
    path, opts, _ = files("ctr")
    mod = _module(path, DEC, ModuleType.DATA_PAGE, col=0)
    bad = G.flip_bit(path, tmp_path / "bad.parquet", mod.ciphertext_offset)
    with pqseal.open(bad, **opts) as v:
        with G.raises(InvalidTag, match="CRC"):
            pq.read_table(v)


def test_tampered_footer_wrong_key_and_missing_keys_fail_at_open(files, tmp_path):
    path, opts, _ = files("gcm")
    with G.raises(InvalidTag, match="footer"):
        pqseal.open(path, decryption=DecryptionProperties(G.K32))
    bad = G.flip_bit(path, tmp_path / "bad.parquet", os.path.getsize(path) - 30)
    with G.raises(InvalidTag):
        pqseal.open(bad, **opts)
    ck, ck_opts, _ = files("column-keys")
    with G.raises(KeyNotFound, match="s.b"):
        pqseal.open(ck, decryption=DecryptionProperties(K, column_keys={"x": G.KC1, "m.key_value.value": G.KC3}))
    with G.raises(InvalidTag, match="column x"):
        pqseal.open(ck, decryption=DecryptionProperties(K, column_keys={"x": G.KC2, "s.b": G.KC2,
                                                                        "m.key_value.value": G.KC3}))
    kms, kms_opts, _ = files("pyarrow-kms")
    lacking = ", ".join(f"{k}: {base64.b64encode(v).decode()}" for k, v in MASTER.items() if k != "kc2")
    with G.raises((KeyNotFound, KeyAccessDenied), match="cat"):
        pqseal.open(kms, decryption=kms_opts["decryption"], kms=KeyListKms(lacking))


def test_truncated_file(files, tmp_path):
    path, opts, _ = files("gcm")
    with open(path, "rb") as f:
        data = f.read()
    short = tmp_path / "short.parquet"
    short.write_bytes(data[:len(data) // 2])
    with G.raises(MalformedFile):
        pqseal.open(short, **opts)
    # truncated after the view was opened: a typed error when the reader gets there
    copy = tmp_path / "copy.parquet"
    copy.write_bytes(data)
    with pqseal.open(copy, **opts) as v:
        os.truncate(copy, 4096)
        with G.raises(MalformedFile):
            pq.read_table(v)


def test_fsspec_file_as_source(files):
    fsspec = require("fsspec")
    path, opts, _ = files("gcm")
    with pqseal.open(path, **opts) as v:
        want = v.read()
    fs = fsspec.filesystem("memory")
    with open(path, "rb") as f:
        fs.pipe("/view/enc.parquet", f.read())
    with fs.open("/view/enc.parquet", "rb") as f:
        with open_view(f, **opts) as v:
            assert v.read() == want
            assert pq.read_table(v).equals(pq.read_table(pa.BufferReader(want)))


def test_empty_table(tmp_path):
    t = pa.table({"a": pa.array([], pa.int64()), "b": pa.array([], pa.string())})
    plain, enc = tmp_path / "plain.parquet", tmp_path / "enc.parquet"
    pq.write_table(t, plain)
    pqseal.encrypt_file(plain, enc, EncryptionProperties(K))
    with pqseal.open(enc, decryption=DEC) as v:
        assert pq.read_table(v).equals(t)
        assert pl.read_parquet(v).height == 0


def test_concurrent_reads_share_one_view(files):
    from concurrent.futures import ThreadPoolExecutor

    with view_of(files, "ctr") as v:
        want = bytes(v.pread(0, v.size))
    with view_of(files, "ctr", cache_bytes=16 << 10) as v:
        spans = [(o, 3_000 + o % 5_000) for o in range(0, v.size, 7_919)]
        with ThreadPoolExecutor(4) as ex:
            got = list(ex.map(lambda s: bytes(v.pread(*s)), spans))
        assert got == [want[o:o + n] for o, n in spans]


def test_padded_struct_keeps_unknown_fields():
    """A header that already carries an unknown field keeps it; the pad comes after."""
    hdr = {"type": 2, "uncompressed_page_size": 10, "compressed_page_size": 10,
           "dictionary_page_header": {"num_values": 1, "encoding": 0}, 12: (thrift.I32, b"\x04")}
    out = padded("PageHeader", hdr, 80)
    back, end = thrift.decode("PageHeader", out, 0)
    assert end == 80 and back[12] == (thrift.I32, b"\x04") and 27 in back


# ---- large reads: decrypted straight into the bytes returned ----------------------------------


def _small_reads(v, start: int, n: int) -> bytes:
    """The view's bytes [start, start + n) read in 4 KiB pieces (each copied the plain way)."""
    v.seek(start)
    parts = []
    while n > 0 and (piece := v.read(min(4096, n))):
        parts.append(piece)
        n -= len(piece)
    return b"".join(parts)


@pytest.mark.parametrize("dialect", ["gcm", "ctr", "duckdb", "v2-parquet-java", "plaintext", "in-memory"])
def test_large_reads_equal_small_reads(files, dialect):
    """read(), readall() and read(n) of large ranges return what 4 KiB reads return: for
    every layout part (pages, parquet-java's plaintext levels, indexes, bloom filters,
    plaintext gaps, a plaintext file, a file held in memory)."""
    path, opts, plain = files("gcm" if dialect in ("plaintext", "in-memory") else dialect)
    if dialect == "plaintext":
        path, opts = plain, {}
    elif dialect == "in-memory":
        with open(path, "rb") as f:
            path = f.read()
    with pqseal.open(path, **opts) if dialect != "in-memory" else open_view(path, **opts) as v:
        want = _small_reads(v, 0, v.size)
        assert len(want) == v.size
        v.seek(0)
        whole = v.read()
        assert type(whole) is bytes and whole == want and v.tell() == v.size
        v.seek(0)
        assert v.readall() == want
        a, n = 4099, v.size // 2
        v.seek(a)
        part = v.read(n)
        assert part == want[a:a + n] and v.tell() == a + n
        assert hash(part) == hash(bytes(bytearray(part)))      # an ordinary, complete bytes object
        if dialect == "plaintext":
            with open(plain, "rb") as f:
                assert whole == f.read()


def test_whole_read_holds_the_file_once(wide):
    """read() of the whole view allocates the bytes it returns and a chunk's buffer, not
    a second copy of the file."""
    import tracemalloc

    _, enc = wide
    with pqseal.open(enc, decryption=DEC) as v:
        v.read(1)
        v.seek(0)
        tracemalloc.start()
        try:
            data = v.read()
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert len(data) == v.size
        assert peak <= 1.25 * v.size


def test_fresh_bytes():
    from pqseal.io._bytes import MIN_SIZE, fresh_bytes

    assert fresh_bytes(MIN_SIZE - 1) is None
    for n in (MIN_SIZE, 5 << 20):
        data, out = fresh_bytes(n)
        other, _ = fresh_bytes(n)
        assert data is not other and out.flags.writeable and len(out) == n == len(data)
        out[:] = np.arange(n, dtype=np.uint64).astype(np.uint8)
        del data                                         # the array keeps the object alive
        assert bytes(out[:5]) == bytes(range(5)) and bytes(out[-1:]) == bytes([(n - 1) % 256])
