"""A script that starts a process-pool dataset job at its top level (no ``__main__``
guard): worker processes import the script and die; the failure names the cause."""

from __future__ import annotations

import json
import subprocess
import sys

import pyarrow as pa
import pyarrow.parquet as pq

SCRIPT = """
import json, sys
import pqseal
from pqseal import EncryptionProperties
r = pqseal.dataset.encrypt("in", "out", EncryptionProperties(bytes(16)), executor="processes", workers=1)
print(json.dumps([f.error for f in r.failed]))
"""


def test_unguarded_script_gets_the_reason(tmp_path):
    (tmp_path / "in").mkdir()
    pq.write_table(pa.table({"a": [1, 2, 3]}), tmp_path / "in" / "x.parquet")
    (tmp_path / "job.py").write_text(SCRIPT)
    p = subprocess.run([sys.executable, "job.py"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    errors = json.loads(p.stdout.strip().splitlines()[-1])
    assert errors and all("if __name__ == '__main__':" in e for e in errors), p.stdout + p.stderr
    assert not (tmp_path / "out" / "x.parquet").exists()
