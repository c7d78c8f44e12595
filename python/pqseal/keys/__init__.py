"""Envelope key management: key material (PKMT1), single/double wrapping, KEK caches,
and the crypto factory that turns a KMS and a configuration into file keys; key sessions
(driver-side KMS calls, worker-side local wrapping)."""

from .factory import CryptoFactory
from .material import KeyMaterial, KeyMetadata
from .session import KeySession
from .toolkit import clear_caches

__all__ = ["CryptoFactory", "KeyMaterial", "KeyMetadata", "KeySession", "clear_caches"]
