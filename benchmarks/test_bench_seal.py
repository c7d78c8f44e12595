"""pytest-benchmark cases for the file engine (a reduced matrix of pqseal.bench.seal).

Off by default (the project's pytest config has ``--benchmark-skip``); run with

    pytest benchmarks -p no:cacheprovider -o addopts="" --benchmark-enable

A 128 MiB pyarrow-default file (the same generator as ``pqseal bench seal``, cached in
``bench-out/data``) is sealed, unsealed and verified by pqseal (default backend, one
thread) and by the pyarrow route (read and rewrite with pyarrow's encryption; read), in
the groups ``seal-AES_GCM_V1``, ``unseal-AES_GCM_CTR_V1``, ... Outputs go beside the
input; each round starts without the output file; one warm-up round.
``extra_info`` holds GB/s of the median.
"""

import os

import pytest

import pqseal
from pqseal.bench.seal import MiB, _warm, generate
from pqseal.format import DecryptionProperties, EncryptionProperties

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")
pe = pytest.importorskip("pyarrow.parquet.encryption")

GIB = 0.125
KEY = os.urandom(16)
ALGS = ["AES_GCM_V1", "AES_GCM_CTR_V1"]
CACHE = os.path.join("bench-out", "data")


@pytest.fixture(scope="module")
def files():
    os.makedirs(CACHE, exist_ok=True)
    src = os.path.join(CACHE, f"bench-{GIB:g}GiB-typical-10col-1MiBpages.parquet")
    if not os.path.exists(src):
        generate(src, GIB)
    _warm(src)
    work = os.path.join(CACHE, "pytest-bench-work")
    os.makedirs(work, exist_ok=True)
    sealed = {}
    for alg in ALGS:
        for impl in ("pqseal", "pyarrow"):
            p = os.path.join(work, f"sealed-{impl}-{alg}.parquet")
            if impl == "pqseal":
                pqseal.encrypt_file(src, p, EncryptionProperties(KEY, algorithm=alg), fsync=False)
            else:
                pq.write_table(pq.read_table(src), p, data_page_size=MiB, row_group_size=1 << 20,
                               encryption_properties=pe.create_encryption_properties(KEY, encryption_algorithm=alg))
            _warm(p)
            sealed[impl, alg] = p
    yield src, work, sealed
    for name in os.listdir(work):
        os.unlink(os.path.join(work, name))
    os.rmdir(work)


def _run(benchmark, fn, out, nbytes):
    def setup():
        if out and os.path.exists(out):
            os.unlink(out)

    benchmark.pedantic(fn, setup=setup, rounds=3, warmup_rounds=1)
    stats = getattr(benchmark, "stats", None)
    if stats is not None:
        benchmark.extra_info["gb_per_s"] = round(nbytes / stats.stats.median / 1e9, 3)


def _operation(op: str, impl: str, alg: str, src: str, out: str | None):
    """The call benchmarked for one (operation, implementation, algorithm)."""
    if impl == "pqseal":
        if op == "seal":
            enc = EncryptionProperties(KEY, algorithm=alg)
            return lambda: pqseal.encrypt_file(src, out, enc, fsync=False)
        dec = DecryptionProperties(KEY)
        if op == "unseal":
            return lambda: pqseal.decrypt_file(src, out, dec, fsync=False)
        return lambda: pqseal.verify(src, dec)
    if op == "seal":
        ep = pe.create_encryption_properties(KEY, encryption_algorithm=alg)
        return lambda: pq.write_table(pq.read_table(src, use_threads=False), out, encryption_properties=ep,
                                      data_page_size=MiB, row_group_size=1 << 20)
    dp = pe.create_decryption_properties(KEY)
    if op == "unseal":
        return lambda: pq.write_table(pq.read_table(src, decryption_properties=dp, use_threads=False), out,
                                      data_page_size=MiB, row_group_size=1 << 20)
    return lambda: pq.read_table(src, decryption_properties=dp, use_threads=False)


@pytest.mark.parametrize("impl", ["pqseal", "pyarrow"])
@pytest.mark.parametrize("alg", ALGS)
@pytest.mark.parametrize("op", ["seal", "unseal", "verify"])
def test_file(benchmark, files, op, alg, impl):
    plain, work, sealed = files
    src = plain if op == "seal" else sealed[impl, alg]
    out = None if op == "verify" else os.path.join(work, f"out-{op}-{impl}.parquet")
    benchmark.group = f"{op}-{alg}"
    _run(benchmark, _operation(op, impl, alg, src, out), out, os.path.getsize(src))
    if out:
        assert os.path.getsize(out) > 0
