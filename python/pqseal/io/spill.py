"""An append-only byte store with bounded memory: the newest bytes stay in memory, the
older ones are spilled to an anonymous file encrypted under a key that exists only in
this process's memory.

The sealing sink keeps a writer's plaintext Parquet stream here until the footer, which
comes last, tells where the column chunks lie. The stream is cut into blocks of
``block_size`` bytes. While more than ``memory_limit`` bytes are held, the oldest full
block is encrypted as one AES-GCM module (the native cipher, GIL released, on a worker
thread so it overlaps the writer) and written at its fixed place in the spill file. Each
block's module AAD carries its index, so blocks cannot be swapped; a fresh random 256-bit
:class:`~pqseal.crypto.ModuleKey` per store means a spill outlives its key by no more
than the process. The spill file is created without a name (``O_TMPFILE``) or unlinked
right after creation, so a crash leaves nothing behind, and it never holds plaintext.

Memory held while writing: at most ``memory_limit`` bytes of resident blocks, plus the
block being filled, up to ``MAX_IN_FLIGHT`` blocks being encrypted and as many back from
the spill thread for reuse: ``memory_limit + 5 * block`` in all
(:attr:`SpillStore.memory_bytes`; 74 MiB at the sink's default limit of 64 MiB). Reads
decrypt the blocks a range covers and keep the last ``CACHE_BLOCKS`` decrypted blocks.
Closed stores hand their blocks to a process-wide pool (at most ``POOL_MAX`` bytes) for
the next store.
"""

from __future__ import annotations

import collections
import contextlib
import os
import tempfile
import threading
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np

from ..crypto import GcmModuleCipher, ModuleKey, ModuleType, random_bytes
from ..crypto.cipher import LEN_PREFIX, NONCE_LEN, TAG_LEN
from ..errors import MalformedFile

BLOCK_MAX = 2 << 20            # spill block size for large memory limits
BLOCK_MIN = 64 << 10           # ... and the smallest (tiny memory limits)
MAX_IN_FLIGHT = 2              # blocks handed to the spill thread and not yet on disk
CACHE_BLOCKS = 2               # decrypted spill blocks kept for the next read
_OVERHEAD = LEN_PREFIX + NONCE_LEN + TAG_LEN
_ORD = 1 << 15                 # ordinals are int16: block i is (row group i >> 15, page i & 0x7fff)
POOL_MAX = 64 << 20            # bytes of blocks kept between stores (see _Pool)


