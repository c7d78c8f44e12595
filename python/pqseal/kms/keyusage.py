"""Usage counters of the local keystore's key versions.

Per version: ``wraps`` (KMS wrap calls: KEKs under double wrapping, DEKs under single
wrapping), ``deks`` (DEKs wrapped under it, directly or through a KEK), ``unwraps``,
``files`` and ``bytes`` (files sealed with a DEK it wrapped, and their sizes),
``max_dek_modules`` (the most modules one such DEK encrypted in a file: the 2^32 GCM
bound applies per DEK), ``first_use`` and ``last_use``.

Kept beside the keystore in ``PATH.usage`` (JSON, 0600), not in the keystore itself, so a
wrap never rewrites the sealed store. Counts are batched in memory and merged into the
file under the keystore's lock at most once a second, at process exit and on
:meth:`UsageCounters.flush`; a process killed with SIGKILL loses its last second of
counts. The file is statistics, not evidence: it is not authenticated (the audit log is
the tamper-evident record). A file that cannot be read, or is damaged, counts from zero
with a warning; a damaged entry of one version is dropped."""

from __future__ import annotations

import atexit
import contextlib
import datetime as _dt
import json
import os
import threading
import time
import warnings
import weakref
from dataclasses import dataclass, field
from typing import Callable, ContextManager

from .._io import atomic_write

FLUSH_SECONDS = 1.0
_live: "weakref.WeakSet[UsageCounters]" = weakref.WeakSet()


def _flush_all() -> None:
    for counters in list(_live):
        with contextlib.suppress(ValueError):
            counters.flush()


def _forget_in_child() -> None:
    for counters in list(_live):     # the parent flushes what it counted before the fork
        counters._pending.clear()


atexit.register(_flush_all)
os.register_at_fork(after_in_child=_forget_in_child)


def usage_path(store_path: str) -> str:
    return store_path + ".usage"


SUMS = ("wraps", "deks", "unwraps", "files", "bytes")
MAXIMA = ("max_dek_modules",)


def empty() -> dict:
    """The counts of a version never used."""
    return {**{k: 0 for k in SUMS + MAXIMA}, "first_use": None, "last_use": None}


def merged(old: dict | None, new: dict) -> dict:
    """Counts ``old`` and ``new`` of one version added up (sums, maxima, first/last use)."""
    out = empty()
    for c in (old or {}, new):
        for k in SUMS:
            out[k] += int(c.get(k) or 0)
        for k in MAXIMA:
            out[k] = max(out[k], int(c.get(k) or 0))
        for k, pick in (("first_use", min), ("last_use", max)):
            if c.get(k):
                out[k] = pick(out[k], c[k]) if out[k] else c[k]
    return out


def read_usage(store_path: str, *, warn: bool = True) -> dict:
    """``{key id: {version (str): counts}}`` (see the module's docstring); {} if none.
    ``warn``: a warning when the file is unreadable or damaged (its counts are lost)."""
    path = usage_path(store_path)
    try:
        with open(path, "rb") as f:
            doc = json.loads(f.read().decode("utf-8"))
    except FileNotFoundError:
        return {}
    except OSError as exc:      # statistics only: never fails a wrap or a listing
        if warn:
            warnings.warn(f"key usage counts {path} unreadable ({exc.strerror}): counted from zero",
                          stacklevel=2)
        return {}
    except (ValueError, UnicodeDecodeError):
        doc = None
    if not isinstance(doc, dict):
        if warn:
            warnings.warn(f"key usage counts {path} damaged: counted from zero (the next count replaces the file)",
                          stacklevel=2)
        return {}
    return {kid: {ver: c for ver, c in versions.items() if _well_formed(c)}
            for kid, versions in doc.items() if isinstance(versions, dict)}


