"""Tenant keys created in the local keystore on first use: the creation policy (kept in
the store under its MAC, ``pqseal keys policy``), who may trigger creation, that only
wraps create, the audit record, and two processes writing a tenant's first file at once
ending with one key and two readable files (pyarrow reads them)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pyarrow as pa
import pytest
from click.testing import CliRunner

import pqseal
from pqseal import audit
from pqseal.cli import main as cli
from pqseal.errors import KeyDestroyed, KeyDisabled, KeyNotFound, MalformedKeyMaterial
from pqseal.kms.creation import CreationPolicy, current_user
from pqseal.kms.keylist import KeyListKms
from pqseal.kms.keystore import TEST_KDF_ENV, LocalKeystore

from pyarrow_kms import pyarrow_read

PASS = b"tenant passphrase"
HERE = os.path.dirname(os.path.abspath(__file__))
TABLE = pa.table({"customer_id": [7, 7, 8], "ssn": ["a", "b", "c"]})


pytestmark = pytest.mark.usefixtures("fresh_key_caches")


@pytest.fixture
def ks(tmp_path):
    return LocalKeystore.init(tmp_path / "ks.json", PASS)


def _records(ks) -> list[dict]:
    return [r for _, r in audit.read(os.path.join(os.path.dirname(ks.path), "audit.log"))]


def _versions(ks, key_id) -> list[int]:
    return [r["version"] for r in ks.list() if r["id"] == key_id]


def test_without_a_policy_a_missing_key_is_not_found(ks):
    with pytest.raises(KeyNotFound, match="'tenant-7' not in keystore.*creates no keys on first use"):
        ks.wrap_key(os.urandom(16), "tenant-7")
    assert ks.list() == []


def test_a_wrap_creates_a_key_the_policy_allows_and_it_is_audited(ks):
    ks.set_creation_policy(CreationPolicy(("tenant-*",), bits=128))
    dek = os.urandom(16)
    wrapped = ks.wrap_key(dek, "tenant-7")
    assert ks.unwrap_key(wrapped, "tenant-7") == dek
    rows = [r for r in ks.list() if r["id"] == "tenant-7"]
    assert [(r["version"], r["bits"], r["state"]) for r in rows] == [(1, 128, "active")]
    assert LocalKeystore(ks.path, PASS).unwrap_key(wrapped, "tenant-7") == dek    # it is in the file
    created = [r for r in _records(ks) if r["op"] == "auto-create"]
    assert [(r["key"], r["version"], r["outcome"], r["user"]) for r in created] == \
        [("tenant-7", 1, "ok", audit._user())]
    ks.wrap_key(dek, "tenant-7")
    assert len([r for r in _records(ks) if r["op"] == "auto-create"]) == 1      # created once
    assert audit.verify(os.path.join(os.path.dirname(ks.path), "audit.log"), ks.audit_key()).ok


def test_what_the_policy_does_not_create(ks):
    ks.set_creation_policy(CreationPolicy(("tenant-*",)))
    for key_id, why in (("other-1", "matches no creation pattern"),
                        ("tenant-{customer_id}", "ASCII letters, digits"),     # an unresolved template
                        ("tenant-a/b", "ASCII letters, digits"), ("tenant- x", "ASCII letters, digits")):
        with pytest.raises(KeyNotFound, match=why):
            ks.wrap_key(os.urandom(16), key_id)
    with pytest.raises(KeyNotFound):                       # an unwrap never creates
        ks.unwrap_key("pqks1:1:" + "A" * 40, "tenant-9")
    assert ks.list() == []


def test_only_the_listed_users_trigger_creation(ks):
    ks.set_creation_policy(CreationPolicy(("tenant-*",), users=("someone-else",)))
    with pytest.raises(KeyNotFound, match=f"user '{current_user()}' may not create"):
        ks.wrap_key(os.urandom(16), "tenant-7")
    ks.set_creation_policy(CreationPolicy(("tenant-*",), users=("someone-else", current_user())))
    ks.wrap_key(os.urandom(16), "tenant-7")
    assert _versions(ks, "tenant-7") == [1]


def test_a_destroyed_tenant_key_is_not_created_again(ks):
    ks.set_creation_policy(CreationPolicy(("tenant-*",)))
    w = ks.wrap_key(os.urandom(16), "tenant-42")
    ks.destroy("tenant-42")
    with pytest.raises(KeyDisabled, match="no active version"):
        ks.wrap_key(os.urandom(16), "tenant-42")
    with pytest.raises(KeyDestroyed):
        ks.unwrap_key(w, "tenant-42")
    assert [r["state"] for r in ks.list()] == ["destroyed"]


def test_the_policy_is_under_the_stores_mac(ks):
    ks.set_creation_policy(CreationPolicy(("tenant-*",)))
    doc = json.load(open(ks.path))
    assert doc["creation"] == {"patterns": ["tenant-*"], "users": [], "bits": 256}
    doc["creation"]["patterns"] = ["*"]                 # widened by hand, without the passphrase
    with open(ks.path, "w") as f:
        json.dump(doc, f)
    with pytest.raises(MalformedKeyMaterial, match="MAC"):
        LocalKeystore(ks.path, PASS)


def test_bad_policies_are_refused():
    for kw in ({"patterns": ("tenant/*",)}, {"patterns": ("",)}, {"patterns": ("t-*",), "users": ("a b",)},
               {"patterns": ("t-*",), "bits": 100}):
        with pytest.raises(ValueError):
            CreationPolicy(**kw)


def test_keys_policy_cli(tmp_path, ks):
    env = {"PQSEAL_KEYSTORE": ks.path, "PQSEAL_KEYSTORE_PASSPHRASE": PASS.decode()}
    r = CliRunner()
    res = r.invoke(cli, ["keys", "policy"], env=env)
    assert res.exit_code == 0 and "no keys are created on first use" in res.output
    res = r.invoke(cli, ["keys", "policy", "--auto-create", "tenant-*", "--auto-create", "org-?",
                         "--users", f"{current_user()},bob"], env=env)
    assert res.exit_code == 0, res.output
    assert "tenant-*, org-?" in res.output and f"{current_user()}, bob" in res.output
    assert LocalKeystore(ks.path, PASS).creation_policy() == CreationPolicy(("tenant-*", "org-?"),
                                                                            (current_user(), "bob"))
    res = r.invoke(cli, ["keys", "policy", "--auto-create", "bad/pattern"], env=env)
    assert res.exit_code == 2 and "creation pattern" in res.output
    res = r.invoke(cli, ["keys", "policy", "--clear"], env=env)
    assert res.exit_code == 0 and "no keys are created" in res.output
    assert LocalKeystore(ks.path, PASS).creation_policy() == CreationPolicy()


def test_writer_creates_tenant_keys_on_first_use(tmp_path, ks):
    ks.set_creation_policy(CreationPolicy(("tenant-*",)))
    cfg = pqseal.EncryptionConfig(footer_key="tenant-{customer_id}", uniform_encryption=True)
    files = pqseal.write_to_dataset(TABLE, tmp_path / "ds", cfg, kms=ks, partition_cols=["customer_id"])
    assert sorted(r["id"] for r in ks.list()) == ["tenant-7", "tenant-8"]
    for f in files:
        assert pyarrow_read(open(f, "rb").read(), ks).num_rows in (1, 2)


def test_other_kms_do_not_create_and_say_the_key_is_missing(tmp_path):
    kms = KeyListKms({"tenant-7": os.urandom(16)})
    cfg = pqseal.EncryptionConfig(footer_key="tenant-{customer_id}", uniform_encryption=True)
    with pytest.raises(KeyNotFound, match="'tenant-8'"):
        pqseal.write_to_dataset(TABLE, tmp_path / "ds", cfg, kms=kms, partition_cols=["customer_id"])


_CHILD = textwrap.dedent("""
    import os, sys, time
    import pyarrow as pa
    import pqseal
    from pqseal.kms.keystore import LocalKeystore

    ks_path, root, me, rounds = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    ks = LocalKeystore(ks_path, b"tenant passphrase")
    cfg = pqseal.EncryptionConfig(footer_key="tenant-{customer_id}", uniform_encryption=True)
    for i in range(rounds):
        open(os.path.join(root, f"ready-{me}-{i}"), "w").close()
        while len([n for n in os.listdir(root) if n.startswith(f"ready-") and n.endswith(f"-{i}")]) < 2:
            time.sleep(0.0005)                 # both processes start the round together
        table = pa.table({"customer_id": [100 + i] * 3, "n": [1, 2, 3]})
        pqseal.write_to_dataset(table, os.path.join(root, "ds"), cfg, kms=ks, partition_cols=["customer_id"],
                                basename_template=f"{me}-{{i}}.parquet")
