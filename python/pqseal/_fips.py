"""FIPS mode: switch it on with ``PQSEAL_FIPS=1`` (read when pqseal is imported) or
:func:`pqseal.enable_fips`.

What FIPS mode pins
-------------------
* **Provider.** OpenSSL's ``fips`` provider (and ``base``, for encoders and the seed
  source) is loaded into the default library context of the system ``libcrypto`` and
  its default properties become ``fips=yes``. Every algorithm pqseal uses must then be
  offered with ``fips=yes`` (checked when the switch is thrown): AES-128/192/256-GCM,
  AES-128/192/256-CTR, SHA2-256/HMAC and the CTR-DRBG.
* **Backend.** OpenSSL's EVP backend only. intel-ipsec-mb is not a FIPS module: it is
  refused with :class:`~pqseal.errors.BackendUnavailable` (``PQSEAL_BACKEND=ipsecmb``
  with FIPS mode is an error, ``auto`` picks OpenSSL) and new keys get no
  intel-ipsec-mb key schedule.
* **Algorithms.** AES-GCM modules, footers, footer signatures and local key wrapping
  (DEKs under KEKs, keystore master keys under the keystore key); AES-CTR page bodies
  of ``AES_GCM_CTR_V1`` files. All through the FIPS provider.
* **Random numbers.** One DRBG, OpenSSL's: every GCM/CTR nonce (drawn in the native
  batch call), data keys, KEKs and KEK ids, keystore master keys and salts, and the
  unique part of the file AAD (:func:`pqseal.crypto.random_bytes`). In FIPS mode it is
  the FIPS provider's DRBG: the switch checks that the DRBG instances in use are FIPS
  implementations. A DRBG instantiated before the switch keeps its provider, so FIPS
  mode has to be switched on before the process draws its first random byte from
  OpenSSL (making the first ``ModuleKey`` draws one: the secret of the invocation
  counts); ``PQSEAL_FIPS=1`` does that at import, and :func:`enable_fips` refuses (with
  a message saying so) when it is too late.
* **GCM nonces.** 96-bit random IVs from that DRBG (SP 800-38D §8.2.2), drawn by pqseal
  and handed to the provider with the key, and at most 2^32 encryptions per key per
  process (counted across every key object holding the same key bytes).

What stays outside
------------------
* The local keystore derives its key from the passphrase with scrypt from the
  ``cryptography`` package, which carries its own OpenSSL (not the FIPS provider);
  scrypt is not a FIPS-approved KDF. Use a KMS for FIPS deployments.
* Other users of the same ``libcrypto`` in the process (Python's ``hashlib`` and
  ``ssl``) are held to FIPS algorithms too (``hashlib.md5()`` fails). ``pyarrow``,
  DuckDB and ``cryptography`` carry their own OpenSSL and are not affected.
* pqseal itself is not a validated module: the validation is that of the FIPS provider
  installed (its certificate and security policy). Debian's OpenSSL 3.0 packages ship
  no FIPS provider.

Failure
-------
When FIPS mode is asked for and cannot be had (no ``fips`` provider, a provider that
fails its self-test, OpenSSL's config saying ``default_properties = fips=yes`` without
a FIPS provider, or a DRBG already running outside it), the error names what is
missing, the module directory and the OpenSSL config checked. The failure is sticky:
every later pqseal call that needs keys, ciphers or random bytes raises the same
:class:`~pqseal.errors.CryptoLibraryError`, so nothing runs outside FIPS mode after it
was asked for. ``pqseal.backend_info()`` reports the state.
"""

from __future__ import annotations

import os

from ._backend import openssl_error
from ._native import ffi, lib
from .errors import CryptoLibraryError

_TRUE = ("1", "yes", "on", "true")
_FALSE = ("", "0", "no", "off", "false")

_error: CryptoLibraryError | None = None


def _openssl_said() -> str:
    text = openssl_error()
    return f" OpenSSL said: {text}." if text else ""


