"""parquet-java interop through PySpark (local mode): Spark reads pqseal's files and pqseal
reads Spark's. parquet-java's InMemoryKMS is not in PySpark's jars, so a small Java KMS
client with the same behaviour (tests/java/KeyListKmsClient.java) is compiled here with
javac and put on Spark's class path. Select with ``-m spark``."""

from __future__ import annotations

import base64
import glob
import os
import subprocess

import pyarrow.parquet as pq
import pytest

import pqseal
from pqseal.config import EncryptionConfig
from pqseal.keys import CryptoFactory, clear_caches
from pqseal.kms import KeyListKms, KmsConnectionConfig

from interop import require, require_tool

pyspark = require("pyspark")

pytestmark = pytest.mark.spark
MASTER = {"kf": os.urandom(16), "kc1": os.urandom(16), "kc2": os.urandom(32)}
KEY_LIST = ",".join(f"{k}:{base64.b64encode(v).decode()}" for k, v in MASTER.items())
JAVA_SRC = os.path.join(os.path.dirname(__file__), "java", "KeyListKmsClient.java")


@pytest.fixture(scope="module")
def kms_jar(tmp_path_factory):
    javac, jar = require_tool("javac"), require_tool("jar")
    jars = os.path.join(os.path.dirname(pyspark.__file__), "jars", "*")
    d = tmp_path_factory.mktemp("kms")
    subprocess.run([javac, "-d", str(d / "classes"), "-cp", jars, JAVA_SRC], check=True)
    subprocess.run([jar, "cf", str(d / "kms.jar"), "-C", str(d / "classes"), "pqseal"], check=True)
    return str(d / "kms.jar")


@pytest.fixture(scope="module")
def spark(kms_jar):
    from pyspark.sql import SparkSession

    s = (SparkSession.builder.master("local[1]").appName("pqseal-interop")
         .config("spark.jars", kms_jar)
         .config("spark.ui.enabled", "false")
         .config("spark.sql.shuffle.partitions", "1")
         .config("spark.hadoop.parquet.crypto.factory.class",
                 "org.apache.parquet.crypto.keytools.PropertiesDrivenCryptoFactory")
         .config("spark.hadoop.parquet.encryption.kms.client.class", "pqseal.test.KeyListKmsClient")
         .config("spark.hadoop.parquet.encryption.key.list", KEY_LIST)
         .getOrCreate())
    s.sparkContext.setLogLevel("ERROR")
    yield s
    s.stop()


@pytest.fixture(autouse=True)
def fresh_caches():
    clear_caches()
    yield


def factory():
    return CryptoFactory(lambda cfg: KeyListKms(MASTER))


def spark_options(mode, algorithm, plaintext_footer, double_wrapping, internal, dek_bits):
    o = {"parquet.encryption.algorithm": algorithm,
         "parquet.encryption.plaintext.footer": str(plaintext_footer).lower(),
         "parquet.encryption.double.wrapping": str(double_wrapping).lower(),
         "parquet.encryption.key.material.store.internally": str(internal).lower(),
         "parquet.encryption.data.key.length.bits": str(dek_bits)}
    if mode == "uniform":
        o["parquet.encryption.uniform.key"] = "kf"
    else:
        o["parquet.encryption.footer.key"] = "kf"
        o["parquet.encryption.column.keys"] = "kc1:a;kc2:s" if mode == "per_column" else "kc2:s"
    return o


CASES = [  # (mode, algorithm, plaintext_footer, double_wrapping, internal, dek_bits)
    (m, a, pf, dw, True, 128) for m in ("uniform", "per_column", "partly_plaintext")
    for a in ("AES_GCM_V1", "AES_GCM_CTR_V1") for pf in (False, True) for dw in (True, False)
] + [("per_column", "AES_GCM_V1", False, True, False, 128), ("per_column", "AES_GCM_CTR_V1", True, False, False, 256),
     ("uniform", "AES_GCM_V1", False, True, True, 256)]


