"""Interpreter exit after a reader used pqseal's files: pyarrow's read_table can release
a Python file object from one of its threads after it returns, and a release during
shutdown aborts the process (apache/arrow#33975, #34314). pqseal waits at exit until no
C++ code holds its files (pqseal.io._exit)."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pyarrow as pa
import pyarrow.parquet as pq

import pqseal
from pqseal.io import _exit

KEY = bytes(range(16))
READER = """
import sys
import pyarrow.parquet as pq
import pqseal
with pqseal.open(sys.argv[1], decryption=pqseal.DecryptionProperties(bytes(range(16)))) as f:
    pq.read_table(f, columns=["id"])
"""


def test_reading_a_view_with_read_table_exits_cleanly(tmp_path):
    # without the wait about one run in four aborted (SIGABRT, exit -6) on this machine
    t = pa.table({"id": list(range(100_000)), "s": [str(i) for i in range(100_000)]})
    path = tmp_path / "sealed.parquet"
    pqseal.write_table(t, path, pqseal.EncryptionProperties(KEY))
    reader = tmp_path / "reader.py"
    reader.write_text(READER)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    results = [subprocess.run([sys.executable, str(reader), str(path)], env=env, capture_output=True, text=True,
                              timeout=120) for _ in range(16)]    # one after another: the timing that aborts
    assert [r.returncode for r in results] == [0] * len(results), [r.stderr for r in results if r.returncode]


def test_files_the_program_holds_are_not_waited_for(tmp_path):
    t = pa.table({"id": list(range(1000))})
    path = tmp_path / "sealed.parquet"
    pqseal.write_table(t, path, pqseal.EncryptionProperties(KEY))
    global HELD
    HELD = pqseal.open(path, decryption=pqseal.DecryptionProperties(KEY))   # a global, as in a script
    try:
        pq.read_table(HELD, columns=["id"])
        t0 = time.monotonic()
        assert _exit.wait_for_readers(timeout=5)
        assert time.monotonic() - t0 < 2
        assert _exit.held_outside_python() == 0
    finally:
        HELD.close()
