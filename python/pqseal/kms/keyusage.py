"""Usage counters of the local keystore's key versions: wraps, unwraps, first and last use.

Kept beside the keystore in ``PATH.usage`` (JSON, 0600), not in the keystore itself, so a
wrap never rewrites the sealed store. Counts are batched in memory and merged into the
file under the keystore's lock at most once a second, at process exit and on
:meth:`UsageCounters.flush`; a process killed with SIGKILL loses its last second of
counts. The file is statistics, not evidence: it is not authenticated (the audit log is
the tamper-evident record)."""

from __future__ import annotations

import atexit
import contextlib
import datetime as _dt
import json
import os
import threading
import time
import weakref
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


def read_usage(store_path: str) -> dict:
    """``{key id: {version (str): {"wraps", "unwraps", "first_use", "last_use"}}}``; {} if none."""
    try:
        with open(usage_path(store_path), "rb") as f:
            doc = json.loads(f.read().decode("utf-8"))
    except FileNotFoundError:
        return {}
    except (ValueError, UnicodeDecodeError):
        return {}     # statistics only: a damaged file starts counting afresh
    return doc if isinstance(doc, dict) else {}


class UsageCounters:
    """The counts of one process for one keystore, merged into ``PATH.usage`` under ``lock``."""

    def __init__(self, store_path: str, lock: Callable[[], ContextManager]):
        self.store_path = store_path
        self._lock = lock
        self._mutex = threading.Lock()
        self._pending: dict = {}
        self._flushed = time.monotonic()
        _live.add(self)

    def count(self, key_id: str, version: int, op: str) -> None:
        """``op`` is "wraps" or "unwraps"."""
        now = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
        with self._mutex:
            c = self._pending.setdefault(key_id, {}).setdefault(
                str(version), {"wraps": 0, "unwraps": 0, "first_use": now, "last_use": now})
            c[op] += 1
            c["last_use"] = now
            due = time.monotonic() - self._flushed >= FLUSH_SECONDS
        if due:
            self.flush()

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
            doc = read_usage(self.store_path)
            for kid, versions in pending.items():
                for ver, c in versions.items():
                    old = doc.setdefault(kid, {}).get(ver)
                    if old is None:
                        doc[kid][ver] = c
                    else:
                        old.update(wraps=int(old.get("wraps", 0)) + c["wraps"],
                                   unwraps=int(old.get("unwraps", 0)) + c["unwraps"],
                                   first_use=min(old.get("first_use") or c["first_use"], c["first_use"]),
                                   last_use=max(old.get("last_use") or c["last_use"], c["last_use"]))
            atomic_write(usage_path(self.store_path), json.dumps(doc, indent=1, sort_keys=True).encode(), mode=0o600)
