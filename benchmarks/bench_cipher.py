#!/usr/bin/env python3
"""The cipher benchmark with its anchors and targets (the repository's side of ``pqseal bench cipher``).

``pqseal.bench.cipher`` (shipped) measures pqseal's batch ciphers and the ``cryptography``
peer. This script runs that measurement together with two out-of-process anchors, then
prints the project's target ratios with PASS/MISS:

* ``raw-ipsecmb``: ``<repo>/../shared/perf/raw_ipsecmb.c`` (intel-ipsec-mb's own loop, the
  CPU limit the targets refer to), compiled with gcc and run once, when present;
* ``openssl-speed``: ``openssl speed -evp aes-128-gcm`` at 64 and 16384 bytes, when the
  ``openssl`` binary exists.

Usage: ``python benchmarks/bench_cipher.py [options]`` (``--help``; see benchmarks/README.md).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

try:
    import pqseal.bench.cipher as bench
except ImportError:  # pqseal not installed: use the source tree (needs the built _native module)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "python"))
    import pqseal.bench.cipher as bench
from pqseal.bench.cipher import ALGORITHMS, MiB, Result, fmt_rate, fmt_size

ANCHORS = ("raw-ipsecmb", "openssl-speed")
OPENSSL_SPEED_SIZES = (64, 16384)
RAW_ANCHOR = Path(__file__).resolve().parents[1] / ".." / "shared" / "perf" / "raw_ipsecmb.c"


# ---- out-of-process anchors ----------------------------------------------------------------


def run_raw_anchor(src: Path) -> tuple[list[Result], str]:
    """Compile and run the intel-ipsec-mb C anchor once; it prints
    ``gcm_1MiB_GB/s ctr_1MiB_GB/s gcm_64B_Mmodules/s`` (best of its own 3 runs)."""
    cc = os.environ.get("CC") or shutil.which("gcc") or shutil.which("cc")
    if not cc:
        return [], "no C compiler (gcc)"
    with tempfile.TemporaryDirectory(prefix="pqseal-bench-") as tmp:
        exe = os.path.join(tmp, "raw_ipsecmb")
        try:
            cp = subprocess.run([cc, "-O2", str(src), "-o", exe, "-lIPSec_MB"], capture_output=True,
                                text=True, timeout=120)
        except (OSError, subprocess.SubprocessError) as exc:
            return [], f"compiling failed: {exc}"
        if cp.returncode != 0:
            return [], "compiling failed (is libipsec-mb-dev installed?): " + cp.stderr.strip()[-300:]
        try:
            rp = subprocess.run([exe], capture_output=True, text=True, timeout=120)
        except (OSError, subprocess.SubprocessError) as exc:
            return [], f"running failed: {exc}"
    try:
        gcm_gb, ctr_gb, gcm64_m = (float(x) for x in rp.stdout.split()[:3])
    except ValueError:
        return [], f"unexpected output {rp.stdout!r} (exit {rp.returncode})"
    note = "best of 3 x 0.3 s (anchor's own method)"
    return [
        Result("raw-ipsecmb", "ipsecmb", "gcm", 128, MiB, 1, gcm_gb * 1e9 / MiB, gcm_gb, note=note),
        Result("raw-ipsecmb", "ipsecmb", "ctr", 128, MiB, 1, ctr_gb * 1e9 / MiB, ctr_gb, note=note),
        Result("raw-ipsecmb", "ipsecmb", "gcm", 128, 64, 1, gcm64_m * 1e6, gcm64_m * 1e6 * 64 / 1e9, note=note),
    ], ""


_SPEED_HUMAN = re.compile(r"^aes-128-gcm\s+([0-9.]+)k\s*$", re.I | re.M)
_SPEED_MR = re.compile(r"^\+F:\d+:aes-128-gcm:([0-9.]+)", re.I | re.M)


def parse_openssl_speed(text: str) -> float | None:
    """Bytes per second from ``openssl speed`` output (human form in 1000s of bytes/s,
    or ``-mr`` form in bytes/s)."""
    m = _SPEED_HUMAN.search(text)
    if m:
        return float(m.group(1)) * 1000.0
    m = _SPEED_MR.search(text)
    return float(m.group(1)) if m else None


def run_openssl_speed(sizes: Iterable[int] = OPENSSL_SPEED_SIZES) -> tuple[list[Result], str]:
    exe = shutil.which("openssl")
    if not exe:
        return [], "no openssl binary"
    out, notes = [], []
    try:
        version = subprocess.run([exe, "version"], capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        version = "?"
    for size in sizes:
        cmd = [exe, "speed", "-evp", "aes-128-gcm", "-seconds", "1", "-bytes", str(size)]
        try:
            cp = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        except (OSError, subprocess.SubprocessError) as exc:
            notes.append(f"{size} B: {exc}")
            continue
        bps = parse_openssl_speed(cp.stdout)
        if bps is None:
            notes.append(f"{size} B: no aes-128-gcm result line (exit {cp.returncode}): "
                         + (cp.stderr or cp.stdout).strip()[-200:])
            continue
        out.append(Result("openssl-speed", "openssl", "gcm", 128, size, 1, bps / size, bps / 1e9,
                          note=version))
    return out, "; ".join(notes)


# ---- target ratios -------------------------------------------------------------------------


def _get(results, impl, alg, size, *, backend=None, threads=1, key_bits=128) -> Result | None:
    cands = [r for r in results if r.impl == impl and r.algorithm == alg and r.module_bytes == size
             and r.threads == threads and r.key_bits == key_bits and (backend is None or r.backend == backend)]
    return max(cands, key=lambda r: r.gb_per_s) if cands else None


@dataclass
class Ratio:
    label: str
    target: float
    value: float | None
    detail: str

    @property
    def status(self) -> str:
        if self.value is None:
            return "n/a"
        return "PASS" if self.value >= self.target else "MISS"


def compute_ratios(results: Sequence[Result], missing: dict[str, str]) -> list[Ratio]:
    """The project targets, all AES-128 and one thread unless stated."""
    out: list[Ratio] = []

    def ratio(label, target, num: Result | None, den: Result | None, field: str, num_what: str, den_what: str):
        if num is None or den is None:
            why = [f"no {what}" + (f" ({missing[what.split()[0]]})" if what.split()[0] in missing else "")
                   for r, what in ((num, num_what), (den, den_what)) if r is None]
            out.append(Ratio(label, target, None, "; ".join(why)))
            return
        a, b = getattr(num, field), getattr(den, field)
        unit = "GB/s" if field == "gb_per_s" else "modules/s"
        fa, fb = (f"{a:.2f}", f"{b:.2f}") if field == "gb_per_s" else (fmt_rate(a), fmt_rate(b))
        nb = f" [{num.backend}]" if num.impl == "pqseal" else ""
        out.append(Ratio(label, target, a / b if b else None, f"{fa}{nb} vs {fb} {unit}"))

    for alg in ALGORITHMS:
        ratio(f"pqseal {alg.upper()} 1 MiB (best backend) / raw-ipsecmb {alg.upper()} 1 MiB", 0.9,
              _get(results, "pqseal", alg, MiB), _get(results, "raw-ipsecmb", alg, MiB), "gb_per_s",
              f"pqseal {alg} 1 MiB", "raw-ipsecmb anchor")
    ratio("pqseal GCM 1 MiB (best backend) / cryptography GCM 1 MiB", 1.1,
          _get(results, "pqseal", "gcm", MiB), _get(results, "cryptography", "gcm", MiB), "gb_per_s",
          "pqseal gcm 1 MiB", "cryptography gcm 1 MiB")
    ratio("pqseal GCM 64 B modules/s (best backend) / cryptography GCM 64 B", 8.0,
          _get(results, "pqseal", "gcm", 64), _get(results, "cryptography", "gcm", 64), "modules_per_s",
          "pqseal gcm 64 B", "cryptography gcm 64 B")
    for alg in ALGORITHMS:
        for backend in ("ipsecmb", "openssl"):
            ratio(f"pqseal {backend} {alg.upper()} 1 MiB: 2 threads / 1 thread", 1.8,
                  _get(results, "pqseal", alg, MiB, backend=backend, threads=2),
                  _get(results, "pqseal", alg, MiB, backend=backend, threads=1), "gb_per_s",
                  f"pqseal {backend} {alg} 1 MiB 2 threads", f"pqseal {backend} {alg} 1 MiB 1 thread")
            two = _get(results, "pqseal", alg, MiB, backend=backend, threads=2)
            one = _get(results, "pqseal", alg, MiB, backend=backend, threads=1)
            if out[-1].value is not None and two and one and two.cpu_util and one.cpu_util:
                # GB per CPU-second, 2 threads vs 1: about 1.0 if the split costs nothing and
                # a low 2-thread ratio only reflects a second core taken by another process
                eff = (two.gb_per_s / two.cpu_util) / (one.gb_per_s / one.cpu_util)
                out[-1].detail += f" (2 threads used {two.cpu_util:.2f} CPUs; per CPU-second {eff:.2f}x)"
    for size in (16384, 64):
        ratio(f"pqseal openssl GCM {fmt_size(size)} / openssl-speed {size}", 0.95,
              _get(results, "pqseal", "gcm", size, backend="openssl"),
              _get(results, "openssl-speed", "gcm", size), "gb_per_s",
              f"pqseal openssl gcm {fmt_size(size)}", f"openssl-speed {size}")
    return out




def print_ratios(ratios: Sequence[Ratio], file=sys.stdout) -> None:
    w = max(len(r.label) for r in ratios)
    print("Ratios (AES-128, 1 thread unless stated; 'best backend' = the faster pqseal backend):", file=file)
    for r in ratios:
        val = "   n/a" if r.value is None else f"{r.value:6.2f}"
        print(f"  {r.label.ljust(w)}  {val}  target >= {r.target:<4g}  {r.status:<4}  {r.detail}", file=file)


# ---- main ----------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    p = bench.build_parser("bench_cipher.py", impls=bench.IMPLS + ANCHORS)
    p.description = ("Measure pqseal's batch ciphers against cryptography, a raw intel-ipsec-mb C loop and "
                     "`openssl speed`, and print the target ratios.")
    p.add_argument("--raw-anchor", metavar="PATH", default=str(RAW_ANCHOR),
                   help="raw_ipsecmb.c to compile and run (default: <repo>/../shared/perf/raw_ipsecmb.c)")
    p.add_argument("--strict", action="store_true", help="exit with status 1 if a ratio misses its target")
    args = p.parse_args(argv)
    anchors: list[Result] = []
    missing: dict[str, str] = {}
    # Out-of-process anchors first: they run alone, single-threaded.
    if "raw-ipsecmb" in args.impl:
        src = Path(args.raw_anchor).expanduser()
        rs, why = run_raw_anchor(src) if src.is_file() else ([], f"no {src} (use --raw-anchor PATH)")
        anchors += rs
        if why:
            missing["raw-ipsecmb"] = why
    if "openssl-speed" in args.impl:
        rs, why = run_openssl_speed()
        anchors += rs
        if why:
            missing["openssl-speed"] = why
    results = bench.run(args, measured_elsewhere=anchors)
    if "cryptography" in args.impl and not any(r.impl == "cryptography" for r in results):
        missing["cryptography"] = "not measured (not installed, or --threads without 1)"
    for impl, why in missing.items():
        print(f"warning: {impl} skipped: {why}", file=sys.stderr)
    ratios = compute_ratios(results, missing)
    print(file=sys.stderr if args.json else sys.stdout)
    print_ratios(ratios, file=sys.stderr if args.json else sys.stdout)
    return 1 if args.strict and any(r.status == "MISS" for r in ratios) else 0


if __name__ == "__main__":
    sys.exit(main())
