"""File-level API: seal, unseal, verify, inspect and re-key Parquet files without
decoding their data.

    import pqseal
    enc = pqseal.EncryptionProperties(footer_key, column_keys={"ssn": key2})
    pqseal.encrypt_file("plain.parquet", "sealed.parquet", enc)
    dec = pqseal.DecryptionProperties(footer_key, column_keys={"ssn": key2})
    pqseal.decrypt_file("sealed.parquet", "plain-again.parquet", dec)

Keys are explicit (:class:`EncryptionProperties` / :class:`DecryptionProperties`) or come
from a KMS (an :class:`~pqseal.config.EncryptionConfig` / ``DecryptionConfig``, or
pyarrow's ``EncryptionConfiguration`` / ``DecryptionConfiguration``) through ``kms``: a
KMS client or a factory ``(KmsConnectionConfig) -> KmsClient``; default: the local
keystore. Inputs are paths or in-memory files (bytes-like objects, binary file objects,
pyarrow buffers and readers). Outputs are never overwritten unless ``overwrite=True``.
"""

from __future__ import annotations

import contextlib
import hmac
import os
import threading
import warnings
import weakref

from .format import (DecryptionProperties, EncryptionProperties, Stats, inspect_file, transform, verify_file)
from .format.engine import transform_to_memory
from .format.source import Source


def _is_path(obj) -> bool:
    return isinstance(obj, (str, os.PathLike))


def _warn(stats: Stats) -> Stats:
    """Raise the engine's warnings (DataPageV2 framing) as Python warnings too."""
    for msg in stats.warnings:
        warnings.warn(msg, stacklevel=3)
    return stats


def _sealed(encryption: EncryptionProperties, stats: Stats) -> Stats:
    """Count a committed seal in the usage of the master key versions that wrapped its
    DEKs (where the KMS counts usage); their usage-limit warnings (already given as
    Python warnings) join the stats' warnings, for the CLI's report."""
    usage = encryption.key_usage
    if usage is not None:
        usage.sealed(stats.bytes_out, stats.max_dek_modules)
        stats.warnings += usage.warnings
    return stats


# ---- keys --------------------------------------------------------------------------------


_uri_factories: dict[str, object] = {}   # KMS URI -> its factory (one per URI, so its KEK caches live on)


def _uri_factory(uri: str):
    from .kms.uri import open_kms

    with _sessions_lock:
        f = _uri_factories.get(uri)
    if f is None:
        f = open_kms(uri)
        with _sessions_lock:
            f = _uri_factories.setdefault(uri, f)
    return f


def kms_factory(kms=None):
    """A KMS client factory from what callers pass as ``kms``: a client, a factory, a KMS
    URI (``"vault+https://..."``, ``"keystore:PATH"``, see :mod:`pqseal.kms.uri`), or None
    for the local keystore (opened on first use)."""
    from .kms.base import KmsClient

    if isinstance(kms, str):
        return _uri_factory(kms)

    if kms is None:
        from .kms.keystore import LocalKeystore

        lock = threading.Lock()
        holder: list = []

        def default(cfg):
            with lock:
                if not holder:
                    holder.append(LocalKeystore())
                return holder[0]
        return default
    if isinstance(kms, KmsClient):
        return lambda cfg: kms
    if callable(kms):
        return kms
    raise TypeError(f"kms must be a KmsClient, a factory (KmsConnectionConfig -> KmsClient), a KMS URI or None, "
                    f"not {type(kms).__name__}")


_sessions: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()   # kms object -> CryptoFactory
_default_sessions: dict[tuple, object] = {}                           # keystore coordinates -> CryptoFactory
_sessions_lock = threading.Lock()
# not key material and never leaves the process; os.urandom, as drawing from the DRBG at
# import would make a later pqseal.enable_fips() impossible
_SESSION_SECRET = os.urandom(32)


