"""A PKCS#11 token (an HSM, or SoftHSM2 for tests) as a KMS client (``pqseal[pkcs11]``,
on ``python-pkcs11``): ``pkcs11:module=/usr/lib/softhsm/libsofthsm2.so;token=NAME``.

Master keys are AES keys generated on the token, non-extractable and sensitive
(``CKA_EXTRACTABLE`` false, ``CKA_SENSITIVE`` true): their bytes never leave it. A data
key (or KEK) is wrapped by the token with ``CKM_AES_GCM``: a 12-byte IV from pqseal's
CSPRNG, a 128-bit tag, and AAD = the UTF-8 bytes of ``"<master key id>:<version>"`` (as
the local keystore binds its wraps), so a wrapped key moved to another master key or
version fails its tag. Wrapped keys are framed like the keystore's::

    pqp11:<version>:<base64(iv ‖ ciphertext ‖ tag)>

Versions (one token object per version):

- ``CKA_LABEL`` = the master key id; ``CKA_ID`` = UTF-8 ``"<master key id>:<version>"``,
  versions counting from 1. Objects with the label but another ``CKA_ID`` are not
  pqseal's and are ignored.
- States live in the key's usage flags, which tokens let a logged-in user change:
  ``CKA_ENCRYPT`` and ``CKA_DECRYPT`` true = *active* (the newest such version wraps);
  only ``CKA_DECRYPT`` = *decrypt-only* (older versions after :meth:`Pkcs11Kms.rotate_key`,
  so files wrapped before a rotation keep unwrapping); neither = *disabled*
  (:class:`~pqseal.errors.KeyDisabled`). :meth:`~Pkcs11Kms.destroy_key` deletes versions.
- PKCS#11 has no transactions: two processes creating or rotating the same key id at
  the same moment can make duplicate versions; administer keys from one place.

The user PIN comes from ``PQSEAL_PKCS11_PIN``, a file named by ``PQSEAL_PKCS11_PIN_FILE``
(refused when group or others may read it), or a prompt on a terminal; never from a
command-line argument or the URI (a ``pin-value`` or ``pin-source`` attribute is refused).

A token's login state is shared by all sessions of a process, so each process keeps one
logged-in session per token, used under a lock by every client and thread (a second
client must present the same PIN, checked against a keyed MAC of the first). Session and
device failures are retried through :class:`~pqseal.kms.resilience.Resilience`, reopening
the session; for that the process keeps the PIN in memory (as the keystore keeps its
passphrase) and shows it nowhere. Clients are per process: they cannot be pickled; the
factory of :func:`from_uri` can, so process workers open their own session (a forked
child initializes the module again, as PKCS#11 requires).
"""

from __future__ import annotations

import base64
import binascii
import hmac
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from ..crypto import random_bytes
from ..errors import (InvalidTag, KeyAccessDenied, KeyDisabled, KeyNotFound, KmsError, KmsUnavailable,
                      MalformedKeyMaterial)
from .base import KmsClient, KmsConnectionConfig
from .keystore import read_private_file
from .resilience import Resilience, RetryPolicy

WRAP_PREFIX = "pqp11"
IV_LEN = 12
TAG_BITS = 128
PIN_ENV = "PQSEAL_PKCS11_PIN"
PIN_FILE_ENV = "PQSEAL_PKCS11_PIN_FILE"
URI_ATTRIBUTES = {"module", "module-path", "token", "serial"}
_SECRET_ATTRIBUTES = {"pin-value", "pin-source"}

T = TypeVar("T")


def _p11():
    try:
        import pkcs11
    except ModuleNotFoundError:
        raise KmsUnavailable("the PKCS#11 client needs python-pkcs11: pip install 'pqseal[pkcs11]'") from None
    return pkcs11


