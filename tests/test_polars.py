"""pqseal.polars: KMS keys for polars' native PME reader and writer, and the footer-only
rewrite (format/footer.py) that stamps key material into what polars wrote.

Oracles: polars reads pqseal- and pyarrow-written files (pyarrow's own CryptoFactory
over pqseal's KMS); what ``write_parquet`` writes is read by pyarrow's CryptoFactory,
verified by pqseal and walked module by module by tests/pme_reference.py (its own Thrift
decoder and ``cryptography``)."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import struct

import pyarrow.parquet as pq
import pyarrow.parquet.encryption as pe
import pytest

import pqseal
import pqseal.polars as ppl
from pqseal.arrow import crypto_factory as pyarrow_crypto_factory
from pqseal.config import EncryptionConfig
from pqseal.errors import (InvalidTag, KeyNotFound, MalformedFile, OutputExists, PqsealError,
                           UnsupportedFeature)
from pqseal.format import FOOTER_KEY, DecryptionProperties, EncryptionProperties
from pqseal.format import thrift
from pqseal.format.footer import rewrite_footer
from pqseal.keys import CryptoFactory, clear_caches
from pqseal.keys.material import KeyMetadata
from pqseal.kms import KeyListKms, KmsConnectionConfig

from interop import require
from pme_reference import RefFile

pl = require("polars")

MASTER = {"kf": os.urandom(16), "kc1": os.urandom(16), "kc2": os.urandom(32)}
KMS = KeyListKms(MASTER)


@pytest.fixture(autouse=True)
def fresh_caches():
    clear_caches()
    yield


@pytest.fixture(scope="module")
def df():
    n = 5000
    return pl.DataFrame({
        "a": list(range(n)),
        "s": [None if i % 7 == 0 else f"v{i * 13}" for i in range(n)],
        "d": [i * 0.25 for i in range(n)],
        "n": [{"x": i, "y": [i, i + 1]} for i in range(n)],
    })


def kms_retriever(path, aad_prefix=None) -> DecryptionProperties:
    """pqseal's own key retriever for the reference reader (keys through the KMS)."""
    dec = CryptoFactory(lambda cfg: KMS).file_decryption_properties(KmsConnectionConfig(), None, path)
    return DecryptionProperties(key_retriever=dec.key_retriever, aad_prefix=aad_prefix)


def pyarrow_read(path):
    factory = pyarrow_crypto_factory(lambda cfg: KMS)
    props = factory.file_decryption_properties(pe.KmsConnectionConfig(), pe.DecryptionConfiguration(), str(path))
    return pl.from_arrow(pq.read_table(path, decryption_properties=props))


def polars_read(path, **kw):
    return pl.read_parquet(path, decryption=ppl.decryption_properties(path, kms=KMS, **kw))


def data_region(path) -> tuple[int, str]:
    """(footer offset, SHA-256 of every byte before it)."""
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack_from("<I", data, len(data) - 8)
    off = len(data) - 8 - n
    return off, hashlib.sha256(data[:off]).hexdigest()


def listing(d) -> list[str]:
    return sorted(os.listdir(d))


CONFIGS = {
    "uniform": dict(uniform_encryption=True),
    "columns": dict(column_keys={"kc1": ["a"], "kc2": ["s", "n.x"]}),
    "complete": dict(column_keys={"kc1": ["s"]}, complete_columns=True),
    "plainfooter-columns": dict(column_keys={"kc1": ["a", "n.y.list.element"]}, plaintext_footer=True),
    "plainfooter-complete": dict(column_keys={"kc2": ["d"]}, complete_columns=True, plaintext_footer=True),
    "external": dict(column_keys={"kc1": ["a"], "kc2": ["s"]}, internal_key_material=False),
    "external-plainfooter-uniform": dict(uniform_encryption=True, internal_key_material=False, plaintext_footer=True),
    "single-wrap-aes256": dict(column_keys={"kc2": ["d"]}, double_wrapping=False, data_key_length_bits=256),
    "aad-stored": dict(uniform_encryption=True, aad_prefix=b"table-7"),
}


