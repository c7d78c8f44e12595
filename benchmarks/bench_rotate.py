#!/usr/bin/env python3
"""Issue 11's measurements of key rotation, in one run:

1. A 1 GiB file with internal key material (footer key and a column key, double
   wrapping): footer-only rotation (``pqseal.rotate``, what ``pqseal rotate FILE`` runs)
   against the full re-key of the same file (``pqseal.rekey_file``: new DEKs, every
   module re-encrypted), side by side, median of several runs (goal: rotation <= 20 ms).
2. 1,000 small files (``pqseal.dataset.rotate``, what ``pqseal rotate DIR`` runs): the
   KMS calls counted by the counting KMS server (kms_server.py) per master key (goal: one
   call per master key), for files sealed with double wrapping and with single wrapping,
   and for comparison a loop of ``pqseal.rotate`` over the same files.

    python benchmarks/bench_rotate.py                    # both parts; 45-90 s here
    python benchmarks/bench_rotate.py --only file        # or: files
    python benchmarks/bench_rotate.py --size-gib 0.25 --files 200 --json

Prints the tables on stdout (``--json``: also one JSON object per row). Generated data
lives in ``bench-out/rotate-tmp`` and is deleted at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
MASTER_KEYS = ("kf", "kc")
GIB = 1 << 30


def config(double: bool):
    from pqseal.config import EncryptionConfig

    return EncryptionConfig("kf", column_keys={"kc": ["a"]}, double_wrapping=double)


def big_file(path: Path, gib: float) -> int:
    """A plaintext file of about ``gib`` GiB of random values (int64 a, float64 x,
    16-character strings s; row groups of 1Mi rows). Returns its size."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows_per_group = 1 << 20
    groups = max(1, round(gib * GIB / (rows_per_group * 32)))   # ~32 bytes per row encoded
    rng = np.random.default_rng(11)
    hexdigits = np.frombuffer(b"0123456789abcdef", np.uint8)
    offsets = pa.py_buffer(np.arange(0, 16 * (rows_per_group + 1), 16, dtype=np.int32))
    schema = pa.schema([("a", pa.int64()), ("x", pa.float64()), ("s", pa.string())])
    with pq.ParquetWriter(path, schema) as w:
        for _ in range(groups):
            chars = hexdigits[rng.integers(0, 16, rows_per_group * 16, dtype=np.uint8)]
            w.write_table(pa.table({"a": rng.integers(0, 1 << 62, rows_per_group, dtype=np.int64),
                                    "x": rng.random(rows_per_group),
                                    "s": pa.StringArray.from_buffers(rows_per_group, offsets, pa.py_buffer(chars))},
                                   schema=schema), row_group_size=rows_per_group)
    return os.path.getsize(path)


def small_files(root: Path, n: int) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    root.mkdir(parents=True)
    for i in range(n):
        pq.write_table(pa.table({"a": list(range(i * 100, i * 100 + 100)), "b": [f"r{k}" for k in range(100)]}),
                       root / f"part-{i:05d}.parquet")


def _data_digest(path: Path) -> str:
    """SHA-256 of the file up to its footer: what a footer-only rotation must not touch."""
    import hashlib

    from pqseal.format.source import Source

    with Source(str(path)) as s:
        end = s.tail.footer_offset
    h = hashlib.sha256()
    with open(path, "rb") as f:
        left = end
        while left:
            chunk = f.read(min(left, 8 << 20))
            h.update(chunk)
            left -= len(chunk)
    return h.hexdigest()


