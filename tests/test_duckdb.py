"""DuckDB interop, pinned cell by cell: what DuckDB reads of PME files, and what it does not.

Every file DuckDB is asked to read is written twice, by pqseal (sealing pyarrow's plaintext
file) and by pyarrow's own encryption (``create_encryption_properties``: uniform key) with
the same data and writer settings; the two always get the same answer, so where DuckDB
fails, the failure is DuckDB's and not pqseal's. Layouts pyarrow cannot write (per-column
keys with its explicit-key API, plaintext columns, encrypted bloom filters) are pqseal's only.

Measured with DuckDB 2.0.1 (``read_parquet(..., encryption_config={footer_key: ...})``):

* reads: AES_GCM_V1, encrypted footer, one key for everything, flat columns (required or
  nullable, dictionary-encoded or not, V1 or V2 pages, page index and CRCs, any number of
  row groups, AES-128/256) when every column chunk has exactly one data page;
* "Computed AES tag differs": any chunk with more than one data page; any nested
  column (struct, list, map), even with one page per chunk; a stored AAD prefix; a column
  with a bloom filter;
* refused: AES_GCM_CTR_V1 ("only AES_GCM_V1 is supported"); plaintext (signed) footers
  ("is not encrypted, but 'encryption_config' was set"; without the option only the
  plaintext columns read); per-column keys (footer-key columns read, column-key columns:
  "column chunk is missing its metadata"); plaintext columns in an encrypted file (IO Error).

The other direction has no limits found: pqseal inspects, verifies, unseals and re-keys
DuckDB's encrypted files (flat and nested columns, one or many row groups; DuckDB writes
one data page per column chunk for these tables).

A failing cell asserts DuckDB's error, so a DuckDB release that fixes it fails here: then
move the cell to the readable side and update README.md's DuckDB paragraph.
"""

from __future__ import annotations

import contextlib
import itertools

import pyarrow as pa
import pyarrow.parquet as pq
import pyarrow.parquet.encryption as pe
import pytest

import pqseal
from pqseal.errors import InvalidTag
from pqseal.format import FOOTER_KEY, DecryptionProperties, EncryptionProperties

import parquet_gen as G
from interop import require

duckdb = require("duckdb")

TAG = "Computed AES tag differs"
N = 6_000
ONE_PAGE = dict(row_group_size=N, data_page_size=1 << 22)
MANY_PAGES = dict(row_group_size=N, data_page_size=1024)


def columns() -> dict[str, pa.Array]:
    return {
        "int": pa.array(range(N), pa.int64()),
        "str": pa.array([f"s{i % 97}" for i in range(N)]),
        "nullable": pa.array([None if i % 3 == 0 else i * 0.5 for i in range(N)]),
        "struct": pa.array([{"a": i, "b": f"b{i % 7}"} for i in range(N)]),
        "list": pa.array([[i, i + 1][: i % 3] for i in range(N)], pa.list_(pa.int32())),
        "map": pa.array([[("k", i)] for i in range(N)], pa.map_(pa.string(), pa.int64())),
    }


FLAT, NESTED = ("int", "str", "nullable"), ("struct", "list", "map")
COLS = columns()


@pytest.fixture(scope="module")
def con():
    c = duckdb.connect()
    c.execute(f"PRAGMA add_parquet_key('k16', '{G.K16.decode()}')")
    c.execute(f"PRAGMA add_parquet_key('k32', '{G.K32.decode()}')")
    c.execute("SET force_mbedtls_unsafe='true'")   # DuckDB refuses to write encrypted files without OpenSSL
    yield c
    c.close()


def duck_read(con, path, columns, key: str | None = "k16") -> dict:
    opt = "" if key is None else f", encryption_config={{footer_key: '{key}'}}"
    rows = con.execute(f"SELECT {', '.join(columns)} FROM read_parquet('{path}'{opt})").fetchall()
    return {c: [r[i] for r in rows] for i, c in enumerate(columns)}


def write_both(tmp_path, table, *, key=G.K16, algorithm="AES_GCM_V1", plaintext_footer=False, aad_prefix=None,
               **kw) -> dict:
    """{"pqseal": sealed copy of pyarrow's plaintext file, "pyarrow": pyarrow-encrypted file}."""
    plain, ours, theirs = tmp_path / "plain.parquet", tmp_path / "pqseal.parquet", tmp_path / "pyarrow.parquet"
    G.write_pyarrow(plain, table, **kw)
    pqseal.encrypt_file(plain, ours, EncryptionProperties(key, algorithm=algorithm, plaintext_footer=plaintext_footer,
                                                          aad_prefix=aad_prefix))
    G.write_pyarrow(theirs, table, encryption_properties=pe.create_encryption_properties(
        key, encryption_algorithm=algorithm, plaintext_footer=plaintext_footer, aad_prefix=aad_prefix), **kw)
    return {"plain": plain, "pqseal": ours, "pyarrow": theirs}


def data_pages(path) -> list[int]:
    """Data pages per column chunk (read by the reference reader)."""
    return [sum(h["type"] != 2 for h, _ in v) for v in G.pages(path).values()]


