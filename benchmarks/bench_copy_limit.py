#!/usr/bin/env python3
"""Sealing against the copy limit (issue 10, item 4): the floor of sealing a file is
copying it once, so pqseal is timed against ``cp`` plus ``fsync`` of the same bytes, in
turn, in one run.

    python benchmarks/bench_copy_limit.py             # ~0.5 GB file + 1,000 x 1 MB; a few minutes
    python benchmarks/bench_copy_limit.py --quick     # 128 MiB file + 200 x 1 MB
    python benchmarks/bench_copy_limit.py --json      # the results as one JSON object too

(a) One pyarrow-written Parquet file (``pqseal.bench.seal.generate``: snappy, 10 mixed
    columns, 1 MiB pages), in the page cache:
    - ``cp``: ``cp SRC DST && sync DST`` in a shell (GNU cp copies with
      ``copy_file_range``; ``sync FILE`` fsyncs the file);
    - ``pqseal CLI``: ``python -m pqseal encrypt SRC DST --footer-key-value K --uniform``
      as a whole process (interpreter start, imports, sealing, fsync of file and
      directory, exit); its peak RSS is taken in one more, untimed run under GNU time;
    - ``encrypt_file``: ``pqseal.encrypt_file(SRC, DST, EncryptionProperties(K))`` in
      this process.
(b) A dataset of N files of ~1 MB (pyarrow, 5 columns), in the page cache:
    - ``cp -r``: ``cp -r SRC DST && sync DST/* DST`` (fsync of every file and the directory);
    - ``pqseal CLI``: ``python -m pqseal encrypt SRC_DIR DST_DIR --footer-key-value K
      --uniform`` (directory mode, default jobs);
    - ``encrypt_file loop``: one ``encrypt_file`` per file in this process, one thread.

Each round runs every contender once, in turn, each on a fresh output (removed, then
``sync``, before the next contender starts); the table shows the median of the rounds and
ratios = cp time / pqseal time (goals: >= 0.8 for the file, >= 0.5 for the dataset).
The pqseal processes run with Python's bytecode cache on (``PYTHONPYCACHEPREFIX`` in the
work directory; ``PYTHONDONTWRITEBYTECODE`` removed) as an installed package does, after
one untimed warm-up. Generated data lives in ``--work-dir`` (default: a new temporary
directory, removed at the end unless ``--keep``); put it on the file system you mean to
measure (its type is printed: on tmpfs ``fsync`` costs nothing).
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
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
try:
    import pqseal
    from pqseal.bench.seal import _fs_type, _warm, generate
    from pqseal.format import EncryptionProperties
except ImportError:  # pqseal not installed: use the source tree (needs the built native modules)
    sys.path.insert(0, str(HERE.parent / "python"))
    import pqseal
    from pqseal.bench.seal import _fs_type, _warm, generate
    from pqseal.format import EncryptionProperties

KEY = bytes(range(16))
KEY_B64 = "AAECAwQFBgcICQoLDA0ODw=="
MB = 10 ** 6


def generate_dataset(directory: str, files: int, rows: int = 28_000) -> None:
    """``files`` pyarrow files of about 1 MB each (28,000 rows of 5 columns), all different."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    os.makedirs(directory, exist_ok=True)
    rng = np.random.default_rng(11)
    for i in range(files):
        t = pa.table({"id": np.arange(i * rows, (i + 1) * rows), "x": rng.random(rows), "y": rng.random(rows),
                      "k": rng.integers(0, 1 << 40, rows),
                      "s": pa.array(rng.integers(0, 1000, rows).astype(str))})
        pq.write_table(t, os.path.join(directory, f"part-{i:05d}.parquet"))


def _sync() -> None:
    subprocess.run(["sync"], check=True)


def _remove(path: str) -> None:
    if os.path.isdir(path):
        shutil.rmtree(path)
    elif os.path.exists(path):
        os.unlink(path)
    _sync()


