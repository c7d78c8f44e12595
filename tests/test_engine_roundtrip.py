"""File engine round trips: seal a plaintext Parquet file, check the PME file's structure,
authenticate it, unseal it, and check the result is the source again.

For every case:

* the source file is never modified;
* the sealed file's plaintext pages (decrypted by the engine's reader) are the source's;
  every page-index location points at a header module and spans header+page modules;
* ``verify`` authenticates every module (count checked against an independent module walk);
* ``inspect`` reports algorithm, footer mode, dialect, per-column encryption and key metadata;
* the unsealed file reads back (pyarrow) as the original table, its page headers and
  bodies are the source's (CRCs included), its column chunks are byte-identical, and its
  column index / offset index / bloom filters and column metadata equal the source's.

Matrix: both algorithms x both footer modes x key layouts (uniform, per-column with
FOOTER_KEY columns and (key, metadata) tuples, partly plaintext, footer-key-only columns)
on a "kitchen sink" file, plus writer features (no dictionary, page index, bloom filters,
page checksums, V1/V2 pages and both V2 framings, nested/null-heavy columns, many pages,
DuckDB-written files) with a smaller set of configurations, AES-128/192/256 and AAD
prefixes stored or not.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import warnings

import pyarrow as pa
import pyarrow.parquet as pq
import pyarrow.parquet.encryption as pe
import pytest

from pqseal._io import is_temp_name

import pqseal
from pqseal.crypto import ModuleType
from pqseal.errors import InvalidTag, KeyNotFound
from pqseal.format import FOOTER_KEY, DecryptionProperties, EncryptionProperties
from pqseal.format.layout import PageType
from pqseal.format.engine import WouldExposeColumn

import parquet_gen as G
from interop import require
from pme_reference import RefFile

ALGS = ["AES_GCM_V1", "AES_GCM_CTR_V1"]
FOOTERS = [pytest.param(False, id="encfooter"), pytest.param(True, id="plainfooter")]
LAYOUTS = ["uniform", "per_column", "partial", "footer_key_only", "footer_only"]

# --------------------------------------------------------------------------- sources

KITCHEN = dict(write_page_index=True, write_page_checksum=True, data_page_size=2048,
               bloom_filter_options={"id": {"ndv": 30_000}, "cat": {"ndv": 64}, "s.b": {"ndv": 16}})

FEATURES = {
    "defaults": {},
    "no_dictionary": dict(use_dictionary=False, compression="none"),
    "page_index": dict(write_page_index=True),
    "bloom": dict(bloom_filter_options={"id": {"ndv": 30_000}, "cat": {"ndv": 64}, "m.key_value.key": {"ndv": 8}}),
    "checksums": dict(write_page_checksum=True),
    "v2_pages": dict(data_page_version="2.0", write_page_checksum=True, write_page_index=True),
    "many_pages": dict(data_page_size=256, max_rows_per_page=200, write_page_index=True, row_group_size=7_000),
    "zstd_flat": dict(compression="zstd", _table=dict(nested=False, nulls=False)),
    "null_heavy_nested": dict(_table=dict(seed=3), use_dictionary=["cat", "s.b"], row_group_size=4_000),
    "one_row_group": dict(row_group_size=1 << 20, write_statistics=False),
}


@pytest.fixture(scope="module")
def table():
    return G.make_table(30_000)


@pytest.fixture(scope="module")
def srcdir(tmp_path_factory):
    return tmp_path_factory.mktemp("sources")


@pytest.fixture(scope="module")
def kitchen(srcdir, table):
    return G.write_pyarrow(srcdir / "kitchen.parquet", table, **KITCHEN)


_made = {}


def feature_source(srcdir, name):
    if name in _made and os.path.exists(_made[name][0]):
        return _made[name]
    if name == "duckdb":
        path = G.write_duckdb(srcdir / "duckdb.parquet", rows=25_000, row_group_size=10_000)
        tbl = pq.read_table(path)
    else:
        kw = dict(FEATURES[name])
        tbl = G.make_table(30_000, **kw.pop("_table", {}))
        path = G.write_pyarrow(srcdir / f"{name}.parquet", tbl, **kw)
    _made[name] = (path, tbl)
    return _made[name]


# --------------------------------------------------------------------------- configurations

def _material(name: str, key: bytes) -> bytes:
    return G.pkmt1(name, key, footer=False)


def make_config(paths, layout, *, algorithm="AES_GCM_V1", plaintext_footer=False, footer_key=G.K16, **kw):
    """(EncryptionProperties, DecryptionProperties, {path: expected encryption label}, {path: key metadata})."""
    extra = dict(algorithm=algorithm, plaintext_footer=plaintext_footer, **kw)
    dec_kw = {"aad_prefix": kw["aad_prefix"]} if kw.get("aad_prefix") and not kw.get("store_aad_prefix", True) else {}
    if layout == "uniform":
        return (EncryptionProperties(footer_key, **extra), DecryptionProperties(footer_key, **dec_kw),
                {p: "footer key" for p in paths}, {})
    ring = [G.KC1, G.KC2, G.KC3]
    ck, dk, labels, mds = {}, {}, {}, {}
    for i, p in enumerate(paths):
        if layout == "per_column":
            if i % 4 == 1:
                ck[p], labels[p] = FOOTER_KEY, "footer key"
                continue
            key = ring[i % 3]
            if i % 4 == 2:
                mds[p] = _material(f"mk{i}", key)
                ck[p] = (key, mds[p])
            elif i % 4 == 3:
                mds[p] = b"\xff\x00opaque-id-%d" % i    # non-UTF-8 metadata is shown as hex
                ck[p] = (key, mds[p])
            else:
                ck[p] = key
            dk[p], labels[p] = key, "column key"
        elif layout == "partial":
            if i % 3 == 0:
                ck[p] = dk[p] = ring[i % 3]
                labels[p] = "column key"
            elif i % 3 == 1:
                ck[p], labels[p] = FOOTER_KEY, "footer key"
            else:
                labels[p] = "plaintext"
        elif layout == "footer_only":       # column_keys={}: only the footer is protected
            labels[p] = "plaintext"
        elif layout == "footer_key_only":
            if i % 2:
                ck[p], labels[p] = FOOTER_KEY, "footer key"
            else:
                labels[p] = "plaintext"
        else:
            raise AssertionError(layout)
    return (EncryptionProperties(footer_key, column_keys=ck, **extra),
            DecryptionProperties(footer_key, column_keys=dk, **dec_kw), labels, mds)


# --------------------------------------------------------------------------- the check

def expected_module_count(mods, sealed, dec, algorithm):
    """Modules whose tag verify checks: AES_GCM_CTR_V1 page bodies have none."""
    untagged = (ModuleType.DATA_PAGE, ModuleType.DICTIONARY_PAGE) if algorithm == "AES_GCM_CTR_V1" else ()
    n = sum(1 for m in mods if m.kind != ModuleType.FOOTER and m.kind not in untagged) + 1   # footer or signature
    return n + sum("encrypted_column_metadata" in c.chunk for c in RefFile(sealed, dec).columns())


def check_sealed_structure(src, sealed, enc, dec, labels, mds):
    paths = G.leaf_paths(src)
    f = RefFile(sealed, dec)     # the independent reader: pqseal's Source is not the oracle
    assert f.encrypted and not f.duckdb
    assert f.algorithm == enc.algorithm
    assert (f.footer_signature is not None) == enc.plaintext_footer
    assert len(f.aad_file_unique) == 8
    assert f.magic == (b"PAR1" if enc.plaintext_footer else b"PARE")
    assert f.paths == paths
    for c in f.columns():
        p, chunk = c.path, c.chunk
        assert f.fmd["row_groups"][c.rg]["ordinal"] == c.rg
        assert c.encryption == labels[p], (c.rg, p)
        if c.encryption != "plaintext":
            if enc.plaintext_footer:
                # field 3 kept but redacted (no statistics / encoding stats), field 9 present
                assert "statistics" not in chunk["meta_data"] and "encoding_stats" not in chunk["meta_data"]
                assert "encrypted_column_metadata" in chunk
            elif c.encryption == "footer key":
                assert "meta_data" in chunk and "encrypted_column_metadata" not in chunk
            else:
                assert "meta_data" not in chunk and "encrypted_column_metadata" in chunk
            if c.encryption == "column key":
                ck = chunk["crypto_metadata"]["ENCRYPTION_WITH_COLUMN_KEY"]
                assert ck["path_in_schema"] == [part.encode() for part in p.split(".")]
                assert ck.get("key_metadata") == mds.get(p)
        else:
            assert "crypto_metadata" not in chunk and "encrypted_column_metadata" not in chunk
    # plaintext pages identical to the source's (CRCs differ: they cover the bytes as written)
    assert G.pages(sealed, dec) == G.pages(src)
    # page locations: start of the header module, size = header module + page module
    mods = G.module_map(sealed, dec)
    by_off = {m.offset: m for m in mods}
    page_of = {a.offset: b for a, b in zip(mods, mods[1:])
               if a.kind in (ModuleType.DATA_PAGE_HEADER, ModuleType.DICTIONARY_PAGE_HEADER)}
    for h, p in page_of.items():   # header and page modules are adjacent (but for V2 levels)
        assert p.offset == h + by_off[h].length + p.levels
        if p.levels:
            assert enc.v2_framing == "parquet-java"
    src_idx, sealed_idx = G.indexes(src), G.indexes(sealed, dec)
    for c in f.columns():
        got, want = sealed_idx[c.rg, c.col], src_idx[c.rg, c.col]
        assert (got["offset_index"] is None) == (want["offset_index"] is None)
        assert got["column_index"] == want["column_index"]
        assert got["bloom"] == want["bloom"]
        if c.encryption == "plaintext":
            continue
        oi = f.offset_index(c)       # absolute offsets, unlike G.indexes
        for loc, src_loc in zip((oi or {}).get("page_locations", []),
                                (want["offset_index"] or {}).get("page_locations", [])):
            hm = by_off[loc["offset"]]
            assert hm.kind == ModuleType.DATA_PAGE_HEADER and (hm.rg, hm.col) == (c.rg, c.col)
            pm = page_of[hm.offset]
            assert loc["compressed_page_size"] == hm.length + pm.levels + pm.length
            assert loc["first_row_index"] == src_loc["first_row_index"]
    report = pqseal.verify(sealed, dec)
    assert report["ok"] and report["algorithm"] == enc.algorithm
    assert report["modules"] == report["modules_authenticated"] == expected_module_count(mods, sealed, dec,
                                                                                         enc.algorithm)
    bodies = sum(1 for m in mods if m.kind in (ModuleType.DATA_PAGE, ModuleType.DICTIONARY_PAGE))
    assert report["pages_framing_checked"] == (bodies if enc.algorithm == "AES_GCM_CTR_V1" else 0)
    return mods


def check_inspect(sealed, enc, dec, labels, mds, empty=False):
    info = pqseal.inspect(sealed)
    assert info["encrypted"] is True
    assert info["algorithm"] == enc.algorithm
    assert info["footer"] == ("plaintext (signed)" if enc.plaintext_footer else "encrypted")
    assert info["dialect"].startswith("PME spec")
    if enc.aad_prefix:
        try:
            shown = enc.aad_prefix.decode("utf-8")
        except UnicodeDecodeError:
            shown = "0x" + enc.aad_prefix.hex()
        assert info["aad_prefix"] == ("stored: " + shown if enc.store_aad_prefix
                                      else "not stored: readers must supply it")
    else:
        assert info["aad_prefix"] == "none"
    if not enc.plaintext_footer:
        assert info["footer_readable"] is False and "columns" not in info
    full = pqseal.inspect(sealed, dec)
    assert full["footer_readable"] is True
    assert [c["path"] for c in full["columns"]] == list(labels)
    for c in full["columns"]:
        assert c["encryption"] == labels[c["path"]]
        md = mds.get(c["path"])
        if c["encryption"] == "column key":
            if md is None:
                assert c["key_metadata"] is None
            elif md.startswith(b"{"):
                assert c["key_metadata"] == json.loads(md)   # PKMT1 JSON parsed
                assert c["key_metadata"]["keyMaterialType"] == "PKMT1"
            else:
                assert c["key_metadata"] == {"hex": md.hex()}
        assert c["compressed_bytes"] > 0 or empty  # an empty table's chunks may hold no pages
    assert json.loads(json.dumps(full)) == full   # JSON-serialisable for the CLI
    return full


def check_unsealed(src, unsealed, table):
    got = pq.read_table(unsealed)
    assert got.equals(table)
    assert G.pages(unsealed, drop=()) == G.pages(src, drop=())
    assert G.raw_chunks(unsealed) == G.raw_chunks(src)
    assert G.indexes(unsealed) == G.indexes(src)
    assert G.column_metas(unsealed) == G.column_metas(src)
    f_src, f_out = G.footer(src), G.footer(unsealed)
    for k in ("schema", "num_rows", "key_value_metadata", "created_by", "column_orders", "version"):
        assert f_out.get(k) == f_src.get(k), k
    assert "encryption_algorithm" not in f_out and "footer_signing_key_metadata" not in f_out
    for a, b in zip(f_src["row_groups"], f_out["row_groups"]):
        assert a["num_rows"] == b["num_rows"] and a.get("total_byte_size") == b.get("total_byte_size")
        assert a.get("total_compressed_size") == b.get("total_compressed_size")
    m_src, m_out = pq.ParquetFile(src).metadata, pq.ParquetFile(unsealed).metadata
    assert m_out.num_row_groups == m_src.num_row_groups and m_out.num_rows == m_src.num_rows
    for i in range(m_src.num_row_groups):
        for j in range(m_src.num_columns):
            a, b = m_src.row_group(i).column(j), m_out.row_group(i).column(j)
            assert a.has_offset_index == b.has_offset_index
            assert a.has_column_index == b.has_column_index
            assert a.has_dictionary_page == b.has_dictionary_page
            assert (a.bloom_filter_offset is None) == (b.bloom_filter_offset is None)
            assert a.bloom_filter_length == b.bloom_filter_length
            assert a.total_compressed_size == b.total_compressed_size
            assert a.total_uncompressed_size == b.total_uncompressed_size
            assert a.is_stats_set == b.is_stats_set
            if a.is_stats_set:
                assert a.statistics == b.statistics
    f = RefFile(unsealed)
    assert not f.encrypted and f.magic == b"PAR1"


def round_trip(src, table, tmp_path, enc, dec, labels, mds, *, pyarrow_reads=None):
    """Full round trip; returns the sealed path."""
    sealed, unsealed = tmp_path / "sealed.parquet", tmp_path / "unsealed.parquet"
    before = G.sha256(src)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        stats = pqseal.encrypt_file(src, sealed, enc)
    assert G.sha256(src) == before
    md = pq.ParquetFile(src).metadata
    assert (stats.row_groups, stats.columns) == (md.num_row_groups, md.num_columns)
    assert stats.bytes_in == os.path.getsize(src) and stats.bytes_out == os.path.getsize(sealed)
    assert stats.pages == sum(len(v) for v in G.pages(src).values())
    check_sealed_structure(src, sealed, enc, dec, labels, mds)
    check_inspect(sealed, enc, dec, labels, mds, empty=table.num_rows == 0)
    if pyarrow_reads is None:
        pyarrow_reads = enc.uniform and enc.v2_framing == "arrow" and (not enc.aad_prefix or enc.store_aad_prefix)
    if pyarrow_reads:
        props = pe.create_decryption_properties(enc.footer_key)
        assert pq.read_table(sealed, decryption_properties=props, page_checksum_verification=True).equals(table)
    sealed_hash = G.sha256(sealed)
    st = pqseal.decrypt_file(sealed, unsealed, dec)
    assert G.sha256(sealed) == sealed_hash
    assert st.bytes_out == os.path.getsize(unsealed)
    check_unsealed(src, unsealed, table)
    assert not [n for n in os.listdir(tmp_path) if is_temp_name(n)]
    return sealed


# --------------------------------------------------------------------------- the matrix

@pytest.mark.parametrize("plaintext_footer", FOOTERS)
@pytest.mark.parametrize("algorithm", ALGS)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_config_matrix(kitchen, table, tmp_path, layout, algorithm, plaintext_footer):
    enc, dec, labels, mds = make_config(G.leaf_paths(kitchen), layout, algorithm=algorithm,
                                        plaintext_footer=plaintext_footer)
    round_trip(kitchen, table, tmp_path, enc, dec, labels, mds)


FEATURE_CONFIGS = [
    pytest.param(("uniform", "AES_GCM_V1", False), id="uniform-gcm-enc"),
    pytest.param(("per_column", "AES_GCM_CTR_V1", True), id="percol-ctr-plain"),
    pytest.param(("partial", "AES_GCM_V1", True), id="partial-gcm-plain"),
    pytest.param(("footer_key_only", "AES_GCM_CTR_V1", False), id="footeronly-ctr-enc"),
]


@pytest.mark.parametrize("cfg", FEATURE_CONFIGS)
@pytest.mark.parametrize("feature", list(FEATURES) + ["duckdb"])
def test_feature_matrix(srcdir, tmp_path, feature, cfg):
    if feature == "duckdb":
        require("duckdb")
    src, table = feature_source(srcdir, feature)
    layout, algorithm, pf = cfg
    enc, dec, labels, mds = make_config(G.leaf_paths(src), layout, algorithm=algorithm, plaintext_footer=pf)
    round_trip(src, table, tmp_path, enc, dec, labels, mds)


def test_feature_sources_have_their_features(srcdir):
    """Guard: the feature sources really contain what their names say."""
    src, _ = feature_source(srcdir, "many_pages")
    assert max(len(v) for v in G.pages(src).values()) >= 20
    src, _ = feature_source(srcdir, "v2_pages")
    assert PageType.DATA_PAGE_V2 in G.page_types(src)
    src, _ = feature_source(srcdir, "no_dictionary")
    assert PageType.DICTIONARY_PAGE not in G.page_types(src)
    src, _ = feature_source(srcdir, "defaults")
    assert PageType.DICTIONARY_PAGE in G.page_types(src) and PageType.DATA_PAGE_V2 not in G.page_types(src)
    src, _ = feature_source(srcdir, "bloom")
    assert sum(v["bloom"] is not None for v in G.indexes(src).values()) == 3 * 3
    src, _ = feature_source(srcdir, "checksums")
    assert all("crc" in h for lst in G.pages(src, drop=()).values() for h, _ in lst)
    src, _ = feature_source(srcdir, "page_index")
    assert all(v["offset_index"] is not None for v in G.indexes(src).values())


@pytest.mark.parametrize("bits", [128, 192, 256])
@pytest.mark.parametrize("layout", ["uniform", "per_column"])
def test_key_sizes(srcdir, tmp_path, bits, layout):
    src, table = feature_source(srcdir, "checksums")
    enc, dec, labels, mds = make_config(G.leaf_paths(src), layout, footer_key=G.KEYS[bits // 8],
                                        algorithm="AES_GCM_CTR_V1" if bits == 192 else "AES_GCM_V1")
    round_trip(src, table, tmp_path, enc, dec, labels, mds)


def test_column_key_equal_to_footer_key_is_a_footer_key_column(srcdir, tmp_path):
    src, table = feature_source(srcdir, "defaults")
    paths = G.leaf_paths(src)
    enc = EncryptionProperties(G.K16, column_keys={paths[0]: G.K16, paths[1]: G.KC1})
    dec = DecryptionProperties(G.K16, column_keys={paths[1]: G.KC1})
    labels = {p: "plaintext" for p in paths}
    labels.update({paths[0]: "footer key", paths[1]: "column key"})
    round_trip(src, table, tmp_path, enc, dec, labels, {})


# --------------------------------------------------------------------------- DataPageV2 framings

@pytest.mark.parametrize("algorithm", ALGS)
@pytest.mark.parametrize("framing", ["arrow", "parquet-java"])
def test_v2_framings(srcdir, tmp_path, framing, algorithm):
    src, table = feature_source(srcdir, "v2_pages")
    enc = EncryptionProperties(G.K16, algorithm=algorithm, v2_framing=framing)
    dec = DecryptionProperties(G.K16)
    sealed = tmp_path / "sealed.parquet"
    with pytest.warns(UserWarning, match=f"DataPageV2.*{framing} framing") as rec:
        stats = pqseal.encrypt_file(src, sealed, enc)
    assert len(rec) == 1
    assert stats.warnings and "DataPageV2" in stats.warnings[0]
    info = pqseal.inspect(sealed, dec)
    assert {c.get("v2_framing") for c in info["columns"]} == {framing}
    props = pe.create_decryption_properties(G.K16)
    if framing == "arrow":
        assert pq.read_table(sealed, decryption_properties=props).equals(table)
    else:   # documented interop break: pyarrow cannot read the parquet-java framing
        with G.raises((OSError, pa.ArrowException)):
            pq.read_table(sealed, decryption_properties=props)
    assert G.pages(sealed, dec) == G.pages(src)
    assert pqseal.verify(sealed, dec)["ok"]
    out = tmp_path / "out.parquet"
    pqseal.decrypt_file(sealed, out, dec)
    check_unsealed(src, out, table)
    # the parquet-java framing leaves the level bytes of every V2 page in plaintext
    f = RefFile(sealed, dec)
    levels = [p.levels for p in f.pages(f.column(0, 0)) if p.header["type"] == PageType.DATA_PAGE_V2]
    assert levels and all(levels) == (framing == "parquet-java"), levels


def test_v1_pages_do_not_warn(srcdir, tmp_path):
    src, _ = feature_source(srcdir, "defaults")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        stats = pqseal.encrypt_file(src, tmp_path / "s.parquet", EncryptionProperties(G.K16))
    assert stats.warnings == []


# --------------------------------------------------------------------------- AAD prefix

@pytest.mark.parametrize("plaintext_footer", FOOTERS)
@pytest.mark.parametrize("algorithm", ALGS)
@pytest.mark.parametrize("store", [True, False], ids=["stored", "supplied"])
def test_aad_prefix(srcdir, tmp_path, store, algorithm, plaintext_footer):
    src, table = feature_source(srcdir, "page_index")
    prefix = b"tenant-42/table-7"
    enc, dec, labels, mds = make_config(G.leaf_paths(src), "per_column", algorithm=algorithm,
                                        plaintext_footer=plaintext_footer, aad_prefix=prefix, store_aad_prefix=store)
    sealed = round_trip(src, table, tmp_path, enc, dec, labels, mds)
    f = RefFile(sealed, DecryptionProperties(G.K16, column_keys=dec.column_keys, aad_prefix=prefix))
    assert f.aad_prefix == (prefix if store else None)
    assert f.supply_aad_prefix is (not store)
    out = tmp_path / "again.parquet"
    no_prefix = DecryptionProperties(G.K16, column_keys=dec.column_keys)
    if store:
        pqseal.decrypt_file(sealed, out, no_prefix)                       # prefix read from the file
        with_prefix = DecryptionProperties(G.K16, column_keys=dec.column_keys, aad_prefix=prefix)
        pqseal.decrypt_file(sealed, out, with_prefix, overwrite=True)
    else:
        with G.raises(KeyNotFound, match="AAD prefix"):
            pqseal.decrypt_file(sealed, out, no_prefix, overwrite=True)
        with G.raises(KeyNotFound, match="AAD prefix"):
            pqseal.verify(sealed, no_prefix)
    with G.raises(InvalidTag):
        pqseal.decrypt_file(sealed, out, DecryptionProperties(G.K16, column_keys=dec.column_keys,
                                                             aad_prefix=b"tenant-43/table-7"), overwrite=True)
    assert not out.exists() or G.pages(out) == G.pages(src)


def test_aad_prefix_supplied_for_a_file_without_one(srcdir, tmp_path):
    src, _ = feature_source(srcdir, "defaults")
    sealed = tmp_path / "s.parquet"
    pqseal.encrypt_file(src, sealed, EncryptionProperties(G.K16))
    with G.raises(InvalidTag, match="uses none"):
        pqseal.decrypt_file(sealed, tmp_path / "o.parquet", DecryptionProperties(G.K16, aad_prefix=b"x"))


# --------------------------------------------------------------------------- re-key

@pytest.mark.parametrize("plaintext_footer", FOOTERS)
def test_rekey(kitchen, table, tmp_path, plaintext_footer):
    paths = G.leaf_paths(kitchen)
    enc1, dec1, _, _ = make_config(paths, "per_column", algorithm="AES_GCM_CTR_V1")
    enc2, dec2, labels2, mds2 = make_config(paths, "partial", footer_key=G.K32, algorithm="AES_GCM_V1",
                                            plaintext_footer=plaintext_footer, aad_prefix=b"p2")
    a, b, out = tmp_path / "a.parquet", tmp_path / "b.parquet", tmp_path / "out.parquet"
    pqseal.encrypt_file(kitchen, a, enc1)
    h = G.sha256(a)
    with G.raises(WouldExposeColumn):          # "partial" leaves columns encrypted in a in plaintext
        pqseal.rekey_file(a, b, dec1, enc2)
    assert not b.exists()
    pqseal.rekey_file(a, b, dec1, enc2, allow_plaintext_columns=True)
    assert G.sha256(a) == h
    assert RefFile(a, dec1).aad_file_unique != RefFile(b, dec2).aad_file_unique
    check_sealed_structure(kitchen, b, enc2, dec2, labels2, mds2)
    check_inspect(b, enc2, dec2, labels2, mds2)
    with G.raises(InvalidTag):
        pqseal.verify(b, DecryptionProperties(G.K16, column_keys=dec1.column_keys))
    pqseal.decrypt_file(b, out, dec2)
    check_unsealed(kitchen, out, table)


def test_rekey_changes_the_v2_framing(srcdir, tmp_path):
    src, table = feature_source(srcdir, "v2_pages")
    java, arrow, java2, out = (tmp_path / f"{n}.parquet" for n in ("java", "arrow", "java2", "out"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pqseal.encrypt_file(src, java, EncryptionProperties(G.K16, v2_framing="parquet-java",
                                                            algorithm="AES_GCM_CTR_V1"))
    pqseal.rekey_file(java, arrow, DecryptionProperties(G.K16), EncryptionProperties(G.K32))
    assert {c.get("v2_framing") for c in pqseal.inspect(arrow, DecryptionProperties(G.K32))["columns"]} == {"arrow"}
    assert pq.read_table(arrow, decryption_properties=pe.create_decryption_properties(G.K32),
                         page_checksum_verification=True).equals(table)
    pqseal.rekey_file(arrow, java2, DecryptionProperties(G.K32),
                      EncryptionProperties(G.K16, v2_framing="parquet-java", plaintext_footer=True))
    info = pqseal.inspect(java2, DecryptionProperties(G.K16))
    assert {c.get("v2_framing") for c in info["columns"]} == {"parquet-java"}
    pqseal.decrypt_file(java2, out, DecryptionProperties(G.K16))
    check_unsealed(src, out, table)


# --------------------------------------------------------------------------- edge cases

def test_empty_table(tmp_path, table):
    src = G.write_pyarrow(tmp_path / "empty.parquet", table.slice(0, 0))
    for pf in (False, True):
        enc, dec, labels, mds = make_config(G.leaf_paths(src), "per_column", plaintext_footer=pf)
        d = tmp_path / f"pf{pf}"
        d.mkdir()
        round_trip(src, table.slice(0, 0), d, enc, dec, labels, mds)


def test_no_row_groups(tmp_path, table):
    src = tmp_path / "norg.parquet"
    pq.ParquetWriter(src, table.schema).close()
    assert pq.ParquetFile(src).metadata.num_row_groups == 0
    for pf in (False, True):
        enc, dec, labels, mds = make_config(G.leaf_paths(src), "per_column", plaintext_footer=pf)
        d = tmp_path / f"pf{pf}"
        d.mkdir()
        sealed, out = d / "s.parquet", d / "o.parquet"
        pqseal.encrypt_file(src, sealed, enc)
        info = pqseal.inspect(sealed, dec)
        assert info["row_groups"] == [] and info["num_rows"] == 0
        assert pqseal.verify(sealed, dec)["ok"]
        if not pf:   # no chunks to decrypt: pyarrow opens the footer with the footer key alone
            props = pe.create_decryption_properties(G.K16)
            assert pq.read_table(sealed, decryption_properties=props).equals(table.slice(0, 0))
        pqseal.decrypt_file(sealed, out, dec)
        assert pq.read_table(out).equals(table.slice(0, 0))


def test_single_column_single_row(tmp_path):
    t = pa.table({"v": pa.array([7], pa.int8())})
    src = G.write_pyarrow(tmp_path / "one.parquet", t, write_page_index=True, write_page_checksum=True)
    enc, dec, labels, mds = make_config(["v"], "per_column", algorithm="AES_GCM_CTR_V1")
    d = tmp_path / "rt"
    d.mkdir()
    round_trip(src, t, d, enc, dec, labels, mds)


def test_in_place(srcdir, tmp_path):
    src, table = feature_source(srcdir, "page_index")
    f = tmp_path / "f.parquet"
    f.write_bytes(open(src, "rb").read())
    with G.raises(ValueError, match="in_place"):
        pqseal.encrypt_file(f, f, EncryptionProperties(G.K16))
    pqseal.encrypt_file(f, f, EncryptionProperties(G.K16), in_place=True)
    assert pqseal.inspect(f)["encrypted"]
    pqseal.decrypt_file(f, f, DecryptionProperties(G.K16), in_place=True)
    check_unsealed(src, f, table)
    assert sorted(os.listdir(tmp_path)) == ["f.parquet"]


def test_unseal_is_deterministic_and_seal_is_not(srcdir, tmp_path):
    src, _ = feature_source(srcdir, "defaults")   # no CRCs: their varint length varies with the bytes
    enc, dec = EncryptionProperties(G.K16), DecryptionProperties(G.K16)
    pqseal.encrypt_file(src, tmp_path / "a.parquet", enc)
    pqseal.encrypt_file(src, tmp_path / "b.parquet", enc)
    assert G.sha256(tmp_path / "a.parquet") != G.sha256(tmp_path / "b.parquet")   # fresh nonces, file_unique
    assert os.path.getsize(tmp_path / "a.parquet") == os.path.getsize(tmp_path / "b.parquet")
    pqseal.decrypt_file(tmp_path / "a.parquet", tmp_path / "a2.parquet", dec)
    pqseal.decrypt_file(tmp_path / "b.parquet", tmp_path / "b2.parquet", dec)
    assert G.sha256(tmp_path / "a2.parquet") == G.sha256(tmp_path / "b2.parquet")


def test_sealed_size_is_source_plus_framing(srcdir, tmp_path):
    """Each encrypted page adds 2 x 32 bytes (GCM) or 32 + 16 (CTR); nothing else grows
    except metadata: catches silently dropped or duplicated pages."""
    src, _ = feature_source(srcdir, "no_dictionary")
    npages = sum(len(v) for v in G.pages(src).values())
    size = os.path.getsize(src)
    for alg, per_page in (("AES_GCM_V1", 64), ("AES_GCM_CTR_V1", 48)):
        out = tmp_path / f"{alg}.parquet"
        pqseal.encrypt_file(src, out, EncryptionProperties(G.K16, algorithm=alg))
        mods = G.module_map(out, DecryptionProperties(G.K16))
        data = sum(m.length for m in mods if m.kind in (ModuleType.DATA_PAGE, ModuleType.DATA_PAGE_HEADER))
        md = pq.ParquetFile(src).metadata
        plain = sum(md.row_group(rg).column(c).total_compressed_size
                    for rg in range(md.num_row_groups) for c in range(md.num_columns))
        assert data == plain + npages * per_page
        assert os.path.getsize(out) > size


# --------------------------------------------------------------------------- Thrift codecs

_SCRIPT = textwrap.dedent("""
    import sys, warnings
    sys.path.insert(0, {tests!r})
    import pyarrow.parquet as pq
    import pqseal
    from pqseal.format import thrift, EncryptionProperties, DecryptionProperties, FOOTER_KEY
    import parquet_gen as G
    if {impl!r} == "python":   # the engine on the pure-Python test oracle instead of pqseal._thrift
        from thrift_oracle import PyCodec
        oracle = PyCodec(thrift.SCHEMA)
        thrift.decode, thrift.encode, thrift.skip = oracle.decode, oracle.encode, oracle.skip
    src, out = {src!r}, {out!r}
    paths = G.leaf_paths(src)
    for alg in ("AES_GCM_V1", "AES_GCM_CTR_V1"):
        for pf in (False, True):
            enc = EncryptionProperties(G.K16, column_keys={{paths[0]: G.KC1, paths[1]: FOOTER_KEY,
                                       paths[-1]: (G.KC2, b"md")}}, algorithm=alg, plaintext_footer=pf)
            dec = DecryptionProperties(G.K16, column_keys={{paths[0]: G.KC1, paths[-1]: G.KC2}})
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                pqseal.encrypt_file(src, out + ".s", enc, overwrite=True)
            assert pqseal.verify(out + ".s", dec)["ok"]
            pqseal.decrypt_file(out + ".s", out, dec, overwrite=True)
            assert G.raw_chunks(out) == G.raw_chunks(src)
            assert G.indexes(out) == G.indexes(src)
            assert pq.read_table(out).equals(pq.read_table(src))
    print(type(thrift.decode.__self__).__module__)   # the codec the engine ran on
