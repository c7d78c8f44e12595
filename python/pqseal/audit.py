"""The tamper-evident audit log of key operations: one JSON line per operation.

A record holds ``seq`` (1, 2, ... along the log), ``time`` (UTC, ISO 8601), ``user``,
``host``, ``pid``, ``op`` (wrap, unwrap, create, rotate, seal, unseal, ...), ``key`` and
``version`` of the master key, ``file`` where known, ``outcome`` (``ok`` or the error's
type name) and ``mac``. Never key bytes or wrapped keys.

``mac`` = HMAC-SHA256(audit key, previous record's mac || the record without its mac,
as canonical JSON); the first record chains to the empty string. So editing, deleting,
reordering or inserting a record breaks the chain at that line, and :func:`verify` names
it. Not detectable from the log alone: cutting records off its END (the shorter log is a
valid chain). Against that, keep an external anchor: :func:`verify` returns the record
count and the head MAC; a later ``verify(expect_count=...)`` or ``expect_head=...`` then
fails when the tail was cut back past the anchor. Whoever holds the audit key (anyone with
the keystore passphrase) can forge a whole new chain: the log is evidence against
tampering by people without the passphrase, not against the keystore's owner.

The audit key is a random key sealed in the keystore (``LocalKeystore.audit_key``).
The log sits beside the keystore (``audit.log``) unless ``$PQSEAL_AUDIT_LOG`` names
another file; ``PQSEAL_AUDIT_LOG=off`` turns logging off.

Appends from several processes (and threads) form one valid chain: each takes an
exclusive ``flock`` on the log, reads the last record's MAC, appends one line with
``O_APPEND``, fsyncs and unlocks. A record that cannot be written fails the operation
with :class:`~pqseal.errors.AuditLogError` (records are never dropped silently).
"""

from __future__ import annotations

import datetime as _dt
import fcntl
import functools
import getpass
import hashlib
import hmac
import inspect
import json
import os
import socket
import threading
from dataclasses import dataclass
from typing import Any, Callable, Iterator

from .errors import AuditLogError

ENV = "PQSEAL_AUDIT_LOG"
OFF = "off"
FILE_NAME = "audit.log"
_FIELDS = ("seq", "time", "user", "host", "pid", "op", "key", "version", "file", "outcome", "mac")
_TAIL_CHUNK = 4096
MAX_LINE = 64 * 1024   # a longer line is malformed (records are < 5 KiB: a path is < 4 KiB)


def log_path(keystore_path: str) -> str | None:
    """Where the audit log of a keystore lives; None when logging is off."""
    configured = os.environ.get(ENV)
    if configured is not None and configured.strip().lower() == OFF:
        return None
    if configured:
        return os.path.expanduser(configured)
    return os.path.join(os.path.dirname(os.path.abspath(keystore_path)), FILE_NAME)


def _user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no passwd entry and no $USER: the uid identifies the caller
        return f"uid:{os.getuid()}"


def _canonical(record: dict) -> bytes:
    return json.dumps({k: v for k, v in record.items() if k != "mac"}, sort_keys=True,
                      separators=(",", ":"), ensure_ascii=True).encode("ascii")


def _mac(key: bytes, previous: str, record: dict) -> str:
    return hmac.new(key, previous.encode("ascii") + b"\n" + _canonical(record), hashlib.sha256).hexdigest()


def _last_line(fd: int) -> bytes:
    """The last line of the file with its newline (none when a write was torn), b"" for an empty file."""
    end = os.lseek(fd, 0, os.SEEK_END)
    if end == 0:
        return b""
    data = b""
    pos = end
    while pos > 0 and end - pos <= MAX_LINE:
        step = min(_TAIL_CHUNK, pos)
        pos -= step
        data = os.pread(fd, step, pos) + data
        # data ends with the last line's newline; look for the one before it
        cut = data.rfind(b"\n", 0, len(data) - 1)
        if cut >= 0:
            return data[cut + 1:]
    return data if pos == 0 else b"malformed"


@dataclass
class Event:
    """What one audited operation is about; ``version`` may be filled in while it runs."""

    op: str
    key: str | None = None
    version: int | None = None
    file: str | None = None


