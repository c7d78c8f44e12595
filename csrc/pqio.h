/* pqseal native file I/O helpers (pqseal._nativeio): output preallocation and the walk
 * over length-prefixed PME modules. Apart from the cipher library (pqseal._native): no
 * OpenSSL, no keys. Read by the C compiler and by the cffi builder (csrc/build_ffi.py),
 * so free of preprocessor logic other than the include guard.
 */
#ifndef PQIO_H
#define PQIO_H

/* Output files (fileio.c). Reserve `len` bytes of disk blocks from `offset` without
 * changing the file size (fallocate FALLOC_FL_KEEP_SIZE), so that writes into the page
 * cache need no per-write block reservation. Skipped on tmpfs/ramfs, where reserving
 * means allocating zeroed pages that the writes then overwrite. Returns 1 when blocks
 * were reserved, 0 when skipped or unsupported (never an error: it is only a hint). */
int pq_preallocate(int fd, int64_t offset, int64_t len);
/* 1 when fd's file lives on tmpfs/ramfs (always 4 KiB pages), 0 otherwise or unknown. */
int pq_fs_is_tmpfs(int fd);
/* Start writing back the dirty page-cache pages of bytes [offset, offset + len) of fd
 * without waiting for them (sync_file_range SYNC_FILE_RANGE_WRITE), so that the final
 * fsync finds most of the file on disk already. Durability still comes from that fsync
 * alone. Returns 1 when writeback was started, 0 when unsupported or refused (never an
 * error: it is only a hint). */
int pq_start_writeback(int fd, int64_t offset, int64_t len);

/* Length-prefixed modules (walk.c): record the offset and framed length (prefix
 * included) of consecutive modules of buf[start:end), at most `cap` of them; *next is
 * where the walk stopped (== end when all were read). Returns how many were recorded,
 * or -1 when a module (or its prefix) overruns `end`. */
int64_t pq_walk_modules(const uint8_t *buf, uint64_t start, uint64_t end, uint64_t *offs, uint64_t *lens,
                        uint64_t cap, uint64_t *next);

#endif