""")


@pytest.mark.parametrize("impl", ["c", "python"])
def test_round_trip_with_each_thrift_codec(kitchen, srcdir, tmp_path, impl):
    v2, _ = feature_source(srcdir, "v2_pages")
    for src in (kitchen, v2):
        script = _SCRIPT.format(tests=os.path.dirname(__file__), src=os.fspath(src),
                                out=os.fspath(tmp_path / "out.parquet"), impl=impl)
        r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr
        assert r.stdout.strip() == {"c": "pqseal._thrift", "python": "thrift_oracle"}[impl]


# --------------------------------------------------------------------------- key metadata in inspect

@pytest.mark.parametrize("plaintext_footer", FOOTERS)
def test_inspect_key_metadata_forms(srcdir, tmp_path, plaintext_footer):
    src, _ = feature_source(srcdir, "defaults")
    footer_md = G.pkmt1("footer-master", G.K16, footer=True)
    mds = {"id": G.pkmt1("mk-id", G.KC1, footer=False),     # PKMT1 JSON: parsed
           "cat": b'{"keyMaterialType": "OTHER", "k": 1}',   # JSON but not PKMT1: text
           "x": b"kms://keys/42",                             # text
           "flag": b"\x00\x01\xfe"}                          # binary: hex
    enc = EncryptionProperties(G.K16, column_keys={p: (G.KC1, md) for p, md in mds.items()},
                               plaintext_footer=plaintext_footer, footer_key_metadata=footer_md)
    sealed = tmp_path / "s.parquet"
    pqseal.encrypt_file(src, sealed, enc)
    expect = {"id": json.loads(mds["id"]), "cat": {"text": mds["cat"].decode()}, "x": {"text": "kms://keys/42"},
              "flag": {"hex": "0001fe"}}
    keyless = pqseal.inspect(sealed)
    assert keyless["footer_key_metadata"] == json.loads(footer_md)
    views = [pqseal.inspect(sealed, DecryptionProperties(G.K16, column_keys={p: G.KC1 for p in mds}))]
    if plaintext_footer:
        views.append(keyless)       # the column list is readable without keys
    for info in views:
        got = {c["path"]: c.get("key_metadata") for c in info["columns"] if c["encryption"] == "column key"}
        assert got == expect
    # the key retriever receives exactly those bytes
    seen = {}

    def retriever(md, path):
        seen[path] = md
        return G.K16 if path is None else G.KC1

    pqseal.verify(sealed, DecryptionProperties(key_retriever=retriever))
    assert seen == {None: footer_md, **mds}


# --------------------------------------------------------------------------- generated cases

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


@st.composite
def cases(draw):
    rows = draw(st.integers(1, 2_000))
    writer = dict(
        row_group_size=draw(st.integers(max(1, rows // 12), 4_000)),     # at most a dozen row groups
        data_page_size=draw(st.sampled_from([64, 512, 4096, 1 << 20])),
        max_rows_per_page=draw(st.sampled_from([None, 1, 7, 300])),
        use_dictionary=draw(st.booleans()),
        compression=draw(st.sampled_from(["none", "snappy", "zstd", "gzip"])),
        write_page_index=draw(st.booleans()),
        write_page_checksum=draw(st.booleans()),
        data_page_version=draw(st.sampled_from(["1.0", "2.0"])),
        write_statistics=draw(st.booleans()),
    )
    if draw(st.booleans()):
        writer["bloom_filter_options"] = {"id": {"ndv": rows}, "cat": {"ndv": 50}}
    config = dict(layout=draw(st.sampled_from(LAYOUTS)), algorithm=draw(st.sampled_from(ALGS)),
                  plaintext_footer=draw(st.booleans()), footer_key=draw(st.sampled_from([G.K16, G.K24, G.K32])),
                  v2_framing=draw(st.sampled_from(["arrow", "parquet-java"])))
    if draw(st.booleans()):
        config.update(aad_prefix=draw(st.binary(min_size=1, max_size=40)), store_aad_prefix=draw(st.booleans()))
    return rows, draw(st.booleans()), draw(st.integers(0, 2**32 - 1)), writer, config


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                 HealthCheck.too_slow])
@given(case=cases())
def test_generated_round_trips(tmp_path_factory, case):
    rows, nested, seed, writer, config = case
    d = tmp_path_factory.mktemp("gen")
    table = G.make_table(rows, seed=seed, nested=nested)
    src = G.write_pyarrow(d / "src.parquet", table, **writer)
    layout = config.pop("layout")
    enc, dec, labels, mds = make_config(G.leaf_paths(src), layout, **config)
    round_trip(src, table, d, enc, dec, labels, mds, pyarrow_reads=False)


def test_concurrent_files_share_properties(srcdir, tmp_path):
    """One EncryptionProperties / DecryptionProperties used by many threads at once (what
    the CLI's -j does): every file is sealed with its own file_unique and unseals exactly."""
    from concurrent.futures import ThreadPoolExecutor

    srcs = [feature_source(srcdir, n)[0] for n in ("defaults", "checksums", "page_index", "bloom")] * 3
    enc, dec, _, _ = make_config(G.leaf_paths(srcs[0]), "per_column", algorithm="AES_GCM_CTR_V1")

    def job(i):
        s, o = tmp_path / f"s{i}.parquet", tmp_path / f"o{i}.parquet"
        pqseal.encrypt_file(srcs[i], s, enc)
        pqseal.verify(s, dec)
        pqseal.decrypt_file(s, o, dec)
        return G.raw_chunks(o) == G.raw_chunks(srcs[i])

    with ThreadPoolExecutor(4) as pool:
        assert all(pool.map(job, range(len(srcs))))
    uniques = set()
    for i in range(len(srcs)):
        uniques.add(RefFile(tmp_path / f"s{i}.parquet", dec).aad_file_unique)
    assert len(uniques) == len(srcs)
