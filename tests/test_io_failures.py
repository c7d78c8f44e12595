"""Failure paths of the transparent layer (issue 9): ``pqseal.open`` (view and sink), the
``pqseal`` fsspec file system, zones and the polars bridge, used the way users get them
wrong: wrong modes, twice, onto existing files, killed midway, with the wrong key, on
damaged files, on a full or read-only disk. Each case: a typed error (or a one-line CLI
error) naming the user's path, nothing lost, nothing plaintext left, no key bytes in
messages or reprs.

Oracle for files that must be intact: pyarrow's own PME reader (CryptoFactory with
pqseal's KMS client) or the unchanged bytes.
"""

from __future__ import annotations

import base64
import errno
import io
import os
import pathlib
import signal
import subprocess
import sys
import threading
import tracemalloc

import pyarrow as pa
import pyarrow.parquet as pq
import pyarrow.parquet.encryption as pe
import pytest
from click.testing import CliRunner

import pqseal
from pqseal.api import decryption_properties
from pqseal.arrow import crypto_factory
from pqseal.cli import main
from pqseal.config import EncryptionConfig
from pqseal.errors import InvalidTag, MalformedFile, MalformedKeyMaterial, OutputExists, PqsealError
from pqseal.format.footer import rewrite_footer
from pqseal.format.source import Source
from pqseal.io import spill as spill_mod
from pqseal.io.zones import ZonePolicy, create_zone, list_zones
from pqseal.kms import KeyListKms

from interop import require

fsspec = require("fsspec")
pl = require("polars")

from pqseal.io.fs import PqsealFileSystem  # noqa: E402  (needs fsspec)

MASTER = {"kf": bytes(range(1, 17)), "kc": bytes(range(17, 33))}
KEY_LIST = ", ".join(f"{k}: {base64.b64encode(v).decode()}" for k, v in MASTER.items())
KMS = KeyListKms(MASTER)
CFG = EncryptionConfig("kf", column_keys={"kc": ["a"]}, complete_columns=True)
MARKER = "secret-marker-"       # in every value of column b: plaintext if found on disk
N = 2_000


def table(n: int = N) -> pa.Table:
    return pa.table({"a": pa.array(range(n), pa.int64()), "b": pa.array([f"{MARKER}{i % 7}" for i in range(n)])})


def seal(path, **writer_options) -> str:
    with pqseal.open(path, "wb", encryption=CFG, kms=KMS) as f:
        pq.write_table(table(), f, row_group_size=500, **writer_options)
    return str(path)


def oracle(path) -> pa.Table:
    """pyarrow's own PME reader."""
    factory = crypto_factory(lambda cfg: KMS)
    props = factory.file_decryption_properties(pe.KmsConnectionConfig(), pe.DecryptionConfiguration())
    return pq.read_table(str(path), decryption_properties=props)


def listing(d) -> list[str]:
    return sorted(os.listdir(d))


@pytest.fixture(scope="module")
def sealed(tmp_path_factory) -> str:
    return seal(tmp_path_factory.mktemp("sealed") / "t.parquet", write_page_index=True)


@pytest.fixture(scope="module")
def sealed_plaintext_footer(tmp_path_factory) -> str:
    path = str(tmp_path_factory.mktemp("sealed") / "pf.parquet")
    cfg = EncryptionConfig("kf", column_keys={"kc": ["a"]}, plaintext_footer=True)
    with pqseal.open(path, "wb", encryption=cfg, kms=KMS) as f:
        pq.write_table(table(), f, row_group_size=500, write_page_index=True)
    return path


def _read_all(path) -> None:
    with pqseal.open(path, "rb", kms=KMS) as v:
        v.read()


# ---- pqseal.open: modes -----------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["r", "w", "x", "rt", "wt", "ab", "a", "r+b", "rb+", "w+b", "br", ""])
def test_open_refuses_text_append_and_update_modes(tmp_path, sealed, mode):
    target = sealed if "r" in mode else str(tmp_path / "new.parquet")
    with pytest.raises(ValueError, match="mode"):
        pqseal.open(target, mode, kms=KMS, **({} if "r" in mode else {"encryption": CFG}))
    assert listing(tmp_path) == []


def test_xb_never_overwrites(tmp_path, sealed):
    dst = tmp_path / "t.parquet"
    dst.write_bytes(b"someone's file")
    with pytest.raises(OutputExists):
        pqseal.open(dst, "xb", encryption=CFG, kms=KMS)
    with pytest.raises(ValueError, match="xb"):              # was: overwrite=True honoured, the file replaced
        pqseal.open(dst, "xb", encryption=CFG, kms=KMS, overwrite=True)
    assert dst.read_bytes() == b"someone's file" and listing(tmp_path) == ["t.parquet"]


def test_wb_twice_refuses_the_existing_file(tmp_path):
    dst = seal(tmp_path / "t.parquet")
    before = pathlib.Path(dst).read_bytes()
    with pytest.raises(OutputExists, match=str(dst)):
        pqseal.open(dst, "wb", encryption=CFG, kms=KMS)
    assert pathlib.Path(dst).read_bytes() == before and listing(tmp_path) == ["t.parquet"]


# ---- the view: a file object ------------------------------------------------------------------


