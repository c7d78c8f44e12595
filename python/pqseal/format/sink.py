"""Writing a Parquet file, plaintext or PME-encrypted, from plaintext column chunks.

Pages are encrypted per column chunk in two native batch calls (all page bodies, then
all page headers, whose sizes and CRCs depend on the encrypted bodies) straight from
the source buffer into one output buffer, then written with ``writev``: page bytes are
copied once on their way out. Column metadata modules of the whole file go in one
call at the end. Offsets and sizes are relocated as the spec requires.
"""

from __future__ import annotations

import os
import zlib
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from .._nativeio import lib
from ..crypto import Batch, CtrModuleCipher, GcmModuleCipher, ModuleKey, ModuleType, random_bytes
from ..errors import InvalidOrdinal, MalformedFile
from . import _buffers, thrift
from .structs import (AesGcmV1, BloomFilterHeader, ColumnChunk, ColumnMetaData, EncryptionAlgorithm,
                      EncryptionWithColumnKey, FileCryptoMetaData, FileMetaData, OffsetIndex)
from .layout import AAD_FILE_UNIQUE_LEN, MAGIC, MAGIC_ENCRYPTED, PageType, dotted
from .properties import EncryptionProperties
from .source import Chunk, Pages

_IOV_MAX = 1024
# Writes go to the kernel in calls of at most 1 MiB. A larger write makes the page cache
# allocate 2 MiB folios, and on machines where free memory is fragmented or handed back
# to a hypervisor (balloon free page reporting) those allocations were erratically slow:
# unseal of a 1.16 GB file took 1.5-2.7 s with whole-chunk writes, 0.39-0.47 s with 1 MiB
# writes, in the same interleaved run (ext4; seal 0.88 s -> 0.66 s median).
_WRITE_MAX = 1 << 20
# Pages of a column chunk are encrypted and written in groups of about this many bytes:
# the ciphertext buffer stays this small (ParquetWriter's memory bound) and in cache.
_GROUP_BYTES = 8 << 20
# With ``writeback``, the kernel is told to start writing the output to disk every this
# many bytes, so that the closing fsync waits for the last few MiB instead of the file.
_WRITEBACK_BYTES = 8 << 20


def _page_groups(lens: np.ndarray, limit: int) -> list[tuple[int, int]]:
    """[lo, hi) ranges of consecutive pages of at most ``limit`` bytes together (at least
    one page each)."""
    groups = []
    lo, total = 0, 0
    for i, ln in enumerate(lens.tolist()):
        if i > lo and total + ln > limit:
            groups.append((lo, i))
            lo, total = i, 0
        total += ln
    if lo < len(lens):
        groups.append((lo, len(lens)))
    return groups


def _room(buf: np.ndarray | None, need: int) -> np.ndarray:
    """``buf``, or a larger buffer when it holds fewer than ``need`` bytes."""
    return buf if buf is not None and len(buf) >= need else np.empty(need, dtype=np.uint8)


def _encode(name: str, obj: Mapping[str, object], where: str) -> bytes:
    try:
        return thrift.encode(name, obj)
    except thrift.EncodeError as exc:
        raise MalformedFile(f"{where}: the source's {name} cannot be rewritten: {exc}") from None


def _signed32(v: int) -> int:
    return v - (1 << 32) if v >= 1 << 31 else v


def _crc(*parts) -> int:
    c = 0
    for p in parts:
        c = zlib.crc32(p, c)
    return _signed32(c)


class _ColumnPlan:
    __slots__ = ("key_index", "footer_key", "key_metadata")

    def __init__(self, key_index, footer_key, key_metadata):
        self.key_index, self.footer_key, self.key_metadata = key_index, footer_key, key_metadata


@dataclass(frozen=True, kw_only=True)
class ChunkRecord:
    """Where one column chunk went: what the footer and the page indexes need."""

    meta: ColumnMetaData                  # the output ColumnMetaData (relocated)
    pages: dict[int, tuple[int, int]]     # source page-header offset -> (new offset, new size)
    start: int                            # the chunk's first byte in the output
    end: int                              # one past its last byte


