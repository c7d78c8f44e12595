"""From a KMS and a configuration to the engine's key properties (parquet-java's
PropertiesDrivenCryptoFactory and pyarrow's CryptoFactory in one)."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from typing import Callable

from ..crypto import random_bytes
from ..format.properties import DecryptionProperties, EncryptionProperties
from ..kms.base import DEFAULT, KmsClient, KmsConnectionConfig
from ..kms.context import FOOTER, key_context
from .config import DecryptionConfig, EncryptionConfig, prefix_bytes, seconds
from .material import COLUMN_KEY_REFERENCE_PREFIX, FOOTER_KEY_REFERENCE, KeyMaterial, KeyMetadata
from .scan import KeyMaterialReader
from .template import check_resolved
from .toolkit import ExpiringCache, KeyCaches, KeyUnwrapper, KeyWrapper

KmsClientFactory = Callable[[KmsConnectionConfig], KmsClient]


class CryptoFactory:
    """``CryptoFactory(kms_client_factory)``: ``kms_client_factory(KmsConnectionConfig)``
    returns a :class:`~pqseal.kms.KmsClient`. The factory owns its caches (KMS clients per
    access token and KMS instance id, KEKs per master key and per KEK id): use one factory
    per job, so a job makes one KMS call per master key."""

    def __init__(self, kms_client_factory: KmsClientFactory, *, caches: KeyCaches | None = None):
        self.kms_client_factory = kms_client_factory
        self.caches = KeyCaches() if caches is None else caches
        self._rotation_keks = ExpiringCache()   # KEKs under the new master key versions, for rotations only

    def file_encryption_properties(self, kms_connection_config: KmsConnectionConfig,
                                   encryption_config: EncryptionConfig, parquet_file_path=None) -> EncryptionProperties:
        """Fresh DEKs for the footer and every encrypted column, wrapped under their master
        keys; the key material goes into the file's key metadata (internal storage) or
        beside it. Every other field of the config is passed on to the properties."""
        cfg = encryption_config
        lifetime = seconds(cfg.cache_lifetime)
        kms = self.caches.kms_client(self.kms_client_factory, kms_connection_config, lifetime)
        wrapper = KeyWrapper(kms, kms_connection_config, double_wrapping=cfg.double_wrapping,
                             cache_lifetime=lifetime, kek_length_bits=cfg.kek_length_bits,
                             cache=self.caches.kek_write)
        materials: list[KeyMaterial] = []

        def wrap(dek: bytes, master_key_id: str, is_footer: bool) -> KeyMaterial:
            materials.append(wrapper.wrap(dek, master_key_id, is_footer))
            return materials[-1]
        with key_context(file=_file_name(parquet_file_path)):
            props = encryption_properties(cfg, wrap)
        seal_usage = getattr(kms, "seal_usage", None)   # a KMS that counts usage (the local keystore)
        if seal_usage is not None:
            props.key_usage = seal_usage(materials)
        return props

    def rotate_master_keys(self, kms_connection_config: KmsConnectionConfig, parquet_file_path, *,
                           double_wrapping: bool = True, cache_lifetime: float = 600.0) -> int:
        """Re-wrap every key of a file with the current master key versions (new KEKs when
        double wrapping), the DEKs unchanged: external key material is replaced beside the
        file; internal material by rewriting the file's footer only, in place and
        crash-safe (:mod:`pqseal.keys.rotation`). Returns the number of keys re-wrapped."""
        from .rotation import rotate_file, unwrapping_decryption

        kms = self.caches.kms_client(self.kms_client_factory, kms_connection_config, cache_lifetime)
        unwrapper = KeyUnwrapper(kms, kms_connection_config, cache_lifetime=cache_lifetime,
                                 cache=self.caches.kek_read)
        # fresh KEKs under the new master key versions, shared by this factory's rotations
        # only (other writers keep theirs): one wrap per master key for a job's files
        wrapper = KeyWrapper(kms, kms_connection_config, double_wrapping=double_wrapping, cache_lifetime=cache_lifetime,
                             cache=self._rotation_keks)
        seal_usage = getattr(kms, "seal_usage", None)   # counts the re-wrapped DEKs and checks their usage limits

        def rewrap(m: KeyMaterial) -> KeyMaterial:
            new = rewrap_one(m, unwrapper.unwrap, wrapper.wrap)
            if seal_usage is not None:
                seal_usage([new])
            return new
        return rotate_file(parquet_file_path, unwrapping_decryption(unwrapper.unwrap), rewrap).keys

    def file_decryption_properties(self, kms_connection_config: KmsConnectionConfig,
                                   decryption_config: DecryptionConfig | None = None,
                                   parquet_file_path=None) -> DecryptionProperties:
        """A key retriever that unwraps each key from its material (internal, or in the
        ``_KEY_MATERIAL_FOR_<file>.json`` beside ``parquet_file_path``). KMS coordinates
        come from ``kms_connection_config`` and, where that says DEFAULT, from the
        footer's key material."""
        lifetime = seconds((decryption_config or DecryptionConfig()).cache_lifetime)
        conn = kms_connection_config
        reader = KeyMaterialReader(parquet_file_path)

        def retrieve(key_metadata: bytes | None, column_path: str | None) -> bytes:
            nonlocal conn
            material = reader.material(key_metadata)
            if material.is_footer_key:
                conn = kms_connection_for(conn, material)
            kms = self.caches.kms_client(self.kms_client_factory, conn, lifetime)
            unwrapper = KeyUnwrapper(kms, conn, cache_lifetime=lifetime, cache=self.caches.kek_read)
            with key_context(file=_file_name(parquet_file_path), column=column_path or FOOTER):
                return unwrapper.unwrap(material)

        return DecryptionProperties(key_retriever=retrieve)