def test_view_behaves_like_a_read_only_file(sealed):
    v = pqseal.open(sealed, "rb", kms=KMS)
    with pytest.raises(ValueError, match="negative"):
        v.seek(-1)
    with pytest.raises(TypeError):                       # was: accepted, then a TypeError at the next read
        v.seek(1.5)
    with pytest.raises(ValueError, match="whence"):
        v.seek(0, 7)
    assert v.tell() == 0
    v.seek(v.size + 100)
    assert v.read(10) == b"" and v.readinto(bytearray(4)) == 0
    with pytest.raises(ValueError) as exc:               # was: MalformedFile, as if the file were damaged
        v.pread(-5, 10)
    assert not isinstance(exc.value, MalformedFile)
    assert len(v.pread(0, -1)) == 0
    with pytest.raises(io.UnsupportedOperation):         # was: NotImplementedError
        v.write(b"x")
    with pytest.raises(io.UnsupportedOperation):
        v.truncate(0)
    v.close()
    v.close()                                            # twice: harmless
    for op in (lambda: v.read(1), lambda: v.seek(0), lambda: v.tell(), lambda: v.pread(0, 1),
               lambda: v.readinto(bytearray(1))):
        with pytest.raises(ValueError, match="closed"):
            op()


def test_view_of_a_file_truncated_or_replaced_while_open(tmp_path):
    p = seal(tmp_path / "t.parquet")
    with pqseal.open(p, "rb", kms=KMS) as v:
        os.truncate(p, 3000)
        with pytest.raises(MalformedFile, match="changed while being read"):
            pq.read_table(v)
    p = seal(tmp_path / "u.parquet")
    with pqseal.open(p, "rb", kms=KMS) as v:
        pq.write_table(table(10), tmp_path / "plain.parquet")
        os.replace(tmp_path / "plain.parquet", p)        # the view keeps reading the file it opened
        assert pq.read_table(v).equals(table())


def test_close_waits_for_a_read_in_progress(sealed):
    """close() from another thread while a read is in progress waits for it (it used to
    close the file under the read: the read failed, or read a descriptor reused meanwhile)."""
    with pqseal.open(sealed, "rb", kms=KMS) as v:
        expected = v.read()
    v = pqseal.open(sealed, "rb", kms=KMS)
    entered, release = threading.Event(), threading.Event()
    real = v._s.read

    def slow_read(*args, **kwargs):
        entered.set()
        release.wait(10)
        return real(*args, **kwargs)
    v._s.read = slow_read
    got = []
    reader = threading.Thread(target=lambda: got.append(v.pread(0, v.size).tobytes()))
    reader.start()
    assert entered.wait(10)
    closer = threading.Thread(target=v.close)
    closer.start()
    closer.join(0.3)
    assert closer.is_alive()                 # waiting for the read
    release.set()
    reader.join(10)
    closer.join(10)
    assert got == [expected] and v.closed
    with pytest.raises(ValueError, match="closed"):
        v.pread(0, 1)


def test_a_view_that_fails_to_open_is_quiet_when_collected(sealed):
    """(In development mode io reports exceptions of close() at collection: the view that
    failed in its constructor used to raise AttributeError there.)"""
    code = ("import gc, sys, pqseal\nfrom pqseal.kms import KeyListKms\n"
            f"try: pqseal.open({sealed!r}, 'rb', kms=KeyListKms({{'kf': {MASTER['kf']!r}}}))\n"
            "except KeyError as e: print('refused')\ngc.collect()\n")
    r = subprocess.run([sys.executable, "-X", "dev", "-c", code], capture_output=True, timeout=60,
                       env=dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path)))
    assert r.stdout == b"refused\n" and b"Exception ignored" not in r.stderr, r.stderr.decode()


# ---- the view: damaged files ------------------------------------------------------------------


@pytest.mark.parametrize("data", [b"", b"PAR1", b"PAR1PAR1", b"PAR1\0\0\0\0PAR1", b"not parquet at all" * 10],
                         ids=["empty", "magic", "magic2", "12-bytes", "text"])
def test_view_of_what_is_no_parquet_file(tmp_path, data):
    p = tmp_path / "x.parquet"
    p.write_bytes(data)
    with pytest.raises(MalformedFile, match="x.parquet"):
        pqseal.open(p, "rb", kms=KMS)


def test_a_fifo_is_refused_not_waited_on(tmp_path):
    """Opening a FIFO blocked until a writer came, and SIGTERM only sets pqseal's flag:
    ``pqseal.open(fifo, "rb")`` (and the CLI) hung. A helper thread plays the writer
    after a while, so the old behaviour fails here instead of hanging."""
    fifo = str(tmp_path / "f.parquet")
    os.mkfifo(fifo)
    stop = threading.Event()

    def writer():      # opens the write end once a reader waits (O_NONBLOCK: ENXIO until then)
        while not stop.wait(0.05):
            try:
                os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
                return
            except OSError:
                pass
    timer = threading.Timer(2.0, writer)
    timer.start()
    try:
        for opener in (lambda: pqseal.open(fifo, "rb", kms=KMS), lambda: pqseal.polars.decryption_properties(fifo)):
            with pytest.raises(MalformedFile, match="f.parquet: not a regular file"):
                opener()
    finally:
        stop.set()
        timer.cancel()


