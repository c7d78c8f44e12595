"""KMS clients: the parquet-java / pyarrow ``KmsClient`` contract and pqseal's clients."""

from .base import KmsClient, KmsConnectionConfig
from .keylist import KeyListKms, parse_key_list

__all__ = ["KmsClient", "KmsConnectionConfig", "KeyListKms", "parse_key_list"]
