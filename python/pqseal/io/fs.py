"""The ``pqseal`` fsspec protocol: PME made invisible to every fsspec reader and writer.

Chained over any fsspec target (``pqseal::file:///data/x``, ``pqseal::memory://x``,
``pqseal::s3://bucket/x`` with s3fs installed), or built directly over one
(``PqsealFileSystem(target_protocol="s3", target_options={...})``, addressed as
``pqseal://bucket/x``; a local file is then ``pqseal:///data/x``, three slashes)::

    pd.read_parquet("pqseal::file:///data/pii/t.parquet", storage_options={"pqseal": {"kms": kms}})
    dd.to_parquet(ddf, "pqseal::s3://bucket/pii/", storage_options={"pqseal": {"encryption": cfg}})
    duckdb.register_filesystem(PqsealFileSystem(target_protocol="file", kms=kms))
    duckdb.sql("SELECT * FROM read_parquet('pqseal:///data/pii/*.parquet')")

Parquet files are the files whose names end in ``.parquet``, ``.parq`` or ``.pq``
(Dask's and pyarrow's ``part.N.parquet`` included). For them:

- ``open(path, "wb")`` returns the sealing sink (:func:`pqseal.io.sink.open_sink`): the
  writer writes plaintext Parquet into it and on ``close()`` the target holds a PME
  file (a local target: a temporary file beside it, renamed into place; an object store:
  the target's file, which the store commits when it is closed and discards when sealing
  fails; another target, such as memory: a temporary file beside it, moved into place
  once sealed). The encryption is the ``encryption`` option,
  else the policy of the encryption zone holding the path. **A Parquet path in no zone
  and no ``encryption`` option is refused** (:class:`~pqseal.io.zones.ZoneError`): a
  ``pqseal`` file system never writes a plaintext Parquet file. ``_metadata`` and
  ``_common_metadata`` summary files are refused in that case too: pyarrow writes them in
  plaintext, with the statistics of every column (Dask: ``write_metadata_file=False``,
  its default).
- ``open(path, "rb")`` of a PME file returns the plaintext view
  (:func:`pqseal.io.view.open_view`), which decrypts only the ranges a reader asks for;
  a plaintext Parquet file is returned as the target's file.
- ``ls``, ``info``, ``size``, ``find``, ``glob``, ``walk`` and ``du`` report a PME file's
  size as its plaintext view's size (``"stored_size"``: the size in the target), so
  readers that plan reads by the size (pyarrow, Dask, DuckDB) see a plaintext Parquet
  file. The view's size is read from the footer once per file version (path, size and
  modification time or ETag) and cached in the file system.

Every other file (``_SUCCESS``, ``.json``, ``.csv``, ...) passes through untouched, as do
``rm``, ``mkdir``, ``makedirs``, ``exists``, ``isdir``, ``isfile``, ``touch``, ``created``
and ``modified``. ``mv``/``rename`` and ``copy`` refuse to move a file across
encryption zones (:func:`pqseal.io.zones.check_rename`): re-encryption is an explicit
operation.

The tools (each round trip tested in tests/test_fs.py and tests/test_dask.py):

- pandas (pyarrow and fastparquet engines) and Dask: ``pqseal::`` URLs with
  ``storage_options={"pqseal": {...}}``.
- DuckDB: ``con.register_filesystem(PqsealFileSystem(target_protocol=..., ...))``, then
  ``read_parquet('pqseal://...')`` (globs too) and ``COPY ... TO 'pqseal://...'``. Parquet
  files opened for reading may be shared by threads that each seek, then read
  (DuckDB's way; :class:`_SharedFile`).
- polars routes no custom protocol through fsspec (its own reader takes a ``pqseal::``
  URL for a local path), so it reads and writes the file objects:
  ``pl.read_parquet(fs.open(path))``, ``pl.scan_parquet(fs.open(path))``,
  ``df.write_parquet(fs.open(path, "wb"))``; or reads through pyarrow, which opens a
  ``pqseal://`` URL with fsspec: ``pl.read_parquet("pqseal:///data/t.parquet",
  use_pyarrow=True, storage_options={"kms": kms})`` (the options of the file system, not
  nested). polars turns an exception raised by a file object's ``read`` into a Rust
  panic (``pyo3_runtime.PanicException``, a BaseException) that carries the message, so
  a tampered file read from a file object surfaces that way.

Options (pandas and Dask: ``storage_options={"pqseal": {...}}``): ``encryption`` (an
:class:`~pqseal.config.EncryptionConfig`, a pyarrow ``EncryptionConfiguration`` or
explicit :class:`~pqseal.format.EncryptionProperties`; it overrides the zones),
``decryption`` (a :class:`~pqseal.config.DecryptionConfig` or explicit properties),
``kms`` (a KMS client or a client factory; None: the default keystore, unlocked from
the environment) and ``zones`` (the zones file; None: ``$PQSEAL_ZONES`` or ``zones.json``
beside the keystore). The options travel with the file system when Dask pickles it, so
a KMS client given here must pickle for a multi-process cluster.
"""