def pin_from_environment(prompt: bool = True) -> str:
    """The token's user PIN: ``$PQSEAL_PKCS11_PIN``, the file ``$PQSEAL_PKCS11_PIN_FILE``
    (mode-checked, trailing newline dropped), or a prompt when stdin is a terminal."""
    if PIN_ENV in os.environ:
        return os.environ[PIN_ENV]
    if os.environ.get(PIN_FILE_ENV):
        raw = read_private_file(os.environ[PIN_FILE_ENV], f"PIN file ({PIN_FILE_ENV})").rstrip(b"\r\n")
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise KeyAccessDenied(f"PIN file ({PIN_FILE_ENV}) is not UTF-8") from None
    if prompt:
        import getpass
        import sys

        if sys.stdin.isatty():
            return getpass.getpass("PKCS#11 user PIN: ")
    raise KeyAccessDenied(f"no PKCS#11 PIN: set {PIN_ENV} or {PIN_FILE_ENV} (no terminal to prompt on)")


def _transient(exc: BaseException) -> bool:
    """Failures worth a retry on a fresh session: the session or device went away."""
    e = _p11().exceptions
    return isinstance(exc, (e.SessionClosed, e.SessionHandleInvalid, e.DeviceError, e.DeviceMemory,
                            e.DeviceRemoved, e.TokenNotPresent, e.UserNotLoggedIn, e.SessionCount))


