"""File-level API: seal, unseal, verify, inspect and re-key Parquet files without
decoding their data.

    import pqseal
    enc = pqseal.EncryptionProperties(footer_key, column_keys={"ssn": key2})
    pqseal.encrypt_file("plain.parquet", "sealed.parquet", enc)
    dec = pqseal.DecryptionProperties(footer_key, column_keys={"ssn": key2})
    pqseal.decrypt_file("sealed.parquet", "plain-again.parquet", dec)
"""

from __future__ import annotations

import os
import warnings

from .format import (DecryptionProperties, EncryptionProperties, Stats, inspect_file, transform, verify_file)
from .format.layout import PageType
from .format.source import Source


def _warn_v2(src, encryption: EncryptionProperties, decryption: DecryptionProperties | None = None) -> str | None:
    """Warn once when a file with DataPageV2 pages is sealed: the two framings in use
    (parquet-java vs the spec/Arrow) cannot read each other's files."""
    with Source(src, decryption) as s:
        if (s.crypto is not None) != (decryption is not None) or not s.num_row_groups:
            return None
        for col in range(len(s.paths)):
            ch = s.read_chunk(0, col)
            if any(h.get("type") == PageType.DATA_PAGE_V2 for h in ch.headers):
                msg = (f"{s.name} has DataPageV2 pages, sealed with the {encryption.v2_framing} framing: "
                       + ("readable by Arrow/pyarrow and arrow-rs, NOT by parquet-java/Spark"
                          if encryption.v2_framing == "arrow" else
                          "readable by parquet-java/Spark, NOT by Arrow/pyarrow")
                       + "; V1 pages interoperate everywhere")
                return msg
    return None


def _kms_factory(kms):
    from .kms.base import KmsClient

    if kms is None:
        from .kms.keystore import LocalKeystore

        holder = {}

        def default(cfg):  # the embedded default: the local keystore, opened on first use
            if "ks" not in holder:
                holder["ks"] = LocalKeystore()
            return holder["ks"]
        return default
    return (lambda cfg: kms) if isinstance(kms, KmsClient) else kms


def encrypt_file(src, dst, encryption, *, kms=None, kms_connection_config=None, backend: str | None = None,
                 in_place: bool = False, fsync: bool = True) -> Stats:
    """Seal a plaintext Parquet file into a PME file (``dst`` written atomically).

    ``encryption`` is either explicit :class:`EncryptionProperties` or an
    :class:`~pqseal.config.EncryptionConfig` (master key ids), in which case fresh data
    keys are wrapped by ``kms`` (a KMS client or a factory; default: the local keystore).
    Raises :class:`pqseal.format.AlreadyEncrypted` for PME input."""
    from .config import EncryptionConfig

    if isinstance(encryption, EncryptionConfig):
        from .keys import CryptoFactory
        from .kms.base import KmsConnectionConfig

        encryption = CryptoFactory(_kms_factory(kms)).file_encryption_properties(
            kms_connection_config or KmsConnectionConfig(), encryption, dst)
    msg = _warn_v2(src, encryption)
    if msg:
        warnings.warn(msg, stacklevel=2)
    material = _write_external_material(dst, encryption)
    try:
        stats = transform(src, dst, encryption=encryption, backend=backend, in_place=in_place, expect="plaintext",
                          fsync=fsync)
    except BaseException:
        if material:
            os.unlink(material)
        raise
    if msg:
        stats.warnings.append(msg)
    return stats


def _write_external_material(dst, encryption: EncryptionProperties):
    """External key material goes beside the file before the file appears (a reader never
    sees a file without its keys)."""
    ext = getattr(encryption, "external_key_material", None)
    if not ext:
        return None
    from .keys.factory import write_material_file

    d = os.path.dirname(os.path.abspath(os.fspath(dst)))
    return write_material_file(d, os.path.basename(os.fspath(dst)), ext)


def _decryption(src, decryption, kms, kms_connection_config):
    from .config import DecryptionConfig

    if decryption is None or isinstance(decryption, DecryptionConfig):
        from .keys import CryptoFactory
        from .kms.base import KmsConnectionConfig

        return CryptoFactory(_kms_factory(kms)).file_decryption_properties(
            kms_connection_config or KmsConnectionConfig(), decryption, src)
    return decryption


def decrypt_file(src, dst, decryption=None, *, kms=None, kms_connection_config=None, backend: str | None = None,
                 in_place: bool = False, fsync: bool = True) -> Stats:
    """Unseal a PME file (any dialect pqseal reads) into a plaintext Parquet file. Keys:
    explicit :class:`DecryptionProperties`, or (``None`` / a ``DecryptionConfig``) from
    ``kms`` through the file's key material (default: the local keystore)."""
    decryption = _decryption(src, decryption, kms, kms_connection_config)
    return transform(src, dst, decryption=decryption, backend=backend, in_place=in_place, expect="encrypted",
                     fsync=fsync)


