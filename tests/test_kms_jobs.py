"""Dataset jobs and key sessions that name a server KMS by its URI (``kms="vault+http://..."``,
``kms="aws-kms://..."``), each against a server these tests start (tests/vault_server.py,
tests/moto_kms.py); the PKCS#11 token's are in test_kms_pkcs11.py (SoftHSM2 is set up
once per process there).

The outage test stops the server (SIGSTOP) once the first file of a job is done: the
driver's key session wrapped its KEKs before any file, workers never call the KMS, so
the job finishes; the server is resumed (SIGCONT) to read the files back with pyarrow."""

from __future__ import annotations

import os
import signal
import subprocess
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import pqseal
from pqseal.config import EncryptionConfig
from pqseal.errors import KmsUnavailable
from pqseal.kms import KmsConnectionConfig, open_kms

from moto_kms import MotoKms, fake_credentials
from pyarrow_kms import pyarrow_read
from vault_server import start_server

FILES = 6


@dataclass
class Server:
    uri: str                  # short timeouts: a call to a stopped server fails in seconds
    footer_key: str
    column_key: str
    proc: subprocess.Popen


@pytest.fixture(params=["vault", "aws"])
def server(request, tmp_path_factory, monkeypatch):
    if request.param == "vault":
        bao = start_server(str(tmp_path_factory.mktemp("bao")))
        try:
            monkeypatch.setenv("VAULT_TOKEN", bao.root_token)
            for k in ("kf", "kc"):
                bao.client().secrets.transit.create_key(k)
            yield Server(f"vault+http://127.0.0.1:{bao.port}/transit?timeout=2", "kf", "kc", bao.proc)
        finally:
            _resume(bao.proc)
            bao.stop()
    else:
        with fake_credentials():
            moto = MotoKms()
            try:
                moto.create_key("kf")
                moto.create_key("kc")
                yield Server(moto.uri(timeout=2, retries=0), "alias/kf", "alias/kc", moto.proc)
            finally:
                _resume(moto.proc)
                moto.stop()


def _resume(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGCONT)


def _table(i: int) -> pa.Table:
    return pa.table({"id": pa.array(range(i * 100, i * 100 + 100), pa.int64()),
                     "ssn": pa.array([f"{i:03d}-{j:06d}" for j in range(100)])})


@pytest.fixture
def plain_dir(tmp_path):
    src = tmp_path / "plain"
    for i in range(FILES):
        (src / f"part={i}").mkdir(parents=True)
        pq.write_table(_table(i), src / f"part={i}" / "data.parquet")
    return src


def _config(server: Server) -> EncryptionConfig:
    return EncryptionConfig(server.footer_key, column_keys={server.column_key: ["ssn"]})


def test_dataset_job_by_uri_finishes_with_the_server_stopped(server, plain_dir, tmp_path):
    stopped = []

    def stop_after_first(result):
        if not stopped:
            os.kill(server.proc.pid, signal.SIGSTOP)
            stopped.append(result)

    try:
        report = pqseal.dataset.encrypt(plain_dir, tmp_path / "sealed", _config(server), kms=server.uri,
                                        workers=1, on_result=stop_after_first, progress=False)
        assert stopped, "the server was never stopped"
        assert report.ok == FILES and not report.failed
        assert report.kms_calls == 2          # the driver's session: one wrap per master key, before any file
        # a call the job did not need does fail while the server is down
        with pytest.raises(KmsUnavailable):
            pqseal.KeySession.open(kms=server.uri, encryption=_config(server))
    finally:
        _resume(server.proc)
    kms = open_kms(server.uri)(KmsConnectionConfig())
    for i in range(FILES):
        sealed = tmp_path / "sealed" / f"part={i}" / "data.parquet"
        data = sealed.read_bytes()
        assert data[:4] == b"PARE" and f"{i:03d}-000042".encode() not in data
        # pyarrow's own reader, keys through the URI's client
        assert pyarrow_read(data, kms).equals(_table(i))


def test_key_session_by_uri(server, tmp_path):
    src = tmp_path / "p.parquet"
    pq.write_table(_table(1), src)
    paths = [tmp_path / f"s{i}.parquet" for i in range(4)]
    with pqseal.KeySession.open(kms=server.uri, encryption=_config(server)) as writer:
        for p in paths:
            pqseal.encrypt_file(src, p, writer.encryption_properties(p))
        assert writer.kms_calls == 2
    with pqseal.KeySession.open(kms=server.uri) as reader:
        assert reader.add_files(paths) == 2 and not reader.unreadable
        for p in paths:
            out = p.with_suffix(".out.parquet")
            pqseal.decrypt_file(p, out, reader.decryption_properties(p))
            assert pq.read_table(out).equals(_table(1))
    assert pyarrow_read(paths[0].read_bytes(), open_kms(server.uri)(KmsConnectionConfig())).equals(_table(1))
