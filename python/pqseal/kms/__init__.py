"""KMS clients: the parquet-java / pyarrow ``KmsClient`` contract and pqseal's clients,
named by URIs (:func:`open_kms`)."""

from .base import KmsClient, KmsConnectionConfig
from .keylist import KeyListKms, parse_key_list
from .uri import KmsUri, kms_connection_from_uri, open_kms, parse_kms_uri

__all__ = ["KmsClient", "KmsConnectionConfig", "KeyListKms", "KmsUri", "kms_connection_from_uri", "open_kms",
           "parse_key_list", "parse_kms_uri"]