def expected_crypto(cfg: EncryptionConfig, path: str) -> str:
    """The reference reader's name for how a column should be encrypted (pqseal's semantics)."""
    if cfg.uniform_encryption:
        return "footer key"
    listed = {c for cols in cfg.column_keys.values() for c in cols}
    if path in listed:
        return "column key"
    return "footer key" if cfg.complete_columns else "plaintext"


# ---- write_parquet ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(CONFIGS))
def test_write_parquet_read_by_pyarrow_pqseal_and_reference(tmp_path, df, name):
    cfg = EncryptionConfig("kf", **CONFIGS[name])
    path = tmp_path / "out.parquet"
    ppl.write_parquet(df, path, cfg, kms=KMS, row_group_size=2000)
    material = tmp_path / "_KEY_MATERIAL_FOR_out.parquet.json"
    assert material.exists() == (not cfg.internal_key_material)
    assert listing(tmp_path) == sorted(["out.parquet"] + ([material.name] if material.exists() else []))

    assert pyarrow_read(path).equals(df)                      # pyarrow's KMS tools, its own reader
    pqseal.verify(path, kms=KMS)                              # every module authenticated
    assert polars_read(path).equals(df)

    ref = RefFile(path, kms_retriever(path))
    assert ref.num_row_groups == 3
    footer_md = (ref.crypto_meta or {}).get("key_metadata") if not cfg.plaintext_footer else \
        ref.fmd.get("footer_signing_key_metadata")
    md = KeyMetadata.parse(footer_md)
    assert md.internal == cfg.internal_key_material
    if md.internal:
        assert md.material.is_footer_key and md.material.master_key_id == "kf"
    else:
        assert md.reference == "footerKey" and "footerKey" in json.loads(material.read_text())
    for c in ref.columns():
        assert c.encryption == expected_crypto(cfg, c.path), c.path
        if c.encryption == "column key":
            ck = c.chunk["crypto_metadata"]["ENCRYPTION_WITH_COLUMN_KEY"]
            cmd = KeyMetadata.parse(ck["key_metadata"])
            if cmd.internal:
                want = next(mk for mk, cols in cfg.column_keys.items() if c.path in cols)
                assert cmd.material.master_key_id == want and not cmd.material.is_footer_key
        if c.encryption == "footer key" and not cfg.plaintext_footer:
            assert "encrypted_column_metadata" not in c.chunk and "meta_data" in c.chunk
        if c.encryption != "plaintext" and (cfg.plaintext_footer or c.encryption == "column key"):
            assert "encrypted_column_metadata" in c.chunk    # decrypted by RefFile.column above
            assert c.meta["num_values"] == c.chunk.get("meta_data", c.meta)["num_values"]
        assert sum(len(p.body) > 0 for p in ref.pages(c)) >= 1


def test_write_parquet_pyarrow_configuration_and_aad_prefix_not_stored(tmp_path, df):
    cfg = EncryptionConfig("kf", column_keys={"kc1": ["s"]}, aad_prefix=b"secret-prefix", store_aad_prefix=False)
    path = tmp_path / "x.parquet"
    ppl.write_parquet(df, path, cfg, kms=KMS)
    with pytest.raises(KeyNotFound, match="AAD prefix"):
        ppl.decryption_properties(path, kms=KMS)
    with pytest.raises(InvalidTag):
        ppl.decryption_properties(path, kms=KMS, aad_prefix=b"other-prefix")
    assert polars_read(path, aad_prefix=b"secret-prefix").equals(df)
    pqseal.verify(path, kms_retriever(path, b"secret-prefix"))
    ref = RefFile(path, kms_retriever(path, b"secret-prefix"))
    assert ref.supply_aad_prefix and ref.aad_prefix is None
    [ref.pages(c) for c in ref.columns()]

    # pyarrow's EncryptionConfiguration is taken as it is by pqseal's other writers
    pa_cfg = pe.EncryptionConfiguration(footer_key="kf", column_keys={"kc2": ["a", "d"]})
    path2 = tmp_path / "y.parquet"
    ppl.write_parquet(df, path2, pa_cfg, kms=KMS, compression="snappy")
    assert pyarrow_read(path2).equals(df)
    assert {c.path: c.encryption for c in RefFile(path2, kms_retriever(path2)).columns()}["a"] == "column key"


