"""Crypto-shredding one tenant: a hive dataset of four tenants written by
ParquetWriter(partition_cols=["customer_id"]) with template key ids (tenant keys created
on first use), ``pqseal keys destroy tenant-42 --yes``; pyarrow's own PME reader still
opens every other tenant's files and fails on tenant 42's; pqseal raises KeyDestroyed
naming the key; dataset jobs list tenant 42's files as failed, leave their bytes as they
were and write nothing for them, and process the others."""

from __future__ import annotations

import hashlib
import os

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pyarrow.parquet.encryption as pe
import pytest
from click.testing import CliRunner

import pqseal
from pqseal.cli import main as cli
from pqseal.errors import KeyDestroyed
from pqseal.keys import clear_caches
from pqseal.kms.creation import CreationPolicy
from pqseal.kms.keystore import LocalKeystore

from pyarrow_kms import pyarrow_read

PASS = "shred passphrase"
TENANTS = (1, 2, 3, 42)
SHREDDED = 42
TABLE = pa.table({"customer_id": [t for t in TENANTS for _ in range(50)],
                  "ssn": [f"{i:09d}" for i in range(50 * len(TENANTS))],
                  "amount": [float(i) for i in range(50 * len(TENANTS))]})
CONFIG = pqseal.EncryptionConfig(footer_key="tenant-{customer_id}", column_keys={"tenant-{customer_id}": ["ssn"]},
                                 complete_columns=True)     # every column and the footer under the tenant key


pytestmark = pytest.mark.usefixtures("fresh_key_caches")


def _tenant_of(path) -> int:
    return int([s for s in str(path).split(os.sep) if s.startswith("customer_id=")][0].split("=", 1)[1])


def _files(root) -> list[str]:
    return sorted(os.path.join(d, f) for d, _, fs in os.walk(root) for f in fs
                  if not f.startswith((".", "_")) and ".pqseal-job" not in d)


def _hashes(root) -> dict[str, str]:
    return {os.path.relpath(f, root): hashlib.sha256(open(f, "rb").read()).hexdigest() for f in _files(root)}


def _rows(tenant: int) -> pa.Table:
    return TABLE.filter(pc.equal(TABLE["customer_id"], tenant)).drop_columns(["customer_id"])


@pytest.fixture
def shredded(tmp_path, monkeypatch):
    """(dataset root, keystore): tenant 42's key destroyed (both its versions)."""
    path = tmp_path / "keys" / "ks.json"
    monkeypatch.setenv("PQSEAL_KEYSTORE", str(path))
    monkeypatch.setenv("PQSEAL_KEYSTORE_PASSPHRASE", PASS)
    ks = LocalKeystore.init(path, PASS.encode())
    ks.set_creation_policy(CreationPolicy(("tenant-*",)))
    root = tmp_path / "ds"
    with pqseal.ParquetWriter(root, TABLE.schema, CONFIG, kms=ks, partition_cols=["customer_id"],
                              basename_template="a-{i}.parquet") as w:
        w.write_table(TABLE)
    assert sorted(r["id"] for r in ks.list()) == [f"tenant-{t}" for t in TENANTS]   # created on first use
    ks.rotate(f"tenant-{SHREDDED}")          # a second batch under version 2 of the tenant's key
    with pqseal.ParquetWriter(root, TABLE.schema, CONFIG, kms=ks, partition_cols=["customer_id"],
                              basename_template="b-{i}.parquet") as w:
        w.write_table(TABLE)
    for f in _files(root):                   # before: every file opens with pyarrow
        assert pyarrow_read(open(f, "rb").read(), ks).equals(_rows(_tenant_of(f)))
    res = CliRunner().invoke(cli, ["keys", "destroy", f"tenant-{SHREDDED}", "--yes"])
    assert res.exit_code == 0, res.output
    assert f"destroyed master key tenant-{SHREDDED} version(s) 1, 2" in res.output     # every version
    clear_caches()
    return root, LocalKeystore(path, PASS.encode())


def test_shredded_tenant_is_unreadable_and_the_others_still_open(shredded):
    root, ks = shredded
    assert {(r["id"], r["state"]) for r in ks.list() if r["id"] == f"tenant-{SHREDDED}"} == \
        {(f"tenant-{SHREDDED}", "destroyed")}
    files = _files(root)
    assert len(files) == 2 * len(TENANTS)
    for f in files:
        data = open(f, "rb").read()
        if _tenant_of(f) == SHREDDED:
            with pytest.raises(Exception, match=f"tenant-{SHREDDED}"):       # pyarrow's reader fails
                pyarrow_read(data, ks)
            with pytest.raises(KeyDestroyed, match=f"'tenant-{SHREDDED}' version [12] was destroyed"):
                pqseal.decrypt_file(f, f + ".plain", kms=ks)
            assert not os.path.exists(f + ".plain")
        else:
            assert pyarrow_read(data, ks).equals(_rows(_tenant_of(f)))
    # the dataset stays usable: pyarrow prunes the shredded partition and reads the rest
    props = pqseal.arrow.crypto_factory(lambda cfg: ks).file_decryption_properties(
        pe.KmsConnectionConfig(), pe.DecryptionConfiguration())
    got = pq.read_table(root, filters=[("customer_id", "!=", SHREDDED)], decryption_properties=props)
    assert got.num_rows == 2 * 50 * (len(TENANTS) - 1)
    assert SHREDDED not in got["customer_id"].to_pylist()


