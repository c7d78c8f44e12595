"""The dask.distributed executor: a ``distributed.Client``, or a scheduler address to
connect to (TLS settings from ``security=`` or Dask's configuration:
``distributed.comm.tls.*``, e.g. ``DASK_DISTRIBUTED__COMM__TLS__CA_FILE``).

The driver and the workers must see the same file system at the same paths (a shared or
network file system): the driver lists the tree, journals and checks outputs; workers
read and write the files. ``workers`` (default: the cluster's worker threads) bounds the
files in flight: two tasks per worker thread.

The job's keys are scattered once to every worker (``broadcast=True``, not hashed into a
task key) and imported once per worker process. A Dask task seals several files in turn
(:func:`batches`): each task costs a few ms of CPU beside its files' own (scheduling,
messages, the result's round trip), on the worker's event loop (the same GIL as the
file's work) and on the driver, which on a small machine shares the cores with the
workers (measured, 64 files of 34 MB on one worker: 25 tasks took 0.17-0.25 s of the
worker's event loop and 0.24-0.33 s of the driver's CPU, 6 tasks 0.10-0.14 s and
0.11-0.14 s, and the job 11 % less time). The driver collects every finished task's
results in one round trip and releases the task (a worker lost afterwards does not make
Dask run it again). Keys travel only over an encrypted connection: the scheduler's
address must be ``tls://`` (or ``inproc://``, the same process); anything else is
refused unless ``allow_insecure=True``. A worker that dies mid-task has its tasks
rescheduled by Dask on the others; a task can run twice without harm (temporary file +
rename). When the job ends every worker drops (and closes) its copy of the keys.

Sealing is CPU-bound when the disk keeps up, and a Dask worker's event loop shares the
GIL with the task: Dask's statistical profiler (a stack sample of the running task every
10 ms) took about half of that loop's CPU and cost about 5 % of a job's time in measured
runs; clusters that do this work can turn it off (``distributed.worker.profile.enabled:
false``).
"""

from __future__ import annotations

import math
import uuid
from dataclasses import dataclass
from typing import Any

from ..errors import InsecureTransport
from .keys import Paired
from .report import FileResult
from .worker import Task, run_batch

SECURE_SCHEMES = ("tls://", "inproc://")
WAIT_SECONDS = 0.5
# A Dask task holds at most about BATCH_FILES files or BATCH_BYTES bytes (a task's cost
# is one file per BATCH_FILES plus its bytes per BATCH_BYTES, at most 1): some 0.4 s of
# work at 1.3 GB/s, against a few ms of Dask's own per task.
BATCH_FILES = 64
BATCH_BYTES = 512 << 20


def batches(tasks: list[Task], workers: int) -> list[list[Task]]:
    """Consecutive files grouped into Dask tasks of about equal cost (:data:`BATCH_FILES`,
    :data:`BATCH_BYTES`), as few as that bound allows but a multiple of ``workers`` (so
    the files spread evenly over every worker, the last ones too). A file larger than
    :data:`BATCH_BYTES` may end up alone; order is kept."""
    cost = [1 / BATCH_FILES + t.size / BATCH_BYTES for t in tasks]
    total = sum(cost)
    k = max(1, math.ceil(total - 1e-9))
    workers = max(1, workers)
    k = min(len(tasks), -(-k // workers) * workers)
    out: list[list[Task]] = []
    last = -1
    done = 0.0
    for t, c in zip(tasks, cost):
        group = min(k - 1, int(k * (done + c / 2) / total))   # the group holding the file's middle
        done += c
        if group != last:
            out.append([])
            last = group
        out[-1].append(t)
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
        # about two tasks per worker thread: the next one waits on the worker while the
        # driver takes in a result and refills (a queued task costs a worker only its Task
        # records); files of BATCH_BYTES / BATCH_FILES bytes or more fill a task sooner
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
