"""The local keystore (embedded default KMS) and the envelope-key CLI."""

from __future__ import annotations

import base64
import json
import multiprocessing
import os
import stat

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

import pqseal
from pqseal.cli import main as cli
from pqseal.errors import KeyAccessDenied, KeyNotFound, MalformedKeyMaterial
from pqseal.keys import CryptoFactory, clear_caches
from pqseal.kms import KeyListKms, KmsConnectionConfig
from pqseal.kms.keystore import TEST_KDF_ENV, LocalKeystore
from pqseal.config import EncryptionConfig

from pme_reference import RefFile

PASS = b"correct horse battery staple"


@pytest.fixture(autouse=True)
def fresh_caches(monkeypatch):
    monkeypatch.setenv(TEST_KDF_ENV, str(1 << 14))   # keystores at test cost (see kms/keystore.py)
    clear_caches()
    yield
    clear_caches()


@pytest.fixture
def ks(tmp_path):
    k = LocalKeystore.init(tmp_path / "ks.json", PASS)
    k.create("footer")
    k.create("pii", 128)
    return k


def test_created_0600_and_refused_when_readable_by_others(tmp_path, ks):
    assert stat.S_IMODE(os.stat(ks.path).st_mode) == 0o600
    with pytest.raises(FileExistsError):
        LocalKeystore.init(ks.path, PASS)
    os.chmod(ks.path, 0o640)
    with pytest.raises(KeyAccessDenied, match="chmod 600"):
        LocalKeystore(ks.path, PASS)


def test_wrong_passphrase(ks):
    with pytest.raises(KeyAccessDenied, match="wrong passphrase"):
        LocalKeystore(ks.path, b"wrong")


def test_corrupted_file(ks):
    with open(ks.path, "r+b") as f:
        f.write(b"{{{{")
    with pytest.raises(MalformedKeyMaterial, match="corrupted"):
        LocalKeystore(ks.path, PASS)


def test_tampered_key_entry(ks):
    doc = json.load(open(ks.path))
    sealed = base64.b64decode(doc["keys"]["pii"]["versions"][0]["sealed"])
    doc["keys"]["pii"]["versions"][0]["sealed"] = base64.b64encode(sealed[:-1] + bytes([sealed[-1] ^ 1])).decode()
    with open(ks.path, "w") as f:
        json.dump(doc, f)
    with pytest.raises(MalformedKeyMaterial, match="modified outside pqseal"):  # the document's MAC
        LocalKeystore(ks.path, PASS)


def test_missing_key_id(ks):
    with pytest.raises(KeyNotFound, match="nope"):
        ks.wrap_key(b"x" * 16, "nope")
    with pytest.raises(KeyNotFound):
        ks.rotate("nope")
    with pytest.raises(ValueError, match="already exists"):
        ks.create("pii")


def test_rotation_keeps_old_versions_unwrapping(ks):
    dek = os.urandom(16)
    w1 = ks.wrap_key(dek, "pii")
    assert w1.startswith("pqks1:1:")
    assert ks.rotate("pii") == 2
    k2 = LocalKeystore(ks.path, PASS)
    w2 = k2.wrap_key(dek, "pii")
    assert w2.startswith("pqks1:2:")
    assert k2.unwrap_key(w1, "pii") == dek and k2.unwrap_key(w2, "pii") == dek
    states = {(r["id"], r["version"]): r["state"] for r in k2.list()}
    assert states[("pii", 1)] == "decrypt-only" and states[("pii", 2)] == "active"
    # a wrapped key moved to another key id does not unwrap
    with pytest.raises(pqseal.InvalidTag):
        k2.unwrap_key(w2.replace("pqks1:2:", "pqks1:1:"), "footer")


def _create(path, i):
    LocalKeystore(path, PASS).create(f"k{i}")


def test_concurrent_writers_lose_nothing(ks):
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_create, args=(ks.path, i)) for i in range(6)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    ids = {r["id"] for r in LocalKeystore(ks.path, PASS).list()}
    assert ids == {"footer", "pii"} | {f"k{i}" for i in range(6)}


def test_seal_with_keystore_then_rotate_then_read(tmp_path, ks):
    t = pa.table({"id": np.arange(1000), "ssn": [f"{i:09d}" for i in range(1000)]})
    src = tmp_path / "p.parquet"
    pq.write_table(t, src)
    f = CryptoFactory(lambda cfg: LocalKeystore(ks.path, PASS))
    sealed = tmp_path / "s.parquet"
    pqseal.encrypt_file(src, sealed, f.file_encryption_properties(
        KmsConnectionConfig(), EncryptionConfig("footer", column_keys={"pii": ["ssn"]}, double_wrapping=False)))
    LocalKeystore(ks.path, PASS).rotate("pii")
    clear_caches()
    out = tmp_path / "u.parquet"
    pqseal.decrypt_file(sealed, out, f.file_decryption_properties(KmsConnectionConfig()))
    assert pq.read_table(out).equals(t)


