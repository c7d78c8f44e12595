"""A stand-in for :class:`pqseal.keys.KeySession` in the dataset tests, with its interface
(open/add_files/add_master_keys/encryption_properties/decryption_properties/
rewrap_material/portable/export/import_/close, ``kms_calls``, ``unreadable``,
``expires_at``), so the dataset driver can be tested before the real session lands.

It is NOT the two-tier design: where it is imported (a worker) it builds a key-list
KMS from the master keys it carries and wraps/unwraps through pqseal's CryptoFactory.
What the dataset tests check with it is the driver's side: the session is opened once on
the driver, shipped once per worker process, files it could not read fail without being
attempted, and rotation rewrites the material files. The KMS-call counts and the
no-KMS-in-workers property are the real session's tests.
"""

from __future__ import annotations

import os
import pickle
import time

from pqseal.errors import PqsealError
from pqseal.keys.session import DEFAULT_SESSION_LIFETIME

OPENED: list["FakeSession"] = []     # sessions opened in this process (the driver)
_factories: dict[str, object] = {}   # key list -> CryptoFactory, per process


class FakeKms:
    """What the tests pass as ``kms``: the master keys as a key-list string (picklable)."""

    def __init__(self, key_list: str):
        self.key_list = key_list


def _factory(key_list: str):
    from pqseal.keys import CryptoFactory
    from pqseal.kms import KeyListKms

    f = _factories.get(key_list)
    if f is None:
        client = KeyListKms(key_list)
        f = _factories[key_list] = CryptoFactory(lambda cfg: client)
    return f


class FakeSession:
    def __init__(self, key_list: str, encryption, lifetime: float):
        self.key_list = key_list
        self.encryption = encryption
        self.expires_at = time.time() + lifetime
        self.kms_calls = 0
        self.unreadable: dict[str, str] = {}
        self.files: list[str] = []
        self.master_keys: list[str] = []
        self.closed = False

    @classmethod
    def open(cls, kms=None, encryption=None, *, decryption=None, kms_connection_config=None,
             lifetime: float = DEFAULT_SESSION_LIFETIME) -> "FakeSession":
        assert isinstance(kms, FakeKms), kms
        s = cls(kms.key_list, encryption, lifetime)
        OPENED.append(s)
        return s

    def add_files(self, paths) -> int:
        from pqseal.format.source import Source

        for p in paths:
            self.files.append(p)
            try:
                with Source(p, self.decryption_properties(p)):
                    pass
            except (PqsealError, OSError, ValueError) as exc:
                self.unreadable[p] = f"{type(exc).__name__}: {exc}"
        return 0

    def add_master_keys(self, ids) -> int:
        self.master_keys += list(ids)
        return 0

    def _check(self):
        if self.closed or time.time() > self.expires_at:
            raise PqsealError("session closed or expired")

    def encryption_properties(self, dst=None):
        from pqseal.kms.base import KmsConnectionConfig

        self._check()
        return _factory(self.key_list).file_encryption_properties(KmsConnectionConfig(), self.encryption, dst)

    def decryption_properties(self, src=None):
        from pqseal.kms.base import KmsConnectionConfig

        self._check()
        return _factory(self.key_list).file_decryption_properties(KmsConnectionConfig(), None, src)

    def rewrap_material(self, material: dict[str, str]) -> dict[str, str]:
        from pqseal.keys.material import KeyMaterial
        from pqseal.keys.toolkit import ExpiringCache, KeyUnwrapper, KeyWrapper
        from pqseal.kms.base import KmsConnectionConfig

        self._check()
        f = _factory(self.key_list)
        conn = KmsConnectionConfig()
        kms = f.caches.kms_client(f.kms_client_factory, conn, 600.0)
        unwrap = KeyUnwrapper(kms, conn, cache_lifetime=600.0, cache=ExpiringCache())
        wrap = KeyWrapper(kms, conn, double_wrapping=True, cache_lifetime=600.0, cache=ExpiringCache())
        out = {}
        for ref, text in material.items():
            m = KeyMaterial.parse(text)
            out[ref] = wrap.wrap(unwrap.unwrap(m), m.master_key_id, m.is_footer_key).to_json(None)
        return out

    def portable(self):
        return self

    def export(self) -> bytes:
        return pickle.dumps((self.key_list, self.encryption, self.expires_at - time.time(), os.getpid()))

    @classmethod
    def import_(cls, data: bytes) -> "FakeSession":
        key_list, enc, left, driver = pickle.loads(data)
        s = cls(key_list, enc, left)
        s.imported_from = driver
        return s

    def close(self) -> None:
        self.closed = True
