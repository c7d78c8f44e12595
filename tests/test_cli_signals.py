"""SIGINT and SIGTERM on a running ``pqseal`` (issue 8, defects 2 and 6): the job stops
at the next column chunk, files not started are not started, no temporary file is
left, the exit code is 130/143 and one line says what was finished.

Real signals go to a real CLI process. To hit it mid-job on any machine, the child
slows the engine down where it looks for cancellation (``pqseal._cancel.check``, called
between column chunks): the signal path itself is untouched.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time

import parquet_gen as G
import pqseal
import pyarrow.parquet as pq
import pyarrow.parquet.encryption as pe
import pytest
from pqseal.format import DecryptionProperties

KEY = "AAECAwQFBgcICQoLDA0ODw=="          # base64 of bytes 0..15
KEY_BYTES = bytes(range(16))
SLOW_CLI = """
import sys, time
import pqseal._cancel as cancel
check = cancel.check
def slow_check():
    time.sleep(0.03)
    check()
cancel.check = slow_check
from pqseal.cli import main
sys.argv[0] = "pqseal"
main()
"""


@pytest.fixture(scope="module")
def table():
    return G.make_table(6_000, nested=False)


@pytest.fixture(scope="module")
def tree(tmp_path_factory, table):
    """8 files of 3 row groups x 12 columns: ~1 s each in the slowed child."""
    root = tmp_path_factory.mktemp("signals") / "in"
    root.mkdir()
    for i in range(8):
        G.write_pyarrow(root / f"f{i}.parquet", table, row_group_size=2_000)
    return root


def start(*args, cwd):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    return subprocess.Popen([sys.executable, "-c", SLOW_CLI, *map(os.fspath, args)], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for(cond, timeout=60.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return
        time.sleep(0.02)
    raise AssertionError("timed out waiting for the job to get going")


def files(d):
    """The files of ``d``, without a directory job's journal (``.pqseal-job/``)."""
    return sorted(n for n in os.listdir(d) if n != ".pqseal-job") if os.path.isdir(d) else []


def temps(d):
    return [n for n in files(d) if ".pqseal-" in n]


@pytest.mark.parametrize("command,signum", [("encrypt", signal.SIGTERM), ("decrypt", signal.SIGINT)])
def test_directory_job_stops(tree, tmp_path, command, signum, table):
    src = tree
    if command == "decrypt":
        src = tmp_path / "sealed"
        src.mkdir()
        for name in files(tree):
            pqseal.encrypt_file(tree / name, src / name, pqseal.EncryptionProperties(KEY_BYTES))
    out = tmp_path / "out"
    p = start(command, src, out, "--footer-key-value", KEY, "-j", "2", cwd=tmp_path)
    wait_for(lambda: any(n.endswith(".parquet") and not n.startswith(".") for n in files(out)))
    p.send_signal(signum)
    _, stderr = p.communicate(timeout=60)
    assert p.returncode == 128 + signum, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    verb = command + "ed"
    m = re.fullmatch(rf"pqseal: interrupted \({signal.Signals(signum).name}\): (\d+) of 8 files {verb}; "
                     r"no partial outputs left", lines[0])
    assert m, lines[0]
    done = files(out)
    assert temps(out) == [] and temps(src) == []
    assert len(done) == int(m.group(1)) and 1 <= len(done) < 8, done
    for name in done:     # what was finished is whole: pyarrow reads it
        if command == "encrypt":
            t = pq.read_table(out / name, decryption_properties=pe.create_decryption_properties(KEY_BYTES))
        else:
            t = pq.read_table(out / name)
        assert t.equals(table), name


def test_single_file_stops_and_leaves_no_partial_output(tree, tmp_path):
    out = tmp_path / "o.parquet"
    p = start("encrypt", tree / "f0.parquet", out, "--footer-key-value", KEY, cwd=tmp_path)
    wait_for(lambda: temps(tmp_path))          # the output is being written
    p.send_signal(signal.SIGINT)
    stdout, stderr = p.communicate(timeout=60)
    assert p.returncode == 130, stderr
    assert stderr.strip() == "pqseal: interrupted (SIGINT): 0 of 1 file encrypted; no partial outputs left"
    assert files(tmp_path) == [] and stdout == ""


def test_replacing_an_existing_file_keeps_it_when_interrupted(tree, tmp_path):
    out = tmp_path / "o.parquet"
    pqseal.encrypt_file(tree / "f0.parquet", out, pqseal.EncryptionProperties(KEY_BYTES))
    before = out.read_bytes()
    p = start("encrypt", tree / "f1.parquet", out, "--footer-key-value", "AAAAAAAAAAAAAAAAAAAAAA==", "--force",
              cwd=tmp_path)
    wait_for(lambda: temps(tmp_path))
    p.send_signal(signal.SIGTERM)
    _, stderr = p.communicate(timeout=60)
    assert p.returncode == 143, stderr
    assert files(tmp_path) == ["o.parquet"] and out.read_bytes() == before
    pqseal.verify(out, DecryptionProperties(KEY_BYTES))


EARLY = """
import os, signal, sys
from pqseal import _entry
real = signal.signal
def install_then_signal(signum, handler):
    previous = real(signum, handler)
    if signum == signal.SIGTERM and handler is _entry._early:
        os.kill(os.getpid(), signal.SIGTERM)   # before the command line's modules are imported
    return previous
signal.signal = install_then_signal
sys.argv[0] = "pqseal"
_entry.main()
"""


def test_sigterm_before_the_command_runs(tmp_path, table):
    """The program answers a signal from its first own line (pqseal._entry): a SIGTERM
    that arrives while the command line is still being imported stops the command before
    it writes anything, with exit 143 and one line, not a silent death (exit -15)."""
    src = tmp_path / "p.parquet"
    G.write_pyarrow(src, table)
    dst = tmp_path / "s.parquet"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    r = subprocess.run([sys.executable, "-c", EARLY, "encrypt", str(src), str(dst), "--footer-key-value", KEY],
                       env=env, capture_output=True, text=True, timeout=120)
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 143, r.stderr
    assert len(lines) == 1 and "interrupted (SIGTERM)" in lines[0], r.stderr
    assert sorted(os.listdir(tmp_path)) == ["p.parquet"]
