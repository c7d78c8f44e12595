"""Key rotation of one PME file: its data keys re-wrapped under the newest master key
versions (new KEKs), the DEKs and every data byte unchanged.

External key material: the ``_KEY_MATERIAL_FOR_<file>.json`` beside the file is
replaced atomically; the Parquet file is not touched. Internal key material (the
default): only the tail of the file is rewritten in place (FileCryptoMetaData's key
metadata, each column's crypto metadata, the footer re-encrypted or re-signed with the
same footer DEK), journaled and locked by :func:`~pqseal.format.footer.rewrite_footer`
so a crash leaves a file that opens with the old wrapping or the new one.

``pqseal rotate`` re-wraps (footer only, DEKs unchanged): use it when a master key
version is retired. ``pqseal rekey`` makes new DEKs (full re-encryption): use it when a
DEK itself may be exposed."""

from __future__ import annotations

import dataclasses
import os
from typing import Callable

from ..errors import KeyNotFound, UnsupportedFeature
from ..format.footer import COLUMN_KEY_CRYPTO, Footer, rewrite_footer
from ..format.properties import DecryptionProperties
from .material import KeyMaterial, KeyMetadata
from .store import KeyMaterialStore, material_path, read_material

Rewrap = Callable[[KeyMaterial], KeyMaterial]   # old material -> the same DEK wrapped anew


@dataclasses.dataclass(frozen=True)
class Rotated:
    """What a rotation rewrote: ``keys`` re-wrapped, ``bytes_written`` (the material file
    or the file's new tail), ``internal`` (footer rewrite) or not."""

    keys: int
    bytes_written: int
    internal: bool


def has_external_material(path) -> bool:
    return os.path.exists(material_path(os.fspath(path)))


def rotate_external(path, rewrap: Rewrap) -> Rotated:
    p = os.fspath(path)
    out = {ref: rewrap(KeyMaterial.parse(text)).to_json(None) for ref, text in read_material(p).items()}
    KeyMaterialStore(p, out).write()
    return Rotated(len(out), os.path.getsize(material_path(p)), False)


def rotate_internal(path, decryption: DecryptionProperties, rewrap: Rewrap) -> Rotated:
    """Re-wrap the key material in the footer of ``path``: ``decryption`` opens the
    footer (old wrapping), ``rewrap`` gives each distinct material its new wrapping."""
    p = os.fspath(path)
    new: dict[bytes, bytes] = {}

    def swap(md) -> bytes:
        old = bytes(md)
        if old not in new:
            meta = KeyMetadata.parse(old)
            if meta.material is None:
                raise KeyNotFound(f"{os.path.basename(p)} references external key material, but "
                                  f"{material_path(p)} is missing")
            new[old] = rewrap(meta.material).to_json(True).encode()
        return new[old]

    def edit(f: Footer) -> None:
        if f.footer_key_metadata is None:
            raise UnsupportedFeature(f"{os.path.basename(p)} was written with explicit keys (no key metadata): "
                                     "nothing to rotate")
        f.footer_key_metadata = swap(f.footer_key_metadata)
        for rg in f.metadata.get("row_groups") or []:
            for cc in rg.get("columns") or []:
                ck = (cc.get("crypto_metadata") or {}).get(COLUMN_KEY_CRYPTO)
                if isinstance(ck, dict) and ck.get("key_metadata") is not None:
                    ck["key_metadata"] = swap(ck["key_metadata"])

    rewrite_footer(p, decryption, edit, journal=True)
    with open(p, "rb") as fh:   # the new tail: footer, its length and the magic
        fh.seek(-8, os.SEEK_END)
        tail = int.from_bytes(fh.read(4), "little") + 8
    return Rotated(len(new), tail, True)


def unwrapping_decryption(unwrap: Callable[[KeyMaterial], bytes]) -> DecryptionProperties:
    """Keys of a file with internal material: each unwrapped from its key metadata."""
    def retrieve(key_metadata: bytes | None, column_path: str | None) -> bytes:
        meta = KeyMetadata.parse(key_metadata)
        if meta.material is None:
            raise KeyNotFound("the key metadata references external key material")
        return unwrap(meta.material)
    return DecryptionProperties(key_retriever=retrieve)


def rotate_file(path, decryption: DecryptionProperties, rewrap: Rewrap) -> Rotated:
    """Rotate ``path``, whether its material is external or internal (``decryption``
    opens the footer of the latter)."""
    if has_external_material(path):
        return rotate_external(path, rewrap)
    return rotate_internal(path, decryption, rewrap)


__all__ = ["Rotated", "rotate_file", "rotate_internal", "rotate_external", "has_external_material",
           "unwrapping_decryption"]
