"""Table and file generators, and structural probes, for the file-engine tests.

Writers: :func:`make_table` (flat, nested, null-heavy columns), :func:`write_pyarrow`
(every pyarrow writer knob the engine must preserve), :func:`write_duckdb`.

Probes (independent of the engine: built on the reference reader
:class:`pme_reference.RefFile`, which shares no code with pqseal): :func:`pages` (plaintext
page headers and bodies of every chunk), :func:`raw_chunks` (on-disk chunk bytes),
:func:`indexes` (column/offset index and
bloom filter, offsets made chunk-relative), :func:`module_map` (file offset of every PME
module, for tamper tests) and :func:`rewrite_footer` (edit a footer and re-seal it with the
right key, to reach modules that live inside the footer).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import traceback

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pqseal.crypto import GcmModuleCipher, ModuleType
from pqseal.format import DecryptionProperties, plan, thrift
from pqseal.format.layout import FOOTER_TRAILER, PageType
from pqseal.format.source import Source

from pme_reference import RefFile

# ASCII-letter keys: DuckDB takes a 16/24/32-character string as the raw key.
K16 = b"abcdefghijklmnop"
K24 = b"ABCDEFGHIJKLMNOPQRSTUVWX"
K32 = b"qrstuvwxyzABCDEFGHIJKLMNOPQRSTUV"
KC1 = bytes(range(16))
KC2 = bytes(range(100, 124))
KC3 = bytes(range(200, 232))
KEYS = {16: K16, 24: K24, 32: K32}

# --------------------------------------------------------------------------- exceptions

def scrub(exc: BaseException | None) -> None:
    """Clear the frames of an exception chain's tracebacks (locals released by refcount).

    Found by these tests (fixed in 5ae846e, regression test in test_engine_tamper.py): an
    InvalidTag raised from a native batch call left cffi buffer exports of memoryviews alive
    in the raising frame; when such a traceback was freed by the cyclic GC (pytest.raises
    makes a cycle: the ExceptionInfo is a local of a frame in its own traceback), CPython
    3.11 tp_cleared the still-exported memoryview and later dereferenced its NULL managed
    buffer: SIGSEGV. Kept so caught exceptions never pin frames (and mmaps) until a GC."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if exc.__traceback__ is not None:
            traceback.clear_frames(exc.__traceback__)
        exc = exc.__cause__ or exc.__context__


@contextlib.contextmanager
def raises(expected, *, match=None):
    """``pytest.raises`` that scrubs the caught exception's frames afterwards."""
    import pytest

    with pytest.raises(expected, match=match) as ei:
        yield ei
    scrub(ei.value)


# --------------------------------------------------------------------------- tables


def make_table(rows: int = 30_000, *, seed: int = 0, nested: bool = True, nulls: bool = True) -> pa.Table:
    """Mixed flat columns (ints, low-cardinality strings for dictionaries, floats,
    booleans, binary), optionally nested list/struct/map columns and null-heavy ones."""
    rng = np.random.default_rng(seed)
    cols = {
        "id": pa.array(np.arange(rows, dtype=np.int64)),
        "cat": pa.array([f"c{v}" for v in rng.integers(0, 50, rows)], pa.string()),
        "x": pa.array(rng.standard_normal(rows)),
        "flag": pa.array(rng.integers(0, 2, rows).astype(bool)),
        "blob": pa.array([bytes(rng.integers(0, 256, int(n), dtype=np.uint8)) for n in rng.integers(0, 12, rows)],
                         pa.binary()),
    }
    if nulls:
        mask = rng.random(rows) < 0.9
        cols["sparse"] = pa.array(rng.integers(-1000, 1000, rows), pa.int64(), mask=mask)
        cols["all_null"] = pa.nulls(rows, pa.string())
    if nested:
        lens = rng.integers(0, 4, rows)
        offs = np.concatenate([[0], np.cumsum(lens)]).astype(np.int32)
        vals = pa.array(rng.integers(0, 100, int(offs[-1])).astype(np.int32))
        lst = pa.ListArray.from_arrays(pa.array(offs), vals)
        cols["l"] = lst
        cols["s"] = pa.StructArray.from_arrays(
            [pa.array(rng.integers(0, 10, rows).astype(np.int16)),
             pa.array([None if i % 7 == 0 else f"y{i % 13}" for i in range(rows)], pa.string())], names=["a", "b"])
        mlens = rng.integers(0, 3, rows)
        moffs = np.concatenate([[0], np.cumsum(mlens)]).astype(np.int32)
        n = int(moffs[-1])
        cols["m"] = pa.MapArray.from_arrays(pa.array(moffs), pa.array([f"k{i % 5}" for i in range(n)], pa.string()),
                                            pa.array(rng.integers(0, 1000, n), pa.int64()))
    return pa.table(cols)


