"""Crash safety of the in-place footer rotation: a child process rotates a file's
internal key material in a loop and is killed with SIGKILL at a random instant; after
each kill pqseal's next open (here `verify`) restores a journaled footer, the file holds
the old wrapping or a new one, and pyarrow (its own KMS client) reads it.

PQSEAL_ROTATE_KILL_TRIALS sets the number of trials (default 200, a few seconds)."""

from __future__ import annotations

import hashlib
import os
import random
import select
import signal
import sys
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pyarrow.parquet.encryption as pe
import pytest

import pqseal
from pqseal.format import footer_journal
from pqseal.format.source import Source
from pqseal.keys import CryptoFactory
from pqseal.kms import KeyListKms, KmsConnectionConfig

from pyarrow_kms import key_list_client

TRIALS = int(os.environ.get("PQSEAL_ROTATE_KILL_TRIALS", "200"))
MASTER = {"kf": os.urandom(16), "kc": os.urandom(16)}

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")


def _data_region(path: str) -> str:
    with Source(path) as s:
        n = s.tail.footer_offset
    with open(path, "rb") as f:
        return hashlib.sha256(f.read(n)).hexdigest()


def _footer_key_metadata(path: str) -> bytes:
    with Source(path) as s:
        return bytes(s.crypto.footer_key_metadata)


@pytest.mark.parametrize("plaintext_footer", [False, True])
def test_sigkill_during_rotation(tmp_path, plaintext_footer):
    table = pa.table({"a": np.arange(300), "b": pa.array([f"v{i}" for i in range(300)])})
    path = str(tmp_path / "t.parquet")
    props = pe.CryptoFactory(key_list_client(MASTER)).file_encryption_properties(
        pe.KmsConnectionConfig(), pe.EncryptionConfiguration(footer_key="kf", column_keys={"kc": ["a"]},
                                                             plaintext_footer=plaintext_footer), path)
    pq.write_table(table, path, encryption_properties=props)
    data = _data_region(path)
    reader = pe.CryptoFactory(key_list_client(MASTER))
    factory = CryptoFactory(lambda cfg: KeyListKms(MASTER))
    conn = KmsConnectionConfig()
    factory.rotate_master_keys(conn, path)    # warm: KEKs cached, code imported before fork
    t0 = time.perf_counter()
    for _ in range(5):
        factory.rotate_master_keys(conn, path)
    per_rotation = (time.perf_counter() - t0) / 5
    rng = random.Random(int.from_bytes(os.urandom(4), "little"))
    journals = changed = 0
    trials = TRIALS // 2 if plaintext_footer else TRIALS - TRIALS // 2
    for _ in range(trials):
        before = _footer_key_metadata(path)
        sys.stdout.flush()
        sys.stderr.flush()
        done_r, done_w = os.pipe()
        pid = os.fork()
        if pid == 0:   # child: rotate until killed, one byte on the pipe after each rotation
            try:
                os.close(done_r)
                while True:
                    factory.rotate_master_keys(conn, path)
                    os.write(done_w, b".")
            finally:
                os._exit(1)
        os.close(done_w)
        # let 0-2 rotations complete (so kills land after rotations, not only before the
        # first one of a slow child), then kill at a random moment of the next one
        for _ in range(rng.randint(0, 2)):
            assert select.select([done_r], [], [], 30)[0], "the rotating child made no progress"
            os.read(done_r, 1)
        time.sleep(rng.uniform(0, 1.5 * per_rotation))
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        os.close(done_r)
        journals += os.path.exists(footer_journal.journal_path(path))
        pqseal.verify(path, kms=KeyListKms(MASTER))          # pqseal's open restores a cut rewrite
        assert not os.path.exists(footer_journal.journal_path(path))
        changed += _footer_key_metadata(path) != before
        assert _data_region(path) == data
        dec = reader.file_decryption_properties(pe.KmsConnectionConfig(), pe.DecryptionConfiguration(), path)
        assert pq.read_table(path, decryption_properties=dec).equals(table)
    print(f"{trials} kills, {per_rotation * 1e3:.2f} ms per rotation, {journals} left a journal, "
          f"{changed} changed the wrapping")
    assert changed > 0 and journals > 0   # kills landed after rotations, and inside them
