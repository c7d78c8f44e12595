"""Where tasks run: driver threads, local worker processes, or a Dask cluster (``dask.py``).

Every executor has the same small surface for the driver: ``check(keys_travel=)``
(refuse before any work), ``start(keys)``, ``window`` (files the driver keeps in
flight), ``submit(tasks)`` -> a future per task (Dask: a handle per file of a task of
several files), ``wait(futures)`` -> those done (returns within a second so the driver
can react to an interruption), ``result(future)`` -> :class:`FileResult` (an executor-level
failure, such as a worker process that died, becomes a record with ``reason="lost"``:
the file is left "started" in the journal and redone on a rerun), ``cancel(futures)``
and ``close()``. Worker processes receive the job's keys once, at start-up.
"""

from __future__ import annotations

import concurrent.futures as cf
from concurrent.futures.process import BrokenProcessPool
import dataclasses
import multiprocessing
import os
import sys
import uuid

from .keys import Paired
from .report import FileResult
from .worker import Task, execute, install, run_installed

WAIT_SECONDS = 0.5


def default_workers() -> int:
    return os.cpu_count() or 1


def lost(task: Task, exc: BaseException) -> FileResult:
    msg = " ".join(str(exc).split())
    return FileResult(task.rel, task.size, error=f"{type(exc).__name__}: {msg}" if msg else type(exc).__name__,
                      reason="lost")


class ThreadExecutor:
    """Threads of the driver's process: keys are used in place, nothing is exported."""

    name = "threads"

    def __init__(self, workers: int | None):
        self.workers = workers or default_workers()
        self.window = max(4, 2 * self.workers)
        self._pool: cf.ThreadPoolExecutor | None = None
        self._keys: Paired | None = None

    def check(self, *, keys_travel: bool) -> None:
        """Refuse a job whose keys could not travel safely (nothing to check on this machine)."""

    def start(self, keys: Paired) -> None:
        self._keys = keys
        self._pool = cf.ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="pqseal-dataset")

    def submit(self, tasks: list[Task]) -> list:
        assert self._pool is not None
        return [self._pool.submit(execute, t, self._keys) for t in tasks]

    def wait(self, futures):
        done, _ = cf.wait(futures, timeout=WAIT_SECONDS, return_when=cf.FIRST_COMPLETED)
        return done

    def result(self, future, task: Task) -> FileResult:
        try:
            return future.result()
        except cf.CancelledError:
            return FileResult(task.rel, task.size, reason="cancelled")
        except Exception as exc:   # a bug in the worker function, not a file's failure
            return lost(task, exc)

    def cancel(self, futures) -> None:
        for f in futures:
            f.cancel()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None


class ProcessExecutor(ThreadExecutor):
    """A pool of local worker processes (forkserver where available, else spawn: never
    fork, which would copy the driver's KMS clients and keys). The keys are exported
    once and imported by each worker at start-up (the pool's initializer)."""

    name = "processes"

    def start(self, keys: Paired) -> None:
        methods = multiprocessing.get_all_start_methods()
        ctx = multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")
        shipped = keys.ship(uuid.uuid4().hex)
        self._token = shipped.token
        self._pool = cf.ProcessPoolExecutor(max_workers=self.workers, mp_context=ctx,  # type: ignore[assignment]
                                            initializer=install, initargs=(shipped, os.getpid()))

    def submit(self, tasks: list[Task]) -> list:
        assert self._pool is not None
        return [self._pool.submit(run_installed, t, self._token) for t in tasks]

    def result(self, future, task: Task) -> FileResult:
        out = super().result(future, task)
        if out.reason == "lost" and isinstance(future.exception(), BrokenProcessPool) \
                and getattr(sys.modules["__main__"], "__file__", None):
            # the classic cause: worker processes import the main script, which starts the job again
            out = dataclasses.replace(out, error=f"{out.error} (a script that starts a job with "
                                      "executor='processes' at its top level must guard it with "
                                      "`if __name__ == '__main__':`, as worker processes import it)")
        return out


def make_executor(executor, workers: int | None, *, allow_insecure: bool = False, security=None):
    """``"threads"``, ``"processes"``, a ``distributed.Client`` or a scheduler address."""
    if security is not None and not (isinstance(executor, str) and "://" in executor):
        raise ValueError("security= applies to a scheduler address (a Client brings its own)")
    if executor == "threads":
        return ThreadExecutor(workers)
    if executor == "processes":
        return ProcessExecutor(workers)
    if isinstance(executor, str) and "://" not in executor:
        raise ValueError(f"executor must be 'threads', 'processes', a distributed.Client or a scheduler address "
                         f"such as tls://host:8786, not {executor!r}")
    from .dask import DaskExecutor

    return DaskExecutor(executor, workers, allow_insecure=allow_insecure, security=security)