def test_huge_claimed_lengths_allocate_nothing(tmp_path, sealed):
    data = pathlib.Path(sealed).read_bytes()
    with pqseal.open(sealed, "rb", kms=KMS) as v:
        header_at = v._s.column_meta(0, 0)["data_page_offset"]
    cases = {"footer": data[:-8] + (0xFFFFFFF0).to_bytes(4, "little") + data[-4:],
             "module": data[:header_at] + (0xFFFFFFF0).to_bytes(4, "little") + data[header_at + 4:]}
    for name, blob in cases.items():
        p = tmp_path / f"{name}.parquet"
        p.write_bytes(blob)
        tracemalloc.start()
        try:
            with pytest.raises(PqsealError):
                _read_all(p)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert peak < 16 << 20, (name, peak)


@pytest.mark.parametrize("footer", ["encrypted", "plaintext"])
def test_truncated_and_flipped_files_give_typed_errors(tmp_path, request, footer):
    source = request.getfixturevalue("sealed" if footer == "encrypted" else "sealed_plaintext_footer")
    data = pathlib.Path(source).read_bytes()
    p = tmp_path / "x.parquet"
    for n in range(0, len(data), 307):
        p.write_bytes(data[:n])
        with pytest.raises(PqsealError):
            _read_all(p)
    for i in range(0, len(data), 149):
        flipped = bytearray(data)
        flipped[i] ^= 0x10
        p.write_bytes(flipped)
        try:
            _read_all(p)
        except PqsealError:
            pass
    # (the bytes no tag covers, such as JSON spacing in the key material, may read fine)


@pytest.mark.parametrize("field", ["offset_index_offset", "column_index_offset", "offset_index_length"])
def test_index_outside_the_file_is_refused_at_open(tmp_path, field):
    """A footer (authentic: written with the key) pointing an index outside the data region."""
    p = seal(tmp_path / "t.parquet", write_page_index=True)

    def edit(f):
        f.column_chunk(0, 0)[field] = (1 << 31) - 1 if field.endswith("length") else 1 << 40   # (i32 / i64)
    rewrite_footer(p, decryption_properties(p, None, kms=KMS), edit, fsync=False)
    with pytest.raises(MalformedFile, match="outside the data region"):
        pqseal.open(p, "rb", kms=KMS)


def test_chunk_or_bloom_filter_outside_the_file_is_refused(tmp_path):
    p = seal(tmp_path / "t.parquet")
    dec = decryption_properties(p, None, kms=KMS)
    for field in ("total_compressed_size", "bloom_filter_offset"):
        def edit(f, field=field):
            meta = f.column_meta(0, 1)
            meta[field] = 1 << 40
            f.set_column_meta(0, 1, meta)
        q = tmp_path / f"{field}.parquet"
        q.write_bytes(pathlib.Path(p).read_bytes())
        rewrite_footer(q, dec, edit, fsync=False)
        with pytest.raises(MalformedFile, match="outside the data region"):
            pqseal.open(q, "rb", kms=KMS)


def test_wrong_and_missing_keys(sealed):
    wrong = KeyListKms({"kf": bytes(16), "kc": bytes(16)})
    for opener in (lambda: pqseal.open(sealed, "rb", kms=wrong),
                   lambda: pqseal.polars.decryption_properties(sealed, kms=wrong)):
        with pytest.raises(InvalidTag, match="t.parquet: footer key: key unwrap failed"):   # (was: no file named)
            opener()
    with pytest.raises(InvalidTag, match="t.parquet: cannot unwrap the key of encrypted column a "):
        pqseal.open(sealed, "rb", kms=KeyListKms({"kf": MASTER["kf"], "kc": bytes(16)}))
    with pytest.raises(KeyError, match="kc"):                 # KeyNotFound naming the master key
        pqseal.open(sealed, "rb", kms=KeyListKms({"kf": MASTER["kf"]}))


# ---- the sink ---------------------------------------------------------------------------------


def test_sink_refusals_leave_nothing(tmp_path):
    (tmp_path / "d").mkdir()
    for dst, error in [(tmp_path / "d", IsADirectoryError), (str(tmp_path) + "/", IsADirectoryError),
                       (tmp_path / "missing" / "t.parquet", FileNotFoundError), ("", ValueError)]:
        with pytest.raises(error):
            pqseal.open(dst, "wb", encryption=CFG, kms=KMS)
    with pytest.raises(KeyError, match="nokey"):
        pqseal.open(tmp_path / "k.parquet", "wb", encryption=EncryptionConfig("nokey", uniform_encryption=True),
                    kms=KMS)
    with pytest.raises(ValueError, match="zzz"):               # a column the written file does not have
        with pqseal.open(tmp_path / "c.parquet", "wb", kms=KMS,
                         encryption=EncryptionConfig("kf", column_keys={"kc": ["zzz"]})) as f:
            pq.write_table(table(), f)
    assert listing(tmp_path) == ["d"]


def test_sink_close_twice_and_use_after_close(tmp_path):
    s = pqseal.open(tmp_path / "t.parquet", "wb", encryption=CFG, kms=KMS)
    pq.write_table(table(), s)
    s.close()
    s.close()
    assert oracle(tmp_path / "t.parquet").equals(table())
    for op in (lambda: s.write(b"x"), lambda: s.tell(), lambda: s.flush()):
        with pytest.raises(ValueError, match="closed"):
            op()


def test_sink_write_of_text_keeps_the_stream(tmp_path):
    """A write of a str is the caller's TypeError; the bytes written so far stay (it used
    to discard the stream, and close() then reported success with nothing written)."""
    buf = io.BytesIO()
    pq.write_table(table(), buf)
    data = buf.getvalue()
    s = pqseal.open(tmp_path / "t.parquet", "wb", encryption=CFG, kms=KMS)
    s.write(data[:100])
    with pytest.raises(TypeError):
        s.write("text")
    s.write(data[100:])
    s.close()
    assert oracle(tmp_path / "t.parquet").equals(table())


