"""pytest-benchmark cases for the sealing sink (a reduced matrix of bench_sink.py).

Off by default (the project's pytest config has ``--benchmark-skip``); run with

    pytest benchmarks/test_bench_sink.py -p no:cacheprovider -o addopts="" --benchmark-enable

The same ~96 MB table is written by polars and by pyarrow into a plain file and into the
sink (defaults: 64 MiB in memory, the rest spilled encrypted, fsync on close), in the
groups ``sink-polars`` and ``sink-pyarrow``; ``extra_info`` holds MB/s of the median.
"""

import os
import sys

import pytest

import pqseal
from pqseal.format import EncryptionProperties

sys.path.insert(0, os.path.dirname(__file__))
from bench_sink import make_table  # noqa: E402

pq = pytest.importorskip("pyarrow.parquet")
pl = pytest.importorskip("polars")

MB = 96
KEY = os.urandom(16)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    table = make_table(MB)
    return table, pl.from_arrow(table), tmp_path_factory.mktemp("bench-sink")


def _write(writer, table, df, target):
    if writer == "polars":
        df.write_parquet(target)
    else:
        pq.write_table(table, target)


@pytest.mark.parametrize("target", ["plain", "sink"])
@pytest.mark.parametrize("writer", ["polars", "pyarrow"])
def test_sink(benchmark, data, writer, target):
    table, df, work = data
    out = str(work / f"{writer}-{target}.parquet")
    enc = EncryptionProperties(KEY)

    def run():
        if target == "plain":
            _write(writer, table, df, out)
        else:
            with pqseal.open(out, "wb", encryption=enc) as f:
                _write(writer, table, df, f)

    def setup():
        if os.path.exists(out):
            os.unlink(out)

    benchmark.group = f"sink-{writer}"
    benchmark.pedantic(run, setup=setup, rounds=3, warmup_rounds=1)
    size = os.path.getsize(out)
    stats = getattr(benchmark, "stats", None)
    if stats is not None:
        benchmark.extra_info["mb_per_s"] = round(size / stats.stats.median / 1e6, 1)