def test_no_key_bytes_in_reprs_errors_or_listing(ks, capsys):
    raw = [LocalKeystore(ks.path, PASS)._master(k, None)[1] for k in ("footer", "pii")]
    text = repr(ks) + json.dumps(ks.list()) + open(ks.path).read()
    with pytest.raises(KeyNotFound) as ei:
        ks.wrap_key(b"k" * 16, "nope")
    text += str(ei.value) + repr(ei.value)
    # the raw master keys are only in native memory; check their Python-visible forms don't leak
    doc = json.load(open(ks.path))
    for v in doc["keys"].values():
        assert set(v["versions"][0]) == {"version", "bits", "state", "created", "sealed"}
    assert "PASS" not in text and PASS.decode() not in text
    assert all("redacted" in repr(k) for k in raw)


# ---- CLI ---------------------------------------------------------------------------------------------


def test_cli_keys_and_envelope_encryption(tmp_path):
    env = {"PQSEAL_KEYSTORE": str(tmp_path / "ks.json"), "PQSEAL_KEYSTORE_PASSPHRASE": "pw-123"}
    r = CliRunner()
    for args in (["keys", "init"], ["keys", "create", "footer"], ["keys", "create", "pii", "--bits", "128"]):
        res = r.invoke(cli, args, env=env)
        assert res.exit_code == 0, res.output
    res = r.invoke(cli, ["keys", "list", "--json"], env=env)
    assert {x["id"] for x in json.loads(res.output)} == {"footer", "pii"}
    t = pa.table({"id": np.arange(5000), "email": [f"u{i}@x.org" for i in range(5000)]})
    src, sealed, out = tmp_path / "p.parquet", tmp_path / "s.parquet", tmp_path / "u.parquet"
    pq.write_table(t, src)
    for alg in ("AES_GCM_V1", "AES_GCM_CTR_V1"):
        sealed, out = tmp_path / f"s-{alg}.parquet", tmp_path / f"u-{alg}.parquet"
        res = r.invoke(cli, ["encrypt", str(src), str(sealed), "--footer-key", "footer", "--column-keys",
                             "pii:email", "--algorithm", alg], env=env)
        assert res.exit_code == 0, res.output
        res = r.invoke(cli, ["inspect", str(sealed), "--json", "--kms", "keystore"], env=env)
        info = json.loads(res.output)
        assert info["footer_key_metadata"]["masterKeyID"] == "footer"
        email = [c for c in info["columns"] if c["path"] == "email"][0]
        assert email["encryption"] == "column key" and email["key_metadata"]["masterKeyID"] == "pii"
        assert r.invoke(cli, ["keys", "rotate", "pii"], env=env).exit_code == 0
        clear_caches()
        res = r.invoke(cli, ["verify", str(sealed)], env=env)
        assert res.exit_code == 0, res.output
        res = r.invoke(cli, ["decrypt", str(sealed), str(out)], env=env)
        assert res.exit_code == 0, res.output
        assert pq.read_table(out).equals(t)
    bad = dict(env, PQSEAL_KEYSTORE_PASSPHRASE="nope")
    res = r.invoke(cli, ["decrypt", str(sealed), str(tmp_path / "x.parquet")], env=bad)
    assert res.exit_code == 1 and "wrong passphrase" in res.output


def test_cli_key_list_and_properties(tmp_path):
    keys = {"kf": os.urandom(16), "kc": os.urandom(16)}
    kl = ", ".join(f"{k}: {base64.b64encode(v).decode()}" for k, v in keys.items())
    t = pa.table({"a": np.arange(100), "b": np.arange(100.0)})
    src, sealed, out = tmp_path / "p.parquet", tmp_path / "s.parquet", tmp_path / "u.parquet"
    pq.write_table(t, src)
    r = CliRunner()
    res = r.invoke(cli, ["encrypt", str(src), str(sealed), "--key-list", kl,
                         "--property", "parquet.encryption.footer.key=kf",
                         "--property", "parquet.encryption.column.keys=kc:b",
                         "--property", "parquet.encryption.plaintext.footer=true"])
    assert res.exit_code == 0, res.output
    f = RefFile(sealed)     # the independent reader: a signed plaintext footer opens without keys
    assert f.magic == b"PAR1" and f.footer_signature is not None
    assert {c.path: c.encryption for c in f.columns()} == {"a": "plaintext", "b": "column key"}
    res = r.invoke(cli, ["decrypt", str(sealed), str(out)], env={"PQSEAL_KEY_LIST": kl})
    assert res.exit_code == 0, res.output
    assert pq.read_table(out).equals(t)
    res = r.invoke(cli, ["encrypt", str(src), str(sealed), "--key-list", kl, "--footer-key", "kf", "--force"])
    assert res.exit_code == 0, res.output  # footer key without column keys: uniform, as the help says
    assert {c["encryption"] for c in pqseal.inspect(sealed, kms=KeyListKms(kl))["columns"]} == {"footer key"}


