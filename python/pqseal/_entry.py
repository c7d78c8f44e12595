"""The ``pqseal`` program's entry point (console script and ``python -m pqseal``).

SIGINT and SIGTERM are answered from the first moment the program runs Python code of
its own, before the command line's modules are imported: a signal in that time is
recorded as a cancellation request, which the command then honours (it stops before
writing anything and exits 128 + the signal number with one line), instead of the
process dying silently. The full handling is pqseal.cli.interrupt's.

numpy loads OpenBLAS, which starts a thread per core when it is loaded; the command line
does no linear algebra, and that start cost about 40 ms of CPU per process (a third of
numpy's import), so the command line's modules are imported with
``OPENBLAS_NUM_THREADS=1`` unless the user set it. The variable is removed again
afterwards: processes the command starts inherit the user's environment.

When the command succeeded and no other thread is left, the process ends without the
interpreter's teardown (freeing every module and object one by one, 20-30 ms of a
``pqseal encrypt``): the ``atexit`` handlers run and the standard streams are flushed
first, which is all of the teardown that has an effect outside the process (every file
the command wrote is closed, synced and renamed by then).
"""

from __future__ import annotations

import atexit
import os
import signal
import sys
import threading

from . import _cancel

_BLAS_THREADS = "OPENBLAS_NUM_THREADS"


def _early(signum, frame) -> None:
    _cancel.request(signum)


def run() -> None:
    """Run the command line; ends with SystemExit (the exit code contract of pqseal.cli.group)."""
    for s in (signal.SIGINT, signal.SIGTERM):
        signal.signal(s, _early)
    ours = _BLAS_THREADS not in os.environ
    if ours:
        os.environ[_BLAS_THREADS] = "1"
    try:
        from .cli import main as cli
    finally:
        if ours:
            os.environ.pop(_BLAS_THREADS, None)
    cli()


def _others_running() -> bool:
    main = threading.main_thread()
    return any(t is not main and not t.daemon and t.is_alive() for t in threading.enumerate())


def main() -> None:
    try:
        run()
    except SystemExit as exc:
        if exc.code not in (None, 0) or _others_running():
            raise
        atexit._run_exitfuncs()   # what the teardown would run first; each runs once
        try:
            for stream in (sys.stdout, sys.stderr):
                if stream is not None:
                    stream.flush()
        except (OSError, ValueError):
            raise exc from None   # the teardown reports it, as without this path
        os._exit(0)