@pytest.mark.parametrize("case", CASES, ids=lambda c: "-".join(str(x) for x in c))
def test_spark_writes_pqseal_reads_and_back(spark, tmp_path, case):
    mode, alg, pf, dw, internal, dek = case
    opts = spark_options(*case)
    df = spark.range(0, 3000).selectExpr("id as a", "cast(id * 7 as string) as s", "id * 0.5 as d")
    out = str(tmp_path / "spark")
    w = df.coalesce(1).write.mode("overwrite")
    for k, v in opts.items():
        w = w.option(k, v)
    w.parquet(out)
    files = glob.glob(os.path.join(out, "*.parquet"))
    assert len(files) == 1
    info = pqseal.inspect(files[0])
    assert info["encrypted"] and info["algorithm"] == alg
    plain = tmp_path / "plain.parquet"
    pqseal.decrypt_file(files[0], plain, factory().file_decryption_properties(KmsConnectionConfig(), None, files[0]))
    t = pq.read_table(plain).sort_by("a")
    assert t.column("a").to_pylist() == list(range(3000))
    assert t.column("s").to_pylist() == [str(i * 7) for i in range(3000)]

    # pqseal seals the same data; Spark reads it with the same properties
    column_keys = None if mode == "uniform" else ({"kc1": ["a"], "kc2": ["s"]} if mode == "per_column"
                                                  else {"kc2": ["s"]})
    cfg = EncryptionConfig("kf", column_keys=column_keys, uniform_encryption=column_keys is None,
                           encryption_algorithm=alg, plaintext_footer=pf, double_wrapping=dw,
                           internal_key_material=internal, data_key_length_bits=dek)
    ours = tmp_path / "ours"
    ours.mkdir()
    dst = ours / "part-0.parquet"
    pqseal.encrypt_file(plain, dst, factory().file_encryption_properties(KmsConnectionConfig(), cfg, dst))
    rows = spark.read.parquet(str(ours)).orderBy("a").collect()
    assert [r.a for r in rows] == list(range(3000)) and rows[5].s == "35"


def test_spark_v2_pages_use_parquet_java_framing(spark, tmp_path):
    """Spark's DataPageV2 framing (levels in plaintext) is read; pqseal writes it on request."""
    out = str(tmp_path / "v2")
    df = spark.range(0, 5000).selectExpr("id as a", "case when id % 3 = 0 then null else cast(id as string) end as s")
    (df.coalesce(1).write.mode("overwrite").option("parquet.writer.version", "v2")
     .option("parquet.encryption.footer.key", "kf").option("parquet.encryption.column.keys", "kc1:s").parquet(out))
    f = glob.glob(os.path.join(out, "*.parquet"))[0]
    dec = factory().file_decryption_properties(KmsConnectionConfig(), None, f)
    info = pqseal.inspect(f, dec)
    assert {c["path"]: c.get("v2_framing") for c in info["columns"]}["s"] == "parquet-java"
    plain = tmp_path / "plain.parquet"
    pqseal.decrypt_file(f, plain, dec)
    t = pq.read_table(plain).sort_by("a")
    assert t.column("s").to_pylist() == [None if i % 3 == 0 else str(i) for i in range(5000)]
    # re-seal the V2 pages with parquet-java's framing: Spark reads them
    ours = tmp_path / "ours"
    ours.mkdir()
    props = factory().file_encryption_properties(KmsConnectionConfig(),
                                                 EncryptionConfig("kf", column_keys={"kc1": ["s"]}))
    props.v2_framing = "parquet-java"
    with pytest.warns(UserWarning, match="parquet-java"):
        pqseal.encrypt_file(plain, ours / "x.parquet", props)
    rows = spark.read.parquet(str(ours)).orderBy("a").collect()
    assert [r.s for r in rows[:4]] == [None, "1", "2", None]


