"""pytest-benchmark cases for key rotation (a reduced form of bench_rotate.py's first part).

Off by default (the project's pytest config has ``--benchmark-skip``); run with

    pytest benchmarks/test_bench_rotate.py -p no:cacheprovider -o addopts="" --benchmark-enable

One file of about 128 MiB (internal key material, footer and column key, double
wrapping, keys from the counting KMS server) in the group ``rotate``: the footer-only
rotation (``pqseal.rotate``) and the full re-key (``pqseal.rekey_file``) of the same
file. ``extra_info`` holds the file's size; the data region is checked unchanged after
the rotations.
"""

import shutil
from pathlib import Path

import pytest

import pqseal

from bench_rotate import MASTER_KEYS, _data_digest, big_file, config
from kms_server import HttpKms, KmsServer

WORK = Path("bench-out", "pytest-bench-rotate")


@pytest.fixture(scope="module")
def sealed():
    shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir(parents=True)
    with KmsServer(MASTER_KEYS) as server:
        kms = HttpKms(server.url)
        big_file(WORK / "plain.parquet", 0.125)
        pqseal.encrypt_file(WORK / "plain.parquet", WORK / "sealed.parquet", config(True), kms=kms)
        (WORK / "plain.parquet").unlink()
        yield WORK / "sealed.parquet", kms
    shutil.rmtree(WORK, ignore_errors=True)


def test_rotate_footer_only(benchmark, sealed):
    path, kms = sealed
    before = _data_digest(path)
    benchmark.group = "rotate"
    benchmark.extra_info["bytes"] = path.stat().st_size
    benchmark.pedantic(lambda: pqseal.rotate(path, kms=kms), rounds=9, warmup_rounds=1)
    assert _data_digest(path) == before


def test_rekey_full(benchmark, sealed):
    path, kms = sealed
    benchmark.group = "rotate"
    benchmark.extra_info["bytes"] = path.stat().st_size
    benchmark.pedantic(lambda: pqseal.rekey_file(path, WORK / "rekeyed.parquet", None, config(True), kms=kms,
                                                 overwrite=True), rounds=3, warmup_rounds=1)
