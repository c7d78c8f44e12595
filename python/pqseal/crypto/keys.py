"""Native key handles: the raw key lives in C memory that is wiped when freed."""

from __future__ import annotations

import threading

from .. import _backend, _fips
from .._native import ffi, lib
from ..errors import InvalidKey

KEY_LENGTHS = (16, 24, 32)
GCM_INVOCATION_LIMIT = int(lib.pq_gcm_invocation_limit())


class ModuleKey:
    """An AES key (128/192/256 bits) prepared for the native core.

    The key bytes are copied into native memory (with the backends' key schedules)
    and wiped with ``OPENSSL_cleanse`` when the key is closed or collected. Pass a
    ``bytearray`` and wipe it yourself if the Python-side copy matters: Python
    ``bytes`` cannot be wiped. Encryptions are counted per key per process, across
    every ``ModuleKey`` made from the same bytes (a key reused for many files counts in
    total), and more than 2^32 are refused (random 96-bit nonces, NIST SP 800-38D §8.3).
    The count of a key no object uses any more is kept until 65536 other keys have
    fallen out of use after it; a forked child starts from its parent's counts. The
    counts are found by a keyed hash whose key never leaves the process: there is no
    stable fingerprint of the key anywhere. No repr, str or pickle shows key bytes.
    """

    __slots__ = ("_ptr", "_bits", "_lock", "_users", "_closing", "__weakref__")

    def __init__(self, key) -> None:
        if isinstance(key, ModuleKey):
            raise TypeError("already a ModuleKey")
        _fips.check()
        if isinstance(key, str):
            raise InvalidKey("a key must be bytes-like, not str")
        try:
            buf = ffi.from_buffer(key)
        except TypeError:
            raise InvalidKey(f"a key must be bytes-like, not {type(key).__name__}") from None
        out = ffi.new("pq_key **")
        try:
            if len(buf) not in KEY_LENGTHS:
                raise InvalidKey(f"AES key must be 16, 24 or 32 bytes, got {len(buf)}")
            status = lib.pq_key_new(ffi.cast("const uint8_t *", buf), len(buf), out)
            nbytes = len(buf)
        finally:
            ffi.release(buf)
        if status == lib.PQ_ERR_RNG:
            raise _backend.rng_error()
        if status == lib.PQ_ERR_INTERNAL:
            raise MemoryError("could not allocate a native key")
        if status != lib.PQ_OK:
            raise _backend.native_error(status)
        self._ptr = ffi.gc(out[0], lib.pq_key_free)
        self._bits = nbytes * 8
        self._lock = threading.Lock()
        self._users = 0        # native calls currently using the key
        self._closing = False  # close() asked for while in use: free after the last user

    @classmethod
    def coerce(cls, key) -> "ModuleKey":
        return key if isinstance(key, ModuleKey) else cls(key)

    @property
    def bits(self) -> int:
        return self._bits

    @property
    def invocations(self) -> int:
        """Encryptions performed in this process under this key's bytes (GCM and CTR
        modules), by this object and any other holding the same key."""
        return int(lib.pq_key_invocations(self._handle()))

    def _set_invocations(self, value: int) -> None:  # test hook
        lib.pq_key_set_invocations(self._handle(), value)

    def _handle(self):
        ptr = self._ptr
        if ptr is None or self._closing:
            raise ValueError("key is closed")
        return ptr

    def _acquire(self):
        """Pin the native key for the length of a native call; returns its handle."""
        with self._lock:
            if self._ptr is None or self._closing:
                raise ValueError("key is closed")
            self._users += 1
            return self._ptr

    def _release(self) -> None:
        with self._lock:
            self._users -= 1
            ptr = None
            if self._closing and self._users == 0:
                ptr, self._ptr = self._ptr, None
        if ptr is not None:
            ffi.release(ptr)

    def close(self) -> None:
        """Wipe and free the native key (otherwise done on garbage collection). Ciphers
        holding the key refuse further use; a call in progress finishes first."""
        with self._lock:
            if self._ptr is None or self._closing:
                return
            self._closing = True
            ptr = None
            if self._users == 0:
                ptr, self._ptr = self._ptr, None
        if ptr is not None:
            ffi.release(ptr)

    def __enter__(self) -> "ModuleKey":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if (self._ptr is None or self._closing) else "redacted"
        return f"<ModuleKey AES-{self._bits} ({state})>"

    __str__ = __repr__

    def __reduce__(self):
        raise TypeError("ModuleKey cannot be pickled: key material does not leave the process this way")

    def __eq__(self, other) -> bool:  # identity only: never compare key bytes from Python
        return self is other

    __hash__ = object.__hash__
