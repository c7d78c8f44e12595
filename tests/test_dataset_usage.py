"""Key usage and usage limits of dataset jobs with the local keystore: the driver counts
the DEKs its workers wrap under the key session's KEKs, the files and bytes they seal
and the most modules per DEK, and checks the limits per file before dispatching it
(threads, worker processes, a Dask LocalCluster); workers still make no KMS call. The
counts are read back from ``pqseal keys status --json``; sealed files are opened with
pyarrow's own PME reader."""

from __future__ import annotations

import hashlib
import json
import os
import warnings

import pyarrow as pa
import pyarrow.parquet as pq
import pyarrow.parquet.encryption as pe
import pytest
from click.testing import CliRunner

from pqseal import dataset
from pqseal.api import decryption_properties
from pqseal.arrow import crypto_factory
from pqseal.cli import main as cli
from pqseal.config import EncryptionConfig
from pqseal.format.inspect import inspect_file
from pqseal.kms.keystore import TEST_KDF_ENV, LocalKeystore
from pqseal.kms.limits import Limits

from counting_kms import CountingKms
from interop import require

PASS = b"dataset usage passphrase"
TEST_N = 1 << 14
N = 6
# per file: the footer DEK under kf, one DEK per column under kc
CFG = EncryptionConfig("kf", column_keys={"kc": ["id", "v"]})


@pytest.fixture(autouse=True)
def environment(monkeypatch, fresh_key_caches):
    monkeypatch.delenv("PQSEAL_AUDIT_LOG", raising=False)     # beside the keystore


@pytest.fixture
def ks(make_keystore):
    return make_keystore(PASS, "kf", "kc")


def table(i: int) -> pa.Table:
    rows = 3000 + 7 * i       # files of different sizes: the byte sums are not a multiple of one
    return pa.table({"id": pa.array(range(rows), pa.int64()), "v": pa.array([j * 0.5 for j in range(rows)])})


@pytest.fixture
def src(tmp_path):
    root = tmp_path / "src"
    for i in range(N):
        d = root / f"p={i % 2}"
        d.mkdir(parents=True, exist_ok=True)
        pq.write_table(table(i), d / f"f{i}.parquet", row_group_size=1000, data_page_size=2048)
    return root


def sealed_files(root) -> list:
    return sorted(p for p in root.rglob("f*.parquet"))


def status(ks) -> dict:
    """``pqseal keys status --json``, by (key id, version)."""
    ks.list()                  # flushes this process's counts for the CLI to see
    env = {"PQSEAL_KEYSTORE": ks.path, "PQSEAL_KEYSTORE_PASSPHRASE": PASS.decode(), TEST_KDF_ENV: str(TEST_N)}
    res = CliRunner().invoke(cli, ["keys", "status", "--json"], env=env)
    assert res.exit_code == 0, res.output
    return {(r["id"], r["version"]): r for r in json.loads(res.output)}


def pyarrow_reads(ks, path, expected: pa.Table) -> None:
    fresh = LocalKeystore(ks.path, PASS)
    props = crypto_factory(lambda cfg: fresh).file_decryption_properties(
        pe.KmsConnectionConfig(), pe.DecryptionConfiguration(cache_lifetime=0), str(path))
    assert pq.read_table(path, decryption_properties=props).equals(expected)


def index(path) -> int:
    return int(path.stem[1:])


def sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("executor", ["threads", "processes"])
def test_encrypt_counts_deks_files_bytes_and_modules_per_version(ks, src, tmp_path, executor):
    kms = CountingKms(ks)
    r = dataset.encrypt(src, tmp_path / "out", CFG, kms=kms, executor=executor, workers=2)
    assert r.ok == N and r.failed == 0 and not r.warnings
    # the driver made every KMS call: one KEK per master key, and counted every file
    assert (kms.wraps, kms.unwraps, kms.seals) == (2, 0, N) and kms.pids == {os.getpid()} and r.kms_calls == 2
    files = sealed_files(tmp_path / "out")
    assert len(files) == N
    total = sum(os.path.getsize(f) for f in files)
    # the most modules under one DEK, counted from each file's structure by inspect
    most = max(inspect_file(str(f), decryption_properties(f, kms=ks))["max_dek_modules"] for f in files)
    rows = status(ks)
    for kid, deks in (("kf", N), ("kc", 2 * N)):
        row = rows[(kid, 1)]
        assert (row["wraps"], row["deks"], row["files"], row["bytes"]) == (1, deks, N, total), kid
        assert row["first_use"] and row["last_use"]
    assert most > 10 and rows[("kc", 1)]["max_dek_modules"] == most    # a column DEK encrypts the most
    assert rows[("kf", 1)]["max_dek_modules"] == most                   # per file: one count for all its keys
    for f in files:
        pyarrow_reads(ks, f, table(index(f)))


