"""The local keystore's key lifecycle: version states (active, decrypt-only, disabled,
destroyed) and their effect on wraps and unwraps, the keystore format 2 and the
migration from format 1, ``passwd`` (atomic), ``backup``/``restore`` (no resurrection of
destroyed versions) and the ``pqseal keys`` commands, concurrently."""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

import pqseal
from pqseal.cli import main as cli
from pqseal.config import EncryptionConfig
from pqseal.crypto import unwrap_key_locally, wrap_key_locally
from pqseal.errors import (KeyAccessDenied, KeyDestroyed, KeyDisabled, MalformedKeyMaterial, OutputExists)
from pqseal.keys import clear_caches
from pqseal.kms.keystore import TEST_KDF_ENV, LocalKeystore

PASS = b"lifecycle passphrase"
TEST_N = 1 << 14


@pytest.fixture(autouse=True)
def cheap_kdf(monkeypatch):
    monkeypatch.setenv(TEST_KDF_ENV, str(TEST_N))   # keystores at test cost (see kms/keystore.py)
    clear_caches()
    yield
    clear_caches()


@pytest.fixture
def ks(tmp_path):
    k = LocalKeystore.init(tmp_path / "ks.json", PASS)
    k.create("pii")
    return k


def _raw(ks: LocalKeystore, key_id: str, version: int) -> bytes:
    """The raw bytes of a master key version, read from the file with the store's key."""
    doc = json.load(open(ks.path))
    v = [v for v in doc["keys"][key_id]["versions"] if v["version"] == version][0]
    return unwrap_key_locally(v["sealed"], ks._kek, f"{key_id}:{version}".encode())


def _assert_gone(path, raw: bytes, sealed: str) -> None:
    data = open(path, "rb").read()
    for pattern in (raw, base64.b64encode(raw), raw.hex().encode(), sealed.encode()):
        assert pattern not in data


def test_states_and_their_effect_on_wrap_and_unwrap(ks):
    dek = os.urandom(16)
    w1 = ks.wrap_key(dek, "pii")
    assert ks.rotate("pii") == 2
    other = LocalKeystore(ks.path, PASS)         # another holder of the store, loaded now
    w2 = other.wrap_key(dek, "pii")
    assert w2.startswith("pqks1:2:")
    assert other.unwrap_key(w1, "pii") == dek     # decrypt-only still unwraps

    ks.disable("pii", 1)
    with pytest.raises(KeyDisabled, match="'pii' version 1 is disabled"):
        other.unwrap_key(w1, "pii")               # takes effect in the other holder at once
    assert other.unwrap_key(w2, "pii") == dek
    assert ks.enable("pii", 1) == "decrypt-only"
    assert other.unwrap_key(w1, "pii") == dek

    ks.disable("pii", 2)                          # the active version: no wraps at all
    with pytest.raises(KeyDisabled, match="no active version"):
        other.wrap_key(dek, "pii")
    assert ks.enable("pii", 2) == "active"
    assert other.wrap_key(dek, "pii").startswith("pqks1:2:")

    raw1, sealed1 = _raw(ks, "pii", 1), json.load(open(ks.path))["keys"]["pii"]["versions"][0]["sealed"]
    rep = ks.destroy("pii", 1)
    assert rep.versions == [1] and rep.backups_rewritten == [] and rep.backups_skipped == []
    with pytest.raises(KeyDestroyed, match="'pii' version 1 was destroyed"):
        other.unwrap_key(w1, "pii")
    assert other.unwrap_key(w2, "pii") == dek
    for change in (ks.enable, ks.disable):       # irreversible
        with pytest.raises(KeyDestroyed):
            change("pii", 1)
    _assert_gone(ks.path, raw1, sealed1)
    assert [(r["version"], r["state"]) for r in LocalKeystore(ks.path, PASS).list()] == [
        (1, "destroyed"), (2, "active")]
    # a destroyed key id is not re-created under the same name
    with pytest.raises(ValueError, match="already exists"):
        ks.create("pii")


def test_destroying_every_version_then_rotating(ks):
    dek = os.urandom(32)
    w1 = ks.wrap_key(dek, "pii")
    assert ks.destroy("pii").versions == [1]
    with pytest.raises(KeyDisabled, match="no active version"):
        ks.wrap_key(dek, "pii")
    assert ks.rotate("pii") == 2                  # new key material; the old files stay unreadable
    with pytest.raises(KeyDestroyed):
        ks.unwrap_key(w1, "pii")
    assert ks.unwrap_key(ks.wrap_key(dek, "pii"), "pii") == dek


