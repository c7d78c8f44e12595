"""pytest-benchmark cases for the polars bridge (a reduced bench_polars.py).

Off by default (the project's pytest config has ``--benchmark-skip``); run with

    pytest benchmarks/test_bench_polars.py -p no:cacheprovider -o addopts="" --benchmark-enable

A 1 M-row frame (bench_polars.make_frame) is written plaintext and KMS-encrypted
(uniform, pqseal's in-process KeyListKms); groups ``polars-read`` (plaintext read vs
``decryption_properties`` + encrypted read) and ``polars-write`` (polars' encrypted write
with explicit keys vs ``pqseal.polars.write_parquet``, which also draws, wraps and stamps
the keys). ``extra_info`` holds MB/s of the median. About 15 s.
"""

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))
pl = pytest.importorskip("polars")

import pqseal.polars as ppl  # noqa: E402
from bench_polars import CONFIGS, KMS, make_frame  # noqa: E402

OPTIONS = dict(row_group_size=256 * 1024)
WORK = os.path.join("bench-out", "polars-pytest")


@pytest.fixture(scope="module")
def files():
    os.makedirs(WORK, exist_ok=True)
    df = make_frame(1_000_000)
    plain = os.path.join(WORK, "plain.parquet")
    sealed = os.path.join(WORK, "kms-uniform.parquet")
    df.write_parquet(plain, **OPTIONS)
    ppl.write_parquet(df, sealed, CONFIGS["kms-uniform"], kms=KMS, overwrite=True, fsync=False, **OPTIONS)
    yield df, {"plaintext": plain, "kms-uniform": sealed}
    for name in os.listdir(WORK):
        os.unlink(os.path.join(WORK, name))
    os.rmdir(WORK)


def _run(benchmark, fn, nbytes):
    benchmark.pedantic(fn, rounds=5, warmup_rounds=1)
    stats = getattr(benchmark, "stats", None)
    if stats is not None:
        benchmark.extra_info["mb_per_s"] = round(nbytes / stats.stats.median / 1e6, 1)


@pytest.mark.parametrize("case", ["plaintext", "kms-uniform"])
def test_read(benchmark, files, case):
    df, paths = files
    p = paths[case]
    benchmark.group = "polars-read"
    if case == "plaintext":
        _run(benchmark, lambda: pl.read_parquet(p), os.path.getsize(p))
    else:
        _run(benchmark, lambda: pl.read_parquet(p, decryption=ppl.decryption_properties(p, kms=KMS)),
             os.path.getsize(p))


@pytest.mark.parametrize("case", ["polars-explicit-keys", "pqseal-kms-stamp"])
def test_write(benchmark, files, case):
    df, paths = files
    out = os.path.join(WORK, f"out-{case}.parquet")
    benchmark.group = "polars-write"
    if case == "polars-explicit-keys":
        enc = pl.ParquetEncryptionProperties(footer_key=os.urandom(16))
        _run(benchmark, lambda: df.write_parquet(out, encryption=enc, **OPTIONS), os.path.getsize(paths["plaintext"]))
    else:
        _run(benchmark, lambda: ppl.write_parquet(df, out, CONFIGS["kms-uniform"], kms=KMS, overwrite=True,
                                                  fsync=False, **OPTIONS), os.path.getsize(paths["plaintext"]))
    assert os.path.getsize(out) > 0
