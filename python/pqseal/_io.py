"""Output files: temporary names, atomic replacement, and clean-up of what a killed run left.

Every file pqseal writes is first written under a temporary name in the destination's
directory and renamed into place. The temporary name carries the writer's pid
(``.<name>.pqseal-<pid>-<random>.tmp``), so the leftovers of a process killed with
SIGKILL are recognisable; :func:`remove_stale` (run by the next pqseal operation that
writes into that directory) removes those whose process is gone.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import stat
import threading
from dataclasses import dataclass

TEMP_SUFFIX = ".tmp"
# ".<target>.pqseal-<pid>-<random>.tmp" (data files) and
# "_TMP_KEY_MATERIAL_FOR_<name>.pqseal-<pid>-<tag>.json" (key material, see keys/store.py)
_TEMP_RE = re.compile(r"^\.(?P<target>.+)\.pqseal-(?P<pid>\d+)-(?P<rand>[0-9A-Za-z]+)\.tmp$")


def temp_name(target: str) -> str:
    """A temporary name of ``target`` (a base name) for this process."""
    return f".{target}.pqseal-{os.getpid()}-{os.urandom(4).hex()}{TEMP_SUFFIX}"


def is_temp_name(name: str) -> bool:
    return _TEMP_RE.match(name) is not None


def pid_alive(pid: int) -> bool:
    """True when a process with this pid exists (or may exist: not ours to signal)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def fsync_dir(directory: str) -> None:
    """Make a rename in ``directory`` durable (best effort where directories cannot be opened)."""
    try:
        fd = os.open(directory or ".", os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@dataclass(frozen=True)
class OutputPlan:
    """Where an output goes and how: checked before any work is done."""

    path: str            # the destination as given (absolute)
    directory: str
    name: str
    mode: int | None     # mode to give the new file (the replaced file's), None: default


def plan_output(dst, *, overwrite: bool, src=None, in_place: bool = False) -> OutputPlan:
    """Check an output path the way a user would get it wrong: a directory, a missing
    parent, an existing file without ``overwrite``, the input itself without
    ``in_place``. Raises with a message naming ``dst`` (never a temporary name)."""
    from .errors import OutputExists

    raw = os.fspath(dst)
    if not raw:
        raise ValueError("the output path is empty")
    if raw.endswith(os.sep) or (os.altsep and raw.endswith(os.altsep)):
        raise IsADirectoryError(errno.EISDIR, f"output {raw} names a directory; give a file name")
    path = os.path.abspath(raw)
    directory, name = os.path.split(path)
    if not os.path.isdir(directory):
        raise FileNotFoundError(errno.ENOENT, f"output directory {directory} does not exist")
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return OutputPlan(path, directory, name, None)
    if stat.S_ISDIR(st.st_mode):
        raise IsADirectoryError(errno.EISDIR, f"output {raw} is a directory; give a file name")
    same = False
    if src is not None:
        with contextlib.suppress(OSError):
            same = os.path.samefile(src, path)
    if same and not in_place:
        raise ValueError(f"{raw}: output is the input file; pass in_place=True (CLI: --in-place) to replace it")
    if not same and not overwrite:
        raise OutputExists(f"{raw} exists; pass overwrite=True (CLI: --force) to replace it")
    if not stat.S_ISREG(st.st_mode):
        raise ValueError(f"output {raw} exists and is not a regular file")
    return OutputPlan(path, directory, name, stat.S_IMODE(st.st_mode))


def create_temp(directory: str, target: str, mode: int) -> tuple[int, str]:
    """Create this process's temporary file for ``target`` in ``directory`` (O_EXCL,
    ``mode`` before the umask); returns (fd, path). An error names ``target``, not the
    temporary name the user never gave."""
    for _ in range(100):
        path = os.path.join(directory, temp_name(target))
        try:
            return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), mode), path
        except FileExistsError:
            continue
        except OSError as exc:
            raise type(exc)(exc.errno, f"cannot write {os.path.join(directory, target)}: {exc.strerror}") from None
    raise FileExistsError(errno.EEXIST, f"cannot create a temporary file for {target} in {directory}")


def replace(tmp: str, path: str, *, exclusive: bool = False) -> None:
    """Rename the temporary file ``tmp`` over ``path``. ``exclusive``: ``path`` is not to
    be replaced; ``tmp`` is linked there, which fails (OutputExists) if ``path`` appeared
    while ``tmp`` was written, where a rename would replace it. An error names ``path``,
    not the temporary name."""
    from .errors import OutputExists

    try:
        if exclusive:
            try:
                os.link(tmp, path)
            except FileExistsError:
                raise OutputExists(f"{path} was created while it was being written; pass overwrite=True "
                                   "(CLI: --force) to replace it") from None
            except OSError:      # no hard links here (some network and FUSE file systems)
                if os.path.lexists(path):
                    raise OutputExists(f"{path} exists; pass overwrite=True (CLI: --force) to replace it") from None
            else:
                unlink_quietly(tmp)
                return
        os.replace(tmp, path)
    except OutputExists:
        raise
    except OSError as exc:
        raise type(exc)(exc.errno, f"cannot write {path}: {exc.strerror}") from None


def unlink_quietly(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def atomic_write(path: str, data: bytes, *, mode: int = 0o600) -> None:
    """Write ``data`` to a temporary file beside ``path`` (created with ``mode``), fsync,
    rename it over ``path`` and fsync the directory; on failure the temporary file is
    removed and ``path`` is untouched."""
    path = os.path.abspath(os.fspath(path))
    directory, name = os.path.split(path)
    fd, tmp = create_temp(directory, name, mode)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        replace(tmp, path)
    except BaseException:
        unlink_quietly(tmp)
        raise
    fsync_dir(directory)


_cleaned: set[str] = set()
_cleaned_lock = threading.Lock()


def remove_stale(directory: str, *, force: bool = False) -> list[str]:
    """Remove the temporary data files in ``directory`` left by pqseal processes that are
    gone (SIGKILL, power loss). Only files owned by this user whose writer's pid no
    longer exists are touched. Runs once per directory per process unless ``force``.
    Returns the names removed."""
    directory = os.path.abspath(directory or ".")
    with _cleaned_lock:
        if directory in _cleaned and not force:
            return []
        _cleaned.add(directory)
    removed: list[str] = []
    try:
        names = os.listdir(directory)
    except OSError:
        return removed
    me = os.getpid()
    uid = os.getuid() if hasattr(os, "getuid") else None
    for name in names:
        m = _TEMP_RE.match(name)
        if m is None:
            continue
        pid = int(m.group("pid"))
        if pid == me or pid_alive(pid):
            continue
        p = os.path.join(directory, name)
        try:
            st = os.lstat(p)
            if not stat.S_ISREG(st.st_mode) or (uid is not None and st.st_uid != uid):
                continue
            os.unlink(p)
            removed.append(name)
        except OSError:
            continue
    return removed
