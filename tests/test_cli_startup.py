"""Start-up cost of the ``pqseal`` program (pqseal._entry): numpy's OpenBLAS is loaded
with one thread (its thread pool cost ~40 ms of CPU per process, a third of numpy's
import), unless the user chose a number, and the user's environment is what the command
and its children see afterwards."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

import pqseal

SCRIPT = """
import os, sys
sys.argv = ["pqseal", "--version"]
from pqseal import _entry
try:
    _entry.main()
except SystemExit:
    pass
assert "numpy" in sys.modules
print(os.environ.get("OPENBLAS_NUM_THREADS"), len(os.listdir("/proc/self/task")))
"""


def _run(env_value: str | None) -> list[str]:
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_NUM_THREADS"}
    env["PYTHONPATH"] = os.path.dirname(os.path.dirname(os.path.abspath(pqseal.__file__)))
    if env_value is not None:
        env["OPENBLAS_NUM_THREADS"] = env_value
    out = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, check=True)
    return out.stdout.split()[-2:]


@pytest.mark.skipif(not os.path.isdir("/proc/self/task") or (os.cpu_count() or 1) < 2,
                    reason="counts threads in /proc on a machine with 2 or more cores")
def test_no_blas_threads_at_start_up():
    assert _run(None) == ["None", "1"]          # one thread, and the variable is gone again
    value, threads = _run("2")
    assert value == "2" and int(threads) >= 2   # the user's choice stands
