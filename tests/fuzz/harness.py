"""What the fuzz targets share: where their files go, counting executions, and keeping
one reproducer per distinct finding.

A target process is started by ``run.py`` with ``PQSEAL_FUZZ_OUT`` set to its output
directory; it writes ``stats-<target>.json`` there (executions so far, rewritten about
once a second, so the count survives a crash) and one reproducer per finding under
``findings/``. A finding is identified by where it happened (exception type and the
innermost pqseal frame, or the kind of mismatch), so a bug hit 10,000 times is kept once.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
TESTS = os.path.dirname(HERE)
REPO = os.path.dirname(TESTS)
for p in (HERE, TESTS):
    if p not in sys.path:
        sys.path.insert(0, p)


def out_dir() -> str:
    d = os.environ.get("PQSEAL_FUZZ_OUT") or os.path.join(REPO, "build-fuzz")
    os.makedirs(os.path.join(d, "findings"), exist_ok=True)
    return d


def where(exc: BaseException) -> str:
    """``file:line`` of the innermost frame inside pqseal (else the innermost frame)."""
    frames = traceback.extract_tb(exc.__traceback__)
    ours = [f for f in frames if f"{os.sep}pqseal{os.sep}" in f.filename]
    f = (ours or frames or [None])[-1]
    if f is None:
        return "?"
    return f"{f.filename.rsplit(os.sep + 'pqseal' + os.sep, 1)[-1]}:{f.lineno}"


class Recorder:
    """Counts executions and keeps the first reproducer of every distinct finding."""

    def __init__(self, target: str):
        self.target = target
        self.dir = out_dir()
        self.execs = 0
        self.start = time.monotonic()
        self._last_flush = 0.0
        self.stats_path = os.path.join(self.dir, f"stats-{target}.json")
        self.findings_path = os.path.join(self.dir, f"findings-{target}.jsonl")
        self.seen = set()
        if os.path.exists(self.findings_path):  # a restarted worker keeps its predecessor's findings
            with open(self.findings_path) as f:
                self.seen = {json.loads(line)["key"] for line in f if line.strip()}
        try:
            with open(self.stats_path) as f:
                self.execs_before = json.load(f)["execs"]
        except (OSError, ValueError, KeyError):
            self.execs_before = 0

    def tick(self) -> None:
        self.execs += 1
        now = time.monotonic()
        if now - self._last_flush >= 1.0:
            self.flush(now)

    def flush(self, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        self._last_flush = now
        tmp = self.stats_path + ".tmp"
        with open(tmp, "w") as f:
            json.dump({"target": self.target, "execs": self.execs_before + self.execs}, f)
        os.replace(tmp, self.stats_path)

    def finding(self, key: str, data: bytes, detail: str, suffix: str = ".bin") -> str | None:
        """Record a finding; returns the reproducer's path the first time ``key`` is seen."""
        if key in self.seen:
            return None
        self.seen.add(key)
        digest = hashlib.sha1(data).hexdigest()[:12]
        path = os.path.join(self.dir, "findings", f"{self.target}-{digest}{suffix}")
        with open(path, "wb") as f:
            f.write(data)
        with open(self.findings_path, "a") as f:
            f.write(json.dumps({"key": key, "path": path, "detail": detail[:2000]}) + "\n")
        print(f"FINDING {key}\n  reproducer: {path}\n  {detail.splitlines()[-1] if detail else ''}",
              file=sys.stderr, flush=True)
        return path


def describe(exc: BaseException) -> str:
    return "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
