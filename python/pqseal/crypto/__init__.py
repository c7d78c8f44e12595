"""Hazmat layer: PME module ciphers over the native core.

Everything here is easy to misuse (wrong ordinals, reused keys across files); the
file engine and key tools build on it. Nonces, keys and salts all come from
OpenSSL's DRBG (:func:`random_bytes`).
"""

from .cipher import LEN_PREFIX, NONCE_LEN, TAG_LEN, Batch, CtrModuleCipher, GcmModuleCipher
from .keys import GCM_INVOCATION_LIMIT, KEY_LENGTHS, ModuleKey
from .keywrap import unwrap_key_locally, wrap_key_locally
from .modules import MAX_ORDINAL, ModuleType, module_aad
from .rng import random_bytes

__all__ = [
    "Batch", "CtrModuleCipher", "GcmModuleCipher", "ModuleKey", "ModuleType", "module_aad",
    "wrap_key_locally", "unwrap_key_locally", "random_bytes", "GCM_INVOCATION_LIMIT", "KEY_LENGTHS", "MAX_ORDINAL",
    "NONCE_LEN", "TAG_LEN", "LEN_PREFIX",
]
