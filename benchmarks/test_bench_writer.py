"""pytest-benchmark cases for pqseal.ParquetWriter (a reduced bench_writer.py).

Off by default (the project's pytest config has ``--benchmark-skip``); run with

    pytest benchmarks/test_bench_writer.py -p no:cacheprovider -o addopts="" --benchmark-enable

The same in-memory table (two 1 Mi-row groups, ~0.28 GB in Arrow) written by pyarrow's
ParquetWriter without encryption, by pyarrow's ParquetWriter with its own encryption
(CryptoFactory, the same KMS keys) and by pqseal.ParquetWriter, in one group ``write``;
each round starts without the output file; one warm-up round. ``extra_info`` holds GB/s
(of the table in Arrow) of the median.
"""

import os
import sys

import pytest

pa = pytest.importorskip("pyarrow")
np = pytest.importorskip("numpy")

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_writer import IMPLS, row_group, writers  # noqa: E402

WORK = os.path.join("bench-out", "writer-pytest")


@pytest.fixture(scope="module")
def table():
    rng = np.random.default_rng(7)
    os.makedirs(WORK, exist_ok=True)
    yield pa.concat_tables([row_group(0, rng), row_group(1, rng)])
    for name in os.listdir(WORK):
        os.unlink(os.path.join(WORK, name))


@pytest.mark.parametrize("impl", IMPLS)
def test_write(benchmark, table, impl):
    fn = writers("AES_GCM_V1")[impl]
    out = os.path.join(WORK, f"{impl}.parquet")

    def setup():
        if os.path.exists(out):
            os.unlink(out)

    benchmark.group = "write"
    benchmark.pedantic(fn, args=(table, out), setup=setup, rounds=3, warmup_rounds=1)
    stats = getattr(benchmark, "stats", None)
    if stats is not None:
        benchmark.extra_info["gb_per_s"] = round(table.nbytes / stats.stats.median / 1e9, 3)
    assert os.path.getsize(out) > 0
