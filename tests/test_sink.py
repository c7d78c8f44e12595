"""The sealing sink (``pqseal.open(path, "wb")``): Parquet writers pqseal does not drive
write a plaintext Parquet file into it; once closed the destination is a PME file.

Oracle: pyarrow decrypts the output itself (pyarrow's CryptoFactory with pqseal's KMS
client through :func:`pqseal.arrow.crypto_factory`), and the frame read back must equal
the source. The spill file is inspected through the sink's descriptor while it exists.
"""

from __future__ import annotations

import gc
import io
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
import warnings

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pyarrow.parquet.encryption as pe
import pytest

import pqseal
from pqseal.arrow import crypto_factory
from pqseal.config import EncryptionConfig
from pqseal.errors import InvalidTag, MalformedFile, OutputExists
from pqseal.format import AlreadyEncrypted, EncryptionProperties
from pqseal.io.spill import SpillStore, block_size_for
from pqseal.kms import KeyListKms

import parquet_gen
from interop import require
from pme_reference import RefKeys

MASTER = {"kf": os.urandom(16), "kc1": os.urandom(16), "kc2": os.urandom(32)}
KMS = KeyListKms(MASTER)
N = 60_000


@pytest.fixture(scope="module")
def table():
    rng = np.random.default_rng(9)
    return pa.table({"id": np.arange(N, dtype=np.int64),
                     "name": pa.array([f"n{i % 977}" for i in range(N)]),
                     "x": rng.random(N),
                     "tags": pa.array([[i, i + 1] for i in range(N)])})


def read_back(path_or_buf, kms=KMS):
    """pyarrow decrypts (pyarrow's CryptoFactory, pqseal's KMS client)."""
    factory = crypto_factory(lambda cfg: kms)
    where = path_or_buf if isinstance(path_or_buf, str) else None
    props = factory.file_decryption_properties(pe.KmsConnectionConfig(), pe.DecryptionConfiguration(), where)
    src = path_or_buf if where else pa.BufferReader(path_or_buf)
    return pq.read_table(src, decryption_properties=props)


def is_pme(path) -> bool:
    with open(path, "rb") as f:
        head = f.read(4)
        f.seek(-4, os.SEEK_END)
        tail = f.read(4)
    return head == b"PAR1" and tail == b"PAR1" and pqseal.inspect(path)["encrypted"] or tail == b"PARE"


def cfg(**kw):
    kw.setdefault("column_keys", {"kc1": ["id", "name"], "kc2": ["x"]})
    return EncryptionConfig("kf", **kw)


def listing(d):
    return sorted(os.listdir(d))


# ---- every writer -----------------------------------------------------------------------


def _polars(table, f):
    require("polars").from_arrow(table).write_parquet(f)


def _pyarrow(table, f):
    pq.write_table(table, f, row_group_size=20_000)


def _pandas_pyarrow(table, f):
    require("pandas")
    table.to_pandas().to_parquet(f, engine="pyarrow", index=False)


def _pandas_fastparquet(table, f):
    require("pandas")
    require("fastparquet")
    with warnings.catch_warnings():      # pandas deprecates the engine
        warnings.simplefilter("ignore")
        # fastparquet cannot write list columns from pandas' object dtype
        table.drop_columns(["tags"]).to_pandas().to_parquet(f, engine="fastparquet", index=False)


WRITERS = {"polars": _polars, "pyarrow": _pyarrow, "pandas-pyarrow": _pandas_pyarrow,
           "pandas-fastparquet": _pandas_fastparquet}


def _same(table, got, writer):
    if writer == "pandas-fastparquet":
        table = table.drop_columns(["tags"])
    # polars and pandas write large_string (and polars large_list): compare the values
    assert got.select(table.column_names).cast(table.schema).equals(table)


@pytest.mark.parametrize("writer", sorted(WRITERS))
@pytest.mark.parametrize("memory_limit", [64 << 20, 0], ids=["in-memory", "spilled"])
def test_every_writer_round_trips(tmp_path, table, writer, memory_limit):
    dst = str(tmp_path / "out.parquet")
    with pqseal.open(dst, "wb", encryption=cfg(), kms=KMS, memory_limit=memory_limit) as f:
        WRITERS[writer](table, f)
        assert f.tell() > 0
        spilled = f.spilled_bytes
    assert (spilled > 0) == (memory_limit == 0)
    assert f.closed and f.stats.bytes_out == os.path.getsize(dst)
    assert is_pme(dst)
    with pytest.raises(OSError):         # no keys: pyarrow cannot read it
        pq.read_table(dst)
    _same(table, read_back(dst), writer)
    assert listing(tmp_path) == ["out.parquet"]


