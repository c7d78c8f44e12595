"""``pqseal.ParquetWriter``: pyarrow's Parquet writer, each row group sealed as pyarrow
finishes it.

pyarrow encodes every row group into a one-row-group Parquet file in memory (same
schema and writer options); a worker thread parses it and seals its column chunks, bloom
filters and page indexes into the output as the next row group (renumbered: the AADs
use the output's ordinals), while pyarrow encodes the next one (both release the GIL).
On close the footer of all row groups is written, the file flushed and renamed into
place. At most two encoded row groups exist at a time (one being encoded, one being
sealed), and nothing plaintext reaches the disk.

``partition_cols`` (or :func:`write_to_dataset`) routes rows to one sealed file per
partition, in pyarrow's hive layout ``col=value/``.
"""

from __future__ import annotations

import os
import queue
import threading
import time
import urllib.parse
import uuid
import warnings

from .. import _cancel
from .._io import create_temp, plan_output, remove_stale, unlink_quietly
from ..format.engine import RowGroupCopier, Stats, _v2_warning, publish
from ..format.sink import Sink
from ..format.source import Source

# pyarrow's row-group sizes (rows): the default when none is given, and the cap
_DEFAULT_ROWS = 1024 * 1024
_MAX_ROWS = 64 * 1024 * 1024

_REFUSED = {
    "encryption_properties": "pqseal encrypts the file itself: pass encryption= (an EncryptionConfig or "
                             "EncryptionProperties), not pyarrow's encryption_properties=",
    "filesystem": "pqseal.ParquetWriter writes local paths and binary file objects; open the file yourself (or use "
                  "the pqseal fsspec file system) instead of passing filesystem=",
}


def _is_path(obj) -> bool:
    return isinstance(obj, (str, os.PathLike))


def _properties(where, encryption, kms, kms_connection_config, partition=None):
    """EncryptionProperties for the output ``where``: fresh data keys for a config (its
    master key id templates resolved from ``partition``, the file's partition values), the
    zone's policy (templates resolved from the path in the zone) when ``encryption`` is None."""
    from ..api import encryption_properties
    from ..format.properties import EncryptionProperties

    if encryption is None:
        if not _is_path(where):
            raise ValueError("pqseal.ParquetWriter: no encryption= given; a file object lies in no encryption zone, "
                             "so pass encryption= (an EncryptionConfig or EncryptionProperties)")
        from .zones import encryption_config_for, policy_for

        policy = policy_for(os.path.abspath(os.fspath(where)))
        if policy is None:
            raise ValueError(f"{os.fspath(where)}: no encryption= given and no encryption zone holds this path; "
                             "pass encryption= (an EncryptionConfig or EncryptionProperties) or create a zone "
                             "(pqseal zone create)")
        encryption = encryption_config_for(policy, where)
        if kms is None:
            kms = policy.kms
    elif partition is not None and not isinstance(encryption, EncryptionProperties):
        from ..arrow import encryption_config
        from ..keys.template import resolve

        encryption = resolve(encryption_config(encryption), partition, f" for {os.fspath(where)}")
    return encryption_properties(encryption, where, kms=kms, kms_connection_config=kms_connection_config)


# Encoding buffers up to this size are kept for the next writer of the process: their
# memory is then touched once per process, not once per file (partitioned datasets, ETL
# loops). Like format/_buffers' scratch buffers they hold the last row groups' plaintext
# until reused, in memory only.
_KEEP_MAX = 256 << 20
_kept: list = []
_kept_lock = threading.Lock()


def _new_buffer(size: int):
    """A mutable pyarrow buffer of at least ``size`` bytes: anonymous memory asking for
    transparent huge pages (a 100 MB row group is then a few hundred page faults, not
    25,000), or a kept buffer of an earlier writer (no page faults at all)."""
    import mmap

    import pyarrow as pa

    with _kept_lock:
        for i in reversed(range(len(_kept))):   # the smallest that fits
            if _kept[i].size >= size:
                return _kept.pop(i)
    m = mmap.mmap(-1, size)
    if hasattr(mmap, "MADV_HUGEPAGE"):
        m.madvise(mmap.MADV_HUGEPAGE)
    return pa.py_buffer(m)