def test_close_after_a_failed_write_raises(tmp_path, monkeypatch):
    dst = tmp_path / "t.parquet"
    s = pqseal.open(dst, "wb", encryption=CFG, kms=KMS)
    s.write(b"PAR1")

    def full(self, data):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(spill_mod.SpillStore, "append", full)
    with pytest.raises(OSError):
        s.write(b"more")
    with pytest.raises(ValueError, match=f"{dst} was not written"):    # was: returned as if sealed
        s.close()
    s.close()                                                          # then harmless
    assert listing(tmp_path) == []


def test_spill_failures_name_the_destination(tmp_path, monkeypatch):
    dst = str(tmp_path / "t.parquet")

    def full(fd, data, offset):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(spill_mod.os, "pwrite", full)
    with pytest.raises(OSError, match=f"{dst}: cannot spill to {tmp_path}: No space") as exc:
        with pqseal.open(dst, "wb", encryption=CFG, kms=KMS, memory_limit=0) as f:
            pq.write_table(pa.table({"x": range(300_000)}), f)
    assert exc.value.errno == errno.ENOSPC
    monkeypatch.undo()

    def read_only(directory):
        raise OSError(errno.EROFS, "Read-only file system", os.path.join(directory, ".pqseal-spill-x1"))
    monkeypatch.setattr(spill_mod, "_anonymous_file", read_only)
    with pytest.raises(OSError, match=f"{dst}: cannot spill to {tmp_path}: Read-only") as exc:
        with pqseal.open(dst, "wb", encryption=CFG, kms=KMS, memory_limit=0) as f:
            pq.write_table(pa.table({"x": range(300_000)}), f)
    assert ".pqseal-spill" not in str(exc.value)
    assert listing(tmp_path) == []


def test_disk_full_while_sealing_leaves_nothing(tmp_path, monkeypatch):
    def full(fd, buffers):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(os, "writev", full)
    dst = str(tmp_path / "t.parquet")
    with pytest.raises(OSError, match=f"cannot write {dst}: No space left") as exc:
        seal(dst)
    assert exc.value.errno == errno.ENOSPC and listing(tmp_path) == []


def _refuse_temp_files(monkeypatch):
    """os.open fails as on a read-only file system for pqseal's temporary files."""
    real = os.open

    def fake(path, *args, **kwargs):
        if ".pqseal-" in os.fspath(path):
            raise OSError(errno.EROFS, "Read-only file system", path)
        return real(path, *args, **kwargs)
    monkeypatch.setattr(os, "open", fake)


def test_temp_file_errors_name_the_destination(tmp_path, monkeypatch):
    _refuse_temp_files(monkeypatch)
    dst = str(tmp_path / "t.parquet")
    with pytest.raises(OSError, match=f"cannot write {dst}: Read-only") as exc:     # was: the temporary name
        seal(dst)
    assert ".pqseal-" not in str(exc.value) and exc.value.errno == errno.EROFS
    with pytest.raises(OSError, match=f"cannot write {tmp_path / 'p.parquet'}: Read-only") as exc:
        pqseal.polars.write_parquet(pl.from_arrow(table()), tmp_path / "p.parquet", CFG, kms=KMS)
    assert ".pqseal-" not in str(exc.value)
    assert listing(tmp_path) == []


def test_rename_errors_name_the_destination(tmp_path, monkeypatch):
    """The last step, renaming the temporary file into place, fails (a directory made at
    the destination meanwhile, say): the error names the destination (it named the
    temporary file too) and the temporary file is gone."""
    def no_links(src, dst):      # a file system without hard links: renamed after a check
        raise PermissionError(errno.EPERM, "Operation not permitted", src, dst)

    def refuse(src, dst):
        raise IsADirectoryError(errno.EISDIR, "Is a directory", src, dst)
    monkeypatch.setattr(os, "link", no_links)
    monkeypatch.setattr(os, "replace", refuse)
    for name, write in [("s.parquet", seal),
                        ("p.parquet", lambda p: pqseal.polars.write_parquet(pl.from_arrow(table()), p, CFG, kms=KMS))]:
        dst = str(tmp_path / name)
        with pytest.raises(IsADirectoryError, match=f"cannot write {dst}: Is a directory") as exc:
            write(dst)
        assert ".pqseal-" not in str(exc.value)
    assert listing(tmp_path) == []


@pytest.mark.parametrize("writer", ["sink", "polars"])
def test_destination_created_while_sealing_is_not_replaced(tmp_path, monkeypatch, writer):
    """A file that appears at the destination after the checks, while the sealed file is
    written, is kept (OutputExists); the rename used to replace it."""
    dst = tmp_path / "t.parquet"
    import pqseal.format.engine as engine

    def appear(*args, **kwargs):
        dst.write_bytes(b"someone else's")
        return real(*args, **kwargs)
    if writer == "sink":
        real = engine.remove_stale                       # (called once the destination is checked)
        monkeypatch.setattr(engine, "remove_stale", appear)
        with pytest.raises(OutputExists, match="created while it was being written"):
            seal(dst)
    else:
        real = pqseal.polars.rewrite_footer
        monkeypatch.setattr(pqseal.polars, "rewrite_footer", appear)
        with pytest.raises(OutputExists, match="created while it was being written"):
            pqseal.polars.write_parquet(pl.from_arrow(table()), dst, CFG, kms=KMS)
    assert dst.read_bytes() == b"someone else's" and listing(tmp_path) == ["t.parquet"]


