"""pqseal.ParquetWriter, pqseal.write_table and pqseal.write_to_dataset: the output is
checked by pyarrow (reading through its own CryptoFactory with pqseal's KMS client), by
the independent reference reader (tests/pme_reference.py) and by pqseal.verify."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pyarrow.parquet.encryption as pe
import pytest

import pqseal
from pqseal import DecryptionProperties, EncryptionConfig, EncryptionProperties
from pqseal.errors import OutputExists
from pqseal.kms import KeyListKms

from pme_reference import RefFile, RefKeys

MASTER = {"kf": os.urandom(16), "kc1": os.urandom(16), "kc2": os.urandom(32)}
KMS = KeyListKms(MASTER)
# subprocesses import the pqseal this process runs (the sanitizer pass's build, say)
PYTHONPATH = os.pathsep.join(p for p in (os.path.dirname(os.path.dirname(pqseal.__file__)),
                                         os.environ.get("PYTHONPATH")) if p)


def pyarrow_factory():
    return pqseal.arrow.crypto_factory(lambda cfg: KeyListKms(MASTER))


def pyarrow_read(path, **kw):
    """pyarrow reads the file with its own CryptoFactory (keys unwrapped by pqseal's KMS)."""
    props = pyarrow_factory().file_decryption_properties(pe.KmsConnectionConfig(), pe.DecryptionConfiguration(),
                                                         str(path))
    return pq.ParquetFile(path, decryption_properties=props, **kw)


def ref_keys(path) -> RefKeys:
    return RefKeys.of(pqseal.api.decryption_properties(str(path), kms=KMS))


def make_table(n: int = 20_000, seed: int = 0) -> pa.Table:
    rng = np.random.default_rng(seed)
    ids = np.arange(n, dtype=np.int64)
    return pa.table({
        "id": ids,
        "name": pa.array([f"user-{i}" for i in range(n)]),
        "cat": pa.array([["red", "green", "blue"][i % 3] for i in range(n)]).dictionary_encode(),
        "tags": pa.array([[int(x) for x in rng.integers(0, 100, i % 4)] if i % 7 else None for i in range(n)],
                         pa.list_(pa.int32())),
        "point": pa.array([{"x": float(i), "y": None if i % 5 == 0 else -float(i)} for i in range(n)]),
        "score": rng.normal(size=n),
    })


CONFIG = dict(column_keys={"kc1": ["name", "tags.list.element"], "kc2": ["point.x"]})


@pytest.mark.parametrize("algorithm", ["AES_GCM_V1", "AES_GCM_CTR_V1"])
@pytest.mark.parametrize("plaintext_footer", [False, True])
def test_round_trip_read_by_pyarrow(tmp_path, algorithm, plaintext_footer):
    t = make_table()
    path = tmp_path / "t.parquet"
    cfg = EncryptionConfig("kf", encryption_algorithm=algorithm, plaintext_footer=plaintext_footer, **CONFIG)
    with pqseal.ParquetWriter(path, t.schema, cfg, kms=KMS) as w:
        w.write_table(t.slice(0, 12_000), row_group_size=5_000)   # 3 row groups
        for b in t.slice(12_000).to_batches(max_chunksize=4_000):  # 2 more, through write_batch / write
            w.write(b)
    assert w.metadata.num_row_groups == 5 and w.metadata.num_rows == t.num_rows
    f = pyarrow_read(path)
    assert f.metadata.num_row_groups == 5
    assert f.read().equals(t)
    assert [f.metadata.row_group(i).num_rows for i in range(5)] == [5000, 5000, 2000, 4000, 4000]
    assert pqseal.read_table(path, KMS).equals(t)
    assert pqseal.verify(path, kms=KMS)["ok"]
    ref = RefFile(path, ref_keys(path))
    assert ref.algorithm == algorithm and ref.encrypted
    enc = {ref.column(0, c).path: ref.column(0, c).encryption for c in range(len(ref.paths))}
    assert enc["name"] == enc["tags.list.element"] == enc["point.x"] == "column key"
    assert enc["id"] == enc["score"] == "plaintext"   # columns without a key stay plaintext, as configured
    for c in ref.columns():   # every page and its AAD (row-group ordinal included) checked by the reference
        assert ref.pages(c)
    assert list(tmp_path.iterdir()) == [path]


def test_uniform_encryption_and_footer_key_columns(tmp_path):
    t = make_table(3000)
    path = tmp_path / "u.parquet"
    pqseal.write_table(t, path, EncryptionConfig("kf", uniform_encryption=True), KMS, row_group_size=1000)
    assert pyarrow_read(path).read().equals(t)
    ref = RefFile(path, ref_keys(path))
    assert {c.encryption for c in ref.columns()} == {"footer key"}
    assert ref.num_row_groups == 3


def test_explicit_properties_and_file_object(tmp_path):
    k1, k2 = os.urandom(16), os.urandom(16)
    t = make_table(5000)
    out = io.BytesIO()
    with pqseal.ParquetWriter(out, t.schema, EncryptionProperties(k1, column_keys={"name": k2})) as w:
        w.write_table(t, row_group_size=2000)
    data = out.getvalue()
    assert data[:4] == b"PARE" and b"user-4999" not in data
    dec = DecryptionProperties(k1, column_keys={"name": k2})
    assert pqseal.read_table(data, decryption=dec).equals(t)
    ref = RefFile(_dump(tmp_path, data), RefKeys(k1, {"name": k2}))
    assert ref.num_row_groups == 3 and all(ref.pages(c) for c in ref.columns())


def _dump(tmp_path, data: bytes):
    p = tmp_path / "dump.parquet"
    p.write_bytes(data)
    return p


def test_page_index_statistics_and_checksums_survive(tmp_path):
    t = make_table(30_000)
    path = tmp_path / "pi.parquet"
    with pqseal.ParquetWriter(path, t.schema, EncryptionConfig("kf", **CONFIG), kms=KMS, write_page_index=True,
                              write_page_checksum=True, data_page_size=4096, compression="zstd") as w:
        w.write_table(t, row_group_size=10_000)
    f = pyarrow_read(path, page_checksum_verification=True)
    assert f.read().equals(t)
    md = f.metadata
    for rg in range(md.num_row_groups):
        for c in range(md.num_columns):
            col = md.row_group(rg).column(c)
            assert col.has_column_index and col.has_offset_index
            assert col.is_stats_set and col.statistics.has_min_max
            assert col.compression == "ZSTD"
        ids = md.row_group(rg).column(0).statistics
        assert (ids.min, ids.max) == (rg * 10_000, rg * 10_000 + 9_999)
    # the writer's metadata is the file's (plaintext) metadata
    assert w.metadata.row_group(2).column(0).statistics.max == 29_999
    assert w.metadata.schema.equals(md.schema)
    ref = RefFile(path, ref_keys(path))
    crcs = 0
    for c in ref.columns():
        assert ref.offset_index(c)["page_locations"] and ref.column_index(c)
        pages = ref.pages(c)
        crcs += sum(p.header.get("crc") is not None for p in pages)
        assert len(pages) > 1
    assert crcs > 50
    # a flipped byte in an encrypted page fails pyarrow's CRC check or the tag
    data = bytearray(path.read_bytes())
    c = next(c for c in ref.columns() if c.path == "name")
    data[ref.pages(c)[1].page_module.offset + 40] ^= 1
    path.write_bytes(bytes(data))
    with pytest.raises((OSError, pa.ArrowException)):
        pyarrow_read(path, page_checksum_verification=True).read(columns=["name"])


def test_bloom_filters_come_out_encrypted(tmp_path):
    t = make_table(4000)
    opts = dict(bloom_filter_options={"name": {"ndv": 4000, "fpp": 0.01}, "id": True}, use_dictionary=False)
    plain = tmp_path / "plain.parquet"
    pq.write_table(t, plain, row_group_size=2000, **opts)
    plain_ref = RefFile(plain)
    path = tmp_path / "bf.parquet"
    with pqseal.ParquetWriter(path, t.schema, EncryptionConfig("kf", uniform_encryption=True), kms=KMS,
                              **opts) as w:
        w.write_table(t, row_group_size=2000)
    data = path.read_bytes()
    ref = RefFile(path, ref_keys(path))
    seen = 0
    for c in ref.columns():
        want = plain_ref.bloom_filter(plain_ref.column(c.rg, c.col))
        got = ref.bloom_filter(c)   # decrypted by the reference (AAD with the row group's ordinal)
        if c.path in ("name", "id"):
            assert want is not None and got is not None
            assert got[1] == want[1] and len(got[1]) >= 1024
            assert want[1] not in data    # the bitset is not in the file in plaintext
            seen += 1
        else:
            assert got is None
    assert seen == 4
    assert pqseal.verify(path, kms=KMS)["ok"]
    assert pyarrow_read(path).read().equals(t)


def test_external_key_material(tmp_path):
    t = make_table(3000)
    path = tmp_path / "ext.parquet"
    with pqseal.ParquetWriter(path, t.schema, EncryptionConfig("kf", internal_key_material=False, **CONFIG),
                              kms=KMS) as w:
        w.write_table(t, row_group_size=1000)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["_KEY_MATERIAL_FOR_ext.parquet.json", "ext.parquet"]
    assert pyarrow_read(path).read().equals(t)
    assert pqseal.verify(path, kms=KMS)["ok"]


def test_external_key_material_needs_a_path():
    t = make_table(10)
    with pytest.raises(ValueError, match="external key material"):
        pqseal.ParquetWriter(io.BytesIO(), t.schema, EncryptionConfig("kf", internal_key_material=False,
                                                                       uniform_encryption=True), kms=KMS)


def test_exception_inside_with_leaves_nothing(tmp_path):
    t = make_table(3000)
    path = tmp_path / "x.parquet"
    with pytest.raises(RuntimeError, match="boom"):
        with pqseal.ParquetWriter(path, t.schema, EncryptionConfig("kf", internal_key_material=False, **CONFIG),
                                  kms=KMS) as w:
            w.write_table(t, row_group_size=1000)
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []
    assert not w.is_open


def test_dropped_writer_leaves_nothing(tmp_path):
    t = make_table(100)
    w = pqseal.ParquetWriter(tmp_path / "x.parquet", t.schema, EncryptionConfig("kf", **CONFIG), kms=KMS)
    w.write_table(t)
    with pytest.warns(ResourceWarning):
        del w
        import gc
        gc.collect()
    assert list(tmp_path.iterdir()) == []


def test_existing_destination_needs_overwrite(tmp_path):
    t = make_table(100)
    path = tmp_path / "x.parquet"
    path.write_bytes(b"keep me")
    with pytest.raises(OutputExists):
        pqseal.ParquetWriter(path, t.schema, EncryptionConfig("kf", **CONFIG), kms=KMS)
    with pytest.raises(OutputExists):
        pqseal.write_table(t, path, EncryptionConfig("kf", **CONFIG), KMS)
    assert path.read_bytes() == b"keep me"
    assert list(tmp_path.iterdir()) == [path]
    pqseal.write_table(t, path, EncryptionConfig("kf", **CONFIG), KMS, overwrite=True)
    assert pyarrow_read(path).read().equals(t)


def test_refused_options_and_missing_encryption(tmp_path, monkeypatch):
    t = make_table(10)
    with pytest.raises(ValueError, match="pqseal encrypts"):
        pqseal.ParquetWriter(tmp_path / "a.parquet", t.schema, EncryptionConfig("kf", **CONFIG), kms=KMS,
                             encryption_properties=object())
    with pytest.raises(ValueError, match="no encryption zone"):
        pqseal.ParquetWriter(tmp_path / "a.parquet", t.schema)
    with pytest.raises(ValueError, match="no encryption= given"):
        pqseal.ParquetWriter(io.BytesIO(), t.schema)
    with pytest.raises(ValueError, match="schema"):
        with pqseal.ParquetWriter(tmp_path / "b.parquet", t.schema, EncryptionConfig("kf", **CONFIG),
                                  kms=KMS) as w:
            w.write_table(t.drop_columns(["score"]))
    assert list(tmp_path.iterdir()) == []


def test_zone_policy_is_used_when_no_encryption_is_given(tmp_path, monkeypatch):
    from pqseal.io import zones

    asked = []

    class Policy:
        def encryption_config(self):
            return EncryptionConfig("kf", column_keys={"kc2": ["name"]})

    def policy_for(path, **kw):
        asked.append(path)
        return Policy()

    monkeypatch.setattr(zones, "policy_for", policy_for)
    t = make_table(100)
    path = tmp_path / "z.parquet"
    with pqseal.ParquetWriter(path, t.schema, kms=KMS) as w:
        w.write_table(t)
    assert asked == [str(path)]
    assert pyarrow_read(path).read().equals(t)
    assert RefFile(path, ref_keys(path)).column(0, 1).encryption == "column key"


def test_options_reach_pyarrow(tmp_path):
    t = make_table(5000)
    path = tmp_path / "o.parquet"
    with pqseal.ParquetWriter(path, t.schema, EncryptionConfig("kf", **CONFIG), kms=KMS, compression="gzip",
                              use_dictionary=False, write_statistics=["id"], data_page_version="2.0",
                              sorting_columns=[pq.SortingColumn(0)]) as w:
        w.add_key_value_metadata({"owner": "team-a"})
        w.write_table(t, row_group_size=2500)
    f = pyarrow_read(path)
    assert f.read().equals(t)
    md = f.metadata
    rg = md.row_group(0)
    assert rg.column(0).compression == "GZIP" and rg.column(0).is_stats_set and not rg.column(1).is_stats_set
    assert "PLAIN_DICTIONARY" not in rg.column(1).encodings and "RLE_DICTIONARY" not in rg.column(1).encodings
    assert rg.sorting_columns == (pq.SortingColumn(0),)
    assert md.metadata[b"owner"] == b"team-a" and b"ARROW:schema" in md.metadata


@pytest.mark.parametrize("via", ["function", "writer"])
def test_partitioned_writing(tmp_path, via):
    t = make_table(3000).append_column("region", pa.array([["eu", "us", None][i % 3] for i in range(3000)]))
    t = t.append_column("year", pa.array([2024 + i % 2 for i in range(3000)], pa.int16()))
    root = tmp_path / "ds"
    cfg = EncryptionConfig("kf", **CONFIG)
    if via == "function":
        files = pqseal.write_to_dataset(t, root, cfg, partition_cols=["region", "year"], kms=KMS)
    else:
        with pqseal.ParquetWriter(root, t.schema, cfg, kms=KMS, partition_cols=["region", "year"]) as w:
            w.write_table(t.slice(0, 1500))
            w.write_table(t.slice(1500))
        files = w.files
    assert len(files) == 6
    dirs = sorted(os.path.relpath(os.path.dirname(f), root) for f in files)
    assert dirs == sorted(f"region={r}/year={y}" for r in ("eu", "us", "__HIVE_DEFAULT_PARTITION__")
                          for y in (2024, 2025))
    parts, deks = [], set()
    for f in files:
        part = pyarrow_read(f).read()
        region, year = (seg.split("=")[1] for seg in os.path.relpath(os.path.dirname(f), root).split(os.sep))
        parts.append(part.append_column("region", pa.array([None if region.startswith("__") else region]
                                                           * part.num_rows, pa.string()))
                     .append_column("year", pa.array([int(year)] * part.num_rows, pa.int16())))
        deks.add(pqseal.inspect(f)["footer_key_metadata"]["wrappedDEK"])
    assert len(deks) == 6      # fresh data keys per file
    got = pa.concat_tables(parts).sort_by("id")
    assert got.equals(t.sort_by("id"))


def test_write_to_dataset_unpartitioned_and_existing_data(tmp_path):
    t = make_table(200)
    root = tmp_path / "ds"
    (files,) = [pqseal.write_to_dataset(t, root, EncryptionConfig("kf", **CONFIG), kms=KMS)]
    assert len(files) == 1 and pyarrow_read(files[0]).read().equals(t)
    with pytest.raises(FileExistsError):
        pqseal.write_to_dataset(t, root, EncryptionConfig("kf", **CONFIG), kms=KMS, existing_data_behavior="error")
    with pytest.raises(ValueError, match="never deletes"):
        pqseal.write_to_dataset(t, root, EncryptionConfig("kf", **CONFIG), kms=KMS,
                                existing_data_behavior="delete_matching")
    assert len(pqseal.write_to_dataset(t, root, EncryptionConfig("kf", **CONFIG), kms=KMS)) == 1
    assert len(list(root.iterdir())) == 2


def test_empty_writer_and_empty_table(tmp_path):
    t = make_table(10)
    p1 = tmp_path / "none.parquet"
    with pqseal.ParquetWriter(p1, t.schema, EncryptionConfig("kf", **CONFIG), kms=KMS):
        pass
    f = pyarrow_read(p1)
    assert f.metadata.num_row_groups == 0 and f.read().equals(t.slice(0, 0))
    p2 = tmp_path / "empty.parquet"
    pqseal.write_table(t.slice(0, 0), p2, EncryptionConfig("kf", **CONFIG), KMS)
    assert pyarrow_read(p2).read().num_rows == 0
    assert pqseal.verify(p2, kms=KMS)["ok"]


# ---- crashes and memory, in subprocesses ------------------------------------------------

_STREAM = textwrap.dedent("""
    import os, sys, resource
    import numpy as np, pyarrow as pa
    import pqseal
    from pqseal import EncryptionProperties
    path, n_rg, rows = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    schema = pa.schema([("id", pa.int64()), ("secret", pa.string()), ("v", pa.float64())])
    marker = "PLAINTEXT-MARKER-"
    def batch(i):
        ids = np.arange(i * rows, (i + 1) * rows, dtype=np.int64)
        return pa.table({"id": ids, "secret": pa.array(np.char.add(marker, ids.astype(str))),
                         "v": np.random.default_rng(i).random(rows)})
    w = pqseal.ParquetWriter(path, schema, EncryptionProperties(os.urandom(16)), compression="none",
                             use_dictionary=False)
    w.write_table(batch(0))
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    rg_bytes = batch(0).nbytes
    print("ready", flush=True)
    for i in range(1, n_rg):
        w.write_table(batch(i))
    w.close()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(base, peak, rg_bytes, os.path.getsize(path), flush=True)
""")


def _run_stream(tmp_path, n_rg, rows):
    script = tmp_path / "stream.py"
    script.write_text(_STREAM)
    env = dict(os.environ, PYTHONPATH=PYTHONPATH)
    return script, env


def test_sigkill_during_streaming_write_leaves_no_plaintext(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    script, env = _run_stream(tmp_path, 0, 0)
    dst = out / "big.parquet"
    proc = subprocess.Popen([sys.executable, str(script), str(dst), "100000", "50000"], stdout=subprocess.PIPE,
                            env=env, text=True)
    try:
        assert proc.stdout.readline().strip() == "ready"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:   # wait until some row groups are on disk
            tmp = [p for p in out.iterdir()]
            if tmp and tmp[0].stat().st_size > 8 << 20:
                break
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not dst.exists()
    left = list(out.iterdir())
    assert left and all(pqseal._io.is_temp_name(p.name) for p in left)   # only the writer's temporary file
    for p in left:
        data = p.read_bytes()
        assert len(data) > 8 << 20 and b"PLAINTEXT-MARKER-" not in data
    pqseal.recover(out)   # the next pqseal run in that directory removes it
    assert list(out.iterdir()) == []


@pytest.mark.slow  # the main CI pass runs it; under the sanitizers (-m "not slow") RSS means little
def test_memory_stays_near_two_row_groups(tmp_path):
    script, env = _run_stream(tmp_path, 0, 0)
    dst = tmp_path / "m.parquet"
    n_rg, rows = 24, 400_000       # ~12 MB per row group in Arrow, ~300 MB written
    r = subprocess.run([sys.executable, str(script), str(dst), str(n_rg), str(rows)], capture_output=True, env=env,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    base, peak, rg_bytes, size = map(int, r.stdout.split("\n")[1].split())
    assert size > 20 * rg_bytes
    # the growth after the first row group stays a few row groups, far below the file
    assert peak - base < max(6 * rg_bytes, size // 4), (peak - base, rg_bytes, size)


def test_exception_in_partitioned_writer_leaves_nothing(tmp_path):
    t = make_table(300).append_column("region", pa.array([["eu", "us"][i % 2] for i in range(300)]))
    root = tmp_path / "ds"
    root.mkdir()
    (root / "keep.txt").write_text("not ours")
    with pytest.raises(RuntimeError):
        with pqseal.ParquetWriter(root, t.schema, EncryptionConfig("kf", **CONFIG), kms=KMS,
                                  partition_cols=["region"]) as w:
            w.write_table(t)
            raise RuntimeError
    assert [p.name for p in root.iterdir()] == ["keep.txt"]


def test_pyarrow_config_and_metadata_equal_to_the_files(tmp_path):
    """pyarrow's EncryptionConfiguration is accepted; writer.metadata is what pyarrow reads
    from the file (all but the footer's serialized size, which has no crypto fields here)."""
    t = make_table(3000)
    path = tmp_path / "a.parquet"
    cfg = pe.EncryptionConfiguration(footer_key="kf", column_keys={"kc1": ["name"]})
    collected = []
    with pqseal.ParquetWriter(path, t.schema, cfg, kms=KMS, write_page_index=True,
                              metadata_collector=collected) as w:
        w.write_table(t, row_group_size=1000)
    assert isinstance(w.metadata, pq.FileMetaData) and collected == [w.metadata]
    ours, theirs = w.metadata.to_dict(), pyarrow_read(path).metadata.to_dict()
    ours.pop("serialized_size")
    theirs.pop("serialized_size")
    assert ours == theirs
    st = path.stat()
    assert w.stats.row_groups == 3 and w.stats.bytes_out == st.st_size
    # blocks reserved ahead of each row group (ext4, xfs) are released on close
    assert st.st_blocks * 512 <= st.st_size + (64 << 10)


def test_destination_created_while_writing_is_not_replaced(tmp_path):
    t = make_table(100)
    path = tmp_path / "x.parquet"
    w = pqseal.ParquetWriter(path, t.schema, EncryptionConfig("kf", **CONFIG), kms=KMS)
    w.write_table(t)
    path.write_bytes(b"someone else's")
    with pytest.raises(OutputExists):
        w.close()
    assert path.read_bytes() == b"someone else's"
    assert list(tmp_path.iterdir()) == [path]
