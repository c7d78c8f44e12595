"""pqseal.ParquetWriter (issue 9, item 1). To be built."""

from __future__ import annotations


class ParquetWriter:
    def __init__(self, where, schema, encryption=None, *, kms=None, **options):
        raise NotImplementedError


def write_to_dataset(table, root_path, encryption=None, *, partition_cols=None, kms=None, **options):
    raise NotImplementedError
