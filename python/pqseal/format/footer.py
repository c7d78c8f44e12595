"""Footer-only rewrite of a PME file: new key metadata (or other footer fields) without
touching a byte of the data region.

The footer is opened with the footer key (decrypted, or its signature verified), handed
to the caller as a :class:`Footer` to edit, re-serialized losslessly (fields pqseal does
not know survive) and sealed again with the same footer key and file AAD: a fresh GCM
module for an encrypted footer, a fresh signature for a plaintext one. Only the tail
after the last data byte is replaced::

    def stamp(f: Footer) -> None:
        f.footer_key_metadata = material

    rewrite_footer(path, DecryptionProperties(footer_key), stamp)

Used by :mod:`pqseal.polars` to stamp KMS key material into files polars wrote with
explicit keys, and by :mod:`pqseal.keys.rotation` (``journal=True``: locked, and
crash-safe through :mod:`.footer_journal`) to re-wrap internal key material.
"""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass, field
from typing import Callable

from ..crypto import GcmModuleCipher, ModuleKey, ModuleType
from ..errors import MalformedFile, UnsupportedFeature
from . import footer_journal, thrift
from .layout import MAGIC, MAGIC_ENCRYPTED, dotted
from .properties import DecryptionProperties
from .source import FileCrypto, Source
from .structs import ColumnChunk, ColumnMetaData, FileCryptoMetaData, FileMetaData

FOOTER_KEY_CRYPTO = "ENCRYPTION_WITH_FOOTER_KEY"
COLUMN_KEY_CRYPTO = "ENCRYPTION_WITH_COLUMN_KEY"


def _encode(name: str, obj, where: str) -> bytes:
    try:
        return thrift.encode(name, obj)
    except thrift.EncodeError as exc:
        raise MalformedFile(f"{where}: the edited {name} cannot be written: {exc}") from None


@dataclass
class Footer:
    """The decoded footer of an encrypted file, to edit in place.

    ``metadata``: the FileMetaData (decrypted). ``crypto``: the plaintext
    FileCryptoMetaData of an encrypted footer, None for a plaintext footer. Column
    chunks are ``metadata["row_groups"][rg]["columns"][col]``; their ColumnMetaData is
    read with :meth:`column_meta` and replaced with :meth:`set_column_meta`, which keeps
    ``meta_data`` and ``encrypted_column_metadata`` consistent with the chunk's crypto
    metadata. Valid during the edit only (the file is closed afterwards)."""

    metadata: FileMetaData
    crypto: FileCryptoMetaData | None
    file_crypto: FileCrypto
    paths: list[tuple[str, ...]]
    _source: Source = field(repr=False)
    _decryption: DecryptionProperties = field(repr=False)
    _ciphers: dict = field(default_factory=dict, repr=False)   # key -> GcmModuleCipher
    _algorithm: dict | None = field(default=None, repr=False)   # the file's EncryptionAlgorithm, as read

    def _holder(self) -> dict:
        """The struct holding the EncryptionAlgorithm (FileCryptoMetaData or FileMetaData)."""
        return self.metadata if self.crypto is None else self.crypto  # type: ignore[return-value]

    @property
    def plaintext_footer(self) -> bool:
        return self.crypto is None

    @property
    def footer_key_metadata(self) -> bytes | None:
        """Key metadata of the footer key: FileCryptoMetaData.key_metadata (encrypted
        footer) or FileMetaData.footer_signing_key_metadata (plaintext footer)."""
        if self.crypto is None:
            return self.metadata.get("footer_signing_key_metadata")
        return self.crypto.get("key_metadata")

    @footer_key_metadata.setter
    def footer_key_metadata(self, value: bytes | None) -> None:
        if self.crypto is None:
            self.metadata.pop("footer_signing_key_metadata", None)
            if value is not None:
                self.metadata["footer_signing_key_metadata"] = bytes(value)
        else:
            self.crypto.pop("key_metadata", None)
            if value is not None:
                self.crypto["key_metadata"] = bytes(value)

    def column_chunk(self, rg: int, col: int) -> ColumnChunk:
        return self.metadata["row_groups"][rg]["columns"][col]

    def column_meta(self, rg: int, col: int) -> ColumnMetaData:
        """The plaintext ColumnMetaData of a chunk as the file holds it (decrypted from
        ``encrypted_column_metadata`` when needed)."""
        return self._source.column_meta(rg, col).copy()

    def set_column_meta(self, rg: int, col: int, meta: ColumnMetaData) -> None:
        """Store ``meta`` as the chunk's ColumnMetaData the way its (possibly edited)
        crypto metadata asks: inline for plaintext columns and footer-key columns of an
        encrypted footer; encrypted (with the column's key) in
        ``encrypted_column_metadata`` otherwise, a plaintext footer also showing a copy
        without statistics."""
        cc = self.column_chunk(rg, col)
        cm = cc.get("crypto_metadata")
        cc.pop("meta_data", None)
        cc.pop("encrypted_column_metadata", None)
        if cm is None or (FOOTER_KEY_CRYPTO in cm and not self.plaintext_footer):
            cc["meta_data"] = meta
            return
        if FOOTER_KEY_CRYPTO in cm:
            key = self._decryption.get_footer_key(self.file_crypto.footer_key_metadata)
        else:
            ck = cm.get(COLUMN_KEY_CRYPTO)
            if not isinstance(ck, dict):
                raise MalformedFile(f"{self._source.name}: column {dotted(self.paths[col])} has unknown crypto "
                                    "metadata")
            key = self._decryption.get_column_key(dotted(self.paths[col]), ck.get("key_metadata"))
        where = f"{self._source.name}: column {dotted(self.paths[col])}"
        cc["encrypted_column_metadata"] = self._cipher(key).encrypt(
            _encode("ColumnMetaData", meta, where), ModuleType.COLUMN_META_DATA, rg, col)
        if self.plaintext_footer:
            redacted = meta.copy()   # as writers do: no statistics of an encrypted column in the clear
            redacted.pop("statistics", None)
            redacted.pop("encoding_stats", None)
            cc["meta_data"] = redacted

    def _cipher(self, key: bytes) -> GcmModuleCipher:
        c = self._ciphers.get(key)
        if c is None:
            c = self._ciphers[key] = GcmModuleCipher(ModuleKey(key), self._source.file_aad())
        return c

    def _close(self) -> None:
        for c in self._ciphers.values():
            for k in c.keys:
                k.close()
        self._ciphers.clear()


