"""Key usage and usage limits of a dataset job's seals, counted and checked on the driver.

Workers wrap DEKs under the key session's KEKs without a KMS, so the KMS never sees
them. Where the KMS counts usage (the local keystore's ``seal_usage``, the protocol
:class:`~pqseal.keys.CryptoFactory` uses for single files), the driver does it for them,
file by file, before dispatching each: it checks the limits of the master key versions
whose KEKs will wrap the file's DEKs and counts those DEKs (encrypt and rekey: one per
footer and column key of the config resolved for the file; rotate: every DEK of the
file, re-wrapped under its master key's newest version). When a sealed file comes back
(encrypt, rekey), its file, output bytes and the most modules one DEK encrypted are
counted too. A rotation counts its DEKs only, as ``pqseal rotate FILE`` does: it seals
no data.

A file over a ``refuse`` limit fails alone with ``KeyUsageLimitExceeded`` (nothing is
written for it); ``warn`` limits give one report warning per key version and limit per
job. ``max-bytes`` with files in parallel: the source size of every dispatched file not
back yet counts as sealed for its versions (reserved), so a file is refused once the
bytes sealed plus those in flight reach the limit, as if the files ran one by one (a
file that then fails gives its reservation back, but a file refused meanwhile stays
refused: retry it with ``retry_failed=True``).
"""

from __future__ import annotations

from typing import Any, Callable

from ..errors import PqsealError
from .report import FileResult
from .worker import Task


class JobUsage:
    """The driver's usage bookkeeping for one job (one thread: the dispatch loop)."""

    def __init__(self, seal_usage: Callable[..., Any], wrappings: Callable[[Task], list], count_files: bool):
        self._seal_usage = seal_usage
        self._wrappings = wrappings       # task -> the write KEK material of each of its DEKs
        self._count_files = count_files
        self._reserved: dict[tuple[str, int], int] = {}   # (key id, version) -> bytes in flight
        self._held: dict[str, tuple[Any, int]] = {}        # relative path -> (SealUsage, bytes reserved)
        self.warnings: dict[tuple[str, int, str], str] = {}   # (key id, version, limit) -> message

    @classmethod
    def of(cls, kind: str, keys) -> "JobUsage | None":
        """For a job's keys: None unless it wraps with a key session whose KMS counts usage."""
        session = keys.read if kind == "rotate" else keys.write if kind in ("encrypt", "rekey") else None
        if session is None or not hasattr(session, "kms_seal_usage"):
            return None      # explicit keys (FixedKeys): no master key, nothing to count
        seal_usage = session.kms_seal_usage()
        if seal_usage is None:
            return None
        if kind == "rotate":
            return cls(seal_usage, lambda t: session.rewrap_wrappings(t.src), count_files=False)
        return cls(seal_usage, lambda t: session.write_wrappings(None if t.partition is None else dict(t.partition)),
                   count_files=True)

    def admit(self, t: Task) -> str | None:
        """Check ``t``'s limits and count its DEKs: None when it may go (its bytes
        reserved until :meth:`done`), else the one line it fails with."""
        try:
            usage = self._seal_usage(self._wrappings(t), reserved=self._reserved)
        except PqsealError as exc:       # KeyUsageLimitExceeded, or the key's version gone
            return " ".join(f"{type(exc).__name__}: {exc}".split())
        for r in usage.reached:
            self.warnings.setdefault((r.key_id, r.version, r.limit), r.message())
        for v in usage.versions:
            self._reserved[v] = self._reserved.get(v, 0) + t.size
        self._held[t.rel] = (usage, t.size)
        return None

    def done(self, t: Task, res: FileResult) -> None:
        """``t`` came back: its reservation is released and, sealed, the file counted."""
        held = self._held.pop(t.rel, None)
        if held is None:
            return
        usage, size = held
        for v in usage.versions:
            self._reserved[v] -= size
        if self._count_files and res.error is None and res.reason is None:
            usage.sealed(res.output_bytes, res.max_dek_modules)