def test_refuse_max_wraps_lets_the_allowed_files_through_and_fails_the_rest(ks, src, tmp_path):
    ks.set_limits("kc", Limits(max_wraps=7, mode="refuse"))   # 2 DEKs per file: 3 files (6 DEKs) fit
    out, report = tmp_path / "out", tmp_path / "report.json"
    r = dataset.encrypt(src, out, CFG, kms=ks, executor="threads", workers=2, report=report)
    assert r.ok == 3 and r.failed == N - 3 and not r.success
    for f in r.failed:
        assert f.error.startswith("KeyUsageLimitExceeded: master key 'kc' version 1 has wrapped more DEKs than its "
                                  "max-wraps (8 > 7): refused"), f.error
        assert not (out / f.path).exists()
        assert not (out / os.path.dirname(f.path) / f"_KEY_MATERIAL_FOR_{os.path.basename(f.path)}.json").exists()
    doc = json.loads(report.read_text())
    assert doc["counts"]["failed"] == N - 3
    assert all("KeyUsageLimitExceeded" in f["error"] for f in doc["failed"])
    rows = status(ks)
    ok_bytes = sum(os.path.getsize(out / f.path) for f in r.ok)
    assert (rows[("kc", 1)]["deks"], rows[("kc", 1)]["files"], rows[("kc", 1)]["bytes"]) == (6, 3, ok_bytes)
    assert (rows[("kf", 1)]["deks"], rows[("kf", 1)]["files"]) == (3, 3)      # refused files count nowhere
    for f in r.ok:
        pyarrow_reads(ks, out / f.path, table(index(out / f.path)))

    # after a key rotation, a rerun with retry_failed seals the rest under the new version
    ks.rotate("kc")
    r = dataset.encrypt(src, out, CFG, kms=ks, executor="threads", workers=2, retry_failed=True)
    assert r.ok == N - 3 and r.failed == 0 and r.skipped == 3
    rows = status(ks)
    assert (rows[("kc", 2)]["deks"], rows[("kc", 2)]["files"]) == (2 * (N - 3), N - 3)
    for f in sealed_files(out):
        pyarrow_reads(ks, f, table(index(f)))


def test_refuse_max_bytes_reserves_the_files_in_flight(ks, src, tmp_path):
    """All N files are dispatched at once: without the reservation none would be counted
    yet and all would go. With it, as one by one, a file goes while the bytes sealed plus
    those in flight are under the limit."""
    sizes = sorted(os.path.getsize(f) for f in sealed_files(src))
    ks.set_limits("kf", Limits(max_bytes=2 * sizes[-1] + 1, mode="refuse"))   # 3 files of any size
    r = dataset.encrypt(src, tmp_path / "out", CFG, kms=ks, executor="threads", workers=N)
    assert r.ok == 3 and r.failed == N - 3
    assert all("has sealed more bytes than its max-bytes" in f.error for f in r.failed)
    assert status(ks)[("kf", 1)]["files"] == 3


def test_warn_mode_gives_one_warning_per_key_version_per_job(ks, src, tmp_path):
    ks.set_limits(None, Limits(max_wraps=2))                   # warn, for kf and kc
    for job in ("a", "b"):                                     # twice in one process: once per job
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            r = dataset.encrypt(src, tmp_path / job, CFG, kms=ks, executor="threads", workers=2)
        assert r.ok == N and r.failed == 0
        assert sorted(w.split(" has ")[0] for w in r.warnings) == ["master key 'kc' version 1",
                                                                    "master key 'kf' version 1"], r.warnings
        assert all("max-wraps" in w and "warning" in w for w in r.warnings)
    assert (status(ks)[("kf", 1)]["deks"], status(ks)[("kc", 1)]["deks"]) == (2 * N, 4 * N)


