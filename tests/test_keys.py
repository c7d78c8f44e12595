"""Envelope key management: key-list KMS (InMemoryKMS-compatible), PKMT1 key material,
single/double wrapping, KEK caches, configuration, and interop with pyarrow's CryptoFactory
and parquet-java's external key material."""

from __future__ import annotations

import base64
import json
import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pyarrow.parquet.encryption as pe
import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

import pqseal
from pqseal.config import (DecryptionConfig, EncryptionConfig, encryption_config_from_properties,
                           kms_connection_from_properties, parse_column_keys)
from pqseal.errors import InvalidTag, KeyNotFound, MalformedKeyMaterial
from pqseal.keys import CryptoFactory, KeyMaterial, KeyMetadata, clear_caches
from pqseal.kms import KeyListKms, KmsConnectionConfig, parse_key_list

from counting_kms import CountingKms
from pyarrow_kms import key_list_client

DATA = os.path.join(os.path.dirname(__file__), "data", "parquet-testing")
MASTER = {"kf": os.urandom(16), "kc1": os.urandom(16), "kc2": os.urandom(32)}
KEY_LIST = ", ".join(f"{k}: {base64.b64encode(v).decode()}" for k, v in MASTER.items())


@pytest.fixture(autouse=True)
def fresh_caches():
    clear_caches()
    yield
    clear_caches()


@pytest.fixture(scope="module")
def table():
    n = 30_000
    return pa.table({"a": np.arange(n), "b": pa.array([f"x{i % 10}" for i in range(n)]),
                     "c": np.linspace(0, 1, n), "d": pa.array([[i] for i in range(n)])})


@pytest.fixture
def plain(tmp_path, table):
    p = tmp_path / "plain.parquet"
    pq.write_table(table, p)
    return p


PyarrowKeyList = key_list_client(MASTER)   # pyarrow's InMemoryKMS dialect, independent of pqseal




# ---- key list KMS ------------------------------------------------------------------------------


def test_key_list_parsing():
    keys = parse_key_list(" k1 : " + base64.b64encode(b"a" * 16).decode()
                          + " ,k2:" + base64.b64encode(b"b" * 32).decode())
    assert keys == {"k1": b"a" * 16, "k2": b"b" * 32}
    for bad in ["k1", ": AAAA", "k1: notbase64!!", "k1: " + base64.b64encode(b"x" * 15).decode(),
                "k1: " + base64.b64encode(b"a" * 16).decode() + ", k1: " + base64.b64encode(b"b" * 16).decode()]:
        with pytest.raises(MalformedKeyMaterial):
            parse_key_list(bad)


def test_key_list_wrapping_is_inmemorykms_compatible():
    kms = KeyListKms(KEY_LIST)
    dek = os.urandom(16)
    wrapped = kms.wrap_key(dek, "kc2")
    raw = base64.b64decode(wrapped)
    assert len(raw) == 12 + 16 + 16
    # independent unwrap: AES-GCM under the master key, AAD = UTF-8 master key id
    assert AESGCM(MASTER["kc2"]).decrypt(raw[:12], raw[12:], b"kc2") == dek
    # and the other way round
    assert kms.unwrap_key(PyarrowKeyList(None).wrap_key(dek, "kf"), "kf") == dek
    with pytest.raises(InvalidTag):  # another master key under the same id
        KeyListKms({"kc2": MASTER["kc1"]}).unwrap_key(wrapped, "kc2")
    with pytest.raises(InvalidTag):  # the right key, another id (AAD)
        KeyListKms({"other": MASTER["kc2"]}).unwrap_key(wrapped, "other")
    with pytest.raises(KeyNotFound, match="nope"):
        kms.wrap_key(dek, "nope")


def test_no_key_bytes_in_repr_or_errors():
    kms = KeyListKms(KEY_LIST)
    text = repr(kms) + repr(KmsConnectionConfig(key_access_token="secret-token"))
    for k in MASTER.values():
        assert k.hex() not in text and base64.b64encode(k).decode() not in text
    assert "secret-token" not in text
    with pytest.raises(TypeError):
        import pickle
        pickle.dumps(kms)


