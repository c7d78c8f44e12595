"""Interoperability of the file engine with pyarrow (Arrow C++) and DuckDB.

* pqseal-sealed files read by pyarrow: uniform keys through the low-level API (both
  algorithms, both footer modes, AAD prefix none/stored/supplied, page checksums verified),
  per-column keys through ``CryptoFactory`` with a test KMS (pqseal writes PKMT1 key
  material), plaintext columns of plaintext-footer files read without keys;
* pqseal-sealed footers are structurally identical to pyarrow's own encrypted footers of
  the same data (offsets, sizes, crypto metadata: everything but random bytes);
* pyarrow-encrypted files (low-level uniform keys, and CryptoFactory per-column keys with
  single wrapping) unsealed by pqseal are byte-identical in their chunks, page indexes and
  metadata to pyarrow's plaintext file of the same data;
* DuckDB: see tests/test_duckdb.py;
* re-keyed files are read by pyarrow with the new key only.
"""

from __future__ import annotations

import base64
import json
import os

import pyarrow as pa
import pyarrow.parquet as pq
import pyarrow.parquet.encryption as pe
import pytest

import pqseal
from pqseal.errors import InvalidTag
from pqseal.format import FOOTER_KEY, DecryptionProperties, EncryptionProperties

import parquet_gen as G
from pme_reference import RefFile

ALGS = ["AES_GCM_V1", "AES_GCM_CTR_V1"]
PA_ERRORS = (OSError, pa.ArrowException)   # ArrowIOError is OSError; ArrowInvalid is not
FOOTERS = [pytest.param(False, id="encfooter"), pytest.param(True, id="plainfooter")]
AADS = [pytest.param((None, True), id="noaad"), pytest.param((b"aad-stored", True), id="aadstored"),
        pytest.param((b"aad-supplied", False), id="aadsupplied")]


@pytest.fixture(scope="module")
def table():
    return G.make_table(30_000)


@pytest.fixture(scope="module")
def plain(tmp_path_factory, table):
    """pyarrow plaintext file with page index and page checksums."""
    d = tmp_path_factory.mktemp("interop")
    return G.write_pyarrow(d / "plain.parquet", table, write_page_index=True, write_page_checksum=True,
                           data_page_size=2048)


@pytest.fixture(scope="module")
def plain_nocrc(tmp_path_factory, table):
    d = tmp_path_factory.mktemp("interop_nocrc")
    return G.write_pyarrow(d / "plain.parquet", table, write_page_index=True, data_page_size=2048)


def pa_dec(key=G.K16, aad_prefix=None):
    return pe.create_decryption_properties(key, aad_prefix=aad_prefix)


# --------------------------------------------------------------------------- test KMS

class B64Kms(pe.KmsClient):
    """'Wraps' a key as its base64: the test knows every DEK from the key material."""

    def __init__(self, config):
        super().__init__()

    def wrap_key(self, key_bytes, master_key_identifier):
        return base64.b64encode(key_bytes).decode()

    def unwrap_key(self, wrapped_key, master_key_identifier):
        return base64.b64decode(wrapped_key)


def crypto_factory():
    return pe.CryptoFactory(lambda cfg: B64Kms(cfg)), pe.KmsConnectionConfig()


# --------------------------------------------------------------------------- pqseal -> pyarrow

@pytest.mark.parametrize("aad", AADS)
@pytest.mark.parametrize("plaintext_footer", FOOTERS)
@pytest.mark.parametrize("algorithm", ALGS)
def test_pyarrow_reads_pqseal_uniform(plain, table, tmp_path, algorithm, plaintext_footer, aad):
    prefix, store = aad
    sealed = tmp_path / "sealed.parquet"
    pqseal.encrypt_file(plain, sealed, EncryptionProperties(G.K16, algorithm=algorithm,
                                                            plaintext_footer=plaintext_footer,
                                                            aad_prefix=prefix, store_aad_prefix=store))
    props = pa_dec(aad_prefix=None if store else prefix)
    assert pq.read_table(sealed, decryption_properties=props, page_checksum_verification=True).equals(table)
    pf = pq.ParquetFile(sealed, decryption_properties=props, page_checksum_verification=True)
    assert pf.metadata.num_row_groups == 3
    for i in range(pf.metadata.num_row_groups):   # chunk offsets, row-group by row-group
        got = pf.read_row_group(i, columns=["cat", "s"])
        assert got.equals(table.select(["cat", "s"]).slice(i * 10_000, 10_000))
    if prefix:   # the prefix is bound into every AAD
        with G.raises(PA_ERRORS):
            pq.read_table(sealed, decryption_properties=pa_dec(aad_prefix=b"other"))
    if not store:
        with G.raises(PA_ERRORS):
            pq.read_table(sealed, decryption_properties=pa_dec())
    with G.raises(PA_ERRORS):
        pq.read_table(sealed, decryption_properties=pa_dec(G.K32, aad_prefix=None if store else prefix))