class Sink:
    """An output file being written from its first byte: ``target`` is a file descriptor
    positioned at 0, a ``bytearray`` that the file's bytes are appended to, or a
    writable binary file object (e.g. of an fsspec file system) positioned at 0."""

    def __init__(self, target, paths: list, encryption: EncryptionProperties | None = None, *,
                 backend: str | None = None, name: str = "output", size_hint: int = 0, writeback: bool = False):
        self.memory = target if isinstance(target, bytearray) else None
        self.fileobj = target if self.memory is None and hasattr(target, "write") else None
        self.fd = -1 if self.memory is not None or self.fileobj is not None else int(target)
        self.pos = 0
        # Reserve the blocks the output will need up front (not on tmpfs): writes into the
        # page cache then skip the file system's per-write block reservation, which costs
        # more than the copy itself on ext4. Blocks past the end are released by truncate()
        # (also after a failed reservation, which may have reserved part of the range).
        # Releasing them costs about a millisecond on ext4 (as much as sealing a 1 MB
        # file), so callers pass a low estimate and truncate() is skipped when the output
        # reached it.
        self.preallocated = size_hint > 0 and self.fd >= 0
        self._reserved_end = 0
        if self.preallocated:
            lib.pq_preallocate(self.fd, 0, size_hint)
            self._reserved_end = size_hint
        # writeback: start writing the output to disk while it is produced (the caller
        # fsyncs it at the end); _written_back: bytes handed to writeback so far
        self.writeback = writeback and self.fd >= 0
        self._written_back = 0
        self.paths = paths
        self.enc = encryption
        self.name = name
        self.gcm: GcmModuleCipher | None = None
        self.ctr: CtrModuleCipher | None = None
        self.aad_file_unique: bytes | None = None
        self.saw_v2 = False   # a DataPageV2 page was written (its framing matters to readers)
        self.plans: list[_ColumnPlan | None] = [None] * len(paths)
        # (rg, col, key_index, serialized ColumnMetaData, ColumnChunk dict)
        self._meta_modules: list[tuple[int, int, int, bytes, ColumnChunk]] = []
        # page output buffer, reused across chunks and files (no page faults per chunk)
        self._scratch: np.ndarray | None = _buffers.take("sink")
        self._keys: list[ModuleKey] = []
        if encryption is not None:
            self._plan(encryption, backend)
        self._write(MAGIC_ENCRYPTED if (encryption and not encryption.plaintext_footer) else MAGIC)

    # ---- planning ----------------------------------------------------------------------

    def _plan(self, enc: EncryptionProperties, backend) -> None:
        by_path = {dotted(p): i for i, p in enumerate(self.paths)}
        unknown = sorted(set(enc.column_keys) - set(by_path))
        if unknown:
            raise ValueError(f"{self.name}: column keys for columns not in the schema: {', '.join(unknown)} "
                             f"(columns: {', '.join(sorted(by_path))})")
        keys = [enc.footer_key]
        index = {enc.footer_key: 0}
        for i, p in enumerate(self.paths):
            ck = enc.column(dotted(p))
            if ck is None:
                continue
            if ck.key is None:
                self.plans[i] = _ColumnPlan(0, True, None)
            else:
                if ck.key not in index:
                    index[ck.key] = len(keys)
                    keys.append(ck.key)
                self.plans[i] = _ColumnPlan(index[ck.key], False, ck.key_metadata)
        self.aad_file_unique = random_bytes(AAD_FILE_UNIQUE_LEN)
        self.file_aad = (enc.aad_prefix or b"") + self.aad_file_unique
        self._keys = [ModuleKey(k) for k in keys]
        self.gcm = GcmModuleCipher(self._keys, self.file_aad, backend=backend)
        if enc.algorithm == "AES_GCM_CTR_V1":
            self.ctr = CtrModuleCipher(self._keys, backend=backend)

    def max_key_invocations(self) -> int:
        """The most modules encrypted so far under one of the output's keys (counted per
        key in this process: a key given for several files counts them all)."""
        return max((k.invocations for k in self._keys), default=0)

    def _encryption(self) -> tuple[EncryptionProperties, GcmModuleCipher]:
        """The properties and GCM cipher of an encrypted output (columns have plans only then)."""
        if self.enc is None or self.gcm is None:
            raise ValueError(f"{self.name}: the output is not encrypted")
        return self.enc, self.gcm

    def reserve(self, nbytes: int) -> None:
        """Reserve blocks for the next ``nbytes`` of a file being written piece by piece
        (see the reservation in ``__init__``); :meth:`truncate` releases what is left."""
        if self.fd >= 0 and nbytes > 0:
            lib.pq_preallocate(self.fd, self.pos, nbytes)
            self.preallocated = True
            self._reserved_end = max(self._reserved_end, self.pos + nbytes)

    def truncate(self) -> None:
        """Release blocks reserved past the end of what was written."""
        if self.preallocated and self.pos < self._reserved_end:
            os.ftruncate(self.fd, self.pos)

    def close(self) -> None:
        _buffers.give("sink", self._scratch)
        self._scratch = None
        for k in self._keys:
            k.close()

    # ---- output ------------------------------------------------------------------------

    def _write(self, data) -> int:
        off = self.pos
        self._writev([data])
        return off

    def _writev(self, parts: list) -> None:
        """Write ``parts`` in order, in system calls of at most _WRITE_MAX bytes."""
        group, size = [], 0
        for p in parts:
            mv = memoryview(p)
            while len(mv):
                take = min(len(mv), _WRITE_MAX - size)
                group.append(mv[:take])
                size += take
                mv = mv[take:]
                if size == _WRITE_MAX or len(group) == _IOV_MAX:
                    self._writev_group(group, size)
                    group, size = [], 0
        if group:
            self._writev_group(group, size)

    def _writev_group(self, group: list, total: int) -> None:
        if self.memory is not None:
            for g in group:
                self.memory += g
            self.pos += total
            return
        if self.fileobj is not None:
            for g in group:
                self.fileobj.write(g)
            self.pos += total
            return
        try:
            done = os.writev(self.fd, group)
            if done != total:  # short write: finish piecewise
                skip = done
                for g in group:
                    if skip >= len(g):
                        skip -= len(g)
                        continue
                    self._write_raw(g[skip:])
                    skip = 0
        except OSError as exc:  # name the output, not its temporary file
            raise OSError(exc.errno, f"cannot write {self.name}: {exc.strerror}") from None
        self.pos += total
        if self.writeback and self.pos - self._written_back >= _WRITEBACK_BYTES:
            lib.pq_start_writeback(self.fd, self._written_back, self.pos - self._written_back)
            self._written_back = self.pos

    def _write_raw(self, mv) -> None:
        while mv:
            w = os.write(self.fd, mv)
            mv = mv[w:]

    # ---- column chunks -----------------------------------------------------------------

    def write_chunk(self, ch: Chunk) -> ChunkRecord:
        """Write one column chunk; returns where it went (for the footer and page indexes).
        Its pages come in parts (:meth:`Chunk.parts`), each written before the next is
        read."""
        plan = self.plans[ch.col] if self.enc is not None else None
        if ch.buf is None and ch.stream is None:
            raise ValueError(f"{self.name}: column {dotted(ch.path)} (row group {ch.rg}) was read without its pages")
        where = f"{self.name}: column {dotted(ch.path)} (row group {ch.rg})"
        if plan is not None and (ch.rg > 32767 or ch.col > 32767):
            raise InvalidOrdinal(f"row group {ch.rg} / column {ch.col} exceed the PME ordinal limit 32767")
        start = self.pos
        pages: dict[int, tuple[int, int]] = {}
        first_data = None
        has_dict = False
        seen = 0                  # pages of the chunk written so far
        disk_header_bytes = new_header_bytes = 0
        for part in ch.parts():
            headers, buf, offs, lens = part.plan.headers, part.buf, part.offs, part.lens
            n = len(headers)
            types = [h.get("type") for h in headers]
            self.saw_v2 = self.saw_v2 or PageType.DATA_PAGE_V2 in types
            if PageType.INDEX_PAGE in types:
                raise MalformedFile(f"{self.name}: INDEX_PAGE pages are not supported")
            if seen == 0:
                has_dict = bool(types) and types[0] == PageType.DICTIONARY_PAGE
            first = 1 if seen == 0 and has_dict else 0   # the chunk's dictionary page is in this part
            src_offsets = part.src_header_offsets   # a list built per access
            disk_header_bytes += part.disk_header_bytes
            if plan is None:
                parts = []
                pos = self.pos
                for i, h in enumerate(headers):
                    o, ln = int(offs[i]), int(lens[i])
                    body = buf[o:o + ln]
                    h = dict(h)
                    h["compressed_page_size"] = ln
                    if "crc" in h:
                        h["crc"] = _crc(body)
                    hb = _encode("PageHeader", h, where)
                    parts += [hb, body]
                    if first_data is None and types[i] != PageType.DICTIONARY_PAGE:
                        first_data = pos
                    pages[src_offsets[i]] = (pos, len(hb) + ln)
                    pos += len(hb) + ln
                    new_header_bytes += len(hb)
                self._writev(parts)
                seen += n
                continue
            if PageType.DICTIONARY_PAGE in types[first:]:
                raise MalformedFile(f"{self.name}: dictionary page after data pages in {dotted(ch.path)}")
            if seen + n - has_dict > 32768:
                raise InvalidOrdinal(f"column {dotted(ch.path)} in row group {ch.rg} has "
                                     f"{'more than 32768' if ch.stream is not None else n - has_dict} "
                                     "data pages; PME allows at most 32768 per column chunk")
            # PME page ordinals count data pages; the dictionary page has none (0)
            ords = np.arange(seen, seen + n, dtype=np.int32) - np.int32(has_dict)
            btypes = np.full(n, ModuleType.DATA_PAGE.value, np.uint8)
            htypes = np.full(n, ModuleType.DATA_PAGE_HEADER.value, np.uint8)
            if first:
                ords[0] = 0
                btypes[0] = ModuleType.DICTIONARY_PAGE
                htypes[0] = ModuleType.DICTIONARY_PAGE_HEADER
            enc, gcm = self._encryption()
            levels = self._v2_levels(ch, headers, types, lens, enc.v2_framing)
            page_cipher = self.ctr or gcm
            if levels is not None:
                offs, lens = offs + levels, lens - levels
            for lo, hi in _page_groups(lens, _GROUP_BYTES):
                # pages in groups of about _GROUP_BYTES, written before the next group is
                # encrypted, so the ciphertext buffer stays small whatever the chunk's size
                lev = levels[lo:hi].tolist() if levels is not None else [0] * (hi - lo)
                blens = (lens[lo:hi] + page_cipher.overhead).tolist()
                # one call for headers and bodies when it can (GCM pages, no plaintext levels,
                # no CRCs); otherwise the bodies first, as the header CRCs cover them
                fused = page_cipher is gcm and levels is None and not any("crc" in h for h in headers[lo:hi])
                if fused:
                    # header module, page module, header module... in file order, straight
                    # into the output buffer
                    hdrs = self._page_headers(part, lo, hi, lev, blens, None, where)
                    mods: list = []
                    for k, i in enumerate(range(lo, hi)):
                        o = int(offs[i])
                        mods += [hdrs[k], buf[o:o + int(lens[i])]]
                    self._scratch = _room(self._scratch, sum(blens) + sum(map(len, hdrs)) + len(hdrs) * gcm.overhead)
                    mtypes = np.empty(2 * (hi - lo), np.uint8)
                    mtypes[0::2], mtypes[1::2] = htypes[lo:hi], btypes[lo:hi]
                    out = gcm.encrypt_batch(mods, module_type=mtypes, row_group=ch.rg, column=ch.col,
                                            page=np.repeat(ords[lo:hi], 2), key_index=plan.key_index,
                                            out=self._scratch)
                    hm_lens = out.lengths[0::2].tolist()
                    parts = [self._scratch[:sum(hm_lens) + sum(blens)]]
                else:
                    self._scratch = _room(self._scratch, sum(blens))
                    bodies = page_cipher.encrypt_batch(buf, offsets=offs[lo:hi], lengths=lens[lo:hi],
                                                       module_type=btypes[lo:hi], row_group=ch.rg, column=ch.col,
                                                       page=ords[lo:hi], key_index=plan.key_index, out=self._scratch)
                    hmods = gcm.encrypt_batch(self._page_headers(part, lo, hi, lev, blens, bodies, where),
                                              module_type=htypes[lo:hi], row_group=ch.rg, column=ch.col,
                                              page=ords[lo:hi], key_index=plan.key_index)
                    hm_lens = hmods.lengths.tolist()
                    parts = []
                    for k, i in enumerate(range(lo, hi)):
                        parts.append(hmods[k])
                        if lev[k]:
                            o = int(part.offs[i])
                            parts.append(buf[o:o + lev[k]])
                        parts.append(bodies[k])
                pos = self.pos
                for k, i in enumerate(range(lo, hi)):
                    size = hm_lens[k] + lev[k] + blens[k]
                    if first_data is None and not (first and i == 0):
                        first_data = pos
                    pages[src_offsets[i]] = (pos, size)
                    pos += size
                self._writev(parts)
                new_header_bytes += sum(hm_lens)
            seen += n
        meta = ch.meta.copy()
        if has_dict:
            meta["dictionary_page_offset"] = start
        elif "dictionary_page_offset" in meta:
            del meta["dictionary_page_offset"]
        # a chunk of only a dictionary page (empty row group): keep the writer's convention
        meta["data_page_offset"] = first_data if first_data is not None else \
            (0 if ch.meta.get("data_page_offset", 0) <= 0 else start)
        meta["total_compressed_size"] = self.pos - start
        if "total_uncompressed_size" in meta:
            meta["total_uncompressed_size"] = (int(meta["total_uncompressed_size"]) - disk_header_bytes
                                               + new_header_bytes)
        if "index_page_offset" in meta:
            del meta["index_page_offset"]
        return ChunkRecord(meta=meta, pages=pages, start=start, end=self.pos)

    @staticmethod
    def _page_headers(part: Pages, lo: int, hi: int, lev: list[int], blens: list[int], bodies: Batch | None,
                      where: str) -> list[bytes]:
        """Serialized headers of pages [lo, hi) of ``part`` of an encrypted chunk: sizes
        as on disk (``lev``: plaintext level bytes, ``blens``: page modules), CRCs over
        the page modules ``bodies`` (None: no page has a CRC)."""
        hdrs = []
        for k, i in enumerate(range(lo, hi)):
            h = dict(part.plan.headers[i])
            h["compressed_page_size"] = lev[k] + blens[k]
            if "crc" in h and bodies is not None:
                o = int(part.offs[i])
                h["crc"] = _crc(part.buf[o:o + lev[k]], bodies[k])
            hdrs.append(_encode("PageHeader", h, where))
        return hdrs

    def _v2_levels(self, ch: Chunk, headers: list, types: list, lens: np.ndarray,
                   v2_framing: str) -> np.ndarray | None:
        """Per-page level bytes left in plaintext (parquet-java framing of DataPageV2), or None."""
        if v2_framing != "parquet-java" or PageType.DATA_PAGE_V2 not in types:
            return None
        lev = np.zeros(len(types), dtype=np.int64)
        for i, h in enumerate(headers):
            if types[i] == PageType.DATA_PAGE_V2:
                v2 = h.get("data_page_header_v2") or {}
                lev[i] = int(v2.get("definition_levels_byte_length") or 0) + \
                    int(v2.get("repetition_levels_byte_length") or 0)
                if not 0 <= lev[i] <= lens[i]:
                    raise MalformedFile(f"{self.name}: DataPageV2 level lengths exceed the page in {dotted(ch.path)}")
        return lev

    # ---- page indexes and bloom filters ------------------------------------------------

    def write_bloom_filter(self, rg: int, col: int, header: BloomFilterHeader, bitset) -> tuple[int, int]:
        hb = _encode("BloomFilterHeader", header, f"{self.name}: bloom filter of {dotted(self.paths[col])}")
        plan = self.plans[col] if self.enc is not None else None
        start = self.pos
        if plan is None:
            self._writev([hb, bitset])
        else:
            mods = self._encryption()[1].encrypt_batch([hb, bitset], module_type=np.array(
                [ModuleType.BLOOM_FILTER_HEADER, ModuleType.BLOOM_FILTER_BITSET], np.uint8),
                row_group=rg, column=col, key_index=plan.key_index)
            self._writev([mods[0], mods[1]])
        return start, self.pos - start

    def write_indexes(self, kind: ModuleType, entries: list[tuple[int, int, bytes]]) -> list[tuple[int, int]]:
        """Write serialized page-index structures of one kind (``kind``: COLUMN_INDEX or
        OFFSET_INDEX) of chunks ``(rg, col, data)`` one after another, those of encrypted
        columns as GCM modules encrypted in one call; returns (offset, length) of each."""
        parts: list[bytes | memoryview] = [data for _, _, data in entries]
        plans = [self.plans[col] if self.enc is not None else None for _, col, _ in entries]
        sealed = [(i, plan) for i, plan in enumerate(plans) if plan is not None]
        if sealed:
            mods = self._encryption()[1].encrypt_batch(
                [parts[i] for i, _ in sealed], module_type=kind,
                row_group=np.array([entries[i][0] for i, _ in sealed], np.int32),
                column=np.array([entries[i][1] for i, _ in sealed], np.int32),
                key_index=np.array([plan.key_index for _, plan in sealed], np.uint16))
            for j, (i, _) in enumerate(sealed):
                parts[i] = mods[j]
        spans = []
        pos = self.pos
        for part in parts:
            spans.append((pos, len(part)))
            pos += len(part)
        self._writev(parts)
        return spans

    def relocate_offset_index(self, rg: int, col: int, oi: OffsetIndex,
                              pages: dict[int, tuple[int, int]]) -> bytes:
        """``oi`` pointing at the output's pages (``pages``: a :class:`ChunkRecord`'s),
        serialized for :meth:`write_indexes`."""
        oi = oi.copy()
        locs = []
        for src_loc in oi.get("page_locations") or []:
            old = src_loc.get("offset")
            hit = None if old is None else pages.get(old)
            if hit is None:
                raise MalformedFile(f"{self.name}: offset index of {dotted(self.paths[col])} (row group {rg}) points "
                                    f"to offset {old}, which is no page header")
            loc = src_loc.copy()
            loc["offset"], loc["compressed_page_size"] = hit
            locs.append(loc)
        oi["page_locations"] = locs
        return _encode("OffsetIndex", oi, f"{self.name}: offset index of {dotted(self.paths[col])}")

    # ---- footer ------------------------------------------------------------------------

    def column_chunk(self, rg: int, col: int, src_cc: ColumnChunk, meta: ColumnMetaData) -> ColumnChunk:
        """The output ColumnChunk for a relocated ColumnMetaData (encrypted modules are
        queued and filled in by :meth:`finish`)."""
        cc = src_cc.copy()
        cc.pop("meta_data", None)
        cc.pop("crypto_metadata", None)
        cc.pop("encrypted_column_metadata", None)
        plan = self.plans[col] if self.enc is not None else None
        if plan is None:
            cc["meta_data"] = meta
            return cc
        enc = self._encryption()[0]
        if plan.footer_key:
            cc["crypto_metadata"] = {"ENCRYPTION_WITH_FOOTER_KEY": {}}
        else:
            ck: EncryptionWithColumnKey = {"path_in_schema": [p.encode() for p in self.paths[col]]}
            if plan.key_metadata is not None:
                ck["key_metadata"] = plan.key_metadata
            cc["crypto_metadata"] = {"ENCRYPTION_WITH_COLUMN_KEY": ck}
        if enc.plaintext_footer:
            redacted = meta.copy()   # a plaintext footer shows no statistics of an encrypted column
            redacted.pop("statistics", None)
            redacted.pop("encoding_stats", None)
            cc["meta_data"] = redacted
        elif plan.footer_key:
            cc["meta_data"] = meta
        if enc.plaintext_footer or not plan.footer_key:
            self._meta_modules.append((rg, col, plan.key_index, _encode("ColumnMetaData", meta,
                                       f"{self.name}: column {dotted(self.paths[col])}"), cc))
        return cc

    def finish(self, fmd: FileMetaData) -> None:
        """Encrypt the queued column metadata, then write the footer and trailer."""
        if self._meta_modules:
            mods = self._encryption()[1].encrypt_batch(
                [m[3] for m in self._meta_modules], module_type=ModuleType.COLUMN_META_DATA,
                row_group=np.array([m[0] for m in self._meta_modules], np.int32),
                column=np.array([m[1] for m in self._meta_modules], np.int32),
                key_index=np.array([m[2] for m in self._meta_modules], np.uint16))
            for i, m in enumerate(self._meta_modules):
                m[4]["encrypted_column_metadata"] = bytes(mods[i])
        fmd = fmd.copy()
        fmd.pop("encryption_algorithm", None)
        fmd.pop("footer_signing_key_metadata", None)
        enc = self.enc
        if enc is None:
            footer = _encode("FileMetaData", fmd, self.name)
            self._write(footer)
            self._write(len(footer).to_bytes(4, "little") + MAGIC)
            return
        # in field order: aad_prefix (1), aad_file_unique (2), supply_aad_prefix (3)
        params: AesGcmV1 = {}
        if enc.aad_prefix and enc.store_aad_prefix:
            params["aad_prefix"] = enc.aad_prefix
        params["aad_file_unique"] = self.aad_file_unique or b""
        params["supply_aad_prefix"] = not enc.store_aad_prefix
        algorithm: EncryptionAlgorithm = \
            {"AES_GCM_V1": params} if enc.algorithm == "AES_GCM_V1" else {"AES_GCM_CTR_V1": params}
        if enc.plaintext_footer:
            fmd["encryption_algorithm"] = algorithm
            if enc.footer_key_metadata is not None:
                fmd["footer_signing_key_metadata"] = enc.footer_key_metadata
            footer = _encode("FileMetaData", fmd, self.name)
            sig = self._encryption()[1].footer_signature(footer)
            self._write(footer)
            self._write(sig)
            self._write((len(footer) + len(sig)).to_bytes(4, "little") + MAGIC)
            return
        fcm: FileCryptoMetaData = {"encryption_algorithm": algorithm}
        if enc.footer_key_metadata is not None:
            fcm["key_metadata"] = enc.footer_key_metadata
        crypto = thrift.encode("FileCryptoMetaData", fcm)
        module = self._encryption()[1].encrypt(_encode("FileMetaData", fmd, self.name), ModuleType.FOOTER)
        self._write(crypto)
        self._write(module)
        self._write((len(crypto) + len(module)).to_bytes(4, "little") + MAGIC_ENCRYPTED)
