"""Reading Parquet files, plaintext or PME-encrypted, into plaintext column chunks.

A :class:`Source` reads the file with ``preadv`` (never through a mapping: a file
truncated while it is read then gives :class:`MalformedFile`, not SIGBUS), parses (and
if needed decrypts and verifies) the footer, and hands out one column chunk at a time as
plaintext pages in one buffer: bounded memory, about one column chunk. Where the pages
lie is the chunk's :class:`~.plan.ChunkPlan`. Dialects read: the spec's (parquet-java,
Arrow, pqseal), with both DataPageV2 framings detected per page, and DuckDB's (no AADs,
page sizes without the encryption framing).
"""

from __future__ import annotations

import errno
import functools
import os
import stat
import struct
import zlib
from dataclasses import dataclass
from typing import BinaryIO, Iterator, Protocol

import numpy as np

from ..crypto import CtrModuleCipher, GcmModuleCipher, ModuleKey, ModuleType
from ..crypto.cipher import LEN_PREFIX
from ..errors import InvalidTag, KeyNotFound, MalformedFile, PqsealError
from . import _buffers, thrift
from .footer_journal import restore as restore_footer
from .structs import BloomFilterHeader, ColumnChunk, ColumnMetaData, FileMetaData, OffsetIndex
from .layout import FOOTER_TRAILER, SIGNATURE_LEN, Tail, dotted, leaf_paths, read_tail
from .plan import GCM_OVERHEAD, ChunkPlan, ChunkSpot, plan_encrypted, plan_plain, walk_plain
from .properties import DecryptionProperties

_le32 = struct.Struct("<I").unpack_from
_BLOOM_HEADER_MAX = 1024  # bytes read to decode a plaintext BloomFilterHeader


@dataclass
class FileCrypto:
    """What the file says about its encryption (readable without keys)."""

    algorithm: str                 # AES_GCM_V1 / AES_GCM_CTR_V1
    plaintext_footer: bool
    aad_prefix: bytes | None       # stored prefix
    aad_file_unique: bytes | None
    supply_aad_prefix: bool
    footer_key_metadata: bytes | None
    dialect: str                   # "spec" or "duckdb"


# A plaintext column chunk larger than twice this is read for a copy in parts of about
# this many bytes of whole pages (or one page, when larger), each copied before the next
# is read: the read buffer stays this small and the pages are still in the CPU's cache
# when they are encrypted and written.
STREAM_BYTES = 8 << 20


@dataclass(frozen=True)
class Pages:
    """Consecutive plaintext pages of a column chunk: page ``i`` has header
    ``plan.headers[i]`` and body ``buf[offs[i]:offs[i] + lens[i]]``."""

    plan: ChunkPlan
    buf: memoryview | np.ndarray
    offs: np.ndarray
    lens: np.ndarray

    @property
    def src_header_offsets(self) -> list:
        """Source offset of each page header (for the offset index)."""
        return self.plan.header_offsets.tolist()

    @property
    def disk_header_bytes(self) -> int:
        """Bytes the page headers took in the source (framing included)."""
        return int(self.plan.header_lengths.sum())


@dataclass(kw_only=True)
class Chunk:
    """One column chunk as plaintext pages: page ``i`` has header ``headers[i]``
    (plaintext sizes) and body ``buf[offs[i]:offs[i] + lens[i]]``; where each page lay
    in the source is the chunk's ``plan``. A chunk read in parts (``stream``, for a copy)
    has neither ``plan`` nor ``buf``: its pages come from :meth:`parts`, once."""

    rg: int
    col: int
    path: tuple
    cc: ColumnChunk                 # the ColumnChunk as in the source footer
    meta: ColumnMetaData            # plaintext ColumnMetaData
    plan: ChunkPlan | None          # where the pages lie in the source (None: read in parts)
    buf: memoryview | np.ndarray | None   # None: read to verify only, or in parts
    offs: np.ndarray
    lens: np.ndarray
    encrypted: bool = False
    stream: Iterator[Pages] | None = None

    def parts(self) -> Iterator[Pages]:
        """The pages in file order, in parts; a part's bytes are valid until the next is taken."""
        if self.stream is not None:
            yield from self.stream
        elif self.plan is not None and self.buf is not None:
            yield Pages(self.plan, self.buf, self.offs, self.lens)

    @property
    def headers(self) -> list:
        if self.plan is None:
            raise ValueError("a chunk read in parts has its page headers in its parts")
        return self.plan.headers



@dataclass
class ColumnCrypto:
    encrypted: bool
    footer_key: bool = False
    key_metadata: bytes | None = None
    path_in_schema: tuple | None = None


MEMORY_NAME = "<memory>"


class RangeReader(Protocol):
    """Random access to a file that is neither a local path nor held in memory (a
    file of an fsspec file system, an encrypted spill): ``size`` bytes, read by range.
    A :class:`Source` given one reads only the ranges it needs."""

    size: int
    name: str

    def pread(self, offset: int, length: int) -> bytes | bytearray | memoryview: ...


