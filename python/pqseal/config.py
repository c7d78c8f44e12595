"""Encryption and decryption configuration (``pqseal.config``, the public name): defined
in :mod:`pqseal.keys.config`, beside the key tools that consume it."""

from .keys.config import (CONNECTION_PROPERTIES, ENCRYPTION_PROPERTIES, DecryptionConfig, EncryptionConfig,
                          encryption_config_from_properties, kms_connection_from_properties, parse_column_keys,
                          prefix_bytes, property_name, seconds)

__all__ = ["CONNECTION_PROPERTIES", "ENCRYPTION_PROPERTIES", "DecryptionConfig", "EncryptionConfig",
           "encryption_config_from_properties", "kms_connection_from_properties", "parse_column_keys",
           "prefix_bytes", "property_name", "seconds"]