# ---- key material --------------------------------------------------------------------------------


def test_key_material_round_trip_and_field_order():
    m = KeyMaterial(True, "kf", "d2Vk", True, base64.b64encode(b"k" * 16).decode(), "a2Vr", "DEFAULT", "DEFAULT")
    text = m.to_json(True)
    obj = json.loads(text)
    assert list(obj) == ["keyMaterialType", "internalStorage", "isFooterKey", "kmsInstanceID", "kmsInstanceURL",
                         "masterKeyID", "wrappedDEK", "doubleWrapping", "keyEncryptionKeyID", "wrappedKEK"]
    assert KeyMaterial.parse(text) == m
    # parquet-java writes HashMap order: parsed by field, not by string
    shuffled = json.dumps(dict(reversed(list(obj.items()))))
    assert KeyMaterial.parse(shuffled) == m
    col = KeyMaterial(False, "kc1", "d2Vk", False)
    assert "kmsInstanceID" not in json.loads(col.to_json(True))
    assert KeyMetadata.parse(col.to_json(True).encode()).material == col
    ext = KeyMetadata.parse(KeyMetadata.external("columnKey3"))
    assert not ext.internal and ext.reference == "columnKey3"
    for bad in [b"not json", b"[]", b'{"keyMaterialType":"PKMT2"}', b'{"keyMaterialType":"PKMT1","isFooterKey":true}',
                b'{"keyMaterialType":"PKMT1","internalStorage":false}']:
        with pytest.raises(MalformedKeyMaterial):
            md = KeyMetadata.parse(bad)
            KeyMaterial.parse(bad) if md.internal else None


# ---- configuration -------------------------------------------------------------------------------


def test_column_keys_grammar_like_parquet_java():
    assert parse_column_keys(" k1: a , b.c ; ;k2:d ") == {"k1": ["a", "b.c"], "k2": ["d"]}
    for bad in ["k1:a:b", ":a", "k1:", "k1:a,", "k1:a;k2:a", "k1"]:
        with pytest.raises(ValueError):
            parse_column_keys(bad)


def test_from_properties_both_prefixes():
    cfg = encryption_config_from_properties({
        "parquet.encryption.footer.key": "kf", "parquet.encryption.column.keys": "kc1:a;kc2:c",
        "parquet.encryption.algorithm": "AES_GCM_CTR_V1", "parquet.encryption.plaintext.footer": "true",
        "parquet.encryption.double.wrapping": "false", "parquet.encryption.data.key.length.bits": "256"})
    assert (cfg.footer_key, cfg.column_keys, cfg.encryption_algorithm, cfg.plaintext_footer, cfg.double_wrapping,
            cfg.data_key_length_bits) == ("kf", {"kc1": ["a"], "kc2": ["c"]}, "AES_GCM_CTR_V1", True, False, 256)
    old = encryption_config_from_properties({"encryption.footer.key": "kf", "encryption.column.keys": "kc1:a",
                                             "encryption.algorithm": "AES_GCM_V1"})
    assert old.column_keys == {"kc1": ["a"]}
    assert encryption_config_from_properties({"parquet.encryption.uniform.key": "kf"}).uniform_encryption
    assert encryption_config_from_properties({}) is None  # neither set: plaintext
    for bad in [{"parquet.encryption.footer.key": "kf"}, {"parquet.encryption.column.keys": "k:a"},
                {"parquet.encryption.footer.key": "kf", "parquet.encryption.column.keys": "k:a",
                 "parquet.encryption.algorithm": "aes_gcm_v1"},
                {"parquet.encryption.uniform.key": "kf", "parquet.encryption.footer.key": "kf"}]:
        with pytest.raises(ValueError):
            encryption_config_from_properties(bad)
    kc = kms_connection_from_properties({"parquet.encryption.kms.instance.id": "vault-1"})
    assert kc.kms_instance_id == "vault-1" and kc.kms_instance_url == "DEFAULT"