class FileRanges:
    """A :class:`RangeReader` over a seekable binary file object (seek + read under a
    lock, so threads may share it)."""

    def __init__(self, fileobj, *, size: int | None = None, name: str | None = None):
        import threading

        self.f = fileobj
        self._lock = threading.Lock()
        if size is None:
            size = fileobj.seek(0, os.SEEK_END)
        self.size = int(size)
        self.name = name or str(getattr(fileobj, "name", None) or getattr(fileobj, "path", None) or MEMORY_NAME)

    def pread(self, offset: int, length: int) -> bytes:
        with self._lock:
            self.f.seek(offset)
            parts = []
            left = length
            while left > 0:
                got = self.f.read(left)
                if not got:
                    break
                parts.append(got)
                left -= len(got)
        return parts[0] if len(parts) == 1 else b"".join(parts)


def input_buffer(obj) -> memoryview:
    """A byte view of an in-memory Parquet file: bytes-like objects (``bytes``,
    ``bytearray``, ``memoryview``, numpy arrays, ``pyarrow.Buffer``), ``pyarrow``
    readers (``BufferReader``, ``NativeFile``) and binary file objects (read whole:
    memory grows with the file)."""
    if hasattr(obj, "read_buffer"):  # pyarrow NativeFile / BufferReader
        obj.seek(0)
        obj = obj.read_buffer()
    elif hasattr(obj, "read") and not isinstance(obj, (bytes, bytearray, memoryview)):
        if hasattr(obj, "seek"):
            obj.seek(0)
        obj = obj.read()
        if isinstance(obj, str):
            raise TypeError("the file object must be opened in binary mode")
    try:
        view = memoryview(obj)
    except TypeError:
        raise TypeError(f"expected a path, a bytes-like object or a binary file object, got "
                        f"{type(obj).__name__}") from None
    return view.cast("B") if view.format != "B" or view.ndim != 1 else view


def chunk_start(meta: ColumnMetaData, name: str) -> int:
    dpo = meta.get("data_page_offset")
    if dpo is None:
        raise MalformedFile(f"{name}: column chunk without data_page_offset")
    dico = meta.get("dictionary_page_offset")
    # Some writers store 0 for "no dictionary"; a dictionary always precedes the data
    # pages. A chunk of an empty row group may hold only its dictionary page, with
    # data_page_offset 0 (pyarrow).
    if dico is not None and dico > 0 and (dico < dpo or dpo <= 0):
        return dico
    return dpo


def _named(fn):
    """Re-raise InvalidTag from a per-column read with the file and column named."""
    import functools

    @functools.wraps(fn)
    def wrapper(self, rg, col, *args, **kwargs):
        try:
            return fn(self, rg, col, *args, **kwargs)
        except InvalidTag as exc:
            if exc.args and str(exc.args[0]).startswith(self.name + ":"):
                raise
            raise InvalidTag(f"{self.name}: column {dotted(self.paths[col])} (row group {rg}): {exc}",
                             index=exc.index, module_type=exc.module_type, row_group=rg, column=col,
                             page=exc.page) from None
    return wrapper


