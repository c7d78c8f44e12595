"""A KMS whose master keys come from a key list, byte-compatible with parquet-java's
``InMemoryKMS`` test client (what Spark's and the vendors' documentation use):
master keys from ``"id1: base64, id2: base64"`` (``parquet.encryption.key.list``); a key
is wrapped locally with AES-GCM under the master key, AAD = the UTF-8 master key id,
and the result is ``base64(nonce ‖ ciphertext ‖ tag)``.

Master keys live in this process: this client is for tests, demos and setups where
keys are provisioned by other means; it is not a key management system.
"""

from __future__ import annotations

import base64
import binascii
from typing import Mapping

from ..crypto import ModuleKey, unwrap_key_locally, wrap_key_locally
from ..errors import KeyNotFound, MalformedKeyMaterial
from .base import KmsClient


def parse_key_list(text: str) -> dict[str, bytes]:
    """``"id: base64, id2: base64"`` → {id: key}, as parquet-java parses it (entries
    split on ``,`` and then on the first ``:``, both parts trimmed)."""
    keys: dict[str, bytes] = {}
    for entry in (text or "").split(","):
        if not entry.strip():
            continue
        if ":" not in entry:
            raise MalformedKeyMaterial("key list entry without ':' (expected 'id: base64key')")
        kid, b64 = entry.split(":", 1)
        kid, b64 = kid.strip(), b64.strip()
        if not kid:
            raise MalformedKeyMaterial("key list entry with an empty key id")
        try:
            key = base64.b64decode(b64, validate=True)
        except (binascii.Error, ValueError):
            raise MalformedKeyMaterial(f"key list: key of {kid!r} is not valid base64") from None
        if len(key) not in (16, 24, 32):
            raise MalformedKeyMaterial(f"key list: key of {kid!r} must be 16, 24 or 32 bytes, got {len(key)}")
        if kid in keys:
            raise MalformedKeyMaterial(f"key list: master key {kid!r} listed twice")
        keys[kid] = key
    return keys


class KeyListKms(KmsClient):
    """In-process master keys (``InMemoryKMS``-compatible wrapping)."""

    def __init__(self, keys: str | Mapping[str, bytes]):
        raw = parse_key_list(keys) if isinstance(keys, str) else dict(keys)
        self._keys = {kid: ModuleKey(k) for kid, k in raw.items()}

    def _key(self, master_key_identifier: str) -> ModuleKey:
        key = self._keys.get(master_key_identifier)
        if key is None:
            raise KeyNotFound(f"master key {master_key_identifier!r} is not in the key list")
        return key

    def wrap_key(self, key_bytes: bytes, master_key_identifier: str) -> str:
        return wrap_key_locally(key_bytes, self._key(master_key_identifier), master_key_identifier.encode("utf-8"))

    def unwrap_key(self, wrapped_key: str, master_key_identifier: str) -> bytes:
        return unwrap_key_locally(wrapped_key, self._key(master_key_identifier),
                                  master_key_identifier.encode("utf-8"))

    @property
    def master_key_ids(self) -> list[str]:
        return sorted(self._keys)

    def __repr__(self) -> str:
        return f"<KeyListKms master keys {self.master_key_ids}>"

    def __reduce__(self):
        raise TypeError("KeyListKms holds master keys and cannot be pickled")


KEY_LIST_ENV = "PQSEAL_KEY_LIST"


def from_uri(uri):
    """``keylist:``: the master keys of ``$PQSEAL_KEY_LIST`` (read now, never from the URI)."""
    import os

    from .uri import check_options

    check_options(uri, ())
    text = os.environ.get(KEY_LIST_ENV)
    if not text:
        raise KeyNotFound(f"keylist: no master keys: set ${KEY_LIST_ENV} to 'id: base64, ...'")
    client = KeyListKms(text)
    return lambda cfg: client