def crypto_factory(kms=None):
    """The :class:`~pqseal.keys.CryptoFactory` (and so the KEK caches) of this process for
    ``kms``: calls with the same client, factory or default keystore share one, so a loop
    over files makes one KMS call per master key, as one pyarrow CryptoFactory would."""
    from .keys import CryptoFactory
    from .kms.keystore import default_path

    if isinstance(kms, str):
        kms = _uri_factory(kms)
    with _sessions_lock:
        if kms is None:
            env = os.environ
            # the passphrase is told apart by a MAC under a key of this process only, so the
            # key of this table is no stable, guessable digest of the passphrase
            where = (default_path(), env.get("PQSEAL_KEYSTORE_PASSPHRASE_FILE"),
                     hmac.new(_SESSION_SECRET, env.get("PQSEAL_KEYSTORE_PASSPHRASE", "").encode(),
                              "sha256").digest())
            f = _default_sessions.get(where)
            if f is None:
                f = _default_sessions[where] = CryptoFactory(kms_factory(None))
            return f
        try:
            f = _sessions.get(kms)
        except TypeError:  # neither hashable nor weakly referable: a session of its own
            return CryptoFactory(kms_factory(kms))
        if f is None:
            f = CryptoFactory(kms_factory(kms))
            with contextlib.suppress(TypeError):
                _sessions[kms] = f
        return f


def _connection(kms_connection_config):
    from .arrow import connection_config
    from .kms.base import KmsConnectionConfig

    if kms_connection_config is None:
        return KmsConnectionConfig()
    return connection_config(kms_connection_config)


def encryption_properties(encryption, dst=None, *, kms=None, kms_connection_config=None) -> EncryptionProperties:
    """Explicit properties as given, or fresh data keys wrapped by the KMS for a config
    (pqseal's ``EncryptionConfig`` or pyarrow's ``EncryptionConfiguration``)."""
    from .arrow import encryption_config
    from .config import EncryptionConfig

    if isinstance(encryption, EncryptionProperties):
        return encryption
    cfg = encryption if isinstance(encryption, EncryptionConfig) else encryption_config(encryption)
    return crypto_factory(kms).file_encryption_properties(_connection(kms_connection_config), cfg,
                                                          dst if _is_path(dst) else None)


def rotate(path, *, kms=None, kms_connection_config=None, double_wrapping: bool = True) -> int:
    """Re-wrap the data keys of the PME file ``path`` under the current master key
    versions (new KEKs); DEKs and data bytes stay the same. External key material is
    replaced beside the file, internal material by a crash-safe footer-only rewrite in
    place (:mod:`pqseal.keys.rotation`). Returns the number of keys re-wrapped. For a
    tree with one wrap per master key, use :func:`pqseal.dataset.rotate`."""
    from .keys import CryptoFactory

    _recover_once(path)
    shared = crypto_factory(kms)   # its KMS clients and read KEKs; new KEKs of this rotation only
    factory = CryptoFactory(shared.kms_client_factory, caches=shared.caches)
    return factory.rotate_master_keys(_connection(kms_connection_config), path, double_wrapping=double_wrapping)


def decryption_properties(src, decryption=None, *, kms=None, kms_connection_config=None) -> DecryptionProperties:
    """Explicit properties as given, or a key retriever that unwraps the file's key
    material through the KMS (``decryption``: None, pqseal's ``DecryptionConfig`` or
    pyarrow's ``DecryptionConfiguration``)."""
    from .arrow import decryption_config

    if isinstance(decryption, DecryptionProperties):
        return decryption
    cfg = decryption_config(decryption)
    return crypto_factory(kms).file_decryption_properties(_connection(kms_connection_config), cfg,
                                                          src if _is_path(src) else None)


def _material_store(dst, encryption: EncryptionProperties):
    if not encryption.external_key_material:
        return None
    if not _is_path(dst):
        raise ValueError("external key material needs a file path as output")
    from .keys.store import KeyMaterialStore

    return KeyMaterialStore(dst, encryption.external_key_material)


def file_unique(path) -> bytes | None:
    """A PME file's ``aad_file_unique`` (readable without keys), None otherwise."""
    from .errors import PqsealError

    try:
        with Source(path) as s:
            return s.crypto.aad_file_unique if s.crypto is not None else None
    except (PqsealError, OSError):
        return None