@pytest.mark.parametrize("key", [G.K24, G.K32], ids=["aes192", "aes256"])
def test_pyarrow_reads_pqseal_longer_keys(plain, table, tmp_path, key):
    sealed = tmp_path / "sealed.parquet"
    pqseal.encrypt_file(plain, sealed, EncryptionProperties(key, algorithm="AES_GCM_CTR_V1"))
    assert pq.read_table(sealed, decryption_properties=pa_dec(key), page_checksum_verification=True).equals(table)


@pytest.mark.parametrize("aad", AADS)
@pytest.mark.parametrize("plaintext_footer", FOOTERS)
@pytest.mark.parametrize("algorithm", ALGS)
def test_pqseal_footer_matches_pyarrow_footer(plain_nocrc, table, tmp_path, algorithm, plaintext_footer, aad):
    """Sealing the plaintext file gives exactly the footer pyarrow writes when it encrypts
    the same data itself: every offset and size (relocated for the framing), the crypto
    metadata, row-group ordinals, page indexes. Only nonces and aad_file_unique differ."""
    prefix, store = aad
    ours, theirs = tmp_path / "ours.parquet", tmp_path / "theirs.parquet"
    pqseal.encrypt_file(plain_nocrc, ours, EncryptionProperties(G.K16, algorithm=algorithm,
                                                                plaintext_footer=plaintext_footer,
                                                                aad_prefix=prefix, store_aad_prefix=store))
    G.write_pyarrow(theirs, table, write_page_index=True, data_page_size=2048,
                    encryption_properties=pe.create_encryption_properties(
                        G.K16, encryption_algorithm=algorithm, plaintext_footer=plaintext_footer,
                        aad_prefix=prefix, store_aad_prefix=store))
    dec = DecryptionProperties(G.K16, aad_prefix=None if store else prefix)
    assert pqseal.verify(theirs, dec)["ok"] and pqseal.verify(ours, dec)["ok"]
    a, b = G.footer(ours, dec), G.footer(theirs, dec)

    def scrub(fmd):
        fmd = dict(fmd)
        alg = fmd.get("encryption_algorithm")
        if alg:
            (name, params), = alg.items()
            fmd["encryption_algorithm"] = {name: {k: v for k, v in params.items() if k != "aad_file_unique"}}
        rgs = []
        for rg in fmd["row_groups"]:
            rg = dict(rg)
            rg["columns"] = [{k: (len(v) if k == "encrypted_column_metadata" else v) for k, v in cc.items()}
                             for cc in rg["columns"]]
            rgs.append(rg)
        fmd["row_groups"] = rgs
        return fmd

    assert scrub(a) == scrub(b)
    assert G.column_metas(ours, dec) == G.column_metas(theirs, dec)
    assert G.indexes(ours, dec) == G.indexes(theirs, dec)
    f1, f2 = RefFile(ours, dec), RefFile(theirs, dec)
    assert (f1.algorithm, f1.magic, f1.aad_prefix, f1.supply_aad_prefix) == \
           (f2.algorithm, f2.magic, f2.aad_prefix, f2.supply_aad_prefix)
    assert f1.footer_offset == f2.footer_offset
    assert os.path.getsize(ours) == os.path.getsize(theirs)


def _kms_keyed(paths):
    """pqseal column keys with PKMT1 material a CryptoFactory reader can unwrap."""
    ck = {}
    for i, p in enumerate(paths):
        if i % 3 == 0:
            ck[p] = (G.KEYS[(16, 24, 32)[i % 3]], G.pkmt1(f"mk{i}", G.KEYS[(16, 24, 32)[i % 3]], footer=False))
        elif i % 3 == 1:
            key = bytes([i]) * 16
            ck[p] = (key, G.pkmt1(f"mk{i}", key, footer=False))
        elif i % 6 == 2:
            ck[p] = FOOTER_KEY
    return ck