def _env(work: str) -> dict:
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = os.path.join(work, "pycache")
    env["PYTHONPATH"] = os.pathsep.join([str(Path(pqseal.__file__).resolve().parents[1])]
                                        + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    return env


def _process(cmd: list[str], env: dict) -> float:
    """Wall seconds of one process."""
    t = time.perf_counter()
    r = subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    seconds = time.perf_counter() - t
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({r.returncode}): {r.stderr.decode(errors='replace').strip()}")
    return seconds


def _peak_rss(cmd: list[str], env: dict, work: str) -> int | None:
    """Peak RSS in bytes of one (untimed) run of ``cmd``, from GNU time (None without it).
    Not from wait4: on Linux a child forked from this process starts with this
    process's high-water mark, which is then what it reports."""
    gnu_time = shutil.which("time", path="/usr/bin:/bin")
    if gnu_time is None:
        return None
    out = os.path.join(work, "rss.txt")
    subprocess.run([gnu_time, "-f", "%M", "-o", out, *cmd], env=env, check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    with open(out) as f:
        return int(f.read().split()[-1]) * 1024


def _cli(src: str, dst: str) -> list[str]:
    return [sys.executable, "-m", "pqseal", "encrypt", src, dst, "--footer-key-value", KEY_B64, "--uniform"]


def _warm_tree(path: str) -> None:
    if os.path.isdir(path):
        for name in sorted(os.listdir(path)):
            _warm(os.path.join(path, name))
    else:
        _warm(path)


def run(args) -> dict:
    work = args.work_dir or tempfile.mkdtemp(prefix="pqseal-copy-limit-")
    os.makedirs(work, exist_ok=True)
    env = _env(work)
    enc = EncryptionProperties(KEY)
    big = os.path.join(work, "big.parquet")
    small = os.path.join(work, "small")
    if not os.path.exists(big):
        generate(big, args.gib)
    if not os.path.isdir(small):
        generate_dataset(small, args.files)
    _warm_tree(big)
    _warm_tree(small)
    out = os.path.join(work, "out")
    os.makedirs(out, exist_ok=True)
    file_bytes = os.path.getsize(big)
    set_bytes = sum(os.path.getsize(os.path.join(small, n)) for n in os.listdir(small))
    names = sorted(os.listdir(small))

    def loop(dst: str) -> None:
        os.makedirs(dst)
        for n in names:
            pqseal.encrypt_file(os.path.join(small, n), os.path.join(dst, n), enc)

    # warm-up (bytecode cache, first touch of memory), untimed
    _process(_cli(big, os.path.join(out, "warm.parquet")), env)
    _remove(os.path.join(out, "warm.parquet"))
    pqseal.encrypt_file(big, os.path.join(out, "warm.parquet"), enc)
    _remove(os.path.join(out, "warm.parquet"))

    rss = _peak_rss(_cli(big, os.path.join(out, "warm.parquet")), env, work)
    _remove(os.path.join(out, "warm.parquet"))
    times: dict[str, list[float]] = {k: [] for k in ("cp", "cli", "api", "cp -r", "cli dir", "api loop")}
    for r in range(args.rounds):
        dst = os.path.join(out, "f.parquet")
        t = time.perf_counter()
        subprocess.run(["sh", "-c", f'cp "{big}" "{dst}" && sync "{dst}"'], check=True)
        times["cp"].append(time.perf_counter() - t)
        _remove(dst)
        times["cli"].append(_process(_cli(big, dst), env))
        _remove(dst)
        t = time.perf_counter()
        pqseal.encrypt_file(big, dst, enc)
        times["api"].append(time.perf_counter() - t)
        _remove(dst)

        dst = os.path.join(out, "d")
        t = time.perf_counter()
        subprocess.run(["sh", "-c", f'cp -r "{small}" "{dst}" && sync "{dst}"/* "{dst}"'], check=True)
        times["cp -r"].append(time.perf_counter() - t)
        _remove(dst)
        times["cli dir"].append(_process(_cli(small, dst), env))
        _remove(dst)
        t = time.perf_counter()
        loop(dst)
        times["api loop"].append(time.perf_counter() - t)
        _remove(dst)
        if args.verbose:
            print(f"round {r + 1}: " + "  ".join(f"{k} {v[-1]:.3f}" for k, v in times.items()), file=sys.stderr)
    med = {k: statistics.median(v) for k, v in times.items()}
    result = {
        "fs": _fs_type(work), "file_bytes": file_bytes, "files": len(names), "dataset_bytes": set_bytes,
        "rounds": args.rounds, "load": os.getloadavg() if hasattr(os, "getloadavg") else None,
        "seconds": times, "median": med,
        "ratios": {"file: cp / pqseal CLI": med["cp"] / med["cli"],
                   "file: cp / encrypt_file": med["cp"] / med["api"],
                   "dataset: cp -r / pqseal CLI": med["cp -r"] / med["cli dir"],
                   "dataset: cp -r / encrypt_file loop": med["cp -r"] / med["api loop"]},
        "cli_peak_rss": rss,
    }
    if not args.keep and not args.work_dir:
        shutil.rmtree(work)
    return result


def report(res: dict) -> bool:
    med, ratios = res["median"], res["ratios"]
    fb, db = res["file_bytes"], res["dataset_bytes"]
    print(f"file system: {res['fs']}; {fb / MB:,.0f} MB file; {res['files']} files, {db / MB:,.0f} MB; "
          f"median of {res['rounds']} rounds; load average {res['load']}")
    print(f"{'contender':<46} {'seconds':>8} {'GB/s':>6} {'cp/x':>6}  goal")
    rows = [("(a) cp SRC DST && sync DST", med["cp"], fb, None, ""),
            ("(a) pqseal encrypt (CLI, whole process)", med["cli"], fb, ratios["file: cp / pqseal CLI"], ">= 0.8"),
            ("(a) pqseal.encrypt_file (in process)", med["api"], fb, ratios["file: cp / encrypt_file"], ""),
            ("(b) cp -r SRC DST && sync DST/* DST", med["cp -r"], db, None, ""),
            ("(b) pqseal encrypt SRC_DIR DST_DIR (CLI)", med["cli dir"], db, ratios["dataset: cp -r / pqseal CLI"],
             ">= 0.5"),
            ("(b) encrypt_file loop (in process, 1 thread)", med["api loop"], db,
             ratios["dataset: cp -r / encrypt_file loop"], "")]
    ok = True
    for name, s, b, ratio, goal in rows:
        verdict = ""
        if goal:
            met = ratio >= float(goal.split()[1])
            ok &= met
            verdict = f"{goal} {'PASS' if met else 'MISS'}"
        print(f"{name:<46} {s:>8.3f} {b / s / 1e9:>6.2f} {'' if ratio is None else f'{ratio:.2f}':>6}  {verdict}")
    if res["cli_peak_rss"] is not None:
        print(f"peak RSS of the CLI sealing the file (GNU time): {res['cli_peak_rss'] / (1 << 20):.0f} MiB")
    return ok


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--gib", type=float, default=0.5, help="size of the large file in GiB (default 0.5)")
    ap.add_argument("--files", type=int, default=1000, help="files of the dataset (default 1000)")
    ap.add_argument("--rounds", type=int, default=5, help="rounds, each contender once per round (default 5)")
    ap.add_argument("--quick", action="store_true", help="a 128 MiB file, 200 files, 3 rounds")
    ap.add_argument("--work-dir", help="where the data and outputs go (kept; default: a temporary directory)")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory")
    ap.add_argument("--json", action="store_true", help="print the results as one JSON object too")
    ap.add_argument("--strict", action="store_true", help="exit status 1 if a goal is missed")
    ap.add_argument("-v", "--verbose", action="store_true", help="each round's times on stderr")
    args = ap.parse_args(argv)
    if args.quick:
        args.gib, args.files, args.rounds = 0.125, 200, 3
    res = run(args)
    ok = report(res)
    if args.json:
        print(json.dumps(res))
    return 0 if ok or not args.strict else 1


if __name__ == "__main__":
    sys.exit(main())
