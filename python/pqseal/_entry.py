"""The ``pqseal`` program's entry point (console script and ``python -m pqseal``).

SIGINT and SIGTERM are answered from the first moment the program runs Python code of
its own, before the command line's modules are imported: a signal in that time is
recorded as a cancellation request, which the command then honours (it stops before
writing anything and exits 128 + the signal number with one line), instead of the
process dying silently. The full handling is pqseal.cli.interrupt's.
"""

from __future__ import annotations

import signal

from . import _cancel


def _early(signum, frame) -> None:
    _cancel.request(signum)


def main() -> None:
    for s in (signal.SIGINT, signal.SIGTERM):
        signal.signal(s, _early)
    from .cli import main as cli

    cli()