def recover(directory) -> list[str]:
    """Finish or roll back what interrupted pqseal runs left in ``directory``: key
    material commits cut between the data file's rename and the material's, and
    temporary files of processes that are gone. Returns one line per action."""
    from ._io import remove_stale
    from .format.footer_journal import recover_directory
    from .keys.store import recover as recover_material

    d = os.path.abspath(os.fspath(directory) or ".")
    actions = recover_directory(d)
    actions += recover_material(d, file_unique)
    actions += [f"removed {name} (left by an interrupted run)" for name in remove_stale(d, force=True)]
    return actions


_recovered: set[str] = set()
_recovered_lock = threading.Lock()


def _recover_once(path) -> None:
    """:func:`recover` the directory of ``path`` the first time this process touches it."""
    if not _is_path(path):
        return
    d = os.path.dirname(os.path.abspath(os.fspath(path)))
    with _recovered_lock:
        if d in _recovered:
            return
        _recovered.add(d)
    recover(d)


# ---- files -------------------------------------------------------------------------------


def encrypt_file(src, dst, encryption, *, kms=None, kms_connection_config=None, backend: str | None = None,
                 in_place: bool = False, overwrite: bool = False, fsync: bool = True) -> Stats:
    """Seal a plaintext Parquet file into a PME file ``dst`` (written to a temporary file
    and renamed into place; an existing ``dst`` is replaced only with ``overwrite=True``).

    ``encryption``: explicit :class:`EncryptionProperties`, or a config whose fresh data
    keys are wrapped by ``kms``. External key material is committed right after the
    data file; a failed run leaves an existing ``dst`` and its material as they were.
    Raises :class:`pqseal.format.AlreadyEncrypted` for PME input."""
    _recover_once(dst)
    encryption = encryption_properties(encryption, dst, kms=kms, kms_connection_config=kms_connection_config)
    return _sealed(encryption, _warn(transform(src, dst, encryption=encryption, backend=backend, in_place=in_place,
                                               overwrite=overwrite, expect="plaintext", fsync=fsync,
                                               companion=_material_store(dst, encryption))))


def decrypt_file(src, dst, decryption=None, *, kms=None, kms_connection_config=None, backend: str | None = None,
                 in_place: bool = False, overwrite: bool = False, fsync: bool = True) -> Stats:
    """Unseal a PME file (any dialect pqseal reads) into a plaintext Parquet file (mode
    0600 when new). Keys: explicit :class:`DecryptionProperties`, or (``None`` / a
    config) from ``kms`` through the file's key material (default: the local keystore)."""
    _recover_once(src)
    decryption = decryption_properties(src, decryption, kms=kms, kms_connection_config=kms_connection_config)
    return transform(src, dst, decryption=decryption, backend=backend, in_place=in_place, overwrite=overwrite,
                     expect="encrypted", fsync=fsync)


def rekey_file(src, dst, decryption=None, encryption=None, *, kms=None, kms_connection_config=None,
               backend: str | None = None, in_place: bool = False, overwrite: bool = False,
               fsync: bool = True, allow_plaintext_columns: bool = False) -> Stats:
    """Decrypt with the old keys and encrypt with new ones (or another algorithm) in one
    pass; plaintext never reaches the disk. Keys as in :func:`decrypt_file` and
    :func:`encrypt_file`. New keys that leave out a column encrypted in ``src`` raise
    :class:`~pqseal.format.engine.WouldExposeColumn`, unless ``allow_plaintext_columns``
    asks for such columns in plaintext."""
    if encryption is None:
        raise TypeError("rekey_file needs the new keys: encryption=EncryptionProperties or a config")
    _recover_once(src)
    _recover_once(dst)
    decryption = decryption_properties(src, decryption, kms=kms, kms_connection_config=kms_connection_config)
    encryption = encryption_properties(encryption, dst, kms=kms, kms_connection_config=kms_connection_config)
    return _sealed(encryption, _warn(transform(src, dst, decryption=decryption, encryption=encryption, backend=backend,
                                               in_place=in_place, overwrite=overwrite, expect="encrypted", fsync=fsync,
                                               companion=_material_store(dst, encryption),
                                               allow_plaintext_columns=allow_plaintext_columns)))