def _open_file(path: str) -> BinaryIO:
    """``path`` opened for reading, if it is a regular file. Opened without blocking: a
    FIFO would block the open until some process wrote to it (signals only set a flag,
    so the process would hang); nothing but a regular file has a size to read a footer
    from the end of."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), path)
        if not stat.S_ISREG(mode):
            raise MalformedFile(f"{os.path.basename(path)}: not a regular file (a FIFO, socket or device)")
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def _signed32(v: int) -> int:
    return v - (1 << 32) if v >= 1 << 31 else v


class Source:
    """An input file. Use as a context manager; ``close()`` closes it."""

    def __init__(self, path, decryption: DecryptionProperties | None = None, *, backend: str | None = None,
                 verify_footer: bool = True, check_crc: bool = True, reuse_buffers: bool = False):
        self._keys: dict[bytes, tuple[GcmModuleCipher, CtrModuleCipher | None]] = {}
        self._f: BinaryIO | None = None
        self._ranges: RangeReader | None = path if hasattr(path, "pread") and hasattr(path, "size") else None
        data = None if isinstance(path, (str, os.PathLike)) or self._ranges is not None else input_buffer(path)
        if self._ranges is not None:
            self.path = str(getattr(self._ranges, "name", None) or MEMORY_NAME)
        else:
            self.path = os.fspath(path) if data is None else MEMORY_NAME
        self.check_crc = check_crc
        # reuse_buffers: decrypted chunks share one buffer, valid until the next read_chunk
        # or close() (which keeps it for this thread's next file)
        self._scratch = _buffers.take("source") if reuse_buffers else None
        self._verify_buf: np.ndarray | None = None
        self._window: np.ndarray | None = None  # chunk read buffer, kept between chunks (reuse_buffers)
        self.name = os.path.basename(self.path)
        self.decryption = decryption
        self.backend = backend
        self.buf: memoryview | None
        self.fmd: FileMetaData | None = None  # None: encrypted footer and no keys given
        try:
            if self._ranges is not None:
                size = int(self._ranges.size)
                self.buf = None
            elif data is not None:
                size = len(data)
                self.buf = data  # the whole file, held in memory
            else:
                restore_footer(self.path)   # an interrupted in-place footer rewrite (key rotation)
                self._f = _open_file(self.path)
                size = os.fstat(self._f.fileno()).st_size
                self.buf = None  # a file is read with preadv, never mapped (a truncation is then an error, not SIGBUS)
            if size < 12:
                raise MalformedFile(f"{self.name}: {size} bytes is too small for a Parquet file")
            self.size = size
            self.tail: Tail = read_tail(self.read(0, 4), self.read(size - FOOTER_TRAILER, FOOTER_TRAILER), size,
                                        self.name)
            self.crypto: FileCrypto | None = None
            self.footer_bytes: bytes | None = None
            self._footer_cipher: GcmModuleCipher | None = None
            self._read_footer(verify_footer)
            self.paths: list[tuple[str, ...]] = []
            if self.fmd is not None:
                self.paths = leaf_paths(self.fmd.get("schema") or [], self.name)
                self._check_row_groups()
        except BaseException:
            self.close()
            raise

    # ---- reading -----------------------------------------------------------------------

    def read(self, offset: int, length: int, out: np.ndarray | None = None) -> memoryview:
        """The file's bytes [offset, offset + length) (into ``out`` when given). A range
        past the end, also of a file truncated while it is read, is a MalformedFile."""
        if offset < 0 or length < 0 or offset + length > self.size:
            raise MalformedFile(f"{self.name}: bytes {offset}..{offset + length} lie outside the "
                                f"{self.size}-byte file")
        if self.buf is not None:
            return self.buf[offset:offset + length]
        if self._ranges is not None:
            data = memoryview(self._ranges.pread(offset, length)).cast("B")
            if len(data) != length:
                raise MalformedFile(f"{self.name}: the file ends at offset {offset + len(data)}, before the "
                                    f"{self.size} bytes it had when opened (changed while being read)")
            if out is None:
                return data
            into = out.data.cast("B")[:length]
            into[:] = data
            return into
        if self._f is None:
            raise ValueError(f"{self.name}: read from a closed Source")
        view = (memoryview(bytearray(length)) if out is None else out.data)[:length]
        got = 0
        while got < length:
            r = os.preadv(self._f.fileno(), [view[got:]], offset + got)
            if r <= 0:
                raise MalformedFile(f"{self.name}: the file ends at offset {offset + got}, before the "
                                    f"{self.size} bytes it had when opened (changed while being read)")
            got += r
        return view

    # ---- footer ------------------------------------------------------------------------

    def _region(self) -> memoryview:
        t = self.tail
        return self.read(t.footer_offset, t.file_size - FOOTER_TRAILER - t.footer_offset)

    def _decode(self, name: str, buf, offset: int = 0, what: str | None = None):
        try:
            return thrift.decode(name, buf, offset)
        except thrift.DecodeError as exc:
            raise MalformedFile(f"{self.name}: cannot parse {what or name}: {exc}") from None

    def _algorithm(self, alg: dict | None, where: str):
        if not isinstance(alg, dict) or len([k for k in alg if isinstance(k, str)]) != 1:
            raise MalformedFile(f"{self.name}: {where} has no usable encryption algorithm")
        name = next(k for k in alg if isinstance(k, str))
        params = alg[name] or {}
        return name, params

    def _read_footer(self, verify_footer: bool) -> None:
        region = self._region()
        if self.tail.encrypted_footer:
            fcm, end = self._decode("FileCryptoMetaData", region, 0)
            name, params = self._algorithm(fcm.get("encryption_algorithm"), "FileCryptoMetaData")
            unique = params.get("aad_file_unique")
            dialect = "duckdb" if unique is None and fcm.get("key_metadata") is None else "spec"
            self.crypto = FileCrypto(name, False, params.get("aad_prefix"), unique,
                                     bool(params.get("supply_aad_prefix", False)), fcm.get("key_metadata"), dialect)
            module = region[end:]
            if len(module) < GCM_OVERHEAD or _le32(module, 0)[0] + LEN_PREFIX != len(module):
                raise MalformedFile(f"{self.name}: encrypted footer module is truncated or malformed")
            if self.decryption is None:
                self.fmd = None
                return
            cipher = self._footer_gcm()
            try:
                footer = cipher.decrypt(module, ModuleType.FOOTER)
            except InvalidTag:
                raise InvalidTag(f"{self.name}: footer authentication failed: wrong footer key or AAD prefix, "
                                 "or the footer was altered", module_type=ModuleType.FOOTER) from None
            # parquet-mr 1.14 pads the encrypted footer with zero bytes; like every reader,
            # stop at the end of the struct
            fmd, _ = self._decode("FileMetaData", footer, 0, "decrypted footer")
            self.footer_bytes = footer
            self.fmd = fmd
            return
        fmd, end = self._decode("FileMetaData", region, 0, "footer")
        self.fmd = fmd
        alg = fmd.get("encryption_algorithm")
        if alg is None:
            if end != len(region):
                raise MalformedFile(f"{self.name}: {len(region) - end} unexpected bytes after the footer")
            return
        name, params = self._algorithm(alg, "FileMetaData")
        self.crypto = FileCrypto(name, True, params.get("aad_prefix"), params.get("aad_file_unique"),
                                 bool(params.get("supply_aad_prefix", False)),
                                 fmd.get("footer_signing_key_metadata"), "spec")
        if len(region) - end != SIGNATURE_LEN:
            raise MalformedFile(f"{self.name}: plaintext footer signature missing or malformed")
        self.footer_bytes = bytes(region[:end])
        if self.decryption is not None and verify_footer:
            self._footer_gcm().verify_footer_signature(self.footer_bytes, bytes(region[end:]))

    def file_crypto(self) -> FileCrypto:
        """The file's encryption parameters; a plaintext file has none."""
        if self.crypto is None:
            raise MalformedFile(f"{self.name}: the file has no encryption algorithm")
        return self.crypto

    def file_metadata(self) -> FileMetaData:
        """The decoded FileMetaData (of an encrypted footer: only once it was decrypted)."""
        if self.fmd is None:
            raise KeyNotFound(f"{self.name}: the footer is encrypted; keys are needed")
        return self.fmd

    def file_aad(self) -> bytes:
        c = self.file_crypto()
        supplied = self.decryption.aad_prefix if self.decryption else None
        if c.supply_aad_prefix and supplied is None:
            raise KeyNotFound(f"{self.name}: the file's AAD prefix was not stored; supply it (aad_prefix)")
        if c.aad_prefix is not None and supplied is not None and supplied != c.aad_prefix:
            raise InvalidTag(f"{self.name}: the supplied AAD prefix differs from the one stored in the file")
        if c.aad_prefix is None and not c.supply_aad_prefix and supplied:
            raise InvalidTag(f"{self.name}: an AAD prefix was supplied but the file uses none")
        prefix = c.aad_prefix if c.aad_prefix is not None else (supplied or b"")
        unique = c.aad_file_unique or b""
        if c.dialect == "spec" and len(unique) == 0:
            raise MalformedFile(f"{self.name}: aad_file_unique missing")
        return prefix + unique

    def _ciphers(self, key: bytes) -> tuple[GcmModuleCipher, CtrModuleCipher | None]:
        """(gcm, ctr) ciphers for a key, created once per distinct key."""
        hit = self._keys.get(key)
        if hit is None:
            crypto = self.file_crypto()
            mk = ModuleKey(key)
            if crypto.dialect == "duckdb":
                gcm = GcmModuleCipher(mk, backend=self.backend, module_aad=False)
            else:
                gcm = GcmModuleCipher(mk, self.file_aad(), backend=self.backend)
            ctr = CtrModuleCipher(mk, backend=self.backend) if crypto.algorithm == "AES_GCM_CTR_V1" else None
            hit = self._keys[key] = (gcm, ctr)
        return hit

    def _footer_key(self) -> bytes:
        if self.decryption is None:
            raise KeyNotFound(f"{self.name}: the file is encrypted; keys are needed")
        try:
            return self.decryption.get_footer_key(self.file_crypto().footer_key_metadata)
        except InvalidTag as exc:     # the KMS could not unwrap it: say which file
            raise InvalidTag(f"{self.name}: footer key: {exc}", module_type=exc.module_type) from None

    def _footer_gcm(self) -> GcmModuleCipher:
        if self._footer_cipher is None:
            self._footer_cipher = self._ciphers(self._footer_key())[0]
        return self._footer_cipher

    def _check_row_groups(self) -> None:
        rgs = self.file_metadata().get("row_groups") or []
        if self.crypto is not None and len(rgs) > 32768:
            raise MalformedFile(f"{self.name}: {len(rgs)} row groups exceed the PME ordinal limit")
        for i, rg in enumerate(rgs):
            cols = rg.get("columns") or []
            if len(cols) != len(self.paths):
                raise MalformedFile(f"{self.name}: row group {i} has {len(cols)} columns, schema has {len(self.paths)}")

    # ---- columns -----------------------------------------------------------------------

    @property
    def num_row_groups(self) -> int:
        return len(self.file_metadata().get("row_groups") or [])

    def column_chunk(self, rg: int, col: int) -> ColumnChunk:
        return self.file_metadata()["row_groups"][rg]["columns"][col]

    def column_crypto(self, rg: int, col: int) -> ColumnCrypto:
        cm = self.column_chunk(rg, col).get("crypto_metadata")
        if cm is None:
            if self.crypto is not None and self.crypto.dialect == "duckdb":
                return ColumnCrypto(True, footer_key=True)
            return ColumnCrypto(False)
        if self.crypto is None:
            raise MalformedFile(f"{self.name}: column {dotted(self.paths[col])} has crypto metadata, but the file "
                                "has no encryption algorithm")
        if "ENCRYPTION_WITH_FOOTER_KEY" in cm:
            return ColumnCrypto(True, footer_key=True)
        ck = cm.get("ENCRYPTION_WITH_COLUMN_KEY")
        if not isinstance(ck, dict):
            raise MalformedFile(f"{self.name}: column {dotted(self.paths[col])} has unknown crypto metadata")
        pis = tuple(bytes(p).decode("utf-8", "replace") for p in ck.get("path_in_schema") or [])
        if pis and pis != self.paths[col]:
            raise MalformedFile(f"{self.name}: crypto metadata path {'.'.join(pis)} does not match column "
                                f"{dotted(self.paths[col])}")
        return ColumnCrypto(True, footer_key=False, key_metadata=ck.get("key_metadata"), path_in_schema=pis)

    def column_gcm_ctr(self, rg: int, col: int):
        cc = self.column_crypto(rg, col)
        if not cc.encrypted:
            return None, None
        if cc.footer_key:
            return self._footer_gcm(), self._ciphers(self._footer_key())[1]
        if self.decryption is None:
            raise KeyNotFound(f"{self.name}: column {dotted(self.paths[col])} is encrypted; keys are needed")
        key = self.decryption.get_column_key(dotted(self.paths[col]), cc.key_metadata)
        return self._ciphers(key)

    def column_meta(self, rg: int, col: int) -> ColumnMetaData:
        """The plaintext ColumnMetaData (decrypted from the column's module when needed)."""
        cc = self.column_chunk(rg, col)
        enc = cc.get("encrypted_column_metadata")
        if enc is None:
            meta = cc.get("meta_data")
            if meta is None:
                raise MalformedFile(f"{self.name}: column {dotted(self.paths[col])} in row group {rg} has no metadata")
            return meta
        gcm, _ = self.column_gcm_ctr(rg, col)
        if gcm is None:
            raise MalformedFile(f"{self.name}: encrypted column metadata on a plaintext column")
        try:
            plain = gcm.decrypt(enc, ModuleType.COLUMN_META_DATA, rg, col)
        except InvalidTag:
            raise InvalidTag(f"{self.name}: metadata of column {dotted(self.paths[col])} (row group {rg}) failed "
                             "authentication: wrong column key, or the footer was altered",
                             module_type=ModuleType.COLUMN_META_DATA, row_group=rg, column=col) from None
        meta, end = self._decode("ColumnMetaData", plain, 0, f"metadata of column {dotted(self.paths[col])}")
        return meta

    # ---- pages -------------------------------------------------------------------------

    def _chunk_span(self, rg: int, col: int, meta: ColumnMetaData) -> tuple[int, int]:
        total = meta.get("total_compressed_size")
        if total == 0:  # a chunk without pages (empty row group)
            return 0, 0
        start = chunk_start(meta, self.name)
        if total is None or total < 0 or start < 4 or start + total > self.tail.footer_offset:
            raise MalformedFile(f"{self.name}: column {dotted(self.paths[col])} in row group {rg} lies outside "
                                "the data region (truncated or corrupt file)")
        return start, start + total

    def _spot(self, rg: int, col: int, meta: ColumnMetaData, start: int, end: int) -> ChunkSpot:
        return ChunkSpot(rg=rg, col=col, start=start, end=end, name=self.name,
                         dictionary=end > start and chunk_start(meta, self.name) != meta["data_page_offset"],
                         where=f"column {dotted(self.paths[col])} (row group {rg})")

    def _page_cipher(self, gcm, ctr):
        """The cipher of page bodies (DuckDB uses GCM whatever the algorithm says; None:
        plaintext)."""
        return gcm if ctr is None or self.file_crypto().dialect == "duckdb" else ctr

    def _plan(self, spot: ChunkSpot, gcm, ctr, buf, base: int, *, failures=None, max_pages=None) -> ChunkPlan:
        if gcm is None:
            return plan_plain(spot, buf, base)
        return plan_encrypted(spot, gcm, page_overhead=self._page_cipher(gcm, ctr).overhead,
                              duckdb=self.file_crypto().dialect == "duckdb", buf=buf, base=base,
                              read=self.read if buf is None else None, failures=failures, max_pages=max_pages)

    @_named
    def chunk_plan(self, rg: int, col: int, *, max_pages: int | None = None, sparse: bool = False,
                   buf=None, base: int = 0) -> ChunkPlan:
        """The module plan of a column chunk (decrypting its page headers when encrypted).
        ``max_pages``: only the first pages of an encrypted chunk, reading just their
        headers; ``sparse``: all pages of an encrypted chunk, reading only the module
        prefixes and the headers. ``buf``: the chunk's bytes at ``buf[o - base]``, when
        the caller has read them already."""
        meta = self.column_meta(rg, col)
        start, end = self._chunk_span(rg, col, meta)
        gcm, ctr = self.column_gcm_ctr(rg, col)
        if buf is None and not ((max_pages is not None or sparse) and gcm is not None):
            buf, base = self._chunk_bytes(start, end)
        return self._plan(self._spot(rg, col, meta, start, end), gcm, ctr, buf, base, max_pages=max_pages)

    def chunk_span(self, rg: int, col: int) -> tuple[int, int]:
        """File offsets [start, end) of a column chunk's pages ((0, 0): no pages)."""
        return self._chunk_span(rg, col, self.column_meta(rg, col))

    def page_cipher(self, rg: int, col: int):
        """The cipher of a column chunk's page bodies (None: a plaintext column)."""
        return self._page_cipher(*self.column_gcm_ctr(rg, col))

    @_named
    def read_chunk(self, rg: int, col: int, *, verify_only: bool = False, parts: bool = False) -> Chunk:
        """Plaintext pages of one column chunk (decrypted and authenticated if encrypted).

        ``verify_only``: authenticate without keeping the page bytes (the returned chunk
        has the headers only): GCM pages are decrypted into one small reused buffer, and
        CTR pages, which carry no tag, are not decrypted at all (their framing and page
        CRCs are still checked). ``parts``: a large plaintext chunk of a file read with
        reused buffers may come in parts of about STREAM_BYTES (:meth:`Chunk.parts`),
        read as they are taken."""
        meta = self.column_meta(rg, col)
        start, end = self._chunk_span(rg, col, meta)
        gcm, ctr = self.column_gcm_ctr(rg, col)
        if parts and gcm is None and self._f is not None and self._scratch is not None \
                and end - start > 2 * STREAM_BYTES:
            return Chunk(rg=rg, col=col, path=self.paths[col], cc=self.column_chunk(rg, col), meta=meta, plan=None,
                         buf=None, offs=np.empty(0, np.int64), lens=np.empty(0, np.int64),
                         stream=self._plain_parts(self._spot(rg, col, meta, start, end)))
        page_cipher = self._page_cipher(gcm, ctr)
        # verifying CTR pages, which carry no tag, needs the headers only (and CRC'd pages)
        headers_only = verify_only and isinstance(page_cipher, CtrModuleCipher)
        # buf holds the chunk's bytes; a file offset o is at buf[o - base]
        buf, base = (None, 0) if headers_only else self._chunk_bytes(start, end)
        plan = self._plan(self._spot(rg, col, meta, start, end), gcm, ctr, buf, base)
        chunk = functools.partial(Chunk, rg=rg, col=col, path=self.paths[col], cc=self.column_chunk(rg, col),
                                  meta=meta, plan=plan)
        if gcm is None:
            return chunk(buf=buf, offs=plan.body_offsets - base, lens=plan.body_lengths)
        if headers_only and self.check_crc and any(h.get("crc") is not None for h in plan.headers):
            buf, base = self._chunk_bytes(start, end)
        if buf is not None:
            self._check_crcs(buf, base, plan)
        if verify_only:
            self._verify_bodies(buf, base, plan, page_cipher)
            return chunk(buf=None, offs=plan.body_offsets - base, lens=plan.body_lengths, encrypted=True)
        if buf is None:  # only a verify reads headers alone
            raise PqsealError(f"{self.name}: chunk bytes not read before decrypting")
        out_lens = plan.levels + plan.body_lengths - page_cipher.overhead
        out_offs = np.zeros(len(plan), dtype=np.int64)
        if len(plan) > 1:
            np.cumsum(out_lens[:-1], out=out_offs[1:])
        out = self._out_buffer(int(out_lens.sum()))
        if len(plan):
            page_cipher.decrypt_batch(buf, offsets=plan.body_offsets - base, lengths=plan.body_lengths,
                                      module_type=plan.body_types, row_group=rg, column=col, page=plan.ordinals,
                                      out=out, out_offsets=out_offs + plan.levels)
        for i in np.flatnonzero(plan.levels).tolist():   # parquet-java V2 framing: levels stay plaintext
            o, lev = int(plan.body_offsets[i]) - base, int(plan.levels[i])
            out[out_offs[i]:out_offs[i] + lev] = np.frombuffer(buf[o - lev:o], dtype=np.uint8)
        for h, ln in zip(plan.headers, out_lens.tolist()):
            h["compressed_page_size"] = ln
        return chunk(buf=out, offs=out_offs, lens=out_lens, encrypted=True)

    def _chunk_bytes(self, start: int, end: int):
        """(buffer, base) holding the file's bytes [start, end) at buffer[o - base]: read
        with ``preadv`` into a buffer kept for the next chunk (a fresh one per chunk unless
        reuse_buffers). Reading through a mapping instead saved 20-50 % of a seal/unseal
        on ext4, but a file truncated meanwhile then kills the process with SIGBUS."""
        if self.buf is not None:
            return self.buf, 0
        n = end - start
        if self._scratch is None:  # chunks must stay valid: a fresh buffer each time
            window = np.empty(n, dtype=np.uint8)
        else:
            if self._window is None:
                self._window = _buffers.take("window")
            if len(self._window) < n:
                self._window = np.empty(n, dtype=np.uint8)
            window = self._window
        return self.read(start, n, window), start

    def _plain_parts(self, spot: ChunkSpot) -> Iterator[Pages]:
        """The pages of a plaintext chunk, read in parts of about STREAM_BYTES into the
        kept read buffer (one page larger than that is read whole); the bytes of a page
        cut by the end of a part move to the buffer's start for the next one."""
        if self._window is None:
            self._window = _buffers.take("window")
        want = STREAM_BYTES
        pos, have = spot.start, spot.start   # the buffer holds the bytes [pos, have)
        while pos < spot.end:
            size = min(want, spot.end - pos)
            if len(self._window) < size:
                grown = np.empty(size, dtype=np.uint8)
                grown[:have - pos] = self._window[:have - pos]
                self._window = grown
            window = self._window
            self.read(have, pos + size - have, window[have - pos:])
            have = pos + size
            part, nxt = walk_plain(spot, window, pos, pos, have)
            if nxt == pos:      # no whole page: the page at pos is larger than the part
                want = 2 * size
                continue
            yield Pages(part, window, part.body_offsets - pos, part.body_lengths)
            keep = have - nxt
            window[:keep] = window[nxt - pos:have - pos].copy()
            pos = nxt

    def _verify_bodies(self, buf, base: int, plan: ChunkPlan, page_cipher) -> None:
        """Authenticate every GCM page of a chunk in one call; all outputs land on one small
        buffer (each overwrites the last), so nothing chunk-sized is written to memory.
        AES_GCM_CTR_V1 pages have no tag: decrypting them would prove nothing (the plan
        checked their framing)."""
        n = len(plan)
        if not n or isinstance(page_cipher, CtrModuleCipher):
            return
        need = max(int(plan.body_lengths.max()) - page_cipher.overhead, 1)
        if self._verify_buf is None or len(self._verify_buf) < need:
            self._verify_buf = np.empty(need, dtype=np.uint8)
        page_cipher.decrypt_batch(buf, offsets=plan.body_offsets - base, lengths=plan.body_lengths,
                                  module_type=plan.body_types, row_group=plan.rg, column=plan.col,
                                  page=plan.ordinals, out=self._verify_buf, out_offsets=np.zeros(n, np.int64),
                                  threads=1)

    def page_failures(self, rg: int, col: int, failures) -> None:
        """Append to ``failures`` every page module of a chunk that fails to authenticate
        (or its CRC), walking the chunk with a tolerant plan and checking each page on its
        own; for verify reports. Where the framing breaks the walk stops: one failure
        names the bytes left unchecked."""
        try:
            meta = self.column_meta(rg, col)
            start, end = self._chunk_span(rg, col, meta)
            gcm, ctr = self.column_gcm_ctr(rg, col)
            buf, base = self._chunk_bytes(start, end)
        except PqsealError:
            return
        if gcm is None:
            return
        plan = self._plan(self._spot(rg, col, meta, start, end), gcm, ctr, buf, base, failures=failures)
        page_cipher = self._page_cipher(gcm, ctr)
        ords, kinds = plan.ordinals.tolist(), plan.body_types.tolist()
        for i, hdr in enumerate(plan.headers):
            o, ln, lev = int(plan.body_offsets[i]) - base, int(plan.body_lengths[i]), int(plan.levels[i])
            try:
                if hdr is not None and hdr.get("crc") is not None and self.check_crc and \
                        _signed32(zlib.crc32(buf[o - lev:o + ln])) != hdr["crc"]:
                    raise InvalidTag("page CRC mismatch")
                if not isinstance(page_cipher, CtrModuleCipher):   # CTR: the plan checked the framing
                    page_cipher.decrypt(buf[o:o + ln], kinds[i], rg, col, ords[i])
            except PqsealError as exc:
                failures.append({"module": ModuleType(kinds[i]).name,
                                 "page": None if (plan.dictionary and i == 0) else ords[i],
                                 "offset": base + o, "error": f"{type(exc).__name__}: {exc}"})

    def _out_buffer(self, n: int):
        if self._scratch is None:
            return np.empty(n, dtype=np.uint8)
        if len(self._scratch) < n:
            self._scratch = np.empty(n, dtype=np.uint8)
        return self._scratch

    def _check_crcs(self, buf, base: int, plan: ChunkPlan, pages=None) -> None:
        """Page CRCs cover the bytes as written; for CTR pages they are the only
        integrity check there is. ``pages``: only these (indexes into the plan)."""
        if not self.check_crc:
            return
        for i in range(len(plan)) if pages is None else pages:
            h = plan.headers[i]
            crc = h.get("crc")
            if crc is None:
                continue
            o = int(plan.body_offsets[i] - plan.levels[i]) - base
            if _signed32(zlib.crc32(buf[o:o + int(plan.levels[i] + plan.body_lengths[i])])) != crc:
                dictionary = plan.dictionary and i == 0
                raise InvalidTag(f"{self.name}: page CRC mismatch in column {dotted(self.paths[plan.col])} (row group "
                                 f"{plan.rg}, {'dictionary page' if dictionary else 'page'} {i}): the page bytes were "
                                 "altered", row_group=plan.rg, column=plan.col, page=i,
                                 module_type=ModuleType.DICTIONARY_PAGE if dictionary else ModuleType.DATA_PAGE)

    # ---- page indexes and bloom filters ------------------------------------------------

    def _module_at(self, off: int, what: str):
        if off < 4 or off + 4 > self.tail.footer_offset:
            raise MalformedFile(f"{self.name}: {what} offset {off} outside the data region")
        ln = _le32(self.read(off, 4), 0)[0] + 4
        if ln > self.tail.footer_offset - off:
            raise MalformedFile(f"{self.name}: {what} at offset {off} is truncated")
        return self.read(off, ln)

    def _plain_span(self, off, length, what):
        if off is None or length is None or off < 4 or length < 0 or off + length > self.tail.footer_offset:
            raise MalformedFile(f"{self.name}: {what} lies outside the data region")
        return self.read(off, length)

    def _page_index(self, rg: int, col: int, kind: str, mtype: ModuleType):
        """(bytes, description) of a chunk's "column_index" or "offset_index" (decrypted
        when its column is encrypted), or None."""
        cc = self.column_chunk(rg, col)
        off = cc.get(kind + "_offset")
        if off is None:
            return None
        gcm, _ = self.column_gcm_ctr(rg, col)
        what = f"{kind.replace('_', ' ')} of {dotted(self.paths[col])} (row group {rg})"
        data = self._plain_span(off, cc.get(kind + "_length"), what)
        return (bytes(data) if gcm is None else gcm.decrypt(data, mtype, rg, col)), what

    @_named
    def column_index(self, rg: int, col: int) -> bytes | None:
        got = self._page_index(rg, col, "column_index", ModuleType.COLUMN_INDEX)
        if got is None:
            return None
        data, what = got
        try:
            thrift.skip("ColumnIndex", data, 0)
        except thrift.DecodeError as exc:
            raise MalformedFile(f"{self.name}: cannot parse {what}: {exc}") from None
        return data

    @_named
    def offset_index(self, rg: int, col: int) -> OffsetIndex | None:
        got = self._page_index(rg, col, "offset_index", ModuleType.OFFSET_INDEX)
        if got is None:
            return None
        data, what = got
        oi, _ = self._decode("OffsetIndex", data, 0, what)
        locs = oi.get("page_locations")
        if not isinstance(locs, list) or any(isinstance(k, int) for k in oi):
            raise MalformedFile(f"{self.name}: {what} has no valid page locations")
        return oi

    @_named
    def bloom_filter(self, rg: int, col: int, meta: ColumnMetaData) -> tuple[BloomFilterHeader, bytes] | None:
        """(BloomFilterHeader dict, bitset bytes) or None."""
        head = self.bloom_filter_header(rg, col, meta)
        return None if head is None else (head[0], self.bloom_filter_bitset(rg, col, *head))

    @_named
    def bloom_filter_header(self, rg: int, col: int, meta: ColumnMetaData) -> tuple[BloomFilterHeader, int] | None:
        """(BloomFilterHeader dict, file offset of the bitset after it) or None."""
        off = meta.get("bloom_filter_offset")
        if off is None:
            return None
        gcm, _ = self.column_gcm_ctr(rg, col)
        what = f"bloom filter header of {dotted(self.paths[col])} (row group {rg})"
        if gcm is None:
            if off < 4 or off >= self.tail.footer_offset:
                raise MalformedFile(f"{self.name}: {what} offset {off} outside the data region")
            # the header is a few small fields: read it from a bounded window
            head = self.read(off, min(self.tail.footer_offset - off, _BLOOM_HEADER_MAX))
            hdr, hend = self._decode("BloomFilterHeader", head, 0, what)
            return hdr, off + hend
        hmod = self._module_at(off, what)
        plain = gcm.decrypt(hmod, ModuleType.BLOOM_FILTER_HEADER, rg, col)
        hdr, _ = self._decode("BloomFilterHeader", plain, 0, what)
        return hdr, off + len(hmod)

    @_named
    def bloom_filter_bitset(self, rg: int, col: int, header: BloomFilterHeader, offset: int):
        """The bitset that ``header`` announces, at file offset ``offset``."""
        gcm, _ = self.column_gcm_ctr(rg, col)
        what = f"bloom filter bitset of {dotted(self.paths[col])} (row group {rg})"
        if gcm is None:
            nb = header.get("numBytes")
            if nb is None or nb < 0 or offset + nb > self.tail.footer_offset:
                raise MalformedFile(f"{self.name}: {what} is truncated")
            return bytes(self.read(offset, nb))
        return gcm.decrypt(self._module_at(offset, what), ModuleType.BLOOM_FILTER_BITSET, rg, col)

    def close(self) -> None:
        if self._scratch is not None:  # for the next file read by this thread
            _buffers.give("source", self._scratch)
            self._scratch = None
        if getattr(self, "_window", None) is not None:
            _buffers.give("window", self._window)
            self._window = None
        for gcm, _ctr in self._keys.values():  # the CTR cipher shares the GCM cipher's key
            for k in gcm.keys:
                k.close()
        self._keys.clear()
        self.buf = None
        if self._f is not None:
            self._f.close()

    def __enter__(self) -> "Source":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
