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
            return self._client.wrap_key(bytes(key_bytes), master_key_identifier)

        def unwrap_key(self, wrapped_key, master_key_identifier):
            return self._client.unwrap_key(wrapped_key, master_key_identifier)

    return lambda pa_config: _Bridge(factory(_to_pqseal_config(pa_config)))


def crypto_factory(factory: Callable[[KmsConnectionConfig], KmsClient]):
    """``pyarrow.parquet.encryption.CryptoFactory`` over a pqseal KMS client factory."""
    import pyarrow.parquet.encryption as pe

    return pe.CryptoFactory(kms_client_factory(factory))