@pytest.mark.parametrize("plaintext_footer", FOOTERS)
@pytest.mark.parametrize("algorithm", ALGS)
def test_pyarrow_crypto_factory_reads_pqseal_column_keys(plain, table, tmp_path, algorithm, plaintext_footer):
    paths = G.leaf_paths(plain)
    footer_key = G.KC3
    enc = EncryptionProperties(footer_key, column_keys=_kms_keyed(paths), algorithm=algorithm,
                               plaintext_footer=plaintext_footer,
                               footer_key_metadata=G.pkmt1("footer-mk", footer_key, footer=True))
    sealed = tmp_path / "sealed.parquet"
    pqseal.encrypt_file(plain, sealed, enc)
    factory, kms = crypto_factory()
    props = factory.file_decryption_properties(kms, pe.DecryptionConfiguration())
    assert pq.read_table(sealed, decryption_properties=props, page_checksum_verification=True).equals(table)
    # and pqseal itself, through a key retriever on the same material
    out = tmp_path / "out.parquet"
    pqseal.decrypt_file(sealed, out, DecryptionProperties(key_retriever=G.dek_from_material))
    assert G.raw_chunks(out) == G.raw_chunks(plain)
    info = pqseal.inspect(sealed)
    assert info["footer_key_metadata"]["masterKeyID"] == "footer-mk"


def test_pyarrow_reads_plaintext_columns_of_plaintext_footer_file_without_keys(plain, table, tmp_path):
    paths = G.leaf_paths(plain)
    sealed = tmp_path / "sealed.parquet"
    pqseal.encrypt_file(plain, sealed, EncryptionProperties(G.K16, column_keys={"id": G.KC1, "s.b": FOOTER_KEY},
                                                            plaintext_footer=True))
    assert "cat" in paths
    got = pq.read_table(sealed, columns=["cat", "x", "l"])
    assert got.equals(table.select(["cat", "x", "l"]))
    with G.raises(PA_ERRORS):
        pq.read_table(sealed, columns=["id"])


# --------------------------------------------------------------------------- pyarrow -> pqseal

@pytest.mark.parametrize("aad", AADS)
@pytest.mark.parametrize("plaintext_footer", FOOTERS)
@pytest.mark.parametrize("algorithm", ALGS)
def test_pqseal_unseals_pyarrow_uniform(plain, table, tmp_path, algorithm, plaintext_footer, aad):
    prefix, store = aad
    theirs, out = tmp_path / "theirs.parquet", tmp_path / "out.parquet"
    G.write_pyarrow(theirs, table, write_page_index=True, write_page_checksum=True, data_page_size=2048,
                    encryption_properties=pe.create_encryption_properties(
                        G.K16, encryption_algorithm=algorithm, plaintext_footer=plaintext_footer,
                        aad_prefix=prefix, store_aad_prefix=store))
    dec = DecryptionProperties(G.K16, aad_prefix=None if store else prefix)
    info = pqseal.inspect(theirs, dec)
    assert (info["algorithm"], info["dialect"].startswith("PME spec")) == (algorithm, True)
    assert info["footer"] == ("plaintext (signed)" if plaintext_footer else "encrypted")
    assert {c["encryption"] for c in info["columns"]} == {"footer key"}
    assert pqseal.verify(theirs, dec)["ok"]
    pqseal.decrypt_file(theirs, out, dec)
    assert pq.read_table(out).equals(table)
    # pyarrow's encrypted file holds exactly the pages of pyarrow's plaintext file
    assert G.raw_chunks(out) == G.raw_chunks(plain)
    assert G.pages(out, drop=()) == G.pages(plain, drop=())
    assert G.indexes(out) == G.indexes(plain)
    assert G.column_metas(out) == G.column_metas(plain)
    assert pq.read_table(out, page_checksum_verification=True).equals(table)


@pytest.mark.parametrize("version", ["1.0", "2.0"])
def test_pqseal_unseals_pyarrow_page_versions(table, tmp_path, version):
    plain, theirs, out = tmp_path / "p.parquet", tmp_path / "t.parquet", tmp_path / "o.parquet"
    kw = dict(data_page_version=version, write_page_index=True, compression="zstd", use_dictionary=["cat"])
    G.write_pyarrow(plain, table, **kw)
    G.write_pyarrow(theirs, table, encryption_properties=pe.create_encryption_properties(G.K32), **kw)
    dec = DecryptionProperties(G.K32)
    if version == "2.0":
        assert {c.get("v2_framing") for c in pqseal.inspect(theirs, dec)["columns"]} == {"arrow"}
    pqseal.decrypt_file(theirs, out, dec)
    assert G.raw_chunks(out) == G.raw_chunks(plain)
    assert pq.read_table(out).equals(table)