def _well_formed(c) -> bool:
    """Whether ``c`` is one version's counts as :func:`merged` writes them; a damaged
    entry (edited by hand, a wrong type) is dropped like a damaged file."""
    if not isinstance(c, dict):
        return False
    if any(isinstance(c.get(k, 0), bool) or not isinstance(c.get(k, 0), int) or c.get(k, 0) < 0
           for k in SUMS + MAXIMA):
        return False
    return all(c.get(k) is None or isinstance(c.get(k), str) for k in ("first_use", "last_use"))


class UsageCounters:
    """The counts of one process for one keystore, merged into ``PATH.usage`` under ``lock``."""

    def __init__(self, store_path: str, lock: Callable[[], ContextManager]):
        self.store_path = store_path
        self._lock = lock
        self._mutex = threading.Lock()
        self._pending: dict = {}
        self._flushed = time.monotonic()
        self._seen: dict | None = None      # the file's counts as last read (for totals)
        self._seen_at = 0.0
        _live.add(self)

    def count(self, key_id: str, version: int, op: str, n: int = 1) -> None:
        """Add ``n`` to the sum ``op`` ("wraps", "deks", "unwraps", "files", "bytes")."""
        self.add(key_id, version, {op: n})

    def add(self, key_id: str, version: int, counts: dict) -> None:
        """Merge ``counts`` (sums and maxima by name) into this version's pending counts."""
        now = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
        with self._mutex:
            versions = self._pending.setdefault(key_id, {})
            versions[str(version)] = merged(versions.get(str(version)), {**counts, "first_use": now, "last_use": now})
            due = time.monotonic() - self._flushed >= FLUSH_SECONDS
        if due:
            self.flush()

    def totals(self, key_id: str, version: int) -> dict:
        """This version's counts: the file's (re-read at most once a second) and this
        process's not yet flushed."""
        with self._mutex:
            if self._seen is None or time.monotonic() - self._seen_at >= FLUSH_SECONDS:
                self._seen, self._seen_at = read_usage(self.store_path), time.monotonic()
            pending = self._pending.get(key_id, {}).get(str(version), {})
            seen = self._seen.get(key_id)
            seen = seen.get(str(version)) if isinstance(seen, dict) else None
            return merged(seen if isinstance(seen, dict) else None, pending)

    def flush(self) -> None:
        """Merge this process's counts into the file. Counting never fails a wrap or a
        listing: when the file or the lock cannot be written (a read-only keystore
        directory), the counts are dropped."""
        with self._mutex:
            pending, self._pending = self._pending, {}
            self._flushed = time.monotonic()
        if pending:
            with contextlib.suppress(OSError):
                self._merge(pending)

    def _merge(self, pending: dict) -> None:
        with self._lock():
            doc = read_usage(self.store_path, warn=False)     # may run at exit; readers warned
            for kid, versions in pending.items():
                mine = doc.setdefault(kid, {})
                if not isinstance(mine, dict):
                    mine = doc[kid] = {}
                for ver, c in versions.items():
                    old = mine.get(ver)
                    mine[ver] = merged(old if isinstance(old, dict) else None, c)
            atomic_write(usage_path(self.store_path), json.dumps(doc, indent=1, sort_keys=True).encode(), mode=0o600)
        with self._mutex:
            self._seen, self._seen_at = doc, time.monotonic()


@dataclass
class SealUsage:
    """What one file's seal counts once it is committed: the file and its bytes for every
    master key version that wrapped one of its DEKs (``versions``), and the most modules
    one DEK encrypted. ``warnings``: usage-limit warnings given when its DEKs were wrapped
    (the first time in this process); ``reached``: every limit (warn mode) they reached,
    for callers that report per job (:class:`~pqseal.kms.limits.Reached`)."""

    counters: UsageCounters
    versions: list[tuple[str, int]]
    warnings: list[str] = field(default_factory=list)
    reached: list = field(default_factory=list)

    def sealed(self, nbytes: int, max_dek_modules: int) -> None:
        for key_id, version in self.versions:
            self.counters.add(key_id, version, {"files": 1, "bytes": nbytes, "max_dek_modules": max_dek_modules})