def test_write_parquet_explicit_properties_with_footer_key_columns(tmp_path, df):
    """Explicit keys and their key metadata are stamped as given; a FOOTER_KEY column,
    which polars writes as a column-key column, ends up a footer-key column."""
    fk, k1 = os.urandom(16), os.urandom(32)
    enc = EncryptionProperties(fk, column_keys={"a": FOOTER_KEY, "s": (k1, b"key-one")}, footer_key_metadata=b"fkm")
    path = tmp_path / "x.parquet"
    ppl.write_parquet(df, path, enc)
    ref = RefFile(path, DecryptionProperties(fk, column_keys={"s": k1}))
    assert ref.crypto_meta["key_metadata"] == b"fkm"
    cols = {c.path: c for c in ref.columns()}
    assert cols["a"].encryption == "footer key" and "meta_data" in cols["a"].chunk
    assert cols["s"].chunk["crypto_metadata"]["ENCRYPTION_WITH_COLUMN_KEY"]["key_metadata"] == b"key-one"
    assert cols["d"].encryption == "plaintext"
    dec = pl.ParquetDecryptionProperties(footer_key=fk, column_keys={"s": k1})
    assert pl.read_parquet(path, decryption=dec).equals(df)


def test_stamp_leaves_the_data_region_untouched(tmp_path, df, monkeypatch):
    seen = {}
    real = ppl.rewrite_footer

    def spy(path, decryption, edit, **kw):
        seen["before"] = data_region(path)
        return real(path, decryption, edit, **kw)

    monkeypatch.setattr(ppl, "rewrite_footer", spy)
    path = tmp_path / "x.parquet"
    ppl.write_parquet(df, path, EncryptionConfig("kf", column_keys={"kc1": ["a"]}, complete_columns=True), kms=KMS)
    assert seen["before"] == data_region(path)


def test_existing_path_refused_and_overwrite(tmp_path, df):
    path = tmp_path / "x.parquet"
    path.write_bytes(b"keep me")
    cfg = EncryptionConfig("kf", uniform_encryption=True)
    with pytest.raises(OutputExists):
        ppl.write_parquet(df, path, cfg, kms=KMS)
    assert path.read_bytes() == b"keep me" and listing(tmp_path) == ["x.parquet"]
    os.chmod(path, 0o640)
    ppl.write_parquet(df, path, cfg, kms=KMS, overwrite=True)
    assert polars_read(path).equals(df) and (os.stat(path).st_mode & 0o777) == 0o640


@pytest.mark.parametrize("options, error", [
    ({"partition_by": "a"}, ValueError),
    ({"use_pyarrow": True}, ValueError),
    ({"storage_options": {"anon": True}}, ValueError),
    ({"compression": "no-such-codec"}, Exception),      # polars' own error, from its write
])
def test_bad_options_leave_nothing(tmp_path, df, options, error):
    cfg = EncryptionConfig("kf", column_keys={"kc1": ["a"]}, internal_key_material=False)
    with pytest.raises(error):
        ppl.write_parquet(df, tmp_path / "x.parquet", cfg, kms=KMS, **options)
    assert listing(tmp_path) == []


