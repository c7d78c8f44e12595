"""pytest-benchmark cases for dataset jobs (a reduced form of bench_dataset.py's throughput).

Off by default (the project's pytest config has ``--benchmark-skip``); run with

    pytest benchmarks/test_bench_dataset.py -p no:cacheprovider -o addopts="" --benchmark-enable

A 0.128 GB dataset of 32 files (bench_dataset.py's generator, cached in ``bench-out/data``)
is sealed with footer and two column keys, double wrapping, keys from the counting KMS
server (kms_server.py), in the group ``dataset-encrypt``: a loop of
``pqseal.encrypt_file`` in this process, and ``pqseal.dataset.encrypt`` with its thread
executor (1 worker) and on a Dask LocalCluster of 1 worker process (TLS). Each round
starts without the destination; one warm-up round. ``extra_info`` holds GB/s of the
median and the KMS calls of the last round (server count).
"""

import shutil
from pathlib import Path

import pytest

import pqseal
from pqseal.config import EncryptionConfig

from bench_dataset import COLUMN_KEYS, GB, MASTER_KEYS, big_dataset, dask_cluster
from kms_server import HttpKms, KmsServer

pytest.importorskip("pyarrow")

DATA = Path("bench-out", "data")
CFG = EncryptionConfig("kf", column_keys={"kc1": ["a"], "kc2": ["s"]}, double_wrapping=True)
assert set(COLUMN_KEYS) | {"kf"} == set(MASTER_KEYS)


@pytest.fixture(scope="module")
def dataset():
    src, size = big_dataset(DATA, 0.128, 32)
    work = DATA / "pytest-bench-dataset"
    yield src, size, work
    shutil.rmtree(work, ignore_errors=True)


@pytest.fixture(scope="module")
def kms():
    with KmsServer(MASTER_KEYS) as server:
        yield server


def _run(benchmark, kms, fn, dst: Path, nbytes: int):
    def setup():
        shutil.rmtree(dst, ignore_errors=True)
        kms.reset()

    benchmark.group = "dataset-encrypt"
    benchmark.pedantic(fn, setup=setup, rounds=3, warmup_rounds=1)
    stats = getattr(benchmark, "stats", None)
    if stats is not None:
        benchmark.extra_info["gb_per_s"] = round(nbytes / stats.stats.median / GB, 3)
    benchmark.extra_info["kms_calls"] = kms.stats()
    assert len(list(dst.rglob("*.parquet"))) == 32


def test_loop_of_encrypt_file(benchmark, dataset, kms):
    src, size, work = dataset
    dst = work / "loop"
    driver = HttpKms(kms.url, "loop")

    def loop():
        dst.mkdir(parents=True)
        for p in sorted(src.glob("*.parquet")):
            pqseal.encrypt_file(p, dst / p.name, CFG, kms=driver)

    _run(benchmark, kms, loop, dst, size)


@pytest.mark.parametrize("executor", ["threads", "dask"])
def test_dataset_encrypt(benchmark, dataset, kms, executor):
    dataset_ops = pytest.importorskip("pqseal.dataset")
    src, size, work = dataset
    dst = work / f"dataset-{executor}"
    driver = HttpKms(kms.url, "pqseal-driver")
    if executor == "threads":
        _run(benchmark, kms, lambda: dataset_ops.encrypt(src, dst, CFG, kms=driver, executor="threads", workers=1),
             dst, size)
        return
    with dask_cluster(1) as client:
        _run(benchmark, kms, lambda: dataset_ops.encrypt(src, dst, CFG, kms=driver, executor=client), dst, size)
