"""The module plan of a column chunk: where each page header and page body lies, with
its PME module types and page ordinals.

One walker builds it for every use: reading and verifying a chunk, inspect's look at
the DataPageV2 framing, relocation (the source offsets of the page headers, which the
offset index points to) and the tests' probes. A plaintext chunk is walked header by
header. An encrypted chunk is walked by its modules' length prefixes (in C) with all
page headers decrypted in one call; where that layout does not hold (parquet-java's
DataPageV2 framing, DuckDB's page sizes, damage) one header is decrypted at a time.
That careful walk can also be tolerant, for verify reports: a header that fails is
recorded and stepped over, and where the framing breaks the walk stops with one failure
naming the bytes left unchecked.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Callable

import numpy as np

from .._nativeio import ffi, lib
from ..crypto import ModuleType
from ..crypto.cipher import LEN_PREFIX, NONCE_LEN, TAG_LEN
from ..errors import InvalidTag, MalformedFile, MalformedModule
from . import thrift
from .layout import PageType

MAX_DATA_PAGES = 32768           # page ordinals are int16
GCM_OVERHEAD = LEN_PREFIX + NONCE_LEN + TAG_LEN
_le32 = struct.Struct("<I").unpack_from


@dataclass(frozen=True)
class Module:
    """One page module: its type, ordinals, and where it lies (file offset of its length
    prefix, whole length); ``levels`` plaintext bytes precede a page module in
    parquet-java's DataPageV2 framing. ``page`` is None for dictionary pages."""

    kind: ModuleType
    rg: int | None
    col: int | None
    page: int | None
    offset: int
    length: int
    levels: int = 0


@dataclass(frozen=True, kw_only=True)
class ChunkPlan:
    """The pages of one column chunk, one entry per page in file order. Offsets are file
    offsets; lengths are bytes on disk (module framing included)."""

    rg: int
    col: int
    start: int
    end: int
    encrypted: bool
    dictionary: bool              # the first page is the dictionary page
    headers: list                 # PageHeader dicts as stored; None where a tolerant walk could not read one
    header_offsets: np.ndarray
    header_lengths: np.ndarray
    body_offsets: np.ndarray      # first byte of the page body (of its module, when encrypted)
    body_lengths: np.ndarray
    levels: np.ndarray            # plaintext level bytes just before the page module (parquet-java V2 framing)
    framing: str | None = None    # DataPageV2 framing of an encrypted chunk: "arrow" or "parquet-java"

    def __len__(self) -> int:
        return len(self.headers)

    @property
    def ordinals(self) -> np.ndarray:
        """PME page ordinal of each page (0 for the dictionary page)."""
        o = np.arange(len(self), dtype=np.int64)
        if self.dictionary and len(o):
            o -= 1
            o[0] = 0
        return o

    def _types(self, dictionary: ModuleType, data: ModuleType) -> np.ndarray:
        t = np.full(len(self), data, dtype=np.uint8)
        if self.dictionary and len(t):
            t[0] = dictionary
        return t

    @property
    def header_types(self) -> np.ndarray:
        return self._types(ModuleType.DICTIONARY_PAGE_HEADER, ModuleType.DATA_PAGE_HEADER)

    @property
    def body_types(self) -> np.ndarray:
        return self._types(ModuleType.DICTIONARY_PAGE, ModuleType.DATA_PAGE)

    def modules(self) -> list[Module]:
        """Header and page module of every page, in file order (encrypted chunks)."""
        out = []
        ords, ht, bt = self.ordinals.tolist(), self.header_types.tolist(), self.body_types.tolist()
        for i in range(len(self)):
            page = None if (self.dictionary and i == 0) else ords[i]
            out.append(Module(ModuleType(ht[i]), self.rg, self.col, page, int(self.header_offsets[i]),
                              int(self.header_lengths[i])))
            out.append(Module(ModuleType(bt[i]), self.rg, self.col, page, int(self.body_offsets[i]),
                              int(self.body_lengths[i]), int(self.levels[i])))
        return out


@dataclass(frozen=True, kw_only=True)
class ChunkSpot:
    """What a walker knows about a column chunk before reading it."""

    rg: int
    col: int
    start: int
    end: int
    dictionary: bool
    name: str                     # the file, for messages
    where: str                    # "column a.b (row group 3)", for messages


class _NotFast(Exception):
    pass


