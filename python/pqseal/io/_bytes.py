"""A ``bytes`` object filled in place.

Readers that take only ``bytes`` from a file object (polars' ``read()`` of a whole file
wraps the returned ``bytes`` without copying) would otherwise get the view's bytes twice:
once decrypted into a buffer, once copied into ``bytes``. CPython's C API creates a
``bytes`` object with uninitialized contents (``PyBytes_FromStringAndSize(NULL, n)``)
for its creator to fill before anyone else sees it; ``fresh_bytes`` does that through
ctypes and hands out a writable array over the contents. Other interpreters get None.
On Linux a large object's memory is advised to use huge pages, as numpy does for its
arrays: filling 100 MiB of fresh memory otherwise takes tens of thousands of page faults.
"""

from __future__ import annotations

import ctypes
import mmap
import sys
from typing import Any

import numpy as np

_new: Any
try:
    if sys.implementation.name != "cpython":
        raise AttributeError("no CPython C API")
    _new = ctypes.pythonapi.PyBytes_FromStringAndSize
    _new.restype = ctypes.py_object
    _new.argtypes = (ctypes.c_char_p, ctypes.c_ssize_t)
    _data = ctypes.pythonapi.PyBytes_AsString
    _data.restype = ctypes.c_void_p
    _data.argtypes = (ctypes.py_object,)
except AttributeError:  # pragma: no cover  (another interpreter, or its C API not exported)
    _new = None

_madvise = getattr(ctypes.CDLL(None, use_errno=True), "madvise", None) if sys.platform == "linux" else None
if _madvise is not None:
    _madvise.restype = ctypes.c_int
    _madvise.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
_MADV_HUGEPAGE = getattr(mmap, "MADV_HUGEPAGE", 14)
_HUGE = 4 << 20        # numpy's threshold for advising huge pages

MIN_SIZE = 1 << 16     # below this a copy costs less than the calls


def fresh_bytes(n: int) -> tuple[bytes, np.ndarray] | None:
    """A new ``bytes`` object of ``n`` (>= MIN_SIZE) uninitialized bytes and a writable
    uint8 array over them (it keeps the object alive). The caller fills the array
    completely and drops it before handing the ``bytes`` on; None where the interpreter
    offers no such object."""
    if _new is None or n < MIN_SIZE:
        return None
    data = _new(None, n)
    addr = _data(data)
    if n >= _HUGE and _madvise is not None:
        start = -(-addr // mmap.PAGESIZE) * mmap.PAGESIZE
        _madvise(start, (addr + n - start) // mmap.PAGESIZE * mmap.PAGESIZE, _MADV_HUGEPAGE)   # a hint: errors ignored
    return data, np.asarray(_Contents(data, addr, n))


class _Contents:
    """The contents of a ``bytes`` object as numpy's array interface (the array made
    from it keeps this, hence the object, alive)."""

    def __init__(self, data: bytes, addr: int, n: int):
        self.owner = data
        self.__array_interface__ = {"data": (addr, False), "shape": (n,), "typestr": "|u1", "version": 3}
