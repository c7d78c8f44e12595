"""The file engine: one pass from a :class:`Source` to a :class:`Sink`.

seal = plaintext source → encrypting sink; unseal = encrypted source → plaintext sink;
re-key = encrypted source → encrypting sink (plaintext never touches the disk);
verify = encrypted source read whole, nothing written.

Memory, per file in flight (one thread): the source's read buffer: for a plaintext
source, one part of a column chunk (8 MiB of whole pages, or its largest page when
larger; a chunk of at most 16 MiB is read whole), for an encrypted source the largest
column chunk as stored (C bytes) and its decrypted pages (about C); for an encrypted
output the ciphertext of one group of pages (8 MiB, or the largest page when larger);
plus the footer and the page indexes. So a seal holds about 16 MiB (P + 8 MiB with pages
of P > 8 MiB), an unseal about 2C, a re-key about 2C + 8 MiB, whatever the file's size;
the buffers (those up to 64 MiB) are kept per thread for its next file. Measured (GNU
time): the CLI sealing a 632 MB pyarrow file whose largest chunk is 42 MiB peaked at
72 MiB RSS (98 MiB when chunks were read whole), about 45 MiB of which is the
interpreter and its imports.

Writes go through the page cache. With ``fsync`` (the default), writeback of the output
is started every 8 MiB as it is written, so the closing fsync waits only for the last
few MiB; the output's blocks are reserved up front from a low estimate of its size (no
truncate needed to give unused ones back when sealing).
"""

from __future__ import annotations

import dataclasses
import os
import time
from dataclasses import dataclass, field
from typing import Protocol

from .. import _cancel
from .._io import OutputPlan, create_temp, fsync_dir, plan_output, remove_stale, replace, unlink_quietly
from ..crypto import ModuleType
from ..errors import (InvalidOrdinal, InvalidTag, KeyAccessDenied, KeyNotFound, KmsError, MalformedFile,
                      MalformedKeyMaterial, MalformedModule, PqsealError, UnsupportedFeature)
from .layout import dotted
from .properties import DecryptionProperties, EncryptionProperties
from .sink import ChunkRecord, Sink
from .structs import ColumnChunk, FileMetaData, RowGroup
from .source import Source, chunk_start


class AlreadyEncrypted(PqsealError, ValueError):
    """The input is already a PME file (use re-key, or decrypt first)."""


class NotEncrypted(PqsealError, ValueError):
    """The input is a plaintext Parquet file where an encrypted one was expected."""


@dataclass
class Stats:
    src: str
    dst: str | None
    bytes_in: int = 0
    bytes_out: int = 0
    row_groups: int = 0
    columns: int = 0
    pages: int = 0
    max_dek_modules: int = 0     # the most modules encrypted under one of the output's keys
    seconds: float = 0.0
    warnings: list[str] = field(default_factory=list)


def _v2_warning(name: str, encryption: EncryptionProperties) -> str:
    """The two DataPageV2 framings in use (parquet-java's vs the spec's/Arrow's) cannot
    read each other's files: say which readers can open this one."""
    return (f"{name} has DataPageV2 pages, sealed with the {encryption.v2_framing} framing: "
            + ("readable by Arrow/pyarrow and arrow-rs, NOT by parquet-java/Spark" if encryption.v2_framing == "arrow"
               else "readable by parquet-java/Spark, NOT by Arrow/pyarrow")
            + "; V1 pages interoperate everywhere")


def _relocate(value, old_start, old_end, new_start, new_end):
    if value == old_start:
        return new_start
    if value == old_end:
        return new_end
    return value


class Companion(Protocol):
    """A file committed together with the data file (external key material): staged
    once the data is on disk, committed right after the data file's rename, aborted
    when the data file is not committed."""

    def stage(self, file_unique: bytes) -> None: ...

    def commit(self) -> None: ...

    def abort(self) -> None: ...


def publish(tmp: str, path: str, directory: str, *, exclusive: bool, companion: Companion | None = None,
            file_unique: bytes | None = None) -> None:
    """Rename the finished temporary file ``tmp`` to ``path`` (``exclusive``: never over
    an existing file) with its companion, staged before the rename and committed after
    it, and flush the directory. On a failure before the rename the caller removes
    ``tmp`` and aborts the companion."""
    if companion is not None:
        companion.stage(file_unique or b"")
    replace(tmp, path, exclusive=exclusive)
    if companion is not None:
        companion.commit()
    fsync_dir(directory)


