"""Small file helpers shared by the key store and the key material writer."""

from __future__ import annotations

import contextlib
import os


def atomic_write(path: str, data: bytes, *, tmp: str, mode: int = 0o600) -> None:
    """Write ``data`` to ``tmp`` (created with ``mode``), fsync, and rename it over ``path``;
    on failure the temporary file is removed and ``path`` is untouched."""
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
