"""Random bytes from OpenSSL's DRBG.

Every secret or unique value pqseal makes comes from this one generator: data keys,
key-encryption keys and their ids, keystore master keys and salts, the file AAD's
unique part, and (drawn inside the native batch call) every GCM/CTR nonce. In FIPS
mode it is the FIPS provider's DRBG (see :mod:`pqseal._fips`).
"""

from __future__ import annotations

from .. import _backend, _fips
from .._native import ffi, lib


def random_bytes(n: int) -> bytes:
    """``n`` bytes from OpenSSL's DRBG (``RAND_bytes``). Raises
    :class:`~pqseal.errors.CryptoLibraryError` when the generator fails."""
    if not isinstance(n, int) or isinstance(n, bool):
        raise TypeError(f"n must be an int, got {type(n).__name__}")
    if n < 0:
        raise ValueError(f"n must not be negative, got {n}")
    _fips.check()
    out = bytearray(n)
    if n:
        with ffi.from_buffer(out, require_writable=True) as buf:
            status = lib.pq_random_bytes(buf, n)
        if status == lib.PQ_ERR_RNG:
            raise _backend.rng_error()
        if status != lib.PQ_OK:
            raise _backend.native_error(status)
    result = bytes(out)
    out[:] = bytes(n)  # the working copy may hold a key: wipe it
    return result