def _keep_buffers(bufs) -> None:
    """Keep the two largest buffers (each at most _KEEP_MAX) for the next writer."""
    with _kept_lock:
        _kept.extend(b for b in bufs if b is not None and b.size <= _KEEP_MAX)
        _kept.sort(key=lambda b: b.size, reverse=True)
        del _kept[2:]


class _Sealer:
    """The worker thread's side: seals the in-memory row-group files handed to it, in
    order, into the output. Holds no reference to the writer (which may then be
    collected and abort).

    Two output buffers go round between the encoding thread and this one (one being
    encoded, one being sealed): reused, so their memory is touched once per file, not
    once per row group."""

    def __init__(self, copier: RowGroupCopier):
        self.copier = copier
        self.error: BaseException | None = None
        self.free: queue.SimpleQueue = queue.SimpleQueue()   # buffers not in use (None: not allocated yet)
        self.free.put(None)
        self.free.put(None)
        self.queue: queue.SimpleQueue = queue.SimpleQueue()   # (buffer, bytes used) to seal; None: stop
        self.thread = threading.Thread(target=self.run, name="pqseal-writer", daemon=True)
        self.thread.start()

    def run(self) -> None:
        while True:
            item = self.queue.get()
            if item is None:
                return
            buf, used = item
            try:
                if self.error is None:
                    # the row group's bytes with their module framing (about 64 bytes a page)
                    self.copier.sink.reserve(used + used // 64 + (1 << 20))
                    with Source(buf.slice(0, used)) as s:
                        for rg in range(s.num_row_groups):
                            self.copier.add(s, rg)
            except BaseException as exc:   # raised in the writer's thread at its next call
                self.error = exc
            finally:
                self.free.put(buf)
                del buf, item

    def check(self) -> None:
        if self.error is not None:
            raise self.error

    def stop(self) -> None:
        """Wait until everything handed over is sealed (or failed); keep the buffers."""
        if self.thread.is_alive():
            self.queue.put(None)
            self.thread.join()
            _keep_buffers([self.free.get(), self.free.get()])


class _SealedFile:
    """One output file: a temporary file beside ``where`` (or the file object
    ``where``), its Sink, and the sealing thread."""

    def __init__(self, where, schema, properties, *, options: dict, overwrite: bool, backend, fsync: bool):
        import pyarrow as pa
        import pyarrow.parquet as pq

        from ..api import _material_store

        self.schema = schema
        self.options = options
        self.fsync = fsync
        self.t0 = time.perf_counter()
        # an empty file of the same schema and options: checks them now, and is the
        # template of the footer (schema, key-value metadata, created_by...)
        empty = pa.BufferOutputStream()
        pq.ParquetWriter(empty, schema, **options).close()
        with Source(empty.getvalue()) as s:
            self.template = s.file_metadata()
            paths = s.paths
        self.where = where
        self.out = None
        self.tmp: str | None = None
        self.file = None
        self.companion = None
        self.properties = properties
        self.overwrite = overwrite
        if _is_path(where):
            self.out = plan_output(where, overwrite=overwrite)
            remove_stale(self.out.directory)
            self.companion = _material_store(where, properties)
            fd, self.tmp = create_temp(self.out.directory, self.out.name, 0o666)
            self.file = os.fdopen(fd, "wb")
            target, name = self.file.fileno(), self.out.path
        else:
            if not hasattr(where, "write"):
                raise TypeError(f"where must be a path or a writable binary file object, not {type(where).__name__}")
            _material_store(where, properties)   # refuses external key material without a path
            target, name = where, str(getattr(where, "name", None) or "<file object>")
        try:
            self.sink = Sink(target, paths, properties, backend=backend, name=name)
            self.copier = RowGroupCopier(self.sink)
            self.sealer = _Sealer(self.copier)
        except BaseException:
            self._discard()
            raise
        self.kv_extra: dict[str, str] = {}
        self.done = False   # committed or aborted

    def _encode(self, table, row_group_size, buf=None):
        """``table`` as a plaintext Parquet file in memory, written by pyarrow into
        ``buf`` (a mutable pyarrow buffer, replaced by a larger one when too small, or None
        for a fresh one): returns (buffer, bytes used)."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        need = int(table.nbytes * 1.05) + (1 << 20)
        while True:
            if buf is None or buf.size < need:
                buf = _new_buffer(need)
            out = pa.FixedSizeBufferWriter(buf)
            w = pq.ParquetWriter(out, self.schema, **self.options)
            try:
                w.write_table(table, row_group_size=row_group_size)
                w.close()
                return buf, out.tell()
            except OSError as exc:
                w.is_open = False   # nothing more to close
                if "out of bounds" not in str(exc):
                    raise
                need = 2 * buf.size   # the encoding is larger than the table in Arrow: rare

    def write_table(self, table, row_group_size) -> None:
        n = table.num_rows
        size = _DEFAULT_ROWS if row_group_size is None or row_group_size == -1 else int(row_group_size)
        if size == 0:
            raise ValueError("Row group size cannot be 0")
        size = min(size, _MAX_ROWS, max(n, 1))
        for start in range(0, max(n, 1), size):
            self.sealer.check()
            _cancel.check()
            piece = table.slice(start, size) if n > size else table
            buf = self.sealer.free.get()   # waits while two row groups are in flight
            try:
                buf, used = self._encode(piece, size, buf)
            except BaseException:
                self.sealer.free.put(buf)
                raise
            self.sealer.queue.put((buf, used))
            del buf, piece

    def close(self):
        """Seal what is left, write the footer and commit; returns (plaintext
        FileMetaData dict, Stats)."""
        try:
            self.sealer.stop()
            self.sealer.check()
            self.done = True
            template = self.template
            if self.kv_extra:
                template = template.copy()
                kv = [e for e in template.get("key_value_metadata") or []
                      if (e.get("key") or b"").decode("utf-8", "replace") not in self.kv_extra]
                kv += [{"key": k.encode(), "value": v.encode()} for k, v in self.kv_extra.items()]
                template["key_value_metadata"] = kv
            plain = self.copier.finish(template)
            stats = Stats("<table>", self.out.path if self.out is not None else self.sink.name,
                          bytes_out=self.sink.pos, row_groups=len(self.copier.row_groups),
                          columns=len(self.sink.paths), pages=self.copier.pages,
                          max_dek_modules=self.sink.max_key_invocations())
            if self.sink.saw_v2:
                stats.warnings.append(_v2_warning(os.path.basename(stats.dst or ""), self.properties))
            self.sink.truncate()
            self.sink.close()
            if self.file is not None:
                assert self.out is not None and self.tmp is not None
                if self.out.mode is not None:
                    os.fchmod(self.file.fileno(), self.out.mode)
                if self.fsync:
                    os.fsync(self.file.fileno())
                self.file.close()
                publish(self.tmp, self.out.path, self.out.directory, exclusive=not self.overwrite,
                        companion=self.companion, file_unique=self.sink.aad_file_unique)
                self.tmp = None
        except BaseException:
            self.done = False
            self.abort()
            raise
        stats.seconds = time.perf_counter() - self.t0
        if self.properties.key_usage is not None:   # counts the committed file for its master key versions
            self.properties.key_usage.sealed(stats.bytes_out, stats.max_dek_modules)
        return plain, stats

    def abort(self) -> None:
        """Stop, and leave no output (a file object keeps what was written to it)."""
        if self.done:
            return
        self.done = True
        self.sealer.stop()
        self.sink.close()
        self._discard()

    def _discard(self) -> None:
        if self.file is not None and not self.file.closed:
            self.file.close()
        if self.tmp is not None:
            unlink_quietly(self.tmp)
            self.tmp = None
        if self.companion is not None:
            self.companion.abort()
            self.companion = None


def _file_metadata(plain: dict):
    """A pyarrow FileMetaData of the plaintext footer (what pyarrow's writer reports)."""
    import pyarrow as pa
    from pyarrow._parquet import _reconstruct_filemetadata

    from ..format import thrift

    return _reconstruct_filemetadata(pa.py_buffer(thrift.encode("FileMetaData", plain)))


class ParquetWriter:
    """The interface of :class:`pyarrow.parquet.ParquetWriter`, writing a PME file.

    ``where``: a path (written to a temporary file beside it and renamed into place on
    :meth:`close`; an existing file is replaced only with ``overwrite=True``) or a
    writable binary file object. ``encryption``: an :class:`~pqseal.config.EncryptionConfig`
    (or pyarrow's ``EncryptionConfiguration``) whose fresh data keys ``kms`` wraps
    (default: the local keystore), or explicit :class:`~pqseal.EncryptionProperties`;
    None: the policy of the encryption zone holding ``where``. Other keyword arguments
    are pyarrow's writer options (``compression``, ``write_page_index``,
    ``bloom_filter_options``...); bloom filters come out encrypted.

    ``partition_cols``: ``where`` is a dataset root; rows go to one sealed file per
    partition (``root/col=value/.../<basename_template with {i}>``), each with fresh data
    keys (or its own zone's policy). Master key ids of ``encryption`` may be templates
    naming partition columns (``footer_key="tenant-{customer_id}"``): each partition's
    file is wrapped under the ids resolved from its values (:mod:`pqseal.keys.template`).

    Leaving a ``with`` block by an exception (or dropping the writer unclosed) leaves no
    output file. Memory: about two encoded row groups per open file."""

    def __init__(self, where, schema, encryption=None, *, kms=None, kms_connection_config=None,
                 overwrite: bool = False, partition_cols=None, basename_template: str | None = None,
                 backend: str | None = None, fsync: bool = True, **options):
        self.is_open = False
        for opt, why in _REFUSED.items():
            if options.get(opt) is not None:
                raise ValueError(why)
            options.pop(opt, None)
        self._collector = options.pop("metadata_collector", None)
        self.where = where
        self.schema = schema
        self.metadata = None
        self.stats: Stats | None = None
        self.files: list[str] = []   # the output files (after close)
        self._partition_cols = list(partition_cols or [])
        self._parts: _Partitions | None = None
        self._file: _SealedFile | None = None
        args = dict(encryption=encryption, kms=kms, kms_connection_config=kms_connection_config,
                    overwrite=overwrite, backend=backend, fsync=fsync, options=options)
        if self._partition_cols:
            if not _is_path(where):
                raise TypeError("partition_cols needs a dataset root directory path as where")
            missing = [c for c in self._partition_cols if schema.get_field_index(c) < 0]
            if missing:
                raise ValueError(f"partition columns not in the schema: {', '.join(missing)}")
            _check_placeholders(encryption, self._partition_cols)
            self._parts = _Partitions(os.fspath(where), schema, self._partition_cols,
                                      basename_template or uuid.uuid4().hex + "-{i}.parquet", args)
        else:
            self._file = _open_file(where, schema, **args)
        self.is_open = True

    def write(self, table_or_batch, row_group_size=None) -> None:
        import pyarrow as pa

        if isinstance(table_or_batch, pa.RecordBatch):
            self.write_batch(table_or_batch, row_group_size)
        elif isinstance(table_or_batch, pa.Table):
            self.write_table(table_or_batch, row_group_size)
        else:
            raise TypeError(type(table_or_batch))

    def write_batch(self, batch, row_group_size=None) -> None:
        import pyarrow as pa

        self.write_table(pa.Table.from_batches([batch], batch.schema), row_group_size)

    def write_table(self, table, row_group_size=None) -> None:
        if not self.is_open:
            raise ValueError("the writer is closed")
        if not table.schema.equals(self.schema, check_metadata=False):
            raise ValueError("Table schema does not match schema used to create file: \n"
                             f"table:\n{table.schema!s} vs. \nfile:\n{self.schema!s}")
        try:
            if self._parts is not None:
                self._parts.write_table(table, row_group_size)
            elif self._file is not None:
                self._file.write_table(table, row_group_size)
        except BaseException:
            self._abort()
            raise

    def add_key_value_metadata(self, key_value_metadata: dict) -> None:
        if not self.is_open:
            raise ValueError("the writer is closed")
        kv = {(k.decode() if isinstance(k, bytes) else str(k)): (v.decode() if isinstance(v, bytes) else str(v))
              for k, v in key_value_metadata.items()}
        for f in self._all_files():
            f.kv_extra.update(kv)
        if self._parts is not None:
            self._parts.kv_extra.update(kv)

    def close(self) -> None:
        if not self.is_open:
            return
        self.is_open = False
        files = self._all_files()
        plains, stats = [], []
        try:
            for f in files:
                p, st = f.close()
                plains.append(p)
                stats.append(st)
        except BaseException:
            for f in files:
                f.abort()
            if self._parts is not None:
                self._parts.remove_new_dirs()
            raise
        for st in stats:
            for msg in st.warnings:
                warnings.warn(msg, stacklevel=2)
        self.files = [st.dst for st in stats if st.dst is not None]
        if self._file is not None:
            self.stats = stats[0]
            self.metadata = _file_metadata(plains[0])
            if self._collector is not None:
                self._collector.append(self.metadata)
        elif self._collector is not None:
            for p, st in zip(plains, stats):
                md = _file_metadata(p)
                md.set_file_path(os.path.relpath(st.dst or "", os.fspath(self.where)))
                self._collector.append(md)

    def _all_files(self) -> list[_SealedFile]:
        if self._file is not None:
            return [self._file]
        return list(self._parts.files.values()) if self._parts is not None else []

    def _abort(self) -> None:
        if self.is_open:
            self.is_open = False
            for f in self._all_files():
                f.abort()
            if self._parts is not None:
                self._parts.remove_new_dirs()

    def __enter__(self) -> ParquetWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self._abort()
        else:
            self.close()

    def __del__(self):
        if getattr(self, "is_open", False):
            warnings.warn("pqseal.ParquetWriter dropped without close(): its output was discarded", ResourceWarning,
                          stacklevel=2)
            self._abort()


def _open_file(where, schema, *, encryption, kms, kms_connection_config, overwrite, backend, fsync, options,
               partition=None):
    props = _properties(where, encryption, kms, kms_connection_config, partition)
    return _SealedFile(where, schema, props, options=options, overwrite=overwrite, backend=backend, fsync=fsync)


def _check_placeholders(encryption, cols: list[str]) -> None:
    """Refuse (before any row is written) master key id templates naming a placeholder
    that is not a partition column."""
    from ..format.properties import EncryptionProperties
    from ..keys.template import UnknownPlaceholder, config_placeholders

    if encryption is None or isinstance(encryption, EncryptionProperties):
        return
    from ..arrow import encryption_config

    unknown = sorted(config_placeholders(encryption_config(encryption)) - set(cols))
    if unknown:
        raise UnknownPlaceholder(f"master key id template placeholder {{{unknown[0]}}} is not a partition column "
                                 f"(partition_cols: {', '.join(cols)})", name=unknown[0])


_NULL_PARTITION = "__HIVE_DEFAULT_PARTITION__"


def _segment(value) -> str:
    return _NULL_PARTITION if value is None else urllib.parse.quote(str(value), safe="")


class _Partitions:
    """Rows routed to one sealed file per partition (hive layout)."""

    def __init__(self, root: str, schema, cols: list[str], basename_template: str, args: dict):
        if "{i}" not in basename_template:
            raise ValueError("basename_template must contain '{i}'")
        self.root = root
        self.cols = cols
        self.file_schema = schema
        for c in cols:
            self.file_schema = self.file_schema.remove(self.file_schema.get_field_index(c))
        self.template = basename_template
        self.args = args
        self.files: dict[tuple, _SealedFile] = {}
        self.kv_extra: dict[str, str] = {}
        self.new_dirs: list[str] = []   # partition directories this writer created

    def _mkdir(self, d: str) -> None:
        """Create the partition directory ``d`` unless it exists (another writer, in this
        process or another, may create it at the same moment: then it is not ours)."""
        try:
            os.mkdir(d)
        except FileExistsError:
            if not os.path.isdir(d):
                raise
            return
        self.new_dirs.append(d)

    def remove_new_dirs(self) -> None:
        """Remove the partition directories this writer created, where they are empty."""
        for d in reversed(self.new_dirs):
            try:
                os.rmdir(d)
            except OSError:
                pass
        self.new_dirs = []

    def write_table(self, table, row_group_size) -> None:
        import pyarrow.compute as pc

        if table.num_rows == 0:
            return
        keys = table.select(self.cols).group_by(self.cols).aggregate([])
        data = table.drop_columns(self.cols)
        for key in keys.to_pylist():
            mask = None
            for c in self.cols:
                m = pc.is_null(table[c]) if key[c] is None else pc.equal(table[c], key[c])
                mask = m if mask is None else pc.and_(mask, m)
            part = data.filter(pc.fill_null(mask, False))
            k = tuple(key[c] for c in self.cols)
            f = self.files.get(k)
            if f is None:
                d = self.root
                if not os.path.isdir(d):
                    os.makedirs(d, exist_ok=True)
                    self.new_dirs.append(d)
                for c in self.cols:
                    d = os.path.join(d, f"{c}={_segment(key[c])}")
                    self._mkdir(d)
                path = os.path.join(d, self.template.replace("{i}", str(len(self.files))))
                f = self.files[k] = _open_file(path, self.file_schema, **self.args,
                                               partition={c: key[c] for c in self.cols})
                f.kv_extra.update(self.kv_extra)
            f.write_table(part, row_group_size)


def write_to_dataset(table, root_path, encryption=None, *, partition_cols=None, kms=None,
                     basename_template: str | None = None, existing_data_behavior: str = "overwrite_or_ignore",
                     **options) -> list[str]:
    """Like :func:`pyarrow.parquet.write_to_dataset`: ``table`` written under
    ``root_path`` as sealed files, one per partition (hive layout ``col=value/``) with
    fresh data keys each (``encryption`` None: each file's zone policy). Returns the
    paths written. ``existing_data_behavior``: "overwrite_or_ignore" (new files beside
    existing ones; a file of the same name is replaced only with ``overwrite=True``) or
    "error" (refuse a root that holds files); pqseal deletes no files, so
    "delete_matching" is refused."""
    root = os.fspath(root_path)
    if existing_data_behavior == "delete_matching":
        raise ValueError("existing_data_behavior='delete_matching' is not supported: pqseal never deletes files; "
                         "remove them yourself")
    if existing_data_behavior not in ("overwrite_or_ignore", "error"):
        raise ValueError(f"existing_data_behavior must be 'overwrite_or_ignore' or 'error', not "
                         f"{existing_data_behavior!r}")
    if existing_data_behavior == "error" and os.path.isdir(root) and any(
            files for _, _, files in os.walk(root)):
        raise FileExistsError(f"{root} already holds files (existing_data_behavior='error')")
    row_group_size = options.pop("row_group_size", None)
    os.makedirs(root, exist_ok=True)
    template = basename_template or uuid.uuid4().hex + "-{i}.parquet"
    if partition_cols:
        w = ParquetWriter(root, table.schema, encryption, kms=kms, partition_cols=partition_cols,
                          basename_template=template, **options)
    else:
        w = ParquetWriter(os.path.join(root, template.replace("{i}", "0")), table.schema, encryption, kms=kms,
                          **options)
    with w:
        w.write_table(table, row_group_size)
    return w.files
