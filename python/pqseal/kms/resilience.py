"""Bounded retries with jitter and a circuit breaker around KMS calls.

A KMS client classifies each failure: *transient* ones (connection refused or reset,
timeouts, throttling, HTTP 5xx/429) are retried up to ``retries`` times with full-jitter
exponential backoff; anything else (denied, not found, disabled, malformed) is raised at
once. After ``failure_threshold`` consecutive transient failures the circuit opens: calls
fail fast with :class:`~pqseal.errors.KmsUnavailable` for ``reset_after`` seconds, then
one trial call is let through (half-open). KEK caches above the client keep jobs that
already hold their KEKs running through a short outage.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from ..errors import KmsUnavailable, PqsealError

T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    retries: int = 3              # extra attempts after the first
    base_delay: float = 0.1       # seconds; attempt k sleeps uniform(0, min(max_delay, base * 2**k))
    max_delay: float = 2.0
    timeout: float = 10.0         # per call, for clients that take one (HTTP, SDKs)
    failure_threshold: int = 5    # consecutive transient failures that open the circuit
    reset_after: float = 30.0     # seconds the circuit stays open

    def __post_init__(self):
        if self.retries < 0 or self.base_delay < 0 or self.max_delay < 0 or self.timeout <= 0:
            raise ValueError("retry policy values must be non-negative (timeout positive)")
        if self.failure_threshold < 1 or self.reset_after < 0:
            raise ValueError("failure_threshold must be >= 1 and reset_after >= 0")


class Resilience:
    """One per KMS client (one circuit per server)."""

    def __init__(self, policy: RetryPolicy | None = None, *, sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], float] = time.monotonic):
        self.policy = policy or RetryPolicy()
        self._sleep, self._clock = sleep, clock
        self._lock = threading.Lock()
        self._failures = 0
        self._open_until: float | None = None

    @property
    def is_open(self) -> bool:
        with self._lock:
            return self._open_until is not None and self._clock() < self._open_until

    def call(self, fn: Callable[[], T], what: str, is_transient: Callable[[BaseException], bool]) -> T:
        """``fn()`` with retries of transient failures; raises :class:`KmsUnavailable`
        when they run out or the circuit is open. ``what`` names the operation (key id,
        never key bytes)."""
        p = self.policy
        with self._lock:
            if self._open_until is not None and self._clock() < self._open_until:
                raise KmsUnavailable(f"KMS {what}: the KMS failed {self._failures} times in a row; "
                                     f"not retrying for {self._open_until - self._clock():.0f} s (circuit open)")
        last: BaseException | None = None
        for attempt in range(p.retries + 1):
            if attempt:
                self._sleep(random.uniform(0, min(p.max_delay, p.base_delay * 2 ** (attempt - 1))))
            try:
                result = fn()
            except PqsealError:
                raise
            except Exception as exc:  # noqa: BLE001 - classified below
                if not is_transient(exc):
                    raise
                last = exc
                with self._lock:
                    self._failures += 1
                    if self._failures >= p.failure_threshold:
                        self._open_until = self._clock() + p.reset_after
                        break
                continue
            with self._lock:
                self._failures, self._open_until = 0, None
            return result
        raise KmsUnavailable(f"KMS {what} failed after {attempt + 1} attempt(s): "
                             f"{type(last).__name__}: {last}") from last
