"""The job journal: what a dataset job has done, so a rerun resumes it.

One JSON object per line in ``<root>/.pqseal-job/journal.jsonl`` (a directory dataset
readers ignore: its name starts with ``.``), appended by the driver alone through an
``O_APPEND`` descriptor: a header naming the job (kind and a fingerprint of its options
and keys: an HMAC under the journal's random salt, never key bytes), then per file
``start`` (fsync'd, in batches, before any worker touches the file's output), ``done``
(output, its key material and source: size/mtime, inode) and ``failed`` (one line). ``done`` and
``failed`` are made durable with the next batch's fsync and at the end: a record lost to
a power cut only makes a rerun redo that file (its output is the job's to replace). A line cut by
a crash is ignored on reading; the last record of a file is its state.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass

from .._io import fsync_dir, unlink_quietly
from ..errors import PqsealError
from .plan import JOB_DIRECTORY

DIRECTORY = JOB_DIRECTORY
NAME = "journal.jsonl"
VERSION = 1


class JournalMismatch(PqsealError, ValueError):
    """The destination holds the journal of another job (another kind or other options)."""


@dataclass(frozen=True)
class Stamp:
    """What a file looked like: size, mtime (ns) and inode."""

    size: int
    mtime_ns: int
    ino: int = 0

    @classmethod
    def of(cls, path: str) -> "Stamp":
        st = os.stat(path)
        return cls(st.st_size, st.st_mtime_ns, st.st_ino)

    @classmethod
    def load(cls, d) -> "Stamp | None":
        return None if not isinstance(d, dict) else cls(int(d["size"]), int(d["mtime_ns"]), int(d.get("ino", 0)))

    def same_file(self, other: "Stamp") -> bool:
        return (self.size, self.mtime_ns, self.ino) == (other.size, other.mtime_ns, other.ino)

    def same_content(self, other: "Stamp") -> bool:   # the source: copies keep no inode
        return (self.size, self.mtime_ns) == (other.size, other.mtime_ns)


ROTATE_NAME = "rotate.jsonl"


def path_in(root: str, kind: str = "") -> str:
    """The journal of a job in ``root``: one per destination tree; rotation, which writes
    beside its source files, keeps its own (``rotate.jsonl``), removed once it completes."""
    return os.path.join(root, DIRECTORY, ROTATE_NAME if kind == "rotate" else NAME)


def done_outputs(root: str, kind: str) -> list[tuple[str, Stamp]]:
    """(relative path, stamp) of every output the journal in ``root`` records as done,
    if it is a journal of ``kind`` (else none)."""
    header, state, _ = _read(path_in(root, kind))
    if header is None or header.get("kind") != kind:
        return []
    out = []
    for rel, rec in state.items():
        stamp = Stamp.load(rec.get("out")) if rec.get("t") == "done" else None
        if stamp is not None:
            out.append((rel, stamp))
    return out


class Journal:
    """Open with :meth:`open`; :attr:`state` maps a file's relative path to its last record."""

    def __init__(self, path: str, fd: int, state: dict[str, dict], resumed: bool):
        self.path = path
        self._fd = fd
        self.state = state
        self.resumed = resumed    # the journal existed: this run continues a job

    @classmethod
    def open(cls, root: str, kind: str, fingerprint: Callable[[bytes], str], *, restart: bool = False) -> "Journal":
        """The journal of the job in ``root``; ``fingerprint(salt)`` names the job (the salt
        is the journal's own, random). A journal of another job is an error, or with
        ``restart`` (the caller may replace every output) replaced by a new one."""
        path = path_in(root, kind)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        header, state, torn = _read(path)
        if header is not None:
            salt = bytes.fromhex(str(header.get("salt", "")))
            if (header.get("kind"), header.get("fingerprint")) != (kind, fingerprint(salt)):
                if not restart:
                    what = "another kind of job" if header.get("kind") != kind else "the same kind with other keys " \
                                                                                   "or options"
                    raise JournalMismatch(f"{root} holds the journal of {what} ({header.get('kind')}, started "
                                          f"{header.get('started', '?')}); pass overwrite=True (CLI: --force) to "
                                          "start over, replacing its outputs, or choose another destination")
                header, state, torn = None, {}, False
                unlink_quietly(path)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o600)
        j = cls(path, fd, state, resumed=header is not None)
        if torn:
            os.write(fd, b"\n")
        if header is None:
            salt = os.urandom(16)
            j.append({"t": "job", "v": VERSION, "kind": kind, "salt": salt.hex(), "fingerprint": fingerprint(salt),
                      "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}, sync=True)
            fsync_dir(os.path.dirname(path))
        return j

    def append(self, record: dict, *, sync: bool = False) -> None:
        os.write(self._fd, (json.dumps(record, separators=(",", ":")) + "\n").encode())
        if record.get("t") in ("start", "done", "failed"):
            self.state[record["f"]] = record
        if sync:
            self.sync()

    def sync(self) -> None:
        os.fsync(self._fd)

    def started(self, rel: str, src: Stamp) -> None:
        self.append({"t": "start", "f": rel, "src": src.__dict__})

    def done(self, rel: str, src: Stamp | None, out: Stamp | None, material: Stamp | None = None) -> None:
        rec = {"t": "done", "f": rel, "src": None if src is None else src.__dict__,
               "out": None if out is None else out.__dict__}
        if material is not None:
            rec["material"] = material.__dict__
        self.append(rec)

    def failed(self, rel: str, error: str) -> None:
        self.append({"t": "failed", "f": rel, "error": error})

    def close(self) -> None:
        if self._fd >= 0:
            try:
                os.fsync(self._fd)
            finally:
                os.close(self._fd)
                self._fd = -1

    def remove(self) -> None:
        """Drop the journal of a finished job (and its directory when empty)."""
        self.close()
        unlink_quietly(self.path)
        try:
            os.rmdir(os.path.dirname(self.path))
        except OSError:
            pass


def _read(path: str) -> tuple[dict | None, dict[str, dict], bool]:
    """(header, {file: last record}, the last line is torn)."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return None, {}, False
    header: dict | None = None
    state: dict[str, dict] = {}
    for line in data.split(b"\n"):
        try:
            rec = json.loads(line)
        except ValueError:
            continue            # a line cut by a crash (only ever the last one)
        if not isinstance(rec, dict):
            continue
        if rec.get("t") == "job" and header is None:
            header = rec
        elif rec.get("t") in ("start", "done", "failed") and isinstance(rec.get("f"), str):
            state[rec["f"]] = rec
    return header, state, bool(data) and not data.endswith(b"\n")