def _check_expect(s: Source, expect: str | None) -> None:
    if expect == "plaintext" and s.crypto is not None:
        raise AlreadyEncrypted(f"{s.name} is already encrypted ({s.crypto.algorithm}); decrypt or re-key it")
    if expect == "encrypted" and s.crypto is None:
        raise NotEncrypted(f"{s.name} is not an encrypted Parquet file")


def _size_hint(s: Source, encryption: EncryptionProperties | None) -> int:
    # A low estimate of the output's size: blocks reserved past its end must be released
    # with a truncate, which costs about as much as sealing a 1 MB file, while a low
    # estimate only means the rest is written without the reservation. Sealing adds
    # framing to every module (the input's size is low); unsealing removes it (at most
    # 1/32 of a file of typical pages).
    size = s.tail.file_size
    return size if encryption is not None else size - size // 32


def transform(src, dst, *, decryption: DecryptionProperties | None = None,
              encryption: EncryptionProperties | None = None, backend: str | None = None,
              in_place: bool = False, overwrite: bool = False, expect: str | None = None, fsync: bool = True,
              companion: Companion | None = None, allow_plaintext_columns: bool = False) -> Stats:
    """Rewrite ``src`` (a path or an in-memory buffer) into the file ``dst``.

    The output is written to a temporary file beside ``dst`` (its name carries this
    process's pid), flushed (``fsync``) and renamed into place; on any failure or
    cancellation it is removed and an existing ``dst`` is left as it was. An existing
    ``dst`` is replaced only with ``overwrite`` (or ``in_place`` when it is ``src``) and
    keeps its mode; new encrypted outputs follow the umask, new plaintext outputs are
    0600. ``expect``: "plaintext" (sealing: refuse PME input) or "encrypted". With
    ``encryption``, a column encrypted in ``src`` must stay encrypted (else
    :class:`WouldExposeColumn`) unless ``allow_plaintext_columns``."""
    t0 = time.perf_counter()
    out = plan_output(dst, overwrite=overwrite, src=src if isinstance(src, (str, os.PathLike)) else None,
                      in_place=in_place)
    remove_stale(out.directory)
    with Source(src, decryption, backend=backend, reuse_buffers=True) as s:
        _check_expect(s, expect)
        exposed = _exposed(s, encryption) if encryption is not None and not allow_plaintext_columns else []
        if exposed:
            raise WouldExposeColumn(f"{s.name}: column(s) {', '.join(exposed)} encrypted there would be written as "
                                    "plaintext; give the output keys for them (or decrypt the file)")
        stats = Stats(s.path, os.fspath(dst), bytes_in=s.tail.file_size, row_groups=s.num_row_groups,
                      columns=len(s.paths))
        fd, tmp = create_temp(out.directory, out.name, 0o666 if encryption is not None else 0o600)
        try:
            with os.fdopen(fd, "wb") as f:
                sink = Sink(f.fileno(), s.paths, encryption, backend=backend, name=out.path,
                            size_hint=_size_hint(s, encryption), writeback=fsync)
                try:
                    stats.pages = _copy(s, sink)
                    stats.max_dek_modules = sink.max_key_invocations()
                    sink.truncate()
                    if sink.saw_v2 and encryption is not None:
                        stats.warnings.append(_v2_warning(s.name, encryption))
                finally:
                    sink.close()
                _settle(f, out, sink, stats, fsync)
            publish(tmp, out.path, out.directory, exclusive=not (overwrite or in_place), companion=companion,
                    file_unique=sink.aad_file_unique)
        except BaseException:
            _discard(tmp, companion)
            raise
    stats.seconds = time.perf_counter() - t0
    return stats


def _settle(f, out: OutputPlan, sink: Sink, stats: Stats, fsync: bool) -> None:
    """A written output before it is published: the mode of the file it replaces (if
    any), flushed to disk (``fsync``), its size in ``stats``."""
    if out.mode is not None:
        os.fchmod(f.fileno(), out.mode)
    if fsync:
        os.fsync(f.fileno())
    stats.bytes_out = sink.pos


def _discard(tmp: str, companion: Companion | None) -> None:
    """A failed or cancelled output: its temporary file and staged key material go."""
    unlink_quietly(tmp)
    if companion is not None:
        companion.abort()


