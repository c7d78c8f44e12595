"""The plaintext view of a PME file (issue 9, item 3): a read-only, seekable binary file
that any Parquet reader opens as the plaintext Parquet file, while only the byte ranges
the reader asks for are read and decrypted.

Layout. The view keeps every byte offset of the encrypted file up to its footer, so no
offset in the footer or the offset index needs relocating and opening costs only the
footer. An encrypted page lies as ``[header module][levels][page module]`` (levels: the
plaintext DataPageV2 levels of parquet-java's framing, else nothing). The view presents
the same bytes as ``[plaintext PageHeader + pad][levels][plaintext page]``: the header
says ``compressed_page_size`` = levels + plaintext page, drops the CRC (it covered the
encrypted bytes; the view checks it against them before decrypting) and carries an
unknown binary Thrift field (a high field id) whose length makes header and pad fill
exactly the bytes the header module and the page module's framing took. Thrift readers
skip unknown fields, so the page locations of the offset index stay valid as written.
DuckDB's page sizes, which leave the framing out, need no other accounting: the pad
simply grows. A bloom filter (header module, bitset module) is presented the same way.
A column or offset index module is presented as its plaintext at the module's offset,
followed by zeros; the footer records the plaintext length. The footer is the decrypted
FileMetaData without the encryption fields (each ColumnChunk carrying the full,
decrypted ColumnMetaData) where the encrypted footer began, then its length and
``PAR1``; the leading ``PARE`` reads ``PAR1``. Plaintext columns, and files that are not
PME at all, pass through unchanged.

Reading. A read maps to parts of the layout. Page headers of a column chunk are
decrypted once per chunk (its plan, kept in a small LRU); page bodies a read covers
whole are decrypted in one batch straight into the caller's buffer; pages a read covers
in part are decrypted whole (a GCM tag covers the whole module) into a bounded page
cache, so a reader stepping through a page in small reads decrypts it once. The buffer a
read fills is the one handed back: a numpy array for ``read_buffer``/``pread`` (pyarrow
wraps it), the caller's for ``readinto``, and for a large ``read``/``pread_bytes`` a
``bytes`` object filled in place (polars reads a file object with one ``read()`` of the
whole file, whatever columns it selects, and wraps the ``bytes`` without a copy).
"""

from __future__ import annotations

import bisect
import io
import operator
import os
import struct
import threading
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

from ..crypto import ModuleType
from ..errors import InvalidTag, KeyAccessDenied, KeyNotFound, MalformedFile
from ..format import thrift
from ..format.layout import MAGIC, dotted
from ..format.plan import GCM_OVERHEAD, ChunkPlan
from ..format.source import FileRanges, Source
from . import _exit
from ._bytes import fresh_bytes

DEFAULT_CACHE_BYTES = 16 << 20    # decrypted pages and index modules kept for partial reads
_PLANS_KEPT = 64                  # chunk plans (decrypted page headers) kept
_WHOLE_CHUNK = 1 << 20            # chunks up to this size are read whole when first touched


# ---- the padded Thrift struct --------------------------------------------------------


def _varint(v: int) -> bytes:
    out = bytearray()
    while v >= 0x80:
        out.append(v & 0x7F | 0x80)
        v >>= 7
    out.append(v)
    return bytes(out)


def padded(struct_name: str, fields: dict, size: int) -> bytes:
    """``fields`` encoded as ``struct_name`` in exactly ``size`` bytes: the encoding plus,
    before its stop byte, an unknown binary field (preceded, for the few sizes one field
    cannot fill, by an unknown bool field) that readers skip. Its field id is 15 above
    the struct's last, the highest a short-form field header reaches: fastparquet's
    Thrift reader knows no long-form headers (nor ids above 127)."""
    base = thrift.encode(struct_name, fields)
    for flag in (False, True):
        n = size - len(base) - 1 - flag          # bytes of the binary field's length and data
        for len_len in (1, 2, 3, 4):
            data = n - len_len
            if data >= 0 and len(_varint(data)) == len_len:
                # field headers: delta 15, binary (0xf8); or delta 14, bool true (0xe1), then delta 1, binary
                head = b"\xe1\x18" if flag else b"\xf8"
                return base[:-1] + head + _varint(data) + bytes(data) + base[-1:]
    raise MalformedFile(f"a {struct_name} of {len(base)} bytes cannot be presented in {size} bytes")


# ---- the layout ----------------------------------------------------------------------


