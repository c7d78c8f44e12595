"""KMS keys for polars' native PME reader and writer (issue 9, item 6). To be built."""

from __future__ import annotations


def decryption_properties(path, *, kms=None):
    raise NotImplementedError


def write_parquet(df, path, encryption, *, kms=None, **options):
    raise NotImplementedError
