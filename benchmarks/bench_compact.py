#!/usr/bin/env python3
"""Compaction of small PME files (issue 11, item 3): N files of about 1 MB in one
partition (3 columns: int64 id, string s, float64 v; footer key and one column key,
double wrapping, an in-process key-list KMS) merged into one file, three ways, each
from a fresh copy of the same sealed tree, in turn, best of R rounds:

- ``compact``: ``pqseal.dataset.compact(src, dst)`` (page level, no decode: every
  module decrypted and sealed again under new DEKs; one output file);
- ``rekey``: ``pqseal.dataset.rekey(src, dst)`` of the same files (page level, new DEKs,
  N output files: the same cryptographic work without the merge);
- ``pyarrow``: a loop reading each file with pyarrow's PME reader (decode), one table
  concatenated and written again with pyarrow's PME writer (encode), one output file.

Every contender runs on driver threads (``workers``) and writes with fsync where pqseal
does (pyarrow's writer does not fsync: its time is a lower bound).

    python benchmarks/bench_compact.py                     # 200 x 1 MB, 3 rounds: ~30 s
    python benchmarks/bench_compact.py --files 50 --rounds 1 --json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

MASTER = {"kf": bytes(range(16)), "kc": bytes(range(16, 32))}
ROWS_PER_MB = 47_000          # about 1 MB per file, snappy, with this generator


def make_tree(root: Path, files: int) -> int:
    """N sealed files in one partition; returns their total size."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    import pqseal
    from pqseal.config import EncryptionConfig
    from pqseal.kms import KeyListKms

    part = root / "day=1"
    part.mkdir(parents=True)
    cfg = EncryptionConfig("kf", column_keys={"kc": ["id"]})
    kms = KeyListKms(MASTER)
    plain = root.parent / "plain.parquet"
    for i in range(files):
        start = i * ROWS_PER_MB
        t = pa.table({"id": pa.array(range(start, start + ROWS_PER_MB), pa.int64()),
                      "s": [f"value-{k % 997}-{k}" for k in range(start, start + ROWS_PER_MB)],
                      "v": pa.array([k * 0.25 for k in range(start, start + ROWS_PER_MB)])})
        pq.write_table(t, plain, write_page_index=True)
        pqseal.encrypt_file(plain, part / f"part-{i:05d}.parquet", cfg, kms=kms)
    plain.unlink()
    return sum(f.stat().st_size for f in part.iterdir())


def run_compact(src: Path, dst: Path, workers: int) -> None:
    from pqseal import dataset
    from pqseal.kms import KeyListKms

    r = dataset.compact(src, dst, kms=KeyListKms(MASTER), workers=workers, target_size=1 << 40)
    assert r.ok == 1 and not r.failed, r.to_json()


def run_rekey(src: Path, dst: Path, workers: int) -> None:
    from pqseal import dataset
    from pqseal.config import EncryptionConfig
    from pqseal.kms import KeyListKms

    r = dataset.rekey(src, dst, encryption=EncryptionConfig("kf", column_keys={"kc": ["id"]}),
                      kms=KeyListKms(MASTER), workers=workers)
    assert not r.failed, r.to_json()


def run_pyarrow(src: Path, dst: Path, workers: int) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq
    import pyarrow.parquet.encryption as pe

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    from pyarrow_kms import key_list_client

    factory = pe.CryptoFactory(key_list_client(MASTER))
    conn = pe.KmsConnectionConfig()
    tables = []
    for f in sorted((src / "day=1").iterdir()):
        props = factory.file_decryption_properties(conn, pe.DecryptionConfiguration(), parquet_file_path=str(f))
        tables.append(pq.read_table(f, decryption_properties=props))
    out = dst / "day=1" / "merged.parquet"
    out.parent.mkdir(parents=True)
    enc = factory.file_encryption_properties(conn, pe.EncryptionConfiguration(footer_key="kf",
                                                                              column_keys={"kc": ["id"]}))
    pq.write_table(pa.concat_tables(tables), out, encryption_properties=enc, write_page_index=True)


CONTENDERS = {"compact": run_compact, "rekey": run_rekey, "pyarrow": run_pyarrow}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--files", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--dir", help="scratch directory (default: a temporary one)")
    ap.add_argument("--json", action="store_true", help="also print one JSON object per contender")
    a = ap.parse_args(argv)
    base = Path(tempfile.mkdtemp(prefix="bench-compact-", dir=a.dir))
    try:
        src = base / "src"
        t0 = time.perf_counter()
        size = make_tree(src, a.files)
        print(f"{a.files} files, {size / 1e6:.1f} MB (generated in {time.perf_counter() - t0:.1f} s); "
              f"workers={a.workers}, best of {a.rounds}; load {os.getloadavg()[0]:.2f}")
        best = {name: float("inf") for name in CONTENDERS}
        for _ in range(a.rounds):
            for name, fn in CONTENDERS.items():
                dst = base / f"out-{name}"
                shutil.rmtree(dst, ignore_errors=True)
                t = time.perf_counter()
                fn(src, dst, a.workers)
                best[name] = min(best[name], time.perf_counter() - t)
                shutil.rmtree(dst)
        print(f"{'contender':10} {'seconds':>8} {'MB/s':>8} {'vs compact':>10}")
        for name, s in best.items():
            print(f"{name:10} {s:8.3f} {size / 1e6 / s:8.1f} {s / best['compact']:9.2f}x")
            if a.json:
                print(json.dumps({"contender": name, "files": a.files, "bytes": size, "seconds": round(s, 4),
                                  "workers": a.workers}))
        print(f"load {os.getloadavg()[0]:.2f} after")
    finally:
        shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

