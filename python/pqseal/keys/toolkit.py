"""Envelope encryption of data keys, compatible with parquet-java's and Arrow's key tools.

- Single wrapping: ``wrappedDEK = kms.wrap_key(DEK, masterKeyID)``.
- Double wrapping (default): per master key a random KEK and 16-byte KEK id;
  ``wrappedKEK = kms.wrap_key(KEK, masterKeyID)``, ``wrappedDEK = base64(nonce‖GCM_KEK(DEK,
  AAD = raw KEK id)‖tag)``. KEKs are cached per access token and master key (writers) or
  per KEK id (readers) for ``cache_lifetime`` seconds, so a job makes one KMS call per
  master key, not one per file or column.
- KMS clients are cached per access token and KMS instance id, as parquet-java does.
- The caches belong to a session (:class:`KeyCaches`, one per ``CryptoFactory``), not to
  the process: parquet-java keeps them in static fields; Arrow, like pqseal, per factory.
"""

from __future__ import annotations

import base64
import threading
import time
import weakref
from typing import Callable

from ..crypto import random_bytes, unwrap_key_locally, wrap_key_locally
from ..errors import KmsError, MalformedKeyMaterial, PqsealError
from ..kms.base import KmsClient, KmsConnectionConfig
from ..kms.context import key_context
from .material import KeyMaterial

KEK_ID_LEN = 16
DEFAULT_CACHE_LIFETIME = 600.0


class _Ident:
    """Cache-key part by object identity that keeps the object alive (so its id() can't be
    reused by another object while the entry exists), whatever its __eq__/__hash__."""

    __slots__ = ("obj",)

    def __init__(self, obj):
        self.obj = obj

    def __eq__(self, other):
        return isinstance(other, _Ident) and other.obj is self.obj

    def __hash__(self):
        return id(self.obj)


class ExpiringCache:
    """token → {key → value}; a token's whole inner map expires ``lifetime`` seconds after
    it was created (parquet-java's TwoLevelCacheWithExpiration)."""

    def __init__(self):
        self._lock = threading.Lock()
        self._maps: dict[str, tuple[float, dict]] = {}
        self._creating: dict[tuple, threading.Lock] = {}   # (token, key) -> lock of its creator

    def get_or_create(self, token: str, key, lifetime: float, create: Callable):
        """The cached value, or ``create()``'s. Threads asking for the same missing entry
        at once wait for one creator (one KMS call, not one per thread); ``create`` runs
        outside the cache's lock, so other entries are not held up by a slow KMS."""
        while True:
            now = time.monotonic()
            with self._lock:
                entry = self._maps.get(token)
                if entry is None or now >= entry[0]:
                    entry = self._maps[token] = (now + lifetime, {})
                    for t in [t for t, (exp, _) in self._maps.items() if now >= exp]:
                        del self._maps[t]
                inner = entry[1]
                if key in inner:
                    return inner[key]
                other = self._creating.get((token, key))
                if other is None:
                    flight = self._creating[(token, key)] = threading.Lock()
                    flight.acquire()
            if other is not None:
                with other:   # wait for the creator, then look again (it may have failed)
                    pass
                continue
            try:
                value = create()  # outside the lock: KMS calls may be slow
                with self._lock:
                    return inner.setdefault(key, value)
            finally:
                with self._lock:
                    del self._creating[(token, key)]
                flight.release()

    def clear(self) -> None:
        with self._lock:
            self._maps.clear()


class KeyCaches:
    """The caches of one key-management session (a :class:`~pqseal.keys.CryptoFactory`
    owns one): KMS clients per access token and KMS instance, KEKs for writing per master
    key, KEKs for reading per KEK id, each expiring after the configured lifetime. Two
    factories share nothing, so a rotation or a test cannot clear another writer's KEKs."""

    def __init__(self):
        self.kms_clients = ExpiringCache()
        self.kek_write = ExpiringCache()
        self.kek_read = ExpiringCache()
        _ALL.add(self)

    def clear(self) -> None:
        for c in (self.kms_clients, self.kek_write, self.kek_read):
            c.clear()

    def kms_client(self, factory: Callable[[KmsConnectionConfig], KmsClient], config: KmsConnectionConfig,
                   lifetime: float) -> KmsClient:
        # keyed by the factory object itself (not its id(), which a new object may reuse)
        return self.kms_clients.get_or_create(config.key_access_token, (_Ident(factory), config.kms_instance_id),
                                              lifetime, lambda: factory(config))


_ALL: weakref.WeakSet = weakref.WeakSet()


def clear_caches() -> None:
    """Forget every cached KMS client and KEK of this process (all sessions)."""
    for c in list(_ALL):
        c.clear()


def _kms_call(fn, what: str):
    try:
        return fn()
    except PqsealError:
        raise
    except Exception as exc:  # a third-party client: keep the type and message, no key bytes
        raise KmsError(f"KMS {what} failed: {type(exc).__name__}: {exc}") from exc