def test_rotate_counts_the_rewrapped_deks_under_the_new_version(ks, src, tmp_path):
    out = tmp_path / "out"
    r = dataset.encrypt(src, out, CFG, kms=ks, executor="threads", workers=2)
    assert r.ok == N
    ks.rotate("kf")
    ks.rotate("kc")
    ks.set_limits("kf", Limits(max_wraps=4, mode="refuse"))   # one footer DEK per file: 4 files
    before = {f: sha(f) for f in sealed_files(out)}
    kms = CountingKms(ks)
    r = dataset.rotate(out, kms=kms, executor="processes", workers=2)
    assert r.ok == 4 and r.failed == N - 4
    assert all("KeyUsageLimitExceeded: master key 'kf' version 2" in f.error for f in r.failed)
    assert all(sha(out / f.path) == before[out / f.path] for f in r.failed)       # untouched
    assert kms.pids == {os.getpid()} and kms.seals == N and kms.wraps == 2
    rows = status(ks)
    assert (rows[("kf", 2)]["deks"], rows[("kc", 2)]["deks"]) == (4, 8)
    assert (rows[("kf", 2)]["files"], rows[("kf", 2)]["bytes"]) == (0, 0)   # a rotation seals no data
    assert (rows[("kf", 1)]["deks"], rows[("kc", 1)]["deks"]) == (N, 2 * N)
    for f in sealed_files(out):
        pyarrow_reads(ks, f, table(index(f)))


def test_a_dask_cluster_job_is_counted_on_the_driver(ks, src, tmp_path):
    require("distributed")
    from distributed import Client, LocalCluster
    from distributed.security import Security

    sec = Security.temporary()
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, security=sec, dashboard_address=":0",
                      silence_logs=40) as cluster, Client(cluster, security=sec) as client:
        ks.set_limits("kf", Limits(max_wraps=N - 1, mode="refuse"))
        kms = CountingKms(ks)
        r = dataset.encrypt(src, tmp_path / "out", CFG, kms=kms, executor=client)
        worker_pids = set(client.run(os.getpid).values())
    assert r.executor == "dask" and r.ok == N - 1 and r.failed == 1
    assert kms.pids == {os.getpid()} and not worker_pids & kms.pids and kms.wraps == 2
    files = sealed_files(tmp_path / "out")
    rows = status(ks)
    assert (rows[("kf", 1)]["deks"], rows[("kf", 1)]["files"]) == (N - 1, N - 1)
    assert (rows[("kc", 1)]["deks"], rows[("kc", 1)]["bytes"]) == (2 * (N - 1), sum(os.path.getsize(f) for f in files))


def test_a_rotation_fails_only_the_files_of_a_key_already_over_its_limit(ks, src, tmp_path):
    """The session's write KEK for kc is refused (kc is at its limit before the job):
    the files with kc DEKs fail, those with kf DEKs only are rotated; the job goes on."""
    import pqseal

    out = tmp_path / "out"
    for f in sealed_files(src):
        cfg = CFG if index(f) < 3 else EncryptionConfig("kf", uniform_encryption=True)
        (out / f.parent.name).mkdir(parents=True, exist_ok=True)
        pqseal.encrypt_file(f, out / f.parent.name / f.name, cfg, kms=ks)
    ks.set_limits("kc", Limits(max_wraps=6, mode="refuse"))    # 3 files × 2 DEKs: no more
    before = {f: sha(f) for f in sealed_files(out)}
    r = dataset.rotate(out, kms=ks, executor="threads", workers=2)
    assert sorted(index(out / f.path) for f in r.ok) == [3, 4, 5]
    assert sorted(index(out / f.path) for f in r.failed) == [0, 1, 2]
    assert all("KeyUsageLimitExceeded: master key 'kc' version 1" in f.error for f in r.failed)
    assert all(sha(out / f.path) == before[out / f.path] for f in r.failed)
    assert status(ks)[("kf", 1)]["deks"] == N + 3                 # sealed 6, re-wrapped 3
    for f in sealed_files(out):
        pyarrow_reads(ks, f, table(index(f)))


def test_tenant_keys_are_counted_per_tenant(ks, src, tmp_path):
    for t in ("t-0", "t-1"):
        ks.create(t)
    ks.set_limits("t-0", Limits(max_wraps=2, mode="refuse"))
    cfg = EncryptionConfig("t-{p}", uniform_encryption=True)
    r = dataset.encrypt(src, tmp_path / "out", cfg, kms=ks, executor="processes", workers=2)
    assert sorted(f.path.split("/")[0] for f in r.ok) == ["p=0", "p=0", "p=1", "p=1", "p=1"]
    assert [f.path.split("/")[0] for f in r.failed] == ["p=0"] and "'t-0' version 1" in r.failed[0].error
    rows = status(ks)
    assert [(rows[(t, 1)]["deks"], rows[(t, 1)]["files"]) for t in ("t-0", "t-1")] == [(2, 2), (3, 3)]
    assert rows[("kf", 1)]["deks"] == 0
    for f in sealed_files(tmp_path / "out"):
        pyarrow_reads(ks, f, table(index(f)))
