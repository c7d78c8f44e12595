/* Output-file helpers: block preallocation and early writeback for the page-cache write path. */
#define _GNU_SOURCE
#include <stddef.h>
#include <stdint.h>

#include "pqio.h"

#if defined(__linux__)
#include <errno.h>
#include <fcntl.h>
#include <sys/vfs.h>

#define PQ_TMPFS_MAGIC 0x01021994
#define PQ_RAMFS_MAGIC 0x858458f6

int pq_fs_is_tmpfs(int fd)
{
    struct statfs st;
    if (fd < 0 || fstatfs(fd, &st) != 0)
        return 0;
    return (uint32_t)st.f_type == PQ_TMPFS_MAGIC || (uint32_t)st.f_type == PQ_RAMFS_MAGIC;
}

int pq_preallocate(int fd, int64_t offset, int64_t len)
{
    if (fd < 0 || offset < 0 || len <= 0)
        return 0;
    if (pq_fs_is_tmpfs(fd))
        return 0;
    /* no posix_fallocate: glibc emulates it by writing zeros where unsupported */
    return fallocate(fd, FALLOC_FL_KEEP_SIZE, (off_t)offset, (off_t)len) == 0 ? 1 : 0;
}

int pq_start_writeback(int fd, int64_t offset, int64_t len)
{
    if (fd < 0 || offset < 0 || len <= 0)
        return 0;
    return sync_file_range(fd, (off_t)offset, (off_t)len, SYNC_FILE_RANGE_WRITE) == 0 ? 1 : 0;
}
#else
int pq_fs_is_tmpfs(int fd)
{
    (void)fd;
    return 0;
}

int pq_preallocate(int fd, int64_t offset, int64_t len)
{
    (void)fd; (void)offset; (void)len;
    return 0;
}

int pq_start_writeback(int fd, int64_t offset, int64_t len)
{
    (void)fd; (void)offset; (void)len;
    return 0;
}
#endif
