"""PKMT1 key material and key metadata, as parquet-java and Arrow write them.

Field names live here once. JSON is parsed by field (parquet-java writes its fields in
HashMap order, Arrow in a fixed order), never compared as strings.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from ..errors import MalformedKeyMaterial

KEY_MATERIAL_TYPE = "PKMT1"
# field names
F_TYPE = "keyMaterialType"
F_INTERNAL = "internalStorage"
F_REFERENCE = "keyReference"
F_IS_FOOTER = "isFooterKey"
F_KMS_ID = "kmsInstanceID"
F_KMS_URL = "kmsInstanceURL"
F_MASTER_KEY = "masterKeyID"
F_WRAPPED_DEK = "wrappedDEK"
F_DOUBLE = "doubleWrapping"
F_KEK_ID = "keyEncryptionKeyID"
F_WRAPPED_KEK = "wrappedKEK"

EXTERNAL_PREFIX = "_KEY_MATERIAL_FOR_"
FOOTER_KEY_REFERENCE = "footerKey"
COLUMN_KEY_REFERENCE_PREFIX = "columnKey"


@dataclass(frozen=True)
class KeyMaterial:
    is_footer_key: bool
    master_key_id: str
    wrapped_dek: str
    double_wrapping: bool
    kek_id: str | None = None         # base64 of the 16-byte KEK id
    wrapped_kek: str | None = None
    kms_instance_id: str | None = None   # footer material only
    kms_instance_url: str | None = None

    def to_dict(self, internal: bool | None) -> dict:
        """Arrow's field order. ``internal=True`` for material stored in the file's key
        metadata (it carries ``internalStorage: true``); ``None`` for an entry of an
        external material file (no ``internalStorage`` field)."""
        d: dict[str, str | bool | None] = {F_TYPE: KEY_MATERIAL_TYPE}
        if internal is not None:
            d[F_INTERNAL] = internal
        d[F_IS_FOOTER] = self.is_footer_key
        if self.is_footer_key:
            d[F_KMS_ID] = self.kms_instance_id or "DEFAULT"
            d[F_KMS_URL] = self.kms_instance_url or "DEFAULT"
        d[F_MASTER_KEY] = self.master_key_id
        d[F_WRAPPED_DEK] = self.wrapped_dek
        d[F_DOUBLE] = self.double_wrapping
        if self.double_wrapping:
            d[F_KEK_ID] = self.kek_id
            d[F_WRAPPED_KEK] = self.wrapped_kek
        return d

    def to_json(self, internal: bool | None) -> str:
        return json.dumps(self.to_dict(internal), separators=(",", ":"))

    @classmethod
    def parse(cls, text) -> "KeyMaterial":
        obj = _load(text, "key material")
        if obj.get(F_TYPE) != KEY_MATERIAL_TYPE:
            raise MalformedKeyMaterial(f"key material type {obj.get(F_TYPE)!r} is not {KEY_MATERIAL_TYPE}")
        try:
            is_footer = _bool(obj, F_IS_FOOTER)
            double = _bool(obj, F_DOUBLE)
            mk = _str(obj, F_MASTER_KEY)
            dek = _str(obj, F_WRAPPED_DEK)
            kek_id = _str(obj, F_KEK_ID) if double else None
            wkek = _str(obj, F_WRAPPED_KEK) if double else None
        except KeyError as exc:
            raise MalformedKeyMaterial(f"key material lacks field {exc.args[0]}") from None
        return cls(is_footer, mk, dek, double, kek_id, wkek,
                   obj.get(F_KMS_ID) if is_footer else None, obj.get(F_KMS_URL) if is_footer else None)


@dataclass(frozen=True)
class KeyMetadata:
    """What a file's key_metadata bytes hold: the material itself (internal) or a
    reference into the sibling material file (external)."""

    internal: bool
    material: KeyMaterial | None = None
    reference: str | None = None

    @classmethod
    def parse(cls, raw: bytes | None) -> "KeyMetadata":
        if raw is None:
            raise MalformedKeyMaterial("the file has no key metadata for this key")
        obj = _load(raw, "key metadata")
        if obj.get(F_TYPE) != KEY_MATERIAL_TYPE:
            raise MalformedKeyMaterial(f"key metadata type {obj.get(F_TYPE)!r} is not {KEY_MATERIAL_TYPE}")
        internal = obj.get(F_INTERNAL, True)
        if internal is False:
            ref = obj.get(F_REFERENCE)
            if not isinstance(ref, str) or not ref:
                raise MalformedKeyMaterial("external key metadata without a keyReference")
            return cls(False, None, ref)
        return cls(True, KeyMaterial.parse(obj), None)

    @staticmethod
    def external(reference: str) -> bytes:
        return json.dumps({F_TYPE: KEY_MATERIAL_TYPE, F_INTERNAL: False, F_REFERENCE: reference},
                          separators=(",", ":")).encode()


def _load(text, what):
    if isinstance(text, dict):
        return text
    try:
        obj = json.loads(bytes(text).decode("utf-8") if isinstance(text, (bytes, bytearray, memoryview)) else text)
    except (ValueError, UnicodeDecodeError):
        raise MalformedKeyMaterial(f"{what} is not JSON") from None
    if not isinstance(obj, dict):
        raise MalformedKeyMaterial(f"{what} is not a JSON object")
    return obj


def _bool(obj, name):
    v = obj[name]
    if not isinstance(v, bool):
        raise MalformedKeyMaterial(f"key material field {name} must be a boolean")
    return v


def _str(obj, name):
    v = obj[name]
    if not isinstance(v, str) or not v:
        raise MalformedKeyMaterial(f"key material field {name} must be a non-empty string")
    return v


def material_file_name(parquet_file_name: str) -> str:
    return EXTERNAL_PREFIX + parquet_file_name + ".json"


def describe_key_metadata(md: bytes | None, external: dict | None = None):
    """Key metadata as shown to people: the parsed PKMT1 JSON where it is that (an
    external reference resolved through ``external``, the file's material file, under
    ``"material"``), else text or hex. Never key bytes: PKMT1 holds wrapped keys only."""
    if md is None:
        return None
    try:
        text = bytes(md).decode("utf-8")
    except UnicodeDecodeError:
        return {"hex": bytes(md).hex()}
    try:
        obj = json.loads(text)
    except ValueError:
        return {"text": text}
    if not isinstance(obj, dict) or obj.get(F_TYPE) != KEY_MATERIAL_TYPE:
        return {"text": text}
    ref = obj.get(F_REFERENCE)
    if obj.get(F_INTERNAL) is False and external and isinstance(external.get(ref), str):
        try:
            material = json.loads(external[ref])
        except ValueError:
            return obj
        if isinstance(material, dict):
            return {**obj, "material": material}
    return obj