def transform_to_memory(src, *, decryption: DecryptionProperties | None = None,
                        encryption: EncryptionProperties | None = None, backend: str | None = None,
                        expect: str | None = None) -> tuple[bytearray, Stats]:
    """Like :func:`transform`, into memory: (the output file's bytes, stats). Nothing
    is written to disk."""
    buf = bytearray()
    stats = transform_into(src, buf, decryption=decryption, encryption=encryption, backend=backend, expect=expect)
    return buf, stats


def transform_into(src, target, *, decryption: DecryptionProperties | None = None,
                   encryption: EncryptionProperties | None = None, backend: str | None = None,
                   expect: str | None = None, name: str = "<memory>") -> Stats:
    """Like :func:`transform`, into ``target``: a ``bytearray`` the output is appended
    to, or a writable binary file object positioned at its start (an fsspec file, say;
    committing it is the caller's business). ``src`` may also be a
    :class:`~.source.RangeReader`."""
    t0 = time.perf_counter()
    with Source(src, decryption, backend=backend) as s:
        _check_expect(s, expect)
        stats = Stats(s.path, None if isinstance(target, bytearray) else name, bytes_in=s.tail.file_size,
                      row_groups=s.num_row_groups, columns=len(s.paths))
        sink = Sink(target, s.paths, encryption, backend=backend, name=name)
        try:
            stats.pages = _copy(s, sink)
            stats.max_dek_modules = sink.max_key_invocations()
            if sink.saw_v2 and encryption is not None:
                stats.warnings.append(_v2_warning(s.name, encryption))
        finally:
            sink.close()
        stats.bytes_out = sink.pos
    stats.seconds = time.perf_counter() - t0
    return stats


class SchemaMismatch(PqsealError, ValueError):
    """The inputs of a merge do not share one Parquet schema."""


class WouldExposeColumn(PqsealError, ValueError):
    """A re-key or merge would write a column that is encrypted in its input as
    plaintext (only a decrypt writes plaintext of an encrypted column)."""


def _exposed(s: Source, encryption: EncryptionProperties | None) -> list[str]:
    """The columns encrypted in ``s`` that ``encryption`` would leave plaintext."""
    return [dotted(p) for c, p in enumerate(s.paths) if s.num_row_groups and s.column_crypto(0, c).encrypted
            and (encryption is None or encryption.column(dotted(p)) is None)]


class MergeInputFailed(PqsealError):
    """An input of a merge could not be read (key missing or refused, tag failure,
    damage): ``index`` and ``path`` name it, ``__cause__`` is the error."""

    def __init__(self, message: str, index: int, path: str):
        super().__init__(message)
        self.index = index
        self.path = path


MAX_ROW_GROUPS = 32768   # of a PME file: row-group ordinals are int16, 0..32767

# the reader errors that are an input's fault, not the output's
_INPUT_ERRORS = (InvalidTag, KeyNotFound, KeyAccessDenied, KmsError, MalformedFile, MalformedModule,
                 MalformedKeyMaterial, UnsupportedFeature)


