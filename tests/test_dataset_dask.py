"""pqseal.dataset on dask.distributed: a LocalCluster of 2 worker processes over TLS
(``Security.temporary()``), a plain-TCP scheduler refused unless allowed, a worker killed
mid-job (Dask reschedules; outputs stay consistent), and the CLI against a real
``dask scheduler`` and two ``dask worker`` processes started here with TLS certificate
files made by the test. Outputs are checked with pyarrow's own PME reader."""

from __future__ import annotations

import base64
import datetime
import json
import os
import subprocess
import sys
import threading
import time

import pyarrow as pa
import pyarrow.parquet as pq
import pyarrow.parquet.encryption as pe
import pytest

from pqseal import dataset
from pqseal._io import is_temp_name, pid_alive
from pqseal.dataset.worker import jobs_held
from pqseal.errors import InsecureTransport
from pqseal.format import DecryptionProperties, EncryptionProperties

from counting_kms import CountingKms
from interop import require

distributed = require("distributed")
K = bytes(range(16))


def make_tree(root, n: int, rows: int = 2_000) -> pa.Table:
    t = pa.table({"id": pa.array(range(rows), pa.int64()), "v": pa.array([i * 0.25 for i in range(rows)])})
    for i in range(n):
        d = root / f"p={i % 3}"
        d.mkdir(parents=True, exist_ok=True)
        pq.write_table(t, d / f"f{i:03d}.parquet", row_group_size=max(1, rows // 4), compression="none")
    return t


def check_sealed(root, n: int, table: pa.Table) -> None:
    files = sorted(os.path.join(d, f) for d, _, fs in os.walk(root) for f in fs
                   if f.endswith(".parquet") and not f.startswith("."))
    assert len(files) == n
    for f in files:
        assert pq.read_table(f, decryption_properties=pe.create_decryption_properties(K)).equals(table), f
    assert not [f for d, _, fs in os.walk(root) for f in fs if is_temp_name(f)]


@pytest.fixture(scope="module")
def tls_cluster():
    from distributed import Client, LocalCluster
    from distributed.security import Security

    sec = Security.temporary()
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, security=sec, dashboard_address=":0",
                      silence_logs=40) as cluster, Client(cluster, security=sec) as client:
        assert cluster.scheduler_address.startswith("tls://")
        yield client


def test_tls_cluster_round_trip(tls_cluster, tmp_path):
    src, sealed, plain = tmp_path / "src", tmp_path / "sealed", tmp_path / "plain"
    table = make_tree(src, 12)
    r = dataset.encrypt(src, sealed, EncryptionProperties(K), executor=tls_cluster)
    assert r.ok == 12 and r.failed == 0 and r.executor == "dask" and r.workers == 2
    check_sealed(sealed, 12, table)
    # the files ran on the workers, not in this process
    assert r.to_json()["counts"]["ok"] == 12
    r = dataset.decrypt(sealed, plain, DecryptionProperties(K), executor=tls_cluster)
    assert r.ok == 12
    for d, _, fs in os.walk(plain):
        for f in fs:
            if f.endswith(".parquet"):
                assert pq.read_table(os.path.join(d, f)).equals(table)
    r = dataset.encrypt(src, sealed, EncryptionProperties(K), executor=tls_cluster)
    assert r.ok == 0 and r.skipped == 12


def test_a_plain_tcp_scheduler_is_refused_unless_allowed(tmp_path):
    from distributed import Client, LocalCluster

    src = tmp_path / "src"
    table = make_tree(src, 3)
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, protocol="tcp://",
                      dashboard_address=":0", silence_logs=40) as cluster, Client(cluster) as client:
        assert cluster.scheduler_address.startswith("tcp://")
        with pytest.raises(InsecureTransport, match="allow_insecure"):
            dataset.encrypt(src, tmp_path / "a", EncryptionProperties(K), executor=client)
        assert not (tmp_path / "a").exists()     # refused before anything was written
        r = dataset.encrypt(src, tmp_path / "b", EncryptionProperties(K), executor=client, allow_insecure=True)
        assert r.ok == 3
        check_sealed(tmp_path / "b", 3, table)
        # no keys travel: nothing to refuse
        assert dataset.inspect(tmp_path / "b", executor=client).ok == 3


