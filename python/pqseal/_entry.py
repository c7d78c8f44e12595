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
"""

from __future__ import annotations

import os
import signal

from . import _cancel

_BLAS_THREADS = "OPENBLAS_NUM_THREADS"


def _early(signum, frame) -> None:
    _cancel.request(signum)


def main() -> None:
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
