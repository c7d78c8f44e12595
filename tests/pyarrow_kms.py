"""pyarrow's side of the KMS interop: a pyarrow ``KmsClient`` that wraps keys as
parquet-java's InMemoryKMS does (AES-GCM under the master key, AAD = the key id,
base64 of nonce, ciphertext and tag), written with `cryptography` directly, independent
of pqseal's implementation."""

from __future__ import annotations

import base64
import os
from collections.abc import Mapping

import pyarrow.parquet.encryption as pe
from cryptography.hazmat.primitives.ciphers.aead import AESGCM


def key_list_client(master: Mapping[str, bytes]) -> type:
    """A pyarrow KmsClient class (for ``pe.CryptoFactory``) over the master keys ``master``."""

    class PyarrowKeyList(pe.KmsClient):
        def __init__(self, cfg):
            super().__init__()

        def wrap_key(self, key_bytes, master_key_identifier):
            nonce = os.urandom(12)
            ct = AESGCM(master[master_key_identifier]).encrypt(nonce, bytes(key_bytes),
                                                               master_key_identifier.encode())
            return base64.b64encode(nonce + ct).decode()

        def unwrap_key(self, wrapped_key, master_key_identifier):
            raw = base64.b64decode(wrapped_key)
            return AESGCM(master[master_key_identifier]).decrypt(raw[:12], raw[12:], master_key_identifier.encode())

    return PyarrowKeyList


def pyarrow_read(data: bytes, kms):
    """pyarrow's own PME reader over the bytes of a file, keys unwrapped by the pqseal KMS
    client ``kms`` (through ``pqseal.arrow``): independent of pqseal's engine."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from pqseal.arrow import crypto_factory

    props = crypto_factory(lambda cfg: kms).file_decryption_properties(pe.KmsConnectionConfig(),
                                                                        pe.DecryptionConfiguration())
    return pq.read_table(pa.BufferReader(data), decryption_properties=props)


def footer_key_id(data: bytes) -> str:
    """The footer's master key id, from the file's key material."""
    import json

    from pqseal.format.source import Source

    with Source(data) as s:
        return json.loads(s.crypto.footer_key_metadata)["masterKeyID"]
