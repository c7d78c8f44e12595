"""Two-tier key sessions (Apache Spark's SPARK-33966, never merged there): the driver
alone talks to the KMS; workers seal and open files with the session's key-encryption
keys (KEKs) and never construct a KMS client.

Write side: one KEK per master key per session, each wrapped by one KMS call; workers
draw fresh DEKs per file and column and wrap them under the KEK locally (double
wrapping), writing PKMT1 key material that pyarrow and parquet-java read with their own
KMS clients. Read side: the driver scans the files' key material (footers, decrypted
with the footer DEK where the footer is encrypted, and ``_KEY_MATERIAL_FOR_*`` files;
no page is read), gathers the distinct wrapped KEKs and unwraps each with one KMS call.

A session holds key bytes, so it leaves its process only on request: ``export()`` /
``KeySession.import_()``, or pickling after ``portable()``. Its ``repr`` shows no key
bytes; ``close()`` wipes them; after ``expires_at`` (wall clock) every use is refused.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import json
import math
import os
import sys
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone

from ..crypto import KEY_LENGTHS, random_bytes, unwrap_key_locally
from ..errors import KeyNotFound, KmsError, MalformedKeyMaterial, PqsealError, SessionExpired, UnsupportedFeature
from ..format.properties import DecryptionProperties, EncryptionProperties
from ..kms.base import KmsClient, KmsConnectionConfig
from .config import DecryptionConfig, EncryptionConfig
from .factory import encryption_properties, kms_connection_for, rewrap
from .material import KeyMaterial
from .scan import KeyMaterialReader, scan_file
from ..kms.context import key_context
from .template import UnresolvedTemplate, is_template, master_key_ids, resolve
from .toolkit import KEK_ID_LEN, _kms_call, kek_of, wrap_with_kek

DEFAULT_SESSION_LIFETIME = 3600.0
EXPORT_FORMAT = "pqseal-key-session"
EXPORT_VERSION = 1


@dataclass(eq=False)
class _Kek:
    """A key-encryption key: its master key, raw 16-byte id and bytes (wiped on close)."""

    master_key_id: str
    kek_id: bytes
    key: bytearray


class KeySession:
    """The KEKs of one job.

    Driver side (makes every KMS call, through ``kms`` only; counted in ``kms_calls``):

    - ``KeySession.open(kms=None, encryption=None, *, decryption=None,
      kms_connection_config=None, lifetime=DEFAULT_SESSION_LIFETIME)``. ``kms``: a KMS
      client, a factory ``(KmsConnectionConfig) -> KmsClient`` or None (the local
      keystore), as :func:`pqseal.encrypt_file` takes it. ``encryption``: an
      :class:`EncryptionConfig`, pyarrow's ``EncryptionConfiguration`` or a zone policy;
      one KEK (``kek_length_bits`` long, with a random 16-byte id) per master key it names
      (footer, column and uniform keys), each wrapped by one KMS call. None: a read-only
      session. Master key id templates (``tenant-{customer_id}``,
      :mod:`pqseal.keys.template`) get no KEK here: the driver resolves them for the
      files of the job and adds the resulting ids (``add_master_keys``). Single
      wrapping (``double_wrapping=False``) is refused: it needs a KMS call per data key,
      which a worker cannot make. ``decryption`` (pqseal's or pyarrow's
      decryption config) is accepted for symmetry with :class:`CryptoFactory`; its cache
      lifetime is superseded by ``lifetime`` (seconds), after which the session is
      refused everywhere (``expires_at``, wall clock, so it holds on other hosts too).
    - ``add_files(paths) -> int``: the read keys of PME files: each file's footer and
      column key material (see :mod:`pqseal.keys.scan`; no page is read), KEKs unwrapped
      with one KMS call per distinct (master key id, KEK id); single-wrapped data keys
      with one call per distinct wrapped key. KMS coordinates as in
      :meth:`CryptoFactory.file_decryption_properties` (where ``kms_connection_config``
      says DEFAULT, the footer material's). A file that cannot be read (missing or
      disabled key, malformed material, not Parquet) does not stop the scan: it lands in
      ``unreadable`` ({path: one-line reason}); a KEK whose unwrap failed is not asked
      for again in the same call. Returns the KMS calls made.
    - ``add_master_keys(ids) -> int``: write KEKs for more master keys, one KMS wrap each
      (under the master key's current version), e.g. for rotation; master keys that have
      one already are skipped. Returns the KMS calls made. A template id raises
      :class:`~pqseal.keys.template.UnresolvedTemplate`.
    - ``file_master_keys(path)``: the master key ids of the DEKs of a file ``add_files``
      scanned (footer first): the write KEKs its rotation needs.
    - For usage counting (:mod:`pqseal.dataset.usage`): ``kms_seal_usage()``, the KMS's
      ``seal_usage`` where it counts usage (the local keystore), else None;
      ``write_wrappings(partition=None)`` and ``rewrap_wrappings(path)``: for each DEK a
      worker will wrap for a new file (``encryption_properties``) or re-wrap in a file
      ``add_files`` scanned (``rewrap_material``), the material of the write KEK it goes
      under, without a wrapped DEK. Neither the KMS client nor these travel to workers.

    Worker side (no KMS; :class:`~pqseal.errors.KeyNotFound` for a key the session lacks,
    naming the master key id and KEK id; :class:`~pqseal.errors.SessionExpired` after
    ``expires_at`` or ``close()``):

    - ``encryption_properties(dst=None, partition=None, *, config=None) ->
      EncryptionProperties``: fresh DEKs for the footer and each column, wrapped under the
      KEKs (AAD = the raw KEK id): the PKMT1 material (internal or external)
      :meth:`CryptoFactory.file_encryption_properties` writes. ``dst`` is not needed
      (external material travels in the properties). ``partition``: the file's partition
      values ({name: value}), which resolve the config's master key id templates
      (:func:`pqseal.keys.template.resolve`). ``config``: another
      :class:`EncryptionConfig` than the session's, whose master keys have write KEKs
      here (``add_master_keys``), e.g. one per partition of a compaction.
    - ``decryption_properties(src=None) -> DecryptionProperties``: DEKs unwrapped with the
      session's KEKs; external material read from beside ``src``.
    - ``rewrap_material(material) -> dict``: the entries of a ``_KEY_MATERIAL_FOR_*``
      file ({reference: PKMT1 JSON}) re-wrapped under the session's write KEKs: the
      driver ran ``add_files`` (old KEKs) and ``add_master_keys`` (new ones) first. Footer
      entries keep their KMS coordinates, as :meth:`CryptoFactory.rotate_master_keys`
      does; every entry comes out double-wrapped.

    Portability: ``portable() -> self`` allows pickling (otherwise a TypeError);
    ``export() -> bytes`` and ``KeySession.import_(data)``. An imported or unpickled
    session has no KMS client (nor access token): only the driver's session makes KMS
    calls. ``close()`` (also on leaving ``with``) wipes the key bytes.

    Key bytes live in ``bytearray`` objects that ``close()`` zeroes. Copies Python makes
    as ``bytes`` cannot be wiped: what the CSPRNG and the KMS client return, the keys
    handed to the engine, the text of an export. That is a limit of Python, not a promise
    this class can keep.
    """

    def __init__(self, *, config: EncryptionConfig | None, connection: KmsConnectionConfig, kek_length_bits: int,
                 expires_at: float, kms=None, portable: bool = False):
        """Use :meth:`open` or :meth:`import_`."""
        self._lock = threading.RLock()
        self._kms = kms                      # a KMS client factory; None: imported (worker side)
        self._clients: dict[tuple, KmsClient] = {}
        self._conn = connection
        self._config = config
        self._kek_bytes = kek_length_bits // 8
        self._write: dict[str, tuple[_Kek, str]] = {}          # master key id -> (KEK, wrapped KEK)
        self._read: dict[tuple[str, bytes], _Kek] = {}         # (master key id, KEK id) -> KEK
        self._deks: dict[tuple[str, str], bytearray] = {}      # (master key id, wrapped DEK) -> single-wrapped DEK
        self._file_keys: dict[str, tuple[str, ...]] = {}       # path -> master key ids of its DEKs (driver only)
        self._portable = portable
        self._closed = False
        self.expires_at = float(expires_at)
        self.kms_calls = 0
        self.unreadable: dict[str, str] = {}

    # ---- driver side -------------------------------------------------------------------------

    @classmethod
    def open(cls, kms=None, encryption=None, *, decryption: DecryptionConfig | None = None,
             kms_connection_config=None, lifetime: float = DEFAULT_SESSION_LIFETIME) -> "KeySession":
        from ..api import kms_factory
        from ..arrow import connection_config, decryption_config

        from ..io.zones import ZonePolicy

        if kms is None and isinstance(encryption, ZonePolicy):
            kms = encryption.kms            # the zone's KMS URI, if it names one
        cfg = _encryption_config(encryption)
        decryption_config(decryption)   # a TypeError for anything else
        if isinstance(lifetime, bool) or not isinstance(lifetime, (int, float)) or not 0 < lifetime < math.inf:
            raise ValueError(f"lifetime must be a positive number of seconds, got {lifetime!r}")
        if cfg is not None and not cfg.double_wrapping:
            raise UnsupportedFeature("a key session needs double wrapping: with double_wrapping=False every data "
                                     "key is wrapped by the KMS, so workers would need KMS access")
        conn = KmsConnectionConfig() if kms_connection_config is None else connection_config(kms_connection_config)
        session = cls(config=cfg, connection=conn, kek_length_bits=cfg.kek_length_bits if cfg else 128,
                      expires_at=time.time() + lifetime, kms=kms_factory(kms))
        if cfg is not None:
            session.add_master_keys([mk for mk in master_key_ids(cfg) if not is_template(mk)])
        return session

    def add_master_keys(self, master_key_ids: Iterable[str]) -> int:
        calls = 0
        for mk in dict.fromkeys(master_key_ids):
            if not isinstance(mk, str) or not mk:
                raise ValueError(f"a master key id must be a non-empty string, got {mk!r}")
            if is_template(mk):
                raise UnresolvedTemplate(f"master key id template {mk!r}: add the ids it resolves to for the job's "
                                         "files, not the template")
            with self._lock:
                self._check_usable()
                if mk in self._write:
                    continue
            kek, kek_id = bytearray(random_bytes(self._kek_bytes)), random_bytes(KEK_ID_LEN)
            client = self._client(self._conn)
            with key_context(replace=True, kek_id=base64.b64encode(kek_id).decode()):   # a KMS may bind the KEK to it
                wrapped = self._kms_call(lambda: client.wrap_key(bytes(kek), mk), f"wrap with {mk!r}")
            calls += 1
            if not isinstance(wrapped, str):
                raise KmsError("KMS wrap_key must return str")
            entry = _Kek(mk, kek_id, kek)
            with self._lock:
                self._check_usable()
                self._write[mk] = (entry, wrapped)
                self._read[(mk, kek_id)] = entry   # files this session writes, it can read
        return calls

    def add_files(self, paths: Iterable) -> int:
        with self._lock:
            self._check_usable()
            self._require_kms()
            before = self.kms_calls
        failed: dict[tuple, PqsealError] = {}
        for p in paths:
            path = os.fspath(p)
            try:
                self._add_file(path, failed)
            except SessionExpired:
                raise
            except (PqsealError, OSError) as exc:
                self.unreadable[path] = _one_line(exc)
            else:
                self.unreadable.pop(path, None)
        return self.kms_calls - before

    def _add_file(self, path: str, failed: dict) -> None:
        conn = self._conn

        def footer_dek(material: KeyMaterial) -> bytes:
            nonlocal conn
            conn = kms_connection_for(self._conn, material)
            self._fetch(material, conn, failed)
            return self._unwrap(material)

        keys = scan_file(path, footer_dek)
        for material in keys.columns if keys is not None else ():
            self._fetch(material, conn, failed)
            self._unwrap(material)   # the DEK opens: the file is readable with this session
        if keys is not None:
            ids = tuple(sys.intern(m.master_key_id) for m in (keys.footer, *keys.columns))
            with self._lock:
                self._file_keys[path] = ids

    def _fetch(self, m: KeyMaterial, conn: KmsConnectionConfig, failed: dict) -> None:
        """Unwrap with the KMS what ``m`` needs and the session lacks: its KEK (double
        wrapping) or its DEK (single)."""
        if m.double_wrapping:
            kek_id, wrapped = kek_of(m)
            key: tuple = (m.master_key_id, kek_id)
            with self._lock:
                if key in self._read:
                    return
        else:
            key, wrapped = (m.master_key_id, m.wrapped_dek), m.wrapped_dek
            with self._lock:
                if key in self._deks:
                    return
        if key in failed:
            raise failed[key]
        try:
            client = self._client(conn)
            with key_context(replace=True, kek_id=m.kek_id if m.double_wrapping else None):
                raw = self._kms_call(lambda: client.unwrap_key(wrapped, m.master_key_id),
                                     f"unwrap with {m.master_key_id!r}")
            if not isinstance(raw, (bytes, bytearray)) or len(raw) not in KEY_LENGTHS:
                raise KmsError(f"KMS unwrap with {m.master_key_id!r} returned no 16, 24 or 32-byte key")
        except PqsealError as exc:
            failed[key] = exc
            raise
        with self._lock:
            self._check_usable()
            if m.double_wrapping:
                self._read.setdefault(key, _Kek(m.master_key_id, key[1], bytearray(raw)))
            else:
                self._deks.setdefault(key, bytearray(raw))

    def _require_kms(self):
        """The KMS client factory (the driver's session has one)."""
        if self._kms is None:
            raise KmsError("this key session has no KMS client (it was imported or unpickled): KMS calls "
                           "(add_files, add_master_keys) are made by the session the driver opened")
        return self._kms

    def _client(self, conn: KmsConnectionConfig) -> KmsClient:
        factory = self._require_kms()
        where = (conn.kms_instance_id, conn.kms_instance_url, conn.key_access_token)
        with self._lock:
            client = self._clients.get(where)
        if client is None:
            client = _kms_call(lambda: factory(conn), "client construction")
            with self._lock:
                client = self._clients.setdefault(where, client)
        return client

    def _kms_call(self, fn, what: str):
        """A wrap or unwrap by the KMS, counted."""
        with self._lock:
            self.kms_calls += 1
        return _kms_call(fn, what)

    def kms_seal_usage(self):
        """The ``seal_usage`` of the KMS client the write KEKs were wrapped by, where that
        KMS counts usage and enforces usage limits (the local keystore:
        :meth:`~pqseal.kms.keystore.LocalKeystore.seal_usage`); else None."""
        return getattr(self._client(self._conn), "seal_usage", None)

    def write_wrappings(self, partition: Mapping[str, object] | None = None, *,
                        config: EncryptionConfig | None = None) -> list[KeyMaterial]:
        """For each DEK ``encryption_properties(dst, partition, config=config)`` draws
        (footer first), the material of the write KEK it is wrapped under, without a
        wrapped DEK."""
        with self._lock:
            cfg = self._config if config is None else config
        if cfg is None:
            return []
        if partition is not None:
            cfg = resolve(cfg, partition)
        columns = [] if cfg.uniform_encryption else [mk for mk, cols in (cfg.column_keys or {}).items() for _ in cols]
        return self._kek_materials([cfg.footer_key, *columns])

    def file_master_keys(self, path) -> tuple[str, ...]:
        """The master key ids of the DEKs of a file ``add_files`` scanned (footer first)."""
        with self._lock:
            return self._file_keys.get(os.fspath(path), ())

    def rewrap_wrappings(self, path) -> list[KeyMaterial]:
        """For each DEK of a file ``add_files`` scanned (footer first), the material of the
        write KEK ``rewrap_material`` wraps it under, without a wrapped DEK."""
        return self._kek_materials(self.file_master_keys(path))

    def _kek_materials(self, master_key_ids: Iterable[str]) -> list[KeyMaterial]:
        with self._lock:
            self._check_usable()
            out = []
            for i, mk in enumerate(master_key_ids):
                entry = self._write.get(mk)
                if entry is not None:     # else the worker fails the file (KeyNotFound)
                    kek, wrapped = entry
                    out.append(KeyMaterial(i == 0, mk, "", True, _b64(kek.kek_id), wrapped))
            return out

    # ---- worker side -------------------------------------------------------------------------

    def encryption_properties(self, dst=None, partition: Mapping[str, object] | None = None, *,
                              config: EncryptionConfig | None = None) -> EncryptionProperties:
        with self._lock:
            self._check_usable()
            cfg = self._config if config is None else config
        if cfg is None:
            raise KeyNotFound("this key session is read-only (opened without an encryption config): it has no "
                              "keys to write with")
        if partition is not None:
            cfg = resolve(cfg, partition, "" if dst is None else f" for {os.fspath(dst)}")
        return encryption_properties(cfg, self._wrap)

    def decryption_properties(self, src=None) -> DecryptionProperties:
        with self._lock:
            self._check_usable()
        reader = KeyMaterialReader(src if isinstance(src, (str, os.PathLike)) else None)

        def retrieve(key_metadata: bytes | None, column_path: str | None) -> bytes:
            return self._unwrap(reader.material(key_metadata))

        return DecryptionProperties(key_retriever=retrieve)

    def rewrap_material(self, material: dict[str, str]) -> dict[str, str]:
        with self._lock:
            self._check_usable()
        if not isinstance(material, Mapping) or not all(isinstance(k, str) and isinstance(v, str)
                                                        for k, v in material.items()):
            raise MalformedKeyMaterial("key material to re-wrap must be a mapping of key references to PKMT1 "
                                       "JSON text")
        return rewrap(material, self._unwrap, self._wrap)

    def _wrap(self, dek: bytes, master_key_id: str, is_footer_key: bool) -> KeyMaterial:
        with self._lock:
            self._check_usable()
            entry = self._write.get(master_key_id)
            if entry is None:
                raise KeyNotFound(f"the key session has no write KEK for master key {master_key_id!r}: add it on "
                                  "the driver (add_master_keys)")
            kek, wrapped = entry
            return wrap_with_kek(dek, master_key_id, is_footer_key, kek.key, kek.kek_id, wrapped, self._conn)

    def _unwrap(self, m: KeyMaterial) -> bytes:
        with self._lock:
            self._check_usable()
            if not m.double_wrapping:
                dek = self._deks.get((m.master_key_id, m.wrapped_dek))
                if dek is None:
                    raise KeyNotFound(f"the key session lacks a single-wrapped data key of master key "
                                      f"{m.master_key_id!r}: scan the file on the driver first (add_files)")
                return bytes(dek)
            kek_id, _ = kek_of(m)
            kek = self._read.get((m.master_key_id, kek_id))
            if kek is None:
                raise KeyNotFound(f"the key session has no KEK {m.kek_id} of master key {m.master_key_id!r}: scan "
                                  "the file on the driver first (add_files)")
            return unwrap_key_locally(m.wrapped_dek, kek.key, kek_id)

    # ---- lifetime ----------------------------------------------------------------------------

    def _check_usable(self) -> None:
        if self._closed:
            raise SessionExpired("the key session is closed")
        if time.time() >= self.expires_at:
            raise SessionExpired(f"the key session expired at {_when(self.expires_at)}")

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        with self._lock:
            for kek, _ in self._write.values():
                kek.key[:] = bytes(len(kek.key))
            for kek in self._read.values():
                kek.key[:] = bytes(len(kek.key))
            for dek in self._deks.values():
                dek[:] = bytes(len(dek))
            self._write.clear()
            self._read.clear()
            self._deks.clear()
            self._file_keys.clear()
            self._clients.clear()
            self._kms = None
            self._closed = True

    def __enter__(self) -> "KeySession":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self):
        if hasattr(self, "_lock"):
            self.close()

    @property
    def write_master_key_ids(self) -> frozenset:
        """Master keys the session can write with."""
        with self._lock:
            return frozenset(self._write)

    @property
    def read_master_key_ids(self) -> frozenset:
        """Master keys of the KEKs and data keys the session can read with."""
        with self._lock:
            return frozenset(mk for mk, _ in self._read) | frozenset(mk for mk, _ in self._deks)

    def __repr__(self) -> str:   # master key ids and counts; never key bytes, wrapped keys or KEK ids
        with self._lock:
            if self._closed:
                return "<KeySession closed>"
            left = self.expires_at - time.time()
            when = f"expires {_when(self.expires_at)} (in {left:.0f} s)" if left > 0 else \
                f"expired {_when(self.expires_at)}"
            return (f"<KeySession write={sorted(self._write)} read={sorted(self.read_master_key_ids)} "
                    f"keks={len(self._read)} single_wrapped_deks={len(self._deks)} kms_calls={self.kms_calls} "
                    f"unreadable={len(self.unreadable)} {when} portable={self._portable} "
                    f"{'driver' if self._kms is not None else 'no KMS'}>")

    # ---- portability -------------------------------------------------------------------------

    def portable(self) -> "KeySession":
        """Allow pickling (e.g. for Dask); returns self. The pickle holds key bytes in the
        clear, like :meth:`export`."""
        self._portable = True
        return self

    @property
    def is_portable(self) -> bool:
        return self._portable

    def __reduce__(self):
        if not self._portable:
            raise TypeError("a KeySession holds key bytes and is not pickled unless made portable: call "
                            "session.portable() (and send it only over an encrypted channel)")
        return (KeySession.import_, (self.export(),))

    def export(self) -> bytes:
        """The session as a versioned JSON document, for workers (:meth:`import_`): its
        KEKs, single-wrapped DEKs, encryption config, KMS coordinates (no access token)
        and expiry. It holds key bytes IN THE CLEAR (base64): send it only over an
        encrypted, authenticated channel and never store it."""
        with self._lock:
            self._check_usable()
            writing = {id(kek) for kek, _ in self._write.values()}
            doc = {
                "format": EXPORT_FORMAT, "version": EXPORT_VERSION, "expires_at": self.expires_at,
                "portable": self._portable, "kek_length_bits": self._kek_bytes * 8,
                "kms": {"kms_instance_id": self._conn.kms_instance_id,
                        "kms_instance_url": self._conn.kms_instance_url},
                "encryption": None if self._config is None else _config_to_json(self._config),
                "write_keks": [{"master_key_id": mk, "kek_id": _b64(kek.kek_id), "kek": _b64(kek.key),
                                "wrapped_kek": wrapped} for mk, (kek, wrapped) in self._write.items()],
                "read_keks": [{"master_key_id": kek.master_key_id, "kek_id": _b64(kek.kek_id), "kek": _b64(kek.key)}
                              for kek in self._read.values() if id(kek) not in writing],
                "deks": [{"master_key_id": mk, "wrapped_dek": wrapped, "dek": _b64(dek)}
                         for (mk, wrapped), dek in self._deks.items()],
            }
        return json.dumps(doc).encode()

    @classmethod
    def import_(cls, data) -> "KeySession":
        """A session from :meth:`export`'s document, without a KMS client. Anything else
        raises :class:`~pqseal.errors.MalformedKeyMaterial`."""
        if isinstance(data, (bytes, bytearray, memoryview)):
            try:
                data = bytes(data).decode("utf-8")
            except UnicodeDecodeError:
                raise MalformedKeyMaterial("key session export is not UTF-8") from None
        if not isinstance(data, str):
            raise MalformedKeyMaterial(f"a key session export is bytes, not {type(data).__name__}")
        try:
            doc = json.loads(data)
        except (ValueError, RecursionError):
            raise MalformedKeyMaterial("key session export is not JSON") from None
        doc = _fields(doc, "key session export", ("format", "version", "expires_at", "portable", "kek_length_bits",
                                                   "kms", "encryption", "write_keks", "read_keks", "deks"))
        if doc["format"] != EXPORT_FORMAT:
            raise MalformedKeyMaterial("not a key session export")
        if type(doc["version"]) is not int or doc["version"] != EXPORT_VERSION:
            raise MalformedKeyMaterial(f"key session export version {doc['version']!r} is not supported "
                                       f"(this pqseal reads version {EXPORT_VERSION})")
        expires = doc["expires_at"]
        if isinstance(expires, bool) or not isinstance(expires, (int, float)) or not math.isfinite(expires):
            raise MalformedKeyMaterial("key session export: expires_at must be a number")
        if not isinstance(doc["portable"], bool) or doc["kek_length_bits"] not in (128, 192, 256) \
                or isinstance(doc["kek_length_bits"], bool):
            raise MalformedKeyMaterial("key session export: bad portable or kek_length_bits")
        kms = _fields(doc["kms"], "kms", ("kms_instance_id", "kms_instance_url"))
        conn = KmsConnectionConfig(_text(kms, "kms_instance_id"), _text(kms, "kms_instance_url"))
        cfg = None if doc["encryption"] is None else _config_from_json(doc["encryption"])
        session = cls(config=cfg, connection=conn, kek_length_bits=doc["kek_length_bits"], expires_at=expires,
                      portable=doc["portable"])
        for item in _list(doc, "write_keks"):
            item = _fields(item, "write KEK", ("master_key_id", "kek_id", "kek", "wrapped_kek"))
            kek = _kek(item)
            if kek.master_key_id in session._write:
                raise MalformedKeyMaterial(f"key session export: master key {kek.master_key_id!r} has two write KEKs")
            session._write[kek.master_key_id] = (kek, _text(item, "wrapped_kek"))
            session._read[(kek.master_key_id, kek.kek_id)] = kek
        for item in _list(doc, "read_keks"):
            kek = _kek(_fields(item, "read KEK", ("master_key_id", "kek_id", "kek")))
            if session._read.setdefault((kek.master_key_id, kek.kek_id), kek) is not kek:
                raise MalformedKeyMaterial("key session export: a KEK is listed twice")
        for item in _list(doc, "deks"):
            item = _fields(item, "data key", ("master_key_id", "wrapped_dek", "dek"))
            dek = _key_bytes(item, "dek", KEY_LENGTHS)
            if session._deks.setdefault((_text(item, "master_key_id"), _text(item, "wrapped_dek")), dek) is not dek:
                raise MalformedKeyMaterial("key session export: a data key is listed twice")
        if cfg is not None:
            missing = {mk for mk in master_key_ids(cfg) if not is_template(mk)} - set(session._write)
            if missing:
                raise MalformedKeyMaterial(f"key session export: no write KEK for master keys {sorted(missing)}")
        return session


# ---- helpers -----------------------------------------------------------------------------------


def _encryption_config(encryption) -> EncryptionConfig | None:
    """pqseal's config from pqseal's, pyarrow's or a zone policy's (None: read-only)."""
    if encryption is None or isinstance(encryption, EncryptionConfig):
        return encryption
    from ..arrow import encryption_config
    from ..io.zones import ZonePolicy

    if isinstance(encryption, ZonePolicy):
        return encryption.encryption_config()
    return encryption_config(encryption)


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _when(t: float) -> str:
    return datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _b64(raw) -> str:
    return base64.b64encode(bytes(raw)).decode("ascii")


def _config_to_json(cfg: EncryptionConfig) -> dict:
    out = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg)}
    out["column_keys"] = None if cfg.column_keys is None else {mk: list(c) for mk, c in cfg.column_keys.items()}
    out["aad_prefix"] = None if cfg.aad_prefix is None else _b64(cfg.aad_prefix)
    return out