def test_refused_changes_write_nothing(ks):
    ks.destroy("pii", 1)
    before = open(ks.path, "rb").read()
    with pytest.raises(KeyDestroyed):
        ks.disable("pii", 1)
    with pytest.raises(pqseal.errors.KeyNotFound):
        ks.enable("pii", 7)
    with pytest.raises(pqseal.errors.KeyNotFound):
        ks.destroy("nope")
    assert open(ks.path, "rb").read() == before
    assert [r["state"] for r in ks.list()] == ["destroyed"]


def test_pyarrow_reads_after_rotate_and_a_disabled_version_fails_until_enabled(tmp_path, ks):
    import pyarrow.parquet.encryption as pe
    from pqseal.arrow import crypto_factory

    ks.create("footer")
    t = pa.table({"id": np.arange(2000), "ssn": [f"{i:09d}" for i in range(2000)]})
    path = tmp_path / "t.parquet"
    pqseal.write_table(t, path, EncryptionConfig("footer", column_keys={"pii": ["ssn"]}), ks)
    ks.rotate("pii")
    ks.rotate("footer")

    def pyarrow_read():
        clear_caches()
        props = crypto_factory(lambda cfg: LocalKeystore(ks.path, PASS)).file_decryption_properties(
            pe.KmsConnectionConfig(), pe.DecryptionConfiguration())
        return pq.read_table(path, decryption_properties=props)

    assert pyarrow_read().equals(t)               # decrypt-only versions unwrap
    ks.disable("pii", 1)
    with pytest.raises(Exception, match="disabled"):
        pyarrow_read()
    clear_caches()
    with pytest.raises(KeyDisabled, match="'pii' version 1"):
        pqseal.read_table(path, LocalKeystore(ks.path, PASS))
    assert pqseal.read_table(path, LocalKeystore(ks.path, PASS), columns=["id"]).equals(t.select(["id"]))
    ks.enable("pii", 1)
    assert pyarrow_read().equals(t)
    ks.destroy("footer", 1)
    with pytest.raises(Exception, match="destroyed"):
        pyarrow_read()


def test_destroy_rewrites_backups_and_restore_cannot_resurrect(tmp_path, ks):
    dek = os.urandom(16)
    w1 = ks.wrap_key(dek, "pii")
    ks.rotate("pii")
    w2 = ks.wrap_key(dek, "pii")
    raw1, sealed1 = _raw(ks, "pii", 1), json.load(open(ks.path))["keys"]["pii"]["versions"][0]["sealed"]
    b1 = tmp_path / "backup.json"
    assert ks.backup(b1) == str(b1)
    assert oct(os.stat(b1).st_mode & 0o777) == "0o600"
    with pytest.raises(OutputExists):
        ks.backup(b1)
    outside = tmp_path / "copy-by-hand.json"       # a copy pqseal did not write
    shutil.copy(b1, outside)
    os.chmod(outside, 0o600)

    rep = ks.destroy("pii", 1)
    assert rep.backups_rewritten == [str(b1)] and rep.backups_skipped == []
    _assert_gone(ks.path, raw1, sealed1)
    _assert_gone(b1, raw1, sealed1)
    with pytest.raises(KeyDestroyed, match="pii version 1"):
        LocalKeystore.restore(outside, ks.path, PASS, force=True)
    with pytest.raises(OutputExists, match="newer"):
        LocalKeystore.restore(b1, ks.path, PASS)  # the store changed since (destroy)
    restored = LocalKeystore.restore(b1, ks.path, PASS, force=True)
    with pytest.raises(KeyDestroyed):
        restored.unwrap_key(w1, "pii")
    assert restored.unwrap_key(w2, "pii") == dek

    # the store lost: the rewritten backup brings back version 2 only
    os.unlink(ks.path)
    restored = LocalKeystore.restore(b1, ks.path, PASS)
    assert restored.unwrap_key(w2, "pii") == dek
    with pytest.raises(KeyDestroyed):
        restored.unwrap_key(w1, "pii")


def test_restore_carries_tombstones_of_versions_newer_than_the_backup(tmp_path, ks):
    b = tmp_path / "b.json"
    ks.backup(b)
    ks.rotate("pii")
    ks.destroy("pii", 2)
    LocalKeystore.restore(b, ks.path, PASS, force=True)
    after = LocalKeystore(ks.path, PASS)
    assert [(r["version"], r["state"]) for r in after.list()] == [(1, "active"), (2, "destroyed")]
    assert after.rotate("pii") == 3               # version 2 is never reused