@pytest.mark.parametrize("algorithm", ["AES_GCM_V1", "AES_GCM_CTR_V1"])
@pytest.mark.parametrize("plaintext_footer", [False, True])
@pytest.mark.parametrize("keys", ["uniform", "columns"])
def test_encryption_settings(tmp_path, table, algorithm, plaintext_footer, keys):
    kw = dict(encryption_algorithm=algorithm, plaintext_footer=plaintext_footer)
    c = EncryptionConfig("kf", uniform_encryption=True, **kw) if keys == "uniform" else cfg(**kw)
    dst = str(tmp_path / "out.parquet")
    with pqseal.open(dst, "wb", encryption=c, kms=KMS, memory_limit=256 << 10) as f:
        pq.write_table(table, f, row_group_size=15_000)
    assert f.spilled_bytes > 0
    assert read_back(dst).equals(table)
    info = pqseal.inspect(dst)
    assert info["algorithm"] == algorithm and info["footer"].startswith("plaintext") is plaintext_footer
    if plaintext_footer:   # the column left unencrypted reads without keys, the others not
        if keys == "columns":
            assert pq.read_table(dst, columns=["tags"]).column("tags").equals(table.column("tags"))
        with pytest.raises(OSError):
            pq.read_table(dst, columns=["id"])


def test_external_key_material(tmp_path, table):
    dst = str(tmp_path / "out.parquet")
    with pqseal.open(dst, "wb", encryption=cfg(internal_key_material=False), kms=KMS) as f:
        pq.write_table(table, f)
    assert listing(tmp_path) == ["_KEY_MATERIAL_FOR_out.parquet.json", "out.parquet"]
    assert read_back(dst).equals(table)
    md = pqseal.inspect(dst)["footer_key_metadata"]
    assert md["keyReference"] == "footerKey" and md["material"]["masterKeyID"] == "kf"


def test_external_key_material_needs_a_path():
    with pytest.raises(ValueError, match="external key material"):
        pqseal.open(io.BytesIO(), "wb", encryption=cfg(internal_key_material=False), kms=KMS)


def test_explicit_properties_and_pyarrow_configuration(tmp_path, table):
    key = os.urandom(16)
    plain = str(tmp_path / "plain.parquet")
    pq.write_table(table, plain)
    dst = str(tmp_path / "explicit.parquet")
    with pqseal.open(dst, "wb", encryption=EncryptionProperties(key), memory_limit=0) as f:
        pq.write_table(table, f)
    # the reference reader (cryptography only) decrypts the very pages pyarrow wrote
    assert parquet_gen.pages(dst, RefKeys(footer_key=key)) == parquet_gen.pages(plain)
    dst2 = str(tmp_path / "pa-config.parquet")
    with pqseal.open(dst2, "wb", encryption=pe.EncryptionConfiguration(footer_key="kf", column_keys={"kc1": ["id"]}),
                     kms=KMS) as f:
        pq.write_table(table, f)
    assert read_back(dst2).equals(table)


# ---- the spill ----------------------------------------------------------------------------