def leaf_paths(table_or_path) -> list[str]:
    """Dotted leaf paths of a file, in column order."""
    md = pq.ParquetFile(table_or_path).metadata
    return [md.schema.column(i).path for i in range(md.num_columns)]


def write_pyarrow(path, table: pa.Table, **kw) -> str:
    """``pq.write_table`` with test defaults: several row groups, many small pages."""
    kw.setdefault("row_group_size", 10_000)
    kw.setdefault("data_page_size", 8 << 10)
    pq.write_table(table, path, **kw)
    return os.fspath(path)


def write_duckdb(path, rows: int = 15_000, *, key: bytes | None = None, row_group_size: int | None = None) -> str:
    """A DuckDB-written file, plaintext or (``key``) DuckDB-encrypted."""
    import duckdb

    con = duckdb.connect()
    try:
        opts = []
        if row_group_size:
            opts.append(f"ROW_GROUP_SIZE {row_group_size}")
        if key is not None:
            con.execute(f"PRAGMA add_parquet_key('k', '{key.decode()}')")
            con.execute("SET force_mbedtls_unsafe='true'")
            opts.append("ENCRYPTION_CONFIG {footer_key: 'k'}")
        q = ("SELECT range AS id, (range % 37)::VARCHAR AS cat, CASE WHEN range % 3 = 0 THEN NULL "
             f"ELSE range * 1.5 END AS x, [range, range + 1] AS l, {{'a': range % 5, 'b': 'z'}} AS s "
             f"FROM range({rows})")
        con.execute(f"COPY ({q}) TO '{os.fspath(path)}' (FORMAT parquet{', ' if opts else ''}{', '.join(opts)})")
    finally:
        con.close()
    return os.fspath(path)


# --------------------------------------------------------------------------- key material

def pkmt1(master_key_id: str, dek: bytes, *, footer: bool) -> bytes:
    """Arrow-style internal key material for a singly wrapped DEK whose "wrapping" is
    plain base64 (what the test KMS of the interop tests does)."""
    m = {"keyMaterialType": "PKMT1", "internalStorage": True, "isFooterKey": footer}
    if footer:
        m.update(kmsInstanceID="DEFAULT", kmsInstanceURL="DEFAULT")
    m.update(masterKeyID=master_key_id, wrappedDEK=base64.b64encode(dek).decode(), doubleWrapping=False)
    return json.dumps(m, separators=(",", ":")).encode()


def dek_from_material(md: bytes | None, path=None) -> bytes:
    """Key retriever for base64-"wrapped" single-wrapping key material."""
    return base64.b64decode(json.loads(md)["wrappedDEK"])


# --------------------------------------------------------------------------- probes

def sha256(path) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def pages(path, dec: DecryptionProperties | None = None, *, drop=("crc",)) -> dict:
    """{(rg, col): [(header dict, body bytes), ...]} of plaintext pages (decrypted when
    the file is encrypted), read by the independent reference reader. ``drop``: header
    fields left out (the CRC covers the bytes as written, so it differs between an
    encrypted file and its plaintext)."""
    f = RefFile(path, dec)
    return {(c.rg, c.col): [({k: v for k, v in p.header.items() if k not in drop}, p.body) for p in f.pages(c)]
            for c in f.columns()}


def raw_chunks(path, dec: DecryptionProperties | None = None) -> dict:
    """{(rg, col): bytes} of every column chunk as stored on disk."""
    f = RefFile(path, dec)
    return {(c.rg, c.col): f.data[c.start:c.end] for c in f.columns()}


_OFFSET_FIELDS = ("data_page_offset", "dictionary_page_offset", "index_page_offset", "bloom_filter_offset")


def column_metas(path, dec: DecryptionProperties | None = None) -> dict:
    """{(rg, col): plaintext ColumnMetaData minus file offsets}."""
    return {(c.rg, c.col): {k: v for k, v in c.meta.items() if k not in _OFFSET_FIELDS}
            for c in RefFile(path, dec).columns()}


def indexes(path, dec: DecryptionProperties | None = None) -> dict:
    """{(rg, col): {"column_index": bytes | None, "offset_index": dict | None,
    "bloom": (header, bitset) | None}} with page locations relative to the chunk start."""
    f = RefFile(path, dec)
    out = {}
    for c in f.columns():
        oi = f.offset_index(c)
        if oi is not None:
            oi["page_locations"] = [dict(loc, offset=loc["offset"] - c.start) for loc in oi["page_locations"]]
        out[c.rg, c.col] = {"column_index": f.column_index(c), "offset_index": oi, "bloom": f.bloom_filter(c)}
    return out


