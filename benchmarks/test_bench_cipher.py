"""pytest-benchmark cases for the batch ciphers (a reduced matrix of pqseal.bench.cipher).

Off by default (the project's pytest config has ``--benchmark-skip``); run with

    pytest benchmarks -p no:cacheprovider -o addopts="" --benchmark-enable

One benchmarked call = one whole batch (~8 MiB of plaintext, at most 65536 modules) so
pqseal and ``cryptography`` are compared on the same work within each group
(``gcm-64B``, ``ctr-1MiB``, ...). ``extra_info`` holds GB/s and modules/s of the median.
"""

import os

import pytest

import pqseal
from pqseal.bench.cipher import MiB, Workload, module_aad_for, peer_runner, pqseal_cipher, pqseal_runner

SIZES = {"64B": 64, "1MiB": MiB}
BACKENDS = pqseal.available_backends()
FILE_AAD = os.urandom(8)
KEY = os.urandom(16)

_workloads = {}


def workload(size: int) -> Workload:
    if size not in _workloads:
        _workloads[size] = Workload(size)
    return _workloads[size]


def _record(benchmark, w: Workload) -> None:
    stats = getattr(benchmark, "stats", None)
    if stats is None:  # benchmarks disabled: the function ran once, nothing to record
        return
    med = stats.stats.median
    benchmark.extra_info.update(modules_per_batch=w.n, module_bytes=w.size,
                                gb_per_s=round(w.nbytes / med / 1e9, 3),
                                modules_per_s=round(w.n / med))


@pytest.mark.parametrize("size", list(SIZES.values()), ids=list(SIZES))
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("alg", ["gcm", "ctr"])
def test_pqseal(benchmark, alg, backend, size):
    w = workload(size)
    benchmark.group = f"{alg}-{fmt(size)}"
    run = pqseal_runner(w, pqseal_cipher(alg, backend, KEY, FILE_AAD), threads=1)
    assert benchmark(run) == w.n
    _record(benchmark, w)


@pytest.mark.parametrize("size", list(SIZES.values()), ids=list(SIZES))
@pytest.mark.parametrize("alg", ["gcm", "ctr"])
def test_cryptography(benchmark, alg, size):
    pytest.importorskip("cryptography")
    w = workload(size)
    benchmark.group = f"{alg}-{fmt(size)}"
    run = peer_runner(w, alg, KEY, module_aad_for(FILE_AAD), chunk_modules=None)
    assert benchmark(run) == w.n
    _record(benchmark, w)


def fmt(size: int) -> str:
    return next(k for k, v in SIZES.items() if v == size)
