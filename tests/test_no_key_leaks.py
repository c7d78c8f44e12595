"""No key bytes in any exception message, log line or repr: run the key-handling paths
with logging at DEBUG, provoke their errors, and grep everything produced for the keys in
every encoding a leak could take (raw, hex, base64)."""

from __future__ import annotations

import base64
import logging
import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import pqseal
from pqseal.config import EncryptionConfig
from pqseal.crypto import CtrModuleCipher, GcmModuleCipher, ModuleKey, unwrap_key_locally
from pqseal.errors import (InvalidKey, InvalidOrdinal, InvalidTag, KeyAccessDenied, KeyNotFound,
                           MalformedKeyMaterial)
from pqseal.format import DecryptionProperties, EncryptionProperties, VerificationFailed
from pqseal.keys import CryptoFactory, clear_caches
from pqseal.kms import KeyListKms, KmsConnectionConfig
from pqseal.kms.keystore import LocalKeystore


def _forms(key: bytes) -> list[str]:
    forms = [key.hex(), key.hex().upper(), base64.b64encode(key).decode(), repr(key)[2:-1]]
    return [f for f in forms if len(f) >= 16]


def test_no_key_bytes_anywhere(tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    clear_caches()
    footer, col, master = os.urandom(16), os.urandom(32), os.urandom(16)
    passphrase = b"p" + os.urandom(12).hex().encode()
    texts: list[str] = []

    def grab(expected, fn):
        """Run a call that must fail with ``expected``; keep everything its error shows."""
        with pytest.raises(expected) as ei:
            fn()
        exc = ei.value
        texts.extend([str(exc), repr(exc), repr(exc.args)])
        if exc.__cause__ is not None:
            texts.append(repr(exc.__cause__))

    t = pa.table({"a": np.arange(100), "b": [str(i) for i in range(100)]})
    src = tmp_path / "p.parquet"
    pq.write_table(t, src)
    enc = EncryptionProperties(footer, column_keys={"b": col})
    sealed = tmp_path / "s.parquet"
    pqseal.encrypt_file(src, sealed, enc)
    mk = ModuleKey(footer)
    gcm, ctr = GcmModuleCipher([mk, col], b"aad"), CtrModuleCipher(col)
    kms = KeyListKms({"m": master})
    ks = LocalKeystore.init(tmp_path / "ks.json", passphrase)
    ks.create("m2")
    texts += [repr(x) for x in (mk, gcm, ctr, enc, kms, ks, DecryptionProperties(footer, column_keys={"b": col}),
                                KmsConnectionConfig(key_access_token=footer.hex()))]
    texts += [str(x) for x in (mk, gcm)]
    # errors on every path that holds keys
    out = tmp_path / "x.parquet"
    grab(InvalidTag, lambda: pqseal.decrypt_file(sealed, out, DecryptionProperties(col, column_keys={"b": col})))
    grab(InvalidTag, lambda: pqseal.decrypt_file(sealed, out, DecryptionProperties(footer, column_keys={"b": footer})))
    grab(KeyNotFound, lambda: pqseal.decrypt_file(sealed, out, DecryptionProperties(footer)))
    grab(InvalidTag, lambda: gcm.decrypt(gcm.encrypt(b"x" * 40)[:-1] + b"\0"))
    grab(InvalidOrdinal, lambda: gcm.encrypt(b"x", row_group=40000))
    grab(InvalidKey, lambda: ModuleKey(footer[:15]))
    grab(InvalidTag, lambda: unwrap_key_locally(kms.wrap_key(footer, "m"), col, b"m"))
    grab(InvalidTag, lambda: kms.unwrap_key(kms.wrap_key(footer, "m")[:-4] + "AAA=", "m"))
    grab(KeyNotFound, lambda: kms.wrap_key(footer, "missing"))
    grab(KeyAccessDenied, lambda: LocalKeystore(ks.path, b"wrong"))
    grab(InvalidTag, lambda: ks.unwrap_key("pqks1:1:" + base64.b64encode(os.urandom(40)).decode(), "m2"))
    grab(VerificationFailed, lambda: pqseal.verify(sealed, DecryptionProperties(footer, column_keys={"b": footer})))
    f = CryptoFactory(lambda cfg: kms)
    grab(MalformedKeyMaterial,
         lambda: pqseal.decrypt_file(sealed, out, f.file_decryption_properties(KmsConnectionConfig())))
    grab(KeyNotFound, lambda: f.file_encryption_properties(KmsConnectionConfig(),
                                                           EncryptionConfig("nope", uniform_encryption=True)))
    assert not out.exists()
    texts += [r.getMessage() for r in caplog.records]
    blob = "\n".join(texts)
    assert len(texts) > 20
    for key in (footer, col, master, passphrase):
        for form in _forms(key):
            assert form not in blob, "key material leaked"
    assert passphrase.decode() not in blob
