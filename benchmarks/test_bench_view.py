"""pytest-benchmark cases for the plaintext view (a reduced bench_view.py).

Off by default (the project's pytest config has ``--benchmark-skip``); run with

    pytest benchmarks/test_bench_view.py -p no:cacheprovider -o addopts="" --benchmark-enable

A 32 MiB, 20-column file (bench_view.py's generator, cached in ``bench-out/data``) and its
pqseal-sealed copy are read whole by pyarrow and by polars, and one column of 20 by
pyarrow, from the plaintext file and through ``pqseal.open(sealed, "rb")``; each group
holds the two contenders. ``extra_info`` has the fraction of the file decrypted.
"""

import os

import pytest

import pqseal
from pqseal.format import DecryptionProperties

from bench_view import KEY, ONE, files

pq = pytest.importorskip("pyarrow.parquet")
pl = pytest.importorskip("polars")

MIB = 32
READS = {
    "pyarrow-full": lambda f: pq.read_table(f).num_rows,
    "polars-full": lambda f: pl.read_parquet(f).height,
    "pyarrow-1of20": lambda f: pq.read_table(f, columns=[ONE]).num_rows,
}


@pytest.fixture(scope="module")
def paths():
    return files(MIB, os.path.join("bench-out", "data"))


@pytest.mark.parametrize("source", ["plaintext", "view"])
@pytest.mark.parametrize("read", list(READS))
def test_read(benchmark, paths, read, source):
    plain, sealed = paths
    benchmark.group = f"view-{read}"
    fn = READS[read]
    dec = DecryptionProperties(KEY)
    seen = {}

    def run():
        if source == "plaintext":
            return fn(plain)
        with pqseal.open(sealed, decryption=dec) as v:
            rows = fn(v)
            seen["decrypted"] = v.decrypted_bytes / os.path.getsize(sealed)
            return rows

    rows = benchmark.pedantic(run, rounds=5, warmup_rounds=1)
    assert rows > 0
    if source == "view":
        benchmark.extra_info["decrypted_fraction"] = seen["decrypted"]
        if read == "pyarrow-1of20":
            assert seen["decrypted"] <= 0.10
