"""Native library loading and backend selection (``PQSEAL_BACKEND=auto|openssl|ipsecmb``)."""

from __future__ import annotations

import os

from ._native import ffi, lib
from .errors import BackendUnavailable, CryptoLibraryError

OPENSSL = "openssl"
IPSECMB = "ipsecmb"
_CODES = {OPENSSL: lib.PQ_BACKEND_OPENSSL, IPSECMB: lib.PQ_BACKEND_IPSECMB}

if lib.pq_init() != lib.PQ_OK:  # pragma: no cover - only on a broken libcrypto
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
    return CryptoLibraryError(f"pqseal native core failed (status {status})")


def available_backends() -> list[str]:
    """Backends usable in this process, fastest first."""
    return [name for name in (IPSECMB, OPENSSL) if lib.pq_backend_available(_CODES[name])]


def _resolve(name: str) -> str:
    name = (name or "auto").strip().lower()
    if name == "auto":
        return available_backends()[0]
    if name not in _CODES:
        raise BackendUnavailable(f"unknown backend {name!r}; expected auto, openssl or ipsecmb")
    if not lib.pq_backend_available(_CODES[name]):
        why = "FIPS mode allows only the OpenSSL backend" if lib.pq_fips_enabled() else \
            "pqseal was built without intel-ipsec-mb or the CPU lacks AES-NI"
        raise BackendUnavailable(f"backend {name!r} is not available: {why}")
    return name


# Selected at import. An unusable explicit choice is reported on first use, so that
# e.g. `pqseal --help` still works; `backend_info()` shows it.
_env_choice = os.environ.get("PQSEAL_BACKEND", "auto")
try:
    _default: str | None = _resolve(_env_choice)
    _default_error: BackendUnavailable | None = None
except BackendUnavailable as exc:
    _default, _default_error = None, exc


def default_backend() -> str:
    if _default is None:
        assert _default_error is not None
        raise _default_error
    return _default


def backend_code(name: str | None) -> tuple[str, int]:
    """(name, native code) of a backend; None means the process default."""
    resolved = default_backend() if name is None else _resolve(name)
    return resolved, _CODES[resolved]


def backend_info() -> dict:
    """Which backend pqseal uses, the library versions and the CPU features in use."""
    feats = int(lib.pq_ipsecmb_features())
    imb_version = ffi.string(lib.pq_ipsecmb_version()).decode()
    return {
        "backend": _default,
        "requested": _env_choice,
        "error": str(_default_error) if _default_error else None,
        "available": available_backends(),
        "fips_mode": bool(lib.pq_fips_enabled()),
        "openssl_version": ffi.string(lib.pq_openssl_version()).decode(),
        "ipsecmb_version": imb_version or None,
        "ipsecmb_arch": ffi.string(lib.pq_ipsecmb_arch()).decode() or None,
        "cpu_features": [n for n, bit in _IMB_FEATURES.items() if feats & bit],
    }