def _where() -> str:
    """The module directory and config file OpenSSL used, and where each came from."""
    moddir = ffi.string(lib.pq_openssl_modules_dir()).decode("utf-8", "replace")
    conf = ffi.string(lib.pq_openssl_config_file()).decode("utf-8", "replace")
    moddir_src = "OPENSSL_MODULES" if os.environ.get("OPENSSL_MODULES") else "OpenSSL's built-in default"
    conf_src = "OPENSSL_CONF" if os.environ.get("OPENSSL_CONF") else "OpenSSL's built-in default"
    return f"module directory {moddir} (from {moddir_src}), OpenSSL config {conf} (from {conf_src})"


def _provider_missing(name: str) -> str:
    moddir = ffi.string(lib.pq_openssl_modules_dir()).decode("utf-8", "replace")
    so = os.path.join(moddir, name + ".so")
    if name == "fips" and os.path.exists(so):
        cause = (f"{so} exists but did not load or failed its self-test (its configuration, made by "
                 f"`openssl fipsinstall`, must be included from the OpenSSL config)")
    elif name == "fips":
        cause = f"there is no {so} (OpenSSL's FIPS provider is not installed there)"
    else:
        cause = f"the {name!r} provider did not load"
    return f"OpenSSL's {name!r} provider could not be loaded: {cause}. Checked: {_where()}."


def _message(reason: int) -> str:
    if reason == lib.PQ_FIPS_NO_PROVIDER:
        text = "FIPS mode: " + _provider_missing("fips")
    elif reason == lib.PQ_FIPS_NO_BASE:
        text = "FIPS mode: " + _provider_missing("base")
    elif reason == lib.PQ_FIPS_NOT_APPROVED:
        text = (f"FIPS mode: the loaded FIPS provider does not offer AES-GCM, AES-CTR, HMAC-SHA-256 and CTR-DRBG "
                f"with fips=yes. Checked: {_where()}.")
    elif reason == lib.PQ_FIPS_DRBG_IN_USE:
        text = ("FIPS mode: OpenSSL's random generator was already running outside the FIPS provider when FIPS "
                "mode was asked for; set PQSEAL_FIPS=1 in the environment, or call pqseal.enable_fips() before "
                "the process makes its first key or draws random bytes.")
    elif reason == lib.PQ_FIPS_CONFIG:
        text = ("OpenSSL's config sets default_properties = fips=yes, but no FIPS implementation of AES-GCM, "
                "AES-CTR and the DRBG is available, so every cipher call and random draw would fail: "
                + _provider_missing("fips"))
    else:
        text = f"FIPS mode is unusable (reason {reason})."
    return text + _openssl_said()


def check() -> None:
    """Raise the FIPS error if FIPS mode was asked for and is unusable."""
    if _error is not None:
        raise _error


def enabled() -> bool:
    return bool(lib.pq_fips_enabled())


def error() -> CryptoLibraryError | None:
    return _error


def enable_fips() -> None:
    """Switch this process to FIPS mode (see :mod:`pqseal._fips` for what it pins).
    Idempotent. Raises :class:`~pqseal.errors.CryptoLibraryError` naming what is missing;
    after a failure every pqseal call that needs crypto raises that error."""
    global _error
    reason = lib.pq_enable_fips()
    _error = None if reason == lib.PQ_FIPS_OK else CryptoLibraryError(_message(reason))
    check()


def _at_import() -> None:
    """OpenSSL's config may already ask for FIPS; PQSEAL_FIPS asks for it."""
    global _error
    lib.pq_init()
    reason = lib.pq_fips_reason()
    if reason != lib.PQ_FIPS_OK:
        _error = CryptoLibraryError(_message(reason))
    value = os.environ.get("PQSEAL_FIPS", "").strip().lower()
    if value in _TRUE:
        try:
            enable_fips()
        except CryptoLibraryError:
            pass  # kept in _error: raised by the first call that needs crypto
    elif value not in _FALSE:
        _error = CryptoLibraryError(f"PQSEAL_FIPS={os.environ['PQSEAL_FIPS']!r}: expected 1 (FIPS mode) or 0")


_at_import()