def _open(s: Source, decryption: DecryptionProperties) -> Footer:
    c = s.crypto
    if c is None:
        raise MalformedFile(f"{s.name} is not an encrypted Parquet file: it has no footer key to rewrite with")
    if c.dialect != "spec":
        raise UnsupportedFeature(f"{s.name}: footers of DuckDB's encryption dialect (no AADs) are not rewritten")
    if s.footer_bytes is None:
        raise MalformedFile(f"{s.name}: footer not read")
    fmd, _ = thrift.decode("FileMetaData", s.footer_bytes, 0)   # a copy to edit; the Source keeps its own
    fcm = None
    if not c.plaintext_footer:
        fcm, _ = thrift.decode("FileCryptoMetaData", s.read(s.tail.footer_offset, s.tail.footer_len), 0)
    f = Footer(fmd, fcm, c, list(s.paths), s, decryption)
    f._algorithm = copy.deepcopy(f._holder().get("encryption_algorithm"))
    return f


def _seal(f: Footer, name: str) -> bytes:
    """The new tail: footer (encrypted, or signed) and trailer."""
    if f._holder().get("encryption_algorithm") != f._algorithm:
        raise ValueError(f"{name}: a footer rewrite keeps the file's encryption algorithm, AAD prefix and "
                         "aad_file_unique (the data modules are sealed with them)")
    footer = _encode("FileMetaData", f.metadata, name)
    gcm = f._cipher(f._decryption.get_footer_key(f.file_crypto.footer_key_metadata))
    if f.crypto is None:
        body = footer + gcm.footer_signature(footer)
        return body + len(body).to_bytes(4, "little") + MAGIC
    body = _encode("FileCryptoMetaData", f.crypto, name) + gcm.encrypt(footer, ModuleType.FOOTER)
    return body + len(body).to_bytes(4, "little") + MAGIC_ENCRYPTED


def rewrite_footer(path, decryption: DecryptionProperties, edit: Callable[[Footer], None], *,
                   fsync: bool = True, journal: bool = False) -> Footer:
    """Open the footer of the PME file ``path`` with ``decryption`` (footer key and, for
    :meth:`Footer.set_column_meta` of column-key columns, column keys; an AAD prefix the
    file does not store), let ``edit`` change it, and replace the file's tail in place:
    bytes before the footer stay as they are. Returns the edited footer.

    Without ``journal`` a crash midway leaves a broken file: rewrite a file that is not
    yet (or no longer) in use, a temporary copy renamed into place afterwards. With
    ``journal`` (a file in use: key rotation) the file is locked (a concurrent rewrite
    raises :class:`~pqseal.errors.RotationInProgress`) and its old tail journaled first
    (:mod:`.footer_journal`), so any pqseal open after a crash restores it. The key
    (footer key, file AAD) and the algorithm stay those of the file."""
    p = os.fspath(path)
    if not journal:
        f, offset, tail = _edit(p, decryption, edit)
        with open(p, "r+b") as out:
            _write_tail(out.fileno(), offset, tail, fsync)
        return f
    with footer_journal.locked(p, wait=False) as fd:
        footer_journal.restore_locked(p, fd)   # a journal an earlier crash left
        f, offset, tail = _edit(p, decryption, edit)
        footer_journal.write_journal(p, fd, offset)
        _write_tail(fd, offset, tail, True)
        footer_journal.drop_journal(p)
    return f


def _edit(p: str, decryption: DecryptionProperties, edit: Callable[[Footer], None]) -> tuple[Footer, int, bytes]:
    with Source(p, decryption) as s:
        f = _open(s, decryption)
        try:
            edit(f)
            tail = _seal(f, s.name)
        finally:
            f._close()
        return f, s.tail.footer_offset, tail


def _write_tail(fd: int, offset: int, tail: bytes, fsync: bool) -> None:
    os.pwrite(fd, tail, offset)
    os.ftruncate(fd, offset + len(tail))
    if fsync:
        os.fsync(fd)


__all__ = ["Footer", "rewrite_footer", "FOOTER_KEY_CRYPTO", "COLUMN_KEY_CRYPTO"]
