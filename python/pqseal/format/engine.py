"""The file engine: one pass from a :class:`Source` to a :class:`Sink`.

seal = plaintext source → encrypting sink; unseal = encrypted source → plaintext sink;
re-key = encrypted source → encrypting sink (plaintext never touches the disk);
verify = encrypted source read whole, nothing written.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Protocol

from .. import _cancel
from .._io import create_temp, fsync_dir, plan_output, remove_stale, replace, unlink_quietly
from ..errors import PqsealError
from .properties import DecryptionProperties, EncryptionProperties
from .sink import ChunkRecord, Sink
from .structs import ColumnChunk
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


def _check_expect(s: Source, expect: str | None) -> None:
    if expect == "plaintext" and s.crypto is not None:
        raise AlreadyEncrypted(f"{s.name} is already encrypted ({s.crypto.algorithm}); decrypt or re-key it")
    if expect == "encrypted" and s.crypto is None:
        raise NotEncrypted(f"{s.name} is not an encrypted Parquet file")


def _size_hint(s: Source, encryption: EncryptionProperties | None) -> int:
    # the input's size, plus module framing when encrypting (about 64 bytes per page; a
    # low guess only means the rest is written without the reservation)
    return s.tail.file_size + (s.tail.file_size // 64 + (1 << 20) if encryption is not None else 0)


def transform(src, dst, *, decryption: DecryptionProperties | None = None,
              encryption: EncryptionProperties | None = None, backend: str | None = None,
              in_place: bool = False, overwrite: bool = False, expect: str | None = None, fsync: bool = True,
              companion: Companion | None = None) -> Stats:
    """Rewrite ``src`` (a path or an in-memory buffer) into the file ``dst``.

    The output is written to a temporary file beside ``dst`` (its name carries this
    process's pid), flushed (``fsync``) and renamed into place; on any failure or
    cancellation it is removed and an existing ``dst`` is left as it was. An existing
    ``dst`` is replaced only with ``overwrite`` (or ``in_place`` when it is ``src``) and
    keeps its mode; new encrypted outputs follow the umask, new plaintext outputs are
    0600. ``expect``: "plaintext" (sealing: refuse PME input) or "encrypted"."""
    t0 = time.perf_counter()
    out = plan_output(dst, overwrite=overwrite, src=src if isinstance(src, (str, os.PathLike)) else None,
                      in_place=in_place)
    remove_stale(out.directory)
    with Source(src, decryption, backend=backend, reuse_buffers=True) as s:
        _check_expect(s, expect)
        stats = Stats(s.path, os.fspath(dst), bytes_in=s.tail.file_size, row_groups=s.num_row_groups,
                      columns=len(s.paths))
        fd, tmp = create_temp(out.directory, out.name, 0o666 if encryption is not None else 0o600)
        try:
            with os.fdopen(fd, "wb") as f:
                sink = Sink(f.fileno(), s.paths, encryption, backend=backend, name=out.path,
                            size_hint=_size_hint(s, encryption))
                try:
                    stats.pages = _copy(s, sink)
                    sink.truncate()
                    if sink.saw_v2 and encryption is not None:
                        stats.warnings.append(_v2_warning(s.name, encryption))
                finally:
                    sink.close()
                if out.mode is not None:
                    os.fchmod(f.fileno(), out.mode)
                if fsync:
                    os.fsync(f.fileno())
                stats.bytes_out = sink.pos
            if companion is not None:
                companion.stage(sink.aad_file_unique or b"")
            replace(tmp, out.path)
        except BaseException:
            unlink_quietly(tmp)
            if companion is not None:
                companion.abort()
            raise
    if companion is not None:
        companion.commit()
    fsync_dir(out.directory)
    stats.seconds = time.perf_counter() - t0
    return stats


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
            if sink.saw_v2 and encryption is not None:
                stats.warnings.append(_v2_warning(s.name, encryption))
        finally:
            sink.close()
        stats.bytes_out = sink.pos
    stats.seconds = time.perf_counter() - t0
    return stats


def _copy(s: Source, sink: Sink) -> int:
    nrg, ncol = s.num_row_groups, len(s.paths)
    records: dict[tuple[int, int], ChunkRecord] = {}
    old_spans: dict[tuple[int, int], tuple[int, int]] = {}
    pages = 0
    for rg in range(nrg):
        for col in range(ncol):
            _cancel.check()
            ch = s.read_chunk(rg, col)
            pages += len(ch.headers)
            old_start = chunk_start(ch.meta, s.name)
            records[rg, col] = sink.write_chunk(ch)
            old_spans[rg, col] = (old_start, old_start + int(ch.meta.get("total_compressed_size") or 0))
            del ch
    # bloom filters, then column indexes, then offset indexes (parquet-java's and Arrow's layout)
    for (rg, col), rec in records.items():
        src_meta = s.column_meta(rg, col)
        bf = s.bloom_filter(rg, col, src_meta)
        meta = rec.meta
        if bf is None:
            meta.pop("bloom_filter_offset", None)
            meta.pop("bloom_filter_length", None)
            continue
        off, ln = sink.write_bloom_filter(rg, col, *bf)
        meta["bloom_filter_offset"] = off
        if "bloom_filter_length" in src_meta or sink.enc is not None:
            meta["bloom_filter_length"] = ln
    index_fields: dict[tuple[int, int], ColumnChunk] = {}   # the page-index fields of each ColumnChunk
    for rg, col in records:
        ci = s.column_index(rg, col)
        if ci is not None:
            off, ln = sink.write_column_index(rg, col, ci)
            index_fields[rg, col] = ColumnChunk(column_index_offset=off, column_index_length=ln)
    for (rg, col), rec in records.items():
        oi = s.offset_index(rg, col)
        if oi is not None:
            off, ln = sink.write_offset_index(rg, col, oi, rec.pages)
            index_fields.setdefault((rg, col), ColumnChunk()).update(
                ColumnChunk(offset_index_offset=off, offset_index_length=ln))
    # footer
    fmd = s.file_metadata().copy()
    out_rgs = []
    for rg, src_rg in enumerate(s.file_metadata().get("row_groups") or []):
        out = src_rg.copy()
        cols = []
        delta_unc = 0
        for col, src_cc in enumerate(src_rg["columns"]):
            rec = records[rg, col]
            src_meta = s.column_meta(rg, col)
            meta = rec.meta
            delta_unc += (int(meta.get("total_uncompressed_size") or 0)
                          - int(src_meta.get("total_uncompressed_size") or 0))
            cc = src_cc.copy()   # page-index fields: the output's, or none
            cc.pop("column_index_offset", None)
            cc.pop("column_index_length", None)
            cc.pop("offset_index_offset", None)
            cc.pop("offset_index_length", None)
            cc.update(index_fields.get((rg, col), ColumnChunk()))
            if "file_offset" in cc:
                cc["file_offset"] = _relocate(cc["file_offset"], *old_spans[rg, col], rec.start, rec.end)
            cols.append(sink.column_chunk(rg, col, cc, meta))
        out["columns"] = cols
        if cols:
            if "file_offset" in out:
                out["file_offset"] = records[rg, 0].start
            if "total_compressed_size" in out:
                out["total_compressed_size"] = sum(r.end - r.start for (g, _), r in records.items() if g == rg)
        if "total_byte_size" in out:
            out["total_byte_size"] = int(out["total_byte_size"]) + delta_unc
        if sink.enc is not None:
            out["ordinal"] = rg
        out_rgs.append(out)
    fmd["row_groups"] = out_rgs
    sink.finish(fmd)
    return pages