def _fd_path(fd: int) -> str:
    return os.readlink(f"/proc/self/fd/{fd}")


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc to look at the unnamed spill file")
def test_spill_is_ciphertext_only_and_gone_after_close(tmp_path, table):
    spill_dir = tmp_path / "spill"
    spill_dir.mkdir()
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    plain = io.BytesIO()
    pq.write_table(table, plain, compression="none")
    data = plain.getvalue()
    dst = str(out_dir / "t.parquet")
    with pqseal.open(dst, "wb", encryption=cfg(), kms=KMS, memory_limit=128 << 10, spill_dir=spill_dir) as f:
        for i in range(0, len(data), 10_000):          # as a writer would, in pieces
            f.write(data[i:i + 10_000])
            assert f._store.memory_bytes <= (128 << 10) + 5 * f._store.block
        store = f._store
        store.freeze()                                  # every spilled block on disk
        fd = store._fd
        where = _fd_path(fd)
        assert where.startswith(str(spill_dir)) and where.endswith("(deleted)")
        assert listing(spill_dir) == [] and listing(out_dir) == []   # nothing with a name anywhere
        ino = os.fstat(fd).st_ino
        spill = os.pread(fd, os.fstat(fd).st_size, 0)
        block = store.block
        assert store.spilled_bytes >= len(data) - (128 << 10) - block
        assert len(spill) == store.spilled_bytes // block * (block + 32)
        # no 64-byte run of the plaintext stream is anywhere in the spill
        for off in range(0, store.spilled_bytes - 64, 4099):
            assert data[off:off + 64] not in spill
    assert read_back(dst).equals(table)
    open_inodes = set()
    for name in os.listdir("/proc/self/fd"):
        try:
            open_inodes.add(os.stat(f"/proc/self/fd/{name}").st_ino)
        except OSError:
            pass
    assert ino not in open_inodes                       # the spill file is closed, so gone
    assert listing(spill_dir) == []


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs the spill file's descriptor")
def test_tampered_spill_fails_closed(tmp_path, table):
    dst = str(tmp_path / "t.parquet")
    f = pqseal.open(dst, "wb", encryption=cfg(), kms=KMS, memory_limit=0)
    pq.write_table(table, f)
    f._store.freeze()
    fd = f._store._fd
    b = os.pread(fd, 1, 100)
    os.pwrite(fd, bytes([b[0] ^ 1]), 100)
    with pytest.raises(InvalidTag):
        f.close()
    assert f.closed and listing(tmp_path) == []


def test_spill_store_reads_back_what_was_appended(tmp_path):
    rng = np.random.default_rng(1)
    data = rng.integers(0, 256, 3_000_000, dtype=np.uint8).tobytes()
    limit = 300_000
    s = SpillStore(memory_limit=limit, spill_dir=str(tmp_path))
    try:
        pos = 0
        while pos < len(data):
            n = int(rng.integers(1, 200_000))
            s.append(memoryview(data)[pos:pos + n])
            pos += n
            assert s.memory_bytes <= limit + 5 * s.block
        s.freeze()
        assert s.size == len(data) and s.spilled_bytes > 0 and s.block == block_size_for(limit)
        for _ in range(200):
            a = int(rng.integers(0, len(data)))
            n = int(rng.integers(0, 600_000))
            assert bytes(s.pread(a, n)) == data[a:a + n]
        assert bytes(s.pread(0, len(data))) == data
        with pytest.raises(ValueError):
            s.append(b"x")
    finally:
        s.close()
    s.close()
    with pytest.raises(ValueError):
        s.pread(0, 1)
    assert listing(tmp_path) == []


def test_reused_blocks_show_only_the_new_stream(tmp_path):
    first = SpillStore(memory_limit=1 << 20, spill_dir=str(tmp_path))
    first.append(b"\xaa" * (3 << 20))
    first.freeze()
    first.close()                       # its blocks go back to the pool
    second = SpillStore(memory_limit=1 << 20, spill_dir=str(tmp_path))
    second.append(b"\x55" * 100)
    second.freeze()
    assert second.size == 100 and bytes(second.pread(0, 1 << 20)) == b"\x55" * 100
    second.close()


# ---- failures leave nothing ----------------------------------------------------------------


def test_exception_inside_with_leaves_nothing(tmp_path, table):
    dst = tmp_path / "t.parquet"
    with pytest.raises(RuntimeError, match="writer failed"):
        with pqseal.open(dst, "wb", encryption=cfg(), kms=KMS, memory_limit=0) as f:
            pq.write_table(table, f)
            raise RuntimeError("writer failed")
    assert f.closed and listing(tmp_path) == []


def test_abort_leaves_nothing_and_close_twice_is_harmless(tmp_path, table):
    dst = tmp_path / "t.parquet"
    f = pqseal.open(dst, "wb", encryption=cfg(), kms=KMS)
    pq.write_table(table, f)
    f.abort()
    f.close()
    f.abort()
    assert f.closed and listing(tmp_path) == []
    with pytest.raises(ValueError):
        f.write(b"x")
    g = pqseal.open(dst, "wb", encryption=cfg(), kms=KMS)
    pq.write_table(table, g)
    g.close()
    g.close()
    assert read_back(str(dst)).equals(table)


