"""A KMS client that counts the calls it passes on to another one (tests and benchmarks)."""

from __future__ import annotations

import os
import threading

from pqseal.kms import KmsClient


class CountingKms(KmsClient):
    """Counts wraps and unwraps (thread-safe) and records the pids of the processes that
    made them, so a test can assert that only the driver calls the KMS. Passes on (and
    counts, as ``seals``) ``seal_usage`` where ``inner`` counts key usage (the local
    keystore)."""

    def __init__(self, inner: KmsClient):
        self.inner, self.wraps, self.unwraps, self.seals = inner, 0, 0, 0
        self.pids: set[int] = set()
        self._lock = threading.Lock()
        if hasattr(inner, "seal_usage"):
            self.seal_usage = self._seal_usage

    def _seal_usage(self, materials, **kw):
        self._count("seals")
        return self.inner.seal_usage(materials, **kw)

    def _count(self, op: str) -> None:
        with self._lock:
            setattr(self, op, getattr(self, op) + 1)
            self.pids.add(os.getpid())

    def wrap_key(self, key_bytes, master_key_identifier):
        self._count("wraps")
        return self.inner.wrap_key(key_bytes, master_key_identifier)

    def unwrap_key(self, wrapped_key, master_key_identifier):
        self._count("unwraps")
        return self.inner.unwrap_key(wrapped_key, master_key_identifier)
