"""What a worker does with one file: a :class:`Task` in, a :class:`FileResult` out.

The same function runs in a driver thread, a local worker process and a Dask worker.
It takes keys only from the job's key object (no KMS client is ever built here) and
passes explicit properties to :mod:`pqseal.api`. A failure of the file (a pqseal error,
an OSError, a ValueError) comes back as a record, never as an exception, so one bad
file never stops the others. Outputs are written by the engine under a temporary name
and renamed into place, so running a task twice (a rescheduled Dask task) is harmless.
"""

from __future__ import annotations

import os
import select
import threading
import time
from dataclasses import dataclass
from typing import Any

from .. import _cancel
from .._io import pid_alive
from ..errors import PqsealError
from .keys import Shipped
from .report import FileResult

KINDS = ("encrypt", "decrypt", "rekey", "verify", "inspect", "rotate", "compact")


@dataclass(frozen=True)
class Task:
    kind: str
    src: str
    dst: str | None
    rel: str
    size: int
    overwrite: bool = False     # the output is this job's (or the caller allowed replacing it)
    with_keys: bool = True      # inspect: open encrypted footers with the job's keys
    partition: tuple[tuple[str, str], ...] | None = None   # values for master key id templates (the driver's)
    group: Any = None           # compact: the files merged into ``dst`` (a compact_merge.Group)


def execute(task: Task, keys) -> FileResult:
    """Run one task; every per-file failure becomes ``FileResult.error``."""
    from .. import api

    t0 = time.monotonic()
    res = FileResult(task.rel, task.size)
    try:
        _cancel.check()
        if task.dst is not None:
            os.makedirs(os.path.dirname(task.dst) or ".", exist_ok=True)
        partition = None if task.partition is None else dict(task.partition)
        if task.kind == "encrypt":
            stats = api.encrypt_file(task.src, task.dst, keys.encryption_properties(task.dst, partition),
                                     overwrite=task.overwrite)
        elif task.kind == "decrypt":
            stats = api.decrypt_file(task.src, task.dst, keys.decryption_properties(task.src),
                                     overwrite=task.overwrite)
        elif task.kind == "rekey":
            stats = api.rekey_file(task.src, task.dst, keys.decryption_properties(task.src),
                                   keys.encryption_properties(task.dst, partition), overwrite=task.overwrite)
        elif task.kind == "verify":
            stats = None
            res.detail = api.verify(task.src, keys.decryption_properties(task.src))
        elif task.kind == "inspect":
            stats = None
            res.detail = api.inspect(task.src, keys.decryption_properties(task.src) if task.with_keys else None)
        elif task.kind == "rotate":
            stats = None
            res.output_bytes = _rotate(task.src, keys)
        elif task.kind == "compact":
            from .compact_merge import merge_group

            stats = None
            res.detail, res.output_bytes, res.max_dek_modules = merge_group(task.group, task.dst, keys)
        else:
            raise ValueError(f"unknown task kind {task.kind!r}")
        if stats is not None:
            res.output_bytes = stats.bytes_out
            res.max_dek_modules = stats.max_dek_modules
            res.warnings = list(stats.warnings)
    except _cancel.Cancelled:
        res.reason = "cancelled"
    except (PqsealError, OSError, ValueError) as exc:
        from ..cli.group import one_line

        res.error = one_line(exc, task.src, task.dst)
        res.detail = getattr(exc, "report", None)    # verify: every failing module
    res.seconds = time.monotonic() - t0
    return res


def _rotate(path: str, keys) -> int:
    """Re-wrap a file's keys under the session's write KEKs: its external key material
    replaced atomically, or its internal material by a footer-only rewrite in place
    (journaled; the data bytes untouched). Returns the bytes written."""
    from ..keys.material import KeyMaterial
    from ..keys.rotation import rotate_file

    def rewrap(m: KeyMaterial) -> KeyMaterial:
        return KeyMaterial.parse(keys.rewrap_material({"k": m.to_json(None)})["k"])

    return rotate_file(path, keys.decryption_properties(path), rewrap).bytes_written


# ---- worker processes (local pool and Dask): the job's keys, imported once per process ----

_jobs: dict[str, object] = {}
_jobs_lock = threading.Lock()


_busy = threading.Lock()      # held while a local pool worker runs a task
CLEANUP_SECONDS = 30           # how long an orphaned worker lets its cancelled file clean up


def install(shipped: Shipped, driver_pid: int | None = None) -> None:
    """Import the job's keys in this process (a pool initializer). ``driver_pid``: a
    local pool's driver, which this worker follows (:func:`follow_driver`)."""
    with _jobs_lock:
        if shipped.token not in _jobs:
            _jobs[shipped.token] = shipped.open()
    if driver_pid is not None:
        follow_driver(driver_pid)


def follow_driver(pid: int) -> None:
    """End this worker process when the driver process ``pid`` is gone. A driver killed
    with SIGKILL leaves the workers of its pool waiting on the pool's queue for ever
    (each holds both ends of the queue's pipe, so none sees an end of file), keys in
    memory. A daemon thread waits for the driver's exit (a pidfd; polling where there is
    none), cancels the file in progress (its temporary file is removed on the way out),
    lets it finish and exits."""
    def watch() -> None:
        try:
            fd = os.pidfd_open(pid)
        except (AttributeError, OSError):
            fd = None
        if fd is not None:
            select.select([fd], [], [])       # readable once the process has ended
        else:
            while pid_alive(pid):
                time.sleep(1)
        _cancel.request()
        _busy.acquire(timeout=CLEANUP_SECONDS)
        os._exit(1)

    threading.Thread(target=watch, name="pqseal-follow-driver", daemon=True).start()


def forget(token: str) -> None:
    """Drop (and close) a finished job's keys in this process."""
    with _jobs_lock:
        keys = _jobs.pop(token, None)
    if keys is not None:
        keys.close()  # type: ignore[attr-defined]


def jobs_held() -> list[str]:
    """The key objects this process holds, by type (tests: nothing outlives its job)."""
    with _jobs_lock:
        return sorted(f"{type(k.read).__name__}/{type(k.write).__name__}" for k in _jobs.values())  # type: ignore


def run_installed(task: Task, token: str) -> FileResult:
    """A task of a local worker process whose initializer installed the keys."""
    with _busy:
        return execute(task, _jobs[token])


def run_batch(tasks: list[Task], shipped: Shipped) -> list[FileResult]:
    """A Dask task: a few files in turn; ``shipped`` is the job's scattered keys
    (imported once per worker)."""
    install(shipped)
    keys = _jobs[shipped.token]
    return [execute(t, keys) for t in tasks]
