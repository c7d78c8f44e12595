"""Seed files of the PME fuzz target: small pyarrow files sealed by pqseal with explicit
keys, covering both algorithms, both footer modes, uniform and per-column keys
(columns with their own key, with the footer key, and in plaintext), nested columns,
dictionaries, several row groups and pages, page indexes, bloom filters, page CRCs and
DataPageV2 pages. Every seed uses the same keys, so one DecryptionProperties opens all
of them and modules spliced between seeds are sealed with the right key.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import harness  # noqa: F401  (sets sys.path)

FOOTER_KEY = b"fuzz-footer-key!"
#: every column with its own key in some seed (dotted leaf path -> key)
COLUMN_KEYS = {
    "id": bytes(range(16)),
    "blob": bytes(range(40, 64)),
    "s.b": bytes(range(100, 132)),
    "l.list.element": bytes(range(200, 216)),
    "m.key_value.value": bytes(range(16, 40)),
}
AAD_PREFIX = b"fuzz-aad"


def decryption():
    import pqseal

    return pqseal.DecryptionProperties(FOOTER_KEY, column_keys=COLUMN_KEYS)


@dataclass(frozen=True)
class Seed:
    name: str
    algorithm: str
    plaintext_footer: bool
    per_column: bool           # False: uniform (every column with the footer key)
    writer: dict               # pyarrow.parquet.write_table options
    aad_prefix: bool = False


_SMALL_PAGES = {"row_groups": 2, "data_page_size": 400}
# bloom filters on a column with its own key, one with the footer key and a plaintext one
_INDEXED = {"write_page_index": True,
            "bloom_filter_options": {"id": {"ndv": 200}, "cat": {"ndv": 50}, "sparse": {"ndv": 100}}}

SEEDS = [
    Seed("gcm-encfooter-columns", "AES_GCM_V1", False, True, {**_SMALL_PAGES, **_INDEXED}),
    Seed("gcm-plainfooter-columns", "AES_GCM_V1", True, True, {**_SMALL_PAGES, **_INDEXED}),
    Seed("ctr-encfooter-uniform", "AES_GCM_CTR_V1", False, False, {**_SMALL_PAGES, **_INDEXED,
                                                                        "write_page_checksum": True}),
    Seed("ctr-plainfooter-columns", "AES_GCM_CTR_V1", True, True, {**_SMALL_PAGES, **_INDEXED}),
    Seed("gcm-encfooter-uniform-v2", "AES_GCM_V1", False, False, {**_SMALL_PAGES, "data_page_version": "2.0",
                                                                       "write_page_index": True}, aad_prefix=True),
    Seed("ctr-plainfooter-columns-v2", "AES_GCM_CTR_V1", True, True, {"row_groups": 1, "data_page_version": "2.0",
                                                                          "write_page_checksum": True}),
]


def _table(rows: int = 400):
    """Flat columns (dictionary-friendly strings, floats, booleans, binary, nulls) and
    nested ones (list, struct, map)."""
    import numpy as np
    import pyarrow as pa

    rng = np.random.default_rng(7)
    offs = np.concatenate([[0], np.cumsum(rng.integers(0, 4, rows))]).astype(np.int32)
    moffs = np.concatenate([[0], np.cumsum(rng.integers(0, 3, rows))]).astype(np.int32)
    return pa.table({
        "id": pa.array(np.arange(rows, dtype=np.int64)),
        "cat": pa.array([f"c{v}" for v in rng.integers(0, 50, rows)], pa.string()),
        "x": pa.array(rng.standard_normal(rows)),
        "flag": pa.array(rng.integers(0, 2, rows).astype(bool)),
        "blob": pa.array([rng.bytes(int(n)) for n in rng.integers(0, 12, rows)], pa.binary()),
        "sparse": pa.array(rng.integers(-1000, 1000, rows), pa.int64(), mask=rng.random(rows) < 0.9),
        "all_null": pa.nulls(rows, pa.string()),
        "l": pa.ListArray.from_arrays(pa.array(offs), pa.array(rng.integers(0, 100, int(offs[-1])).astype(np.int32))),
        "s": pa.StructArray.from_arrays(
            [pa.array(rng.integers(0, 10, rows).astype(np.int16)),
             pa.array([None if i % 7 == 0 else f"y{i % 13}" for i in range(rows)], pa.string())], names=["a", "b"]),
        "m": pa.MapArray.from_arrays(pa.array(moffs), pa.array([f"k{i % 5}" for i in range(int(moffs[-1]))]),
                                     pa.array(rng.integers(0, 1000, int(moffs[-1])), pa.int64())),
    })


def build(directory: str) -> list[str]:
    """Write every seed into ``directory`` (kept if already there); returns their paths."""
    import pqseal
    import pyarrow.parquet as pq

    os.makedirs(directory, exist_ok=True)
    table = None
    paths = []
    for seed in SEEDS:
        path = os.path.join(directory, seed.name + ".parquet")
        paths.append(path)
        if os.path.exists(path):
            continue
        table = table if table is not None else _table()
        opts = dict(seed.writer)
        rows = table.num_rows // opts.pop("row_groups")
        plain = path + ".plain"
        pq.write_table(table, plain, row_group_size=rows, **opts)
        keys = None if not seed.per_column else {
            **{p: k for p, k in COLUMN_KEYS.items()}, "cat": pqseal.FOOTER_KEY}
        enc = pqseal.EncryptionProperties(FOOTER_KEY, column_keys=keys, algorithm=seed.algorithm,
                                          plaintext_footer=seed.plaintext_footer,
                                          aad_prefix=AAD_PREFIX if seed.aad_prefix else None)
        tmp = path + ".tmp"
        pqseal.encrypt_file(plain, tmp, enc, fsync=False)
        os.replace(tmp, path)
        os.unlink(plain)
    return paths
