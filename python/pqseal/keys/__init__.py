"""Envelope key management: key material (PKMT1), single/double wrapping, KEK caches,
and the crypto factory that turns a KMS and a configuration into file keys."""

from .factory import CryptoFactory
from .material import KeyMaterial, KeyMetadata
from .toolkit import clear_caches

__all__ = ["CryptoFactory", "KeyMaterial", "KeyMetadata", "clear_caches"]