def test_external_key_material_write_rotate_and_pyarrow_reads(tmp_path, ks):
    import pyarrow.parquet.encryption as pe
    from pqseal.arrow import crypto_factory

    t = pa.table({"id": np.arange(2000), "ssn": [f"{i:09d}" for i in range(2000)]})
    src = tmp_path / "p.parquet"
    pq.write_table(t, src)
    client = LocalKeystore(ks.path, PASS)
    f = CryptoFactory(lambda cfg: client)
    sealed = tmp_path / "s.parquet"
    cfg = EncryptionConfig("footer", column_keys={"pii": ["ssn"]}, internal_key_material=False)
    pqseal.encrypt_file(src, sealed, f.file_encryption_properties(KmsConnectionConfig(), cfg, sealed))
    mat_path = tmp_path / "_KEY_MATERIAL_FOR_s.parquet.json"
    doc = json.loads(mat_path.read_text())
    assert set(doc) == {"footerKey", "columnKey0"}
    assert "internalStorage" not in json.loads(doc["footerKey"])
    md = dict(pqseal.inspect(sealed)["footer_key_metadata"])
    assert md.pop("material")["masterKeyID"] == "footer"
    assert md == {"keyMaterialType": "PKMT1", "internalStorage": False, "keyReference": "footerKey"}
    # pyarrow reads it (external material found beside the file) through the bridge
    pa_props = crypto_factory(lambda cfg: client).file_decryption_properties(
        pe.KmsConnectionConfig(), pe.DecryptionConfiguration(), str(sealed))
    assert pq.read_table(sealed, decryption_properties=pa_props).equals(t)
    # rotate the master keys, re-wrap: the parquet file is untouched, both readers still work
    before = sealed.read_bytes()
    client.rotate("pii")
    client.rotate("footer")
    clear_caches()
    rotated = LocalKeystore(ks.path, PASS)
    n = CryptoFactory(lambda cfg: rotated).rotate_master_keys(KmsConnectionConfig(), sealed)
    assert n == 2 and sealed.read_bytes() == before
    new_doc = json.loads(mat_path.read_text())
    assert all(json.loads(v)["wrappedKEK"].startswith("pqks1:2:") for v in new_doc.values())
    assert not list(tmp_path.glob("_TMP_KEY_MATERIAL_FOR_*"))
    clear_caches()
    out = tmp_path / "u.parquet"
    pqseal.decrypt_file(sealed, out, CryptoFactory(lambda cfg: rotated).file_decryption_properties(
        KmsConnectionConfig(), None, sealed))
    assert pq.read_table(out).equals(t)
    # internal material is rotated too: the footer alone is rewritten (pqseal.keys.rotation)
    internal = tmp_path / "i.parquet"
    pqseal.encrypt_file(src, internal, f.file_encryption_properties(
        KmsConnectionConfig(), EncryptionConfig("footer", uniform_encryption=True)))
    assert f.rotate_master_keys(KmsConnectionConfig(), internal) == 1
    pqseal.decrypt_file(internal, tmp_path / "iu.parquet", CryptoFactory(
        lambda cfg: rotated).file_decryption_properties(KmsConnectionConfig(), None, internal))
    assert pq.read_table(tmp_path / "iu.parquet").equals(t)


def test_write_table_and_read_table_projection(tmp_path, ks):
    t = pa.table({"id": np.arange(3000), "ssn": [f"{i:09d}" for i in range(3000)], "v": np.arange(3000.0)})
    client = LocalKeystore(ks.path, PASS)
    path = tmp_path / "t.parquet"
    pqseal.write_table(t, path, EncryptionConfig("footer", column_keys={"pii": ["ssn"]}), client)
    assert pqseal.inspect(path)["encrypted"]
    assert pqseal.read_table(path, client).equals(t)
    assert pqseal.read_table(path, client, columns=["id", "v"]).equals(t.select(["id", "v"]))
    assert not list(tmp_path.glob(".pqseal-plain-*"))


def test_read_table_decrypts_only_the_projection(tmp_path, ks):
    from pqseal.kms import KmsClient

    class NoPii(KmsClient):
        def __init__(self, inner):
            self.inner = inner

        def wrap_key(self, key_bytes, master_key_identifier):
            return self.inner.wrap_key(key_bytes, master_key_identifier)

        def unwrap_key(self, wrapped_key, master_key_identifier):
            if master_key_identifier == "pii":
                raise KeyAccessDenied("no access to pii")
            return self.inner.unwrap_key(wrapped_key, master_key_identifier)

    t = pa.table({"id": np.arange(100), "ssn": [f"{i:09d}" for i in range(100)]})
    client = LocalKeystore(ks.path, PASS)
    path = tmp_path / "t.parquet"
    pqseal.write_table(t, path, EncryptionConfig("footer", column_keys={"pii": ["ssn"]}), client)
    clear_caches()
    limited = NoPii(client)
    assert pqseal.read_table(path, limited, columns=["id"]).equals(t.select(["id"]))