class AuditLog:
    """Appends chained records to one log file under one audit key."""

    def __init__(self, path: str, key: bytes):
        self.path = os.fspath(path)
        self._key = key

    def append(self, event: Event, outcome: str = "ok") -> dict:
        """Write one record (locked, O_APPEND, fsync); returns it. Raises AuditLogError."""
        return self.append_many([(event, outcome)])[0]

    def append_many(self, entries: list[tuple[Event, str]]) -> list[dict]:
        """Write records of (event, outcome) in one locked write and one fsync."""
        fd = self._open()
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            seq, previous = self._last(fd)
            who = {"user": _user(), "host": socket.gethostname(), "pid": os.getpid()}
            out, lines = [], []
            for event, outcome in entries:
                seq += 1
                record: dict[str, Any] = {
                    "seq": seq, "time": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="microseconds"), **who,
                    "op": event.op, "key": event.key, "version": event.version, "file": event.file,
                    "outcome": outcome,
                }
                record["mac"] = previous = _mac(self._key, previous, record)
                out.append(record)
                lines.append(json.dumps({k: record[k] for k in _FIELDS}, ensure_ascii=True).encode("ascii") + b"\n")
            data = b"".join(lines)
            if os.write(fd, data) != len(data):
                raise AuditLogError(f"short write to audit log {self.path}")
            os.fsync(fd)
            return out
        except OSError as exc:
            raise AuditLogError(f"cannot write audit log {self.path}: {exc.strerror}") from None
        finally:
            os.close(fd)  # releases the lock

    def _open(self) -> int:
        try:
            return os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600)
        except OSError as exc:
            raise AuditLogError(f"cannot open audit log {self.path}: {exc.strerror}") from None

    def _last(self, fd: int) -> tuple[int, str]:
        """``seq`` and ``mac`` of the log's last record ((0, "") when empty)."""
        last = _last_line(fd)
        last_rec = _parse(last[:-1]) if last.endswith(b"\n") else None
        if last and last_rec is None:
            raise AuditLogError(f"audit log {self.path} ends with a malformed record; "
                                f"run `pqseal audit verify` and repair or move the log")
        return (last_rec["seq"], last_rec["mac"]) if last_rec else (0, "")

    def _check_appendable(self) -> None:
        """AuditLogError now when a record could not be appended (the log cannot be
        opened, or ends with a malformed record)."""
        fd = self._open()
        try:
            fcntl.flock(fd, fcntl.LOCK_SH)
            self._last(fd)
        except OSError as exc:
            raise AuditLogError(f"cannot read audit log {self.path}: {exc.strerror}") from None
        finally:
            os.close(fd)

    def record(self, event: Event, run: Callable[[], Any]) -> Any:
        """``run()`` and one record of it with its outcome (the error's type name when it
        raises, which is re-raised). A record that cannot be written fails the operation:
        a log that cannot be opened, or ends with a malformed record, fails it before
        ``run()`` (a destroy does not happen unrecorded while reported as failed)."""
        self._check_appendable()
        try:
            result = run()
        except BaseException as exc:
            self.append(event, type(exc).__name__)
            raise
        self.append(event)
        return result


def _parse(line: bytes) -> dict | None:
    try:
        rec = json.loads(line.decode("ascii"))
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(rec, dict) or set(rec) != set(_FIELDS) or not isinstance(rec["seq"], int) \
            or not _is_mac(rec["mac"]):
        return None
    return rec


def _is_mac(value) -> bool:
    return isinstance(value, str) and len(value) == 64 and all(c in "0123456789abcdef" for c in value)


# ---- reading and verifying -------------------------------------------------------------------


def read(path: str) -> Iterator[tuple[int, dict | None]]:
    """(line number, record or None when malformed) of every line of the log."""
    with open(path, "rb") as f:
        n = 0
        while True:
            line = f.readline(MAX_LINE + 1)
            if not line:
                return
            n += 1
            if line.endswith(b"\n"):
                yield n, _parse(line[:-1])
                continue
            yield n, None  # torn or overlong: skip to the next line
            while line and not line.endswith(b"\n"):
                line = f.readline(MAX_LINE + 1)


@dataclass(frozen=True)
class Verification:
    """The outcome of :func:`verify`: ``count`` records intact up to ``head`` (the last
    intact record's MAC); ``bad_line`` and ``error`` name the first failure, if any."""

    path: str
    count: int
    head: str
    bad_line: int | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


