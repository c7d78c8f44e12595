"""Usage limits of the local keystore's key versions (max age, DEKs wrapped, bytes
sealed; warn or refuse), ``pqseal keys limits``, the 2^32 GCM bound per DEK, and
``keys disable|enable`` on Vault transit (min_decryption_version) against OpenBao."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import warnings

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

import pqseal
from pqseal import audit
from pqseal.cli import main as cli
from pqseal.config import EncryptionConfig
from pqseal.crypto import ModuleKey
from pqseal.errors import (InvocationLimitExceeded, KeyDisabled, KeyUsageLimitExceeded, KeyUsageWarning,
                           MalformedKeyMaterial)
from pqseal.format import EncryptionProperties
from pqseal.keys import clear_caches
from pqseal.kms.keystore import TEST_KDF_ENV, LocalKeystore
from pqseal.kms.limits import Limits, parse_age, parse_size
from vault_server import start_server

PASS = b"limits passphrase"
TEST_N = 1 << 14
CFG = EncryptionConfig("f", column_keys={"c": ["a"]})


@pytest.fixture(autouse=True)
def environment(monkeypatch, fresh_key_caches):
    monkeypatch.delenv("PQSEAL_AUDIT_LOG", raising=False)    # beside the keystore


@pytest.fixture
def ks(make_keystore):
    return make_keystore(PASS, "f", "c")


@pytest.fixture
def plain(tmp_path):
    p = tmp_path / "plain.parquet"
    pq.write_table(pa.table({"a": list(range(3000)), "b": ["x"] * 3000}), p)
    return p


def _env(ks) -> dict:
    return {"PQSEAL_KEYSTORE": ks.path, "PQSEAL_KEYSTORE_PASSPHRASE": PASS.decode(), TEST_KDF_ENV: str(TEST_N)}


def _limit_records(ks) -> list[tuple]:
    log = audit.log_path(ks.path)
    return [(r["op"], r["key"], r["version"], r["outcome"]) for _, r in audit.read(log) if r["op"] == "usage-limit"]


def test_parse_sizes_and_ages():
    assert parse_size("1TB") == 10**12 and parse_size("2GiB") == 2 << 30 and parse_size("512") == 512
    assert parse_age("90d") == 90 * 86400 and parse_age("12h") == 43200 and parse_age("30") == 30
    for bad in ("1XB", "-1", "", "1.5.2GB"):
        with pytest.raises(ValueError):
            parse_size(bad)
    with pytest.raises(ValueError):
        parse_age("3 months")


def test_refused_wraps_name_key_version_and_limit_and_a_rotation_starts_fresh(tmp_path, ks, plain):
    ks.set_limits("f", Limits(max_wraps=2, mode="refuse"))
    for i in range(2):
        pqseal.encrypt_file(plain, tmp_path / f"s{i}.parquet", CFG, kms=ks)
    with pytest.raises(KeyUsageLimitExceeded) as e:
        pqseal.encrypt_file(plain, tmp_path / "s2.parquet", CFG, kms=ks)
    assert (e.value.key_id, e.value.version, e.value.limit, e.value.threshold) == ("f", 1, "max-wraps", 2)
    assert "'f' version 1" in str(e.value) and "max-wraps" in str(e.value)
    assert not os.path.exists(tmp_path / "s2.parquet") and sorted(os.listdir(tmp_path)).count("s2.parquet") == 0
    assert _limit_records(ks) == [("usage-limit", "f", 1, "refused max-wraps")]
    assert audit.verify(audit.log_path(ks.path), ks.audit_key()).ok
    # files wrapped by the version still open: a limit never refuses an unwrap
    assert pqseal.read_table(tmp_path / "s0.parquet", ks).equals(pq.read_table(plain))
    ks.rotate("f")
    clear_caches()
    fresh = LocalKeystore(ks.path, PASS)
    pqseal.encrypt_file(plain, tmp_path / "s3.parquet", CFG, kms=fresh)   # version 2 starts from zero
    fresh.list()
    rows = {(r["id"], r["version"]): r for r in ks.list()}
    assert rows[("f", 2)]["deks"] == 1 and rows[("f", 1)]["deks"] == 2
    assert pqseal.read_table(tmp_path / "s0.parquet", fresh).equals(pq.read_table(plain))


def test_single_wrapping_refuses_at_the_kms_wrap(tmp_path, ks, plain):
    ks.set_limits(None, Limits(max_wraps=1, mode="refuse"))     # the keystore-wide default
    cfg = EncryptionConfig("f", column_keys={"c": ["a"]}, double_wrapping=False)
    pqseal.encrypt_file(plain, tmp_path / "s0.parquet", cfg, kms=ks)
    with pytest.raises(KeyUsageLimitExceeded, match="version 1"):
        pqseal.encrypt_file(plain, tmp_path / "s1.parquet", cfg, kms=ks)


def test_warn_mode_warns_once_and_records_it(tmp_path, ks, plain):
    ks.set_limits(None, Limits(max_bytes=1000))
    ks.set_limits("c", Limits(max_bytes=10**9))          # its own setting wins
    with warnings.catch_warnings(record=True) as got:
        warnings.simplefilter("always")
        stats = [pqseal.encrypt_file(plain, tmp_path / f"s{i}.parquet", CFG, kms=ks) for i in range(3)]
    usage = [w for w in got if issubclass(w.category, KeyUsageWarning)]
    assert len(usage) == 1 and "'f' version 1" in str(usage[0].message) and "max-bytes" in str(usage[0].message)
    assert [len([m for m in s.warnings if "max-bytes" in m]) for s in stats] == [0, 1, 0]
    assert _limit_records(ks) == [("usage-limit", "f", 1, "warn max-bytes")]
    assert {(r["id"], r["files"]) for r in ks.list() if r["version"] == 1} == {("f", 3), ("c", 3)}


def test_max_age_refuses_wraps_but_only_warns_on_unwrap(tmp_path, ks, plain):
    pqseal.encrypt_file(plain, tmp_path / "old.parquet", CFG, kms=ks)
    ks.set_limits("f", Limits(max_age=1, mode="refuse"))
    time.sleep(2.1)
    clear_caches()
    with pytest.raises(KeyUsageLimitExceeded, match="max-age"):
        pqseal.encrypt_file(plain, tmp_path / "new.parquet", CFG, kms=ks)
    with warnings.catch_warnings(record=True) as got:
        warnings.simplefilter("always")
        assert pqseal.read_table(tmp_path / "old.parquet", ks).equals(pq.read_table(plain))
    assert any(issubclass(w.category, KeyUsageWarning) and "max-age" in str(w.message) for w in got)


def test_limits_are_in_the_mac_protected_store(ks):
    ks.set_limits("f", Limits(max_wraps=5, mode="refuse"))
    doc = json.load(open(ks.path))
    assert doc["limits"]["keys"]["f"] == {"max_wraps": 5, "mode": "refuse"}
    doc["limits"]["keys"]["f"]["max_wraps"] = 10**9
    with open(ks.path, "w") as f:
        json.dump(doc, f)
    with pytest.raises(MalformedKeyMaterial, match="MAC"):
        LocalKeystore(ks.path, PASS)


def test_cli_keys_limits_and_status_flags(tmp_path, ks, plain):
    r = CliRunner()

    def run(*args, code=0):
        res = r.invoke(cli, list(args), env=_env(ks))
        assert res.exit_code == code, res.output
        return res.output
    assert "limits of master key f: none" in run("keys", "limits", "f")
    out = run("keys", "limits", "f", "--max-age", "90d", "--max-wraps", "1", "--mode", "refuse")
    assert "max age 90d" in out and "max wraps 1" in out and "(refuse)" in out
    out = run("keys", "limits", "--default", "--max-bytes", "1TB")
    assert "limits of default: max bytes 1.0TB (warn)" in out
    assert "in effect: max age 90d, max wraps 1, max bytes 1.0TB (refuse)" in run("keys", "limits", "f")
    assert "KEY_ID or give --default" in run("keys", "limits", code=2)
    assert "not a size" in run("keys", "limits", "f", "--max-bytes", "lots", code=2)
    assert "not in keystore" in run("keys", "limits", "nokey", code=1)
    help_text = " ".join(run("keys", "limits", "--help").split())
    assert "after `keys rotate` the new version starts from zero" in help_text
    assert "never refuses an unwrap (max-age on an unwrap only warns)" in help_text

    def encrypt(name, *keys, code=0) -> str:   # a process of its own: its counts are flushed as it exits
        p = subprocess.run([sys.executable, "-m", "pqseal", "encrypt", str(plain), str(tmp_path / name), *keys],
                           env=dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path), **_env(ks)),
                           capture_output=True, text=True, timeout=120)
        assert p.returncode == code, p.stderr
        return p.stderr
    assert encrypt("s0.parquet", "--footer-key", "f", "--column-keys", "c:a") == ""
    err = encrypt("s1.parquet", "--footer-key", "f", "--column-keys", "c:a", code=1)
    assert len(err.strip().splitlines()) == 1 and "KeyUsageLimitExceeded" in err and "'f' version 1" in err
    run("keys", "limits", "c", "--max-wraps", "1")            # warn
    err = encrypt("s2.parquet", "--footer-key", "c")
    assert len(err.strip().splitlines()) == 1 and err.startswith("warning: master key 'c' version 1") \
        and "max-wraps" in err
    rows = {(x["id"], x["version"]): x for x in json.loads(run("keys", "status", "--json"))}
    assert rows[("f", 1)]["flag"] == "LIMIT" and rows[("c", 1)]["flag"] == "WARN"
    assert rows[("f", 1)]["limits"] == {"max_age": 90 * 86400, "max_wraps": 1, "max_bytes": 10**12, "mode": "refuse"}
    assert rows[("f", 1)]["reached"] == [{"limit": "max-wraps", "mode": "refuse", "value": 1, "threshold": 1}]
    table = run("keys", "status").splitlines()
    assert table[0].split()[-1] == "flag"
    assert {ln.split()[0]: ln.split()[-1] for ln in table[1:] if ln.split()[1:2] == ["1"]} == {"c": "WARN",
                                                                                            "f": "LIMIT"}
    run("keys", "rotate", "f")
    rows = {(x["id"], x["version"]): x for x in json.loads(run("keys", "status", "f", "--json"))}
    assert rows[("f", 1)]["flag"] is None and rows[("f", 2)]["flag"] is None   # decrypt-only: no wrap limits
    encrypt("s3.parquet", "--footer-key", "f", "--column-keys", "c:a")


def test_a_seal_refuses_a_dek_past_the_gcm_bound(tmp_path, plain):
    """The 2^32 bound per DEK, exercised through the native core's test hook that sets a
    key's invocation count (rather than with 4 billion pages)."""
    key = os.urandom(16)
    held = ModuleKey(key)                               # shares the count of every ModuleKey of these bytes
    held._set_invocations((1 << 32) - 5)
    with pytest.raises(InvocationLimitExceeded):
        pqseal.encrypt_file(plain, tmp_path / "s.parquet", EncryptionProperties(key))
    assert os.listdir(tmp_path) == ["plain.parquet"]   # nothing sealed, no temporary left
    held._set_invocations(0)
    stats = pqseal.encrypt_file(plain, tmp_path / "s.parquet", EncryptionProperties(key))
    assert stats.max_dek_modules == held.invocations > 0