def wrap_with_kek(dek, master_key_id: str, is_footer_key: bool, kek, kek_id: bytes, wrapped_kek: str,
                  config: KmsConnectionConfig) -> KeyMaterial:
    """Double-wrapped key material of ``dek``: wrapped locally under ``kek`` (AAD = the raw
    KEK id), with the KEK as its master key wrapped it and ``config``'s KMS coordinates."""
    return KeyMaterial(is_footer_key, master_key_id, wrap_key_locally(dek, kek, kek_id), True,
                       base64.b64encode(kek_id).decode(), wrapped_kek, config.kms_instance_id,
                       config.kms_instance_url)


def kek_of(m: KeyMaterial) -> tuple[bytes, str]:
    """(raw KEK id, wrapped KEK) of double-wrapped key material, checked."""
    if m.kek_id is None or m.wrapped_kek is None:
        raise MalformedKeyMaterial("double-wrapped key material without keyEncryptionKeyID or wrappedKEK")
    try:
        return base64.b64decode(m.kek_id, validate=True), m.wrapped_kek
    except (ValueError, TypeError):
        raise MalformedKeyMaterial("keyEncryptionKeyID is not base64") from None


class KeyWrapper:
    """Wraps the DEKs of files written under one KMS connection."""

    def __init__(self, kms: KmsClient, config: KmsConnectionConfig, *, double_wrapping: bool = True,
                 cache_lifetime: float = DEFAULT_CACHE_LIFETIME, kek_length_bits: int = 128,
                 cache: ExpiringCache | None = None):
        """``cache``: where KEKs live (a session's ``KeyCaches.kek_write``); None: this
        wrapper's own."""
        if kek_length_bits not in (128, 192, 256):
            raise ValueError("KEK length must be 128, 192 or 256 bits")
        self.kms, self.config = kms, config
        self.double_wrapping = double_wrapping
        self.cache_lifetime = cache_lifetime
        self.kek_bytes = kek_length_bits // 8
        self._cache = ExpiringCache() if cache is None else cache

    def _kek(self, master_key_id: str):
        def create():
            kek_id = random_bytes(KEK_ID_LEN)
            generate = getattr(self.kms, "generate_key", None)   # a KMS that makes keys (AWS GenerateDataKey)
            with key_context(replace=True, kek_id=base64.b64encode(kek_id).decode()):  # a KEK serves many files
                if generate is not None:
                    kek, wrapped = _kms_call(lambda: generate(master_key_id, self.kek_bytes),
                                             f"generate a key with {master_key_id!r}")
                else:
                    kek = random_bytes(self.kek_bytes)
                    wrapped = _kms_call(lambda: self.kms.wrap_key(kek, master_key_id), f"wrap with {master_key_id!r}")
            return kek, kek_id, wrapped
        return self._cache.get_or_create(self.config.key_access_token, (_Ident(self.kms), master_key_id),
                                             self.cache_lifetime, create)

    def wrap(self, dek: bytes, master_key_id: str, is_footer_key: bool) -> KeyMaterial:
        if self.double_wrapping:
            kek, kek_id, wrapped_kek = self._kek(master_key_id)
            return wrap_with_kek(dek, master_key_id, is_footer_key, kek, kek_id, wrapped_kek, self.config)
        wrapped_dek = _kms_call(lambda: self.kms.wrap_key(dek, master_key_id), f"wrap with {master_key_id!r}")
        if not isinstance(wrapped_dek, str):
            raise KmsError("KMS wrap_key must return str")
        return KeyMaterial(is_footer_key, master_key_id, wrapped_dek, False, None, None,
                           self.config.kms_instance_id, self.config.kms_instance_url)


class KeyUnwrapper:
    """Unwraps DEKs from key material (caching KEKs by KEK id)."""

    def __init__(self, kms: KmsClient, config: KmsConnectionConfig, *,
                 cache_lifetime: float = DEFAULT_CACHE_LIFETIME, cache: ExpiringCache | None = None):
        self.kms, self.config = kms, config
        self.cache_lifetime = cache_lifetime
        self._cache = ExpiringCache() if cache is None else cache

    def unwrap(self, m: KeyMaterial) -> bytes:
        if not m.double_wrapping:
            dek = _kms_call(lambda: self.kms.unwrap_key(m.wrapped_dek, m.master_key_id),
                            f"unwrap with {m.master_key_id!r}")
            return bytes(dek)
        kek_id, wrapped_kek = kek_of(m)

        def create():
            with key_context(replace=True, kek_id=m.kek_id):
                return bytes(_kms_call(lambda: self.kms.unwrap_key(wrapped_kek, m.master_key_id),
                                       f"unwrap with {m.master_key_id!r}"))
        kek = self._cache.get_or_create(self.config.key_access_token, (_Ident(self.kms), m.kek_id),
                                        self.cache_lifetime, create)
        return unwrap_key_locally(m.wrapped_dek, kek, kek_id)
