"""What the key being wrapped belongs to, for KMS clients that bind wrapped keys to it.

The ``KmsClient`` contract (``wrap_key(key, master_key_id)``) has no room for the file or
column of a key. pqseal's key layer states them around each KMS call instead, in a
context variable (per thread and task, so concurrent jobs do not mix):

- single wrapping, writing and reading a file: ``file`` (the file's base name, when the
  caller gave a path) and ``column`` (the dotted column path, or ``FOOTER``);
- double wrapping, creating or unwrapping a KEK: only ``kek_id`` (the base64 KEK id of
  the key material). A KEK serves every file and column of its master key in a job, so
  it is bound to its id, not to a file.

Clients that do not bind (keystore, key list) ignore it. Readers other than pqseal
(pyarrow, parquet-java) call the client without it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from contextvars import ContextVar

FOOTER = "(footer)"

_CURRENT: ContextVar[Mapping[str, str] | None] = ContextVar("pqseal_key_context", default=None)


def current_key_context() -> Mapping[str, str]:
    """The file, column or KEK id of the key now being wrapped or unwrapped (may be empty)."""
    return _CURRENT.get() or {}


@contextlib.contextmanager
def key_context(*, replace: bool = False, **values: str | None) -> Iterator[None]:
    """Add ``values`` (None ones are left out) to the context, or with ``replace=True``
    make them the whole context, for the duration of the block."""
    new = {} if replace else dict(current_key_context())
    new.update({k: v for k, v in values.items() if v is not None})
    token = _CURRENT.set(new)
    try:
        yield
    finally:
        _CURRENT.reset(token)