def test_failures_leave_nothing(tmp_path, df, monkeypatch):
    cfg = EncryptionConfig("kf", column_keys={"kc1": ["no_such_column"]}, internal_key_material=False)
    with pytest.raises(ValueError, match="no_such_column"):
        ppl.write_parquet(df, tmp_path / "x.parquet", cfg, kms=KMS)
    assert listing(tmp_path) == []

    def broken(path, decryption, edit, **kw):
        raise OSError("disk gone")

    monkeypatch.setattr(ppl, "rewrite_footer", broken)
    cfg = EncryptionConfig("kf", column_keys={"kc1": ["a"]}, internal_key_material=False)
    with pytest.raises(OSError, match="disk gone"):
        ppl.write_parquet(df, tmp_path / "x.parquet", cfg, kms=KMS)
    assert listing(tmp_path) == []
    # an existing file and its key material stay as they were
    monkeypatch.setattr(ppl, "rewrite_footer", rewrite_footer)
    ppl.write_parquet(df, tmp_path / "x.parquet", cfg, kms=KMS)
    before = {n: (tmp_path / n).read_bytes() for n in listing(tmp_path)}
    monkeypatch.setattr(ppl, "rewrite_footer", broken)
    with pytest.raises(OSError):
        ppl.write_parquet(df.head(10), tmp_path / "x.parquet", cfg, kms=KMS, overwrite=True)
    assert {n: (tmp_path / n).read_bytes() for n in listing(tmp_path)} == before


@pytest.mark.parametrize("cfg", [
    dict(uniform_encryption=True, encryption_algorithm="AES_GCM_CTR_V1"),
    dict(uniform_encryption=True, data_key_length_bits=192),
])
def test_what_polars_cannot_write_is_refused(tmp_path, df, cfg):
    with pytest.raises(UnsupportedFeature, match="pqseal.ParquetWriter"):
        ppl.write_parquet(df, tmp_path / "x.parquet", EncryptionConfig("kf", **cfg), kms=KMS)
    assert listing(tmp_path) == []


def test_explicit_properties_polars_cannot_express(tmp_path, df):
    fk = os.urandom(16)
    with pytest.raises(UnsupportedFeature):   # encrypted footer over all-plaintext columns
        ppl.write_parquet(df, tmp_path / "x.parquet", EncryptionProperties(fk, column_keys={}))
    with pytest.raises(UnsupportedFeature, match="192-bit"):
        ppl.write_parquet(df, tmp_path / "x.parquet", EncryptionProperties(fk, column_keys={"a": os.urandom(24)}))
    with pytest.raises(UnsupportedFeature, match="AES_GCM_CTR_V1"):
        ppl.write_parquet(df, tmp_path / "x.parquet", EncryptionProperties(fk, algorithm="AES_GCM_CTR_V1"))
    assert listing(tmp_path) == []


def test_write_parquet_argument_checks(tmp_path, df):
    cfg = EncryptionConfig("kf", uniform_encryption=True)
    with pytest.raises(TypeError):
        ppl.write_parquet(df.to_arrow(), tmp_path / "x.parquet", cfg, kms=KMS)
    with pytest.raises(TypeError):
        ppl.write_parquet(df, "s3://bucket/x.parquet", cfg, kms=KMS)
    ppl.write_parquet(df, tmp_path / "sub" / "x.parquet", cfg, kms=KMS, mkdir=True)
    assert polars_read(tmp_path / "sub" / "x.parquet").equals(df)


# ---- decryption_properties ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def plain_file(tmp_path_factory, df):
    p = tmp_path_factory.mktemp("plain") / "plain.parquet"
    pq.write_table(df.to_arrow(), p, row_group_size=2000, data_page_size=4096)
    return p


@pytest.mark.parametrize("name", ["uniform", "columns", "plainfooter-complete", "external", "aad-stored"])
def test_polars_reads_pqseal_sealed_files(tmp_path, df, plain_file, name):
    cfg = EncryptionConfig("kf", **CONFIGS[name])
    path = tmp_path / "sealed.parquet"
    pqseal.encrypt_file(plain_file, path, cfg, kms=KMS)
    assert polars_read(path).equals(df)
    lazy = pl.scan_parquet(path, decryption=ppl.decryption_properties(path, kms=KMS))
    assert lazy.select("s").collect().equals(df.select("s"))