# ---- Vault transit: disable / enable through min_decryption_version ------------------------

@pytest.fixture(scope="module")
def bao(tmp_path_factory):
    server = start_server(str(tmp_path_factory.mktemp("bao")))
    yield server
    server.stop()


def test_vault_disable_and_enable_move_min_decryption_version(bao, tmp_path, monkeypatch):
    monkeypatch.setenv("VAULT_TOKEN", bao.root_token)
    env = {"VAULT_TOKEN": bao.root_token, TEST_KDF_ENV: str(TEST_N)}
    uri = f"vault+http://127.0.0.1:{bao.port}/transit"
    r = CliRunner()

    def run(*args, code=0):
        res = r.invoke(cli, list(args), env=env)
        assert res.exit_code == code, res.output
        return res.output
    run("keys", "create", "lim-k", "--kms", uri)
    pq.write_table(pa.table({"a": [1, 2, 3]}), tmp_path / "p.parquet")
    run("encrypt", str(tmp_path / "p.parquet"), str(tmp_path / "v1.parquet"), "--footer-key", "lim-k", "--kms", uri)
    run("keys", "rotate", "lim-k", "--kms", uri)
    run("keys", "rotate", "lim-k", "--kms", uri)

    def min_version() -> int:
        return bao.client().secrets.transit.read_key("lim-k")["data"]["min_decryption_version"]
    out = run("keys", "disable", "lim-k", "--version", "2", "--kms", uri, code=1)   # not the lowest enabled
    assert len(out.strip().splitlines()) == 1 and "from the lowest up" in out and "versions 1 to 1" in out
    out = run("keys", "disable", "lim-k", "--version", "3", "--kms", uri, code=1)   # the latest
    assert len(out.strip().splitlines()) == 1 and "latest" in out
    assert min_version() == 1
    run("keys", "disable", "lim-k", "--version", "1", "--kms", uri)
    assert min_version() == 2
    states = [(x["version"], x["state"]) for x in json.loads(run("keys", "status", "lim-k", "--kms", uri, "--json"))]
    assert states == [(1, "disabled"), (2, "decrypt-only"), (3, "active")]
    clear_caches()
    with pytest.raises(KeyDisabled):
        pqseal.read_table(tmp_path / "v1.parquet", uri)
    run("keys", "disable", "lim-k", "--version", "2", "--kms", uri)                 # now the lowest enabled
    assert min_version() == 3
    assert "decrypt-only" in run("keys", "enable", "lim-k", "--version", "1", "--kms", uri)
    assert min_version() == 1                                                       # 1 and 2 enabled again
    clear_caches()
    assert pqseal.read_table(tmp_path / "v1.parquet", uri).equals(pq.read_table(tmp_path / "p.parquet"))
    assert "no version 9" in run("keys", "disable", "lim-k", "--version", "9", "--kms", uri, code=1)