from __future__ import annotations

import contextlib
import datetime
import io
import operator
import os
import threading
from collections import OrderedDict

from fsspec import AbstractFileSystem, filesystem, get_filesystem_class
from fsspec.asyn import AsyncFileSystem
from fsspec.core import split_protocol
from fsspec.implementations.chained import ChainedFileSystem
from fsspec.implementations.local import LocalFileSystem

from .._io import temp_name
from ..errors import MalformedFile, PqsealError
from . import _exit

PARQUET_SUFFIXES = (".parquet", ".parq", ".pq")
SUMMARY_FILES = ("_metadata", "_common_metadata")
#: info keys that change when a file is rewritten (local, memory, S3, GCS, Azure)
_VERSION_KEYS = ("mtime", "ino", "ETag", "etag", "LastModified", "last_modified", "updated", "generation",
                 "created")
_SIZE_CACHE_ENTRIES = 65536


def is_parquet_name(path: str) -> bool:
    """True for a name a Parquet file is written under (``*.parquet``, ``*.parq``, ``*.pq``)."""
    return path.rstrip("/").lower().endswith(PARQUET_SUFFIXES)


def _stamp(value):
    """A version field comparable across listings (memory's info gives a datetime, its ls
    the timestamp)."""
    return value.timestamp() if isinstance(value, datetime.datetime) else value


def _basename(path: str) -> str:
    return path.rstrip("/").rsplit("/", 1)[-1]


#: options every fsspec file system takes (AbstractFileSystem's instance cache and listings cache)
_FSSPEC_OPTIONS = frozenset({"skip_instance_cache", "use_listings_cache", "listings_expiry_time", "max_paths",
                             "asynchronous", "loop"})