def test_destination_created_meanwhile_is_kept(tmp_path):
    dst = tmp_path / "t.parquet"
    s = pqseal.open(dst, "wb", encryption=CFG, kms=KMS)
    pq.write_table(table(), s)
    dst.write_bytes(b"someone else's")
    with pytest.raises(OutputExists):
        s.close()
    assert dst.read_bytes() == b"someone else's" and listing(tmp_path) == ["t.parquet"]


_KILLED_CHILD = """
import os, signal, sys
import pyarrow as pa, pyarrow.parquet as pq
import pqseal, pqseal.polars, polars as pl
from pqseal.config import EncryptionConfig
from pqseal.kms import KeyListKms
what, sig, dst = sys.argv[1], getattr(signal, sys.argv[2]), sys.argv[3]
kms = KeyListKms({"kf": bytes(range(1, 17)), "kc": bytes(range(17, 33))})
cfg = EncryptionConfig("kf", column_keys={"kc": ["a"]}, complete_columns=True)
t = pa.table({"a": pa.array(range(2000), pa.int64()), "b": [f"%s{i %% 7}" for i in range(2000)]})

def die(*args, **kwargs):      # the signal arrives while the sealed temporary file is complete
    os.kill(os.getpid(), sig)
    raise SystemExit("the signal did not stop the process")

if what == "sink":
    os.fsync = die             # the engine flushes the temporary file, then renames it
    with pqseal.open(dst, "wb", encryption=cfg, kms=kms) as f:
        pq.write_table(t, f)
else:
    pqseal.polars.rewrite_footer = die
    pqseal.polars.write_parquet(pl.from_arrow(t), dst, cfg, kms=kms)
""" % MARKER


@pytest.mark.parametrize("what", ["sink", "polars"])
@pytest.mark.parametrize("sig", [pytest.param("SIGINT", marks=pytest.mark.slow),
                                 pytest.param("SIGTERM", marks=pytest.mark.slow), "SIGKILL"])
def test_killed_while_sealing_leaves_no_destination_and_no_plaintext(tmp_path, what, sig):
    """Killed at the last moment (the temporary file complete, not yet renamed): no
    destination; SIGINT cleans up at once; after SIGTERM/SIGKILL the temporary file holds
    no plaintext and the next write into the directory removes it (pqseal's temp names)."""
    dst = tmp_path / "t.parquet"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    r = subprocess.run([sys.executable, "-c", _KILLED_CHILD, what, sig, str(dst)], env=env, capture_output=True,
                       timeout=120)
    assert r.returncode == -getattr(signal, sig), r.stderr.decode()[-2000:]
    left = listing(tmp_path)
    assert "t.parquet" not in left
    if sig == "SIGINT":
        assert left == []
    else:
        assert len(left) == 1 and left[0].startswith(".t.parquet.pqseal-"), left
        assert MARKER.encode() not in (tmp_path / left[0]).read_bytes()
        if what == "sink":
            seal(tmp_path / "next.parquet")
        else:
            pqseal.polars.write_parquet(pl.from_arrow(table()), tmp_path / "next.parquet", CFG, kms=KMS)
        assert listing(tmp_path) == ["next.parquet"]


# ---- the fsspec file system ---------------------------------------------------------------------


@pytest.fixture
def zoned(tmp_path):
    """(file system, zones file, zone a, zone b, a directory in no zone)."""
    zf = str(tmp_path / "zones.json")
    a, b, out = tmp_path / "a", tmp_path / "b", tmp_path / "out"
    for d in (a, b, out):
        d.mkdir()
    create_zone(a, "kf", kms=KMS, zones=zf)
    create_zone(b, "kc", kms=KMS, zones=zf)
    return PqsealFileSystem(kms=KMS, zones=zf), zf, str(a), str(b), str(out)


def fs_write(fs, path) -> None:
    with fs.open(path, "wb") as f:
        pq.write_table(table(), f)


@pytest.mark.parametrize("protocol", ["file", "memory"])
def test_listing_a_directory_holding_a_damaged_file(tmp_path, protocol):
    """ls, info, find, glob and walk report a damaged, truncated or empty Parquet file
    with its stored size (they used to raise InvalidTag for the whole listing); opening
    that file raises the typed error."""
    fs = PqsealFileSystem(target_protocol=protocol, encryption=CFG, kms=KMS)
    target = fs.target
    a = str(tmp_path / "a") if protocol == "file" else f"/pqseal-failures-{os.getpid()}/a"
    target.makedirs(a, exist_ok=True)
    try:
        fs_write(fs, f"{a}/good.parquet")
        data = bytearray(target.cat_file(f"{a}/good.parquet"))
        data[-20] ^= 1                                    # inside the encrypted footer
        target.pipe_file(f"{a}/damaged.parquet", bytes(data))
        target.pipe_file(f"{a}/trunc.parquet", bytes(data[:100]))
        target.pipe_file(f"{a}/empty.parquet", b"")
        sizes = {e["name"].rsplit("/", 1)[1]: e["size"] for e in fs.ls(a)}
        assert (sizes["damaged.parquet"], sizes["trunc.parquet"], sizes["empty.parquet"]) == (len(data), 100, 0)
        with fs.open(f"{a}/good.parquet", "rb") as v:
            assert sizes["good.parquet"] == v.size != len(data)
        info = fs.info(f"{a}/damaged.parquet")
        assert info["size"] == len(data) and "encrypted" not in info
        assert len(fs.find(a, detail=True)) == 4 and len(fs.glob(f"{a}/*.parquet", detail=True)) == 4
        assert len(next(iter(fs.walk(a, detail=True)))[2]) == 4
        with pytest.raises(InvalidTag, match="damaged.parquet"):
            fs.open(f"{a}/damaged.parquet", "rb")
        with pytest.raises(InvalidTag, match="damaged.parquet"):
            pq.read_table(a, filesystem=fs)
    finally:
        if protocol == "memory":
            target.rm(a.rsplit("/", 1)[0], recursive=True)