def test_backup_under_an_earlier_passphrase_is_reported_not_rewritten(tmp_path, ks):
    b = tmp_path / "b.json"
    ks.backup(b)
    ks.passwd(b"new passphrase")
    rep = ks.destroy("pii", 1)
    assert rep.backups_rewritten == [] and rep.backups_skipped[0][0] == str(b)
    assert "earlier passphrase" in rep.backups_skipped[0][1]
    with pytest.raises(KeyDestroyed):            # and restore still refuses it
        LocalKeystore.restore(b, ks.path, PASS, force=True)


def test_restore_refuses_another_store_and_tampered_backups(tmp_path, ks):
    other = LocalKeystore.init(tmp_path / "other.json", PASS)
    b = tmp_path / "b.json"
    other.backup(b)
    with pytest.raises(OutputExists, match="another keystore"):
        LocalKeystore.restore(b, ks.path, PASS)
    doc = json.load(open(b))
    doc["keys"]["x"] = {"versions": []}
    with open(b, "w") as f:
        json.dump(doc, f)
    with pytest.raises(MalformedKeyMaterial, match="modified outside pqseal"):
        LocalKeystore.restore(b, ks.path, PASS, force=True)
    with pytest.raises(KeyAccessDenied, match="wrong passphrase"):
        LocalKeystore.restore(tmp_path / "ks.json", tmp_path / "new.json", b"nope")


def test_state_edits_without_the_passphrase_are_detected(ks):
    ks.disable("pii", 1)
    doc = json.load(open(ks.path))
    doc["keys"]["pii"]["versions"][0]["state"] = "active"
    with open(ks.path, "w") as f:
        json.dump(doc, f)
    with pytest.raises(MalformedKeyMaterial, match="modified outside pqseal"):
        LocalKeystore(ks.path, PASS)
    # relabelled as format 1 (no MAC there): the passphrase check names the format
    doc["format"] = "pqseal-keystore-1"
    del doc["mac"]
    with open(ks.path, "w") as f:
        json.dump(doc, f)
    with pytest.raises(KeyAccessDenied):
        LocalKeystore(ks.path, PASS)


def test_passwd(ks):
    dek = os.urandom(16)
    w = ks.wrap_key(dek, "pii")
    kdf = ks.passwd(b"second passphrase")
    assert kdf == {"name": "scrypt", "n": TEST_N, "r": 8, "p": 1}
    with pytest.raises(KeyAccessDenied, match="wrong passphrase"):
        LocalKeystore(ks.path, PASS)
    k2 = LocalKeystore(ks.path, b"second passphrase")
    assert k2.unwrap_key(w, "pii") == dek
    assert ks.unwrap_key(w, "pii") == dek         # the object that changed it goes on working
    ks.rotate("pii")
    with pytest.raises(ValueError, match="2\\^17"):
        ks.passwd(b"third", kdf_n=1 << 15)        # below OWASP's minimum: refused
    with pytest.raises(KeyAccessDenied):
        ks.passwd(b"")


def test_passwd_failing_mid_write_leaves_the_old_store(ks, monkeypatch):
    import pqseal._io as io

    dek = os.urandom(16)
    w = ks.wrap_key(dek, "pii")
    before = open(ks.path, "rb").read()

    def fail(src, dst):
        raise OSError("simulated failure before the rename")
    monkeypatch.setattr(io, "replace", fail)
    with pytest.raises(OSError, match="simulated"):
        ks.passwd(b"never")
    monkeypatch.undo()
    monkeypatch.setenv(TEST_KDF_ENV, str(TEST_N))
    assert open(ks.path, "rb").read() == before
    left = [p for p in os.listdir(os.path.dirname(ks.path))
            if p not in ("ks.json", "ks.json.lock", "ks.json.usage", "audit.log")]
    assert left == []
    assert LocalKeystore(ks.path, PASS).unwrap_key(w, "pii") == dek
    assert ks.unwrap_key(w, "pii") == dek and ks.rotate("pii") == 2   # in memory: still the old passphrase


_PASSWD_LOOP = """
import sys
from pqseal.kms.keystore import LocalKeystore
ks = LocalKeystore(sys.argv[1], b"p0")
print("ready", flush=True)
i = 0
while True:
    ks.passwd(b"p%d" % ((i + 1) % 2))
    i += 1
"""