@dataclass(frozen=True)
class Part:
    """A range of the view that is not the source's bytes as they are: ``kind`` is
    "bytes" (``data``), "chunk" (the pages of an encrypted column chunk), "index" (a
    column/offset index module: ``mtype``) or "bloom" (an encrypted bloom filter whose
    header module is ``split`` bytes long)."""

    start: int
    end: int
    kind: str
    rg: int = -1
    col: int = -1
    data: bytes = b""
    mtype: ModuleType | None = None
    split: int = 0


@dataclass(frozen=True)
class Layout:
    size: int
    parts: list            # sorted, disjoint Parts; bytes outside them are the source's
    encrypted: bool


def _le32(s: Source, off: int) -> int:
    return struct.unpack("<I", s.read(off, 4))[0]


def _named_key_error(s: Source, rg: int, col: int, exc: Exception):
    """KeyNotFound/KeyAccessDenied (or InvalidTag: the KMS could not unwrap it) of a
    column's key with the file and the column named."""
    path = dotted(s.paths[col])
    if path in str(exc) and s.name in str(exc):
        return exc
    what = "cannot unwrap the key of" if isinstance(exc, InvalidTag) else "no key for"
    return type(exc)(f"{s.name}: {what} encrypted column {path} (row group {rg}): {exc}")


def build_layout(s: Source) -> Layout:
    """The view's layout of the file ``s`` (opened with keys): decrypts the footer and the
    column metadata, no page."""
    if s.crypto is None:
        return Layout(s.size, [], False)
    s.file_metadata()                                      # KeyNotFound without keys
    fmd, _ = thrift.decode("FileMetaData", s.footer_bytes, 0)   # a copy of it to edit
    fmd.pop("encryption_algorithm", None)
    fmd.pop("footer_signing_key_metadata", None)
    end_data = s.tail.footer_offset
    parts = [Part(0, 4, "bytes", data=MAGIC)]
    for rg, group in enumerate(fmd.get("row_groups") or []):
        for col, cc in enumerate(group.get("columns") or []):
            try:
                cipher = s.page_cipher(rg, col)
            except (KeyNotFound, KeyAccessDenied, InvalidTag) as exc:
                raise _named_key_error(s, rg, col, exc) from None
            if cipher is None:
                continue
            meta = s.column_meta(rg, col)
            cc.pop("crypto_metadata", None)
            cc.pop("encrypted_column_metadata", None)
            cc["meta_data"] = meta
            start, end = s.chunk_span(rg, col)
            if end > start:
                parts.append(Part(start, end, "chunk", rg, col))
            for kind, mtype in (("column_index", ModuleType.COLUMN_INDEX), ("offset_index", ModuleType.OFFSET_INDEX)):
                off, ln = cc.get(kind + "_offset"), cc.get(kind + "_length")
                if off is None:
                    continue
                if ln is None or ln < GCM_OVERHEAD or off < 4 or off + ln > end_data:
                    raise MalformedFile(f"{s.name}: {kind.replace('_', ' ')} of {dotted(s.paths[col])} (row group "
                                        f"{rg}) lies outside the data region")
                parts.append(Part(off, off + ln, "index", rg, col, mtype=mtype))
                cc[kind + "_length"] = ln - GCM_OVERHEAD
            off = meta.get("bloom_filter_offset")
            if off is not None:
                what = f"{s.name}: bloom filter of {dotted(s.paths[col])} (row group {rg})"
                if off < 4 or off + 8 > end_data:
                    raise MalformedFile(f"{what} lies outside the data region")
                hl = _le32(s, off) + 4
                bl = _le32(s, off + hl) + 4 if off + hl + 4 <= end_data else 0
                if hl < GCM_OVERHEAD or bl < GCM_OVERHEAD or off + hl + bl > end_data:
                    raise MalformedFile(f"{what} is truncated")
                parts.append(Part(off, off + hl + bl, "bloom", rg, col, split=hl))
    footer = thrift.encode("FileMetaData", fmd)
    tail = footer + struct.pack("<I", len(footer)) + MAGIC
    parts.append(Part(end_data, end_data + len(tail), "bytes", data=tail))
    parts.sort(key=lambda p: p.start)
    for a, b in zip(parts, parts[1:]):
        if b.start < a.end:
            raise MalformedFile(f"{s.name}: the {a.kind} at offset {a.start} overlaps the {b.kind} at offset "
                                f"{b.start}")
    return Layout(end_data + len(tail), parts, True)