@pytest.mark.parametrize("internal", [True, False])
@pytest.mark.parametrize("plaintext_footer", [False, True])
@pytest.mark.parametrize("page_version", ["1.0", "2.0"])
def test_polars_reads_pyarrow_written_files(tmp_path, df, internal, plaintext_footer, page_version):
    factory = pyarrow_crypto_factory(lambda cfg: KMS)
    cfg = pe.EncryptionConfiguration(footer_key="kf", column_keys={"kc1": ["a"], "kc2": ["s", "n.x"]},
                                     plaintext_footer=plaintext_footer, internal_key_material=internal)
    path = tmp_path / "pa.parquet"
    props = factory.file_encryption_properties(pe.KmsConnectionConfig(), cfg, str(path))
    pq.write_table(df.to_arrow(), path, encryption_properties=props, row_group_size=2000,
                   data_page_version=page_version)
    assert polars_read(path).equals(df)


def test_plaintext_file_needs_no_keys(plain_file, df):
    assert ppl.decryption_properties(plain_file, kms=KMS) is None
    assert pl.read_parquet(plain_file, decryption=ppl.decryption_properties(plain_file, kms=KMS)).equals(df)


def test_ctr_and_192_bit_files_point_at_the_view(tmp_path, plain_file):
    for name, cfg in [("ctr", dict(uniform_encryption=True, encryption_algorithm="AES_GCM_CTR_V1")),
                      ("aes192", dict(column_keys={"kc1": ["a"]}, data_key_length_bits=192))]:
        path = tmp_path / f"{name}.parquet"
        pqseal.encrypt_file(plain_file, path, EncryptionConfig("kf", **cfg), kms=KMS)
        with pytest.raises(UnsupportedFeature, match=r"pqseal\.open\(path, 'rb'\)"):
            ppl.decryption_properties(path, kms=KMS)


def test_parquet_java_v2_framing_points_at_the_view(tmp_path, df):
    plain = tmp_path / "v2.parquet"
    pq.write_table(df.to_arrow(), plain, data_page_version="2.0")
    path = tmp_path / "sealed.parquet"
    with pytest.warns(UserWarning, match="parquet-java"):   # polars fails on these pages ("aws-lc-rs error")
        pqseal.encrypt_file(plain, path, EncryptionConfig("kf", column_keys={"kc1": ["s"]},
                                                          v2_framing="parquet-java"), kms=KMS)
    with pytest.raises(UnsupportedFeature, match="parquet-java"):
        ppl.decryption_properties(path, kms=KMS)


def test_wrong_kms_keys_are_typed_errors(tmp_path, df):
    path = tmp_path / "x.parquet"
    ppl.write_parquet(df, path, EncryptionConfig("kf", column_keys={"kc1": ["s"]}), kms=KMS)
    wrong_footer = KeyListKms({**MASTER, "kf": os.urandom(16)})
    with pytest.raises(PqsealError):
        ppl.decryption_properties(path, kms=wrong_footer)
    wrong_column = KeyListKms({**MASTER, "kc1": os.urandom(16)})
    with pytest.raises(PqsealError):
        ppl.decryption_properties(path, kms=wrong_column)
    with pytest.raises(KeyNotFound):
        ppl.decryption_properties(path, kms=KeyListKms({"kf": MASTER["kf"]}))