def test_failure_while_sealing_into_a_target_keeps_its_file(tmp_path):
    """Over a target that writes where it is told (memory here; HDFS, SFTP), a stream
    that fails halfway through sealing (a damaged page header in row group 2) used to
    leave a partial PME file at the path, in place of the file that was there. Now the
    file is written beside it and moved into place only when sealed."""
    fs = PqsealFileSystem(target_protocol="memory", encryption=CFG, kms=KMS)
    root = f"/pqseal-failures-seal-{os.getpid()}"
    fs.target.makedirs(root, exist_ok=True)
    buf = io.BytesIO()
    pq.write_table(table(), buf, row_group_size=500)
    stream = bytearray(buf.getvalue())
    with Source(bytes(stream)) as s:
        at = s.column_meta(2, 0)["data_page_offset"]
    stream[at:at + 3] = b"\xff\xff\xff"
    try:
        fs_write(fs, f"{root}/t.parquet")
        old = fs.target.cat_file(f"{root}/t.parquet")
        for name in ("t.parquet", "new.parquet"):
            with pytest.raises(MalformedFile, match=f"{name}: cannot parse page header"):
                with fs.open(f"{root}/{name}", "wb") as f:
                    f.write(bytes(stream))
        assert fs.target.ls(root, detail=False) == [f"{root}/t.parquet"]
        assert fs.target.cat_file(f"{root}/t.parquet") == old
        fs_write(fs, f"{root}/t.parquet")                       # a good stream replaces it
        assert fs.target.ls(root, detail=False) == [f"{root}/t.parquet"]
        assert fs.target.cat_file(f"{root}/t.parquet") != old
        with fs.open(f"{root}/t.parquet", "rb") as f:
            assert pq.read_table(f).equals(table())
    finally:
        fs.target.rm(root, recursive=True)


def test_moves_inside_a_zone_work_and_across_zones_are_refused(zoned):
    fs, _, a, b, out = zoned
    fs_write(fs, f"{a}/t.parquet")
    fs.makedirs(f"{a}/sub")
    fs.mv(f"{a}/t.parquet", f"{a}/sub/t.parquet")
    fs.mv(f"{a}/sub", f"{a}/sub2", recursive=True)
    assert oracle(f"{a}/sub2/t.parquet").equals(table())
    for dst in (f"{b}/t.parquet", f"{out}/t.parquet"):
        with pytest.raises(ValueError, match="refusing to rename"):
            fs.mv(f"{a}/sub2/t.parquet", dst)
        with pytest.raises(ValueError, match="refusing to rename"):
            fs.copy(f"{a}/sub2/t.parquet", dst)
    with pytest.raises(ValueError, match="refusing to rename"):
        fs.mv(a, f"{out}/moved", recursive=True)
    assert fs.exists(f"{a}/sub2/t.parquet") and os.listdir(b) == [] and os.listdir(out) == []


def test_moving_several_files_into_a_directory(tmp_path):
    """mv/copy of a list of files into a directory (an object store's way; fsspec's local
    file system moves one path at a time): inside a zone it works (it raised
    AttributeError), into another zone it is refused."""
    zf = str(tmp_path / "zones.json")
    root = f"/pqseal-failures-mv-{os.getpid()}"
    mem = fsspec.filesystem("memory")
    for d in ("z1/sub", "z2"):
        mem.makedirs(f"{root}/{d}", exist_ok=True)
    try:
        create_zone(f"memory://{root}/z1", "kf", kms=KMS, zones=zf)
        create_zone(f"memory://{root}/z2", "kc", kms=KMS, zones=zf)
        fs = PqsealFileSystem(target_protocol="memory", kms=KMS, zones=zf)
        files = [f"{root}/z1/a.parquet", f"{root}/z1/b.parquet"]
        for f in files:
            fs_write(fs, f)
        fs.mv(files, f"{root}/z1/sub/")
        moved = [f"{root}/z1/sub/a.parquet", f"{root}/z1/sub/b.parquet"]
        assert sorted(fs.find(root)) == moved
        for op in (fs.mv, fs.copy):
            with pytest.raises(ValueError, match="refusing to rename"):
                op(moved, f"{root}/z2/")
        assert sorted(fs.find(root)) == moved
        with fs.open(moved[0], "rb") as f:
            assert pq.read_table(f).equals(table())
    finally:
        mem.rm(root, recursive=True)


