"""Run the fuzz targets for a while and report; exit 1 on any finding.

    python tests/fuzz/run.py --seconds 60              # what .ci/fuzz runs in CI
    python tests/fuzz/run.py --seconds 3600 --out DIR  # a longer run (see README.md)

Each target runs in a worker process (atheris/libFuzzer) with an address-space limit
(``RLIMIT_AS``), libFuzzer's per-input ``-timeout`` and ``-rss_limit_mb``. A worker that
dies (signal, timeout, out of memory) is a finding: the input it was on is saved as
the reproducer, and a new worker goes on with the time left. Python-level findings are
recorded by the workers themselves (``harness.Recorder``). The corpus under
``OUT/corpus/`` is kept between runs.
"""

from __future__ import annotations

import argparse
import glob
import hashlib
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import time
import warnings

import harness

TARGETS = {  # name -> (script, share of the time, libFuzzer options)
    "thrift": ("fuzz_thrift.py", 1, ["-max_len=16384"]),
    "pme": ("fuzz_pme.py", 2, ["-max_len=512", "-len_control=0"]),
}
_CRASH_KINDS = [("timeout", "ERROR: libFuzzer: timeout"), ("out-of-memory", "ERROR: libFuzzer: out-of-memory"),
                ("out-of-memory", "MemoryError"), ("signal", "deadly signal"),
                ("uncaught-exception", "Uncaught Python exception")]


def _thrift_corpus(directory: str, seeds: list[str]) -> None:
    """Real Thrift structures (footers, page headers, indexes) of the seed files."""
    import oracle
    import pme_model
    import pme_seeds

    os.makedirs(directory, exist_ok=True)
    for path in seeds:
        with open(path, "rb") as f:
            model = pme_model.parse(f.read(), pme_seeds.FOOTER_KEY, pme_seeds.COLUMN_KEYS)
        blobs = {("FileMetaData", pme_model.encode("FileMetaData", model.fmd))}
        blobs |= {("ColumnMetaData", pme_model.encode("ColumnMetaData", meta))
                  for _, meta in model.column_meta.values()}
        blobs |= {(m.struct, model.open(m)) for m in model.modules if m.struct and m.kind != pme_model.FOOTER}
        for name, body in blobs:
            data = bytes([oracle.STRUCTS.index(name), 0]) + body
            with open(os.path.join(directory, hashlib.sha1(data).hexdigest()), "wb") as f:
                f.write(data)


def _pme_corpus(directory: str) -> None:
    """Mutation programs of the PME target start long enough to make several edits."""
    import random

    os.makedirs(directory, exist_ok=True)
    if os.listdir(directory):
        return
    rng = random.Random(8)
    for i in range(32):
        with open(os.path.join(directory, f"seed-{i}"), "wb") as f:
            f.write(rng.randbytes(rng.randrange(16, 256)))


def _limits(mem_mb: int):
    def apply():
        if mem_mb > 0:  # 0: no limit (AddressSanitizer reserves terabytes of address space)
            resource.setrlimit(resource.RLIMIT_AS, (mem_mb << 20, mem_mb << 20))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    return apply


def _execs(stats_path: str) -> int:
    try:
        with open(stats_path) as f:
            return json.load(f)["execs"]
    except (OSError, ValueError, KeyError):
        return 0


def run_target(name: str, seconds: float, out: str, args) -> dict:
    script, _, opts = TARGETS[name]
    corpus = os.path.join(out, "corpus", name)
    os.makedirs(corpus, exist_ok=True)
    env = dict(os.environ, PQSEAL_FUZZ_OUT=out)  # pqseal as installed (or as PYTHONPATH says)
    stats = os.path.join(out, f"stats-{name}.json")
    crashes, execs, runs = [], 0, 0
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 2:
        log = os.path.join(out, f"log-{name}-{runs}.txt")
        before = _execs(stats)
        cmd = [sys.executable, os.path.join(harness.HERE, script), corpus, f"-max_total_time={int(left)}",
               f"-timeout={args.timeout}", f"-rss_limit_mb={args.rss_mb}", "-print_final_stats=1",
               f"-artifact_prefix={os.path.join(out, 'crashes', name)}-", *opts]
        os.makedirs(os.path.join(out, "crashes"), exist_ok=True)
        with open(log, "wb") as lf:
            p = subprocess.Popen(cmd, stdout=lf, stderr=subprocess.STDOUT, env=env, cwd=out,
                                 preexec_fn=_limits(args.mem_mb))
            try:
                rc = p.wait(timeout=left + args.timeout + 120)
            except subprocess.TimeoutExpired:
                p.kill()
                rc = p.wait()
        runs += 1
        with open(log, errors="replace") as lf:
            text = lf.read()
        done = re.findall(r"stat::number_of_executed_units: (\d+)", text)
        ran = int(done[-1]) if done else max(0, _execs(stats) - before)
        execs += ran
        if rc == 0:
            break
        if ran == 0:  # the worker could not start: a broken setup, not a finding to retry
            crashes.append({"key": f"{name}:worker-failed-to-start:exit-{rc}", "path": None, "log": log,
                            "detail": "\n".join(text.strip().splitlines()[-15:])})
            break
        kind = next((k for k, marker in _CRASH_KINDS if marker in text), f"exit-{rc}")
        crashes.append(_save_crash(name, kind, out, text, log))
    return {"target": name, "seconds": round(seconds), "execs": execs, "runs": runs, "crashes": crashes}