def test_keys_of_some_columns_only(tmp_path, df):
    """A reader whose KMS holds only some master keys reads the columns it may."""
    path = tmp_path / "x.parquet"
    ppl.write_parquet(df, path, EncryptionConfig("kf", column_keys={"kc1": ["a"], "kc2": ["s", "n.x"]}), kms=KMS)
    partial = KeyListKms({"kf": MASTER["kf"], "kc1": MASTER["kc1"]})
    with pytest.raises(KeyNotFound):
        ppl.decryption_properties(path, kms=partial)
    with pytest.raises(KeyNotFound):
        ppl.decryption_properties(path, kms=partial, columns=["a", "n"])   # n.x is kc2's
    dec = ppl.decryption_properties(path, kms=partial, columns=["a", "d"])
    assert pl.read_parquet(path, columns=["a", "d"], decryption=dec).equals(df.select("a", "d"))
    assert pl.scan_parquet(path, decryption=dec).select("d").collect().equals(df.select("d"))


def test_duckdb_dialect_points_at_the_view(tmp_path):
    duckdb = require("duckdb")
    path = tmp_path / "dd.parquet"
    con = duckdb.connect()
    con.execute("PRAGMA add_parquet_key('k16', 'abcdefghijklmnop')")
    con.execute("SET force_mbedtls_unsafe='true'")   # DuckDB refuses to write encrypted files without OpenSSL
    con.execute(f"COPY (SELECT range AS a FROM range(100)) TO '{path}' "
                "(FORMAT parquet, ENCRYPTION_CONFIG {footer_key: 'k16'})")
    with pytest.raises(UnsupportedFeature, match="DuckDB"):
        ppl.decryption_properties(path, kms=KMS)


def test_file_without_key_material(tmp_path, df):
    path = tmp_path / "x.parquet"
    df.write_parquet(path, encryption=pl.ParquetEncryptionProperties(footer_key=os.urandom(16)))
    with pytest.raises(KeyNotFound, match="no key material"):
        ppl.decryption_properties(path, kms=KMS)


def test_tampered_footer_is_refused(tmp_path, df):
    path = tmp_path / "x.parquet"
    ppl.write_parquet(df, path, EncryptionConfig("kf", uniform_encryption=True), kms=KMS)
    data = bytearray(path.read_bytes())
    data[-30] ^= 1   # inside the encrypted footer module
    path.write_bytes(bytes(data))
    with pytest.raises(InvalidTag):
        ppl.decryption_properties(path, kms=KMS)


# ---- format/footer.py --------------------------------------------------------------------------


@pytest.mark.parametrize("plaintext_footer", [False, True])
def test_rewrite_footer_is_lossless_and_keeps_column_metadata_consistent(tmp_path, df, plaintext_footer):
    fk, k1 = os.urandom(16), os.urandom(16)
    path = tmp_path / "x.parquet"
    df.write_parquet(path, encryption=pl.ParquetEncryptionProperties(
        footer_key=fk, column_keys={"s": k1, "a": fk}, plaintext_footer=plaintext_footer))
    dec = DecryptionProperties(fk, column_keys={"s": k1, "a": fk})
    region = data_region(path)
    old = RefFile(path, dec)

    rewrite_footer(path, dec, lambda f: None)           # no edit: the same footer, freshly sealed
    assert data_region(path) == region
    new = RefFile(path, dec)
    assert new.fmd == old.fmd and new.crypto_meta == old.crypto_meta

    s_col = old.paths.index("s")

    def edit(f):
        f.metadata[200] = (thrift.I32, b"\x0e")          # a field pqseal does not know (zigzag 7)
        f.footer_key_metadata = b"footer-md"
        meta = f.column_meta(0, s_col)
        meta["key_value_metadata"] = [{"key": b"k", "value": b"v"}]
        f.set_column_meta(0, s_col, meta)

    rewrite_footer(path, dec, edit)
    assert data_region(path) == region
    new = RefFile(path, dec)
    assert new.fmd[200] == 7
    assert (new.fmd.get("footer_signing_key_metadata") if plaintext_footer
            else new.crypto_meta["key_metadata"]) == b"footer-md"
    c = new.column(0, s_col)                            # re-encrypted with the column key
    assert c.meta["key_value_metadata"] == [{"key": b"k", "value": b"v"}]
    assert ("meta_data" in c.chunk) == plaintext_footer and "statistics" not in c.chunk.get("meta_data", {})
    assert pl.read_parquet(path, decryption=pl.ParquetDecryptionProperties(
        footer_key=fk, column_keys={"s": k1, "a": fk})).equals(df)
    pqseal.verify(path, dec)


