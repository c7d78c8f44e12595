"""A KMS client that counts the calls it passes on to another one (tests and benchmarks)."""

from __future__ import annotations

import os
import threading

from pqseal.kms import KmsClient


class CountingKms(KmsClient):
    """Counts wraps and unwraps (thread-safe) and records the pids of the processes that
    made them, so a test can assert that only the driver calls the KMS."""

    def __init__(self, inner: KmsClient):
        self.inner, self.wraps, self.unwraps = inner, 0, 0
        self.pids: set[int] = set()
        self._lock = threading.Lock()

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