""")


def test_two_processes_writing_a_tenants_first_file_end_with_one_key(tmp_path, ks):
    ks.set_creation_policy(CreationPolicy(("tenant-*",)))
    rounds = 8
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([os.path.dirname(pqseal.__path__[0]), HERE]),
           TEST_KDF_ENV: str(1 << 14)}
    procs = [subprocess.Popen([sys.executable, "-c", _CHILD, ks.path, str(tmp_path), me, str(rounds)], env=env,
                              stderr=subprocess.PIPE) for me in ("a", "b")]
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err.decode()
    fresh = LocalKeystore(ks.path, PASS)
    rows = fresh.list()
    assert sorted((r["id"], r["version"]) for r in rows) == [(f"tenant-{100 + i}", 1) for i in range(rounds)]
    created = [r for r in _records(ks) if r["op"] == "auto-create"]
    assert sorted(r["key"] for r in created) == [f"tenant-{100 + i}" for i in range(rounds)]   # one creator each
    assert {r["outcome"] for r in created} == {"ok"}
    for i in range(rounds):
        for me in ("a", "b"):
            data = open(tmp_path / "ds" / f"customer_id={100 + i}" / f"{me}-0.parquet", "rb").read()
            assert pyarrow_read(data, fresh).column("n").to_pylist() == [1, 2, 3]
