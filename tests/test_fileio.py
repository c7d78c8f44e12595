"""Output-file block reservation (``pq_preallocate``) and its release by the engine,
and early writeback (``pq_start_writeback``).

The engine reserves the output's blocks up front on disk file systems (a large speed-up
of page-cache writes on ext4) and must hand back whatever it did not use: a sealed or
unsealed file may not keep blocks past its end, and its size must be exactly what was
written.
"""

from __future__ import annotations

import os

import pyarrow.parquet as pq
import pyarrow.parquet.encryption as pe
import pytest

import pqseal
from pqseal._nativeio import lib
from pqseal.bench.seal import _fs_type
from pqseal.format import DecryptionProperties, EncryptionProperties

from parquet_gen import make_table

KEY = bytes(range(16))


def test_preallocate_keeps_size_and_reserves_blocks(tmp_path):
    p = tmp_path / "x.bin"
    with open(p, "wb") as f:
        f.write(b"abc")
        f.flush()
        reserved = lib.pq_preallocate(f.fileno(), 0, 8 << 20)
        st = os.fstat(f.fileno())
    assert st.st_size == 3  # FALLOC_FL_KEEP_SIZE: the size is what was written
    if _fs_type(str(tmp_path)) in ("ext4", "xfs", "btrfs"):
        assert reserved == 1
        assert st.st_blocks * 512 >= 8 << 20
    assert lib.pq_preallocate(-1, 0, 1 << 20) == 0
    with open(p, "rb") as f:
        assert lib.pq_preallocate(f.fileno(), 0, 0) == 0


@pytest.mark.skipif(not os.path.isdir("/dev/shm"), reason="no tmpfs at /dev/shm")
def test_preallocate_skips_tmpfs():
    import tempfile

    with tempfile.NamedTemporaryFile(dir="/dev/shm") as f:
        assert lib.pq_preallocate(f.fileno(), 0, 1 << 20) == 0
        assert os.fstat(f.fileno()).st_blocks == 0


@pytest.mark.parametrize("algorithm", ["AES_GCM_V1", "AES_GCM_CTR_V1"])
def test_outputs_release_unused_reservation(tmp_path, algorithm):
    src = tmp_path / "plain.parquet"
    table = make_table(40_000, nested=False)
    pq.write_table(table, src, data_page_size=1 << 14)
    sealed, unsealed = tmp_path / "sealed.parquet", tmp_path / "unsealed.parquet"
    stats = pqseal.encrypt_file(src, sealed, EncryptionProperties(KEY, algorithm=algorithm))
    pqseal.decrypt_file(sealed, unsealed, DecryptionProperties(KEY))
    for p in (sealed, unsealed):
        st = os.stat(p)
        # no reserved blocks left past the end (one extra file-system block of slack)
        assert st.st_blocks * 512 <= st.st_size + 64 * 1024, (p, st.st_blocks * 512, st.st_size)
    assert os.path.getsize(sealed) == stats.bytes_out
    assert pq.read_table(unsealed).equals(table)
    assert pq.read_table(sealed, decryption_properties=pe.create_decryption_properties(KEY)).equals(table)


def test_seal_reserves_no_more_than_it_writes(tmp_path, monkeypatch):
    """Sealing reserves a low estimate of the output (the input's size), so no reserved
    block is left to release: releasing them with a truncate cost about a millisecond
    per file on ext4, as much as sealing a 1 MB file. Unsealing, whose output is
    smaller, still releases what it did not use."""
    src = tmp_path / "plain.parquet"
    table = make_table(20_000, nested=False)
    pq.write_table(table, src, data_page_size=1 << 14)
    truncated = []
    real = os.ftruncate
    monkeypatch.setattr(os, "ftruncate", lambda fd, n: (truncated.append(n), real(fd, n))[1])
    sealed = tmp_path / "sealed.parquet"
    stats = pqseal.encrypt_file(src, sealed, EncryptionProperties(KEY))
    assert truncated == []
    assert os.path.getsize(sealed) == stats.bytes_out > os.path.getsize(src)
    unsealed = tmp_path / "unsealed.parquet"
    stats = pqseal.decrypt_file(sealed, unsealed, DecryptionProperties(KEY))
    assert os.path.getsize(unsealed) == stats.bytes_out
    assert pq.read_table(unsealed).equals(table)
    assert pq.read_table(sealed, decryption_properties=pe.create_decryption_properties(KEY)).equals(table)


