"""The ``pqseal`` fsspec protocol (issue 9, item 4). To be built."""

from __future__ import annotations

from fsspec import AbstractFileSystem


class PqsealFileSystem(AbstractFileSystem):
    protocol = "pqseal"
