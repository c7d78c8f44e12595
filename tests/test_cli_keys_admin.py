"""``pqseal keys create|rotate|status|list --kms URI`` against real servers: an OpenBao
dev server (Vault transit) and a SoftHSM2 token (PKCS#11), each checked through the
server's own API or through pyarrow reading a file wrapped by the new key version; and
the local keystore as before."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from interop import kms_missing
from softhsm import SO_PIN, module_path
from vault_server import start_server


def cli(*args, env, ok=True):
    p = subprocess.run([sys.executable, "-m", "pqseal", *args], capture_output=True, text=True, timeout=120,
                       env=env)
    if ok:
        assert p.returncode == 0, p.stderr
    return p


@pytest.fixture(scope="module")
def bao(tmp_path_factory):
    server = start_server(str(tmp_path_factory.mktemp("bao")))
    yield server
    server.stop()


def test_vault_keys_create_rotate_status(bao, tmp_path):
    env = dict(os.environ, VAULT_TOKEN=bao.root_token)
    uri = f"vault+http://127.0.0.1:{bao.port}/transit"
    cli("keys", "create", "cli-k1", "--kms", uri, env=env)
    assert bao.client().secrets.transit.read_key("cli-k1")["data"]["latest_version"] == 1   # the server's view
    again = cli("keys", "create", "cli-k1", "--kms", uri, env=env, ok=False)
    assert again.returncode == 1 and "already exists" in again.stderr and len(again.stderr.splitlines()) == 1
    out = cli("keys", "rotate", "cli-k1", "--kms", uri, env=env)
    assert "version 2" in out.stdout
    assert bao.client().secrets.transit.read_key("cli-k1")["data"]["latest_version"] == 2
    rows = json.loads(cli("keys", "status", "cli-k1", "--kms", uri, "--json", env=env).stdout)
    assert [(r["version"], r["state"]) for r in rows] == [(1, "decrypt-only"), (2, "active")]
    # a file sealed through the rotated key opens
    pq.write_table(pa.table({"a": [1, 2, 3]}), tmp_path / "p.parquet")
    cli("encrypt", str(tmp_path / "p.parquet"), str(tmp_path / "s.parquet"), "--footer-key", "cli-k1", "--kms", uri,
        env=env)
    cli("decrypt", str(tmp_path / "s.parquet"), str(tmp_path / "u.parquet"), "--kms", uri, env=env)
    assert pq.read_table(tmp_path / "u.parquet").equals(pq.read_table(tmp_path / "p.parquet"))
    listing = cli("keys", "status", "--kms", uri, env=env, ok=False)
    assert listing.returncode != 0 and "name one" in listing.stderr
    missing = cli("keys", "status", "no-such-key", "--kms", uri, env=env, ok=False)
    assert missing.returncode == 1 and "no-such-key" in missing.stderr


def test_pkcs11_keys_create_rotate_status(tmp_path):
    util = shutil.which("softhsm2-util")
    if util is None:
        kms_missing("softhsm2-util not found (Debian: softhsm2)")
    module = module_path()
    (tmp_path / "tokens").mkdir(mode=0o700)
    conf = tmp_path / "softhsm2.conf"
    conf.write_text(f"directories.tokendir = {tmp_path / 'tokens'}\nobjectstore.backend = file\nlog.level = ERROR\n")
    env = dict(os.environ, SOFTHSM2_CONF=str(conf), PQSEAL_PKCS11_PIN="1234-cli")
    subprocess.run([util, "--init-token", "--free", "--label", "cli", "--so-pin", SO_PIN, "--pin", "1234-cli"],
                   check=True, capture_output=True, timeout=60, env=env)
    uri = f"pkcs11:module={module};token=cli"
    cli("keys", "create", "hk", "--bits", "128", "--kms", uri, env=env)
    cli("keys", "rotate", "hk", "--kms", uri, env=env)
    rows = json.loads(cli("keys", "status", "--kms", uri, "--json", env=env).stdout)
    assert [(r["id"], r["version"], r["bits"], r["state"]) for r in rows] == [
        ("hk", 1, 128, "decrypt-only"), ("hk", 2, 128, "active")]
    assert "1234-cli" not in json.dumps(rows)
    wrong = cli("keys", "status", "--kms", uri, env=dict(env, PQSEAL_PKCS11_PIN="0000"), ok=False)
    assert wrong.returncode == 1 and "0000" not in wrong.stderr


def test_keystore_status_matches_list(tmp_path):
    env = dict(os.environ, PQSEAL_KEYSTORE=str(tmp_path / "ks.json"), PQSEAL_KEYSTORE_PASSPHRASE="status test")
    cli("keys", "init", env=env)
    cli("keys", "create", "a", env=env)
    cli("keys", "rotate", "a", env=env)
    status = json.loads(cli("keys", "status", "--json", env=env).stdout)
    assert [(r["id"], r["version"], r["state"]) for r in status] == [("a", 1, "decrypt-only"), ("a", 2, "active")]
    listed = json.loads(cli("keys", "list", "--json", env=env).stdout)
    assert [{k: v for k, v in r.items() if k != "age_seconds"} for r in listed] == \
        [{k: v for k, v in r.items() if k != "age_seconds"} for r in status]       # a second apart, maybe
    both = cli("keys", "status", "--keystore", "x", "--kms", "keystore:y", env=env, ok=False)
    assert both.returncode == 2
    # a KMS without key administration (AWS KMS has it: tests/test_kms_aws_admin.py)
    keylist = cli("keys", "create", "k", "--kms", "keylist:",
                  env=dict(env, PQSEAL_KEY_LIST="k1: AAECAwQFBgcICQoLDA0ODw=="), ok=False)
    assert keylist.returncode == 1 and "no key administration" in keylist.stderr