def test_passwd_killed_at_random_points_leaves_old_or_new(tmp_path):
    path = tmp_path / "ks.json"
    ks = LocalKeystore.init(path, b"p0")
    ks.create("k")
    w = ks.wrap_key(b"d" * 16, "k")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    rng = np.random.default_rng(11)
    seen = set()
    for trial in range(8):
        p = subprocess.Popen([sys.executable, "-c", _PASSWD_LOOP, str(path)], env=env, stdout=subprocess.PIPE)
        assert p.stdout.readline().strip() == b"ready"
        time.sleep(float(rng.uniform(0.0, 0.3)))
        p.send_signal(signal.SIGKILL)
        p.wait(30)
        opened = None
        for pw in (b"p0", b"p1"):
            try:
                opened = LocalKeystore(path, pw)
            except KeyAccessDenied:
                continue
            seen.add(pw)
            if pw == b"p1":                       # back to p0 for the next trial
                opened.passwd(b"p0")
            break
        assert opened is not None, f"trial {trial}: the store opens with neither passphrase"
        assert LocalKeystore(path, b"p0").unwrap_key(w, "k") == b"d" * 16
    assert seen and json.load(open(path))["generation"] > 3   # passwd ran between the kills


def _format1(path, passphrase: bytes, keys: dict) -> None:
    """A store as pqseal wrote format 1: scrypt N=2^15, r=8, p=1, no MAC, no generation."""
    from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

    salt = os.urandom(16)
    kek = Scrypt(salt=salt, length=32, n=1 << 15, r=8, p=1).derive(passphrase)
    doc = {"format": "pqseal-keystore-1",
           "kdf": {"name": "scrypt", "salt": base64.b64encode(salt).decode(), "n": 1 << 15, "r": 8, "p": 1},
           "check": wrap_key_locally(b"pqseal keystore passphrase check", kek, b"check"),
           "keys": {kid: {"versions": [{"version": v, "bits": len(raw) * 8, "state": state,
                                         "created": "2025-01-01T00:00:00+00:00",
                                         "sealed": wrap_key_locally(raw, kek, f"{kid}:{v}".encode())}
                                        for v, state, raw in versions]}
                    for kid, versions in keys.items()}}
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(doc, f)


def test_format1_store_opens_and_is_upgraded_on_the_next_write(tmp_path):
    path = tmp_path / "old.json"
    m1, m2 = os.urandom(16), os.urandom(32)
    _format1(path, PASS, {"pii": [(1, "decrypt-only", m1), (2, "active", m2)]})
    dek = os.urandom(16)
    w1 = "pqks1:1:" + wrap_key_locally(dek, m1, b"pii:1")   # wrapped as format-1 pqseal wrapped it
    ks = LocalKeystore(path, PASS)
    assert ks.kdf() == {"format": "pqseal-keystore-1", "name": "scrypt", "n": 1 << 15, "r": 8, "p": 1}
    assert ks.unwrap_key(w1, "pii") == dek
    assert ks.wrap_key(dek, "pii").startswith("pqks1:2:")
    assert json.load(open(path))["format"] == "pqseal-keystore-1"   # reading does not write
    ks.create("new")
    doc = json.load(open(path))
    assert doc["format"] == "pqseal-keystore-2" and doc["kdf"]["n"] == 1 << 15   # never lowered
    assert doc["mac"] and doc["store_id"] and doc["generation"] == 1
    again = LocalKeystore(path, PASS)
    assert again.unwrap_key(w1, "pii") == dek and _raw(again, "pii", 2) == m2
    with pytest.raises(KeyAccessDenied):
        LocalKeystore(path, b"other")


def test_default_kdf_follows_owasp_and_format1_upgrades_to_it(tmp_path, monkeypatch):
    monkeypatch.delenv(TEST_KDF_ENV)
    ks = LocalKeystore.init(tmp_path / "new.json", PASS)
    assert ks.kdf() == {"format": "pqseal-keystore-2", "name": "scrypt", "n": 1 << 17, "r": 8, "p": 1}
    path = tmp_path / "old.json"
    m1 = os.urandom(16)
    _format1(path, PASS, {"k": [(1, "active", m1)]})
    old = LocalKeystore(path, PASS)
    assert old.passwd(PASS) == {"name": "scrypt", "n": 1 << 17, "r": 8, "p": 1}
    assert _raw(LocalKeystore(path, PASS), "k", 1) == m1
    monkeypatch.setenv(TEST_KDF_ENV, str(1 << 17))  # the test knob cannot raise nor lower the production floor
    with pytest.raises(ValueError, match="test-only"):
        LocalKeystore.init(tmp_path / "x.json", PASS)


