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


@contextlib.contextmanager
def interruptible():
    """Install the handlers for the duration of a command (main thread only; elsewhere
    signals cannot be handled and the default behaviour stays)."""
    state = Interruption()
    if threading.current_thread() is not threading.main_thread():
        yield state
        return

    def handler(signum, frame):
        if not state.signum:
            state.signum = signum
        _cancel.request(signum)

    _cancel.reset()
    previous = {s: signal.signal(s, handler) for s in SIGNALS}

    def restore() -> None:
        for s, h in previous.items():
            if signal.getsignal(s) in (handler, late):
                signal.signal(s, h)

    def late(signum, frame):
        # after the work: nothing is left to stop, but the command still ends as
        # interrupted (128 + signal, one line); a second signal acts as before
        if not state.signum:
            state.signum = signum
        restore()

    try:
        yield state
    finally:
        _cancel.reset()
        # Keep answering until the process exits: a signal between here and the exit would
        # otherwise kill it silently (exit -15, no line). The default handlers come back at
        # exit, or after the first late signal (commands run in-process, e.g. by tests).
        for s in SIGNALS:
            signal.signal(s, late)
        atexit.register(restore)