def rekey_file(src, dst, decryption: DecryptionProperties, encryption: EncryptionProperties, *,
               backend: str | None = None, in_place: bool = False, fsync: bool = True) -> Stats:
    """Decrypt with the old keys and encrypt with new ones (or another algorithm) in one
    pass; plaintext never reaches the disk."""
    msg = _warn_v2(src, encryption, decryption)
    if msg:
        warnings.warn(msg, stacklevel=2)
    _write_external_material(dst, encryption)
    stats = transform(src, dst, decryption=decryption, encryption=encryption, backend=backend,
                      in_place=in_place, expect="encrypted", fsync=fsync)
    if msg:
        stats.warnings.append(msg)
    return stats


def verify(path, decryption=None, *, kms=None, kms_connection_config=None, backend: str | None = None) -> dict:
    """Authenticate every module (and page CRC) of a PME file; raises
    :class:`~pqseal.format.VerificationFailed` listing every failing module."""
    return verify_file(path, _decryption(path, decryption, kms, kms_connection_config), backend=backend)


def inspect(path, decryption: DecryptionProperties | None = None) -> dict:
    """Describe a file's encryption; keys (optional) open an encrypted footer."""
    return inspect_file(path, decryption)


def write_table(table, path, config, kms, *, kms_connection_config=None, backend: str | None = None, **write_kwargs):
    """pyarrow writes ``table``, pqseal seals it with envelope keys: ``config`` is an
    :class:`~pqseal.config.EncryptionConfig`, ``kms`` a KMS client or a factory
    ``(KmsConnectionConfig) -> KmsClient``. ``write_kwargs`` go to ``pyarrow.parquet.write_table``."""
    import tempfile

    import pyarrow.parquet as pq

    from .keys import CryptoFactory
    from .kms.base import KmsClient, KmsConnectionConfig

    factory = (lambda cfg: kms) if isinstance(kms, KmsClient) else kms
    conn = kms_connection_config or KmsConnectionConfig()
    props = CryptoFactory(factory).file_encryption_properties(conn, config, path)
    d = os.path.dirname(os.path.abspath(os.fspath(path)))
    fd, tmp = tempfile.mkstemp(dir=d, prefix=".pqseal-plain-", suffix=".parquet")
    os.close(fd)
    try:
        pq.write_table(table, tmp, **write_kwargs)
        return encrypt_file(tmp, path, props, backend=backend)
    finally:
        os.unlink(tmp)


def read_table(path, kms, *, columns=None, kms_connection_config=None, **read_kwargs):
    """Read a PME file into a pyarrow Table with keys from ``kms`` (a client or a factory).
    pyarrow reads through pqseal's KMS, so only the columns in ``columns`` are decrypted;
    files pyarrow cannot read (DuckDB's dialect, parquet-java's DataPageV2 framing) are
    unsealed by pqseal into a temporary file first."""
    import tempfile

    import pyarrow as pa
    import pyarrow.parquet as pq
    import pyarrow.parquet.encryption as pe

    from .arrow import crypto_factory
    from .keys import CryptoFactory
    from .kms.base import KmsClient, KmsConnectionConfig

    factory = (lambda cfg: kms) if isinstance(kms, KmsClient) else kms
    conn = kms_connection_config or KmsConnectionConfig()
    pa_conn = pe.KmsConnectionConfig(kms_instance_id=conn.kms_instance_id, kms_instance_url=conn.kms_instance_url,
                                     key_access_token=conn.key_access_token, custom_kms_conf=conn.custom_kms_conf)
    try:
        props = crypto_factory(factory).file_decryption_properties(pa_conn, pe.DecryptionConfiguration(),
                                                                  os.fspath(path))
        return pq.read_table(path, columns=columns, decryption_properties=props, **read_kwargs)
    except (OSError, pa.ArrowException):
        info = inspect(path)
        if not info.get("encrypted"):
            raise
    d = tempfile.mkdtemp(prefix="pqseal-read-")
    try:
        out = os.path.join(d, "plain.parquet")
        decrypt_file(path, out, CryptoFactory(factory).file_decryption_properties(conn, None, path), fsync=False)
        return pq.read_table(out, columns=columns, **read_kwargs)
    finally:
        for name in os.listdir(d):
            os.unlink(os.path.join(d, name))
        os.rmdir(d)
