"""Usage per key version of the local keystore: DEKs wrapped, unwraps, files and bytes
sealed, the most modules one DEK encrypted, first and last use; counted where files are
sealed, merged across processes, shown by ``pqseal keys status`` (table and JSON)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

import pqseal
from pme_reference import RefFile
from pqseal.cli import main as cli
from pqseal.api import decryption_properties
from pqseal.config import EncryptionConfig
from pqseal.errors import OutputExists
from pqseal.kms.keystore import TEST_KDF_ENV, LocalKeystore

PASS = b"usage passphrase"
TEST_N = 1 << 14


@pytest.fixture(autouse=True)
def environment(monkeypatch, fresh_key_caches):
    monkeypatch.setenv("PQSEAL_AUDIT_LOG", "off")


@pytest.fixture
def ks(make_keystore):
    return make_keystore(PASS, "f", "c")


@pytest.fixture
def plain(tmp_path):
    p = tmp_path / "plain.parquet"
    pq.write_table(pa.table({"a": list(range(20000)), "b": [str(i % 7) for i in range(20000)]}), p,
                   data_page_size=4096, row_group_size=8000)
    return p


def _rows(ks) -> dict:
    return {(r["id"], r["version"]): r for r in ks.list()}


@pytest.mark.parametrize("double", [True, False])
def test_deks_files_and_bytes_per_version_and_a_rotation_starts_fresh(tmp_path, ks, plain, double):
    cfg = EncryptionConfig("f", column_keys={"c": ["a"]}, double_wrapping=double)
    outs = [tmp_path / f"s{i}.parquet" for i in range(3)]
    for o in outs:
        pqseal.encrypt_file(plain, o, cfg, kms=ks)
    sizes = sum(os.path.getsize(o) for o in outs)
    rows = _rows(ks)
    for kid in ("f", "c"):
        r = rows[(kid, 1)]
        assert (r["deks"], r["files"], r["bytes"]) == (3, 3, sizes)
        assert r["wraps"] == (1 if double else 3)    # one KEK per master key, or one KMS call per DEK
        assert r["first_use"] <= r["last_use"]
    ks.rotate("f")
    other = LocalKeystore(ks.path, PASS)     # a new client: ks's cached KEK still names version 1
    pqseal.encrypt_file(plain, tmp_path / "after.parquet", cfg, kms=other)
    other.list()                             # flushes its counts
    rows = _rows(ks)
    assert (rows[("f", 2)]["deks"], rows[("f", 2)]["files"]) == (1, 1)
    assert (rows[("f", 1)]["deks"], rows[("f", 1)]["files"]) == (3, 3)       # the old version keeps its counts
    assert rows[("f", 2)]["bytes"] == os.path.getsize(tmp_path / "after.parquet")
    # an unseal counts unwraps, not seals
    pqseal.decrypt_file(outs[0], tmp_path / "u.parquet", kms=ks)
    assert _rows(ks)[("f", 1)]["unwraps"] >= 1 and _rows(ks)[("f", 1)]["files"] == 3


def test_rekey_counts_a_seal_and_a_failed_seal_counts_no_file(tmp_path, ks, plain):
    cfg = EncryptionConfig("f", column_keys={"c": ["a"]})
    pqseal.encrypt_file(plain, tmp_path / "s.parquet", cfg, kms=ks)
    pqseal.rekey_file(tmp_path / "s.parquet", tmp_path / "r.parquet", None, cfg, kms=ks)
    with pytest.raises(OutputExists):
        pqseal.encrypt_file(plain, tmp_path / "s.parquet", cfg, kms=ks)
    r = _rows(ks)[("f", 1)]
    assert r["files"] == 2 and r["deks"] == 3      # the refused seal wrapped a DEK but sealed nothing
    assert r["bytes"] == os.path.getsize(tmp_path / "s.parquet") + os.path.getsize(tmp_path / "r.parquet")


def test_most_modules_per_dek_matches_the_reference_count(tmp_path, ks, plain):
    """The column key's DEK encrypts every page header and body of column a, its indexes
    and its ColumnMetaData; counted here by the reference reader, not by pqseal."""
    out = tmp_path / "s.parquet"
    stats = pqseal.encrypt_file(plain, out, EncryptionConfig("f", column_keys={"c": ["a"]}), kms=ks)
    ref = RefFile(out, decryption_properties(out, kms=ks))
    expected = 0
    for c in ref.columns():
        if c.path == "a":
            expected += 2 * len(ref.pages(c)) + len(ref.index_modules(c)) + 1   # + its ColumnMetaData module
    assert expected > 20
    assert stats.max_dek_modules == expected
    assert _rows(ks)[("c", 1)]["max_dek_modules"] == expected
    env = {"PQSEAL_KEYSTORE": ks.path, "PQSEAL_KEYSTORE_PASSPHRASE": PASS.decode(), TEST_KDF_ENV: str(TEST_N)}
    rows = json.loads(CliRunner().invoke(cli, ["keys", "status", "c", "--json"], env=env).output)
    assert rows[0]["max_dek_modules"] == expected


_SEAL = """
import sys
import pqseal
from pqseal.api import decryption_properties
from pqseal.config import EncryptionConfig
from pqseal.errors import OutputExists
from pqseal.kms.keystore import LocalKeystore
ks = LocalKeystore(sys.argv[1], b"usage passphrase")
for i in range(int(sys.argv[4])):
    pqseal.encrypt_file(sys.argv[2], f"{sys.argv[3]}-{i}.parquet", EncryptionConfig("f", column_keys={"c": ["a"]}),
                        kms=ks)