class PqsealFileSystem(ChainedFileSystem):
    """The ``pqseal`` fsspec file system (see the module documentation)."""

    protocol = "pqseal"
    root_marker = ""

    def __init__(self, target_protocol=None, target_options=None, fs=None, *, encryption=None, decryption=None,
                 kms=None, zones=None, fo=None, **kwargs):
        """``fs``: a target file system instance, or ``target_protocol`` and
        ``target_options`` to make one (default: the local file system). ``fo`` (the
        chained path fsspec passes) is not needed: paths come with each call. Any other
        option is refused: a misspelt ``encryption`` must not fall back to the zones."""
        unknown = sorted(set(kwargs) - _FSSPEC_OPTIONS)
        if unknown:
            raise TypeError(f"unknown pqseal file system option(s): {', '.join(unknown)} (options: encryption, "
                            "decryption, kms, zones, target_protocol, target_options, fs)")
        super().__init__(**kwargs)
        if fs is not None and target_protocol is not None:
            raise ValueError("give the target as fs= or as target_protocol=, not both")
        if fs is None:
            fs = filesystem(target_protocol or "file", **(target_options or {}))
        if isinstance(fs, PqsealFileSystem):
            raise ValueError("a pqseal file system over another pqseal file system would seal twice")
        self.target: AbstractFileSystem = fs
        self.encryption = encryption
        self.decryption = decryption
        self.kms = kms
        self.zones = zones
        self._local = isinstance(fs, LocalFileSystem)
        self._sizes: OrderedDict[str, tuple[tuple, int | None]] = OrderedDict()
        self._sizes_lock = threading.Lock()

    # ---- paths ---------------------------------------------------------------------------

    @classmethod
    def _strip_protocol(cls, path):
        """``pqseal::<url>``: the path in the target the URL names (fastparquet strips
        whole chained URLs with this); ``pqseal://<path>``: the path, which the target
        normalizes when it is used."""
        if isinstance(path, (list, tuple)):
            return [cls._strip_protocol(p) for p in path]
        path = os.fspath(path) if not isinstance(path, str) else path
        if path.startswith("pqseal::"):
            url = path[len("pqseal::"):]
            return get_filesystem_class(split_protocol(url)[0] or "file")._strip_protocol(url)
        if path.startswith("pqseal://"):
            return path[len("pqseal://"):]
        return path

    def _path(self, path):
        if isinstance(path, (list, tuple)):
            return [self._path(p) for p in path]
        return self.target._strip_protocol(self._strip_protocol(path))

    def _zone_path(self, path: str) -> str:
        """``path`` as the zones name it: a local path, or the target's URL."""
        return path if self._local else self.target.unstrip_protocol(path)

    # ---- opening -------------------------------------------------------------------------

    def _open(self, path, mode="rb", block_size=None, autocommit=True, cache_options=None, **kwargs):
        path = self._path(path)
        name = _basename(path)
        if not is_parquet_name(name) and not (name in SUMMARY_FILES and "r" not in mode):
            return self.target.open(path, mode, block_size=block_size, autocommit=autocommit,
                                    cache_options=cache_options, **kwargs)
        if mode == "rb":
            return self._open_read(path, block_size=block_size, cache_options=cache_options, **kwargs)
        if mode not in ("wb", "xb"):
            raise ValueError(f"{path}: a Parquet file in a pqseal file system opens with 'rb', 'wb' or 'xb', "
                             f"not {mode!r}")
        encryption = self._encryption_for(path)
        if name in SUMMARY_FILES:
            raise ValueError(f"{path}: refusing to write {name} in encrypted storage: it would hold the schema and "
                             "the statistics of every column in plaintext (Dask: write_metadata_file=False)")
        if mode == "xb" and self.target.exists(path):
            raise FileExistsError(path)
        from .sink import open_sink

        if getattr(self.target, "auto_mkdir", False):
            self.target.makedirs(self.target._parent(path), exist_ok=True)
        if self._local:
            return open_sink(path, encryption=encryption, kms=self.kms, overwrite=mode == "wb")
        out = _TargetFile(self.target, path, block_size=block_size, **kwargs)
        return _CommittingSink(open_sink(out, encryption=encryption, kms=self.kms), out)

    def _open_read(self, path: str, **kwargs):
        """The plaintext view of a PME file; the target's file of a plaintext one (each
        shareable by threads: :class:`_SharedFile`)."""
        from .view import open_view

        if self._local:
            if not self._encrypted(path):
                return _SharedFile(self.target.open(path, "rb", **kwargs))
            return _SharedFile(open_view(path, decryption=self.decryption, kms=self.kms))
        f = self.target.open(path, "rb", **kwargs)
        try:
            if not self._encrypted(f):
                return _SharedFile(f)
            return _SharedFile(open_view(f, decryption=self.decryption, kms=self.kms, close_source=True))
        except BaseException:
            f.close()
            raise

    def _encryption_for(self, path: str):
        """The ``encryption`` option, else the policy of the zone holding ``path``; no
        plaintext Parquet: neither is a ZoneError."""
        if self.encryption is not None:
            return self.encryption
        from .zones import ZoneError, encryption_config_for, policy_for

        where = self._zone_path(path)
        policy = policy_for(where, zones=self.zones)
        if policy is None:
            raise ZoneError(f"{where} lies in no encryption zone and the pqseal file system has no encryption "
                            "option: refusing to write a plaintext Parquet file (create a zone with 'pqseal zone "
                            "create' or pass storage_options={'pqseal': {'encryption': EncryptionConfig(...)}})")
        return encryption_config_for(policy, where)

    @staticmethod
    def _encrypted(src) -> bool:
        """True for a PME file (a local path or a target's file): encrypted footer, or
        plaintext footer with an encryption algorithm. False for a plaintext Parquet
        file and for anything that is no Parquet file (its reader reports that)."""
        from ..format.source import FileRanges, Source

        try:
            with Source(src if isinstance(src, str) else FileRanges(src)) as s:
                return s.crypto is not None
        except MalformedFile:
            return False

    # ---- sizes ---------------------------------------------------------------------------

    def _plain(self, entry: dict) -> dict:
        """``entry`` (an info dict of the target) with a PME file's plaintext view size."""
        if entry.get("type") != "file" or not is_parquet_name(entry.get("name", "")):
            return entry
        size = self._view_size(entry)
        if size is None:
            return entry
        return {**entry, "size": size, "stored_size": entry.get("size"), "encrypted": True}

    def _view_size(self, entry: dict) -> int | None:
        """The plaintext view's size of the PME file ``entry`` names (None: not PME),
        cached per file version. Without the keys to read the footer, and for a file that
        is damaged (a tampered footer, say) or cannot be read, None: the stored size
        stands, so a listing never fails for one file; opening it reports why."""
        name = entry["name"]
        version = (entry.get("size"),) + tuple(_stamp(entry.get(k)) for k in _VERSION_KEYS)
        with self._sizes_lock:
            hit = self._sizes.get(name)
            if hit is not None and hit[0] == version:
                self._sizes.move_to_end(name)
                return hit[1]
        from .view import view_size

        try:
            with contextlib.ExitStack() as stack:
                src = name if self._local else stack.enter_context(self.target.open(name, "rb"))
                size = view_size(src, decryption=self.decryption, kms=self.kms) if self._encrypted(src) else None
        except (PqsealError, OSError):
            return None
        with self._sizes_lock:
            self._sizes[name] = (version, size)
            self._sizes.move_to_end(name)
            while len(self._sizes) > _SIZE_CACHE_ENTRIES:
                self._sizes.popitem(last=False)
        return size

    def info(self, path, **kwargs):
        return self._plain(self.target.info(self._path(path), **kwargs))

    def ls(self, path, detail=True, **kwargs):
        out = self.target.ls(self._path(path), detail=detail, **kwargs)
        return [self._plain(e) for e in out] if detail else out

    def find(self, path, maxdepth=None, withdirs=False, detail=False, **kwargs):
        out = self.target.find(self._path(path), maxdepth=maxdepth, withdirs=withdirs, detail=detail, **kwargs)
        return {k: self._plain(e) for k, e in out.items()} if detail else out

    def glob(self, path, maxdepth=None, **kwargs):
        out = self.target.glob(self._path(path), maxdepth=maxdepth, **kwargs)
        return {k: self._plain(e) for k, e in out.items()} if isinstance(out, dict) else out

    def walk(self, path, maxdepth=None, topdown=True, on_error="omit", **kwargs):
        for root, dirs, files in self.target.walk(self._path(path), maxdepth=maxdepth, topdown=topdown,
                                                  on_error=on_error, **kwargs):
            if isinstance(files, dict):
                files = {k: self._plain(e) for k, e in files.items()}
            yield root, dirs, files

    # ---- moving files --------------------------------------------------------------------

    def _check_move(self, path1, path2) -> None:
        from .zones import check_rename

        if isinstance(path1, (list, tuple)) and isinstance(path2, (list, tuple)):
            pairs = list(zip(path1, path2))
        elif isinstance(path1, (list, tuple)):     # files into the directory path2
            pairs = [(a, f"{path2.rstrip('/')}/{_basename(a)}") for a in path1]
        else:
            pairs = [(path1, path2)]
        for a, b in pairs:
            check_rename(self._zone_path(self._path(a)), self._zone_path(self._path(b)), zones=self.zones)

    def mv(self, path1, path2, recursive=False, maxdepth=None, **kwargs):
        """Move within the target; refused across encryption zones (ZoneError)."""
        self._check_move(path1, path2)
        return self.target.mv(self._path(path1), self._path(path2), recursive=recursive, maxdepth=maxdepth,
                              **kwargs)

    def cp_file(self, path1, path2, **kwargs):
        """Copy the stored bytes within the target; refused across encryption zones:
        the copy would keep the source's encryption (ZoneError)."""
        self._check_move(path1, path2)
        return self.target.cp_file(self._path(path1), self._path(path2), **kwargs)

    # ---- passed through to the target ----------------------------------------------------

    def mkdir(self, path, create_parents=True, **kwargs):
        return self.target.mkdir(self._path(path), create_parents=create_parents, **kwargs)

    def makedirs(self, path, exist_ok=False):
        return self.target.makedirs(self._path(path), exist_ok=exist_ok)

    def rmdir(self, path):
        return self.target.rmdir(self._path(path))

    def rm_file(self, path):
        return self.target.rm_file(self._path(path))

    def rm(self, path, recursive=False, maxdepth=None):
        return self.target.rm(self._path(path), recursive=recursive, maxdepth=maxdepth)

    def exists(self, path, **kwargs):
        return self.target.exists(self._path(path), **kwargs)

    def isdir(self, path):
        return self.target.isdir(self._path(path))

    def isfile(self, path):
        return self.target.isfile(self._path(path))

    def touch(self, path, truncate=True, **kwargs):
        return self.target.touch(self._path(path), truncate=truncate, **kwargs)

    def created(self, path):
        return self.target.created(self._path(path))

    def modified(self, path):
        return self.target.modified(self._path(path))

    def invalidate_cache(self, path=None):
        self.target.invalidate_cache(None if path is None else self._path(path))