def merge(srcs: list, dst, decryptions: list, *, encryption: EncryptionProperties | None,
          created_by: str | None = None, backend: str | None = None, overwrite: bool = False, fsync: bool = True,
          companion: Companion | None = None) -> Stats:
    """Concatenate the row groups of the Parquet files ``srcs`` (each opened with its
    ``decryptions[i]``) into the one file ``dst``, page by page without decoding: every
    module is decrypted with its input's keys and sealed again under ``encryption``
    (fresh ``aad_file_unique``, the output's row-group ordinals), offsets, page indexes
    and bloom filters relocated. The inputs must share one schema (else
    :class:`SchemaMismatch`); a column encrypted in an input must be encrypted in the
    output (else :class:`WouldExposeColumn`: a merge never writes it as plaintext). The
    footer is the first input's (key-value metadata included) with the summed row count
    and ``created_by``. An input that cannot be read raises :class:`MergeInputFailed`.
    Output handling as :func:`transform`."""
    if not srcs or len(srcs) != len(decryptions):
        raise ValueError("merge needs one or more inputs, each with its decryption properties (or None)")
    t0 = time.perf_counter()
    out = plan_output(dst, overwrite=overwrite)
    remove_stale(out.directory)
    stats = Stats(", ".join(map(os.fspath, srcs)), os.fspath(dst))

    def open_input(i: int) -> Source:
        try:
            return Source(srcs[i], decryptions[i], backend=backend, reuse_buffers=True)
        except _INPUT_ERRORS as exc:
            raise MergeInputFailed(f"{srcs[i]}: {exc}", i, os.fspath(srcs[i])) from exc

    with open_input(0) as first:
        template = first.file_metadata().copy()
        paths = first.paths
    if created_by:
        template["created_by"] = created_by.encode()
    fd, tmp = create_temp(out.directory, out.name, 0o666 if encryption is not None else 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            sink = Sink(f.fileno(), paths, encryption, backend=backend, name=out.path, writeback=fsync)
            try:
                copier = RowGroupCopier(sink)
                for i in range(len(srcs)):
                    with open_input(i) as s:
                        if s.file_metadata().get("schema") != template.get("schema"):
                            raise SchemaMismatch(f"{s.name} has another schema than {os.path.basename(srcs[0])}")
                        try:
                            exposed = _exposed(s, encryption)
                        except _INPUT_ERRORS as exc:
                            raise MergeInputFailed(f"{s.name}: {exc}", i, os.fspath(srcs[i])) from exc
                        if exposed:
                            raise WouldExposeColumn(f"{s.name}: column(s) {', '.join(exposed)} encrypted there would "
                                                    "be written as plaintext; give the output keys for them")
                        if encryption is not None and len(copier.row_groups) + s.num_row_groups > MAX_ROW_GROUPS:
                            raise InvalidOrdinal(f"{out.name}: merging {s.name} would give the output more than "
                                                 f"{MAX_ROW_GROUPS} row groups (PME row-group ordinals end at 32767)")
                        stats.bytes_in += s.tail.file_size
                        try:
                            for rg in range(s.num_row_groups):
                                copier.add(s, rg)
                        except _INPUT_ERRORS as exc:
                            raise MergeInputFailed(f"{s.name}: {exc}", i, os.fspath(srcs[i])) from exc
                copier.finish(template)
                stats.pages, stats.row_groups, stats.columns = copier.pages, len(copier.row_groups), len(paths)
                stats.max_dek_modules = sink.max_key_invocations()
                if sink.saw_v2 and encryption is not None:
                    stats.warnings.append(_v2_warning(out.name, encryption))
            finally:
                sink.close()
            _settle(f, out, sink, stats, fsync)
        publish(tmp, out.path, out.directory, exclusive=not overwrite, companion=companion,
                file_unique=sink.aad_file_unique)
    except BaseException:
        _discard(tmp, companion)
        raise
    stats.seconds = time.perf_counter() - t0
    return stats


def _copy(s: Source, sink: Sink) -> int:
    """Copy every row group of ``s`` into ``sink`` and write the footer; returns the page count."""
    rgs = RowGroupCopier(sink)
    for rg in range(s.num_row_groups):
        rgs.add(s, rg)
    rgs.finish(s.file_metadata())
    return rgs.pages


@dataclass
class _PendingIndex:
    """The page indexes of one output column chunk, written by :meth:`RowGroupCopier.finish`."""

    rg: int
    col: int
    cc: ColumnChunk                        # the output ColumnChunk, which gets their offsets
    column_index: bytes | None
    offset_index: bytes | None             # relocated and serialized


class RowGroupCopier:
    """Builds one output file from row groups of any number of sources: :meth:`add` copies
    a row group (its chunks, then its bloom filters) as the next row group of the output,
    renumbered (the AADs use the output's ordinals); :meth:`finish` writes the page
    indexes of all row groups (Arrow's and parquet-java's layout) and the footer.
    Memory: the footer and the page indexes, nothing of the pages."""

    def __init__(self, sink: Sink):
        self.sink = sink
        self.row_groups: list[RowGroup] = []
        self.plain_row_groups: list[RowGroup] = []   # with plaintext ColumnMetaData (for callers' metadata)
        self.num_rows = 0
        self.pages = 0
        self._indexes: list[_PendingIndex] = []

    def add(self, s: Source, src_rg: int) -> None:
        sink = self.sink
        rg = len(self.row_groups)
        ncol = len(s.paths)
        records: list[ChunkRecord] = []
        old_spans: list[tuple[int, int]] = []
        for col in range(ncol):
            _cancel.check()
            ch = s.read_chunk(src_rg, col, parts=True)
            old_start = chunk_start(ch.meta, s.name)
            if ch.rg != rg:
                ch = dataclasses.replace(ch, rg=rg)
            records.append(sink.write_chunk(ch))
            self.pages += len(records[-1].pages)
            old_spans.append((old_start, old_start + int(ch.meta.get("total_compressed_size") or 0)))
            del ch
        # bloom filters right after the row group's chunks: a source held in memory
        # (ParquetWriter's row group) is gone before the output is finished
        for col, rec in enumerate(records):
            src_meta = s.column_meta(src_rg, col)
            bf = s.bloom_filter(src_rg, col, src_meta)
            meta = rec.meta
            if bf is None:
                meta.pop("bloom_filter_offset", None)
                meta.pop("bloom_filter_length", None)
                continue
            off, ln = sink.write_bloom_filter(rg, col, *bf)
            meta["bloom_filter_offset"] = off
            if "bloom_filter_length" in src_meta or sink.enc is not None:
                meta["bloom_filter_length"] = ln
        src_rg_meta = s.file_metadata()["row_groups"][src_rg]
        out = src_rg_meta.copy()
        plain = src_rg_meta.copy()
        cols, plain_cols = [], []
        delta_unc = 0
        for col, src_cc in enumerate(src_rg_meta["columns"]):
            rec = records[col]
            src_meta = s.column_meta(src_rg, col)
            meta = rec.meta
            delta_unc += (int(meta.get("total_uncompressed_size") or 0)
                          - int(src_meta.get("total_uncompressed_size") or 0))
            cc = src_cc.copy()   # page-index fields: the output's (set by finish), or none
            cc.pop("column_index_offset", None)
            cc.pop("column_index_length", None)
            cc.pop("offset_index_offset", None)
            cc.pop("offset_index_length", None)
            if "file_offset" in cc:
                cc["file_offset"] = _relocate(cc["file_offset"], *old_spans[col], rec.start, rec.end)
            out_cc = sink.column_chunk(rg, col, cc, meta)
            cols.append(out_cc)
            plain_cc = cc.copy()
            plain_cc.pop("crypto_metadata", None)
            plain_cc.pop("encrypted_column_metadata", None)
            plain_cc["meta_data"] = meta
            plain_cols.append(plain_cc)
            ci = s.column_index(src_rg, col)
            oi = s.offset_index(src_rg, col)
            if ci is not None or oi is not None:
                self._indexes.append(_PendingIndex(rg, col, out_cc, ci,
                                                   None if oi is None else sink.relocate_offset_index(rg, col, oi,
                                                                                                      rec.pages)))
        for row_group, columns in ((out, cols), (plain, plain_cols)):
            row_group["columns"] = columns
            if columns:
                if "file_offset" in row_group:
                    row_group["file_offset"] = records[0].start
                if "total_compressed_size" in row_group:
                    row_group["total_compressed_size"] = sum(r.end - r.start for r in records)
            if "total_byte_size" in row_group:
                row_group["total_byte_size"] = int(row_group["total_byte_size"]) + delta_unc
            if sink.enc is not None:
                row_group["ordinal"] = rg
        self.row_groups.append(out)
        self.plain_row_groups.append(plain)
        self.num_rows += int(src_rg_meta.get("num_rows") or 0)

    def finish(self, template: FileMetaData) -> FileMetaData:
        """Write the page indexes and the footer (``template``: the FileMetaData whose
        schema, key-value metadata, created_by... the output takes); returns the footer's
        FileMetaData with plaintext column metadata (what pyarrow's writer reports)."""
        sink = self.sink
        # column indexes, then offset indexes, each kind encrypted in one call
        cis = [(p, p.column_index) for p in self._indexes if p.column_index is not None]
        ois = [(p, p.offset_index) for p in self._indexes if p.offset_index is not None]
        ci_spans = sink.write_indexes(ModuleType.COLUMN_INDEX, [(p.rg, p.col, data) for p, data in cis])
        oi_spans = sink.write_indexes(ModuleType.OFFSET_INDEX, [(p.rg, p.col, data) for p, data in ois])
        placed = [(p, ColumnChunk(column_index_offset=off, column_index_length=ln))
                  for (p, _), (off, ln) in zip(cis, ci_spans)]
        placed += [(p, ColumnChunk(offset_index_offset=off, offset_index_length=ln))
                   for (p, _), (off, ln) in zip(ois, oi_spans)]
        for p, fields in placed:
            p.cc.update(fields)
            self.plain_row_groups[p.rg]["columns"][p.col].update(fields)
        self._indexes = []
        fmd = template.copy()
        fmd["row_groups"] = self.row_groups
        fmd["num_rows"] = self.num_rows
        sink.finish(fmd)
        plain = template.copy()
        plain.pop("encryption_algorithm", None)
        plain.pop("footer_signing_key_metadata", None)
        plain["row_groups"] = self.plain_row_groups
        plain["num_rows"] = self.num_rows
        return plain
