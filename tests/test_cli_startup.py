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
    _entry.run()
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


EXIT = """
import atexit, sys, threading
sys.argv = ["pqseal"] + sys.argv[1:]
class Teardown:
    def __del__(self):
        sys.stderr.write("teardown ran\\n")
keep = Teardown()                                  # freed only by the interpreter's teardown
atexit.register(lambda: sys.stdout.write("atexit ran"))   # no newline: stays in the pipe's buffer
if "--thread" in sys.argv:
    sys.argv.remove("--thread")
    gate = threading.Event()
    threading.Thread(target=gate.wait, args=(2,)).start()   # a non-daemon thread still running
from pqseal import _entry
_entry.main()
"""


def _exit_run(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.path.dirname(os.path.dirname(os.path.abspath(pqseal.__file__)))}
    return subprocess.run([sys.executable, "-c", EXIT, *args], env=env, capture_output=True, text=True, timeout=60)


def test_success_ends_without_teardown_after_atexit_and_flush():
    """A command that succeeded ends the process without the interpreter's teardown
    (20-30 ms), after the atexit handlers ran and the streams were flushed."""
    r = _exit_run("--version")
    assert r.returncode == 0, r.stderr
    assert r.stdout == "pqseal, version " + pqseal.__version__ + "\natexit ran"
    assert "teardown ran" not in r.stderr


def test_failure_or_running_thread_keeps_the_teardown():
    """A failed command, or one that leaves a thread running, exits the ordinary way (the
    thread is waited for)."""
    r = _exit_run("inspect", "/nonexistent/pqseal-test.parquet")
    assert r.returncode == 1 and "teardown ran" in r.stderr and r.stdout.endswith("atexit ran")
    r = _exit_run("--version", "--thread")
    assert r.returncode == 0 and "teardown ran" in r.stderr and r.stdout.endswith("atexit ran")