def _config_from_json(obj) -> EncryptionConfig:
    names = tuple(f.name for f in dataclasses.fields(EncryptionConfig))
    kw = dict(_fields(obj, "encryption config", names))
    prefix = kw["aad_prefix"]
    if prefix is not None:
        kw["aad_prefix"] = _decode(prefix, "aad_prefix")
    columns = kw["column_keys"]
    if columns is not None and not (isinstance(columns, dict) and all(
            isinstance(c, list) and all(isinstance(x, str) for x in c) for c in columns.values())):
        raise MalformedKeyMaterial("key session export: column_keys must map master key ids to column lists")
    for name, kind in (("footer_key", str), ("encryption_algorithm", str), ("v2_framing", str),
                       ("uniform_encryption", bool), ("plaintext_footer", bool), ("double_wrapping", bool),
                       ("internal_key_material", bool), ("complete_columns", bool), ("store_aad_prefix", bool),
                       ("data_key_length_bits", int), ("kek_length_bits", int), ("cache_lifetime", (int, float))):
        v = kw[name]
        if not isinstance(v, kind) or (kind is not bool and isinstance(v, bool)):
            raise MalformedKeyMaterial(f"key session export: encryption config field {name} has the wrong type")
    try:
        cfg = EncryptionConfig(**kw)
    except (TypeError, ValueError) as exc:
        raise MalformedKeyMaterial(f"key session export: bad encryption config: {exc}") from None
    if not cfg.double_wrapping:
        raise MalformedKeyMaterial("key session export: the encryption config must use double wrapping")
    return cfg