def test_failing_spill_fails_the_write_and_leaves_nothing(tmp_path, table):
    spill = tmp_path / "spill"
    spill.mkdir()
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(FileNotFoundError):
        pqseal.open(out / "t.parquet", "wb", encryption=cfg(), kms=KMS, spill_dir=tmp_path / "missing")
    f = pqseal.open(out / "t.parquet", "wb", encryption=cfg(), kms=KMS, memory_limit=0, spill_dir=spill)
    spill.rmdir()                       # the spill file cannot be created any more
    with pytest.raises(OSError):
        pq.write_table(table, f)
    assert f.closed and listing(out) == []


def test_garbage_collected_without_close_leaves_nothing(tmp_path, table):
    f = pqseal.open(tmp_path / "t.parquet", "wb", encryption=cfg(), kms=KMS, memory_limit=0)
    pq.write_table(table, f)
    with pytest.warns(ResourceWarning, match="without close"):
        del f
        gc.collect()
    assert listing(tmp_path) == []


@pytest.mark.parametrize("stream", ["garbage", "truncated", "empty", "already-pme"])
def test_invalid_stream_is_a_typed_error_and_leaves_nothing(tmp_path, table, stream):
    buf = io.BytesIO()
    pq.write_table(table, buf)
    data = {"garbage": os.urandom(5000), "truncated": buf.getvalue()[:-100], "empty": b"",
            "already-pme": None}[stream]
    if data is None:
        src = tmp_path / "src"
        src.mkdir()
        pqseal.write_table(table, src / "s.parquet", cfg(), kms=KMS)
        data = (src / "s.parquet").read_bytes()
    out = tmp_path / "out"
    out.mkdir()
    f = pqseal.open(out / "t.parquet", "wb", encryption=cfg(), kms=KMS, memory_limit=1000)
    f.write(data)
    with pytest.raises(AlreadyEncrypted if stream == "already-pme" else MalformedFile):
        f.close()
    assert f.closed and listing(out) == []


def test_existing_destination_is_refused_without_overwrite(tmp_path, table):
    dst = tmp_path / "t.parquet"
    dst.write_bytes(b"precious")
    with pytest.raises(OutputExists):
        pqseal.open(dst, "wb", encryption=cfg(), kms=KMS)
    with pytest.raises(OutputExists):
        pqseal.open(dst, "xb", encryption=cfg(), kms=KMS)
    assert dst.read_bytes() == b"precious"
    # created meanwhile: refused at close, the newcomer untouched
    other = tmp_path / "u.parquet"
    f = pqseal.open(other, "wb", encryption=cfg(), kms=KMS)
    pq.write_table(table, f)
    other.write_bytes(b"newcomer")
    with pytest.raises(OutputExists):
        f.close()
    assert other.read_bytes() == b"newcomer"
    with pqseal.open(dst, "wb", encryption=cfg(), kms=KMS, overwrite=True) as f:
        pq.write_table(table, f)
    assert read_back(str(dst)).equals(table)
    assert listing(tmp_path) == ["t.parquet", "u.parquet"]


def test_no_encryption_and_no_zone_is_refused_at_open(tmp_path):
    with pytest.raises(ValueError, match="encryption zone"):
        pqseal.open(tmp_path / "t.parquet", "wb")
    with pytest.raises(ValueError, match="encryption zone"):
        pqseal.open(io.BytesIO(), "wb")
    assert listing(tmp_path) == []


def test_encryption_none_takes_the_zone_policy_of_the_path(tmp_path, table, monkeypatch):
    from pqseal.io import zones

    asked = []

    class Policy:
        def encryption_config(self):
            return cfg(encryption_algorithm="AES_GCM_CTR_V1")

    def policy_for(path, *, zones=None):
        asked.append((os.fspath(path), zones))
        return Policy()

    monkeypatch.setattr(zones, "policy_for", policy_for)
    dst = tmp_path / "t.parquet"
    with pqseal.open(dst, "wb", kms=KMS, zones="zones.toml") as f:
        pq.write_table(table, f)
    assert asked == [(str(dst), "zones.toml")]
    assert pqseal.inspect(dst)["algorithm"] == "AES_GCM_CTR_V1"
    assert read_back(str(dst)).equals(table)


