"""What a dataset job did: per-file records and the job's totals, as an object and as JSON.

``Report.ok``, ``.failed`` and ``.skipped`` are :class:`Files`: lists of
:class:`FileResult` (path, bytes, error, ...) that also compare equal to an int, their
count, so ``len(r.ok) == 3`` and ``r.ok == 3`` both hold.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class FileResult:
    """One data file: ``path`` relative to the source root, ``bytes`` read from it,
    ``error`` (one line, None when it succeeded), ``reason`` why it was skipped,
    ``detail`` the operation's own result (verify's report, inspect's description),
    ``max_dek_modules`` the most modules one DEK of a sealed output encrypted (encrypt,
    rekey: the driver counts it in the key usage)."""

    path: str
    bytes: int = 0
    error: str | None = None
    reason: str | None = None
    seconds: float = 0.0
    output_bytes: int = 0
    detail: Any = None
    warnings: list[str] = field(default_factory=list)
    max_dek_modules: int = 0

    def to_json(self) -> dict:
        d = asdict(self)
        return {k: v for k, v in d.items() if v not in (None, [], 0, 0.0) or k in ("path", "bytes")}


class Files(list):
    """A list of :class:`FileResult` that compares equal to an int (its length) too."""

    def __eq__(self, other):
        if isinstance(other, int) and not isinstance(other, bool):
            return len(self) == other
        return list.__eq__(self, other)

    def __ne__(self, other):
        return not self == other

    __hash__ = None


@dataclass
class Report:
    """The outcome of one dataset job (see the module docstring for ``ok``/``failed``/``skipped``).

    ``bytes``: bytes of the data files processed in this run (their sources);
    ``kms_calls``: KMS calls the driver made (the workers make none); ``ignored``: the
    tree's files that are not data, with the reason; ``warnings``: job-level notes (a
    dropped ``_metadata``, files not rotatable, engine warnings)."""

    kind: str
    src: str
    dst: str | None
    executor: str
    workers: int
    ok: Files = field(default_factory=Files)
    failed: Files = field(default_factory=Files)
    skipped: Files = field(default_factory=Files)
    ignored: list[tuple[str, str]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    kms_calls: int = 0
    seconds: float = 0.0
    interrupted: bool = False
    journal: str | None = None

    @property
    def bytes(self) -> int:
        return sum(r.bytes for r in self.ok)

    @property
    def success(self) -> bool:
        return not self.failed and not self.interrupted

    def to_json(self) -> dict:
        return {"kind": self.kind, "src": self.src, "dst": self.dst, "executor": self.executor,
                "workers": self.workers, "seconds": round(self.seconds, 3), "kms_calls": self.kms_calls,
                "counts": {"ok": len(self.ok), "failed": len(self.failed), "skipped": len(self.skipped),
                           "ignored": len(self.ignored)},
                "bytes": self.bytes, "interrupted": self.interrupted, "journal": self.journal,
                "ok": [r.to_json() for r in self.ok], "failed": [r.to_json() for r in self.failed],
                "skipped": [r.to_json() for r in self.skipped],
                "ignored": [{"path": p, "reason": why} for p, why in self.ignored], "warnings": self.warnings}

    def finish(self, started: float, path=None) -> "Report":
        """At the job's end: its seconds since ``started`` (``time.monotonic()``), the
        files in path order, and the JSON report written to ``path`` (if given)."""
        self.seconds = time.monotonic() - started
        for files in (self.ok, self.failed, self.skipped):
            files.sort(key=lambda r: r.path)
        if path is not None:
            self.write(path)
        return self

    def write(self, path) -> None:
        """The JSON report, written atomically."""
        from .._io import atomic_write

        atomic_write(path, (json.dumps(self.to_json(), indent=2, default=str) + "\n").encode(), mode=0o644)