class _TargetFile(io.RawIOBase):
    """The target file a sink seals into, opened at the first write, so nothing appears
    in the target unless sealing starts. An object store (an async fsspec file system:
    s3fs, gcsfs, adlfs) uploads a file when it is closed and drops the upload on
    ``discard()``, so the file is written at ``path``. Other targets (memory, HDFS, SFTP)
    write where they are told, so the file is written under a temporary name beside
    ``path`` and moved over it on :meth:`commit`: a failure leaves no partial file and
    an existing file as it was."""

    def __init__(self, fs: AbstractFileSystem, path: str, **kwargs):
        super().__init__()
        self.fs = fs
        self.path = path
        self._kwargs = kwargs
        self._f: io.IOBase | None = None
        if isinstance(fs, AsyncFileSystem):
            self._where = path
        else:
            head, _, name = path.rpartition("/")
            self._where = f"{head}/{temp_name(name)}" if head else temp_name(name)

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        f = self._f
        if f is None:
            f = self._f = self.fs.open(self._where, "wb", **self._kwargs)
        f.write(data)
        return len(memoryview(data).cast("B"))

    def flush(self) -> None:
        if self._f is not None:
            self._f.flush()

    def commit(self) -> None:
        """Close the target file: the target commits it (and it is moved into place)."""
        f, self._f = self._f, None
        if f is None:       # nothing was written: an empty sealed file is no Parquet file
            raise MalformedFile(f"{self.path}: the sink wrote nothing")
        try:
            f.close()
            if self._where != self.path:
                self.fs.mv(self._where, self.path)
        except BaseException:
            self._remove_temp()
            raise
        super().close()

    def discard(self) -> None:
        """Drop what was written: the temporary file, or the target's own discard (S3:
        abort the upload), else remove the partial file."""
        f, self._f = self._f, None
        super().close()
        if f is None:
            return
        if self._where != self.path:
            f.close()
            self._remove_temp()
            return
        drop = getattr(f, "discard", None)
        if drop is not None:
            drop()
        else:
            f.close()
            self.fs.rm_file(self.path)

    def _remove_temp(self) -> None:
        if self._where != self.path:
            with contextlib.suppress(FileNotFoundError):
                self.fs.rm_file(self._where)


