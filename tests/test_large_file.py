"""Files over 4 GiB: offsets past 2^32 in page headers, indexes and the footer.

Slow (writes ~13 GB): runs when at least 20 GB are free, else skips saying why."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pyarrow.parquet.encryption as pe
import pytest

import pqseal
from pqseal.format import DecryptionProperties, EncryptionProperties

pytestmark = pytest.mark.slow
GiB = 1 << 30


def test_seal_and_unseal_a_file_over_4_gib(tmp_path):
    free = shutil.disk_usage(tmp_path).free
    if free < 20 * GiB:
        pytest.skip(f"needs 20 GB free in {tmp_path}, has {free / GiB:.1f} GiB")
    src, sealed, unsealed = tmp_path / "big.parquet", tmp_path / "sealed.parquet", tmp_path / "unsealed.parquet"
    rows_per_rg = 1 << 24  # 128 MiB per column chunk
    schema = pa.schema([("a", pa.int64()), ("b", pa.int64())])
    nrg = 17  # 17 x 2 x 128 MiB = 4.25 GiB
    with pq.ParquetWriter(src, schema, compression="none", use_dictionary=False, write_statistics=False,
                          write_page_index=True) as w:
        base = np.arange(rows_per_rg, dtype=np.int64)
        for rg in range(nrg):
            w.write_table(pa.table([base + rg, base * 3 - rg], schema=schema), row_group_size=rows_per_rg)
    assert os.path.getsize(src) > 4 * GiB
    key = os.urandom(16)
    pqseal.encrypt_file(src, sealed, EncryptionProperties(key, algorithm="AES_GCM_CTR_V1"), fsync=False)
    assert os.path.getsize(sealed) > 4 * GiB
    # pyarrow reads the last row group (all of its offsets lie beyond 4 GiB)
    pf = pq.ParquetFile(sealed, decryption_properties=pe.create_decryption_properties(key))
    assert pf.metadata.row_group(nrg - 1).column(0).data_page_offset > 4 * GiB
    last = pf.read_row_group(nrg - 1)
    assert last.column("a")[-1].as_py() == rows_per_rg - 1 + nrg - 1
    assert last.column("b")[12345].as_py() == 12345 * 3 - (nrg - 1)
    os.unlink(src)
    report = pqseal.verify(sealed, DecryptionProperties(key))
    assert report["row_groups"] == nrg
    pqseal.decrypt_file(sealed, unsealed, DecryptionProperties(key), fsync=False)
    os.unlink(sealed)
    pf = pq.ParquetFile(unsealed)
    assert pf.metadata.num_rows == nrg * rows_per_rg
    last = pf.read_row_group(nrg - 1)
    assert last.column("a")[-1].as_py() == rows_per_rg - 1 + nrg - 1
