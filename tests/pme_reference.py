"""An independent reference for PME modules, built on ``cryptography`` only.

Nothing here imports pqseal: the module AAD layout is re-derived from the
parquet-format spec (Encryption.md, "Module AAD") so that a mistake shared by
``pqseal.crypto.module_aad`` and the native AAD builder cannot cancel out.
"""

from __future__ import annotations

import os
import struct

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

NONCE = 12
TAG = 16
PAGE_TYPES = (2, 4)  # DATA_PAGE, DATA_PAGE_HEADER carry a page ordinal
ALL_TYPES = tuple(range(10))


def ref_module_aad(file_aad: bytes, mtype: int, rg: int = 0, col: int = 0, page: int = 0) -> bytes:
    """file_aad || type(1) [|| rg int16 LE || col int16 LE [|| page int16 LE]]."""
    out = bytes(file_aad) + bytes([mtype])
    if mtype == 0:  # footer: no ordinals
        return out
    out += struct.pack("<hh", rg, col)
    if mtype in PAGE_TYPES:
        out += struct.pack("<h", page)
    return out


def gcm_encrypt_module(key: bytes, pt: bytes, aad: bytes, nonce: bytes | None = None) -> bytes:
    nonce = os.urandom(NONCE) if nonce is None else nonce
    body = nonce + AESGCM(key).encrypt(nonce, bytes(pt), aad)
    return struct.pack("<I", len(body)) + body


def gcm_decrypt_module(key: bytes, module: bytes, aad: bytes) -> bytes:
    module = bytes(module)
    (n,) = struct.unpack_from("<I", module)
    assert n == len(module) - 4, "length prefix"
    return AESGCM(key).decrypt(module[4:4 + NONCE], module[4 + NONCE:], aad)


def ctr_keystream_xor(key: bytes, nonce: bytes, data: bytes) -> bytes:
    c = Cipher(algorithms.AES(key), modes.CTR(nonce + b"\x00\x00\x00\x01")).encryptor()
    return c.update(bytes(data)) + c.finalize()


def ctr_encrypt_module(key: bytes, pt: bytes, nonce: bytes | None = None) -> bytes:
    nonce = os.urandom(NONCE) if nonce is None else nonce
    body = nonce + ctr_keystream_xor(key, nonce, pt)
    return struct.pack("<I", len(body)) + body


def ctr_decrypt_module(key: bytes, module: bytes) -> bytes:
    module = bytes(module)
    (n,) = struct.unpack_from("<I", module)
    assert n == len(module) - 4, "length prefix"
    return ctr_keystream_xor(key, module[4:4 + NONCE], module[4 + NONCE:])