def test_master_key_ids_may_contain_colons_in_the_dict_form():
    arn = "arn:aws:kms:eu-west-1:123:key/abc"
    cfg = EncryptionConfig("kf", column_keys={arn: ["a"]})
    assert cfg.column_keys == {arn: ["a"]}
    with pytest.raises(ValueError):
        EncryptionConfig("kf", column_keys={"k1": ["a"], "k2": ["a"]})
    with pytest.raises(ValueError):
        EncryptionConfig("kf")  # neither column keys nor uniform


# ---- interop with pyarrow's CryptoFactory -----------------------------------------------------------


@pytest.mark.parametrize("algorithm", ["AES_GCM_V1", "AES_GCM_CTR_V1"])
@pytest.mark.parametrize("plaintext_footer", [False, True])
@pytest.mark.parametrize("double_wrapping", [True, False])
@pytest.mark.parametrize("mode", ["uniform", "per_column", "partly_plaintext"])
@pytest.mark.parametrize("dek_bits", [128, 256])
@pytest.mark.parametrize("internal", [True, False])
def test_interop_with_pyarrow_crypto_factory(tmp_path, table, plain, algorithm, plaintext_footer, double_wrapping,
                                             mode, dek_bits, internal):
    column_keys = {"uniform": None, "per_column": {"kc1": ["a", "b"], "kc2": ["c", "d.list.element"]},
                   "partly_plaintext": {"kc2": ["c"]}}[mode]
    kw = dict(column_keys=column_keys, uniform_encryption=column_keys is None, encryption_algorithm=algorithm,
              plaintext_footer=plaintext_footer, double_wrapping=double_wrapping, data_key_length_bits=dek_bits,
              internal_key_material=internal)
    ours = CryptoFactory(lambda cfg: KeyListKms(KEY_LIST))
    theirs = pe.CryptoFactory(PyarrowKeyList)
    # pqseal seals -> pyarrow reads
    sealed = tmp_path / "sealed.parquet"
    pqseal.encrypt_file(plain, sealed, EncryptionConfig("kf", **kw), kms=KeyListKms(KEY_LIST))
    got = pq.read_table(sealed, decryption_properties=theirs.file_decryption_properties(
        pe.KmsConnectionConfig(), pe.DecryptionConfiguration(), str(sealed)))
    assert got.equals(table)
    md = pqseal.inspect(sealed)["footer_key_metadata"]  # readable without keys in both footer modes
    if internal:
        assert md["masterKeyID"] == "kf" and md["doubleWrapping"] is double_wrapping and md["isFooterKey"] is True
    else:
        assert md["keyReference"] == "footerKey" and md["material"]["masterKeyID"] == "kf"
        assert md["material"]["doubleWrapping"] is double_wrapping
    # pyarrow writes -> pqseal unseals
    pa_file = tmp_path / "pyarrow.parquet"
    pq.write_table(table, pa_file, encryption_properties=theirs.file_encryption_properties(
        pe.KmsConnectionConfig(), pe.EncryptionConfiguration(footer_key="kf", **kw), str(pa_file)))
    out = tmp_path / "unsealed.parquet"
    pqseal.decrypt_file(pa_file, out, DecryptionConfig(), kms=KeyListKms(KEY_LIST))
    assert pq.read_table(out).equals(table)
    if not internal:  # pyarrow's external material is rotate-ready for pqseal, and the other way round
        n_keys = 1 + (0 if column_keys is None else sum(len(c) for c in column_keys.values()))
        assert ours.rotate_master_keys(KmsConnectionConfig(), pa_file, double_wrapping=double_wrapping) == n_keys
        assert pq.read_table(pa_file, decryption_properties=theirs.file_decryption_properties(
            pe.KmsConnectionConfig(), pe.DecryptionConfiguration(), str(pa_file))).equals(table)
        theirs.rotate_master_keys(pe.KmsConnectionConfig(), str(sealed), double_wrapping=double_wrapping)
        pqseal.decrypt_file(sealed, out, kms=KeyListKms(KEY_LIST), overwrite=True)
        assert pq.read_table(out).equals(table)


