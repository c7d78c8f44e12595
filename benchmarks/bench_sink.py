#!/usr/bin/env python3
"""The sealing sink against a plain file, side by side in one run.

    python benchmarks/bench_sink.py            # ~256 MB file, 3 rounds; about a minute
    python benchmarks/bench_sink.py --mb 64 --rounds 5 --json

One table (polars DataFrame / pyarrow Table of int, float, string and list columns,
about ``--mb`` MB of Parquet) is written, in rounds that interleave the cases:

* ``plain``: ``df.write_parquet(path)`` / ``pq.write_table(t, path)`` into a plain file
  (no fsync: what a user gets by default);
* ``sink``: the same writer into ``pqseal.open(path, "wb", encryption=...)`` with its
  defaults (64 MiB in memory, the rest spilled encrypted; sealed on close with fsync);
* ``sink-nofsync``: the same with ``fsync=False`` (compares like with like);
* ``sink-memory``: ``memory_limit`` above the file size (nothing spilled), ``fsync=False``.

Printed per case: the median seconds, MB/s of Parquet written, the share of the time
spent in ``close()`` (sealing) and the ratio to ``plain`` of the same writer; the goal
(issue 9) is polars ``sink`` / ``plain`` <= 1.20. Keys: explicit 128-bit (no KMS in the
timing). Files go to ``--dir`` (default ``bench-out/sink``) and are removed.
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

try:
    import pqseal
except ImportError:  # pqseal not installed: use the source tree (needs the built native modules)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "python"))
    import pqseal

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pqseal.format import EncryptionProperties

GOAL = 1.20


def make_table(mb: float) -> pa.Table:
    """About ``mb`` MB of Parquet (snappy): ids, floats, low-cardinality strings, lists."""
    n = int(mb * 1e6 / 26)
    rng = np.random.default_rng(0)
    words = np.array([f"customer-{i:05d}" for i in range(5000)], dtype=object)
    return pa.table({
        "id": np.arange(n, dtype=np.int64),
        "amount": rng.normal(100, 25, n),
        "qty": rng.integers(0, 1000, n, dtype=np.int32),
        "customer": pa.array(words[rng.integers(0, len(words), n)], pa.string()),
        "flags": pa.array(rng.random(n) < 0.3),
    })


def cases(writer: str, table, df, key: bytes, size: int):
    enc = EncryptionProperties(key)

    def write(target):
        if writer == "polars":
            df.write_parquet(target)
        else:
            pq.write_table(table, target)

    def plain(path):
        write(path)
        return 0.0

    def sink(**kw):
        def run(path):
            f = pqseal.open(path, "wb", encryption=enc, **kw)
            write(f)
            t = time.perf_counter()
            f.close()
            return time.perf_counter() - t
        return run

    return {"plain": plain, "sink": sink(), "sink-nofsync": sink(fsync=False),
            "sink-memory": sink(fsync=False, memory_limit=2 * size + (64 << 20))}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mb", type=float, default=256, help="Parquet size to write, MB (default 256)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--writers", default="polars,pyarrow")
    ap.add_argument("--dir", default=os.path.join("bench-out", "sink"))
    ap.add_argument("--json", action="store_true", help="one JSON object per case")
    args = ap.parse_args(argv)
    writers = args.writers.split(",")
    os.makedirs(args.dir, exist_ok=True)
    work = os.path.join(args.dir, f"run-{os.getpid()}")
    os.makedirs(work)
    table = make_table(args.mb)
    df = None
    if "polars" in writers:
        import polars as pl

        df = pl.from_arrow(table)
    key = os.urandom(16)
    probe = os.path.join(work, "probe.parquet")
    pq.write_table(table, probe)
    size = os.path.getsize(probe)
    os.unlink(probe)
    print(f"# pqseal {pqseal.__version__}, backend {pqseal.backend_info()['backend']}; {table.num_rows} rows, "
          f"~{size / 1e6:.0f} MB Parquet; {args.rounds} rounds; load {os.getloadavg()[0]:.2f}", file=sys.stderr)
    results = []
    try:
        for writer in writers:
            runs = cases(writer, table, df, key, size)
            times: dict[str, list] = {name: [] for name in runs}
            closes: dict[str, list] = {name: [] for name in runs}
            sizes: dict[str, int] = {}
            for _ in range(args.rounds + 1):           # the first round warms up
                for name, fn in runs.items():
                    path = os.path.join(work, f"{writer}-{name}.parquet")
                    t = time.perf_counter()
                    close = fn(path)
                    times[name].append(time.perf_counter() - t)
                    closes[name].append(close)
                    sizes[name] = os.path.getsize(path)
                    os.unlink(path)
            base = statistics.median(times["plain"][1:])
            for name in runs:
                med = statistics.median(times[name][1:])
                row = {"writer": writer, "case": name, "seconds": round(med, 4),
                       "mb_per_s": round(sizes[name] / med / 1e6, 1),
                       "close_share": round(statistics.median(closes[name][1:]) / med, 3),
                       "ratio_to_plain": round(med / base, 3), "bytes": sizes[name]}
                results.append(row)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if args.json:
        for r in results:
            print(json.dumps(r))
    else:
        print(f"{'writer':8} {'case':13} {'seconds':>8} {'MB/s':>7} {'close':>6} {'x plain':>8}")
        for r in results:
            print(f"{r['writer']:8} {r['case']:13} {r['seconds']:8.3f} {r['mb_per_s']:7.1f} "
                  f"{r['close_share']:6.0%} {r['ratio_to_plain']:8.3f}")
    for r in results:
        if r["writer"] == "polars" and r["case"] == "sink":
            verdict = "PASS" if r["ratio_to_plain"] <= GOAL else "MISS"
            print(f"# polars write_parquet into the sink / into a plain file: {r['ratio_to_plain']:.3f} "
                  f"(goal <= {GOAL:.2f}): {verdict}", file=sys.stderr)
    print(f"# load {os.getloadavg()[0]:.2f}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