def _check_failed_kept(rep, root, before, dst=None) -> None:
    shredded = sorted(r for r in before if _tenant_of(r) == SHREDDED)
    assert sorted(r.path for r in rep.failed) == shredded
    for r in rep.failed:
        assert "KeyDestroyed" in r.error and f"tenant-{SHREDDED}" in r.error, r.error
    assert sorted(r.path for r in rep.ok) == sorted(set(before) - set(shredded))
    if dst is not None:
        assert not any(_tenant_of(f) == SHREDDED for f in _files(dst))      # nothing written for them
    after = _hashes(root)
    assert {r: after[r] for r in shredded} == {r: before[r] for r in shredded}   # bytes untouched


def test_dataset_decrypt_lists_shredded_files_and_keeps_them(shredded, tmp_path):
    root, ks = shredded
    before = _hashes(root)
    rep = pqseal.dataset.decrypt(root, tmp_path / "plain", kms=ks)
    _check_failed_kept(rep, root, before, tmp_path / "plain")
    assert _hashes(root) == before
    for r in rep.ok:
        assert pq.read_table(tmp_path / "plain" / r.path).equals(_rows(_tenant_of(r.path)))
    again = pqseal.dataset.decrypt(root, tmp_path / "plain", kms=ks)            # a rerun: skipped, not deleted
    assert again.failed == 0 and again.ok == 0
    assert sorted(r.path for r in again.skipped if r.error) == sorted(r.path for r in rep.failed)
    assert _hashes(root) == before


def test_dataset_rekey_and_verify_list_shredded_files_and_keep_them(shredded, tmp_path):
    root, ks = shredded
    before = _hashes(root)
    rep = pqseal.dataset.rekey(root, tmp_path / "rekeyed", encryption=CONFIG, kms=ks)
    _check_failed_kept(rep, root, before, tmp_path / "rekeyed")
    for r in rep.ok:
        data = open(tmp_path / "rekeyed" / r.path, "rb").read()
        assert pyarrow_read(data, ks).equals(_rows(_tenant_of(r.path)))
    rep = pqseal.dataset.verify(root, kms=ks)
    _check_failed_kept(rep, root, before)
    assert _hashes(root) == before


def test_dataset_rotate_leaves_shredded_files_untouched(shredded):
    root, ks = shredded
    for t in TENANTS:
        if t != SHREDDED:
            ks.rotate(f"tenant-{t}")
    before = _hashes(root)
    rep = pqseal.dataset.rotate(root, kms=ks)
    _check_failed_kept(rep, root, before)
    after = _hashes(root)
    for r in rep.ok:
        assert after[r.path] != before[r.path]                     # re-wrapped in place
        data = open(root / r.path, "rb").read()
        assert pyarrow_read(data, ks).equals(_rows(_tenant_of(r.path)))
        for t in TENANTS:
            if t != SHREDDED:
                ks.disable(f"tenant-{t}", 1)
        assert pyarrow_read(data, ks).equals(_rows(_tenant_of(r.path)))    # under version 2 only
        for t in TENANTS:
            if t != SHREDDED:
                ks.enable(f"tenant-{t}", 1)


def test_cli_decrypt_of_a_shredded_tree_reports_the_key(shredded, tmp_path):
    root, _ = shredded
    before = _hashes(root)
    res = CliRunner().invoke(cli, ["decrypt", str(root), str(tmp_path / "out")])
    assert res.exit_code != 0
    assert "KeyDestroyed" in res.output and f"tenant-{SHREDDED}" in res.output
    assert _hashes(root) == before
    assert sorted(os.path.relpath(f, tmp_path / "out") for f in _files(tmp_path / "out")) == \
        sorted(r for r in before if _tenant_of(r) != SHREDDED)


def test_dataset_encrypt_for_a_shredded_tenant_fails_only_its_files(shredded, tmp_path):
    _, ks = shredded
    plain = tmp_path / "plain"
    pq.write_to_dataset(TABLE, plain, partition_cols=["customer_id"])
    before = _hashes(plain)
    lines = []
    rep = pqseal.dataset.encrypt(plain, tmp_path / "enc", CONFIG, kms=ks, on_result=lambda r: lines.append(r.path))
    assert sorted(r.path for r in rep.failed) == sorted(r for r in before if _tenant_of(r) == SHREDDED)
    assert "keys not writable: KeyDisabled" in rep.failed[0].error and f"'tenant-{SHREDDED}'" in rep.failed[0].error
    assert sorted(lines) == sorted(before)               # every file reported, the refused one too
    assert rep.ok == len(TENANTS) - 1
    assert not any(_tenant_of(f) == SHREDDED for f in _files(tmp_path / "enc"))
    assert [r["state"] for r in ks.list() if r["id"] == f"tenant-{SHREDDED}"] == ["destroyed", "destroyed"]
    assert _hashes(plain) == before