# ---- CLI ---------------------------------------------------------------------------------------------


def test_cli_lifecycle(tmp_path):
    env = {"PQSEAL_KEYSTORE": str(tmp_path / "ks.json"), "PQSEAL_KEYSTORE_PASSPHRASE": "pw-1", TEST_KDF_ENV: "16384"}
    r = CliRunner()

    def run(*args, code=0, **extra):
        res = r.invoke(cli, list(args), env={**env, **extra})
        assert res.exit_code == code, res.output
        return res.output
    run("keys", "init")
    run("keys", "create", "t42")
    assert "version 2" in run("keys", "rotate", "t42")
    run("keys", "disable", "t42", "--version", "1")
    run("keys", "disable", "t42", code=2)                       # --version is required
    rows = json.loads(run("keys", "status", "--json"))
    assert [(x["version"], x["state"]) for x in rows] == [(1, "disabled"), (2, "active")]
    assert "decrypt-only" in run("keys", "enable", "t42", "--version", "1")
    bfile = tmp_path / "b.json"
    run("keys", "backup", str(bfile))
    assert "exists" in run("keys", "backup", str(bfile), code=1)
    run("keys", "backup", str(bfile), "--force")
    out = run("keys", "destroy", "t42", "--version", "1", code=2)
    assert "--yes" in out
    assert json.loads(run("keys", "status", "--json"))[0]["state"] == "decrypt-only"
    out = run("keys", "destroy", "t42", "--version", "1", "--yes")
    assert "rewrote backup" in out
    assert "destroyed" in run("keys", "enable", "t42", "--version", "1", code=1)
    assert "N=2^14" in run("keys", "passwd", PQSEAL_KEYSTORE_NEW_PASSPHRASE="pw-2")
    assert "wrong passphrase" in run("keys", "status", code=1)
    assert "wrong passphrase" in run("keys", "restore", str(bfile), code=1, PQSEAL_KEYSTORE_PASSPHRASE="pw-2")
    assert "newer" in run("keys", "restore", str(bfile), code=1)     # the backup's passphrase
    assert "2^17" in run("keys", "passwd", "--kdf-n", "1024", code=1, PQSEAL_KEYSTORE_PASSPHRASE="pw-2")
    rows = json.loads(run("keys", "status", "--json", PQSEAL_KEYSTORE_PASSPHRASE="pw-2"))
    assert [(x["version"], x["state"]) for x in rows] == [(1, "destroyed"), (2, "active")]


def test_cli_commands_concurrently(tmp_path):
    env = dict(os.environ, PQSEAL_KEYSTORE=str(tmp_path / "ks.json"), PQSEAL_KEYSTORE_PASSPHRASE="pw",
               PYTHONPATH=os.pathsep.join(sys.path), **{TEST_KDF_ENV: "16384"})
    ks = LocalKeystore.init(tmp_path / "ks.json", b"pw")
    ks.create("shared")
    cmds = [["keys", "rotate", "shared"]] * 4 + [["keys", "create", f"k{i}"] for i in range(3)] + [
        ["keys", "disable", "shared", "--version", "1"], ["keys", "backup", str(tmp_path / "b.json")]]
    procs = [subprocess.Popen([sys.executable, "-m", "pqseal", *c], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE) for c in cmds]
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
    final = LocalKeystore(tmp_path / "ks.json", b"pw")   # the MAC checks out
    states = {(r["id"], r["version"]): r["state"] for r in final.list()}
    assert states[("shared", 1)] == "disabled"
    assert [states[("shared", v)] for v in (2, 3, 4)] == ["decrypt-only"] * 3 and states[("shared", 5)] == "active"
    assert {f"k{i}" for i in range(3)} <= {kid for kid, _ in states}
    assert json.load(open(tmp_path / "ks.json"))["generation"] == 2 + len(cmds)
    assert final._doc["backups"] == [str(tmp_path / "b.json")]


