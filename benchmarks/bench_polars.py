#!/usr/bin/env python3
"""polars bridge benchmark (issue 9, item 6), side by side in one run:

* read: ``pl.read_parquet`` of a KMS-encrypted file with
  ``pqseal.polars.decryption_properties`` (timed together: key material read, DEKs
  unwrapped, footer opened, then polars' native decryption) vs the same read of the
  plaintext file. Goal: >= 0.9x (plaintext time / encrypted time). For scale, polars'
  own read of a file it encrypted with explicit keys (its decryption cost alone).
* write: ``pqseal.polars.write_parquet`` (fresh DEKs, polars' encrypted write, key
  material stamped by the footer-only rewrite, rename) vs polars' own encrypted write
  with explicit keys (no KMS, no key material) and vs polars' unencrypted write.

Same frame, same polars options for every contender; rounds interleave the contenders
(median of ``--rounds`` after one warm-up round), outputs without fsync (polars does not
fsync either). The KMS is pqseal's in-process KeyListKms with double wrapping, so KEKs
are cached after the first file as with any KMS; the first-call cost is printed apart.

    python benchmarks/bench_polars.py            # ~1 minute
    python benchmarks/bench_polars.py --rows 1000000 --rounds 3 --json
"""

from __future__ import annotations

import argparse
import json
import os
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
import polars as pl

import pqseal.polars as ppl
from pqseal.config import EncryptionConfig
from pqseal.keys import clear_caches
from pqseal.kms import KeyListKms

GOAL_READ = 0.9
KMS = KeyListKms({"kf": os.urandom(16), "kc1": os.urandom(16), "kc2": os.urandom(16)})
CONFIGS = {
    "kms-uniform": EncryptionConfig("kf", uniform_encryption=True),
    "kms-columns": EncryptionConfig("kf", column_keys={"kc1": ["id", "amount"], "kc2": ["name"]},
                                    complete_columns=True),
}


def make_frame(rows: int) -> pl.DataFrame:
    rng = np.random.default_rng(7)
    return pl.DataFrame({
        "id": np.arange(rows, dtype=np.int64),
        "amount": rng.normal(100, 30, rows),
        "qty": rng.integers(0, 1000, rows, dtype=np.int32),
        "ts": (np.datetime64("2026-01-01T00:00:00", "ms") + rng.integers(0, 10**12, rows).astype("timedelta64[ms]")),
        "name": pl.Series([f"customer-{i}" for i in rng.integers(0, 200_000, rows)]),
        "flag": rng.integers(0, 2, rows).astype(bool),
    })


