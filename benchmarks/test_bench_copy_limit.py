"""pytest-benchmark cases of the copy limit (a reduced bench_copy_limit.py).

Off by default (the project's pytest config has ``--benchmark-skip``); run with

    pytest benchmarks -p no:cacheprovider -o addopts="" --benchmark-enable -k copy_limit

Group ``copy-limit-file``: a 128 MiB pyarrow file (``pqseal bench seal``'s generator,
cached in ``bench-out/data``) copied with ``cp SRC DST && sync DST`` and sealed by
``pqseal encrypt`` as a whole process and by ``encrypt_file`` in process (with fsync).
Group ``copy-limit-dataset``: 100 files of ~1 MB copied with ``cp -r`` + ``sync`` and
sealed by ``pqseal encrypt SRC_DIR DST_DIR``. Each round starts without the output;
``extra_info`` holds GB/s of the median.
"""

import os
import shutil
import subprocess
import sys

import pytest

import pqseal
from pqseal.bench.seal import _warm, generate
from pqseal.format import EncryptionProperties

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_copy_limit import KEY, _cli, _env, generate_dataset  # noqa: E402

CACHE = os.path.join("bench-out", "data")


@pytest.fixture(scope="module")
def inputs():
    os.makedirs(CACHE, exist_ok=True)
    big = os.path.join(CACHE, "bench-0.125GiB-typical-10col-1MiBpages.parquet")
    if not os.path.exists(big):
        generate(big, 0.125)
    small = os.path.join(CACHE, "copy-limit-100x1MB")
    if not os.path.isdir(small):
        generate_dataset(small, 100)
    _warm(big)
    for name in os.listdir(small):
        _warm(os.path.join(small, name))
    work = os.path.join(CACHE, "copy-limit-work")
    os.makedirs(work, exist_ok=True)
    yield big, small, work
    shutil.rmtree(work)


def _run(benchmark, fn, out, nbytes):
    def setup():
        if os.path.isdir(out):
            shutil.rmtree(out)
        elif os.path.exists(out):
            os.unlink(out)
        subprocess.run(["sync"], check=True)

    benchmark.pedantic(fn, setup=setup, rounds=3, warmup_rounds=1)
    stats = getattr(benchmark, "stats", None)
    if stats is not None:
        benchmark.extra_info["gb_per_s"] = round(nbytes / stats.stats.median / 1e9, 3)


@pytest.mark.parametrize("impl", ["cp", "pqseal-cli", "encrypt_file"])
def test_copy_limit_file(benchmark, inputs, impl):
    big, _, work = inputs
    out = os.path.join(work, f"out-{impl}.parquet")
    env = _env(work)
    benchmark.group = "copy-limit-file"
    if impl == "cp":
        fn = lambda: subprocess.run(["sh", "-c", f'cp "{big}" "{out}" && sync "{out}"'], check=True)  # noqa: E731
    elif impl == "pqseal-cli":
        fn = lambda: subprocess.run(_cli(big, out), env=env, check=True, stdout=subprocess.DEVNULL)  # noqa: E731
    else:
        enc = EncryptionProperties(KEY)
        fn = lambda: pqseal.encrypt_file(big, out, enc)  # noqa: E731
    _run(benchmark, fn, out, os.path.getsize(big))
    assert os.path.getsize(out) >= os.path.getsize(big)


@pytest.mark.parametrize("impl", ["cp -r", "pqseal-cli"])
def test_copy_limit_dataset(benchmark, inputs, impl):
    _, small, work = inputs
    out = os.path.join(work, "out-dir")
    env = _env(work)
    benchmark.group = "copy-limit-dataset"
    if impl == "cp -r":
        cmd = ["sh", "-c", f'cp -r "{small}" "{out}" && sync "{out}"/* "{out}"']
    else:
        cmd = _cli(small, out)
    _run(benchmark, lambda: subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL,
                                           stderr=subprocess.DEVNULL),
         out, sum(os.path.getsize(os.path.join(small, n)) for n in os.listdir(small)))
    assert len(os.listdir(out)) == len(os.listdir(small))
