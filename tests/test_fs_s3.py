"""The pqseal file system over an object store: S3 through s3fs, against moto's S3
server started here (moto checks the S3 API, not AWS's behaviour). Written objects are
PME files that pyarrow's own reader opens with keys; reads go through the view; sizes
are the view's; a write that fails leaves no object."""

from __future__ import annotations

import os

import pyarrow as pa
import pytest

from pqseal import EncryptionConfig
from pqseal.errors import MalformedFile
from pqseal.kms import KeyListKms

from interop import require
from pyarrow_kms import pyarrow_read

fsspec = require("fsspec")
require("s3fs")
pd = require("pandas")
moto_server = require("moto.server")

MASTER = {"kf": os.urandom(16), "kc": os.urandom(16)}
KMS = KeyListKms(MASTER)
CFG = EncryptionConfig("kf", column_keys={"kc": ["ssn"]})


@pytest.fixture(scope="module")
def s3():
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    host, port = server.get_host_and_port()
    opts = {"endpoint_url": f"http://{host}:{port}", "key": "testing", "secret": "testing",
            "client_kwargs": {"region_name": "us-east-1"}, "skip_instance_cache": True}
    boto3 = require("boto3")
    boto3.client("s3", endpoint_url=opts["endpoint_url"], aws_access_key_id="testing",
                 aws_secret_access_key="testing", region_name="us-east-1").create_bucket(Bucket="lake")
    yield opts
    server.stop()


def _options(s3, **pqseal_opts):
    return {"pqseal": {"kms": KMS, **pqseal_opts}, "s3": s3}


def test_pandas_round_trip_through_s3(s3):
    df = pd.DataFrame({"id": range(5000), "ssn": [f"{i:09d}" for i in range(5000)]})
    url = "pqseal::s3://lake/t.parquet"
    df.to_parquet(url, storage_options=_options(s3, encryption=CFG))
    raw = fsspec.filesystem("s3", **s3)
    stored = raw.cat_file("lake/t.parquet")
    assert stored[:4] == b"PARE" and b"000004999" not in stored          # sealed in the object store
    assert pyarrow_read(stored, KMS).equals(pa.Table.from_pandas(df, preserve_index=False))
    assert pd.read_parquet(url, storage_options=_options(s3)).equals(df)
    fs, path = fsspec.core.url_to_fs(url, **_options(s3))
    view_size = fs.info(path)["size"]
    assert view_size != len(stored) and fs.info(path)["stored_size"] == len(stored)
    with fs.open(path, "rb") as f:
        assert f.size == view_size and f.read(4) == b"PAR1"


def test_a_failed_write_leaves_no_object(s3):
    url = "pqseal::s3://lake/broken.parquet"
    fs, path = fsspec.core.url_to_fs(url, **_options(s3, encryption=CFG))
    with pytest.raises(MalformedFile):
        with fs.open(path, "wb") as f:
            f.write(b"PAR1 this is not a Parquet file")
    assert not fsspec.filesystem("s3", **s3).exists("lake/broken.parquet")