class _CommittingSink(io.RawIOBase):
    """The sealing sink over a target file: ``close()`` seals into it and commits it;
    a failure (or an exception inside ``with``) discards it."""

    def __init__(self, sink, out: _TargetFile):
        super().__init__()
        self._sink = sink
        self._out = out

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        return self._sink.write(data)

    def tell(self) -> int:
        return self._sink.tell()

    def flush(self) -> None:
        if not self._sink.closed:     # io's close() flushes after the sink sealed
            self._sink.flush()

    def close(self) -> None:
        if self.closed:
            return
        try:
            self._sink.close()
            self._out.commit()
        except BaseException:
            self._out.discard()
            raise
        finally:
            super().close()

    def abort(self) -> None:
        """Discard what was written: nothing reaches the target."""
        if self.closed:
            return
        self._sink.abort()
        self._out.discard()
        super().close()

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.abort()
        else:
            self.close()

    def __repr__(self) -> str:
        return f"<pqseal sink into {self._out.fs.unstrip_protocol(self._out.path)}>"




class _SharedFile(io.RawIOBase):
    """A Parquet file opened for reading (the plaintext view of a PME file, or the
    target's file of a plaintext one) that threads sharing it may each ``seek`` and then
    ``read``. DuckDB reads a registered file system's file from several threads at once,
    each a ``seek`` followed by a ``read`` on the one handle, holding the GIL only from C++:
    Python code in between (and the view, which releases the GIL while it decrypts) lets
    another thread's ``seek`` land before the first ``read``, which then returns the bytes
    at the other position. Here a ``seek`` is remembered per thread until that thread
    reads, and the read is positional (the view's ``pread``, or seek and read under a
    lock); a ``read`` without a ``seek`` of its own continues at the file's position, as
    in any file. Other attributes are the wrapped file's."""

    def __init__(self, f):
        super().__init__()
        self._f = f
        self._lock = threading.Lock()
        self._io_lock = threading.Lock()
        self._pos = 0
        self._seeks: dict[int, int] = {}     # thread id -> position of its pending seek
        self._size = f.size if isinstance(getattr(f, "size", None), int) else f.seek(0, io.SEEK_END)
        _exit.track(self)

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    @property
    def size(self) -> int:
        return self._size

    def __getattr__(self, name):        # the wrapped file's own: decrypted_bytes, path, fs, ...
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self._f, name)

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        self._check_open()
        offset = operator.index(offset)
        with self._lock:
            base = {io.SEEK_SET: 0, io.SEEK_CUR: self._current(), io.SEEK_END: self._size}.get(whence)
            if base is None:
                raise ValueError(f"invalid whence ({whence})")
            if base + offset < 0:
                raise ValueError(f"negative seek position {base + offset}")
            self._pos = self._seeks[threading.get_ident()] = base + offset
            return self._pos

    def tell(self) -> int:
        self._check_open()
        with self._lock:
            return self._current()

    def _current(self) -> int:
        return self._seeks.get(threading.get_ident(), self._pos)

    def _check_open(self) -> None:
        if self.closed:
            raise ValueError("I/O operation on a closed file")

    def pread(self, offset: int, length: int):
        """Bytes [offset, offset + length) (fewer at the end); the position is unchanged."""
        pread = getattr(self._f, "pread", None)
        if pread is not None:
            return pread(offset, length)
        with self._io_lock:
            self._f.seek(offset)
            return self._f.read(length)

    def read_buffer(self, size: int = -1):
        """The next ``size`` bytes as a buffer (pyarrow's PythonFile reads through this
        without a copy)."""
        return self.pread(*self._claim(size))

    def read(self, size: int = -1) -> bytes:
        pos, n = self._claim(size)
        pread_bytes = getattr(self._f, "pread_bytes", None)     # the view's: no copy of a large range
        return pread_bytes(pos, n) if pread_bytes is not None else bytes(self.pread(pos, n))

    def _claim(self, size: int) -> tuple[int, int]:
        """(position, length) of this thread's next read of ``size`` bytes, the file's
        position moved past them."""
        self._check_open()
        with self._lock:
            pos = self._seeks.pop(threading.get_ident(), None)
            if pos is None:       # no seek of its own: the file's position; others' seeks are stale
                pos = self._pos
                self._seeks.clear()
            n = max(0, min(self._size - pos, self._size if size is None or size < 0 else size))
            self._pos = pos + n
        return pos, n

    def readall(self) -> bytes:
        return self.read(-1)

    def readinto(self, b) -> int:
        out = memoryview(b).cast("B")
        data = self.read_buffer(len(out))
        out[:len(data)] = data
        return len(data)

    def close(self) -> None:
        if not self.closed:
            try:
                self._f.close()
            finally:
                super().close()

    def __repr__(self) -> str:
        return f"<pqseal reader of {self._f!r}>"