def test_footer_only_rotation_counts_its_dek_wraps_under_the_new_version(tmp_path, ks, plain):
    files = [tmp_path / f"s{i}.parquet" for i in range(2)]
    for f in files:
        pqseal.encrypt_file(plain, f, EncryptionConfig("f", uniform_encryption=True), kms=ks)
    ks.list()                                                    # flushes ks's counts
    ks.rotate("f")
    ks.set_limits("f", Limits(max_wraps=1, mode="refuse"))     # version 2 may wrap one DEK
    clear_caches()
    fresh = LocalKeystore(ks.path, PASS)
    pqseal.rotate(files[0], kms=fresh)
    before = files[1].read_bytes()
    with pytest.raises(KeyUsageLimitExceeded, match="'f' version 2"):
        pqseal.rotate(files[1], kms=fresh)
    assert files[1].read_bytes() == before                       # the refused rotation changed nothing
    rows = {(r["id"], r["version"]): r for r in fresh.list()}
    assert (rows[("f", 1)]["deks"], rows[("f", 2)]["deks"]) == (2, 1)
    assert pqseal.read_table(files[0], fresh).equals(pq.read_table(plain))
    assert pqseal.read_table(files[1], fresh).equals(pq.read_table(plain))   # old wrapping: never refused


def test_cli_rotate_warns_in_one_line(tmp_path, ks, plain):
    pqseal.encrypt_file(plain, tmp_path / "s.parquet", EncryptionConfig("f", uniform_encryption=True), kms=ks)
    ks.list()
    ks.set_limits(None, Limits(max_wraps=1))        # warn: the rotation wraps f's DEK a second time
    p = subprocess.run([sys.executable, "-m", "pqseal", "rotate", str(tmp_path / "s.parquet")],
                       env=dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path), **_env(ks)),
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    (line,) = p.stderr.splitlines()
    assert line.startswith("pqseal: warning: master key 'f' version 1 has wrapped more DEKs than its max-wraps (2 > 1)")
    assert "rotated 1 keys" in p.stdout
