"""The plaintext view of a PME file (issue 9, item 3). To be built."""

from __future__ import annotations


def open_view(src, *, decryption=None, kms=None, **options):
    """A seekable read-only binary file presenting the plaintext Parquet file of the PME
    file ``src`` (a local path, or a seekable binary file object). Its ``size`` is the
    plaintext view's size; ``decrypted_bytes`` counts the bytes decrypted so far."""
    raise NotImplementedError


def view_size(src, *, decryption=None, kms=None) -> int:
    """The size of ``src``'s plaintext view (what ``open_view(src).size`` is)."""
    raise NotImplementedError
