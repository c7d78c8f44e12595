"""Native library loading and backend selection (``PQSEAL_BACKEND=auto|openssl|ipsecmb``).

FIPS mode (:mod:`pqseal._fips`) allows the OpenSSL backend only."""

from __future__ import annotations

import os

from ._native import ffi, lib
from .errors import BackendUnavailable, CryptoLibraryError

OPENSSL = "openssl"
IPSECMB = "ipsecmb"
_CODES = {OPENSSL: lib.PQ_BACKEND_OPENSSL, IPSECMB: lib.PQ_BACKEND_IPSECMB}

if lib.pq_init() not in (lib.PQ_OK, lib.PQ_ERR_FIPS):  # pragma: no cover - only on a broken libcrypto
    raise CryptoLibraryError("pqseal native core failed to initialise")

# IMB_FEATURE_* bits of intel-ipsec-mb 1.x that matter for AES-GCM/CTR speed.
_IMB_FEATURES = {
    "sse4.2": 1 << 0, "aesni": 1 << 1, "pclmulqdq": 1 << 2, "cmov": 1 << 3, "avx": 1 << 5,
    "avx2": 1 << 6, "avx512f": 1 << 7, "avx512dq": 1 << 8, "avx512cd": 1 << 9,
    "avx512bw": 1 << 10, "avx512vl": 1 << 11, "vaes": 1 << 12, "vpclmulqdq": 1 << 13,
    "gfni": 1 << 16,
}


def openssl_error() -> str:
    """What OpenSSL said about the last failure on this thread ("" if nothing)."""
    buf = ffi.new("char[]", 512)
    lib.pq_openssl_error(buf, len(buf))
    return ffi.string(buf).decode("utf-8", "replace")


def rng_error() -> CryptoLibraryError:
    """The error for a failed draw from OpenSSL's DRBG (call right after the failing native call)."""
    detail = openssl_error()
    return CryptoLibraryError("OpenSSL's random generator (DRBG) failed" + (f": {detail}" if detail else "")
                              + "; no key, nonce or salt was produced")


def native_error(status: int) -> CryptoLibraryError:
    """The error for a native status that is not about one batch's input."""
    from . import _fips

    fips_error = _fips.error()
    if status == lib.PQ_ERR_FIPS and fips_error is not None:
        return fips_error
    return CryptoLibraryError(f"pqseal native core failed (status {status})")


def available_backends() -> list[str]:
    """Backends usable in this process, fastest first."""
    return [name for name in (IPSECMB, OPENSSL) if lib.pq_backend_available(_CODES[name])]


def unavailable(name: str) -> BackendUnavailable:
    """Why backend ``name`` cannot be used now."""
    if name not in _CODES:
        return BackendUnavailable(f"unknown backend {name!r}; expected auto, openssl or ipsecmb")
    if lib.pq_fips_enabled() or lib.pq_fips_reason() != lib.PQ_FIPS_OK:
        return BackendUnavailable(f"backend {name!r} is not allowed in FIPS mode: only OpenSSL's FIPS provider "
                                  f"may run the cipher (intel-ipsec-mb is not a FIPS module); use "
                                  f"PQSEAL_BACKEND=openssl or auto")
    return BackendUnavailable(f"backend {name!r} is not available: pqseal was built without intel-ipsec-mb "
                              f"or the CPU lacks AES-NI")


def _resolve(name: str) -> str:
    name = (name or "auto").strip().lower()
    if name == "auto":
        return available_backends()[0]
    if name not in _CODES or not lib.pq_backend_available(_CODES[name]):
        raise unavailable(name)
    return name


# An unusable explicit choice is reported on first use, so that e.g. `pqseal --help`
# still works; `backend_info()` shows it. Resolved on each use: FIPS mode may be
# switched on after import.
_env_choice = os.environ.get("PQSEAL_BACKEND", "auto")


def default_backend() -> str:
    return _resolve(_env_choice)


def backend_code(name: str | None) -> tuple[str, int]:
    """(name, native code) of a backend; None means the process default."""
    resolved = default_backend() if name is None else _resolve(name)
    return resolved, _CODES[resolved]


def backend_info() -> dict:
    """Which backend pqseal uses, the library versions, FIPS mode and the CPU features in use."""
    from . import _fips

    try:
        backend, error = default_backend(), None
    except BackendUnavailable as exc:
        backend, error = None, str(exc)
    feats = int(lib.pq_ipsecmb_features())
    imb_version = ffi.string(lib.pq_ipsecmb_version()).decode()
    fips_error = _fips.error()
    return {
        "backend": backend,
        "requested": _env_choice,
        "error": error,
        "available": available_backends(),
        "fips_mode": _fips.enabled(),
        "fips_error": str(fips_error) if fips_error else None,
        "openssl_version": ffi.string(lib.pq_openssl_version()).decode(),
        "ipsecmb_version": imb_version or None,
        "ipsecmb_arch": ffi.string(lib.pq_ipsecmb_arch()).decode() or None,
        "cpu_features": [n for n, bit in _IMB_FEATURES.items() if feats & bit],
    }
