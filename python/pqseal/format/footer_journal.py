"""The journal that makes an in-place footer rewrite crash-safe.

Before the tail of a file (footer and trailer) is overwritten, its old bytes and the old
file length go to ``.<name>.pqseal-rotate`` beside it (written, fsynced, the directory
fsynced); the journal is removed once the new tail is on disk. A process killed at any
instant leaves either the old file, the new one, or the old or a partly written new
tail with a complete journal: :func:`restore` (run by every pqseal open of a local file)
puts the old tail back. A journal whose checksum does not match was cut while being
written, before the file was touched, and is removed.

Writers and restorers serialize on an exclusive ``flock`` of the file itself; a
rewrite that cannot take it at once raises :class:`~pqseal.errors.RotationInProgress`."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import os
import struct
from collections.abc import Iterator

from .._io import fsync_dir
from ..errors import MalformedFile, RotationInProgress

SUFFIX = ".pqseal-rotate"
_MAGIC = b"PQSEAL-FOOTER-JOURNAL-1\n"
_HEAD = struct.Struct("<QQQ")   # old file size, offset of the old tail, length of the old tail


def journal_path(path: str) -> str:
    d, name = os.path.split(os.path.abspath(path))
    return os.path.join(d, "." + name + SUFFIX)


@contextlib.contextmanager
def locked(path: str, *, wait: bool) -> Iterator[int]:
    """An fd of ``path`` (read-write) holding its exclusive lock; ``wait=False``: raise
    :class:`RotationInProgress` if another process holds it."""
    fd = os.open(path, os.O_RDWR | getattr(os, "O_CLOEXEC", 0))
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            raise RotationInProgress(f"{os.path.basename(path)}: another process is rewriting its footer") from None
        yield fd
    finally:
        os.close(fd)   # releases the lock


def write_journal(path: str, fd: int, tail_offset: int) -> None:
    """Record the tail of ``path`` (open as ``fd``, locked) from ``tail_offset`` on."""
    size = os.fstat(fd).st_size
    old = os.pread(fd, size - tail_offset, tail_offset)
    body = _MAGIC + _HEAD.pack(size, tail_offset, len(old)) + old
    jp = journal_path(path)
    jfd = os.open(jp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o600)
    try:
        os.write(jfd, body + hashlib.sha256(body).digest())
        os.fsync(jfd)
    finally:
        os.close(jfd)
    fsync_dir(os.path.dirname(jp))


def drop_journal(path: str) -> None:
    jp = journal_path(path)
    os.unlink(jp)
    fsync_dir(os.path.dirname(jp))


def restore_locked(path: str, fd: int) -> bool:
    jp = journal_path(path)
    try:
        with open(jp, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        return False
    body, digest = raw[:-32], raw[-32:]
    n = len(_MAGIC) + _HEAD.size
    if len(raw) >= n + 32 and body.startswith(_MAGIC) and hashlib.sha256(body).digest() == digest:
        size, offset, length = _HEAD.unpack_from(body, len(_MAGIC))
        old = body[n:]
        if len(old) != length or offset + length != size:
            raise MalformedFile(f"{os.path.basename(path)}: its footer journal {jp} is inconsistent")
        os.pwrite(fd, old, offset)
        os.ftruncate(fd, size)
        os.fsync(fd)
    # else: cut while being written, before the file was touched
    drop_journal(path)
    return True


def restore(path: str) -> bool:
    """Put back the footer an interrupted in-place rewrite of ``path`` journaled (waits
    for a rewrite in progress). True if a journal was found."""
    if not os.path.exists(journal_path(path)):
        return False
    try:
        with locked(path, wait=True) as fd:
            return restore_locked(path, fd)
    except OSError as exc:
        if exc.errno == errno.ENOENT:
            return False
        raise


def recover_directory(directory: str) -> list[str]:
    """Restore every file of ``directory`` with a footer journal; one line per file."""
    try:
        names = sorted(os.listdir(directory))
    except (FileNotFoundError, NotADirectoryError):
        return []
    out = []
    for name in names:
        if name.startswith(".") and name.endswith(SUFFIX):
            target = os.path.join(directory, name[1:-len(SUFFIX)])
            if os.path.exists(target) and restore(target):
                out.append(f"restored the footer of {os.path.basename(target)} (an interrupted key rotation)")
    return out


__all__ = ["journal_path", "locked", "write_journal", "drop_journal", "restore", "restore_locked", "recover_directory",
           "SUFFIX"]
