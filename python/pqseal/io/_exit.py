"""Files handed to readers that outlive their calls.

pyarrow's ``read_table`` can still hold a Python file object on one of its threads after
it returns, and release it later, taking the GIL; when that happens while the
interpreter shuts down, the process aborts ("terminate called without an active
exception", apache/arrow#33975 and #34314; plain Python files too). The files pqseal
hands out (the plaintext view, the fsspec file system's shared files) are tracked here,
and at exit pqseal waits, at most :data:`WAIT_SECONDS`, until no reference to one is held
outside Python's objects (by C++ code, that is). A file the program itself still holds,
in a global variable say, is held by a Python object and is not waited for.
"""

from __future__ import annotations

import atexit
import gc
import sys
import threading
import time
import weakref

WAIT_SECONDS = 2.0
_live: weakref.WeakSet = weakref.WeakSet()
_lock = threading.Lock()
_registered = False


class _Probe:
    """An object held exactly as the files are while they are counted (calibration)."""


def track(f) -> None:
    """Wait at exit while ``f`` is held outside Python's objects."""
    global _registered
    with _lock:
        _live.add(f)
        if not _registered:
            atexit.register(wait_for_readers)
            _registered = True


def _unaccounted(objs: list) -> list[int]:
    """Per object, its references not coming from objects the garbage collector sees."""
    return [sys.getrefcount(o) - len(gc.get_referrers(o)) for o in objs]


def held_outside_python() -> int:
    """How many tracked files something other than a Python object holds now."""
    with _lock:
        objs = [_Probe(), *_live]
    counts = _unaccounted(objs)
    return sum(c > counts[0] for c in counts[1:])


def wait_for_readers(timeout: float = WAIT_SECONDS) -> bool:
    """Wait until no tracked file is held outside Python's objects; False on timeout."""
    deadline = time.monotonic() + timeout
    gc.collect()
    while held_outside_python():
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.005)
    return True
