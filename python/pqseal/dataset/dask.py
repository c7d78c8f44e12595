"""The dask.distributed executor: a ``distributed.Client``, or a scheduler address to
connect to (TLS settings from ``security=`` or Dask's configuration:
``distributed.comm.tls.*``, e.g. ``DASK_DISTRIBUTED__COMM__TLS__CA_FILE``).

The driver and the workers must see the same file system at the same paths (a shared or
network file system): the driver lists the tree, journals and checks outputs; workers
read and write the files. ``workers`` (default: the cluster's worker threads) bounds the
files in flight: two tasks per worker thread.

The job's keys are scattered once to every worker (``broadcast=True``, not hashed into a
task key) and imported once per worker process. A Dask task seals a few files in turn
(:func:`batches`): with a task per file, scheduling, messages and result round trips
cost several ms per file (measured: 13 ms per 4.5 MB file against 8 ms in a plain loop),
work the worker's event loop does beside the file's own (the same GIL) while the driver
waits. The driver collects every finished task's results in one round trip and releases
the task (a worker lost afterwards does not make Dask run it again). Keys travel only
over an encrypted connection: the scheduler's address must be ``tls://`` (or
``inproc://``, the same process); anything else is refused unless
``allow_insecure=True``. A worker that dies mid-task has its tasks rescheduled by Dask
on the others; a task can run twice without harm (temporary file + rename). When the job
ends every worker drops (and closes) its copy of the keys.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from ..errors import InsecureTransport
from .keys import Paired
from .report import FileResult
from .worker import Task, run_batch

SECURE_SCHEMES = ("tls://", "inproc://")
WAIT_SECONDS = 0.5
BATCH_FILES = 8             # files per Dask task, at most ...
BATCH_BYTES = 128 << 20     # ... and no more bytes than this (a larger file goes alone)


def batches(tasks: list[Task], workers: int) -> list[list[Task]]:
    """Consecutive files grouped into Dask tasks: up to :data:`BATCH_FILES` files and
    :data:`BATCH_BYTES` bytes, and no bigger than an even share among ``workers`` (so the
    last files of a job still spread over every worker)."""
    per = max(1, min(BATCH_FILES, -(-len(tasks) // max(1, workers))))
    out: list[list[Task]] = []
    size = 0
    for t in tasks:
        if not out or len(out[-1]) >= per or size + t.size > BATCH_BYTES:
            out.append([])
            size = 0
        out[-1].append(t)
        size += t.size
    return out


@dataclass(frozen=True, eq=False)
class Part:
    """One file of a Dask task: the task's future and the file's place in it."""

    future: Any
    index: int

    def done(self) -> bool:
        return bool(self.future.done())


class DaskExecutor:
    name = "dask"

    def __init__(self, executor, workers: int | None, *, allow_insecure: bool = False, security=None):
        from distributed import Client

        if isinstance(executor, str):
            self._client = Client(executor, security=security) if security is not None else Client(executor)
            self._owned = True
        elif isinstance(executor, Client):
            self._client, self._owned = executor, False
        else:
            raise TypeError(f"executor must be 'threads', 'processes', a distributed.Client or a scheduler address, "
                            f"not {type(executor).__name__}")
        self.address = str(getattr(self._client.scheduler, "address", ""))
        self.allow_insecure = allow_insecure
        nthreads = sum(w.get("nthreads", 1) for w in self._client.scheduler_info()["workers"].values())
        self.workers = workers or nthreads or 1
        # two tasks per worker thread: the next one waits on the worker while the driver
        # takes in a result and refills (a queued task costs a worker only its Task records)
        self.window = 2 * BATCH_FILES * self.workers
        self._shipped = None
        self._job = uuid.uuid4().hex[:12]
        self._results: dict = {}      # a task's FileResults (gathered by wait()), by task key

    @property
    def secure(self) -> bool:
        return self.address.startswith(SECURE_SCHEMES)

    def check(self, *, keys_travel: bool) -> None:
        if keys_travel and not self.secure and not self.allow_insecure:
            raise InsecureTransport(f"the Dask scheduler {self.address} is not reached over TLS: the job's keys "
                                    "would travel in the clear; use a tls:// scheduler (distributed.security."
                                    "Security) or pass allow_insecure=True (CLI: --allow-insecure-scheduler)")

    def start(self, keys: Paired) -> None:
        self.check(keys_travel=bool(keys.sides()))
        shipped = keys.ship(self._job)
        self._shipped = self._client.scatter(shipped, broadcast=True, hash=False)

    def submit(self, tasks: list[Task]) -> list["Part"]:
        """The files as Dask tasks of a few files each (:func:`batches`), one handle per
        file."""
        parts = []
        for group in batches(tasks, self.workers):
            future = self._client.submit(run_batch, group, self._shipped, pure=False,
                                         key=f"pqseal-{group[0].kind}-{self._job}-{uuid.uuid4().hex[:8]}")
            parts += [Part(future, i) for i in range(len(group))]
        return parts

    def wait(self, parts):
        from distributed import wait

        futures = list({id(p.future): p.future for p in parts}.values())
        try:
            wait(futures, timeout=WAIT_SECONDS, return_when="FIRST_COMPLETED")
        except TimeoutError:
            pass
        fetch = [f for f in futures if f.status == "finished" and f.key not in self._results]
        if fetch:       # one round trip for every result that is ready, not one per task
            try:
                self._results.update(zip([f.key for f in fetch], self._client.gather(fetch)))
            except Exception:   # a result lost with its worker: result() reports its files
                fetch = []
            for f in fetch:     # taken: a worker lost now must not have Dask run the task again
                f.release()
        return {p for p in parts if p.future.key in self._results or p.done()}

    def result(self, part: "Part", task: Task) -> FileResult:
        from .executors import lost

        future = part.future
        results = self._results.get(future.key)
        if results is None:
            if future.status == "cancelled":
                return FileResult(task.rel, task.size, reason="cancelled")
            try:
                results = self._results[future.key] = future.result()
            except Exception as exc:     # KilledWorker after too many worker deaths, a lost connection
                return lost(task, exc)
            future.release()
        res = results[part.index]
        results[part.index] = None       # taken: the list goes once every file's result is
        if not any(results):
            del self._results[future.key]
        return res

    def cancel(self, parts) -> None:
        self._client.cancel(list({id(p.future): p.future for p in parts}.values()))

    def close(self) -> None:
        if self._shipped is not None:
            from .worker import forget

            self._shipped.release()
            self._shipped = None
            try:   # the keys leave the workers' memory with the job
                self._client.run(forget, self._job)
            except Exception:   # a worker gone: its keys went with it
                pass
        if self._owned:
            self._client.close()