def verify(path: str, key: bytes, expect_count: int | None = None, expect_head: str | None = None) -> Verification:
    """Check the chain of the log; the first broken, malformed or out-of-sequence line is
    reported. ``expect_count``/``expect_head`` (an anchor kept from an earlier verify)
    detect a tail cut: fewer records than expected, or the anchored MAC gone."""
    previous, count, seen_head = "", 0, expect_head is None
    for n, rec in read(path):
        if rec is None:
            return Verification(path, count, previous, n, "malformed record")
        if rec["seq"] != count + 1:
            return Verification(path, count, previous, n, f"sequence number {rec['seq']}, expected {count + 1}")
        if not hmac.compare_digest(_mac(key, previous, rec), rec["mac"]):
            return Verification(path, count, previous, n, "MAC mismatch (record edited, removed, reordered or "
                                "inserted here, or another audit key)")
        previous, count = rec["mac"], count + 1
        seen_head = seen_head or previous == expect_head
    if expect_count is not None and count < expect_count:
        return Verification(path, count, previous, count + 1, f"{count} records, expected at least {expect_count} "
                            "(the tail was cut)")
    if not seen_head:
        return Verification(path, count, previous, count + 1, "the anchored head MAC is not in the log "
                            "(the tail was cut or the log replaced)")
    return Verification(path, count, previous)


# ---- the keystore's log and file operations ---------------------------------------------------

_registry_lock = threading.Lock()
_active: dict[tuple[str, str], AuditLog] = {}   # (log, keystore) paths -> the logs this process opened


def keystore_log(keystore) -> AuditLog | None:
    """The audit log of a :class:`~pqseal.kms.keystore.LocalKeystore` (None when off),
    opened on its first audited operation and remembered for :func:`file_operation`."""
    path = log_path(keystore.path)
    if path is None:
        return None
    slot = (os.path.realpath(path), os.path.realpath(keystore.path))
    with _registry_lock:
        log = _active.get(slot)
        if log is None:
            log = _active[slot] = AuditLog(path, keystore.audit_key())
        return log


def audited(op: str, key_param: str | None = None, version: Callable[[dict, Any], int | None] | None = None):
    """Decorator of a keystore method: one record per call, with the master key id taken
    from the argument ``key_param`` (if any) and the version from ``version(arguments,
    result)`` (result None when the call failed)."""

    def decorate(method):
        signature = inspect.signature(method)

        @functools.wraps(method)
        def wrapper(self, *args, **kwargs):
            log = keystore_log(self)
            if log is None:
                return method(self, *args, **kwargs)
            arguments = signature.bind(self, *args, **kwargs).arguments
            key = arguments.get(key_param) if key_param else None
            event = Event(op, None if key is None else str(key))

            def run():
                result = None
                try:
                    result = method(self, *args, **kwargs)
                    return result
                finally:
                    event.version = version(arguments, result) if version else None
            return log.record(event, run)
        return wrapper
    return decorate


def file_operation(op: str, path: str, run: Callable[[], Any]) -> Any:
    """``run()`` a file operation (seal, unseal, ...) and record it, with its outcome, in
    the log of every keystore this process opened (none when it used another KMS)."""
    try:
        result = run()
    except BaseException as exc:
        _record_file(op, path, type(exc).__name__)
        raise
    _record_file(op, path, "ok")
    return result


def forget_logs() -> None:
    """Forget the logs of the keystores opened so far: later file operations are recorded
    only in the logs of keystores opened after this (the counterpart of
    ``pqseal.keys.clear_caches``, which forgets their KMS clients)."""
    with _registry_lock:
        _active.clear()


def record_files(op: str, outcomes: list[tuple[str, str]]) -> None:
    """Record (path, outcome) of file operations done elsewhere (a dataset job's workers),
    in one write per log of every keystore this process opened."""
    with _registry_lock:
        logs = list(_active.values())
    for log in logs:
        log.append_many([(Event(op, file=os.path.abspath(path)), outcome) for path, outcome in outcomes])


def _record_file(op: str, path: str, outcome: str) -> None:
    record_files(op, [(path, outcome)])