def median_times(cases: dict, rounds: int) -> dict:
    """{name: [seconds per round]}, rounds interleaved, after one untimed warm-up round."""
    out: dict[str, list[float]] = {name: [] for name in cases}
    for r in range(rounds + 1):
        for name, fn in cases.items():
            t0 = time.perf_counter()
            fn()
            dt = time.perf_counter() - t0
            if r:
                out[name].append(dt)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=4_000_000)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--work-dir", default=os.path.join("bench-out", "polars"))
    ap.add_argument("--json", action="store_true", help="one JSON object per measurement on stdout")
    a = ap.parse_args(argv)
    os.makedirs(a.work_dir, exist_ok=True)
    w = Path(a.work_dir)
    options = dict(row_group_size=512 * 1024)

    df = make_frame(a.rows)
    plain = w / "plain.parquet"
    df.write_parquet(plain, **options)
    files = {"plaintext": plain}
    for name, cfg in CONFIGS.items():
        files[name] = w / f"{name}.parquet"
        ppl.write_parquet(df, files[name], cfg, kms=KMS, overwrite=True, fsync=False, **options)
    key = os.urandom(16)   # polars' own encryption, explicit keys: its decryption cost without pqseal
    explicit = pl.ParquetEncryptionProperties(footer_key=key)
    files["polars-explicit-keys"] = w / "polars-explicit-keys.parquet"
    df.write_parquet(files["polars-explicit-keys"], encryption=explicit, **options)
    explicit_dec = pl.ParquetDecryptionProperties(footer_key=key)

    def read(name, p):
        if name == "polars-explicit-keys":
            return pl.read_parquet(p, decryption=explicit_dec)
        return pl.read_parquet(p, decryption=ppl.decryption_properties(p, kms=KMS))

    for name, p in files.items():   # round trip before timing anything
        assert read(name, p).equals(df), name
    size = {name: os.path.getsize(p) for name, p in files.items()}

    clear_caches()
    t0 = time.perf_counter()
    ppl.decryption_properties(files["kms-columns"], kms=KMS)
    first_call = time.perf_counter() - t0
    cached = median_times({"props": lambda: ppl.decryption_properties(files["kms-columns"], kms=KMS)}, 20)["props"]

    reads = median_times({name: (lambda name=name, p=p: read(name, p)) for name, p in files.items()}, a.rounds)

    out = {name: w / f"out-{name}.parquet" for name in ("polars-plain", "polars-explicit-keys", "pqseal-kms-stamp")}
    writes = median_times({
        "polars-plain": lambda: df.write_parquet(out["polars-plain"], **options),
        "polars-explicit-keys": lambda: df.write_parquet(
            out["polars-explicit-keys"], encryption=explicit, **options),
        "pqseal-kms-stamp": lambda: ppl.write_parquet(df, out["pqseal-kms-stamp"], CONFIGS["kms-uniform"], kms=KMS,
                                                      overwrite=True, fsync=False, **options),
    }, a.rounds)

    rows = []
    out_size = {n: os.path.getsize(p) for n, p in out.items()}
    for op, times, nbytes in (("read", reads, size), ("write", writes, out_size)):
        for name, ts in times.items():
            rows.append({"op": op, "case": name, "bytes": nbytes[name], "seconds": statistics.median(ts),
                         "best": min(ts), "spread": (max(ts) - min(ts)) / 2 / statistics.median(ts)})
    med = {(r["op"], r["case"]): r["seconds"] for r in rows}
    best = {(r["op"], r["case"]): r["best"] for r in rows}
    if a.json:
        for r in rows:
            print(json.dumps({**r, "rows": a.rows, "polars": pl.__version__}))

    print(f"polars {pl.__version__}, pqseal {pqseal.__version__}; {a.rows:,} rows x {df.width} columns "
          f"({df.estimated_size() / 1e6:.0f} MB in memory), median of {a.rounds} rounds, load "
          f"{os.getloadavg()[0]:.2f}", file=sys.stderr)
    print(f"{'op':6} {'case':22} {'MB':>8} {'median s':>9} {'best s':>9} {'spread':>7}", file=sys.stderr)
    for r in rows:
        print(f"{r['op']:6} {r['case']:22} {r['bytes'] / 1e6:8.1f} {r['seconds']:9.4f} {r['best']:9.4f} "
              f"{r['spread']:7.1%}", file=sys.stderr)
    print(f"decryption_properties: first call {first_call * 1e3:.1f} ms (KMS unwraps), then "
          f"{statistics.median(cached) * 1e3:.2f} ms (KEKs cached)", file=sys.stderr)
    ok = True
    print("ratios: plaintext time / this time, of the medians (of the best rounds, which a shared machine "
          "disturbs least)", file=sys.stderr)
    for name in [*CONFIGS, "polars-explicit-keys"]:
        ratio = med["read", "plaintext"] / med["read", name]
        ok &= ratio >= GOAL_READ or name not in CONFIGS
        verdict = (f"goal >= {GOAL_READ}x {'PASS' if ratio >= GOAL_READ else 'MISS'}" if name in CONFIGS
                   else "(polars' decryption alone, for scale)")
        print(f"read  {name:20} / plaintext: {ratio:.2f}x ({best['read', 'plaintext'] / best['read', name]:.2f}x) "
              f"{verdict}", file=sys.stderr)
    for other in ("polars-explicit-keys", "polars-plain"):
        stamp, them = med["write", "pqseal-kms-stamp"], med["write", other]
        print(f"write pqseal-kms-stamp / {other}: {them / stamp:.2f}x "
              f"({best['write', other] / best['write', 'pqseal-kms-stamp']:.2f}x), "
              f"{(stamp - them) * 1e3:+.0f} ms per file", file=sys.stderr)
    for p in out.values():
        p.unlink(missing_ok=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
