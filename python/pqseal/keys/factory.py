"""From a KMS and a configuration to the engine's key properties (parquet-java's
PropertiesDrivenCryptoFactory and pyarrow's CryptoFactory in one)."""

from __future__ import annotations

import json
import os
from typing import Callable

from ..errors import KeyNotFound, MalformedKeyMaterial, UnsupportedFeature
from ..format.properties import FOOTER_KEY, DecryptionProperties, EncryptionProperties
from ..kms.base import DEFAULT, KmsClient, KmsConnectionConfig
from ..config import DecryptionConfig, EncryptionConfig
from .material import KeyMaterial, KeyMetadata, material_file_name
from .toolkit import KeyUnwrapper, KeyWrapper, get_kms_client

KmsClientFactory = Callable[[KmsConnectionConfig], KmsClient]


class CryptoFactory:
    """``CryptoFactory(kms_client_factory)``: ``kms_client_factory(KmsConnectionConfig)``
    returns a :class:`~pqseal.kms.KmsClient`; clients are cached per access token and KMS
    instance id."""

    def __init__(self, kms_client_factory: KmsClientFactory):
        self.kms_client_factory = kms_client_factory

    def file_encryption_properties(self, kms_connection_config: KmsConnectionConfig,
                                   encryption_config: EncryptionConfig, parquet_file_path=None) -> EncryptionProperties:
        """Fresh DEKs for the footer and every encrypted column, wrapped under their master
        keys; the key material goes into the file's key metadata (internal storage)."""
        cfg = encryption_config
        if not cfg.internal_key_material:
            raise UnsupportedFeature("external key material is not written yet; use internal_key_material=True")
        kms = get_kms_client(self.kms_client_factory, kms_connection_config, cfg.cache_lifetime)
        wrapper = KeyWrapper(kms, kms_connection_config, double_wrapping=cfg.double_wrapping,
                             cache_lifetime=cfg.cache_lifetime, kek_length_bits=cfg.kek_length_bits)
        nbytes = cfg.data_key_length_bits // 8

        def new_key(master_key_id: str, is_footer: bool):
            dek = os.urandom(nbytes)
            material = wrapper.wrap(dek, master_key_id, is_footer)
            return dek, material.to_json(True).encode()

        footer_dek, footer_md = new_key(cfg.footer_key, True)
        column_keys = None
        if not cfg.uniform_encryption:
            column_keys = {}
            for mk, cols in cfg.column_keys.items():
                for col in cols:
                    column_keys[col] = new_key(mk, False)  # a fresh DEK per column
        props = EncryptionProperties(footer_dek, column_keys=column_keys, algorithm=cfg.encryption_algorithm,
                                     plaintext_footer=cfg.plaintext_footer, footer_key_metadata=footer_md)
        props.complete_columns = cfg.complete_columns
        return props

    def file_decryption_properties(self, kms_connection_config: KmsConnectionConfig,
                                   decryption_config: DecryptionConfig | None = None,
                                   parquet_file_path=None) -> DecryptionProperties:
        """A key retriever that unwraps each key from its material (internal, or in the
        ``_KEY_MATERIAL_FOR_<file>.json`` beside ``parquet_file_path``). KMS coordinates
        come from ``kms_connection_config`` and, where that says DEFAULT, from the
        footer's key material."""
        dcfg = decryption_config or DecryptionConfig()
        state = {"config": kms_connection_config, "external": None}

        def external_material(reference: str) -> KeyMaterial:
            if parquet_file_path is None:
                raise KeyNotFound("the file keeps its key material externally: pass parquet_file_path")
            if state["external"] is None:
                path = os.path.join(os.path.dirname(os.fspath(parquet_file_path)),
                                    material_file_name(os.path.basename(os.fspath(parquet_file_path))))
                try:
                    with open(path, "rb") as f:
                        state["external"] = json.loads(f.read().decode("utf-8"))
                except FileNotFoundError:
                    raise KeyNotFound(f"external key material file {path} not found") from None
                except (ValueError, UnicodeDecodeError):
                    raise MalformedKeyMaterial(f"external key material file {path} is not JSON") from None
                if not isinstance(state["external"], dict):
                    raise MalformedKeyMaterial(f"external key material file {path} is not a JSON object")
            entry = state["external"].get(reference)
            if entry is None:
                raise KeyNotFound(f"key reference {reference!r} not in the external key material file")
            return KeyMaterial.parse(entry)

        def retrieve(key_metadata, column_path):
            md = KeyMetadata.parse(key_metadata)
            material = md.material if md.internal else external_material(md.reference)
            cfg = state["config"]
            if material.is_footer_key and cfg.kms_instance_id == DEFAULT and material.kms_instance_id:
                cfg = KmsConnectionConfig(material.kms_instance_id,
                                          material.kms_instance_url if cfg.kms_instance_url == DEFAULT
                                          else cfg.kms_instance_url,
                                          cfg.key_access_token, dict(cfg.custom_kms_conf))
                state["config"] = cfg
            kms = get_kms_client(self.kms_client_factory, cfg, dcfg.cache_lifetime)
            return KeyUnwrapper(kms, cfg, cache_lifetime=dcfg.cache_lifetime).unwrap(material)

        return DecryptionProperties(key_retriever=retrieve)