class _Pool:
    """Blocks kept for the next store of this process. Fresh memory is expensive where
    pages are faulted in one by one (and on a VM whose balloon hands freed memory to the
    host): filling new blocks cost about 0.1 s of CPU per 160 MB here, against a few ms
    for blocks used before. A returned block still holds the bytes of the stream it held
    (in this process's memory only, as the writer's own buffers do); at most
    ``POOL_MAX`` bytes are kept."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._blocks: dict[int, list[bytearray]] = {}
        self._bytes = 0

    def take(self, size: int) -> bytearray:
        with self._lock:
            got = self._blocks.get(size)
            if got:
                self._bytes -= size
                return got.pop()
        return bytearray(size)

    def give(self, blocks) -> None:
        with self._lock:
            for b in blocks:
                if self._bytes + len(b) > POOL_MAX:
                    return
                self._blocks.setdefault(len(b), []).append(b)
                self._bytes += len(b)


_pool = _Pool()


def block_size_for(memory_limit: int) -> int:
    """The spill block size used under ``memory_limit``: a quarter of it, within
    [``BLOCK_MIN``, ``BLOCK_MAX``]."""
    return min(BLOCK_MAX, max(BLOCK_MIN, memory_limit // 4))


def _anonymous_file(directory: str) -> int:
    """A read-write file descriptor of a file no name refers to (``O_TMPFILE``, or a file
    created and unlinked at once where the file system lacks it)."""
    flags = os.O_RDWR | getattr(os, "O_CLOEXEC", 0)
    tmpfile = getattr(os, "O_TMPFILE", 0)
    if tmpfile:
        try:
            # O_EXCL: the file can never be linked into the directory later
            return os.open(directory, flags | tmpfile | os.O_EXCL, 0o600)
        except OSError:
            pass  # file system without O_TMPFILE support: fall back
    fd, path = tempfile.mkstemp(prefix=".pqseal-spill-", dir=directory)
    try:
        os.unlink(path)
    except BaseException:
        os.close(fd)
        raise
    return fd


class SpillStore:
    """Bytes appended in order (:meth:`append`), then read by range (:meth:`pread`,
    after :meth:`freeze`): a :class:`~pqseal.format.source.RangeReader`. One writer
    thread; :meth:`close` drops everything (memory, spill file, key)."""

    def __init__(self, *, memory_limit: int, spill_dir: str, name: str = "<sink>"):
        if memory_limit < 0:
            raise ValueError(f"memory_limit must not be negative, got {memory_limit}")
        self.name = name
        self.memory_limit = int(memory_limit)
        self.block = block_size_for(self.memory_limit)
        self.spill_dir = spill_dir
        self.size = 0                  # bytes appended
        self.spilled_bytes = 0         # bytes now in the spill file (plaintext count)
        self._fill = 0                 # bytes in _tail
        self._tail = _pool.take(self.block)
        self._blocks: dict[int, bytearray] = {}    # full blocks in memory, by index
        self._nfull = 0                # full blocks so far; blocks below _spilled are on disk
        self._spilled = 0
        self._jobs: collections.deque[Future] = collections.deque()
        self._spiller: ThreadPoolExecutor | None = None
        self._fd = -1
        self._cipher: GcmModuleCipher | None = None
        self._cache: collections.OrderedDict[int, np.ndarray] = collections.OrderedDict()
        # buffers reused so that a spilled stream does not fault in fresh pages block after
        # block: blocks back from the spill thread, its output buffer, the read buffer
        self._free: list[bytearray] = []
        self._spill_out: np.ndarray | None = None
        self._read_buf: np.ndarray | None = None
        self._frozen = False
        self._closed = False
        self._lock = threading.Lock()

    @property
    def memory_bytes(self) -> int:
        """Bytes of blocks this store holds now (while writing): resident full blocks,
        the block being filled, blocks handed to the spill thread and blocks back from
        it. At most ``memory_limit + 5 * block``."""
        return (self._nfull - self._spilled + len(self._jobs) + len(self._free) + 1) * self.block

    # ---- writing -----------------------------------------------------------------------

    def append(self, data) -> int:
        mv = memoryview(data)
        if mv.ndim != 1 or mv.format != "B":
            mv = mv.cast("B")
        n = len(mv)
        with self._lock:
            if self._closed or self._frozen:
                raise ValueError("write to a closed sink")
            pos, block = 0, self.block
            while pos < n:
                take = min(block - self._fill, n - pos)
                self._tail[self._fill:self._fill + take] = mv[pos:pos + take]
                self._fill += take
                pos += take
                if self._fill == block:
                    self._blocks[self._nfull] = self._tail
                    self._nfull += 1
                    self._tail = self._free.pop() if self._free else _pool.take(block)
                    self._fill = 0
                    self._spill_over_limit()
            self.size += n
        return n

    def _spill_over_limit(self) -> None:
        while (self._nfull - self._spilled) * self.block + self._fill > self.memory_limit and \
                self._spilled < self._nfull:
            i = self._spilled
            data = self._blocks.pop(i)
            spiller = self._spiller if self._spiller is not None else self._start_spill()
            while len(self._jobs) >= MAX_IN_FLIGHT:
                self._jobs.popleft().result()   # a failed spill (disk full) raises here
            self._jobs.append(spiller.submit(self._write_block, i, data))
            self._spilled += 1
            self.spilled_bytes += self.block

    def _spill_error(self, exc: OSError) -> OSError:
        """``exc`` naming the sink and the spill directory (not a temporary name)."""
        return type(exc)(exc.errno, f"{self.name}: cannot spill to {self.spill_dir}: {exc.strerror}")

    def _start_spill(self) -> ThreadPoolExecutor:
        try:
            self._fd = _anonymous_file(self.spill_dir)
        except OSError as exc:
            raise self._spill_error(exc) from None
        self._cipher = GcmModuleCipher(ModuleKey(random_bytes(32)))
        self._spiller = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pqseal-spill")
        return self._spiller

    def _spill_cipher(self) -> GcmModuleCipher:
        if self._cipher is None:
            raise ValueError("the spill store is closed")
        return self._cipher

    def _write_block(self, i: int, data: bytearray) -> None:
        """(spill thread) Encrypt block ``i`` and write it at its place."""
        if self._spill_out is None:
            self._spill_out = np.empty(self.block + _OVERHEAD, dtype=np.uint8)
        out = self._spill_out
        self._spill_cipher().encrypt_batch([data], module_type=ModuleType.DATA_PAGE, row_group=i // _ORD,
                                           page=i % _ORD, out=out)
        self._free.append(data)    # the writer fills it again (list.append is atomic)
        view, at = out.data, i * (self.block + _OVERHEAD)
        try:
            while len(view):
                done = os.pwrite(self._fd, view, at)
                view, at = view[done:], at + done
        except OSError as exc:
            raise self._spill_error(exc) from None

    def freeze(self) -> None:
        """No more appends: wait until every spilled block is on disk (raising what a
        spill raised); then :meth:`pread` may be used."""
        with self._lock:
            while self._jobs:
                self._jobs.popleft().result()
            self._frozen = True
            free, self._free = self._free, []
        _pool.give(free)

    # ---- reading -----------------------------------------------------------------------

    def pread(self, offset: int, length: int):
        """The bytes [offset, offset + length) (fewer at the end)."""
        if not self._frozen or self._closed:
            raise ValueError("the spill store is not readable (not frozen, or closed)")
        end = min(self.size, offset + length)
        if offset >= end:
            return b""
        first, last = offset // self.block, (end - 1) // self.block
        if first == last:
            base = first * self.block
            return self._block(first)[offset - base:end - base]
        parts = []
        for i in range(first, last + 1):
            base = i * self.block
            parts.append(self._block(i)[max(offset, base) - base:min(end, base + self.block) - base])
        return b"".join(parts)

    def _block(self, i: int) -> memoryview:
        if i == self._nfull:
            return memoryview(self._tail)[:self._fill]
        got = self._blocks.get(i)
        if got is not None:
            return memoryview(got)
        plain = self._cache.get(i)
        if plain is None:
            # a fresh array each time: views of an evicted block that a reader still
            # holds must keep their bytes
            plain = self._decrypt(i)
            self._cache[i] = plain
            while len(self._cache) > CACHE_BLOCKS:
                self._cache.popitem(last=False)
        else:
            self._cache.move_to_end(i)
        return plain.data

    def _decrypt(self, i: int) -> np.ndarray:
        n = self.block + _OVERHEAD
        if self._read_buf is None:
            self._read_buf = np.empty(n, dtype=np.uint8)
        buf = self._read_buf
        view, got = buf.data, 0
        while got < n:
            r = os.preadv(self._fd, [view[got:]], i * n + got)
            if r <= 0:
                raise MalformedFile(f"{self.name}: the spill file lost block {i}")
            got += r
        out = np.empty(self.block, dtype=np.uint8)
        self._spill_cipher().decrypt_batch([buf], module_type=ModuleType.DATA_PAGE, row_group=i // _ORD,
                                           page=i % _ORD, out=out)
        return out

    # ---- the end -----------------------------------------------------------------------

    def close(self) -> None:
        """Drop the bytes: wait for the spill thread, close (and so delete) the spill
        file, wipe the key. Harmless when repeated."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            spiller, self._spiller = self._spiller, None
            jobs, self._jobs = list(self._jobs), collections.deque()
        for job in jobs:
            job.cancel()
        if spiller is not None:
            spiller.shutdown(wait=True)
        for job in jobs:
            with contextlib.suppress(BaseException):
                job.result()
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        if self._cipher is not None:
            for k in self._cipher.keys:
                k.close()
            self._cipher = None
        # (readers are done: the engine's views of these blocks are gone)
        _pool.give([self._tail, *self._free, *self._blocks.values()])
        self._blocks.clear()
        self._cache.clear()
        self._free.clear()
        self._spill_out = self._read_buf = None
        self._tail = bytearray()
        self._fill = 0