def test_rm_of_a_zone_root_keeps_the_zone(zoned):
    """Removing the directory does not remove the policy: a directory made again at the
    root is the zone again (delete the zone with 'pqseal zone delete')."""
    fs, zf, a, _, _ = zoned
    fs_write(fs, f"{a}/t.parquet")
    fs.rm(a, recursive=True)
    assert not os.path.exists(a) and [z.path for z in list_zones(zones=zf)][0] == a
    with pytest.raises(FileNotFoundError, match=a):
        fs_write(fs, f"{a}/t.parquet")
    fs.makedirs(a)
    fs_write(fs, f"{a}/t.parquet")
    assert oracle(f"{a}/t.parquet").equals(table())


def test_plaintext_parquet_inside_a_zone_reads_as_it_is(zoned):
    """Reads need only keys: a plaintext file placed in a zone by other means (a plain
    copy) reads as it is; 'pqseal zone create --encrypt-existing' is what seals such
    files. Writes through the file system are always sealed."""
    fs, _, a, _, _ = zoned
    pq.write_table(table(), f"{a}/plain.parquet")
    with fs.open(f"{a}/plain.parquet", "rb") as f:
        assert pq.read_table(f).equals(table())
    assert fs.info(f"{a}/plain.parquet")["size"] == os.path.getsize(f"{a}/plain.parquet")


def test_file_system_option_errors(zoned, sealed):
    _, zf, a, _, _ = zoned
    for options in (dict(kms=123), dict(decryption="x")):
        with pytest.raises(TypeError, match=next(iter(options))):
            PqsealFileSystem(zones=zf, **options).open(sealed, "rb")
    with pytest.raises(ValueError, match="unknown KMS scheme 'x'"):   # text is a KMS URI
        PqsealFileSystem(zones=zf, kms="x").open(sealed, "rb")
    with pytest.raises(TypeError, match="encryption"):
        PqsealFileSystem(zones=zf, kms=KMS, encryption="x").open(f"{a}/t.parquet", "wb")
    with pytest.raises(TypeError, match="zones must be"):          # was: "expected str, bytes or os.PathLike"
        PqsealFileSystem(zones=123, kms=KMS).open(f"{a}/t.parquet", "wb")
    with pytest.raises(ValueError, match="no encryption zone"):
        PqsealFileSystem(zones=str(zf) + ".missing", kms=KMS).open(f"{a}/t.parquet", "wb")
    f = PqsealFileSystem(zones=zf, kms=KMS).open(sealed, "rb")
    with pytest.raises(TypeError):                                 # was: accepted
        f.seek(2.5)
    f.close()
    assert os.listdir(a) == []


def test_missing_keystore_is_a_typed_error(zoned, sealed, monkeypatch, tmp_path):
    _, zf, a, _, _ = zoned
    monkeypatch.setenv("PQSEAL_KEYSTORE", str(tmp_path / "no-keystore.json"))
    fs = PqsealFileSystem(zones=zf)
    with pytest.raises(KeyError, match="no keystore"):
        fs.open(sealed, "rb")
    with pytest.raises(KeyError, match="no keystore"):
        fs.open(f"{a}/t.parquet", "wb")
    assert fs.info(sealed)["size"] == os.path.getsize(sealed)     # without keys: the stored size
    assert os.listdir(a) == []


# ---- zones --------------------------------------------------------------------------------------


def one_line_error(r, code, *needles):
    assert r.exit_code == code, (r.exit_code, r.output)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("pqseal: error: ") and "Traceback" not in r.output, r.output
    for n in needles:
        assert n in lines[0], (n, lines[0])