def test_cli_disable_and_destroy_on_a_pkcs11_token(tmp_path):
    """disable and destroy through KeyAdmin on a SoftHSM2 token (enable of one version is
    refused: the client can only re-enable every version), checked by the token's status."""
    from softhsm import SO_PIN, module_path

    util = shutil.which("softhsm2-util")
    if util is None:
        from interop import kms_missing

        kms_missing("softhsm2-util not found (Debian: softhsm2)")
    (tmp_path / "tokens").mkdir(mode=0o700)
    conf = tmp_path / "softhsm2.conf"
    conf.write_text(f"directories.tokendir = {tmp_path / 'tokens'}\nobjectstore.backend = file\nlog.level = ERROR\n")
    env = dict(os.environ, SOFTHSM2_CONF=str(conf), PQSEAL_PKCS11_PIN="1234-lc", PYTHONPATH=os.pathsep.join(sys.path))
    subprocess.run([util, "--init-token", "--free", "--label", "lc", "--so-pin", SO_PIN, "--pin", "1234-lc"],
                   check=True, capture_output=True, timeout=60, env=env)
    uri = f"pkcs11:module={module_path()};token=lc"

    def run(*args, code=0):
        p = subprocess.run([sys.executable, "-m", "pqseal", *args, "--kms", uri], capture_output=True, text=True,
                           timeout=120, env=env)
        assert p.returncode == code, p.stderr
        return p
    run("keys", "create", "hk")
    run("keys", "rotate", "hk")
    run("keys", "disable", "hk", "--version", "1")
    rows = json.loads(run("keys", "status", "--json").stdout)
    assert [(r["version"], r["state"]) for r in rows] == [(1, "disabled"), (2, "active")]
    assert "cannot re-enable" in run("keys", "enable", "hk", "--version", "1", code=1).stderr
    assert "--yes" in run("keys", "destroy", "hk", "--version", "1", code=2).stderr
    assert "version(s) 1" in run("keys", "destroy", "hk", "--version", "1", "--yes").stdout
    rows = json.loads(run("keys", "status", "--json").stdout)
    assert [(r["version"], r["state"]) for r in rows] == [(2, "active")]


def test_usage_counters_per_version_merged_across_holders(tmp_path, ks):
    dek = os.urandom(16)
    w = [ks.wrap_key(dek, "pii") for _ in range(3)]
    other = LocalKeystore(ks.path, PASS)
    for x in w[:2]:
        other.unwrap_key(x, "pii")
    with pytest.raises(pqseal.InvalidTag):       # a failed unwrap is not a use
        other.unwrap_key(w[0][:-8] + "AAAAAAA=", "pii")
    store_before = open(ks.path, "rb").read()
    other.list()                                  # flushes this holder's counts
    assert open(ks.path, "rb").read() == store_before   # counting never rewrites the sealed store
    ks.rotate("pii")
    ks.wrap_key(dek, "pii")
    rows = {r["version"]: r for r in ks.list()}
    assert (rows[1]["wraps"], rows[1]["unwraps"], rows[2]["wraps"], rows[2]["unwraps"]) == (3, 2, 1, 0)
    assert rows[1]["first_use"] <= rows[1]["last_use"] and rows[2]["last_use"]
    assert oct(os.stat(ks.path + ".usage").st_mode & 0o777) == "0o600"

    # through a file write and the CLI's status table
    ks.create("footer")
    pq_path = tmp_path / "t.parquet"
    pqseal.write_table(pa.table({"ssn": ["1", "2"]}), pq_path, EncryptionConfig("footer", column_keys={"pii": ["ssn"]}),
                       ks)
    ks.list()
    env = {"PQSEAL_KEYSTORE": ks.path, "PQSEAL_KEYSTORE_PASSPHRASE": PASS.decode(), TEST_KDF_ENV: str(TEST_N)}
    res = CliRunner().invoke(cli, ["keys", "status", "--json"], env=env)
    rows = {(r["id"], r["version"]): r for r in json.loads(res.output)}
    assert rows[("footer", 1)]["wraps"] >= 1 and rows[("pii", 2)]["wraps"] >= 2
    table = CliRunner().invoke(cli, ["keys", "status"], env=env).output
    assert "wraps" in table.splitlines()[0] and "unwraps" in table.splitlines()[0]


def test_counting_never_fails_a_wrap_when_the_usage_file_cannot_be_written(ks, monkeypatch):
    import pqseal.kms.keyusage as ku

    def read_only():
        raise PermissionError("read-only keystore directory")
    monkeypatch.setattr(ku, "FLUSH_SECONDS", 0.0)     # every use flushes
    monkeypatch.setattr(ks._usage, "_lock", read_only)
    w = ks.wrap_key(b"k" * 16, "pii")
    assert ks.unwrap_key(w, "pii") == b"k" * 16
    assert [r["version"] for r in ks.list()] == [1]