def test_a_worker_killed_mid_job(tls_cluster, tmp_path):
    """One worker process dies (os._exit) while files are in flight: Dask reschedules its
    tasks, the job completes, every output is whole and no temporary file is left."""
    src, sealed = tmp_path / "src", tmp_path / "sealed"
    n = 24
    table = make_tree(src, n, rows=120_000)
    client = tls_cluster
    victim = sorted(client.scheduler_info()["workers"])[0]
    victim_pid = client.run(os.getpid, workers=[victim])[victim]
    killed = []

    def on_result(res):
        if not killed and len(on_result.seen) >= 3:
            killed.append(victim)
            # the worker process exits a moment after answering (a function run there cannot
            # both answer and be the worker's last act)
            client.run(lambda: threading.Timer(0.05, os._exit, (1,)).start(), workers=[victim])
            end = time.monotonic() + 30
            while pid_alive(victim_pid) and time.monotonic() < end:   # dead before the job goes on
                time.sleep(0.02)
        on_result.seen.append(res)
    on_result.seen = []
    r = dataset.encrypt(src, sealed, EncryptionProperties(K), executor=client, on_result=on_result)
    assert killed and len(on_result.seen) == n
    assert not pid_alive(victim_pid)    # the worker process died with most files still to do
    if r.failed:   # a task lost with its worker beyond Dask's retries: a rerun finishes the job
        assert all(x.reason == "lost" for x in r.failed), [x.error for x in r.failed]
        r2 = dataset.encrypt(src, sealed, EncryptionProperties(K), executor=client)
        assert r2.failed == 0 and r2.ok == len(r.failed)
    else:
        assert r.ok == n
    check_sealed(sealed, n, table)
    client.wait_for_workers(2, timeout=60)


# ---- the CLI against a real scheduler and workers -------------------------------------------


