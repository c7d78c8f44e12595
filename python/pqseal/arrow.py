"""pyarrow bridge: pqseal KMS clients as pyarrow ``KmsClient``s.

    import pyarrow.parquet.encryption as pe
    from pqseal.arrow import crypto_factory
    from pqseal.kms import KeyListKms
    factory = crypto_factory(lambda cfg: KeyListKms("kf: ..., kc1: ..."))
    props = factory.file_decryption_properties(pe.KmsConnectionConfig(), pe.DecryptionConfiguration())
    pq.read_table("sealed.parquet", decryption_properties=props)
"""

from __future__ import annotations

from typing import Callable

from .kms.base import KmsClient, KmsConnectionConfig


def _to_pqseal_config(cfg) -> KmsConnectionConfig:
    return KmsConnectionConfig(kms_instance_id=getattr(cfg, "kms_instance_id", "") or "DEFAULT",
                               kms_instance_url=getattr(cfg, "kms_instance_url", "") or "DEFAULT",
                               key_access_token=getattr(cfg, "key_access_token", "") or "DEFAULT",
                               custom_kms_conf=dict(getattr(cfg, "custom_kms_conf", {}) or {}))


def kms_client_factory(factory: Callable[[KmsConnectionConfig], KmsClient]):
    """A pyarrow ``kms_client_factory`` built from a pqseal one: pyarrow's
    KmsConnectionConfig is translated and the pqseal client wrapped."""
    import pyarrow.parquet.encryption as pe

    class _Bridge(pe.KmsClient):
        def __init__(self, client: KmsClient):
            super().__init__()
            self._client = client

        def wrap_key(self, key_bytes, master_key_identifier):
            from .keys.template import check_id_resolved

            check_id_resolved(master_key_identifier)   # pyarrow does not resolve pqseal's templates
            return self._client.wrap_key(bytes(key_bytes), master_key_identifier)

        def unwrap_key(self, wrapped_key, master_key_identifier):
            return self._client.unwrap_key(wrapped_key, master_key_identifier)

    return lambda pa_config: _Bridge(factory(_to_pqseal_config(pa_config)))


def crypto_factory(factory: Callable[[KmsConnectionConfig], KmsClient]):
    """``pyarrow.parquet.encryption.CryptoFactory`` over a pqseal KMS client factory."""
    import pyarrow.parquet.encryption as pe

    return pe.CryptoFactory(kms_client_factory(factory))


# ---- pyarrow's configuration objects, accepted wherever pqseal takes its own ------------


def connection_config(cfg) -> KmsConnectionConfig:
    """pqseal's KmsConnectionConfig from pqseal's or pyarrow's."""
    return cfg if isinstance(cfg, KmsConnectionConfig) else _to_pqseal_config(cfg)


def pyarrow_connection_config(cfg: KmsConnectionConfig):
    import pyarrow.parquet.encryption as pe

    return pe.KmsConnectionConfig(kms_instance_id=cfg.kms_instance_id, kms_instance_url=cfg.kms_instance_url,
                                  key_access_token=cfg.key_access_token, custom_kms_conf=dict(cfg.custom_kms_conf))


def _is_pyarrow(obj, name: str) -> bool:
    t = type(obj)
    return t.__name__ == name and t.__module__.startswith("pyarrow")


def encryption_config(cfg):
    """pqseal's EncryptionConfig from pyarrow's ``EncryptionConfiguration`` (same field
    names); anything else is a TypeError."""
    from .config import EncryptionConfig

    if isinstance(cfg, EncryptionConfig):
        return cfg
    if not _is_pyarrow(cfg, "EncryptionConfiguration"):
        raise TypeError("encryption must be EncryptionProperties, pqseal.EncryptionConfig or "
                        f"pyarrow.parquet.encryption.EncryptionConfiguration, not {type(cfg).__name__}")
    uniform = bool(getattr(cfg, "uniform_encryption", False))
    # pyarrow's column_keys getter fails on a uniform configuration: read it only otherwise
    column_keys = {} if uniform else dict(cfg.column_keys or {})
    return EncryptionConfig(cfg.footer_key, column_keys={k: list(v) for k, v in column_keys.items()} or None,
                            uniform_encryption=uniform, encryption_algorithm=cfg.encryption_algorithm,
                            plaintext_footer=cfg.plaintext_footer, double_wrapping=cfg.double_wrapping,
                            cache_lifetime=cfg.cache_lifetime, internal_key_material=cfg.internal_key_material,
                            data_key_length_bits=cfg.data_key_length_bits)


def decryption_config(cfg):
    """pqseal's DecryptionConfig from None, itself or pyarrow's ``DecryptionConfiguration``."""
    from .config import DecryptionConfig

    if cfg is None:
        return DecryptionConfig()
    if isinstance(cfg, DecryptionConfig):
        return cfg
    if not _is_pyarrow(cfg, "DecryptionConfiguration"):
        raise TypeError("decryption must be DecryptionProperties, pqseal.DecryptionConfig, "
                        f"pyarrow.parquet.encryption.DecryptionConfiguration or None, not {type(cfg).__name__}")
    return DecryptionConfig(cache_lifetime=cfg.cache_lifetime)
