"""Dask over the ``pqseal`` fsspec protocol: ``dd.to_parquet``/``dd.read_parquet`` with a
``pqseal::`` URL and storage options, nothing else.

Two set-ups: the local keystore and an encryption zone found through the environment
(``PQSEAL_KEYSTORE``, ``PQSEAL_KEYSTORE_PASSPHRASE``, ``PQSEAL_ZONES``: what each worker
of a cluster would have) with the synchronous scheduler; and an in-process
dask.distributed cluster over fsspec's memory file system with the ``encryption``
option and a picklable KMS client factory (KMS clients hold keys and refuse to pickle;
Dask tokenizes and ships the storage options). The files are checked with pyarrow's
own PME reader.
"""

from __future__ import annotations

import base64
import uuid

import numpy as np
import pytest

from pqseal.config import EncryptionConfig
from pqseal.errors import InvalidTag
from pqseal.format.source import Source
from pqseal.io.zones import create_zone
from pqseal.kms import KeyListKms
from pqseal.kms.keystore import LocalKeystore

from pyarrow_kms import footer_key_id, pyarrow_read
from interop import require

dask = require("dask")
dd = require("dask.dataframe")
pd = require("pandas")
fsspec = require("fsspec")

PASS = "dask test passphrase"
N = 6_000
MASTER = {"kf": bytes(range(16)), "kc": bytes(range(16, 32))}
KEY_LIST = ", ".join(f"{k}: {base64.b64encode(v).decode()}" for k, v in MASTER.items())


class KeyListFactory:
    """A KMS client factory that pickles: it builds the client where it runs (a stand-in
    for a factory reaching a real KMS with the worker's credentials)."""

    def __init__(self, key_list: str):
        self.key_list = key_list

    def __call__(self, cfg):
        return KeyListKms(self.key_list)


def frame() -> pd.DataFrame:
    rng = np.random.default_rng(7)
    return pd.DataFrame({"a": np.arange(N, dtype=np.int64), "b": [f"s{i % 3}" for i in range(N)],
                         "c": rng.random(N)})


def same(got: pd.DataFrame, want: pd.DataFrame) -> None:
    """Equal values; Dask reads strings as Arrow strings, so string dtypes may differ."""
    got = got.sort_values("a").reset_index(drop=True)[list(want.columns)]
    want = want.reset_index(drop=True)
    assert got["a"].dtype == want["a"].dtype and got["c"].dtype == want["c"].dtype
    pd.testing.assert_frame_equal(got.astype({"b": object}), want.astype({"b": object}))


oracle = pyarrow_read   # pyarrow's own PME reader, keys from a pqseal KMS client


def tamper(fs, path: str, kms) -> None:
    from pqseal.api import decryption_properties

    data = bytearray(fs.cat_file(path))
    with Source(bytes(data), decryption_properties(None, kms=kms)) as s:
        offset = s.column_meta(0, 0)["data_page_offset"]
    data[offset + 40] ^= 0x01
    fs.pipe_file(path, bytes(data))


@pytest.fixture
def keystore(tmp_path, monkeypatch):
    monkeypatch.setenv("PQSEAL_KEYSTORE", str(tmp_path / "keys" / "keystore.json"))
    monkeypatch.setenv("PQSEAL_KEYSTORE_PASSPHRASE", PASS)
    monkeypatch.setenv("PQSEAL_ZONES", str(tmp_path / "keys" / "zones.json"))
    ks = LocalKeystore.init()
    ks.create("footer")
    ks.create("pii", 128)
    return ks


def test_dask_writes_into_a_zone_and_reads_back(tmp_path, keystore):
    (tmp_path / "lake" / "pii").mkdir(parents=True)
    create_zone(tmp_path / "lake" / "pii", "footer", column_keys="pii:a")
    url = f"pqseal::file://{tmp_path}/lake/pii/t"
    df = frame()
    with dask.config.set(scheduler="synchronous"):
        dd.from_pandas(df, npartitions=3).to_parquet(url, write_index=False)
        files = sorted((tmp_path / "lake" / "pii" / "t").iterdir())
        assert [f.name for f in files] == ["part.0.parquet", "part.1.parquet", "part.2.parquet"]
        parts = []
        for f in files:
            data = f.read_bytes()
            assert data[:4] == data[-4:] == b"PARE" and footer_key_id(data) == "footer"
            parts.append(oracle(data, keystore).to_pandas())
        same(pd.concat(parts), df)
        same(dd.read_parquet(url).compute(), df)
        same(dd.read_parquet(url, columns=["a", "b", "c"], filters=[("a", ">=", N // 2)]).compute(),
             df[df.a >= N // 2])

        # hive partitions: directories per value, every file sealed
        dd.from_pandas(df, npartitions=2).to_parquet(f"{url}-by-b", partition_on=["b"])
        written = sorted(p for p in (tmp_path / "lake" / "pii").glob("t-by-b/b=*/*.parquet"))
        assert len(written) == 6 and all(p.read_bytes()[-4:] == b"PARE" for p in written)
        got = dd.read_parquet(f"{url}-by-b").compute()
        same(got.astype({"b": object}), df)

        # a plaintext summary file would reveal every column's statistics
        with pytest.raises(ValueError, match="_metadata"):
            dd.from_pandas(df, npartitions=2).to_parquet(f"{url}-meta", write_metadata_file=True)
        assert not (tmp_path / "lake" / "pii" / "t-meta" / "_metadata").exists()

        # outside the zone, with no encryption option: refused, nothing written
        with pytest.raises(ValueError, match="no encryption zone"):
            dd.from_pandas(df, npartitions=2).to_parquet(f"pqseal::file://{tmp_path}/lake/open")
        assert not any((tmp_path / "lake").glob("open/*.parquet"))


def test_dask_distributed_over_memory(tmp_path):
    distributed = require("distributed")
    kms = KeyListFactory(KEY_LIST)
    cfg = EncryptionConfig("kf", column_keys={"kc": ["a"]}, complete_columns=True)
    root = f"memory://dask-{uuid.uuid4().hex}"
    url = f"pqseal::{root}/t"
    memory = fsspec.filesystem("memory")
    df = frame()
    with distributed.LocalCluster(processes=False, n_workers=1, threads_per_worker=2,
                                  dashboard_address=None) as cluster, distributed.Client(cluster):
        dd.from_pandas(df, npartitions=4).to_parquet(url, write_index=False,
                                                     storage_options={"pqseal": {"encryption": cfg, "kms": kms}})
        files = memory.find(root)
        assert len(files) == 4
        client = kms(None)
        same(pd.concat(oracle(memory.cat_file(f), client).to_pandas() for f in files), df)
        so = {"pqseal": {"kms": kms}}
        same(dd.read_parquet(url, storage_options=so).compute(), df)
        tamper(memory, files[1], client)
        with pytest.raises(Exception) as e:
            dd.read_parquet(url, storage_options=so).compute()
        seen = e.value
        while seen is not None and not isinstance(seen, InvalidTag):
            seen = seen.__cause__ or seen.__context__
        assert isinstance(seen, InvalidTag) or "InvalidTag" in str(e.value), e.value
    memory.rm(root, recursive=True)
