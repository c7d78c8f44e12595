"""External key material beside a Parquet file (``_KEY_MATERIAL_FOR_<file>.json``), the
role of Arrow's ``FileSystemKeyMaterialStore`` and parquet-java's
``HadoopFSKeyMaterialStore``, written so that a failed or interrupted run never loses
the keys of a file.

Writing a file with external key material takes two commits: the data file and its
material file. The material is *staged* under a temporary name that carries the
writer's pid and the new file's ``aad_file_unique`` (readable in every PME file without
keys): ``_TMP_KEY_MATERIAL_FOR_<file>.pqseal-<pid>-<aad_file_unique hex>.json``. Then
the data file is renamed into place, then the staged material. A failure before the
data rename removes the staged file and leaves an existing destination and its material
exactly as they were. A process killed between the two renames leaves the new data
file beside the old material and the staged new material; :func:`recover` (run by the
next pqseal operation that writes into that directory, and by ``verify``) sees that the
data file's ``aad_file_unique`` is the staged one's and completes the commit. A staged
file whose ``aad_file_unique`` is not the data file's belongs to a run that died before
its data commit: it is removed.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import stat
from typing import Callable

from .._io import fsync_dir, pid_alive, unlink_quietly
from ..errors import KeyNotFound, MalformedKeyMaterial
from .material import EXTERNAL_PREFIX, material_file_name

TEMP_PREFIX = "_TMP_KEY_MATERIAL_FOR_"
_STAGED_RE = re.compile(r"^" + TEMP_PREFIX + r"(?P<target>.+)\.pqseal-(?P<pid>\d+)-(?P<tag>[0-9A-Za-z]+)\.json$")


def material_path(parquet_path) -> str:
    """``_KEY_MATERIAL_FOR_<name>.json`` beside ``parquet_path``."""
    p = os.path.abspath(os.fspath(parquet_path))
    return os.path.join(os.path.dirname(p), material_file_name(os.path.basename(p)))


def read_material(parquet_path) -> dict:
    """The external key material of a file: {key reference: material JSON text}."""
    path = material_path(parquet_path)
    try:
        with open(path, "rb") as f:
            doc = json.loads(f.read().decode("utf-8"))
    except FileNotFoundError:
        raise KeyNotFound(f"external key material file {path} not found") from None
    except (ValueError, UnicodeDecodeError):
        raise MalformedKeyMaterial(f"external key material file {path} is not JSON") from None
    if not isinstance(doc, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in doc.items()):
        raise MalformedKeyMaterial(f"external key material file {path} is not a JSON object of strings")
    return doc


def _encode(material: dict) -> bytes:
    return json.dumps(material, separators=(",", ":")).encode()


class KeyMaterialStore:
    """Stages, commits or aborts the key material of one Parquet file being written."""

    def __init__(self, parquet_path, material: dict):
        p = os.path.abspath(os.fspath(parquet_path))
        self.directory, self.name = os.path.split(p)
        self.path = os.path.join(self.directory, material_file_name(self.name))
        self._data = _encode(material)
        self._staged: str | None = None

    def stage(self, file_unique: bytes) -> None:
        """Write the material under its temporary name (fsync'd); nothing else changes."""
        tmp = os.path.join(self.directory, f"{TEMP_PREFIX}{self.name}.pqseal-{os.getpid()}-"
                                           f"{bytes(file_unique).hex() or '0'}.json")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_CLOEXEC", 0), 0o644)
        self._staged = tmp
        with os.fdopen(fd, "wb") as f:
            f.write(self._data)
            f.flush()
            os.fsync(f.fileno())

    def commit(self) -> None:
        """Rename the staged material into place (after the data file was committed)."""
        if self._staged is None:
            raise RuntimeError("commit() before stage()")
        os.replace(self._staged, self.path)
        self._staged = None
        fsync_dir(self.directory)

    def abort(self) -> None:
        """Remove the staged file (the only file this store created)."""
        if self._staged is not None:
            unlink_quietly(self._staged)
            self._staged = None

    def write(self) -> None:
        """Replace the material of an existing file in one atomic step (rotation)."""
        self.stage(b"")
        try:
            self.commit()
        except BaseException:
            self.abort()
            raise


def recover(directory: str, file_unique: Callable[[str], bytes | None]) -> list[str]:
    """Finish or drop the key-material commits of dead pqseal processes in ``directory``.

    ``file_unique(path)`` returns a data file's ``aad_file_unique`` (None if it is not a
    readable PME file). Returns a line per action taken."""
    actions: list[str] = []
    try:
        names = os.listdir(directory)
    except OSError:
        return actions
    me = os.getpid()
    for name in names:
        m = _STAGED_RE.match(name)
        if m is None or int(m.group("pid")) == me or pid_alive(int(m.group("pid"))):
            continue
        staged = os.path.join(directory, name)
        with contextlib.suppress(OSError):
            if not stat.S_ISREG(os.lstat(staged).st_mode):
                continue
        target = m.group("target")
        data = os.path.join(directory, target)
        unique = None
        with contextlib.suppress(Exception):
            unique = file_unique(data) if os.path.isfile(data) else None
        try:
            if unique is not None and unique.hex() == m.group("tag"):
                os.replace(staged, os.path.join(directory, material_file_name(target)))
                fsync_dir(directory)
                actions.append(f"completed the key material commit of {target} (interrupted run {m.group('pid')})")
            else:
                os.unlink(staged)
                actions.append(f"removed staged key material of an interrupted run for {target}")
        except OSError:
            continue
    return actions


__all__ = ["KeyMaterialStore", "read_material", "material_path", "recover", "TEMP_PREFIX", "EXTERNAL_PREFIX"]