def test_fresh_dek_per_column_and_file(tmp_path, plain):
    f = CryptoFactory(lambda cfg: KeyListKms(KEY_LIST))
    cfg = EncryptionConfig("kf", column_keys={"kc1": ["a", "b"]})
    p1 = f.file_encryption_properties(KmsConnectionConfig(), cfg)
    p2 = f.file_encryption_properties(KmsConnectionConfig(), cfg)
    deks = [p1.footer_key, p1.column_keys["a"].key, p1.column_keys["b"].key, p2.footer_key, p2.column_keys["a"].key]
    assert len(set(deks)) == len(deks)
    # double wrapping: one KEK per master key is reused (same KEK id)
    ids = {json.loads(p.column_keys[c].key_metadata)["keyEncryptionKeyID"] for p in (p1, p2) for c in ("a", "b")}
    assert len(ids) == 1


def test_kek_cache_makes_one_kms_call_per_master_key(tmp_path):
    n_files = 200
    counting = CountingKms(KeyListKms(KEY_LIST))
    f = CryptoFactory(lambda cfg: counting)
    t = pa.table({"a": np.arange(10), "c": np.arange(10.0)})
    src = tmp_path / "p.parquet"
    pq.write_table(t, src)
    cfg = EncryptionConfig("kf", column_keys={"kc1": ["a"], "kc2": ["c"]})
    for i in range(n_files):
        pqseal.encrypt_file(src, tmp_path / f"f{i}.parquet", f.file_encryption_properties(KmsConnectionConfig(), cfg),
                            fsync=False)
    assert counting.wraps == 3 and counting.unwraps == 0
    clear_caches()  # a reader in another process: nothing cached
    for i in range(n_files):
        dec = f.file_decryption_properties(KmsConnectionConfig())
        pqseal.decrypt_file(tmp_path / f"f{i}.parquet", tmp_path / f"u{i}.parquet", dec, fsync=False)
    assert counting.unwraps == 3
    assert pq.read_table(tmp_path / f"u{n_files - 1}.parquet").equals(t)