def test_spark_and_pqseal_polars(spark, tmp_path):
    """polars writes with pqseal's data keys and pqseal stamps the key material into the
    footer: Spark opens the file with its own KMS client. And back: polars reads Spark's
    files with the keys pqseal.polars.decryption_properties unwraps."""
    import pqseal.polars as ppl

    pl = require("polars")
    n = 3000
    df = pl.DataFrame({"a": list(range(n)), "s": [str(i * 7) for i in range(n)], "d": [i * 0.5 for i in range(n)]})
    configs = {
        "columns": EncryptionConfig("kf", column_keys={"kc1": ["a"], "kc2": ["s"]}),
        "complete-plainfooter": EncryptionConfig("kf", column_keys={"kc2": ["s"]}, complete_columns=True,
                                                 plaintext_footer=True),
        "uniform-external-single": EncryptionConfig("kf", uniform_encryption=True, internal_key_material=False,
                                                    double_wrapping=False, data_key_length_bits=256),
    }
    for name, cfg in configs.items():
        out = tmp_path / name
        out.mkdir()
        ppl.write_parquet(df, out / "part-0.parquet", cfg, kms=KeyListKms(MASTER), row_group_size=1000)
        rows = spark.read.parquet(str(out)).orderBy("a").collect()
        assert [r.a for r in rows] == list(range(n)), name
        assert [r.s for r in rows[:3]] == ["0", "7", "14"] and rows[-1].d == (n - 1) * 0.5, name

    spark_df = spark.range(0, n).selectExpr("id as a", "cast(id * 7 as string) as s", "id * 0.5 as d")
    spark_cases = [("per_column", "AES_GCM_V1", False, True, True, 128),
                   ("uniform", "AES_GCM_V1", True, False, False, 256)]
    for case in spark_cases:
        out = str(tmp_path / ("spark-" + "-".join(map(str, case))))
        w = spark_df.coalesce(1).write.mode("overwrite")
        for k, v in spark_options(*case).items():
            w = w.option(k, v)
        w.parquet(out)
        (f,) = glob.glob(os.path.join(out, "*.parquet"))
        got = pl.read_parquet(f, decryption=ppl.decryption_properties(f, kms=KeyListKms(MASTER))).sort("a")
        assert got["a"].to_list() == list(range(n)) and got["s"][5] == "35" and got["d"][-1] == (n - 1) * 0.5, case


@pytest.mark.parametrize("alg", ["AES_GCM_V1", "AES_GCM_CTR_V1"])
def test_spark_reads_parquet_writer_output(spark, tmp_path, alg):
    """pqseal.ParquetWriter (several row groups, page indexes, checksums, an encrypted
    bloom filter, external key material): Spark reads it with its own KMS client."""
    import pyarrow as pa

    n = 6000
    t = pa.table({"a": pa.array(range(n), pa.int64()), "s": [str(i * 7) for i in range(n)],
                  "d": [i * 0.5 for i in range(n)]})
    ours = tmp_path / "ours"
    ours.mkdir()
    cfg = EncryptionConfig("kf", column_keys={"kc1": ["a"], "kc2": ["s"]}, encryption_algorithm=alg,
                           internal_key_material=False)
    with pqseal.ParquetWriter(ours / "part-0.parquet", t.schema, cfg, kms=KeyListKms(MASTER),
                              write_page_index=True, write_page_checksum=True,
                              bloom_filter_options={"s": True}) as w:
        w.write_table(t, row_group_size=2000)
    assert w.metadata.num_row_groups == 3
    df = spark.read.parquet(str(ours))
    rows = df.orderBy("a").collect()
    assert [r.a for r in rows] == list(range(n)) and rows[5].s == "35" and rows[n - 1].d == (n - 1) * 0.5
    assert df.filter("s = '700'").count() == 1     # a pushed-down filter (row-group stats, bloom filter)


def test_spark_reads_key_session_files(spark, tmp_path):
    """Files sealed by key-session workers (data keys wrapped locally under the session's
    KEKs; one KMS wrap per master key, made by the driver): parquet-java reads them with its
    own KMS client, internal and external key material, plaintext and encrypted footers."""
    import pyarrow as pa

    from pqseal.keys import KeySession

    n = 3000
    src = tmp_path / "plain.parquet"
    pq.write_table(pa.table({"a": pa.array(range(n), pa.int64()), "s": [str(i * 7) for i in range(n)]}), src)
    ours = tmp_path / "ours"
    ours.mkdir()
    for i, (internal, plaintext_footer) in enumerate([(True, False), (False, True), (False, False)]):
        cfg = EncryptionConfig("kf", column_keys={"kc1": ["a"], "kc2": ["s"]}, internal_key_material=internal,
                               plaintext_footer=plaintext_footer, encryption_algorithm="AES_GCM_CTR_V1")
        with KeySession.open(KeyListKms(MASTER), cfg) as driver:
            worker = KeySession.import_(driver.export())
            dst = ours / f"part-{i}.parquet"
            pqseal.encrypt_file(src, dst, worker.encryption_properties(dst))
    rows = spark.read.parquet(str(ours)).orderBy("a", "s").collect()
    assert [r.a for r in rows] == [i for i in range(n) for _ in range(3)]
    assert rows[15].s == "35"
