"""The file engine: one pass from a :class:`Source` to a :class:`Sink`.

seal = plaintext source → encrypting sink; unseal = encrypted source → plaintext sink;
re-key = encrypted source → encrypting sink (plaintext never touches the disk);
verify = encrypted source read whole, nothing written.
"""

from __future__ import annotations

import os
import tempfile
import time
from dataclasses import dataclass, field

from ..errors import PqsealError
from .properties import DecryptionProperties, EncryptionProperties
from .sink import Sink
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
    warnings: list = field(default_factory=list)


def _relocate(value, old_start, old_end, new_start, new_end):
    if value == old_start:
        return new_start
    if value == old_end:
        return new_end
    return value


def transform(src, dst, *, decryption: DecryptionProperties | None = None,
              encryption: EncryptionProperties | None = None, backend: str | None = None,
              in_place: bool = False, expect: str | None = None, fsync: bool = True) -> Stats:
    """Rewrite ``src`` into ``dst`` (a temporary file renamed into place).

    ``expect``: "plaintext" (sealing: refuse PME input) or "encrypted" (unsealing).
    ``fsync``: flush the output to stable storage before the rename (default)."""
    t0 = time.perf_counter()
    src, dst = os.fspath(src), os.fspath(dst)
    if not in_place and os.path.exists(dst) and os.path.samefile(src, dst):
        raise ValueError(f"{dst}: output is the input file; pass in_place=True to replace it")
    with Source(src, decryption, backend=backend, reuse_buffers=True) as s:
        if expect == "plaintext" and s.crypto is not None:
            raise AlreadyEncrypted(f"{s.name} is already encrypted ({s.crypto.algorithm}); decrypt or re-key it")
        if expect == "encrypted" and s.crypto is None:
            raise NotEncrypted(f"{s.name} is not an encrypted Parquet file")
        stats = Stats(src, dst, bytes_in=s.tail.file_size, row_groups=s.num_row_groups, columns=len(s.paths))
        d = os.path.dirname(os.path.abspath(dst))
        fd, tmp = tempfile.mkstemp(dir=d, prefix="." + os.path.basename(dst) + ".", suffix=".pqseal-tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                # output size: the input's, plus module framing when encrypting (about 64 bytes
                # per page; a low guess only means the rest is written without the reservation)
                hint = s.tail.file_size + (s.tail.file_size // 64 + (1 << 20) if encryption is not None else 0)
                sink = Sink(f, s.paths, encryption, backend=backend, name=os.path.basename(dst), size_hint=hint)
                try:
                    stats.pages = _copy(s, sink, stats)
                    sink.truncate()
                finally:
                    sink.close()
                f.flush()
                if fsync:
                    os.fsync(f.fileno())
                stats.bytes_out = sink.pos
            os.replace(tmp, dst)
        except BaseException:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
            raise
    stats.seconds = time.perf_counter() - t0
    return stats


def _copy(s: Source, sink: Sink, stats: Stats) -> int:
    nrg, ncol = s.num_row_groups, len(s.paths)
    records = {}
    pages = 0
    for rg in range(nrg):
        for col in range(ncol):
            ch = s.read_chunk(rg, col)
            pages += len(ch.headers)
            rec = sink.write_chunk(ch)
            rec["old_start"] = chunk_start(ch.meta, s.name)
            rec["old_end"] = rec["old_start"] + int(ch.meta.get("total_compressed_size") or 0)
            records[rg, col] = rec
            del ch
    # bloom filters, then column indexes, then offset indexes (parquet-java's and Arrow's layout)
    for (rg, col), rec in records.items():
        src_meta = s.column_meta(rg, col)
        bf = s.bloom_filter(rg, col, src_meta)
        meta = rec["meta"]
        if bf is None:
            meta.pop("bloom_filter_offset", None)
            meta.pop("bloom_filter_length", None)
            continue
        off, ln = sink.write_bloom_filter(rg, col, *bf)
        meta["bloom_filter_offset"] = off
        if "bloom_filter_length" in src_meta or sink.enc is not None:
            meta["bloom_filter_length"] = ln
    index_fields = {}
    for (rg, col), rec in records.items():
        ci = s.column_index(rg, col)
        if ci is not None:
            index_fields[rg, col] = dict(zip(("column_index_offset", "column_index_length"),
                                             sink.write_column_index(rg, col, ci)))
    for (rg, col), rec in records.items():
        oi = s.offset_index(rg, col)
        if oi is not None:
            index_fields.setdefault((rg, col), {}).update(zip(("offset_index_offset", "offset_index_length"),
                                                              sink.write_offset_index(rg, col, oi, rec["pages"])))
    # footer
    fmd = dict(s.fmd)
    out_rgs = []
    for rg, src_rg in enumerate(s.fmd.get("row_groups") or []):
        out = dict(src_rg)
        cols = []
        delta_unc = 0
        for col, src_cc in enumerate(src_rg["columns"]):
            rec = records[rg, col]
            src_meta = s.column_meta(rg, col)
            meta = rec["meta"]
            delta_unc += int(meta.get("total_uncompressed_size") or 0) - int(src_meta.get("total_uncompressed_size") or 0)
            cc = {k: v for k, v in src_cc.items()
                  if k not in ("column_index_offset", "column_index_length", "offset_index_offset",
                               "offset_index_length")}
            cc.update(index_fields.get((rg, col), {}))
            if "file_offset" in cc:
                cc["file_offset"] = _relocate(cc["file_offset"], rec["old_start"], rec["old_end"], rec["start"],
                                              rec["end"])
            cols.append(sink.column_chunk(rg, col, cc, meta))
        out["columns"] = cols
        if cols:
            if "file_offset" in out:
                out["file_offset"] = records[rg, 0]["start"]
            if "total_compressed_size" in out:
                out["total_compressed_size"] = sum(r["end"] - r["start"] for (g, _), r in records.items() if g == rg)
        if "total_byte_size" in out:
            out["total_byte_size"] = int(out["total_byte_size"]) + delta_unc
        if sink.enc is not None:
            out["ordinal"] = rg
        out_rgs.append(out)
    fmd["row_groups"] = out_rgs
    sink.finish(fmd)
    return pages