def _fields(obj, what: str, names: tuple) -> dict:
    if not isinstance(obj, dict) or set(obj) != set(names):
        raise MalformedKeyMaterial(f"key session export: {what} must be an object with the fields "
                                   f"{', '.join(names)}")
    return obj


def _list(doc: dict, name: str) -> list:
    v = doc[name]
    if not isinstance(v, list):
        raise MalformedKeyMaterial(f"key session export: {name} must be a list")
    return v


def _text(obj: dict, name: str) -> str:
    v = obj[name]
    if not isinstance(v, str) or not v:
        raise MalformedKeyMaterial(f"key session export: {name} must be a non-empty string")
    return v


def _decode(text, name: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError, TypeError):
        raise MalformedKeyMaterial(f"key session export: {name} is not base64") from None


def _key_bytes(obj: dict, name: str, lengths) -> bytearray:
    raw = _decode(obj[name], name)
    if len(raw) not in lengths:
        raise MalformedKeyMaterial(f"key session export: {name} has {len(raw)} bytes")
    return bytearray(raw)


def _kek(item: dict) -> _Kek:
    return _Kek(_text(item, "master_key_id"), bytes(_key_bytes(item, "kek_id", (KEK_ID_LEN,))),
                _key_bytes(item, "kek", KEY_LENGTHS))
