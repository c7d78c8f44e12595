"""File-level API: seal, unseal, verify, inspect and re-key Parquet files without
decoding their data.

    import pqseal
    enc = pqseal.EncryptionProperties(footer_key, column_keys={"ssn": key2})
    pqseal.encrypt_file("plain.parquet", "sealed.parquet", enc)
    dec = pqseal.DecryptionProperties(footer_key, column_keys={"ssn": key2})
    pqseal.decrypt_file("sealed.parquet", "plain-again.parquet", dec)
"""

from __future__ import annotations

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


def encrypt_file(src, dst, encryption: EncryptionProperties, *, backend: str | None = None,
                 in_place: bool = False, fsync: bool = True) -> Stats:
    """Seal a plaintext Parquet file into a PME file (``dst`` written atomically).
    Raises :class:`pqseal.format.AlreadyEncrypted` for PME input."""
    msg = _warn_v2(src, encryption)
    if msg:
        warnings.warn(msg, stacklevel=2)
    stats = transform(src, dst, encryption=encryption, backend=backend, in_place=in_place, expect="plaintext",
                      fsync=fsync)
    if msg:
        stats.warnings.append(msg)
    return stats


def decrypt_file(src, dst, decryption: DecryptionProperties, *, backend: str | None = None,
                 in_place: bool = False, fsync: bool = True) -> Stats:
    """Unseal a PME file (any dialect pqseal reads) into a plaintext Parquet file."""
    return transform(src, dst, decryption=decryption, backend=backend, in_place=in_place, expect="encrypted",
                     fsync=fsync)


def rekey_file(src, dst, decryption: DecryptionProperties, encryption: EncryptionProperties, *,
               backend: str | None = None, in_place: bool = False, fsync: bool = True) -> Stats:
    """Decrypt with the old keys and encrypt with new ones (or another algorithm) in one
    pass; plaintext never reaches the disk."""
    msg = _warn_v2(src, encryption, decryption)
    if msg:
        warnings.warn(msg, stacklevel=2)
    stats = transform(src, dst, decryption=decryption, encryption=encryption, backend=backend,
                      in_place=in_place, expect="encrypted", fsync=fsync)
    if msg:
        stats.warnings.append(msg)
    return stats


def verify(path, decryption: DecryptionProperties, *, backend: str | None = None) -> dict:
    """Authenticate every module (and page CRC) of a PME file; raises on the first failure."""
    return verify_file(path, decryption, backend=backend)


def inspect(path, decryption: DecryptionProperties | None = None) -> dict:
    """Describe a file's encryption; keys (optional) open an encrypted footer."""
    return inspect_file(path, decryption)