def test_zones_cli_bad_arguments(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    zf = str(tmp_path / "z.json")
    r = CliRunner()

    def zone(*args):
        return r.invoke(main, ["zone", "--zones", zf, *args])
    (tmp_path / "f.parquet").write_bytes(b"x")
    one_line_error(zone("create", "f.parquet", "--footer-key", "kf", "--key-list", KEY_LIST), 1,
                   "not a directory", str(tmp_path / "f.parquet"))
    one_line_error(zone("create", "", "--footer-key", "kf", "--key-list", KEY_LIST), 1, "ZoneError")
    one_line_error(zone("delete", "nowhere"), 1, "no zone is rooted at", str(tmp_path / "nowhere"))
    res = zone("create", "rel", "--footer-key", "kf", "--key-list", KEY_LIST)         # relative: made absolute
    assert res.exit_code == 0 and res.stdout == f"created zone {tmp_path / 'rel'}\n", res.output
    one_line_error(zone("create", "rel", "--footer-key", "kf", "--key-list", KEY_LIST), 1, "exists", "--force")
    for content in (b"{bad", b"\xff\xfe", b"[]"):
        with open(zf, "wb") as f:
            f.write(content)
        for args in (["list"], ["show", "rel"], ["create", "other", "--footer-key", "kf", "--key-list", KEY_LIST]):
            one_line_error(zone(*args), 1, "ZonesFileError", zf)
        assert pathlib.Path(zf).read_bytes() == content                     # a bad zones file is never rewritten


def test_zones_file_that_cannot_be_written_is_named(tmp_path, monkeypatch):
    zf = str(tmp_path / "zones.json")
    real = os.open

    def read_only(path, *args, **kwargs):
        if os.fspath(path) == zf + ".lock":
            raise OSError(errno.EROFS, "Read-only file system", path)
        return real(path, *args, **kwargs)
    monkeypatch.setattr(os, "open", read_only)
    with pytest.raises(OSError, match=f"zones file {zf} cannot be written: Read-only") as exc:
        create_zone(tmp_path / "d", "kf", kms=KMS, zones=zf)
    assert ".lock" not in str(exc.value)                            # was: named the lock file


# ---- the polars bridge ------------------------------------------------------------------------


def test_polars_bridge_bad_inputs(tmp_path, sealed):
    assert pqseal.polars.decryption_properties(_plain(tmp_path), kms=KMS) is None
    with pytest.raises(FileNotFoundError):
        pqseal.polars.decryption_properties(tmp_path / "missing.parquet", kms=KMS)
    (tmp_path / "junk.parquet").write_bytes(b"junk" * 10)
    with pytest.raises(MalformedFile, match="junk.parquet"):
        pqseal.polars.decryption_properties(tmp_path / "junk.parquet", kms=KMS)
    with pytest.raises(InvalidTag):
        pqseal.polars.decryption_properties(sealed, kms=KeyListKms({"kf": bytes(16), "kc": bytes(16)}))
    with pytest.raises(KeyError, match="kc"):
        pqseal.polars.decryption_properties(sealed, kms=KeyListKms({"kf": MASTER["kf"]}))


@pytest.mark.parametrize("damage", ["broken", "missing"])
def test_external_key_material_missing_or_broken(tmp_path, damage):
    cfg = EncryptionConfig("kf", column_keys={"kc": ["a"]}, internal_key_material=False)
    p = str(tmp_path / "t.parquet")
    with pqseal.open(p, "wb", encryption=cfg, kms=KMS) as f:
        pq.write_table(table(), f)
    material = tmp_path / "_KEY_MATERIAL_FOR_t.parquet.json"
    if damage == "broken":
        material.write_text("{broken")
    else:
        material.unlink()
    error, match = (MalformedKeyMaterial, "is not JSON") if damage == "broken" else (KeyError, "not found")
    for opener in (lambda: pqseal.open(p, "rb", kms=KMS), lambda: pqseal.polars.decryption_properties(p, kms=KMS)):
        with pytest.raises(error, match=match):
            opener()
    # a listing still works (it used to fail for broken material): the stored size
    entry = PqsealFileSystem(kms=KMS).info(p)
    assert entry["size"] == os.path.getsize(p) and "encrypted" not in entry


def _plain(d) -> str:
    p = str(d / "plain.parquet")
    pq.write_table(table(), p)
    return p


def test_polars_write_onto_existing_paths(tmp_path):
    plain = _plain(tmp_path)
    before = pathlib.Path(plain).read_bytes()
    df = pl.from_arrow(table())
    with pytest.raises(OutputExists, match=plain):
        pqseal.polars.write_parquet(df, plain, CFG, kms=KMS)
    with pytest.raises(IsADirectoryError):
        pqseal.polars.write_parquet(df, tmp_path, CFG, kms=KMS)
    with pytest.raises(FileNotFoundError):
        pqseal.polars.write_parquet(df, tmp_path / "no" / "x.parquet", CFG, kms=KMS)
    with pytest.raises(TypeError):
        pqseal.polars.write_parquet(df, tmp_path / "x.parquet", CFG, kms=KMS, no_such_option=1)
    assert pathlib.Path(plain).read_bytes() == before and listing(tmp_path) == ["plain.parquet"]


# ---- no key bytes in reprs and messages -------------------------------------------------------


def _key_forms() -> list[bytes]:
    out = []
    for k in MASTER.values():
        out += [k, k.hex().encode(), base64.b64encode(k), repr(k).encode()]
    return out


def test_no_key_bytes_in_reprs_and_errors(tmp_path, sealed, zoned):
    """Reprs of the new objects (polars' ParquetDecryptionProperties is opaque: its repr
    is the default object repr) and the errors of wrong keys carry no key bytes."""
    fs, _, a, _, _ = zoned
    view = pqseal.open(sealed, "rb", kms=KMS)
    sink = pqseal.open(tmp_path / "s.parquet", "wb", encryption=CFG, kms=KMS)
    shared = fs.open(sealed, "rb")
    texts = [repr(view), repr(sink), repr(fs), repr(shared), repr(ZonePolicy(path="/x", footer_key="kf")),
             repr(pqseal.polars.decryption_properties(sealed, kms=KMS)), repr(KMS)]
    for opener in (lambda: pqseal.open(sealed, "rb", kms=KeyListKms({"kf": bytes(16), "kc": bytes(16)})),
                   lambda: pqseal.polars.decryption_properties(sealed, kms=KeyListKms({"kf": MASTER["kc"]}))):
        with pytest.raises(PqsealError) as exc:
            opener()
        texts.append(str(exc.value))
    sink.abort()
    view.close()
    shared.close()
    for text in texts:
        for form in _key_forms():
            assert form not in text.encode(), text


def test_fs_refuses_unknown_options(tmp_path):
    # a misspelt option must not be ignored (the write would fall back to the zones' policy)
    require("fsspec")
    from pqseal.io.fs import PqsealFileSystem

    with pytest.raises(TypeError, match="encrpytion"):
        PqsealFileSystem(target_protocol="file", encrpytion=object(), skip_instance_cache=True)
    import pandas as pd
    with pytest.raises(TypeError, match="encrpytion"):
        pd.DataFrame({"a": [1]}).to_parquet("pqseal::file://" + str(tmp_path / "x.parquet"),
                                           storage_options={"pqseal": {"encrpytion": object()}})
    assert not (tmp_path / "x.parquet").exists()
    PqsealFileSystem(target_protocol="file", skip_instance_cache=True, use_listings_cache=False)   # fsspec's own