@pytest.mark.parametrize("writer", ["pyarrow-gcm", "pqseal-ctr-plainfooter"])
def test_rewrite_footer_of_other_writers_files(tmp_path, df, plain_file, writer):
    """A no-op rewrite of pyarrow's and pqseal's files (CTR too: the footer is GCM in
    both algorithms): same footer, readers with a KMS still open them."""
    path = tmp_path / "x.parquet"
    if writer == "pyarrow-gcm":
        factory = pyarrow_crypto_factory(lambda cfg: KMS)
        props = factory.file_encryption_properties(pe.KmsConnectionConfig(), pe.EncryptionConfiguration(
            footer_key="kf", column_keys={"kc1": ["a"], "kc2": ["s"]}), str(path))
        pq.write_table(df.to_arrow(), path, encryption_properties=props, row_group_size=2000)
    else:
        pqseal.encrypt_file(plain_file, path, EncryptionConfig("kf", column_keys={"kc2": ["s"]}, plaintext_footer=True,
                                                               encryption_algorithm="AES_GCM_CTR_V1"), kms=KMS)
    dec = kms_retriever(path)
    region, old = data_region(path), RefFile(path, dec)
    rewrite_footer(path, dec, lambda f: None)
    assert data_region(path) == region
    new = RefFile(path, kms_retriever(path))
    assert new.fmd == old.fmd and new.crypto_meta == old.crypto_meta
    pqseal.verify(path, kms=KMS)
    if writer == "pyarrow-gcm":
        assert pyarrow_read(path).equals(df)


def test_rewrite_footer_wrong_key_and_plaintext_file(tmp_path, df, plain_file):
    fk = os.urandom(16)
    path = tmp_path / "x.parquet"
    df.write_parquet(path, encryption=pl.ParquetEncryptionProperties(footer_key=fk))
    before = path.read_bytes()
    with pytest.raises(InvalidTag):
        rewrite_footer(path, DecryptionProperties(os.urandom(16)), lambda f: None)
    assert path.read_bytes() == before
    with pytest.raises(MalformedFile):
        rewrite_footer(plain_file, DecryptionProperties(fk), lambda f: None)


def test_rewrite_footer_edit_failure_changes_nothing(tmp_path, df):
    fk = os.urandom(16)
    path = tmp_path / "x.parquet"
    df.write_parquet(path, encryption=pl.ParquetEncryptionProperties(footer_key=fk, plaintext_footer=True))
    before = path.read_bytes()

    def bad(f):
        f.metadata["num_rows"] = "many"

    with pytest.raises(MalformedFile):
        rewrite_footer(path, DecryptionProperties(fk), bad)
    assert path.read_bytes() == before

    def new_aad(f):
        f.metadata["encryption_algorithm"]["AES_GCM_V1"]["aad_file_unique"] = b"12345678"

    with pytest.raises(ValueError, match="aad_file_unique"):
        rewrite_footer(path, DecryptionProperties(fk), new_aad)
    assert path.read_bytes() == before


def test_no_key_bytes_in_errors(tmp_path, df):
    path = tmp_path / "x.parquet"
    ppl.write_parquet(df, path, EncryptionConfig("kf", uniform_encryption=True), kms=KMS)
    props = ppl.decryption_properties(path, kms=KMS)
    wrong = KeyListKms({"kf": os.urandom(16)})
    with pytest.raises(PqsealError) as exc:
        ppl.decryption_properties(path, kms=wrong)
    for key in MASTER.values():
        for form in (key.hex(), base64.b64encode(key).decode()):
            assert form not in str(exc.value)
    assert isinstance(props, pl.ParquetDecryptionProperties)