def verify(path, decryption=None, *, kms=None, kms_connection_config=None, backend: str | None = None) -> dict:
    """Authenticate every module (and page CRC) of a PME file; raises
    :class:`~pqseal.format.VerificationFailed` listing every failing module. Completes an
    interrupted key-material commit beside the file first (see :func:`recover`)."""
    _recover_once(path)
    return verify_file(path, decryption_properties(path, decryption, kms=kms,
                                                   kms_connection_config=kms_connection_config), backend=backend)


def inspect(path, decryption=None, *, kms=None, kms_connection_config=None) -> dict:
    """Describe a file's encryption. Without keys an encrypted footer stays closed; with
    explicit keys, or a KMS (``kms=`` or a decryption config), it is opened."""
    from .errors import PqsealError
    from .keys.material import describe_key_metadata
    from .keys.store import read_material

    external = None
    if _is_path(path):
        try:
            external = read_material(path)
        except PqsealError:
            external = None

    def describe(md):
        return describe_key_metadata(md, external)

    keys = None
    if decryption is not None or kms is not None or kms_connection_config is not None:
        keys = decryption_properties(path, decryption, kms=kms, kms_connection_config=kms_connection_config)
    return inspect_file(path, keys, describe_key=describe)


def write_table(table, where, encryption=None, kms=None, *, kms_connection_config=None, backend: str | None = None,
                overwrite: bool = False, fsync: bool = True, row_group_size=None, **write_kwargs) -> Stats:
    """Write ``table`` as a PME file ``where`` (a path or a writable binary file object)
    with :class:`pqseal.ParquetWriter`: each row group is sealed as pyarrow encodes it,
    nothing plaintext reaches the disk. ``encryption`` as in :func:`encrypt_file` (None:
    the encryption zone's policy); ``write_kwargs`` are pyarrow's writer options, as for
    ``pyarrow.parquet.write_table``."""
    from .io.writer import ParquetWriter

    _recover_once(where)
    with ParquetWriter(where, table.schema, encryption, kms=kms, kms_connection_config=kms_connection_config,
                       backend=backend, overwrite=overwrite, fsync=fsync, **write_kwargs) as w:
        w.write_table(table, row_group_size=row_group_size)
    assert w.stats is not None
    return w.stats


def read_table(source, kms=None, *, columns=None, decryption=None, kms_connection_config=None, **read_kwargs):
    """Read a PME file into a pyarrow Table. With a KMS (default: the local keystore)
    pyarrow reads through pqseal's KMS, so only the columns in ``columns`` are
    decrypted. Files pyarrow cannot read (DuckDB's dialect, parquet-java's DataPageV2
    framing), explicit :class:`DecryptionProperties` and in-memory files are unsealed by
    pqseal in memory (never on disk)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if _is_path(source) and not isinstance(decryption, DecryptionProperties):
        import pyarrow.parquet.encryption as pe

        from .arrow import crypto_factory as pyarrow_crypto_factory
        from .arrow import pyarrow_connection_config

        _recover_once(source)
        try:
            props = pyarrow_crypto_factory(crypto_factory(kms).kms_client_factory).file_decryption_properties(
                pyarrow_connection_config(_connection(kms_connection_config)),
                decryption if isinstance(decryption, pe.DecryptionConfiguration) else pe.DecryptionConfiguration(),
                os.fspath(source))
            return pq.read_table(source, columns=columns, decryption_properties=props, **read_kwargs)
        except (OSError, pa.ArrowException):
            if not inspect_file(source).get("encrypted"):
                raise
    dec = decryption_properties(source, decryption, kms=kms, kms_connection_config=kms_connection_config)
    plain, _ = transform_to_memory(source, decryption=dec, expect="encrypted")
    return pq.read_table(pa.BufferReader(pa.py_buffer(plain)), columns=columns, **read_kwargs)
