#!/usr/bin/env python3
"""Writer benchmark: ``pqseal.ParquetWriter`` against ``pyarrow.parquet.ParquetWriter``
without encryption and with pyarrow's own encryption (CryptoFactory, the same KMS keys),
side by side in one run on the same in-memory table (>= 1 GB in Arrow); then the peak RSS
of pqseal's writer while it writes a 4 GiB file, in a subprocess. See benchmarks/README.md.

    python benchmarks/bench_writer.py            # ~1.2 GB table, 3 rounds, 4 GiB RSS run; 2-4 minutes
    python benchmarks/bench_writer.py --quick    # 0.25 GB table, 1 round, 1 GiB RSS run
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

try:
    import pqseal
except ImportError:  # not installed: the source tree (needs the built native modules)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "python"))
    import pqseal

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pyarrow.parquet.encryption as pe

from pqseal.config import EncryptionConfig
from pqseal.kms import KeyListKms

MiB = 1 << 20
GiB = 1 << 30
ROWS_PER_RG = 1 << 20      # pyarrow's default row group (rows)
MASTER = {"kf": bytes(range(16)), "kc": bytes(range(16, 32))}
IMPLS = ("pyarrow-plain", "pyarrow-encrypted", "pqseal")


def row_group(i: int, rng: np.random.Generator) -> pa.Table:
    """One row group of a typical analytics table: 10 columns of ints, floats, timestamps
    and strings (~170 bytes per row in Arrow)."""
    n = ROWS_PER_RG
    vocab = pa.array([f"category-{k:04d}" for k in range(1000)])

    def strings(width):
        data = rng.integers(97, 123, n * width, dtype=np.uint8)
        offsets = np.arange(0, (n + 1) * width, width, dtype=np.int32)
        return pa.StringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(data))

    return pa.table({
        "id": np.arange(i * n, (i + 1) * n), "amount": rng.random(n) * 1e4, "price": np.round(rng.random(n) * 100, 2),
        "ts": pa.array(rng.integers(1_600_000_000_000_000, 1_700_000_000_000_000, n), pa.timestamp("us")),
        "qty": rng.integers(1, 50, n).astype(np.int32), "category": vocab.take(rng.integers(0, 1000, n)),
        "token": strings(16), "score": rng.random(n), "user": rng.integers(0, 1 << 40, n), "note": strings(40)})


def make_table(gb: float) -> pa.Table:
    rng = np.random.default_rng(7)
    parts = [row_group(0, rng)]
    while sum(p.nbytes for p in parts) < gb * 1e9:
        parts.append(row_group(len(parts), rng))
    return pa.concat_tables(parts)


def writers(algorithm: str):
    """name -> fn(table, path): the three contenders, same options (pyarrow's defaults), same keys."""
    kms = KeyListKms(MASTER)
    factory = pqseal.arrow.crypto_factory(lambda cfg: KeyListKms(MASTER))

    def pyarrow_plain(t, path):
        with pq.ParquetWriter(path, t.schema) as w:
            w.write_table(t)

    def pyarrow_encrypted(t, path):
        props = factory.file_encryption_properties(pe.KmsConnectionConfig(), pe.EncryptionConfiguration(
            footer_key="kf", uniform_encryption=True, encryption_algorithm=algorithm), path)
        with pq.ParquetWriter(path, t.schema, encryption_properties=props) as w:
            w.write_table(t)

    def pqseal_writer(t, path):
        with pqseal.ParquetWriter(path, t.schema, EncryptionConfig("kf", uniform_encryption=True,
                                                                   encryption_algorithm=algorithm),
                                  kms=kms, fsync=False) as w:
            w.write_table(t)

    return {"pyarrow-plain": pyarrow_plain, "pyarrow-encrypted": pyarrow_encrypted, "pqseal": pqseal_writer}


def measure(table: pa.Table, work: str, rounds: int, algorithm: str, verbose: bool) -> dict:
    fns = writers(algorithm)
    times: dict[str, list[float]] = {k: [] for k in fns}
    cpus: dict[str, list[float]] = {k: [] for k in fns}
    sizes = {}
    for r in range(rounds + 1):               # round 0: untimed warm-up
        order = list(fns) if r % 2 else list(reversed(fns))   # alternate the order between rounds
        for name in order:
            path = os.path.join(work, f"{name}.parquet")
            if os.path.exists(path):
                os.unlink(path)
            c0, t0 = os.times(), time.perf_counter()
            fns[name](table, path)
            dt, c1 = time.perf_counter() - t0, os.times()
            cpu = (c1.user - c0.user) + (c1.system - c0.system)
            sizes[name] = os.path.getsize(path)
            os.unlink(path)
            if r:
                times[name].append(dt)
                cpus[name].append(cpu)
            if verbose:
                print(f"  round {r} {name}: {dt:.2f} s, cpu {cpu:.2f} s", file=sys.stderr)
    return {k: {"seconds": statistics.median(v), "rounds": v, "cpu_seconds": statistics.median(cpus[k]),
                "file_bytes": sizes[k]} for k, v in times.items()}


_RSS_CHILD = """
import os, sys, time
sys.path[:0] = {path!r}
import numpy as np, pyarrow as pa, pqseal
from pqseal.config import EncryptionConfig
from pqseal.kms import KeyListKms
from bench_writer import row_group, MASTER, vm
rg = row_group(0, np.random.default_rng(7))   # written over and over: the input is one row group
with open("/proc/self/clear_refs", "w") as f:  # the peak (VmHWM) restarts from the current RSS
    f.write("5")
base = vm("VmRSS")
t0 = time.perf_counter()
if {impl!r} == "pqseal":
    w = pqseal.ParquetWriter({out!r}, rg.schema, EncryptionConfig("kf", uniform_encryption=True),
                             kms=KeyListKms(MASTER), fsync=False)
else:
    import pyarrow.parquet as pq
    w = pq.ParquetWriter({out!r}, rg.schema)
with w:
    for _ in range({n}):
        w.write_table(rg)
dt = time.perf_counter() - t0
print(base, vm("VmHWM"), rg.nbytes, {n}, os.path.getsize({out!r}), dt)
"""


def vm(field: str) -> int:
    """A /proc/self/status memory figure (VmRSS, VmHWM), bytes."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise KeyError(field)


def rss_run(work: str, target: int, impl: str = "pqseal") -> dict:
    """Peak RSS of a subprocess that writes a ``target``-byte file with pqseal.ParquetWriter,
    one row group at a time (the same 1 Mi-row group written over and over)."""
    probe = os.path.join(work, "probe.parquet")
    rg = row_group(0, np.random.default_rng(7))
    pq.write_table(rg, probe)
    enc_rg = os.path.getsize(probe)          # the row group encoded (what is in flight)
    os.unlink(probe)
    out = os.path.join(work, "rss.parquet")
    n = -(-target // enc_rg)
    path = [str(Path(__file__).resolve().parent), os.path.dirname(os.path.dirname(pqseal.__file__))]
    code = _RSS_CHILD.format(path=path, out=out, n=n, impl=impl)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    base, peak, rg_arrow, n, size, dt = r.stdout.split()
    os.unlink(out)
    return {"baseline_rss": int(base), "peak_rss": int(peak), "row_group_arrow_bytes": int(rg_arrow),
            "row_group_encoded_bytes": enc_rg, "row_groups": int(n), "file_bytes": int(size), "seconds": float(dt)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gb", type=float, default=1.1, help="table size in Arrow, GB (default 1.1)")
    ap.add_argument("--rounds", type=int, default=3, help="timed rounds (median; default 3)")
    ap.add_argument("--algorithm", default="AES_GCM_V1", choices=["AES_GCM_V1", "AES_GCM_CTR_V1"])
    ap.add_argument("--rss-gib", type=float, default=4.0, help="file size of the RSS run, GiB (0: skip)")
    ap.add_argument("--work-dir", default=os.path.join("bench-out", "writer"))
    ap.add_argument("--quick", action="store_true", help="0.25 GB, 1 round, 1 GiB RSS run")
    ap.add_argument("--json", action="store_true", help="one JSON object on stdout")
    ap.add_argument("-v", "--verbose", action="store_true")
    a = ap.parse_args(argv)
    if a.quick:
        a.gb, a.rounds, a.rss_gib = 0.25, 1, 1.0
    os.makedirs(a.work_dir, exist_ok=True)
    load = os.getloadavg()[0]
    table = make_table(a.gb)
    res = {"table_bytes": table.nbytes, "rows": table.num_rows, "algorithm": a.algorithm, "load_before": load,
           "backend": pqseal.backend_info()["backend"], "pyarrow": pa.__version__}
    res["writers"] = measure(table, a.work_dir, a.rounds, a.algorithm, a.verbose)
    del table
    if a.rss_gib > 0:
        res["rss"] = rss_run(a.work_dir, int(a.rss_gib * GiB))
        res["rss_pyarrow_plain"] = rss_run(a.work_dir, int(a.rss_gib * GiB), "pyarrow-plain")
    res["load_after"] = os.getloadavg()[0]
    res["json"] = a.json
    if a.json:
        print(json.dumps(res))
    report(res)
    return 0


def report(res: dict) -> None:
    w = res["writers"]
    out = sys.stderr if res.get("json") else sys.stdout
    print(f"table {res['table_bytes'] / 1e9:.2f} GB in Arrow ({res['rows']:,} rows, {ROWS_PER_RG:,}-row groups), "
          f"{res['algorithm']}, pqseal backend {res['backend']}, pyarrow {res['pyarrow']}, "
          f"load {res['load_before']:.1f} -> {res['load_after']:.1f}", file=out)
    print(f"{'writer':20} {'median s':>9} {'GB/s (Arrow)':>13} {'file GB':>8}  rounds", file=out)
    for k in IMPLS:
        r = w[k]
        print(f"{k:20} {r['seconds']:9.2f} {res['table_bytes'] / r['seconds'] / 1e9:13.2f} "
              f"{r['file_bytes'] / 1e9:8.2f}  {' '.join(f'{x:.2f}' for x in r['rounds'])}", file=out)
    vs_enc = w["pyarrow-encrypted"]["seconds"] / w["pqseal"]["seconds"]
    vs_plain = w["pqseal"]["seconds"] / w["pyarrow-plain"]["seconds"] - 1
    print(f"pqseal vs pyarrow encrypted: {vs_enc:.2f}x speed (target >= 1.0x) "
          f"{'PASS' if vs_enc >= 1.0 else 'MISS'}", file=out)
    print(f"pqseal vs pyarrow unencrypted: {vs_plain * 100:+.1f}% time (target <= +10%) "
          f"{'PASS' if vs_plain <= 0.10 else 'MISS'}", file=out)
    r = res.get("rss")
    if r:
        grow = r["peak_rss"] - r["baseline_rss"]
        bound = 2 * r["row_group_arrow_bytes"] + 64 * MiB
        print(f"RSS writing {r['file_bytes'] / GiB:.2f} GiB ({r['row_groups']} row groups of "
              f"{r['row_group_arrow_bytes'] / MiB:.0f} MiB in Arrow, {r['row_group_encoded_bytes'] / MiB:.0f} MiB "
              f"encoded; {r['file_bytes'] / r['seconds'] / 1e9:.2f} GB/s): peak {r['peak_rss'] / MiB:.0f} MiB, "
              f"{grow / MiB:.0f} MiB above the process before writing ({r['baseline_rss'] / MiB:.0f} MiB: "
              f"imports and the input row group); target 2 row groups + 64 MiB = {bound / MiB:.0f} MiB: "
              f"{'PASS' if grow <= bound else 'MISS'}", file=out)
        p = res["rss_pyarrow_plain"]
        print("  for reference, pyarrow's unencrypted writer in the same run: "
              f"{(p['peak_rss'] - p['baseline_rss']) / MiB:.0f} MiB above the process before writing", file=out)


if __name__ == "__main__":
    sys.exit(main())