# ---- file object targets -------------------------------------------------------------------


def test_writing_into_a_bytesio(table):
    target = io.BytesIO()
    with pqseal.open(target, "wb", encryption=cfg(), kms=KMS, memory_limit=64 << 10) as f:
        _polars(table, f)
        assert target.tell() == 0          # nothing reaches the target before close
    assert not target.closed               # the caller's to close (or commit)
    data = target.getvalue()
    assert data[-4:] == b"PARE" and len(data) == f.stats.bytes_out
    assert read_back(data).cast(table.schema).equals(table)


def test_failed_stream_writes_nothing_into_a_file_object():
    target = io.BytesIO()
    f = pqseal.open(target, "wb", encryption=cfg(), kms=KMS)
    f.write(b"PAR1 not a parquet file PAR1")
    with pytest.raises(MalformedFile):
        f.close()
    assert target.getvalue() == b""


def test_file_interface(tmp_path):
    f = pqseal.open(tmp_path / "t.parquet", "wb", encryption=cfg(), kms=KMS)
    assert f.writable() and not f.readable() and not f.seekable()
    assert f.write(np.arange(4, dtype=np.int64)) == 32 and f.tell() == 32
    assert f.write(memoryview(b"abc")) == 3 and f.tell() == 35
    f.flush()
    with pytest.raises(io.UnsupportedOperation):
        f.seek(0)
    with pytest.raises(io.UnsupportedOperation):
        f.read()
    assert "kf" not in repr(f) and "35 bytes" in repr(f)
    f.abort()
    with pytest.raises(ValueError):
        f.tell()


# ---- SIGKILL -------------------------------------------------------------------------------

KILLED = textwrap.dedent("""
    import os, sys
    import numpy as np, pyarrow as pa, pyarrow.parquet as pq
    import pqseal
    from pqseal.config import EncryptionConfig
    from pqseal.kms import KeyListKms
    kms = KeyListKms({"kf": os.urandom(16)})
    dst, spill_dir = sys.argv[1], sys.argv[2]
    n = 50_000
    t = pa.table({"marker": pa.array([f"PLAINTEXT-MARKER-{i:08d}" for i in range(n)]), "v": np.arange(n)})
    f = pqseal.open(dst, "wb", encryption=EncryptionConfig("kf", uniform_encryption=True), kms=kms,
                    memory_limit=256 << 10, spill_dir=spill_dir)
    w = pq.ParquetWriter(f, t.schema, compression="none")
    for i in range(1, 6):
        w.write_table(t)
        if i == 3:
            assert f.spilled_bytes > 0
            print("spilling", flush=True)
    import time
    time.sleep(600)    # killed here, or still writing: the spill stays a bounded size
""")


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="POSIX only")
def test_sigkill_while_writing_leaves_nothing(tmp_path):
    out, spill = tmp_path / "out", tmp_path / "spill"
    out.mkdir()
    spill.mkdir()
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [os.path.dirname(os.path.dirname(pqseal.__file__))] + [p for p in [os.environ.get("PYTHONPATH")] if p]))
    proc = subprocess.Popen([sys.executable, "-c", KILLED, str(out / "t.parquet"), str(spill)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    watchdog = threading.Timer(120, proc.kill)     # never hang the suite
    watchdog.start()
    try:
        line = proc.stdout.readline()
        assert line == b"spilling\n", proc.stderr.read().decode()
        time.sleep(0.2)                 # more spill in flight
        # while it writes: nothing with a name on disk, no plaintext in what is open
        assert listing(out) == [] and listing(spill) == []
        fds = os.listdir(f"/proc/{proc.pid}/fd")
        spills = [os.readlink(f"/proc/{proc.pid}/fd/{fd}") for fd in fds]
        spills = [s for s in spills if s.startswith(str(spill))]
        assert spills and all(s.endswith("(deleted)") for s in spills)
        for fd in fds:
            if os.readlink(f"/proc/{proc.pid}/fd/{fd}").startswith(str(spill)):
                with open(f"/proc/{proc.pid}/fd/{fd}", "rb") as held:
                    assert b"PLAINTEXT-MARKER" not in held.read(os.fstat(held.fileno()).st_size)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        watchdog.cancel()
    assert proc.returncode == -signal.SIGKILL
    assert listing(out) == [] and listing(spill) == []