def _b64decode(text: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise MalformedKeyMaterial("PKCS#11 wrapped key is not valid base64") from None


# ---- one logged-in session per token and process ---------------------------------------------

_MAC_KEY = os.urandom(32)   # tells PINs apart in this process only; never a stable digest of a PIN


class _Token:
    """The process's logged-in session on one token, used under ``lock``."""

    def __init__(self, module: str, label: str, serial: str | None):
        self.module, self.label, self.serial = module, label, serial
        self.lock = threading.RLock()
        self._session: Any = None
        self._pin_mac: bytes | None = None
        self._pin: str | None = None
        # (key id, version) -> key object: unwrapping skips the token search; cleared with
        # the session, and an entry whose object is gone is looked up again
        self.handles: dict[tuple[str, int], Any] = {}

    def _mac(self, pin: str) -> bytes:
        return hmac.new(_MAC_KEY, pin.encode("utf-8"), "sha256").digest()

    def login(self, pin: str) -> None:
        """Log in (first client), or check that ``pin`` is the PIN the process logged in with."""
        with self.lock:
            if self._pin_mac is not None:
                if not hmac.compare_digest(self._pin_mac, self._mac(pin)):
                    raise KeyAccessDenied(f"wrong PIN for PKCS#11 token {self.label!r}")
                return
            self._open(pin)
            self._pin_mac, self._pin = self._mac(pin), pin

    def _open(self, pin: str) -> None:
        p11 = _p11()
        e = p11.exceptions
        try:
            lib = p11.lib(self.module)
            if _initialized_in.setdefault(self.module, os.getpid()) != os.getpid():
                lib.reinitialize()      # a forked child must initialize the module anew (PKCS#11 5.4)
                _initialized_in[self.module] = os.getpid()
        except e.PKCS11Error as exc:
            raise KmsUnavailable(f"cannot load PKCS#11 module {self.module}: {type(exc).__name__}") from None
        query = {"token_label": self.label}
        if self.serial:
            query["token_serial"] = self.serial
        try:
            token = lib.get_token(**query)
        except e.NoSuchToken:
            raise KmsUnavailable(f"no PKCS#11 token labelled {self.label!r} in {self.module}") from None
        except e.MultipleTokensReturned:
            raise KmsError(f"several PKCS#11 tokens are labelled {self.label!r}: name one with serial=") from None
        try:
            self._session = token.open(rw=True, user_pin=pin)
        except (e.PinIncorrect, e.PinInvalid, e.PinLenRange):
            raise KeyAccessDenied(f"wrong PIN for PKCS#11 token {self.label!r}") from None
        except (e.PinLocked, e.PinExpired, e.UserPinNotInitialized) as exc:
            raise KeyAccessDenied(f"PKCS#11 token {self.label!r}: {type(exc).__name__}") from None
        except e.UserAlreadyLoggedIn:
            raise KmsError(f"PKCS#11 token {self.label!r} is already logged in by other code in this "
                           "process; pqseal needs its own login") from None

    def run(self, fn: Callable[[Any], T]) -> T:
        """``fn(session)`` under the lock; a transient failure drops the session, so the
        retry (:class:`Resilience`) reopens and logs in again."""
        with self.lock:
            if self._session is None:
                if self._pin is None:
                    raise KeyAccessDenied(f"PKCS#11 token {self.label!r}: not logged in")
                self._open(self._pin)
            try:
                return fn(self._session)
            except Exception as exc:
                if _transient(exc):
                    self._drop()
                raise

    def _drop(self) -> None:
        session, self._session = self._session, None
        self.handles.clear()
        try:
            session.close()
        except Exception:  # noqa: BLE001 - the session is gone already
            pass

    def __repr__(self) -> str:
        return f"<PKCS#11 token {self.label!r} in {self.module}>"


_tokens: dict[tuple, _Token] = {}
_tokens_lock = threading.Lock()
_initialized_in: dict[str, int] = {}    # module -> the process that initialized it


def _token(module: str, label: str, serial: str | None) -> _Token:
    """The token's session of this process: a forked child logs in anew."""
    module = os.path.realpath(module)   # one load of the module, however its path is spelled
    key = (os.getpid(), module, label, serial or "")
    with _tokens_lock:
        t = _tokens.get(key)
        if t is None:
            t = _tokens[key] = _Token(module, label, serial)
        return t


# ---- the client ------------------------------------------------------------------------------


@dataclass(frozen=True)
class KeyVersion:
    """One master key version on the token (never its bytes)."""

    id: str
    version: int
    bits: int
    state: str   # "active", "decrypt-only" or "disabled"

    def as_dict(self) -> dict:
        return {"id": self.id, "version": self.version, "bits": self.bits, "state": self.state}


def _state(encrypt: bool, decrypt: bool) -> str:
    if encrypt and decrypt:
        return "active"
    return "decrypt-only" if decrypt else "disabled"


class Pkcs11Kms(KmsClient):
    """Master keys on a PKCS#11 token; wrap and unwrap with ``CKM_AES_GCM`` on the token."""

    def __init__(self, module: str, token: str, *, serial: str | None = None, pin: str | None = None,
                 retry: RetryPolicy | None = None):
        if not module or not token:
            raise ValueError("a PKCS#11 KMS needs module=PATH and token=LABEL")
        self.module, self.token_label, self.serial = module, token, serial
        self._token = _token(module, token, serial)
        self._resilience = Resilience(retry)
        pin = pin if pin is not None else pin_from_environment()
        self._resilience.call(lambda: self._typed("login", lambda: self._token.login(pin)), "login", _transient)

    # ---- token access ----------------------------------------------------------------------

    def _typed(self, what: str, fn: Callable[[], T]) -> T:
        """``fn()``; a PKCS#11 failure that is not transient becomes a :class:`KmsError`
        naming it (never a raw python-pkcs11 error); transient ones go to the retries."""
        e = _p11().exceptions
        try:
            return fn()
        except e.PKCS11Error as exc:
            if _transient(exc):
                raise
            hint = " (the token lacks CKM_AES_GCM)" if isinstance(exc, e.MechanismInvalid) else ""
            raise KmsError(f"PKCS#11 token {self.token_label!r}, {what}: {type(exc).__name__}{hint}") from None

    def _call(self, what: str, fn: Callable[[Any], T]) -> T:
        """``fn(session)`` on the token's session, with retries of transient failures."""
        return self._resilience.call(lambda: self._typed(what, lambda: self._token.run(fn)), what, _transient)

    def _versions(self, session, key_id: str) -> list[tuple[int, Any]]:
        """(version, key object) of ``key_id``, oldest first."""
        p11 = _p11()
        A = p11.Attribute
        out = []
        prefix = f"{key_id}:".encode("utf-8")
        for obj in session.get_objects({A.CLASS: p11.ObjectClass.SECRET_KEY, A.LABEL: key_id}):
            cid = bytes(obj[A.ID])
            tail = cid[len(prefix):]
            if cid.startswith(prefix) and tail.isdigit() and not tail.startswith(b"0"):
                out.append((int(tail), obj))
        return sorted(out, key=lambda v: v[0])

    def _version(self, session, key_id: str, version: int):
        """The key object of one version (cached per token session)."""
        handles = self._token.handles
        obj = handles.get((key_id, version))
        if obj is not None:
            return obj
        for v, obj in self._versions(session, key_id):
            if v == version:
                handles[(key_id, version)] = obj
                return obj
        raise KeyNotFound(f"master key {key_id!r} has no version {version} on PKCS#11 token {self.token_label!r}")

    def _can_decrypt(self, session, key_id: str, version: int):
        """(key object, CKA_DECRYPT) of one version, read from the token each time so a
        disabled or destroyed version is noticed."""
        p11 = _p11()
        e, A = p11.exceptions, p11.Attribute
        obj = self._version(session, key_id, version)
        try:
            ok = obj[A.DECRYPT]
        except (e.ObjectHandleInvalid, e.KeyHandleInvalid):
            ok = None
        # python-pkcs11 gives an object the methods its flags allowed when it was looked up
        if ok is None or (ok and not hasattr(obj, "decrypt")):
            self._token.handles.pop((key_id, version), None)
            obj = self._version(session, key_id, version)
            ok = obj[A.DECRYPT]
        return obj, ok

    def _require(self, versions, key_id: str):
        if not versions:
            raise KeyNotFound(f"master key {key_id!r} not on PKCS#11 token {self.token_label!r} (pqseal's master "
                              f"keys are AES keys labelled with their id and CKA_ID '<id>:<version>'; "
                              "create one with `pqseal keys create`)")
        return versions

    @staticmethod
    def _aad(key_id: str, version: int) -> bytes:
        return f"{key_id}:{version}".encode("utf-8")

    # ---- KMS client ------------------------------------------------------------------------

    def wrap_key(self, key_bytes: bytes, master_key_identifier: str) -> str:
        p11 = _p11()
        A = p11.Attribute
        key_id = master_key_identifier
        iv = random_bytes(IV_LEN)

        def op(session):
            active = [(v, o) for v, o in self._require(self._versions(session, key_id), key_id)
                      if o[A.ENCRYPT] and o[A.DECRYPT]]
            if not active:
                raise KeyDisabled(f"master key {key_id!r} has no active version on PKCS#11 token "
                                  f"{self.token_label!r}")
            version, obj = active[-1]
            ct = obj.encrypt(bytes(key_bytes), mechanism=p11.Mechanism.AES_GCM,
                             mechanism_param=p11.GCMParams(iv, self._aad(key_id, version), TAG_BITS))
            return version, ct

        version, ct = self._call(f"wrap with {key_id!r}", op)
        return f"{WRAP_PREFIX}:{version}:{base64.b64encode(iv + ct).decode('ascii')}"

    def unwrap_key(self, wrapped_key: str, master_key_identifier: str) -> bytes:
        p11 = _p11()
        e = p11.exceptions
        key_id = master_key_identifier
        parts = str(wrapped_key).split(":", 2)
        if len(parts) != 3 or parts[0] != WRAP_PREFIX or not parts[1].isdigit():
            raise MalformedKeyMaterial("not a pqseal PKCS#11 wrapped key")
        version = int(parts[1])
        blob = _b64decode(parts[2])
        if len(blob) < IV_LEN + TAG_BITS // 8 + 1:
            raise MalformedKeyMaterial("PKCS#11 wrapped key is too short")

        def op(session):
            obj, can_decrypt = self._can_decrypt(session, key_id, version)
            if not can_decrypt:
                raise KeyDisabled(f"master key {key_id!r} version {version} is disabled on PKCS#11 token "
                                  f"{self.token_label!r}")
            try:
                return bytes(obj.decrypt(blob[IV_LEN:], mechanism=p11.Mechanism.AES_GCM,
                                         mechanism_param=p11.GCMParams(blob[:IV_LEN], self._aad(key_id, version),
                                                                       TAG_BITS)))
            except (e.EncryptedDataInvalid, e.EncryptedDataLenRange, e.FunctionFailed, e.GeneralError):
                # SoftHSM 2.6 reports a failed GCM tag as CKR_GENERAL_ERROR
                raise InvalidTag(f"PKCS#11 wrapped key for master key {key_id!r} version {version} failed "
                                 "its tag (tampered, or wrapped under another key)") from None

        return self._call(f"unwrap with {key_id!r}", op)

    # ---- key administration (``pqseal keys create|rotate|status --kms pkcs11:...``) ------------

    def _generate(self, session, key_id: str, version: int, bits: int):
        p11 = _p11()
        A = p11.Attribute
        template = {A.TOKEN: True, A.PRIVATE: True, A.SENSITIVE: True, A.EXTRACTABLE: False, A.MODIFIABLE: True,
                    A.ENCRYPT: True, A.DECRYPT: True, A.WRAP: False, A.UNWRAP: False, A.SIGN: False,
                    A.VERIFY: False, A.DERIVE: False}
        try:
            session.generate_key(p11.KeyType.AES, bits, label=key_id, id=self._aad(key_id, version), store=True,
                                 template=template)
        except (p11.exceptions.TemplateInconsistent, p11.exceptions.AttributeValueInvalid,
                p11.exceptions.TokenWriteProtected) as exc:
            raise KeyAccessDenied(f"PKCS#11 token {self.token_label!r} refused to create master key "
                                  f"{key_id!r}: {type(exc).__name__}") from None

    def create_key(self, key_id: str, bits: int = 256) -> int:
        """Generate master key ``key_id`` (version 1) on the token; returns 1."""
        if not key_id or any(c in key_id for c in "\n\r"):
            raise ValueError("key id must be a non-empty single-line string")
        if bits not in (128, 192, 256):
            raise ValueError("master key length must be 128, 192 or 256 bits")

        def op(session):
            if self._versions(session, key_id):
                raise ValueError(f"master key {key_id!r} already exists (rotate it instead)")
            self._generate(session, key_id, 1, bits)
            return 1

        return self._call(f"create {key_id!r}", op)

    def rotate_key(self, key_id: str) -> int:
        """A new active version; earlier versions become decrypt-only. Returns the version."""
        A = _p11().Attribute

        def op(session):
            versions = self._require(self._versions(session, key_id), key_id)
            newest, obj = versions[-1]
            self._generate(session, key_id, newest + 1, int(obj[A.VALUE_LEN]) * 8)
            for _, o in versions:
                self._set(o, {A.ENCRYPT: False}, key_id)
            return newest + 1

        return self._call(f"rotate {key_id!r}", op)

    def key_status(self, key_id: str | None = None) -> list[KeyVersion]:
        """The versions of ``key_id`` (or of every pqseal master key on the token)."""
        p11 = _p11()
        A = p11.Attribute

        def op(session):
            if key_id is not None:
                ids = [key_id]
            else:
                ids = sorted({o[A.LABEL] for o in session.get_objects({A.CLASS: p11.ObjectClass.SECRET_KEY})})
            out = []
            for kid in ids:
                for v, o in self._versions(session, kid):
                    out.append(KeyVersion(kid, v, int(o[A.VALUE_LEN]) * 8, _state(o[A.ENCRYPT], o[A.DECRYPT])))
            if key_id is not None:
                self._require(out, key_id)
            return out

        return self._call(f"status of {key_id!r}" if key_id else "status", op)

    def disable_key(self, key_id: str, version: int | None = None) -> None:
        """Disable one version (or all): wraps and unwraps with it raise :class:`KeyDisabled`."""
        A = _p11().Attribute

        def op(session):
            for v, o in self._require(self._versions(session, key_id), key_id):
                if version is None or v == version:
                    self._set(o, {A.ENCRYPT: False, A.DECRYPT: False}, key_id)

        self._call(f"disable {key_id!r}", op)

    def enable_key(self, key_id: str) -> None:
        """Undo :meth:`disable_key`: the newest version active, earlier ones decrypt-only."""
        A = _p11().Attribute

        def op(session):
            versions = self._require(self._versions(session, key_id), key_id)
            for v, o in versions:
                self._set(o, {A.DECRYPT: True, A.ENCRYPT: v == versions[-1][0]}, key_id)

        self._call(f"enable {key_id!r}", op)

    def destroy_key(self, key_id: str, version: int | None = None) -> int:
        """Delete one version (or all) from the token; files wrapped with it become
        unreadable. Returns how many versions were destroyed."""
        def op(session):
            n = 0
            for v, o in self._require(self._versions(session, key_id), key_id):
                if version is None or v == version:
                    o.destroy()
                    self._token.handles.pop((key_id, v), None)
                    n += 1
            if not n:
                raise KeyNotFound(f"master key {key_id!r} has no version {version}")
            return n

        return self._call(f"destroy {key_id!r}", op)

    def _set(self, obj, attrs: dict, key_id: str) -> None:
        e = _p11().exceptions
        for a, value in attrs.items():
            try:
                obj[a] = value
            except (e.AttributeReadOnly, e.AttributeValueInvalid, e.TemplateInconsistent) as exc:
                raise KeyAccessDenied(f"PKCS#11 token {self.token_label!r} does not let pqseal change the "
                                      f"state of master key {key_id!r} ({type(exc).__name__})") from None

    def __repr__(self) -> str:
        return f"<Pkcs11Kms token {self.token_label!r} module {self.module}>"

    def __reduce__(self):
        raise TypeError("Pkcs11Kms holds a logged-in token session and cannot be pickled; pickle its factory")


# ---- URI -------------------------------------------------------------------------------------


@dataclass(eq=False)
class Pkcs11Factory:
    """``(KmsConnectionConfig) -> Pkcs11Kms``: one client per factory and process, opened
    (and the PIN read) on first use. Picklable: a worker process opens its own. Hashed by
    identity, so :func:`pqseal.api.crypto_factory` keeps one KEK cache per factory."""

    module: str
    token: str
    serial: str | None = None
    _client: Pkcs11Kms | None = field(default=None, init=False, repr=False, compare=False)
    _lock: Any = field(default_factory=threading.Lock, init=False, repr=False, compare=False)

    def __call__(self, config: KmsConnectionConfig | None = None) -> Pkcs11Kms:
        with self._lock:
            if self._client is None:
                self._client = Pkcs11Kms(self.module, self.token, serial=self.serial)
            return self._client

    def __getstate__(self):
        return {"module": self.module, "token": self.token, "serial": self.serial}

    def __setstate__(self, state):
        self.module, self.token, self.serial = state["module"], state["token"], state["serial"]
        self._client, self._lock = None, threading.Lock()


def from_uri(uri) -> Pkcs11Factory:
    """The factory for ``pkcs11:module=PATH;token=LABEL[;serial=S]`` (a
    :class:`~pqseal.kms.uri.KmsUri`; ``module-path`` is accepted as RFC 7512 spells it)."""
    opts = dict(uri.options)
    secret = _SECRET_ATTRIBUTES & set(opts)
    if secret:
        raise ValueError(f"pkcs11 URI: {', '.join(sorted(secret))} is refused; the PIN comes from "
                         f"${PIN_ENV}, ${PIN_FILE_ENV} or a prompt")
    unknown = set(opts) - URI_ATTRIBUTES
    if unknown:
        raise ValueError(f"pkcs11 URI: unknown attribute(s) {', '.join(sorted(unknown))} "
                         f"(known: {', '.join(sorted(URI_ATTRIBUTES))})")
    if "module" in opts and "module-path" in opts:
        raise ValueError("pkcs11 URI: give module or module-path, not both")
    module = opts.get("module") or opts.get("module-path")
    if not module or not opts.get("token"):
        raise ValueError("pkcs11 URI needs module=PATH and token=LABEL, e.g. "
                         "pkcs11:module=/usr/lib/softhsm/libsofthsm2.so;token=NAME")
    return Pkcs11Factory(module, opts["token"], opts.get("serial") or None)


__all__ = ["Pkcs11Kms", "Pkcs11Factory", "KeyVersion", "from_uri", "pin_from_environment", "WRAP_PREFIX"]