# ---- one encrypted column chunk --------------------------------------------------------


class _ChunkView:
    """The view of one encrypted column chunk: where each page's header, levels and
    plaintext body lie in the view (offsets shared with the source)."""

    def __init__(self, plan: ChunkPlan, cipher):
        self.plan = plan
        self.cipher = cipher
        ov = cipher.overhead
        self.starts = plan.header_offsets                            # page i: [starts[i], ends[i])
        self.levels_at = plan.header_offsets + plan.header_lengths + ov
        self.body_at = self.levels_at + plan.levels                  # plaintext body
        self.ends = plan.body_offsets + plan.body_lengths
        self.plain_lengths = plan.body_lengths - ov
        if len(plan) and (self.starts[0] != plan.start or self.ends[-1] != plan.end
                          or np.any(self.starts[1:] != self.ends[:-1]) or self.plain_lengths.min() < 0
                          or np.any(plan.header_offsets + plan.header_lengths + plan.levels != plan.body_offsets)):
            raise MalformedFile(f"column chunk at offset {plan.start} is not laid out page after page")
        self._headers: dict[int, bytes] = {}

    def header(self, i: int) -> bytes:
        """Page ``i``'s plaintext header, padded to the bytes its header module and the
        page module's framing take."""
        got = self._headers.get(i)
        if got is None:
            h = dict(self.plan.headers[i])
            h.pop("crc", None)
            h["compressed_page_size"] = int(self.plan.levels[i] + self.plain_lengths[i])
            got = self._headers[i] = padded("PageHeader", h, int(self.levels_at[i] - self.starts[i]))
        return got


# ---- the file object -------------------------------------------------------------------