def test_threads_racing_for_a_kek_make_one_kms_call_per_master_key():
    """Threads that miss the KEK cache at the same moment wait for one KMS call (a slow
    KMS used to get one wrap per racing thread)."""
    import threading
    import time

    class Slow(CountingKms):
        def wrap_key(self, key_bytes, master_key_identifier):
            time.sleep(0.05)
            return super().wrap_key(key_bytes, master_key_identifier)

    counting = Slow(KeyListKms(KEY_LIST))
    f = CryptoFactory(lambda cfg: counting)
    cfg = EncryptionConfig("kf", column_keys={"kc1": ["a"], "kc2": ["c"]})
    start = threading.Barrier(8)

    def one():
        start.wait()
        for _ in range(5):
            f.file_encryption_properties(KmsConnectionConfig(), cfg)
    threads = [threading.Thread(target=one) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert counting.wraps == 3


def test_single_wrapping_calls_the_kms_per_key(tmp_path, plain):
    counting = CountingKms(KeyListKms(KEY_LIST))
    f = CryptoFactory(lambda cfg: counting)
    f.file_encryption_properties(KmsConnectionConfig(), EncryptionConfig("kf", column_keys={"kc1": ["a", "b"]},
                                                                          double_wrapping=False))
    assert counting.wraps == 3  # footer + two columns, no KEKs


def test_wrong_master_key_fails_closed(tmp_path, plain):
    f = CryptoFactory(lambda cfg: KeyListKms(KEY_LIST))
    sealed = tmp_path / "s.parquet"
    pqseal.encrypt_file(plain, sealed, f.file_encryption_properties(KmsConnectionConfig(),
                                                                    EncryptionConfig("kf", uniform_encryption=True)))
    wrong = {k: os.urandom(len(v)) for k, v in MASTER.items()}
    bad = CryptoFactory(lambda cfg: KeyListKms(wrong))
    with pytest.raises(InvalidTag):
        pqseal.decrypt_file(sealed, tmp_path / "x.parquet", bad.file_decryption_properties(KmsConnectionConfig()))
    assert not (tmp_path / "x.parquet").exists()
    missing = CryptoFactory(lambda cfg: KeyListKms({"kc1": MASTER["kc1"]}))
    with pytest.raises(KeyNotFound, match="kf"):
        pqseal.decrypt_file(sealed, tmp_path / "x.parquet", missing.file_decryption_properties(KmsConnectionConfig()))


def test_parquet_java_external_key_material(tmp_path):
    """parquet-mr wrote this file with external key material and InMemoryKMS (master keys
    from apache/parquet-testing's README; see tests/data/parquet-testing/README.md)."""
    path = os.path.join(DATA, "external_key_material_java.parquet.encrypted")
    kms = KeyListKms({"kf": b"0123456789012345", "kc1": b"1234567890123450", "kc2": b"1234567890123451"})
    f = CryptoFactory(lambda cfg: kms)
    info = pqseal.inspect(path)
    md = dict(info["footer_key_metadata"])
    material = md.pop("material")  # resolved through _KEY_MATERIAL_FOR_...json
    assert md == {"keyMaterialType": "PKMT1", "internalStorage": False, "keyReference": "footerKey"}
    assert material["masterKeyID"] == "kf" and material["doubleWrapping"] is True
    out = tmp_path / "plain.parquet"
    pqseal.decrypt_file(path, out, f.file_decryption_properties(KmsConnectionConfig(), None, path))
    t = pq.read_table(out)
    assert t.column("integers").to_pylist() == list(range(100))
    assert t.column("strings").to_pylist() == [chr(ord("a") + i % 10) + str(i) for i in range(100)]
    with pytest.raises(KeyNotFound, match="parquet_file_path"):
        pqseal.decrypt_file(path, tmp_path / "x.parquet", f.file_decryption_properties(KmsConnectionConfig()))


def test_pyarrow_bridge_uses_pqseal_kms(tmp_path, table, plain):
    from pqseal.arrow import crypto_factory

    counting = CountingKms(KeyListKms(KEY_LIST))
    factory = crypto_factory(lambda cfg: counting)
    # pyarrow writes with pqseal's KMS client, pqseal reads
    f = tmp_path / "pa.parquet"
    pq.write_table(table, f, encryption_properties=factory.file_encryption_properties(
        pe.KmsConnectionConfig(), pe.EncryptionConfiguration(footer_key="kf", column_keys={"kc1": ["a"]})))
    assert counting.wraps >= 2
    out = tmp_path / "u.parquet"
    pqseal.decrypt_file(f, out, CryptoFactory(lambda cfg: KeyListKms(KEY_LIST)).file_decryption_properties(
        KmsConnectionConfig()))
    assert pq.read_table(out).equals(table)
    # pqseal seals, pyarrow reads through the bridge
    sealed = tmp_path / "s.parquet"
    pqseal.encrypt_file(plain, sealed, CryptoFactory(lambda cfg: KeyListKms(KEY_LIST)).file_encryption_properties(
        KmsConnectionConfig(), EncryptionConfig("kf", column_keys={"kc2": ["c"]})))
    got = pq.read_table(sealed, decryption_properties=factory.file_decryption_properties(
        pe.KmsConnectionConfig(), pe.DecryptionConfiguration()))
    assert got.equals(table) and counting.unwraps >= 1


def test_pyarrow_uniform_configuration_is_accepted():
    # pyarrow's column_keys getter raises on a uniform configuration; the bridge must not read it
    import pyarrow.parquet.encryption as pe

    from pqseal.arrow import encryption_config

    cfg = encryption_config(pe.EncryptionConfiguration(footer_key="kf", uniform_encryption=True,
                                                       encryption_algorithm="AES_GCM_CTR_V1"))
    assert cfg.uniform_encryption and not cfg.column_keys
    assert cfg.footer_key == "kf" and cfg.encryption_algorithm == "AES_GCM_CTR_V1"
