#!/usr/bin/env python3
"""The transparent layer's benchmarks in one run: ``ParquetWriter`` (bench_writer.py),
the plaintext view (bench_view.py), the sealing sink (bench_sink.py) and the polars
bridge (bench_polars.py), one after the other, each side by side with its reference.
Prints the issue's ratios with their goals (PASS/MISS) and writes a bar plot of them.

    python benchmarks/bench_io.py                 # about 6 minutes
    python benchmarks/bench_io.py --quick         # smaller inputs, about 2 minutes
    python benchmarks/bench_io.py --json          # the ratios as JSON lines too
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
MiB = 1 << 20


@dataclass(frozen=True)
class Ratio:
    what: str
    value: float
    goal: str          # e.g. ">= 0.8"
    unit: str = "x"

    @property
    def met(self) -> bool:
        op, bound = self.goal.split()
        return self.value >= float(bound) if op == ">=" else self.value <= float(bound)


def _run(script: str, args: list[str]) -> list[dict]:
    """The JSON objects a benchmark prints on stdout (its table goes to stderr)."""
    r = subprocess.run([sys.executable, str(HERE / script), "--json", *args], capture_output=True, text=True)
    sys.stderr.write(r.stderr)
    if r.returncode not in (0, 1):          # 1: a benchmark's own --strict-like verdict
        raise SystemExit(f"{script} failed with exit status {r.returncode}")
    return [json.loads(line) for line in r.stdout.splitlines() if line.startswith("{")]


def writer(quick: bool) -> list[Ratio]:
    (res,) = _run("bench_writer.py", ["--quick"] if quick else [])
    w = res["writers"]
    out = [Ratio("writer: pqseal.ParquetWriter speed / pyarrow's encrypted writer",
                 w["pyarrow-encrypted"]["seconds"] / w["pqseal"]["seconds"], ">= 1.0"),
           Ratio("writer: pqseal.ParquetWriter time / pyarrow's unencrypted writer",
                 w["pqseal"]["seconds"] / w["pyarrow-plain"]["seconds"], "<= 1.10")]
    r = res.get("rss")
    if r:
        grow = (r["peak_rss"] - r["baseline_rss"]) / MiB
        out.append(Ratio(f"writer: peak RSS growth writing {r['file_bytes'] / (1 << 30):.1f} GiB / (2 row groups "
                         "encoded + 64 MiB)", grow / (2 * r["row_group_encoded_bytes"] / MiB + 64), "<= 1.0"))
        out.append(Ratio("writer: the same / (2 row groups in Arrow + 64 MiB)",
                         grow / (2 * r["row_group_arrow_bytes"] / MiB + 64), "<= 1.0"))
    return out


def view(quick: bool) -> list[Ratio]:
    rows = {r["case"]: r for r in _run("bench_view.py", ["--mib", "64"] if quick else [])}

    def speed(ref: str, case: str) -> float:
        return rows[ref]["seconds"] / rows[case]["seconds"]

    return [Ratio("view: pyarrow full read, speed / plaintext file", speed("pyarrow full / plaintext file",
                                                                          "pyarrow full / view"), ">= 0.8"),
            Ratio("view: polars full read, speed / plaintext file", speed("polars full / plaintext file",
                                                                         "polars full / view"), ">= 0.8"),
            Ratio("view: polars full read, speed / plaintext behind a Python file (ceiling)",
                  speed("polars full / plaintext Python file", "polars full / view"), ">= 0.8"),
            Ratio("view: pyarrow 1 of 20 columns, speed-up over a full read",
                  speed("pyarrow full / view", "pyarrow 1 of 20 / view"), ">= 5"),
            Ratio("view: pyarrow 1 of 20 columns, fraction of the file decrypted",
                  rows["pyarrow 1 of 20 / view"]["decrypted_fraction"], "<= 0.10", "")]


def sink(quick: bool) -> list[Ratio]:
    rows = _run("bench_sink.py", ["--mb", "64", "--rounds", "3"] if quick else [])
    out = []
    what = {"sink": "(fsync, as pqseal's default)", "sink-nofsync": "(no fsync, as the plain write)"}
    for r in rows:
        if r["case"] in what:
            out.append(Ratio(f"sink: {r['writer']} into the sink {what[r['case']]}, time / into a plain file",
                             r["ratio_to_plain"], "<= 1.20"))
            out.append(Ratio(f"sink: {r['writer']} into the sink {what[r['case']]}, CPU / into a plain file",
                             r["cpu_ratio_to_plain"], "<= 1.20"))
    return out


def polars(quick: bool) -> list[Ratio]:
    rows = {(r["op"], r["case"]): r for r in _run("bench_polars.py", ["--rows", "1000000"] if quick else [])}
    base = rows["read", "plaintext"]["seconds"]
    return [Ratio(f"polars bridge: read {case}, speed / plaintext", base / r["seconds"], ">= 0.9")
            for (op, case), r in rows.items() if op == "read" and case.startswith("kms")]


def plot(ratios: list[Ratio], path: str) -> str | None:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed (pip install matplotlib)"
    fig, ax = plt.subplots(figsize=(11, 0.45 * len(ratios) + 1.5))
    y = range(len(ratios))
    ax.barh(list(y), [r.value for r in ratios], color=["tab:green" if r.met else "tab:red" for r in ratios])
    for i, r in enumerate(ratios):
        ax.plot([float(r.goal.split()[1])] * 2, [i - 0.4, i + 0.4], color="black", linewidth=2)
    ax.set_yticks(list(y), [r.what for r in ratios], fontsize=8)
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.set_xlabel("ratio (black bar: the goal; green: met, red: missed)")
    ax.set_title("pqseal transparent layer: one run")
    fig.tight_layout()
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    fig.savefig(path, dpi=110)
    return None


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="smaller inputs (about 2 minutes)")
    ap.add_argument("--only", default="writer,view,sink,polars", help="comma-separated subset")
    ap.add_argument("--plot", default=os.path.join("bench-out", "io.png"))
    ap.add_argument("--json", action="store_true", help="the ratios as JSON lines on stdout")
    a = ap.parse_args(argv)
    parts = {"writer": writer, "view": view, "sink": sink, "polars": polars}
    ratios: list[Ratio] = []
    for name in a.only.split(","):
        ratios += parts[name](a.quick)
    print(f"\n{'ratio':92} {'value':>8} {'goal':>9}")
    for r in ratios:
        print(f"{r.what:92} {r.value:8.3f} {r.goal:>9} {'PASS' if r.met else 'MISS'}")
    if a.json:
        for r in ratios:
            print(json.dumps({**asdict(r), "met": r.met}))
    problem = plot(ratios, a.plot)
    print(f"plot: {a.plot}" if problem is None else f"no plot: {problem}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