# --------------------------------------------------------------------------- the matrix

CELLS = list(itertools.product(FLAT + NESTED, ("one", "many"), (True, False)))


@pytest.mark.parametrize("column,pages,dictionary", CELLS,
                         ids=[f"{c}-{p}page-{'dict' if d else 'plain'}" for c, p, d in CELLS])
def test_gcm_uniform_encrypted_footer(con, tmp_path, column, pages, dictionary):
    """Flat columns with one data page per chunk read; everything else fails DuckDB's tag
    check, for pyarrow's files exactly as for pqseal's."""
    t = pa.table({"id": COLS["int"], column: COLS[column]}) if column != "int" else pa.table({"int": COLS["int"]})
    files = write_both(tmp_path, t, use_dictionary=dictionary, **(ONE_PAGE if pages == "one" else MANY_PAGES))
    counts = data_pages(files["plain"])
    assert (max(counts) == 1) if pages == "one" else (max(counts) > 1), counts
    for writer in ("pqseal", "pyarrow"):
        assert pq.read_table(files[writer], decryption_properties=pe.create_decryption_properties(G.K16)).equals(t)
        if column in FLAT and pages == "one":
            assert duck_read(con, files[writer], [column])[column] == t[column].to_pylist(), writer
        else:
            with G.raises(duckdb.InvalidInputException, match=TAG):
                duck_read(con, files[writer], [column])


@pytest.mark.parametrize("key,name", [(G.K16, "k16"), (G.K32, "k32")], ids=["aes128", "aes256"])
@pytest.mark.parametrize("extra", [dict(row_group_size=1_500), dict(data_page_version="2.0"),
                                   dict(write_page_index=True, write_page_checksum=True)],
                         ids=["row_groups", "v2_pages", "page_index_crc"])
def test_readable_variants(con, tmp_path, key, name, extra):
    """One data page per chunk, flat columns: row groups, V2 pages, page index and CRCs and
    both key sizes do not matter."""
    t = pa.table({c: COLS[c] for c in FLAT})
    kw = dict(ONE_PAGE, **extra)
    with pytest.warns(UserWarning, match="DataPageV2") if "data_page_version" in extra else contextlib.nullcontext():
        files = write_both(tmp_path, t, key=key, **kw)
    assert max(data_pages(files["plain"])) == 1
    for writer in ("pqseal", "pyarrow"):
        got = duck_read(con, files[writer], list(FLAT), name)
        assert got == {c: t[c].to_pylist() for c in FLAT}, writer


@pytest.mark.parametrize("mode,exc,match", [
    ("ctr", duckdb.InvalidInputException, "only AES_GCM_V1 is supported"),
    ("plaintext_footer", duckdb.InvalidInputException, "is not encrypted, but 'encryption_config' was set"),
    ("aad_prefix", duckdb.InvalidInputException, TAG),
])
def test_unsupported_modes(con, tmp_path, mode, exc, match):
    t = pa.table({"int": COLS["int"]})
    kw = {"ctr": dict(algorithm="AES_GCM_CTR_V1"), "plaintext_footer": dict(plaintext_footer=True),
          "aad_prefix": dict(aad_prefix=b"tenant-1")}[mode]
    files = write_both(tmp_path, t, **kw, **ONE_PAGE)
    for writer in ("pqseal", "pyarrow"):
        with G.raises(exc, match=match):
            duck_read(con, files[writer], ["int"])


# --------------------------------------------------------------------------- layouts only pqseal writes

def _seal(tmp_path, table, enc, **kw):
    plain, sealed = tmp_path / "plain.parquet", tmp_path / "sealed.parquet"
    G.write_pyarrow(plain, table, **dict(ONE_PAGE, **kw))
    pqseal.encrypt_file(plain, sealed, enc)
    return sealed


def test_per_column_keys(con, tmp_path):
    """DuckDB knows only the footer key: footer-key columns read, column-key columns not."""
    t = pa.table({"int": COLS["int"], "str": COLS["str"]})
    sealed = _seal(tmp_path, t, EncryptionProperties(G.K16, column_keys={"int": G.KC1, "str": FOOTER_KEY}))
    assert duck_read(con, sealed, ["str"])["str"] == t["str"].to_pylist()
    with G.raises(duckdb.InvalidInputException, match="column chunk is missing its metadata"):
        duck_read(con, sealed, ["int"])


def test_plaintext_column_in_encrypted_file(con, tmp_path):
    t = pa.table({"int": COLS["int"], "str": COLS["str"]})
    sealed = _seal(tmp_path, t, EncryptionProperties(G.K16, column_keys={"str": FOOTER_KEY}))
    assert duck_read(con, sealed, ["str"])["str"] == t["str"].to_pylist()
    with G.raises(duckdb.IOException, match="Could not read enough bytes"):
        duck_read(con, sealed, ["int"])