@pytest.mark.parametrize("plaintext_footer", FOOTERS)
@pytest.mark.parametrize("algorithm", ALGS)
def test_pqseal_unseals_pyarrow_crypto_factory(plain, table, tmp_path, algorithm, plaintext_footer):
    paths = G.leaf_paths(plain)
    factory, kms = crypto_factory()
    cfg = pe.EncryptionConfiguration(
        footer_key="footer-mk", column_keys={"mk1": ["id", "l.list.element", "m.key_value.value"],
                                             "mk2": ["s.b", "blob"]},
        encryption_algorithm=algorithm, plaintext_footer=plaintext_footer, double_wrapping=False,
        internal_key_material=True, data_key_length_bits=256)
    theirs, out = tmp_path / "theirs.parquet", tmp_path / "out.parquet"
    G.write_pyarrow(theirs, table, write_page_index=True, write_page_checksum=True, data_page_size=2048,
                    encryption_properties=factory.file_encryption_properties(kms, cfg))
    seen = []

    def retriever(md, path):
        seen.append(path)
        material = json.loads(md)
        assert material["keyMaterialType"] == "PKMT1" and material["isFooterKey"] is (path is None)
        return G.dek_from_material(md)

    dec = DecryptionProperties(key_retriever=retriever)
    info = pqseal.inspect(theirs, dec)
    enc_cols = {"id", "l.list.element", "m.key_value.value", "s.b", "blob"}
    for c in info["columns"]:
        if c["path"] in enc_cols:
            assert c["encryption"] == "column key"
            assert c["key_metadata"]["masterKeyID"] == ("mk1" if c["path"] in ("id", "l.list.element",
                                                                              "m.key_value.value") else "mk2")
        else:
            assert c["encryption"] == "plaintext"
    assert info["footer_key_metadata"]["masterKeyID"] == "footer-mk"
    assert pqseal.verify(theirs, dec)["ok"]
    pqseal.decrypt_file(theirs, out, dec)
    assert None in seen and enc_cols <= set(seen)
    assert pq.read_table(out).equals(table)
    assert G.raw_chunks(out) == G.raw_chunks(plain)
    assert G.indexes(out) == G.indexes(plain)
    # explicit keys work as well: DEKs taken from the material
    f = RefFile(theirs, dec)
    col_keys = {G.leaf_paths(plain)[c]: G.dek_from_material(
                    f.column(0, c).chunk["crypto_metadata"]["ENCRYPTION_WITH_COLUMN_KEY"]["key_metadata"])
                for c in range(len(paths)) if paths[c] in enc_cols}
    footer_key = G.dek_from_material(f.crypto_meta["key_metadata"] if f.crypto_meta
                                     else f.fmd["footer_signing_key_metadata"])
    assert len(footer_key) == 32
    pqseal.decrypt_file(theirs, out, DecryptionProperties(footer_key, column_keys=col_keys), overwrite=True)
    assert G.raw_chunks(out) == G.raw_chunks(plain)


def test_pqseal_unseals_pyarrow_external_key_material(table, tmp_path):
    """External key material: key_metadata holds only a keyReference into the sibling
    _KEY_MATERIAL_FOR_<file>.json; the retriever resolves it."""
    import pyarrow.fs as pafs

    factory, kms = crypto_factory()
    theirs, out = tmp_path / "ext.parquet", tmp_path / "out.parquet"
    cfg = pe.EncryptionConfiguration(footer_key="f", column_keys={"m1": ["id", "cat"], "m2": ["s.b"]},
                                     double_wrapping=False, internal_key_material=False)
    props = factory.file_encryption_properties(kms, cfg, parquet_file_path=os.fspath(theirs),
                                               filesystem=pafs.LocalFileSystem())
    pq.write_table(table, theirs, encryption_properties=props)
    store = json.loads((tmp_path / "_KEY_MATERIAL_FOR_ext.parquet.json").read_text())
    info = pqseal.inspect(theirs)
    md = dict(info["footer_key_metadata"])
    material = md.pop("material")  # inspect resolves the reference through the material file
    assert md == {"keyMaterialType": "PKMT1", "internalStorage": False, "keyReference": "footerKey"}
    assert material == json.loads(store["footerKey"])
    refs = []

    def retriever(md, path):
        ref = json.loads(md)["keyReference"]
        refs.append(ref)
        material = json.loads(store[ref])
        assert material["isFooterKey"] is (path is None)
        return base64.b64decode(material["wrappedDEK"])

    pqseal.decrypt_file(theirs, out, DecryptionProperties(key_retriever=retriever))
    assert pq.read_table(out).equals(table)
    assert set(refs) == set(store)


# --------------------------------------------------------------------------- re-key

