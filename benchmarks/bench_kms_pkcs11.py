#!/usr/bin/env python3
"""Wrap/unwrap latency and throughput of the PKCS#11 KMS client (SoftHSM2) against the
local keystore, and a 200-file job's token calls with double and single wrapping.

One quick run (about 10-20 s): a throw-away SoftHSM2 token under a private
``SOFTHSM2_CONF`` in a temporary directory, a 256-bit master key on it and one in a
temporary keystore; ``--calls`` wraps of a 16-byte key (then unwraps of the results) on
1 thread and on ``--threads`` threads. SoftHSM2 is software in this process: a network
HSM adds its round trip per call, which is why the job counts matter.

Usage: ``python benchmarks/bench_kms_pkcs11.py [--calls 2000] [--threads 2] [--files 200] [--json]``.
Needs ``softhsm2`` (Debian) and ``pip install 'pqseal[pkcs11]'``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

try:
    import pqseal
except ImportError:  # not installed: the source tree (needs the built _native module)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "python"))
    import pqseal

from pqseal.kms.base import KmsClient

MODULES = ("/usr/lib/softhsm/libsofthsm2.so", "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
           "/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so", "/usr/local/lib/softhsm/libsofthsm2.so")
PIN = "bench-pin-1234"


class Counting(KmsClient):
    def __init__(self, inner):
        self.inner, self.wraps, self.unwraps, self._lock = inner, 0, 0, threading.Lock()

    def wrap_key(self, key_bytes, master_key_identifier):
        with self._lock:
            self.wraps += 1
        return self.inner.wrap_key(key_bytes, master_key_identifier)

    def unwrap_key(self, wrapped_key, master_key_identifier):
        with self._lock:
            self.unwraps += 1
        return self.inner.unwrap_key(wrapped_key, master_key_identifier)


def softhsm_client(tmp: Path):
    from pqseal.kms.pkcs11 import Pkcs11Kms

    module = next((m for m in (os.environ.get("PQSEAL_SOFTHSM2_MODULE"), *MODULES) if m and os.path.exists(m)), None)
    util = shutil.which("softhsm2-util")
    if module is None or util is None:
        sys.exit("needs softhsm2 (libsofthsm2.so and softhsm2-util)")
    (tmp / "tokens").mkdir(mode=0o700)
    conf = tmp / "softhsm2.conf"
    conf.write_text(f"directories.tokendir = {tmp / 'tokens'}\nobjectstore.backend = file\nlog.level = ERROR\n")
    os.environ["SOFTHSM2_CONF"] = str(conf)
    subprocess.run([util, "--init-token", "--free", "--label", "bench", "--so-pin", "so-" + PIN, "--pin", PIN],
                   check=True, capture_output=True)
    client = Pkcs11Kms(module, "bench", pin=PIN)
    for k in ("mk", "footer", "pii"):
        client.create_key(k)
    return client


def keystore_client(tmp: Path):
    from pqseal.kms.keystore import LocalKeystore

    ks = LocalKeystore.init(tmp / "ks.json", b"bench passphrase")
    for k in ("mk", "footer", "pii"):
        ks.create(k)
    return ks


def calls(client, n: int, threads: int) -> dict:
    """Latency (one thread: median and p99 per call) and throughput (calls/s on ``threads``)."""
    dek = os.urandom(16)
    out: dict = {}
    for op in ("wrap", "unwrap"):
        wrapped = [client.wrap_key(dek, "mk") for _ in range(n)] if op == "unwrap" else None
        lat = []
        for i in range(n):
            t0 = time.perf_counter()
            if op == "wrap":
                client.wrap_key(dek, "mk")
            else:
                client.unwrap_key(wrapped[i], "mk")
            lat.append(time.perf_counter() - t0)
        lat.sort()
        t0 = time.perf_counter()
        with ThreadPoolExecutor(threads) as pool:
            if op == "wrap":
                list(pool.map(lambda _: client.wrap_key(dek, "mk"), range(n)))
            else:
                list(pool.map(lambda w: client.unwrap_key(w, "mk"), wrapped))
        out[op] = {"median_us": statistics.median(lat) * 1e6, "p99_us": lat[int(0.99 * (n - 1))] * 1e6,
                   "per_s_1thread": n / sum(lat), f"per_s_{threads}threads": n / (time.perf_counter() - t0)}
    return out


def job(client, tmp: Path, files: int, double_wrapping: bool) -> dict:
    """``files`` files sealed on 2 threads (a key session when double wrapping, as the
    dataset jobs do) and their keys read back; token calls counted."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from pqseal.config import EncryptionConfig
    from pqseal.keys import KeySession

    counting = Counting(client)
    d = tmp / f"job-{double_wrapping}"
    d.mkdir()
    src = d / "p.parquet"
    pq.write_table(pa.table({"id": np.arange(100), "ssn": [f"{i:09d}" for i in range(100)]}), src)
    cfg = EncryptionConfig("footer", column_keys={"pii": ["ssn"]}, double_wrapping=double_wrapping)
    dsts = [d / f"{i}.parquet" for i in range(files)]
    t0 = time.perf_counter()
    if double_wrapping:
        session = KeySession.open(counting, cfg)
        work = lambda p: pqseal.encrypt_file(src, p, session.encryption_properties(p), fsync=False)  # noqa: E731
    else:
        work = lambda p: pqseal.encrypt_file(src, p, cfg, kms=counting, fsync=False)  # noqa: E731
    with ThreadPoolExecutor(2) as pool:
        list(pool.map(work, dsts))
    seal_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    KeySession.open(counting).add_files(dsts)
    return {"files": files, "master_keys": 2, "token_wraps": counting.wraps, "token_unwraps": counting.unwraps,
            "seal_s": seal_s, "read_keys_s": time.perf_counter() - t0}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=2000)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--files", type=int, default=200)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="pqseal-bench-kms-") as tmp_s:
        tmp = Path(tmp_s)
        (tmp / "hsm").mkdir()
        (tmp / "ks").mkdir()
        clients = {"pkcs11-softhsm2": softhsm_client(tmp / "hsm"), "keystore": keystore_client(tmp / "ks")}
        results = {name: calls(c, a.calls, a.threads) for name, c in clients.items()}
        jobs = {mode: job(clients["pkcs11-softhsm2"], tmp, a.files, mode == "double") for mode in ("double", "single")}
    if a.json:
        print(json.dumps({"calls": results, "jobs_pkcs11": jobs}))
        return
    print(f"{'client':<16} {'op':<7} {'median µs':>10} {'p99 µs':>9} {'1 thread/s':>11} {f'{a.threads} threads/s':>12}")
    for name, r in results.items():
        for op, v in r.items():
            print(f"{name:<16} {op:<7} {v['median_us']:>10.1f} {v['p99_us']:>9.1f} {v['per_s_1thread']:>11.0f} "
                  f"{v[f'per_s_{a.threads}threads']:>12.0f}")
    print(f"\n{a.files}-file job against the token (2 master keys):")
    for mode, j in jobs.items():
        print(f"  {mode:<7} wrapping: {j['token_wraps']:>4} token wraps, {j['token_unwraps']:>4} unwraps; "
              f"seal {j['seal_s']:.2f} s, read keys {j['read_keys_s']:.2f} s")


if __name__ == "__main__":
    main()
