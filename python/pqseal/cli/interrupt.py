"""SIGINT and SIGTERM during a command: ask the running file operations to stop.

While a command runs, both signals call :func:`pqseal._cancel.request`: every file
operation stops at its next column chunk and removes its temporary file, files not
started are not started, and the command exits 128 + the signal number with one line
saying what was finished. The handler only sets a flag; a main thread blocked waiting
for worker threads is woken by the signal and goes on waiting for them to stop.
"""

from __future__ import annotations

import atexit
import contextlib
import signal
import threading
from dataclasses import dataclass

from .. import _cancel

SIGNALS = (signal.SIGINT, signal.SIGTERM)


@dataclass
class Interruption:
    signum: int = 0      # the first signal received, 0 when none

    @property
    def requested(self) -> bool:
        return self.signum != 0

    @property
    def exit_code(self) -> int:
        return 128 + self.signum

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name


_current: Interruption | None = None


def current() -> Interruption:
    """The interruption state of the command being run (never interrupted outside one)."""
    return _current if _current is not None else Interruption()


def _ignore_at_exit() -> None:
    # The interpreter's teardown resets Python-level handlers to the default, which would
    # let a signal in its last milliseconds kill the process silently (exit -15): ignored
    # signals stay ignored, and by now there is nothing left to stop.
    for s in SIGNALS:
        signal.signal(s, signal.SIG_IGN)


@contextlib.contextmanager
def interruptible():
    """Install the handlers for the duration of a command, from before its arguments are
    parsed (main thread only; elsewhere signals cannot be handled and the default
    behaviour stays). A signal after the command is recorded too, so the process never
    dies silently; the handlers stay until the process exits, or until a second signal
    after the command (commands run in-process, e.g. by tests)."""
    global _current
    state = Interruption()
    if threading.current_thread() is not threading.main_thread():
        yield state
        return

    def handler(signum, frame):
        if not state.signum:
            state.signum = signum
        _cancel.request(signum)

    def late(signum, frame):
        if not state.signum:
            state.signum = signum
        for s, h in previous.items():
            signal.signal(s, h)

    state.signum = _cancel.requested_by()   # a signal before this (pqseal._entry) counts
    if not state.signum:
        _cancel.reset()
    previous = {s: signal.signal(s, handler) for s in SIGNALS}
    _current = state
    try:
        yield state
    finally:
        _current = None
        _cancel.reset()
        for s in SIGNALS:
            signal.signal(s, late)
        atexit.unregister(_ignore_at_exit)
        atexit.register(_ignore_at_exit)