class PlaintextView(io.RawIOBase):
    """A seekable read-only binary file presenting the plaintext Parquet file of a PME
    file (see the module docstring). ``size``: the view's size; ``decrypted_bytes``:
    bytes of encrypted modules decrypted so far (footer and column metadata at open,
    then page headers, pages, indexes and bloom filters as they are read)."""

    def __init__(self, source: Source, *, cache_bytes: int = DEFAULT_CACHE_BYTES, threads: int = 1,
                 close_source=None):
        super().__init__()
        self._s = source
        self._close_source = close_source
        self.name = source.path
        try:
            self.layout = build_layout(source)
        except BaseException:
            super().close()     # never opened: nothing for close() to release when it is collected
            raise
        self.size = self.layout.size
        self._starts = [p.start for p in self.layout.parts]
        self.decrypted_bytes = source.tail.footer_len if self.layout.encrypted else 0
        self.cache_bytes = int(cache_bytes)
        self._threads = threads
        self._pos = 0
        self._lock = threading.RLock()
        self._plans: OrderedDict = OrderedDict()     # (rg, col) -> _ChunkView
        self._cache: OrderedDict = OrderedDict()     # key -> np.ndarray of plaintext
        self._cached = 0
        self._scratch = np.empty(0, np.uint8)
        _exit.track(self)

    # ---- io.RawIOBase --------------------------------------------------------------

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def writable(self) -> bool:
        return False

    def write(self, b) -> int:
        raise io.UnsupportedOperation("the plaintext view is read-only")

    def tell(self) -> int:
        self._check_open()
        return self._pos

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        self._check_open()
        offset = operator.index(offset)    # as io's files: a float is a TypeError here, not at the next read
        if whence == os.SEEK_SET:
            pos = offset
        elif whence == os.SEEK_CUR:
            pos = self._pos + offset
        elif whence == os.SEEK_END:
            pos = self.size + offset
        else:
            raise ValueError(f"invalid whence ({whence})")
        if pos < 0:
            raise ValueError(f"negative seek position {pos}")
        self._pos = pos
        return pos

    def readinto(self, b) -> int:
        out = np.frombuffer(memoryview(b).cast("B"), np.uint8)
        with self._lock:
            self._check_open()
            n = max(0, min(len(out), self.size - self._pos))
            self._fill(self._pos, out[:n])
            self._pos += n
        return n

    def read_buffer(self, n: int = -1):
        """``n`` bytes (all to the end when negative) as a numpy array: pyarrow's
        PythonFile calls this, and wraps the array without copying it."""
        return self._advance(n, self.pread)

    def read(self, n: int = -1) -> bytes:
        """``n`` bytes (all to the end when negative); see :meth:`pread_bytes`."""
        return self._advance(n, self.pread_bytes)

    def readall(self) -> bytes:
        return self.read(-1)

    def _advance(self, n, pread):
        """``pread`` of the next ``n`` bytes (to the end when None or negative), and the
        position moved past them."""
        with self._lock:
            self._check_open()
            left = max(0, self.size - self._pos)
            n = left if n is None or n < 0 else min(n, left)
            out = pread(self._pos, n)
            self._pos += n
        return out

    def pread(self, offset: int, length: int) -> np.ndarray:
        """The view's bytes [offset, offset + length) (fewer at the end), position unchanged."""
        if offset < 0:
            raise ValueError(f"negative read position {offset}")
        with self._lock:
            self._check_open()
            n = max(0, min(length, self.size - offset))
            out = np.empty(n, np.uint8)
            self._fill(offset, out)
        return out

    def pread_bytes(self, offset: int, length: int) -> bytes:
        """:meth:`pread` as ``bytes``. A large range is decrypted straight into the
        ``bytes`` returned: polars reads a file object with one ``read()`` of the whole
        file and wraps the ``bytes`` without copying them."""
        if offset < 0:
            raise ValueError(f"negative read position {offset}")
        with self._lock:
            self._check_open()
            n = max(0, min(length, self.size - offset))
            fresh = fresh_bytes(n)
            if fresh is None:
                return self.pread(offset, n).tobytes()
            data, out = fresh
            try:
                self._fill(offset, out)
            except BaseException:
                del data, out        # not left to a traceback's frame: parts are uninitialized memory
                raise
        return data

    def close(self) -> None:
        with self._lock:        # after the reads in progress: the file they read stays open until they end
            if self.closed:
                return
            try:
                self._cache.clear()
                self._plans.clear()
                self._scratch = np.empty(0, np.uint8)
                self._s.close()
                if self._close_source is not None:
                    self._close_source.close()
            finally:
                super().close()

    def _check_open(self) -> None:
        if self.closed:
            raise ValueError("I/O operation on a closed view")

    def __repr__(self) -> str:
        return f"<PlaintextView {self.name!r} size={self.size}>"

    # ---- filling a range -----------------------------------------------------------

    def _fill(self, pos: int, out: np.ndarray) -> None:
        end = pos + len(out)
        parts = self.layout.parts
        i = max(bisect.bisect_right(self._starts, pos) - 1, 0)
        at = pos
        while at < end:
            p = parts[i] if i < len(parts) else None
            if p is None or p.start >= end:
                self._copy_source(at, end, out[at - pos:])
                return
            if p.end <= at:
                i += 1
                continue
            if p.start > at:
                self._copy_source(at, p.start, out[at - pos:p.start - pos])
                at = p.start
            stop = min(p.end, end)
            dst = out[at - pos:stop - pos]
            if p.kind == "bytes":
                dst[:] = np.frombuffer(p.data, np.uint8, stop - at, at - p.start)
            elif p.kind == "chunk":
                self._fill_chunk(p, at, stop, dst)
            else:
                blob = self._module_blob(p)
                dst[:] = blob[at - p.start:stop - p.start]
            at = stop
            i += 1

    def _copy_source(self, a: int, b: int, dst: np.ndarray) -> None:
        if b > a:
            got = self._s.read(a, b - a, dst)
            if self._s.buf is not None:          # a file held in memory: a view of it
                dst[:b - a] = np.frombuffer(got, np.uint8)

    # ---- caches ----------------------------------------------------------------------

    def _cached_get(self, key):
        got = self._cache.get(key)
        if got is not None:
            self._cache.move_to_end(key)
        return got

    def _cache_put(self, key, value: np.ndarray) -> None:
        self._cache[key] = value
        self._cached += value.nbytes
        while self._cached > self.cache_bytes and len(self._cache) > 1:
            _, old = self._cache.popitem(last=False)
            self._cached -= old.nbytes

    @property
    def cached_bytes(self) -> int:
        """Bytes of decrypted pages and modules held in the cache now."""
        return self._cached

    def _named(self, p: Part, exc: InvalidTag) -> InvalidTag:
        """``exc`` re-raised naming the file, the module and its column."""
        what = exc.module_type.name if exc.module_type is not None else "module"
        if exc.page is not None:
            what += f" (page {exc.page})"
        return InvalidTag(f"{self._s.name}: {what} of column {dotted(self._s.paths[p.col])} (row group {p.rg}) "
                          f"failed authentication: {exc}", index=exc.index, module_type=exc.module_type,
                          row_group=p.rg, column=p.col, page=exc.page)

    # ---- index modules and bloom filters ---------------------------------------------

    def _module_blob(self, p: Part) -> np.ndarray:
        """The view's bytes of an index module or a bloom filter."""
        key = ("module", p.start)
        blob = self._cached_get(key)
        if blob is not None:
            return blob
        s = self._s
        gcm, _ = s.column_gcm_ctr(p.rg, p.col)
        raw = s.read(p.start, p.end - p.start)
        blob = np.zeros(p.end - p.start, np.uint8)
        try:
            if p.kind == "index":
                plain = gcm.decrypt(raw, p.mtype, p.rg, p.col)
                blob[:len(plain)] = np.frombuffer(plain, np.uint8)
            else:
                head = gcm.decrypt(raw[:p.split], ModuleType.BLOOM_FILTER_HEADER, p.rg, p.col)
                bits = gcm.decrypt(raw[p.split:], ModuleType.BLOOM_FILTER_BITSET, p.rg, p.col)
                hdr, _ = thrift.decode("BloomFilterHeader", head, 0)
                if hdr.get("numBytes") != len(bits):
                    raise MalformedFile(f"{s.name}: bloom filter of {dotted(s.paths[p.col])} (row group {p.rg}) "
                                        "announces a bitset of another size")
                hdr_size = len(blob) - len(bits)
                blob[:hdr_size] = np.frombuffer(padded("BloomFilterHeader", hdr, hdr_size), np.uint8)
                blob[hdr_size:] = np.frombuffer(bits, np.uint8)
        except InvalidTag as exc:
            raise self._named(p, exc) from None
        except thrift.DecodeError as exc:
            raise MalformedFile(f"{s.name}: cannot parse the bloom filter header of {dotted(s.paths[p.col])}: "
                                f"{exc}") from None
        self.decrypted_bytes += len(raw)
        self._cache_put(key, blob)
        return blob

    # ---- pages -------------------------------------------------------------------------

    def _scratch_buffer(self, n: int) -> np.ndarray:
        """A buffer of ``n`` bytes for encrypted bytes read from the source, valid until the
        next call: one buffer serves every read, so its memory is touched once."""
        if len(self._scratch) < n:
            self._scratch = np.empty(n, np.uint8)
        return self._scratch[:n]

    def _chunk(self, p: Part, a: int, b: int) -> tuple[_ChunkView, object]:
        """The chunk's view, and (buffer, base) holding its bytes when they were read to
        plan it (a small chunk, or a read covering most of it), else None."""
        key = (p.rg, p.col)
        cv = self._plans.get(key)
        if cv is not None:
            self._plans.move_to_end(key)
            return cv, None
        s = self._s
        n = p.end - p.start
        read = None
        if n <= _WHOLE_CHUNK or 2 * (b - a) >= n:
            buf = s.read(p.start, n, self._scratch_buffer(n))   # (a file held in memory: a view of it)
            read = (buf, p.start)
            plan = s.chunk_plan(p.rg, p.col, buf=buf, base=p.start)
        else:
            plan = s.chunk_plan(p.rg, p.col, sparse=True)
        self.decrypted_bytes += int(plan.header_lengths.sum())
        cv = _ChunkView(plan, s.page_cipher(p.rg, p.col))
        self._plans[key] = cv
        while len(self._plans) > _PLANS_KEPT:
            self._plans.popitem(last=False)
        return cv, read

    def _fill_chunk(self, p: Part, a: int, b: int, dst: np.ndarray) -> None:
        cv, read = self._chunk(p, a, b)
        first = int(np.searchsorted(cv.starts, a, "right")) - 1
        last = int(np.searchsorted(cv.starts, b, "left"))         # pages first..last-1 overlap [a, b)
        whole = [i for i in range(first, last)
                 if cv.body_at[i] >= a and cv.ends[i] <= b and cv.plain_lengths[i] > 0
                 and ("page", p.rg, p.col, i) not in self._cache]
        if whole:
            self._decrypt_pages(p, cv, whole, read, dst, a)
        for i in range(first, last):
            s0, lv, bd, e = int(cv.starts[i]), int(cv.levels_at[i]), int(cv.body_at[i]), int(cv.ends[i])
            if s0 < b and lv > a:                                      # header and pad
                lo, hi = max(s0, a), min(lv, b)
                dst[lo - a:hi - a] = np.frombuffer(cv.header(i), np.uint8)[lo - s0:hi - s0]
            if lv < b and bd > a:                                      # plaintext levels (parquet-java V2)
                lo, hi = max(lv, a), min(bd, b)
                src = int(cv.plan.body_offsets[i]) - (bd - lv)
                self._copy_source(src + lo - lv, src + hi - lv, dst[lo - a:hi - a])
            if bd < b and e > a and i not in whole:                   # a body read in part
                lo, hi = max(bd, a), min(e, b)
                body = self._page(p, cv, i, read)
                dst[lo - a:hi - a] = body[lo - bd:hi - bd]

    def _page(self, p: Part, cv: _ChunkView, i: int, read) -> np.ndarray:
        key = ("page", p.rg, p.col, i)
        got = self._cached_get(key)
        if got is None:
            got = np.empty(int(cv.plain_lengths[i]), np.uint8)
            self._decrypt_pages(p, cv, [i], read, got, int(cv.body_at[i]))
            self._cache_put(key, got)
        return got

    def _decrypt_pages(self, p: Part, cv: _ChunkView, pages: list, read, out: np.ndarray, out_base: int) -> None:
        """Decrypt pages ``pages`` (ascending) of a chunk into ``out``, where view offset
        o is ``out[o - out_base]``; their encrypted bytes come from ``read`` (buffer,
        base) or are read now, in one range."""
        plan = cv.plan
        idx = np.asarray(pages, np.int64)
        lo = int(plan.body_offsets[idx[0]] - plan.levels[idx[0]])
        hi = int(plan.body_offsets[idx[-1]] + plan.body_lengths[idx[-1]])
        if read is not None:
            buf, base = read
        else:
            buf, base = self._s.read(lo, hi - lo, self._scratch_buffer(hi - lo)), lo
        try:
            self._s._check_crcs(buf, base, plan, pages)
            cv.cipher.decrypt_batch(buf, offsets=plan.body_offsets[idx] - base, lengths=plan.body_lengths[idx],
                                    module_type=plan.body_types[idx], row_group=p.rg, column=p.col,
                                    page=plan.ordinals[idx], out=out, out_offsets=cv.body_at[idx] - out_base,
                                    threads=self._threads)
        except InvalidTag as exc:
            raise self._named(p, exc) from None
        self.decrypted_bytes += int(plan.body_lengths[idx].sum())