def footer(path, dec: DecryptionProperties | None = None) -> dict:
    return RefFile(path, dec).fmd


# --------------------------------------------------------------------------- module map

class Module(plan.Module):
    """A PME module of a file (the footer and index modules have no page, the footer no
    row group or column)."""

    @property
    def ciphertext_offset(self) -> int:
        """A byte in the middle of the ciphertext or tag (past prefix and nonce)."""
        return self.offset + 16 + (self.length - 16) // 2


def module_map(path, dec: DecryptionProperties) -> list[Module]:
    """Every PME module of a file, in file order within each chunk (read by the reference
    reader): each page header module is followed by its page module (which, for DataPageV2
    pages in the parquet-java framing, comes after ``levels`` plaintext bytes), then the
    column index, offset index and bloom filter modules. Encrypted column metadata lives
    inside the footer and is not listed."""
    f = RefFile(path, dec)
    mods = [] if f.footer_module is None else [Module(ModuleType.FOOTER, None, None, None, f.footer_module.offset,
                                                      f.footer_module.length)]
    for c in f.columns():
        if c.encryption == "plaintext":
            continue
        ordinal = 0
        for p in f.pages(c):
            is_dict = p.header_module.kind == ModuleType.DICTIONARY_PAGE_HEADER
            page = None if is_dict else ordinal
            mods.append(Module(ModuleType(p.header_module.kind), c.rg, c.col, page, p.header_module.offset,
                               p.header_module.length))
            mods.append(Module(ModuleType(p.page_module.kind), c.rg, c.col, page, p.page_module.offset,
                               p.page_module.length, p.levels))
            ordinal += not is_dict
        mods += [Module(ModuleType(m.kind), c.rg, c.col, None, m.offset, m.length) for m in f.index_modules(c)]
    return mods


def flip_bit(src, dst, offset: int, bit: int = 0) -> str:
    with open(src, "rb") as f:
        data = bytearray(f.read())
    data[offset] ^= 1 << bit
    with open(dst, "wb") as f:
        f.write(data)
    return os.fspath(dst)


def splice(src, dst, edits: dict) -> str:
    """Copy ``src`` to ``dst`` replacing ``{offset: bytes}`` ranges (same lengths)."""
    with open(src, "rb") as f:
        data = bytearray(f.read())
    for off, new in edits.items():
        data[off:off + len(new)] = new
    with open(dst, "wb") as f:
        f.write(data)
    return os.fspath(dst)


def rewrite_footer(src, dst, footer_key: bytes, mutate, *, aad_prefix: bytes | None = None) -> str:
    """Decode the footer of a PME file, apply ``mutate(fmd)`` and re-seal it (encrypted
    footer: re-encrypt with the footer key; plaintext footer: re-sign), so that tampering
    inside the footer reaches the modules it carries (encrypted column metadata) or the
    row-group structure without tripping the footer check itself."""
    dec = DecryptionProperties(footer_key, aad_prefix=aad_prefix)
    with Source(src, dec) as s:
        fmd = {k: v for k, v in s.fmd.items()}
        file_aad = s.file_aad()
        t = s.tail
        data = bytes(s.read(0, t.footer_offset))
        region = bytes(s.read(t.footer_offset, t.file_size - FOOTER_TRAILER - t.footer_offset))
    mutate(fmd)
    gcm = GcmModuleCipher(footer_key, file_aad)
    body = thrift.encode("FileMetaData", fmd)
    if t.encrypted_footer:
        fcm_end = thrift.skip("FileCryptoMetaData", region, 0)
        tail = region[:fcm_end] + bytes(gcm.encrypt(body, ModuleType.FOOTER))
        magic = b"PARE"
    else:
        tail = body + gcm.footer_signature(body)
        magic = b"PAR1"
    with open(dst, "wb") as f:
        f.write(data + tail + len(tail).to_bytes(4, "little") + magic)
    return os.fspath(dst)


def page_types(path, dec=None) -> set:
    return {h["type"] for lst in pages(path, dec).values() for h, _ in lst}


def count_data_pages(path, rg: int = 0, col: int = 0) -> int:
    f = RefFile(path)
    return sum(1 for p in f.pages(f.column(rg, col)) if p.header["type"] in (PageType.DATA_PAGE, PageType.DATA_PAGE_V2))