def measure_file(work: Path, url: str, gib: float, rotations: int, rekeys: int) -> dict:
    """Footer-only rotation vs full re-key of one file of ``gib`` GiB."""
    import pqseal
    from kms_server import HttpKms

    kms = HttpKms(url)
    plain, sealed, rekeyed = work / "plain.parquet", work / "sealed.parquet", work / "rekeyed.parquet"
    t0 = time.perf_counter()
    size = big_file(plain, gib)
    print(f"generated {size / GIB:.2f} GiB in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    pqseal.encrypt_file(plain, sealed, config(True), kms=kms)
    plain.unlink()
    before = _data_digest(sealed)
    rot = []
    for _ in range(rotations):
        t0 = time.perf_counter()
        pqseal.rotate(sealed, kms=kms)
        rot.append(time.perf_counter() - t0)
    assert _data_digest(sealed) == before, "a rotation changed the data region"
    assert pqseal.inspect(sealed, kms=kms)["footer_readable"]
    rek = []
    for _ in range(rekeys):
        t0 = time.perf_counter()
        pqseal.rekey_file(sealed, rekeyed, None, config(True), kms=kms, overwrite=True)
        rek.append(time.perf_counter() - t0)
    return {"part": "file", "bytes": os.path.getsize(sealed), "rotations": rotations, "rekeys": rekeys,
            "rotate_median_ms": statistics.median(rot) * 1e3, "rotate_min_ms": min(rot) * 1e3,
            "rotate_max_ms": max(rot) * 1e3, "rekey_median_s": statistics.median(rek), "rekey_min_s": min(rek),
            "ratio": statistics.median(rek) / statistics.median(rot)}


def _calls(server) -> dict:
    stats = server.stats()
    return {op: sum(c.get(op, 0) for c in stats.values()) for op in ("wrap", "unwrap")} | {"clients": len(stats)}


def measure_files(work: Path, server, n: int) -> list[dict]:
    """KMS calls of rotating ``n`` small files: dataset.rotate (double- and
    single-wrapped files) and a loop of pqseal.rotate."""
    import pqseal
    import pqseal.dataset
    from kms_server import HttpKms

    plain = work / "plain"
    small_files(plain, n)
    rows = []
    for double in (True, False):
        sealed = work / ("double" if double else "single")
        sealed.mkdir()
        kms = HttpKms(server.url)
        for p in sorted(plain.iterdir()):      # a loop: dataset jobs always double-wrap
            pqseal.encrypt_file(p, sealed / p.name, config(double), kms=kms)
        pqseal.keys.clear_caches()
        server.reset()
        t0 = time.perf_counter()
        rep = pqseal.dataset.rotate(str(sealed), kms=HttpKms(server.url), progress=False)
        seconds = time.perf_counter() - t0
        assert rep.ok == n and not rep.failed, rep.to_json()
        rows.append({"part": "files", "how": "pqseal.dataset.rotate (pqseal rotate DIR)",
                     "sealed": "double wrapping" if double else "single wrapping", "files": n,
                     "master_keys": len(MASTER_KEYS), "seconds": seconds, "report_kms_calls": rep.kms_calls,
                     **_calls(server)})
        if double:   # the same files again, one pqseal.rotate per file (no session across files)
            pqseal.keys.clear_caches()
            server.reset()
            kms = HttpKms(server.url)
            t0 = time.perf_counter()
            for p in sorted(sealed.iterdir()):
                if p.suffix == ".parquet":
                    pqseal.rotate(p, kms=kms)
            rows.append({"part": "files", "how": "loop of pqseal.rotate, one KMS client",
                         "sealed": "double wrapping", "files": n, "master_keys": len(MASTER_KEYS),
                         "seconds": time.perf_counter() - t0, "report_kms_calls": None, **_calls(server)})
        shutil.rmtree(sealed)
    return rows


def print_tables(rows: list[dict]) -> None:
    load = os.getloadavg()
    print(f"load average {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}; {os.cpu_count()} CPUs")
    for r in rows:
        if r["part"] == "file":
            print(f"\none file of {r['bytes'] / GIB:.2f} GiB, internal key material, footer + column key")
            print(f"{'operation':<44} {'median':>10} {'min':>10} {'max':>10}  runs")
            print(f"{'footer-only rotation (pqseal.rotate)':<44} {r['rotate_median_ms']:>8.1f}ms "
                  f"{r['rotate_min_ms']:>8.1f}ms {r['rotate_max_ms']:>8.1f}ms  {r['rotations']}")
            print(f"{'full re-key (pqseal.rekey_file)':<44} {r['rekey_median_s']:>9.2f}s {r['rekey_min_s']:>9.2f}s "
                  f"{'':>10}  {r['rekeys']}")
            verdict = "PASS" if r["rotate_median_ms"] <= 20 else "MISS"
            print(f"rotation goal <= 20 ms: {verdict}; re-key / rotation: {r['ratio']:,.0f}x")
    files = [r for r in rows if r["part"] == "files"]
    if files:
        print(f"\nrotating {files[0]['files']} files, {files[0]['master_keys']} master keys, counting KMS server")
        print(f"{'how':<44} {'files sealed with':<16} {'wraps':>6} {'unwraps':>8} {'clients':>8} {'seconds':>8}")
        for r in files:
            print(f"{r['how']:<44} {r['sealed']:<16} {r['wrap']:>6} {r['unwrap']:>8} {r['clients']:>8} "
                  f"{r['seconds']:>8.2f}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", choices=("file", "files"))
    ap.add_argument("--size-gib", type=float, default=1.0)
    ap.add_argument("--rotations", type=int, default=9)
    ap.add_argument("--rekeys", type=int, default=3)
    ap.add_argument("--files", type=int, default=1000)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args(argv)
    from kms_server import KmsServer

    work = Path("bench-out", "rotate-tmp")
    shutil.rmtree(work, ignore_errors=True)
    rows: list[dict] = []
    try:
        with KmsServer(MASTER_KEYS) as server:
            if a.only in (None, "file"):
                (work / "file").mkdir(parents=True)
                rows.append(measure_file(work / "file", server.url, a.size_gib, a.rotations, a.rekeys))
                shutil.rmtree(work / "file")
            if a.only in (None, "files"):
                (work / "files").mkdir(parents=True)
                rows += measure_files(work / "files", server, a.files)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print_tables(rows)
    if a.json:
        for r in rows:
            print(json.dumps(r))
    return 0


if __name__ == "__main__":
    sys.exit(main())