def _file_name(path) -> str | None:
    """The base name a KMS may bind a file's single-wrapped keys to (None: no path)."""
    return os.path.basename(os.fspath(path)) if isinstance(path, (str, os.PathLike)) else None


Wrap = Callable[[bytes, str, bool], KeyMaterial]   # (DEK, master key id, is footer key) -> key material


def encryption_properties(cfg: EncryptionConfig, wrap: Wrap) -> EncryptionProperties:
    """The properties of one file written under ``cfg``: a fresh DEK for the footer and
    for every column of ``column_keys``, each wrapped by ``wrap``; PKMT1 material in the
    key metadata (internal storage) or as the file's external material (references
    ``footerKey``, ``columnKey0``...)."""
    check_resolved(cfg)   # no KMS (nor KEK) ever wraps under an id like "tenant-{customer_id}"
    nbytes = cfg.data_key_length_bits // 8
    external: dict[str, str] = {}

    def new_key(master_key_id: str, is_footer: bool, column: str | None = None):
        dek = random_bytes(nbytes)
        with key_context(column=column or FOOTER):   # what a KMS may bind the wrapped key to
            material = wrap(dek, master_key_id, is_footer)
        if cfg.internal_key_material:
            return dek, material.to_json(True).encode()
        ref = FOOTER_KEY_REFERENCE if is_footer else f"{COLUMN_KEY_REFERENCE_PREFIX}{len(external) - 1}"
        external[ref] = material.to_json(None)
        return dek, KeyMetadata.external(ref)

    footer_dek, footer_md = new_key(cfg.footer_key, True)
    column_keys = None
    if not cfg.uniform_encryption:
        if not cfg.column_keys:
            raise ValueError("give column_keys or set uniform_encryption=True")
        column_keys = {}
        for mk, cols in cfg.column_keys.items():
            for col in cols:
                column_keys[col] = new_key(mk, False, col)  # a fresh DEK per column
    return EncryptionProperties(footer_dek, column_keys=column_keys, algorithm=cfg.encryption_algorithm,
                                plaintext_footer=cfg.plaintext_footer, footer_key_metadata=footer_md,
                                aad_prefix=prefix_bytes(cfg.aad_prefix), store_aad_prefix=cfg.store_aad_prefix,
                                v2_framing=cfg.v2_framing, complete_columns=cfg.complete_columns,
                                external_key_material=external or None)


def rewrap(entries: Mapping[str, str], unwrap: Callable[[KeyMaterial], bytes], wrap: Wrap) -> dict[str, str]:
    """The entries of an external key material file (``{reference: PKMT1 JSON}``) with
    each DEK unwrapped by ``unwrap`` and wrapped again by ``wrap``. Footer entries keep the
    KMS coordinates the file was written with."""
    return {ref: rewrap_one(KeyMaterial.parse(text), unwrap, wrap).to_json(None) for ref, text in entries.items()}


def rewrap_one(m: KeyMaterial, unwrap: Callable[[KeyMaterial], bytes], wrap: Wrap) -> KeyMaterial:
    """The DEK of ``m`` wrapped anew; a footer key keeps the KMS coordinates the file was
    written with."""
    new = wrap(unwrap(m), m.master_key_id, m.is_footer_key)
    if m.is_footer_key:
        new = dataclasses.replace(new, kms_instance_id=m.kms_instance_id, kms_instance_url=m.kms_instance_url)
    return new


def kms_connection_for(conn: KmsConnectionConfig, footer_material: KeyMaterial) -> KmsConnectionConfig:
    """The KMS coordinates to read a file with: ``conn``'s, where it says DEFAULT those of
    the file's footer key material (as parquet-java and Arrow do)."""
    if conn.kms_instance_id != DEFAULT or not footer_material.kms_instance_id:
        return conn
    url = (footer_material.kms_instance_url or DEFAULT) if conn.kms_instance_url == DEFAULT else conn.kms_instance_url
    return KmsConnectionConfig(footer_material.kms_instance_id, url, conn.key_access_token,
                               dict(conn.custom_kms_conf))