@pytest.mark.parametrize("plaintext_footer", FOOTERS)
@pytest.mark.parametrize("algorithm", ALGS)
def test_rekeyed_pyarrow_file_read_by_pyarrow(table, tmp_path, algorithm, plaintext_footer):
    theirs, rekeyed = tmp_path / "theirs.parquet", tmp_path / "rekeyed.parquet"
    G.write_pyarrow(theirs, table, write_page_index=True, write_page_checksum=True, data_page_size=4096,
                    encryption_properties=pe.create_encryption_properties(G.K16, aad_prefix=b"old"))
    stats = pqseal.rekey_file(theirs, rekeyed, DecryptionProperties(G.K16),
                              EncryptionProperties(G.K32, algorithm=algorithm, plaintext_footer=plaintext_footer,
                                                   aad_prefix=b"new", store_aad_prefix=False))
    assert stats.bytes_out > 0
    assert pq.read_table(rekeyed, decryption_properties=pa_dec(G.K32, aad_prefix=b"new"),
                         page_checksum_verification=True).equals(table)
    with G.raises(PA_ERRORS):
        pq.read_table(rekeyed, decryption_properties=pa_dec(G.K16, aad_prefix=b"new"))
    with G.raises(InvalidTag):
        pqseal.verify(rekeyed, DecryptionProperties(G.K16, aad_prefix=b"new"))
    assert pqseal.inspect(rekeyed)["algorithm"] == algorithm


# --------------------------------------------------------------------------- pyarrow edge cases

@pytest.mark.parametrize("typ", [pytest.param(pa.int64(), id="int64"), pytest.param(pa.string(), id="string"),
                                 pytest.param(pa.bool_(), id="bool")])
def test_pqseal_unseals_pyarrow_empty_table(tmp_path, typ):
    t = pa.table({"a": pa.array([], typ)})
    G.write_pyarrow(tmp_path / "e.parquet", t, encryption_properties=pe.create_encryption_properties(G.K16))
    assert pq.read_table(tmp_path / "e.parquet", decryption_properties=pa_dec()).num_rows == 0
    dec = DecryptionProperties(G.K16)
    assert pqseal.inspect(tmp_path / "e.parquet", dec)["num_rows"] == 0
    assert pqseal.verify(tmp_path / "e.parquet", dec)["ok"]
    pqseal.decrypt_file(tmp_path / "e.parquet", tmp_path / "o.parquet", dec)
    assert pq.read_table(tmp_path / "o.parquet").equals(t)
    pqseal.encrypt_file(tmp_path / "o.parquet", tmp_path / "s.parquet", EncryptionProperties(G.K16))
    assert pq.read_table(tmp_path / "s.parquet", decryption_properties=pa_dec()).equals(t)


def test_unicode_column_names_through_crypto_factory(tmp_path):
    """Non-ASCII leaf paths in path_in_schema and column keys; sorting columns survive."""
    t = pa.table({"naïve col": [1, 2, 3], "列": ["a", "b", "c"], "st": pa.array([{"ü x": 1}] * 3)})
    src, sealed, out = tmp_path / "u.parquet", tmp_path / "s.parquet", tmp_path / "o.parquet"
    pq.write_table(t, src, write_page_index=True, sorting_columns=[pq.SortingColumn(0)])
    paths = G.leaf_paths(src)
    assert paths == ["naïve col", "列", "st.ü x"]
    enc = EncryptionProperties(G.K16, column_keys={p: (k, G.pkmt1(f"mk-{p}", k, footer=False))
                                                  for p, k in zip(paths, (G.KC1, G.KC2, G.KC3))},
                               footer_key_metadata=G.pkmt1("f", G.K16, footer=True))
    pqseal.encrypt_file(src, sealed, enc)
    factory, kms = crypto_factory()
    props = factory.file_decryption_properties(kms, pe.DecryptionConfiguration())
    assert pq.read_table(sealed, decryption_properties=props).equals(t)
    dec = DecryptionProperties(key_retriever=G.dek_from_material)
    info = pqseal.inspect(sealed, dec)
    assert [(c["path"], c["key_metadata"]["masterKeyID"]) for c in info["columns"]] == \
        [(p, f"mk-{p}") for p in paths]
    pqseal.decrypt_file(sealed, out, DecryptionProperties(G.K16, column_keys=dict(zip(paths, (G.KC1, G.KC2, G.KC3)))))
    assert G.raw_chunks(out) == G.raw_chunks(src)
    assert pq.ParquetFile(out).metadata.row_group(0).sorting_columns == (pq.SortingColumn(0),)