def _decode(buf, pos: int, spot: ChunkSpot, what: str):
    try:
        return thrift.decode("PageHeader", buf, pos)
    except thrift.DecodeError as exc:
        raise MalformedFile(f"{spot.name}: cannot parse {what} of {spot.where}: {exc}") from None


def _plan(spot: ChunkSpot, encrypted: bool, headers, hoffs, hlens, boffs, blens, levels, framing=None) -> ChunkPlan:
    i64 = np.int64
    return ChunkPlan(rg=spot.rg, col=spot.col, start=spot.start, end=spot.end, encrypted=encrypted,
                     dictionary=spot.dictionary, headers=headers, header_offsets=np.asarray(hoffs, i64),
                     header_lengths=np.asarray(hlens, i64), body_offsets=np.asarray(boffs, i64),
                     body_lengths=np.asarray(blens, i64),
                     levels=np.asarray(levels, i64) if levels is not None else np.zeros(len(headers), i64),
                     framing=framing)


def plan_plain(spot: ChunkSpot, buf, base: int) -> ChunkPlan:
    """The plan of a plaintext chunk whose bytes are ``buf[o - base]``."""
    return walk_plain(spot, buf, base, spot.start, spot.end)[0]


def walk_plain(spot: ChunkSpot, buf, base: int, pos: int, avail: int) -> tuple[ChunkPlan, int]:
    """The pages of a plaintext chunk from file offset ``pos`` that lie whole before
    ``avail`` (``buf[o - base]`` holds the bytes up to there), and the offset after them.
    With ``avail`` short of the chunk's end, the walk stops at the first page not read
    whole; what overruns the chunk is malformed either way."""
    end = spot.end - base
    stop = avail - base
    view = buf[:stop]
    pos -= base
    headers, hoffs, hlens, boffs, blens = [], [], [], [], []
    while pos < stop:
        try:
            hdr, hend = thrift.decode("PageHeader", view, pos)
        except thrift.DecodeError as exc:
            if stop < end:
                break   # perhaps a header cut by ``avail``
            raise MalformedFile(f"{spot.name}: cannot parse page header at offset {base + pos} of "
                                f"{spot.where}: {exc}") from None
        size = hdr.get("compressed_page_size")
        if size is None or size < 0 or size > end - hend:
            raise MalformedFile(f"{spot.name}: page at offset {base + pos} of {spot.where} overruns its column chunk")
        if size > stop - hend:
            break
        headers.append(hdr)
        hoffs.append(base + pos)
        hlens.append(hend - pos)
        boffs.append(base + hend)
        blens.append(size)
        pos = hend + size
    return _plan(spot, False, headers, hoffs, hlens, boffs, blens, None), base + pos


def plan_encrypted(spot: ChunkSpot, gcm, *, page_overhead: int, duckdb: bool = False, buf=None, base: int = 0,
                   read: Callable | None = None, failures=None, max_pages: int | None = None) -> ChunkPlan:
    """The plan of an encrypted chunk: its bytes are ``buf[o - base]``, or come from
    ``read(offset, length)`` (then only the module prefixes and the headers are read).
    ``gcm`` decrypts the page headers; ``page_overhead``: the framing bytes of a page
    module. ``failures``: a tolerant walk, appending what fails there instead of raising.
    ``max_pages``: stop after that many pages."""
    if read is None:
        if buf is None:
            raise ValueError(f"{spot.name}: the plan of {spot.where} needs its bytes or a read function")
        chunk = buf

        def read(off: int, n: int):
            return chunk[off - base:off - base + n]
    if not duckdb and failures is None and max_pages is None:
        try:
            shortest = min(page_overhead, GCM_OVERHEAD)
            if buf is not None:
                offs, lens = _walk_prefixes(buf, spot.start - base, spot.end - base, shortest)
                return _plan_fast(spot, gcm, page_overhead, offs + base, lens, buf, offs[0::2])
            offs, lens, hbuf, hoffs = _walk_prefixes_sparse(read, spot.start, spot.end, shortest)
            return _plan_fast(spot, gcm, page_overhead, offs, lens, hbuf, hoffs)
        except _NotFast:
            pass
    return _plan_careful(spot, gcm, read, page_overhead, duckdb, failures, max_pages)


_MAX_MODULES = 2 * (MAX_DATA_PAGES + 1)   # header and page module of every page a chunk may hold