def test_start_writeback(tmp_path):
    with open(tmp_path / "x.bin", "wb") as f:
        f.write(b"x" * 100_000)
        f.flush()
        assert lib.pq_start_writeback(f.fileno(), 0, 100_000) == (1 if os.uname().sysname == "Linux" else 0)
    assert lib.pq_start_writeback(-1, 0, 1 << 20) == 0
    assert lib.pq_start_writeback(0, 0, 0) == 0


@pytest.mark.parametrize("fsync", [True, False])
def test_writeback_starts_while_sealing(tmp_path, monkeypatch, fsync):
    """With fsync (the default), the engine starts writeback of the output every few MiB
    as it goes, in order and without gaps, so the closing fsync waits only for the tail;
    without fsync it leaves the page cache alone."""
    import numpy as np
    import pyarrow as pa

    from pqseal.format import engine
    from pqseal.format import sink as sink_mod

    class Recorder:
        def __init__(self):
            self.calls = []

        def pq_start_writeback(self, fd, off, n):
            self.calls.append((off, n))
            return lib.pq_start_writeback(fd, off, n)

        def __getattr__(self, name):
            return getattr(lib, name)

    rec = Recorder()
    monkeypatch.setattr(sink_mod, "lib", rec)
    src = tmp_path / "plain.parquet"
    table = pa.table({"x": np.random.default_rng(3).random(5_000_000)})   # ~40 MB, incompressible
    pq.write_table(table, src, compression="none")
    sealed = tmp_path / "sealed.parquet"
    stats = engine.transform(str(src), str(sealed), encryption=EncryptionProperties(KEY), fsync=fsync)
    if not fsync:
        assert rec.calls == []
        return
    assert len(rec.calls) >= stats.bytes_out // sink_mod._WRITEBACK_BYTES - 1 >= 3
    pos = 0
    for off, n in rec.calls:
        assert off == pos and n >= sink_mod._WRITEBACK_BYTES
        pos += n
    assert pos <= stats.bytes_out
    assert pq.read_table(sealed, decryption_properties=pe.create_decryption_properties(KEY)).equals(table)


