"""Writes pick their encryption by path, through real zones (no mocks): the
ParquetWriter, write_to_dataset, the sealing sink and the pqseal file system, nested
zones with different algorithms; pyarrow reads every file with its own PME reader
(CryptoFactory over pqseal's KMS) and pqseal.inspect reports the zone's algorithm."""

from __future__ import annotations

import os

import pyarrow as pa
import pyarrow.parquet as pq
import pyarrow.parquet.encryption as pe
import pytest

import pqseal
from pqseal.io import zones
from pqseal.kms import KeyListKms

from interop import require

MASTER = {"kf": os.urandom(16), "kc": os.urandom(16)}
TABLE = pa.table({"id": list(range(2000)), "ssn": [f"{i:09d}" for i in range(2000)]})


@pytest.fixture
def lake(tmp_path, monkeypatch):
    monkeypatch.setenv(zones.ZONES_ENV, str(tmp_path / "zones.json"))
    kms = KeyListKms(MASTER)
    root = tmp_path / "lake"
    (root / "pii").mkdir(parents=True)
    zones.create_zone(root, "kf", kms=kms)
    zones.create_zone(root / "pii", "kf", column_keys="kc:ssn", algorithm="AES_GCM_CTR_V1", kms=kms)
    return root, kms


def _pyarrow_reads(path, kms):
    props = pqseal.arrow.crypto_factory(lambda cfg: kms).file_decryption_properties(
        pe.KmsConnectionConfig(), pe.DecryptionConfiguration())
    return pq.read_table(path, decryption_properties=props)


def _algorithm(path, kms) -> str:
    return pqseal.inspect(path, kms=kms)["algorithm"]


def test_parquet_writer_and_sink_take_the_deepest_zone(lake):
    root, kms = lake
    for path, alg in ((root / "a.parquet", "AES_GCM_V1"), (root / "pii" / "b.parquet", "AES_GCM_CTR_V1")):
        with pqseal.ParquetWriter(path, TABLE.schema, kms=kms) as w:     # no encryption=: the zone's
            w.write_table(TABLE)
        assert _algorithm(path, kms) == alg
        assert _pyarrow_reads(path, kms).equals(TABLE)
        sunk = path.with_name("sunk-" + path.name)
        with pqseal.open(sunk, "wb", kms=kms) as f:
            pq.write_table(TABLE, f)
        assert _algorithm(sunk, kms) == alg
        assert _pyarrow_reads(sunk, kms).equals(TABLE)


def test_write_to_dataset_and_file_system_follow_the_zones(lake):
    root, kms = lake
    pqseal.write_to_dataset(TABLE.append_column("p", pa.array([i % 2 for i in range(2000)])), root / "pii" / "ds",
                            partition_cols=["p"], kms=kms)
    files = sorted((root / "pii" / "ds").rglob("*.parquet"))
    assert len(files) == 2 and all(_algorithm(f, kms) == "AES_GCM_CTR_V1" for f in files)
    pd = require("pandas")
    require("fsspec")
    df = TABLE.to_pandas()
    opts = {"pqseal": {"kms": kms}}
    url = "pqseal::file://" + str(root / "c.parquet")
    df.to_parquet(url, storage_options=opts)
    assert _algorithm(root / "c.parquet", kms) == "AES_GCM_V1"
    assert pd.read_parquet(url, storage_options=opts).equals(df)


def test_outside_every_zone_a_write_without_encryption_is_refused(lake, tmp_path):
    _, kms = lake
    with pytest.raises(ValueError):
        pqseal.ParquetWriter(tmp_path / "outside.parquet", TABLE.schema, kms=kms)
    with pytest.raises(ValueError):
        pqseal.open(tmp_path / "outside2.parquet", "wb", kms=kms)
    assert not (tmp_path / "outside.parquet").exists() and not (tmp_path / "outside2.parquet").exists()