def _walk_prefixes(buf, start: int, end: int, shortest: int):
    """Offsets and framed lengths of the length-prefixed modules filling buf[start:end]
    (walked in C); raises _NotFast when one overruns ``end``, is shorter than
    ``shortest`` (damage: zeroed bytes read as 4-byte modules) or there are more than a
    chunk can hold."""
    parts_o, parts_l = [], []
    total = 0
    cap = 1024
    src = ffi.from_buffer(buf)
    nxt = ffi.new("uint64_t *")
    try:
        pos = start
        while pos < end:
            o = np.empty(cap, np.int64)
            ln = np.empty(cap, np.int64)
            n = lib.pq_walk_modules(ffi.cast("uint8_t *", src), pos, end, ffi.cast("uint64_t *", o.ctypes.data),
                                    ffi.cast("uint64_t *", ln.ctypes.data), cap, nxt)
            total += n
            if n < 0 or total > _MAX_MODULES or (n and int(ln[:n].min()) < shortest):
                raise _NotFast
            parts_o.append(o[:n])
            parts_l.append(ln[:n])
            pos = int(nxt[0])
            cap = min(cap * 4, _MAX_MODULES + 1)
    finally:
        ffi.release(src)
    if len(parts_o) == 1:     # trimmed: a plan kept by a reader (the view's LRU) keeps these
        return parts_o[0].copy(), parts_l[0].copy()
    return (np.concatenate(parts_o), np.concatenate(parts_l)) if parts_o else \
        (np.zeros(0, np.int64), np.zeros(0, np.int64))


_SPARSE_BLOCK = 4 << 10   # a page header module and the next prefix fit, as a rule


def _walk_prefixes_sparse(read: Callable, start: int, end: int, shortest: int):
    """What _walk_prefixes finds (file offsets, same limits), reading only blocks that
    hold a module prefix and the header modules (every other module) themselves; also
    returns the header modules one after the other in one buffer, and their offsets in
    it. For pages that need not be read (CTR pages, which carry no tag, when verifying)."""
    offs: list[int] = []
    lens: list[int] = []
    hmods: list[bytes] = []
    lo = hi = start
    block = b""
    pos = start
    while pos < end:
        if end - pos < LEN_PREFIX:
            raise _NotFast
        if pos + LEN_PREFIX > hi:
            lo, hi = pos, min(end, pos + _SPARSE_BLOCK)
            block = read(lo, hi - lo)
        ln = _le32(block, pos - lo)[0] + LEN_PREFIX
        if ln > end - pos or ln < shortest or len(offs) == _MAX_MODULES:
            raise _NotFast
        if not len(offs) % 2:
            hmods.append(bytes(block[pos - lo:pos - lo + ln]) if pos + ln <= hi else bytes(read(pos, ln)))
        offs.append(pos)
        lens.append(ln)
        pos += ln
    hlens = np.fromiter(map(len, hmods), np.int64, len(hmods))
    hoffs = np.zeros(len(hmods), np.int64)
    if len(hmods) > 1:
        np.cumsum(hlens[:-1], out=hoffs[1:])
    return np.asarray(offs, np.int64), np.asarray(lens, np.int64), b"".join(hmods), hoffs


def _plan_fast(spot: ChunkSpot, gcm, page_overhead: int, offs, lens, hbuf, hbuf_offs) -> ChunkPlan:
    """Header module, page module, header module... (``offs``, ``lens``: file offsets and
    lengths of every module): all headers, found in ``hbuf`` at ``hbuf_offs``, decrypted
    in one call. Raises _NotFast when the chunk is laid out otherwise or anything
    disagrees."""
    if len(offs) % 2:
        raise _NotFast
    hoffs, hlens, poffs, plens = offs[0::2], lens[0::2], offs[1::2], lens[1::2]
    n = len(hoffs)
    if not n:
        return _plan(spot, True, [], hoffs, hlens, poffs, plens, None)
    if n - spot.dictionary > MAX_DATA_PAGES:
        raise MalformedFile(f"{spot.name}: more than {MAX_DATA_PAGES} data pages in {spot.where}")
    if int(plens.min()) < page_overhead or int(hlens.min()) < GCM_OVERHEAD:
        raise _NotFast
    probe = _plan(spot, True, [None] * n, hoffs, hlens, poffs, plens, None)
    try:
        hb = gcm.decrypt_batch(hbuf, offsets=hbuf_offs, lengths=hlens, module_type=probe.header_types,
                               row_group=spot.rg, column=spot.col, page=probe.ordinals)
    except (InvalidTag, MalformedModule):
        raise _NotFast from None
    headers = []
    plens_l, hb_lens = plens.tolist(), hb.lengths.tolist()
    v2 = False
    for i in range(n):
        hdr, hend = _decode(hb[i], 0, spot, f"decrypted page header {i}")
        if hend != hb_lens[i] or hdr.get("compressed_page_size") != plens_l[i]:
            raise _NotFast
        t = hdr.get("type")
        if t == PageType.DICTIONARY_PAGE and not (i == 0 and spot.dictionary):
            raise _NotFast
        v2 = v2 or t == PageType.DATA_PAGE_V2
        headers.append(hdr)
    return _plan(spot, True, headers, hoffs, hlens, poffs, plens, None, "arrow" if v2 else None)