def test_plaintext_footer_without_keys(con, tmp_path):
    """Without encryption_config DuckDB reads the plaintext columns of a plaintext-footer file."""
    t = pa.table({"int": COLS["int"], "str": COLS["str"]})
    sealed = _seal(tmp_path, t, EncryptionProperties(G.K16, plaintext_footer=True, column_keys={"int": FOOTER_KEY}))
    assert duck_read(con, sealed, ["str"], key=None)["str"] == t["str"].to_pylist()
    with G.raises(duckdb.InvalidInputException, match="no file crypto metadata"):
        duck_read(con, sealed, ["int"], key=None)


def test_bloom_filter_column(con, tmp_path):
    """pyarrow cannot write encrypted bloom filters; pqseal's follow the spec (the reference
    reader, tests/pme_reference.py, decrypts them with the spec's AADs), and DuckDB fails
    the tag check on the column that has one."""
    t = pa.table({"int": COLS["int"], "str": COLS["str"]})
    sealed = _seal(tmp_path, t, EncryptionProperties(G.K16), bloom_filter_options={"int": True})
    assert all(v["bloom"] is not None for k, v in G.indexes(sealed, DecryptionProperties(G.K16)).items() if k[1] == 0)
    assert duck_read(con, sealed, ["str"])["str"] == t["str"].to_pylist()
    with G.raises(duckdb.InvalidInputException, match=TAG):
        duck_read(con, sealed, ["int"])


# --------------------------------------------------------------------------- DuckDB's files, read by pqseal

@pytest.mark.parametrize("rows,rgs", [(5_000, None), (60_000, 20_000)], ids=["one_rg", "row_groups"])
def test_pqseal_unseals_duckdb(con, tmp_path, rows, rgs):
    enc_path, plain_path, out = tmp_path / "d.parquet", tmp_path / "dp.parquet", tmp_path / "o.parquet"
    G.write_duckdb(enc_path, rows=rows, key=G.K16, row_group_size=rgs)
    G.write_duckdb(plain_path, rows=rows, row_group_size=rgs)
    info = pqseal.inspect(enc_path)
    assert info["dialect"].startswith("DuckDB") and info["algorithm"] == "AES_GCM_V1"
    assert info["footer"] == "encrypted" and info["aad_file_unique"] is None
    dec = DecryptionProperties(G.K16)
    full = pqseal.inspect(enc_path, dec)
    assert full["dialect"].startswith("DuckDB") and {c["encryption"] for c in full["columns"]} == {"footer key"}
    assert pqseal.verify(enc_path, dec)["ok"]
    h = G.sha256(enc_path)
    pqseal.decrypt_file(enc_path, out, dec)
    assert G.sha256(enc_path) == h
    assert pq.read_table(out).equals(pq.read_table(plain_path))
    assert G.pages(out) == G.pages(enc_path, dec)
    # DuckDB reads its own file (the failures above are not about nested or many-page data)
    assert duck_read(con, enc_path, ["id", "l", "s"])["l"][:2] == [[0, 1], [1, 2]]
    with G.raises(InvalidTag):
        pqseal.decrypt_file(enc_path, tmp_path / "x.parquet", DecryptionProperties(G.K32))


def test_duckdb_file_rekeyed_to_spec_is_read_by_pyarrow_and_duckdb(con, tmp_path):
    enc_path, out = tmp_path / "d.parquet", tmp_path / "r.parquet"
    G.write_duckdb(enc_path, rows=8_000, key=G.K16)
    pqseal.rekey_file(enc_path, out, DecryptionProperties(G.K16), EncryptionProperties(G.K32))
    assert pqseal.inspect(out)["dialect"].startswith("PME spec")
    got = pq.read_table(out, decryption_properties=pe.create_decryption_properties(G.K32))
    assert got["id"].to_pylist() == list(range(8_000))
    assert duck_read(con, out, ["id", "cat"], "k32")["id"] == list(range(8_000))


def test_duckdb_plaintext_file_sealed_read_by_pyarrow(tmp_path):
    plain, sealed = tmp_path / "p.parquet", tmp_path / "s.parquet"
    G.write_duckdb(plain, rows=12_000)
    pqseal.encrypt_file(plain, sealed, EncryptionProperties(G.K16, algorithm="AES_GCM_CTR_V1", plaintext_footer=True))
    got = pq.read_table(sealed, decryption_properties=pe.create_decryption_properties(G.K16))
    assert got.equals(pq.read_table(plain))


def test_round_trip_through_duckdb_copy(con, tmp_path):
    """DuckDB reads pqseal's file and writes it back encrypted; pqseal unseals that."""
    t = pa.table({c: COLS[c] for c in FLAT})
    sealed = _seal(tmp_path, t, EncryptionProperties(G.K16))
    dd = tmp_path / "dd.parquet"
    con.execute(f"COPY (SELECT * FROM read_parquet('{sealed}', encryption_config={{footer_key: 'k16'}})) "
                f"TO '{dd}' (FORMAT parquet, ENCRYPTION_CONFIG {{footer_key: 'k16'}})")
    out = tmp_path / "o.parquet"
    pqseal.decrypt_file(dd, out, DecryptionProperties(G.K16))
    got = pq.read_table(out)
    assert {c: got[c].to_pylist() for c in FLAT} == {c: t[c].to_pylist() for c in FLAT}

