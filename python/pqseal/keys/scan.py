"""The key material of a PME file, found without reading a page: the footer key's (in the
FileCryptoMetaData of an encrypted footer, or the plaintext footer's signing key
metadata) and each encrypted column's (in the footer, decrypted first where it is
encrypted), internal or in the ``_KEY_MATERIAL_FOR_<file>.json`` beside the file."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable

from ..errors import KeyNotFound, MalformedKeyMaterial, UnsupportedFeature
from ..format.properties import DecryptionProperties
from .material import KeyMaterial, KeyMetadata
from .store import read_material


class KeyMaterialReader:
    """Key metadata bytes of one file to its key material: the material itself (internal
    storage) or the entry it references in the file's external material file, read once,
    on first need."""

    def __init__(self, parquet_path=None):
        self.path = None if parquet_path is None else os.fspath(parquet_path)
        self._external: dict[str, str] | None = None

    def material(self, key_metadata: bytes | None) -> KeyMaterial:
        md = KeyMetadata.parse(key_metadata)
        if md.material is not None:
            return md.material
        if md.reference is None:
            raise MalformedKeyMaterial("key metadata holds neither key material nor a key reference")
        if self.path is None:
            raise KeyNotFound("the file keeps its key material externally: pass parquet_file_path")
        if self._external is None:
            self._external = read_material(self.path)
        entry = self._external.get(md.reference)
        if entry is None:
            raise KeyNotFound(f"key reference {md.reference!r} not in the external key material file")
        return KeyMaterial.parse(entry)


@dataclass(frozen=True)
class FileKeys:
    """The key material of one PME file: its footer key's and, once each, its column keys'."""

    footer: KeyMaterial
    columns: tuple[KeyMaterial, ...]


def scan_file(path, footer_dek: Callable[[KeyMaterial], bytes]) -> FileKeys | None:
    """The key material of the PME file ``path`` (None for a plaintext Parquet file).

    ``footer_dek(material)`` returns the footer's data key: it opens an encrypted footer
    (which holds the column keys' metadata) and verifies a plaintext footer's signature.
    Only the footer is read and decrypted."""
    from ..format.source import Source

    reader = KeyMaterialReader(path)
    found: dict[str, KeyMaterial] = {}

    def retrieve(key_metadata: bytes | None, column_path: str | None) -> bytes:
        if column_path is not None:   # the scan reads no column data
            raise KeyNotFound(f"column {column_path}: not needed by a key-material scan")
        if key_metadata is None:
            raise UnsupportedFeature("the file has no footer key metadata: it was written with explicit keys, not "
                                     "through a KMS")
        material = reader.material(key_metadata)
        found["footer"] = material
        return footer_dek(material)

    with Source(path, DecryptionProperties(key_retriever=retrieve)) as src:
        if src.crypto is None:
            return None
        columns: dict[bytes, KeyMaterial] = {}
        for rg in range(src.num_row_groups):
            for col in range(len(src.paths)):
                cc = src.column_crypto(rg, col)
                if cc.encrypted and not cc.footer_key:
                    md = b"" if cc.key_metadata is None else bytes(cc.key_metadata)
                    if md not in columns:
                        columns[md] = reader.material(cc.key_metadata)
    return FileKeys(found["footer"], tuple(columns.values()))
