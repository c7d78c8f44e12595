"""Local key wrapping as parquet-java's and Arrow's key tools do it:
``base64(nonce(12) ‖ AES-GCM ciphertext ‖ tag(16))`` with a caller-chosen AAD
(the master key id for KMS mocks, the raw 16-byte KEK id for double wrapping)."""

from __future__ import annotations

import base64
import binascii

from .._native import lib
from ..errors import InvalidTag, MalformedKeyMaterial
from .cipher import NONCE_LEN, TAG_LEN, BatchSpec, GcmModuleCipher
from .keys import ModuleKey


def _cipher(wrapping_key, backend):
    return GcmModuleCipher(ModuleKey.coerce(wrapping_key), backend=backend)


def wrap_key_locally(key_to_wrap, wrapping_key, aad: bytes, *, backend: str | None = None,
                     _nonce: bytes | None = None) -> str:
    """Encrypt ``key_to_wrap`` under ``wrapping_key`` (AES-GCM, fresh nonce, AAD ``aad``)."""
    cipher = _cipher(wrapping_key, backend)
    batch = cipher._run(BatchSpec(encrypt=True, modules=[key_to_wrap], module_type=0, nonces=_nonce,
                                  aad_mode=lib.PQ_AAD_FIXED, aad=bytes(aad), framing=lib.PQ_FRAME_RAW))
    return base64.b64encode(batch.buffer.tobytes()).decode("ascii")


def unwrap_key_locally(wrapped: str | bytes, wrapping_key, aad: bytes, *, backend: str | None = None) -> bytes:
    """Inverse of :func:`wrap_key_locally`; raises :class:`InvalidTag` on a wrong key or AAD."""
    try:
        raw = base64.b64decode(wrapped, validate=True)
    except (binascii.Error, ValueError, TypeError):
        raise MalformedKeyMaterial("wrapped key is not valid base64") from None
    if len(raw) < NONCE_LEN + TAG_LEN:
        raise MalformedKeyMaterial(f"wrapped key too short ({len(raw)} bytes)")
    cipher = _cipher(wrapping_key, backend)
    try:
        batch = cipher._run(BatchSpec(encrypt=False, modules=[raw], module_type=0, aad_mode=lib.PQ_AAD_FIXED,
                                      aad=bytes(aad), framing=lib.PQ_FRAME_RAW))
    except InvalidTag:
        raise InvalidTag("key unwrap failed: wrong wrapping key or AAD, or the wrapped key was altered") from None
    return batch.buffer.tobytes()
