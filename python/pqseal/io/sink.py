"""The sealing sink (issue 9, item 2). To be built."""

from __future__ import annotations


def open_sink(dst, *, encryption=None, kms=None, overwrite: bool = False, **options):
    """A writable binary file that any Parquet writer writes a plaintext Parquet file
    into; ``close()`` seals it into ``dst`` (a local path: temporary file and rename; or
    a writable binary file object, written from its start). ``encryption`` None: the
    policy of ``dst``'s encryption zone."""
    raise NotImplementedError
