"""Cooperative cancellation of long file operations.

A signal handler (the CLI's, on SIGINT/SIGTERM) or any thread calls :func:`request`;
every file operation calls :func:`check` between column chunks and raises
:class:`Cancelled` at the next boundary, so each one removes its temporary files on
the way out (they are written under ``except BaseException`` clean-ups). ``Cancelled``
derives from ``BaseException`` like ``KeyboardInterrupt``: ``except Exception`` in a
caller does not swallow it.
"""

from __future__ import annotations

import threading

_event = threading.Event()
_signum = 0


class Cancelled(BaseException):
    """The operation was cancelled (``signum``: the signal that asked for it, or 0)."""

    def __init__(self, signum: int = 0):
        super().__init__(f"cancelled by signal {signum}" if signum else "cancelled")
        self.signum = signum


def request(signum: int = 0) -> None:
    """Ask every running operation of this process to stop at its next check."""
    global _signum
    _signum = signum
    _event.set()


def requested() -> bool:
    return _event.is_set()


def requested_by() -> int:
    """The signal that asked for cancellation (0: none, or asked without a signal)."""
    return _signum if _event.is_set() else 0


def check() -> None:
    """Raise :class:`Cancelled` if cancellation was requested."""
    if _event.is_set():
        raise Cancelled(_signum)


def reset() -> None:
    """Clear a request (tests; a new job in a long-lived process)."""
    global _signum
    _signum = 0
    _event.clear()