def write_certs(d) -> tuple[str, str, str]:
    """A CA and one certificate (client and server, for 127.0.0.1) signed by it."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
    import ipaddress

    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "pqseal test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
          .not_valid_after(now + datetime.timedelta(hours=2))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "dask")]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(hours=2))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                        x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    paths = (str(d / "ca.pem"), str(d / "cert.pem"), str(d / "key.pem"))
    with open(paths[0], "wb") as f:
        f.write(ca.public_bytes(serialization.Encoding.PEM))
    with open(paths[1], "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    with open(paths[2], "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))
    os.chmod(paths[2], 0o600)
    return paths


def test_cli_with_a_real_tls_scheduler_and_two_workers(tmp_path):
    dask_exe = os.path.join(os.path.dirname(sys.executable), "dask")
    if not os.path.exists(dask_exe):
        pytest.fail("the dask command line is not installed next to this Python")
    ca, cert, key = write_certs(tmp_path)
    tls = ["--tls-ca-file", ca, "--tls-cert", cert, "--tls-key", key]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    sched_file = tmp_path / "scheduler.json"
    procs = [subprocess.Popen([dask_exe, "scheduler", "--host", "127.0.0.1", "--port", "0", "--protocol", "tls",
                               "--scheduler-file", str(sched_file), "--no-dashboard", *tls],
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    try:
        end = time.monotonic() + 60
        while not sched_file.exists() and time.monotonic() < end:
            time.sleep(0.1)
        address = json.loads(sched_file.read_text())["address"]
        assert address.startswith("tls://")
        for _ in range(2):
            procs.append(subprocess.Popen([dask_exe, "worker", address, "--nthreads", "1", "--no-dashboard",
                                           "--no-nanny", *tls], env=env, stdout=subprocess.DEVNULL,
                                          stderr=subprocess.DEVNULL))
        from distributed import Client
        from distributed.security import Security

        sec = Security(tls_ca_file=ca, tls_client_cert=cert, tls_client_key=key, require_encryption=True)
        with Client(address, security=sec, timeout=60) as c:
            c.wait_for_workers(2, timeout=60)
            worker_pids = set(c.run(os.getpid).values())
        assert os.getpid() not in worker_pids and len(worker_pids) == 2

        src, sealed, report = tmp_path / "src", tmp_path / "sealed", tmp_path / "report.json"
        table = make_tree(src, 8)
        cmd = [sys.executable, "-m", "pqseal", "encrypt", str(src), str(sealed), "--footer-key-value",
               base64.b64encode(K).decode(), "--scheduler", address, *tls, "--report", str(report)]
        p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
        assert p.returncode == 0, p.stderr
        assert p.stdout.startswith("encrypted 8 files")
        doc = json.loads(report.read_text())
        assert doc["executor"] == "dask" and doc["workers"] == 2 and doc["counts"]["ok"] == 8
        check_sealed(sealed, 8, table)
        # the TLS settings can come from Dask's configuration (environment) instead
        env_tls = dict(env, DASK_DISTRIBUTED__COMM__TLS__CA_FILE=ca, DASK_DISTRIBUTED__COMM__TLS__CLIENT__CERT=cert,
                       DASK_DISTRIBUTED__COMM__TLS__CLIENT__KEY=key)
        p = subprocess.run([sys.executable, "-m", "pqseal", "verify", str(sealed), "--footer-key-value",
                            base64.b64encode(K).decode(), "--scheduler", address], env=env_tls,
                           capture_output=True, text=True, timeout=300)
        assert p.returncode == 0, p.stderr
        assert len([ln for ln in p.stdout.splitlines() if ln.startswith("OK ")]) == 8
    finally:
        for p in reversed(procs):
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()


def test_cli_refuses_cluster_options_where_they_do_not_apply(tmp_path):
    src = tmp_path / "src"
    make_tree(src, 1)
    f = next(p for p in src.rglob("*.parquet"))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    key = base64.b64encode(K).decode()
    for args, what in ((["encrypt", str(f), str(tmp_path / "o.parquet"), "--scheduler", "tls://h:1"], "--scheduler"),
                       (["encrypt", str(src), str(tmp_path / "o"), "--allow-insecure-scheduler"],
                        "--allow-insecure-scheduler"),
                       (["encrypt", str(src), str(tmp_path / "o"), "--scheduler", "h:1"], "address"),
                       (["encrypt", str(src), str(tmp_path / "o"), "--executor", "processes", "--scheduler",
                         "tls://h:1"], "--executor")):
        p = subprocess.run([sys.executable, "-m", "pqseal", *args, "--footer-key-value", key], env=env,
                           capture_output=True, text=True, timeout=120)
        assert p.returncode == 2 and what in p.stderr and len(p.stderr.strip().splitlines()) == 1, p.stderr


def test_a_key_session_travels_to_the_workers(tls_cluster, tmp_path):
    """The driver opens the key session (one KMS wrap per master key) and Dask workers
    import its export; pyarrow reads what they sealed with its own KMS client. While the
    job runs each worker holds the session; when it ends they drop it."""
    from pqseal.config import EncryptionConfig
    from pqseal.kms import KeyListKms

    src, sealed = tmp_path / "src", tmp_path / "sealed"
    table = make_tree(src, 6)
    kms = KeyListKms({"kf": K})
    r = dataset.encrypt(src, sealed, EncryptionConfig(footer_key="kf", uniform_encryption=True), kms=kms,
                        executor=tls_cluster)
    assert r.ok == 6 and r.kms_calls == 1
    held = []

    def on_result(res):
        if not held:
            held.append(tls_cluster.run(jobs_held))
    r = dataset.verify(sealed, kms=kms, executor=tls_cluster, on_result=on_result)
    assert r.ok == 6 and r.kms_calls == 1
    during = {tuple(v) for v in held[0].values()}
    assert during <= {("KeySession/NoneType",), ()} and ("KeySession/NoneType",) in during, held
    assert set(map(tuple, tls_cluster.run(jobs_held).values())) == {()}     # dropped when the job ended
    check_sealed_with_session(sealed, table)


def check_sealed_with_session(root, table) -> None:
    """pyarrow reads what the session's workers sealed, unwrapping the keys with its own
    KMS client (written with `cryptography`: tests/pyarrow_kms.py)."""
    from pyarrow_kms import key_list_client

    factory = pe.CryptoFactory(key_list_client({"kf": K}))
    for d, _, fs in os.walk(root):
        for f in fs:
            if f.endswith(".parquet"):
                props = factory.file_decryption_properties(pe.KmsConnectionConfig(), pe.DecryptionConfiguration())
                assert pq.read_table(os.path.join(d, f), decryption_properties=props).equals(table)


def test_files_are_batched_into_dask_tasks():
    """A Dask task seals up to BATCH_FILES files of at most BATCH_BYTES together (a larger
    file goes alone); a short list is spread over every worker."""
    from pqseal.dataset.dask import BATCH_BYTES, BATCH_FILES, batches
    from pqseal.dataset.worker import Task

    def tasks(*sizes):
        return [Task("encrypt", f"s{i}", f"d{i}", f"f{i}", size) for i, size in enumerate(sizes)]

    small = tasks(*[1000] * 40)
    groups = batches(small, 2)
    assert [len(g) for g in groups] == [BATCH_FILES] * 5 and sum(groups, []) == small   # order kept
    assert [len(g) for g in batches(tasks(*[1000] * 6), 2)] == [3, 3]
    assert [len(g) for g in batches(tasks(*[1000] * 5), 8)] == [1] * 5
    half = BATCH_BYTES // 2
    assert [len(g) for g in batches(tasks(half, half, half + 1, 10, 2 * BATCH_BYTES, 10), 1)] == [2, 2, 1, 1]


def test_rotation_on_dask_after_the_master_keys_rotate(tls_cluster, tmp_path):
    """Rotation of a tree's external key material on Dask workers, with a versioned KMS
    (the local keystore) counted on the driver: one unwrap per distinct KEK (two sealing
    jobs: two per master key), one wrap per master key; once the old versions are
    disabled pyarrow still reads every file through its rotated material."""
    from pqseal.arrow import crypto_factory
    from pqseal.config import EncryptionConfig
    from pqseal.kms.keystore import LocalKeystore

    ks_path = tmp_path / "ks.json"
    keystore = LocalKeystore.init(ks_path, b"pw-1234")
    for k in ("kf", "kc"):
        keystore.create(k)

    src, sealed = tmp_path / "src", tmp_path / "sealed"
    table = make_tree(src, 9)
    cfg = EncryptionConfig(footer_key="kf", column_keys={"kc": ["v"]}, internal_key_material=False)
    for part in ("p=0", "p=1"):      # two jobs: two KEKs per master key
        r = dataset.encrypt(src / part, sealed / part, cfg, kms=CountingKms(keystore), executor=tls_cluster)
        assert r.ok == 3
    old = json.loads(json.loads((sealed / "p=0" / "_KEY_MATERIAL_FOR_f000.parquet.json").read_text())["footerKey"])
    keystore.rotate("kf")
    keystore.rotate("kc")
    kms = CountingKms(keystore)
    r = dataset.rotate(sealed, kms=kms, executor=tls_cluster)
    assert r.ok == 6 and r.failed == 0 and (kms.unwraps, kms.wraps) == (4, 2) and r.kms_calls == 6
    for k in ("kf", "kc"):
        keystore.disable(k, 1)
    fresh = LocalKeystore(ks_path, b"pw-1234")
    factory = crypto_factory(lambda cfg: fresh)
    for f in sorted(sealed.rglob("f*.parquet")):
        props = factory.file_decryption_properties(pe.KmsConnectionConfig(),
                                                   pe.DecryptionConfiguration(cache_lifetime=0), str(f))
        assert pq.read_table(f, decryption_properties=props).equals(table)
    with pytest.raises(Exception, match="disabled"):     # material of the old versions no longer opens
        fresh.unwrap_key(old["wrappedKEK"], "kf")


class PidLoggingKeyList:
    """A picklable KMS client factory that appends the pid of every process that builds
    a client or calls it to a file: workers must never appear there."""

    def __init__(self, log: str, keys: dict):
        self.log, self.keys = log, keys

    def _note(self, what: str) -> None:
        with open(self.log, "a") as f:
            f.write(f"{os.getpid()} {what}\n")

    def __call__(self, cfg):
        from pqseal.kms import KeyListKms

        self._note("construct")
        inner, note = KeyListKms(self.keys), self._note

        class Client(type(inner)):
            def wrap_key(self, key_bytes, master_key_identifier):
                note("wrap")
                return inner.wrap_key(key_bytes, master_key_identifier)

            def unwrap_key(self, wrapped_key, master_key_identifier):
                note("unwrap")
                return inner.unwrap_key(wrapped_key, master_key_identifier)
        return Client(self.keys)


def test_500_files_three_master_keys_kms_only_on_the_driver(tls_cluster, tmp_path):
    """N = 500 small files, M = 3 master keys, W = 2 worker processes: M wraps on write,
    M unwraps on read (one session's KEKs), every KMS client built and called by this
    process; pyarrow's own reader opens the files with the same master keys."""
    from pqseal.config import EncryptionConfig

    from pyarrow_kms import key_list_client

    master = {"kf": os.urandom(16), "ka": os.urandom(16), "kv": os.urandom(16)}
    log = tmp_path / "kms.log"
    factory = PidLoggingKeyList(str(log), master)
    src = tmp_path / "src"
    table = make_tree(src, 500, rows=50)
    cfg = EncryptionConfig("kf", column_keys={"ka": ["id"], "kv": ["v"]})
    r = dataset.encrypt(src, tmp_path / "sealed", cfg, kms=factory, executor=tls_cluster)
    assert r.ok == 500 and r.failed == 0 and r.kms_calls == 3
    r = dataset.decrypt(tmp_path / "sealed", tmp_path / "plain", kms=factory, executor=tls_cluster)
    assert r.ok == 500 and r.kms_calls == 3
    lines = log.read_text().split()
    pids = {int(p) for p in lines[0::2]}
    ops = lines[1::2]
    assert pids == {os.getpid()}
    assert ops.count("wrap") == 3 and ops.count("unwrap") == 3
    worker_pids = set(tls_cluster.run(os.getpid).values())
    assert len(worker_pids) == 2 and not worker_pids & pids
    props = pe.CryptoFactory(lambda cfg: key_list_client(master)(cfg)).file_decryption_properties(
        pe.KmsConnectionConfig(), pe.DecryptionConfiguration())
    some = sorted((tmp_path / "sealed").rglob("*.parquet"))[::97]
    for f in some:
        assert pq.read_table(f, decryption_properties=props).equals(table)