"""


def test_counts_of_concurrent_processes_are_all_kept(tmp_path, ks, plain):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    procs = [subprocess.Popen([sys.executable, "-c", _SEAL, ks.path, str(plain), str(tmp_path / f"p{n}"), "6"],
                              env=env, stderr=subprocess.PIPE) for n in range(3)]
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
    sizes = sum(os.path.getsize(tmp_path / f"p{n}-{i}.parquet") for n in range(3) for i in range(6))
    for kid in ("f", "c"):
        r = _rows(LocalKeystore(ks.path, PASS))[(kid, 1)]
        assert (r["files"], r["deks"], r["bytes"]) == (18, 18, sizes)
        assert r["wraps"] == 3          # one KEK per process


STATUS_KEYS = {"id", "version", "state", "bits", "created", "age_seconds", "wraps", "deks", "unwraps", "files",
               "bytes", "max_dek_modules", "first_use", "last_use", "limits", "reached", "flag"}


def test_status_table_and_json(tmp_path, ks, plain):
    pqseal.encrypt_file(plain, tmp_path / "s.parquet", EncryptionConfig("f", column_keys={"c": ["a"]}), kms=ks)
    ks.rotate("f")
    ks.list()                                   # flushes this process's counts for the CLI to see
    env = {"PQSEAL_KEYSTORE": ks.path, "PQSEAL_KEYSTORE_PASSPHRASE": PASS.decode(), TEST_KDF_ENV: str(TEST_N)}
    res = CliRunner().invoke(cli, ["keys", "status", "--json"], env=env)
    assert res.exit_code == 0, res.output
    rows = json.loads(res.output)
    assert all(set(r) == STATUS_KEYS for r in rows)
    by = {(r["id"], r["version"]): r for r in rows}
    size = os.path.getsize(tmp_path / "s.parquet")
    assert (by[("f", 1)]["state"], by[("f", 1)]["files"], by[("f", 1)]["bytes"]) == ("decrypt-only", 1, size)
    assert (by[("f", 2)]["state"], by[("f", 2)]["files"], by[("f", 2)]["deks"]) == ("active", 0, 0)
    assert by[("f", 2)]["first_use"] is None and by[("f", 2)]["flag"] is None
    assert 0 <= by[("f", 1)]["age_seconds"] < 600

    lines = CliRunner().invoke(cli, ["keys", "status"], env=env).output.splitlines()
    assert lines[0].split() == ["id", "version", "state", "created", "age", "wraps", "deks", "unwraps", "files",
                                "bytes", "max_dek_modules", "first_use", "last_use", "flag"]
    f1 = next(ln.split() for ln in lines[1:] if ln.split()[:2] == ["f", "1"])
    assert f1[2] == "decrypt-only" and f1[8] == "1" and f1[9] == f"{size / 1000:.1f}kB"
    f2 = next(ln.split() for ln in lines[1:] if ln.split()[:2] == ["f", "2"])
    assert f2[2] == "active" and f2[5:9] == ["0", "0", "0", "0"] and f2[-1] == "-"


@pytest.mark.parametrize("plaintext_footer", [False, True])
@pytest.mark.parametrize("page_index", [False, True])
def test_inspect_counts_the_modules_of_each_dek_as_the_seal_did(tmp_path, ks, plaintext_footer, page_index):
    """pqseal inspect, with keys, counts the modules per DEK from the file's footer and
    offset indexes (or page headers): the count the seal made (and the reference count above)."""
    plain = tmp_path / "plain.parquet"
    pq.write_table(pa.table({"a": list(range(20000)), "b": [str(i % 7) for i in range(20000)]}), plain,
                   data_page_size=4096, row_group_size=8000, write_page_index=page_index)
    out = tmp_path / "s.parquet"
    cfg = EncryptionConfig("f", column_keys={"c": ["a"]}, plaintext_footer=plaintext_footer)
    stats = pqseal.encrypt_file(plain, out, cfg, kms=ks)
    assert pqseal.inspect(out, kms=ks)["max_dek_modules"] == stats.max_dek_modules
    uniform = tmp_path / "u.parquet"       # one footer DEK for everything: the footer and both columns
    stats = pqseal.encrypt_file(plain, uniform, EncryptionConfig("f", uniform_encryption=True,
                                                                 plaintext_footer=plaintext_footer), kms=ks)
    assert pqseal.inspect(uniform, kms=ks)["max_dek_modules"] == stats.max_dek_modules
    assert "max_dek_modules" not in pqseal.inspect(uniform)        # no keys: not counted
    env = {"PQSEAL_KEYSTORE": ks.path, "PQSEAL_KEYSTORE_PASSPHRASE": PASS.decode(), TEST_KDF_ENV: str(TEST_N)}
    res = CliRunner().invoke(cli, ["inspect", str(out), "--kms", "keystore"], env=env)
    assert res.exit_code == 0, res.output
    assert f"most modules under one data key: {pqseal.inspect(out, kms=ks)['max_dek_modules']:,}" in res.output


def test_parquet_writer_counts_its_files(tmp_path, ks):
    t = pa.table({"a": list(range(5000)), "b": ["x"] * 5000})
    pqseal.write_table(t, tmp_path / "w.parquet", EncryptionConfig("f", column_keys={"c": ["a"]}), ks)
    with pqseal.ParquetWriter(tmp_path / "parts", t.schema, EncryptionConfig("f", uniform_encryption=True), kms=ks,
                              partition_cols=["b"]) as w:
        w.write_table(t)
    parts = [p for p in (tmp_path / "parts").rglob("*") if p.is_file()]
    r = _rows(ks)[("f", 1)]
    assert (r["files"], r["deks"]) == (1 + len(parts), 1 + len(parts))
    assert r["bytes"] == os.path.getsize(tmp_path / "w.parquet") + sum(os.path.getsize(p) for p in parts)
    assert r["max_dek_modules"] == max(pqseal.inspect(p, kms=ks)["max_dek_modules"]
                                       for p in [tmp_path / "w.parquet", *parts])