def test_sink_writes_in_bounded_calls_and_survives_short_writes(tmp_path, monkeypatch):
    """Every system call carries at most 1 MiB, and a short write (the kernel may accept
    less than asked) still puts every byte in order."""
    import numpy as np

    from pqseal.format import sink as sink_mod

    real_writev = os.writev
    sizes = []

    def stingy_writev(fd, bufs):
        total = sum(len(b) for b in bufs)
        sizes.append(total)
        # accept only about a third of each call, cutting through a buffer
        first = memoryview(b"".join(bytes(b) for b in bufs))[: max(1, total // 3)]
        return real_writev(fd, [first])

    monkeypatch.setattr(sink_mod.os, "writev", stingy_writev)
    rng = np.random.default_rng(1)
    parts = [rng.integers(0, 256, n, dtype=np.uint8) for n in (5, (3 << 20) + 7, 0, 1000, 1 << 20)]
    parts.append(b"tail")
    p = tmp_path / "out.bin"
    with open(p, "wb") as f:
        s = sink_mod.Sink(f.fileno(), [("a",)])  # writes the magic
        s._writev(parts)
        pos = s.pos
        s.close()
    data = p.read_bytes()
    expected = b"PAR1" + b"".join(bytes(x) for x in parts)
    assert data == expected and pos == len(expected)
    assert max(sizes) <= sink_mod._WRITE_MAX


def test_scratch_buffers_are_kept_per_thread_and_bounded():
    import threading

    import numpy as np

    from pqseal.format import _buffers

    _buffers.clear()
    assert len(_buffers.take("sink")) == 0
    a = np.empty(1000, np.uint8)
    _buffers.give("sink", a)
    seen = []
    t = threading.Thread(target=lambda: seen.append(len(_buffers.take("sink"))))
    t.start()
    t.join()
    assert seen == [0]                     # another thread does not get it
    assert _buffers.take("sink") is a      # this thread does, once
    assert len(_buffers.take("sink")) == 0
    _buffers.give("sink", np.empty(_buffers.KEEP_MAX + 1, np.uint8))
    assert len(_buffers.take("sink")) == 0  # too large to keep
    _buffers.give("source", a)
    _buffers.clear()
    assert len(_buffers.take("source")) == 0


def test_walk_modules_bounds_and_resume():
    import struct

    import numpy as np

    from pqseal._nativeio import ffi

    def mods(*sizes):
        return b"".join(struct.pack("<I", n) + bytes([i % 256]) * n for i, n in enumerate(sizes))

    def walk(buf, start, end, cap):
        o, ln = np.zeros(cap, np.uint64), np.zeros(cap, np.uint64)
        nxt = ffi.new("uint64_t *")
        src = ffi.from_buffer(buf)
        n = lib.pq_walk_modules(ffi.cast("uint8_t *", src), start, end, ffi.cast("uint64_t *", o.ctypes.data),
                                ffi.cast("uint64_t *", ln.ctypes.data), cap, nxt)
        ffi.release(src)
        return n, o[:max(n, 0)].tolist(), ln[:max(n, 0)].tolist(), nxt[0]

    data = b"xx" + mods(3, 0, 10) + b"yy"
    end = len(data) - 2
    assert walk(data, 2, end, 8) == (3, [2, 9, 13], [7, 4, 14], end)
    assert walk(data, 2, end, 2) == (2, [2, 9], [7, 4], 13)     # stops at cap, resumable
    assert walk(data, 13, end, 2) == (1, [13], [14], end)
    assert walk(data, 2, end - 1, 8)[0] == -1                   # last module overruns the end
    assert walk(data, 2, 5, 8)[0] == -1                         # a prefix cut short
    assert walk(data, 4, 4, 8) == (0, [], [], 4)                # empty range
    assert walk(data, 5, 4, 8)[0] == -1                         # start past end
    big = struct.pack("<I", 0xFFFFFFFF) + b"z" * 8
    assert walk(big, 0, len(big), 8)[0] == -1                   # length beyond the buffer


@pytest.mark.skipif(not os.path.isdir("/dev/shm"), reason="no tmpfs at /dev/shm")
def test_fs_is_tmpfs(tmp_path):
    import tempfile

    with tempfile.NamedTemporaryFile(dir="/dev/shm") as f:
        assert lib.pq_fs_is_tmpfs(f.fileno()) == 1
    if _fs_type(str(tmp_path)) not in ("tmpfs", "ramfs"):
        with open(tmp_path / "x", "wb") as f:
            assert lib.pq_fs_is_tmpfs(f.fileno()) == 0
    assert lib.pq_fs_is_tmpfs(-1) == 0


@pytest.mark.filterwarnings("ignore:.*DataPageV2")
@pytest.mark.parametrize("mode", ["mmap", "pread"])
@pytest.mark.parametrize("framing", ["arrow", "parquet-java"])
@pytest.mark.parametrize("algorithm", ["AES_GCM_V1", "AES_GCM_CTR_V1"])
def test_both_read_paths(tmp_path, monkeypatch, mode, framing, algorithm):
    """Chunks read through the mapping and through preadv (the tmpfs path) give the same
    results: round trip, the careful walk (parquet-java V2 framing), page CRCs, and a
    tampered page named by verify."""
    from pqseal.format import VerificationFailed

    monkeypatch.setenv("PQSEAL_READ", mode)
    src = tmp_path / "plain.parquet"
    table = make_table(30_000, nested=True)
    pq.write_table(table, src, data_page_size=1 << 13, data_page_version="2.0", write_page_checksum=True,
                   write_page_index=True)
    sealed, unsealed = tmp_path / "sealed.parquet", tmp_path / "unsealed.parquet"
    pqseal.encrypt_file(src, sealed, EncryptionProperties(KEY, algorithm=algorithm, v2_framing=framing))
    assert pqseal.verify(sealed, DecryptionProperties(KEY))["ok"]
    pqseal.decrypt_file(sealed, unsealed, DecryptionProperties(KEY))
    assert pq.read_table(unsealed).equals(table)
    # flip one byte in the middle of the file's data region: some page module fails
    data = bytearray(sealed.read_bytes())
    data[len(data) // 3] ^= 0x40
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(bytes(data))
    with pytest.raises(VerificationFailed) as ei:
        pqseal.verify(bad, DecryptionProperties(KEY))
    assert ei.value.report["failures"]

