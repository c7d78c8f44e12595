"""The dask.distributed executor: a ``distributed.Client``, or a scheduler address to
connect to (TLS settings from ``security=`` or Dask's configuration:
``distributed.comm.tls.*``, e.g. ``DASK_DISTRIBUTED__COMM__TLS__CA_FILE``).

The driver and the workers must see the same file system at the same paths (a shared or
network file system): the driver lists the tree, journals and checks outputs; workers
read and write the files. ``workers`` (default: the cluster's worker threads) bounds the
files in flight, ``2 × workers``.

The job's keys are scattered once to every worker (``broadcast=True``, not hashed into a
task key) and imported once per worker process; each file is one task. Keys travel only
over an encrypted connection: the scheduler's address must be ``tls://`` (or
``inproc://``, the same process); anything else is refused unless
``allow_insecure=True``. A worker that dies mid-task has its tasks rescheduled by Dask
on the others; a task can run twice without harm (temporary file + rename). When the job
ends every worker drops (and closes) its copy of the keys.
"""

from __future__ import annotations

import uuid

from ..errors import InsecureTransport
from .keys import Paired
from .report import FileResult
from .worker import Task, run_shipped

SECURE_SCHEMES = ("tls://", "inproc://")
WAIT_SECONDS = 0.5


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
        self._shipped = None
        self._job = uuid.uuid4().hex[:12]

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

    def submit(self, task: Task):
        return self._client.submit(run_shipped, task, self._shipped, pure=False,
                                   key=f"pqseal-{task.kind}-{self._job}-{uuid.uuid4().hex[:8]}")

    def wait(self, futures):
        from distributed import wait

        try:
            wait(futures, timeout=WAIT_SECONDS, return_when="FIRST_COMPLETED")
        except TimeoutError:
            pass
        return {f for f in futures if f.done()}

    def result(self, future, task: Task) -> FileResult:
        from .executors import lost

        if future.status == "cancelled":
            return FileResult(task.rel, task.size, reason="cancelled")
        try:
            return future.result()
        except Exception as exc:     # KilledWorker after too many worker deaths, a lost connection
            return lost(task, exc)

    def cancel(self, futures) -> None:
        self._client.cancel(list(futures))

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