def _plan_careful(spot: ChunkSpot, gcm, read: Callable, page_overhead: int, duckdb: bool, failures,
                  max_pages: int | None) -> ChunkPlan:
    """One header decrypted at a time; the page sizes come from the headers (DuckDB: from
    the page modules' prefixes), both DataPageV2 framings recognised per page."""
    end = spot.end
    headers: list[dict | None] = []  # None: a header that failed (tolerant walk)
    hoffs: list[int] = []
    hlens: list[int] = []
    boffs: list[int] = []
    blens: list[int] = []
    levels: list[int] = []
    framing = None
    pos = spot.start
    ordinal = 0

    def prefix(off: int) -> int:
        """The framed length of the module at ``off`` (0 when no prefix fits before the end)."""
        return _le32(read(off, 4), 0)[0] + LEN_PREFIX if end - off >= LEN_PREFIX else 0

    def broken(what: str) -> None:
        if failures is None:
            raise MalformedFile(f"{spot.name}: {what} ({spot.where})")
        failures.append({"module": "PAGES", "page": None, "offset": pos, "end": end,
                         "error": f"MalformedFile: {what}: the module framing is broken; bytes {pos}..{end} of "
                                  "the chunk were not checked"})

    while pos < end and (max_pages is None or len(headers) < max_pages):
        is_dict = spot.dictionary and not headers
        if not is_dict and ordinal >= MAX_DATA_PAGES:
            broken(f"more than {MAX_DATA_PAGES} data pages")
            break
        hl = prefix(pos)
        if hl < GCM_OVERHEAD or hl > end - pos:
            broken(f"page header module at offset {pos} is truncated")
            break
        htype = ModuleType.DICTIONARY_PAGE_HEADER if is_dict else ModuleType.DATA_PAGE_HEADER
        hdr = None
        try:
            hdr, _ = _decode(gcm.decrypt(read(pos, hl), htype, spot.rg, spot.col, 0 if is_dict else ordinal), 0,
                             spot, f"decrypted page header at offset {pos}")
            size = hdr.get("compressed_page_size")
            if size is None or size < 0:
                raise MalformedFile(f"{spot.name}: page header at offset {pos} of {spot.where} has no size")
        except (InvalidTag, MalformedModule, MalformedFile) as exc:
            if failures is None:
                raise
            failures.append({"module": htype.name, "page": None if is_dict else ordinal, "offset": pos,
                             "error": f"{type(exc).__name__}: {exc}"})
            hdr = None
        hoff = pos
        pos += hl
        if hdr is None or duckdb:
            size = prefix(pos)        # the page module's own length
        if size > end - pos:
            pos = hoff
            broken(f"page at offset {hoff} overruns its column chunk")
            break
        lev = 0
        if hdr is not None and not duckdb and hdr.get("type") == PageType.DATA_PAGE_V2:
            if size >= LEN_PREFIX and prefix(pos) != size:
                v2 = hdr.get("data_page_header_v2") or {}
                lev = int(v2.get("definition_levels_byte_length") or 0) + \
                    int(v2.get("repetition_levels_byte_length") or 0)
                if lev < 0 or lev + LEN_PREFIX > size or prefix(pos + lev) + lev != size:
                    pos = hoff
                    broken(f"DataPageV2 at offset {hoff} matches neither framing")
                    break
                framing = "parquet-java"
            elif framing is None:
                framing = "arrow"
        if size - lev < page_overhead:
            broken(f"page module at offset {pos + lev} is shorter than its framing")
            break
        headers.append(hdr)
        hoffs.append(hoff)
        hlens.append(hl)
        boffs.append(pos + lev)
        blens.append(size - lev)
        levels.append(lev)
        if not is_dict:
            ordinal += 1
        pos += size
    return _plan(spot, True, headers, hoffs, hlens, boffs, blens, levels, framing)