# ---- entry points ----------------------------------------------------------------------


def _source(src, decryption, kms) -> tuple[Source, object]:
    from ..api import decryption_properties

    props = decryption_properties(src, decryption, kms=kms)
    if isinstance(src, (str, os.PathLike)) or hasattr(src, "pread"):
        return Source(src, props), None
    if hasattr(src, "read") and hasattr(src, "seek"):
        return Source(FileRanges(src), props), src
    return Source(src, props), None


def open_view(src, *, decryption=None, kms=None, cache_bytes: int = DEFAULT_CACHE_BYTES, threads: int = 1,
              close_source: bool = False) -> PlaintextView:
    """A seekable read-only binary file presenting the plaintext Parquet file of the PME
    file ``src`` (a local path, a seekable binary file object or a RangeReader); a
    plaintext Parquet file passes through unchanged. Its ``size`` is the plaintext
    view's size; ``decrypted_bytes`` counts the bytes decrypted so far.

    ``decryption``: None, a ``DecryptionConfig``/pyarrow ``DecryptionConfiguration``
    (keys unwrapped by ``kms``, default the local keystore) or explicit
    ``DecryptionProperties``. Missing keys raise KeyNotFound/KeyAccessDenied here,
    naming the column; tampering raises InvalidTag when the reader reaches it.
    ``cache_bytes``: bound of the cache of decrypted pages a reader read in part.
    ``threads``: native threads per page batch. ``close_source``: closing the view also
    closes the file object ``src``."""
    s, fileobj = _source(src, decryption, kms)
    try:
        return PlaintextView(s, cache_bytes=cache_bytes, threads=threads,
                             close_source=fileobj if close_source else None)
    except BaseException:
        s.close()
        raise


def view_size(src, *, decryption=None, kms=None) -> int:
    """The size of ``src``'s plaintext view (what ``open_view(src).size`` is): reads and
    decrypts the footer only."""
    s, _ = _source(src, decryption, kms)
    with s:
        return build_layout(s).size