def _save_crash(name: str, kind: str, out: str, text: str, log: str) -> dict:
    """Keep the input a dead worker was running (the PME target's current file, or the
    artifact libFuzzer wrote) under findings/."""
    if name == "pme":
        import fuzz_pme
        src = os.path.join(out, "work-pme", fuzz_pme.CURRENT)
        suffix = ".parquet"
    else:
        arts = sorted(glob.glob(os.path.join(out, "crashes", f"{name}-*")), key=os.path.getmtime)
        src = arts[-1] if arts else None
        suffix = ".bin"
    path = None
    if src and os.path.exists(src):
        with open(src, "rb") as f:
            data = f.read()
        path = os.path.join(out, "findings", f"{name}-{kind}-{hashlib.sha1(data).hexdigest()[:12]}{suffix}")
        shutil.copyfile(src, path)
    tail = "\n".join(text.strip().splitlines()[-15:])
    return {"key": f"{name}:worker-died:{kind}", "path": path, "detail": tail, "log": log}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=60, help="total time, shared by the targets")
    ap.add_argument("--targets", default=",".join(TARGETS), help="comma-separated: " + ", ".join(TARGETS))
    ap.add_argument("--out", default=os.path.join(harness.REPO, "build-fuzz"), help="output directory")
    ap.add_argument("--timeout", type=int, default=10, help="seconds per input before it counts as a hang")
    ap.add_argument("--rss-mb", type=int, default=2048, help="libFuzzer's RSS limit")
    ap.add_argument("--mem-mb", type=int, default=4096, help="the worker's address-space limit (RLIMIT_AS; 0: none)")
    args = ap.parse_args()
    try:
        import atheris  # noqa: F401
    except ImportError:
        print("fuzz: atheris is not installed (pip install atheris; it is in pqseal's test extra)", file=sys.stderr)
        return 2
    names = [n for n in args.targets.split(",") if n]
    unknown = set(names) - set(TARGETS)
    if unknown:
        ap.error(f"unknown target(s) {', '.join(sorted(unknown))}")
    out = os.path.abspath(args.out)
    os.environ["PQSEAL_FUZZ_OUT"] = out
    for stale in glob.glob(os.path.join(out, "stats-*.json")) + glob.glob(os.path.join(out, "findings-*.jsonl")) \
            + glob.glob(os.path.join(out, "log-*.txt")):
        os.unlink(stale)
    shutil.rmtree(os.path.join(out, "findings"), ignore_errors=True)
    harness.out_dir()
    import pme_seeds
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        seeds = pme_seeds.build(os.path.join(out, "seeds"))
    if "thrift" in names:
        _thrift_corpus(os.path.join(out, "corpus", "thrift"), seeds)
    if "pme" in names:
        _pme_corpus(os.path.join(out, "corpus", "pme"))
    shares = sum(TARGETS[n][1] for n in names)
    results = [run_target(n, args.seconds * TARGETS[n][1] / shares, out, args) for n in names]
    findings = []
    for r in results:
        r["exec_per_s"] = round(r["execs"] / max(r["seconds"], 1), 1)
        jl = os.path.join(out, f"findings-{r['target']}.jsonl")
        if os.path.exists(jl):
            with open(jl) as f:
                findings += [json.loads(line) for line in f if line.strip()]
        findings += r["crashes"]
        print(f"fuzz {r['target']}: {r['execs']} execs in {r['seconds']} s ({r['exec_per_s']}/s), "
              f"{r['runs']} worker run(s), {len(r['crashes'])} worker death(s)")
    with open(os.path.join(out, "summary.json"), "w") as f:
        json.dump({"results": results, "findings": findings}, f, indent=1)
    for fd in findings:
        last = (fd.get("detail") or "").strip().splitlines()[-1:] or [""]
        print(f"FINDING {fd['key']}\n  reproducer: {fd.get('path')}\n  {last[0][:300]}")
    print(f"fuzz: {len(findings)} finding(s); summary in {os.path.join(out, 'summary.json')}")
    return 1 if findings else 0


if __name__ == "__main__":
    sys.exit(main())
