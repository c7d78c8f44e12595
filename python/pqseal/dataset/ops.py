"""The driver of a dataset job: plan, journal, keys, dispatch, report.

The driver makes every KMS call, in its own process, through ``kms``: it opens a
:class:`~pqseal.keys.KeySession` (write side: one KEK per master key; read side: the
distinct KEKs of the dataset's key material) and hands workers the session, or the
caller's explicit properties, never a KMS client.

Resuming (the journal, ``journal.py``): a rerun of the same job (same kind and options)
skips files recorded done after checking them (output, and its external key material,
exist with the recorded size, mtime and inode, source unchanged, and a footer check:
sealed for encrypt/rekey, plaintext for decrypt); redoes started-but-not-done files (an output there was made by
this job and is replaced); skips files that failed unless ``retry_failed=True``. A
destination file the journal does not know is never replaced without ``overwrite=True``:
the driver checks each output path before recording the file started, and from then on
the path belongs to the job (so a rescheduled Dask task may replace its own output).
"""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import hmac
import json
import os
import time
import warnings
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from .. import _cancel
from .._io import is_temp_name, unlink_quietly
from ..format.properties import DecryptionProperties, EncryptionProperties
from ..keys.session import DEFAULT_SESSION_LIFETIME
from .executors import make_executor
from .journal import Journal, Stamp
from .keys import FixedKeys, Paired
from .plan import Plan, plan
from .progress import Progress
from .report import FileResult, Report
from .summary import copy_success, dropped, regenerate
from .usage import JobUsage
from .worker import Task

SUMMARY_POLICIES = ("auto", "drop")                  # see summary.py
WRITERS = ("encrypt", "decrypt", "rekey", "rotate")   # kinds that keep a journal
TREE_OUTPUT = ("encrypt", "decrypt", "rekey")          # kinds that write a new tree
VERBS = {"encrypt": "encrypted", "decrypt": "decrypted", "rekey": "rekeyed", "verify": "verified",
         "inspect": "inspected", "rotate": "rotated", "compact": "compacted"}
NOT_ROTATABLE = "no key material (a plaintext file, or explicit keys): nothing to rotate"


@dataclasses.dataclass
class Options:
    """The keyword options every operation takes (see :func:`pqseal.dataset.encrypt`)."""

    kms: Any = None
    kms_connection_config: Any = None
    executor: Any = "threads"
    workers: int | None = None
    overwrite: bool = False
    retry_failed: bool = False
    progress: bool | None = None
    report: Any = None
    allow_insecure: bool = False
    security: Any = None
    session_lifetime: float = DEFAULT_SESSION_LIFETIME
    summaries: str = "auto"
    on_result: Callable[[FileResult], None] | None = None

    def __post_init__(self):
        if self.summaries not in SUMMARY_POLICIES:
            raise ValueError(f"summaries must be one of {', '.join(SUMMARY_POLICIES)}, not {self.summaries!r}")


# ---- keys ------------------------------------------------------------------------------------


def _session_class():
    from ..keys import session

    return session.KeySession


def _is_explicit(x) -> bool:
    return isinstance(x, (EncryptionProperties, DecryptionProperties))


def _enc_config(x):
    from ..arrow import encryption_config

    return encryption_config(x)


def _dec_config(x):
    from ..arrow import decryption_config

    return decryption_config(x)


def build_keys(o: Options, *, encryption=None, decryption=None, read: bool = False, write: bool = False,
               files: list[str] | None = None) -> Paired:
    """The job's keys, opened on the driver (every KMS call is made here)."""
    read_side = write_side = None
    enc_cfg = _enc_config(encryption) if write and not _is_explicit(encryption) else None
    dec_explicit = read and _is_explicit(decryption)
    if write and _is_explicit(encryption):
        write_side = FixedKeys(encryption=encryption)
    if dec_explicit:
        read_side = FixedKeys(decryption=decryption)
    if enc_cfg is not None or (read and not dec_explicit):
        session = _session_class().open(o.kms, enc_cfg, decryption=_dec_config(decryption) if read else None,
                                        kms_connection_config=o.kms_connection_config,
                                        lifetime=o.session_lifetime)
        try:
            if read and not dec_explicit and files:
                session.add_files(files)
        except BaseException:
            session.close()
            raise
        if enc_cfg is not None:
            write_side = session
        if read and not dec_explicit:
            read_side = session
    return Paired(read_side, write_side)


def _describe(x, salt: bytes) -> Any:
    """Options as the fingerprint sees them: explicit keys only as an HMAC under the
    journal's salt, never their bytes."""
    def mac(keys: list) -> str:
        h = hmac.new(salt, digestmod="sha256")
        for k in keys:
            h.update(len(k or b"").to_bytes(2, "big") + (k or b""))
        return h.hexdigest()

    if x is None:
        return None
    if isinstance(x, EncryptionProperties):
        cols = sorted(x.column_keys.items())
        return {"explicit": True, "algorithm": x.algorithm, "plaintext_footer": x.plaintext_footer,
                "uniform": x.uniform, "columns": [p for p, _ in cols], "complete_columns": x.complete_columns,
                "aad_prefix": x.aad_prefix, "store_aad_prefix": x.store_aad_prefix, "v2_framing": x.v2_framing,
                "keys": mac([x.footer_key] + [c.key for _, c in cols])}
    if isinstance(x, DecryptionProperties):
        dec = sorted(x.column_keys.items())
        return {"explicit": True, "aad_prefix": x.aad_prefix, "columns": [p for p, _ in dec],
                "keys": mac([x.footer_key] + [k for _, k in dec]), "retriever": x.key_retriever is not None}
    if dataclasses.is_dataclass(x) and not isinstance(x, type):
        return dataclasses.asdict(x)
    return repr(x)


def fingerprint(kind: str, src: str, salt: bytes, **options) -> str:
    doc = {"kind": kind, "src": os.path.realpath(src), **{k: _describe(v, salt) for k, v in options.items()}}
    text = json.dumps(doc, sort_keys=True, default=lambda b: b.hex() if isinstance(b, bytes) else repr(b))
    return hashlib.sha256(text.encode()).hexdigest()


# ---- the journal's view of each file -----------------------------------------------------------


def _output(kind: str, src: str, dst: str | None) -> str | None:
    if kind == "rotate":
        from ..keys.store import material_path

        return material_path(src) if os.path.exists(material_path(src)) else src
    return dst


def _footer_ok(kind: str, out: str, src: str) -> bool:
    """The cheap check of a finished output: a footer of the expected kind."""
    from ..errors import PqsealError
    from ..format.source import Source

    try:
        if kind == "rotate":
            return _rotatable(src)
        with Source(out) as s:
            return (s.crypto is None) == (kind == "decrypt")
    except (PqsealError, OSError, ValueError):
        return False


def _why_redo(kind: str, job, rec: dict) -> str | None:
    """None when a file recorded done still is; else why it is to be done again."""
    out = _output(kind, job.src, job.dst)
    try:
        src_now = Stamp.of(job.src)
    except OSError:
        return "source missing"
    was_src, was_out = Stamp.load(rec.get("src")), Stamp.load(rec.get("out"))
    if was_src is None or not src_now.same_content(was_src):
        return "source changed"
    try:
        out_now = Stamp.of(out) if out is not None else None
    except FileNotFoundError:
        return "output missing"
    if out_now is not None and (was_out is None or not out_now.same_file(was_out)):
        return "output changed"
    if out is not None and not _footer_ok(kind, out, job.src):
        return "output footer not as expected"
    was_mat, mat = Stamp.load(rec.get("material")), _material(kind, job.dst)
    if was_mat is not None:
        mat_now = _stamp(mat)
        if mat_now is None or not mat_now.same_file(was_mat):
            return "key material missing or changed"
    return None


def _material(kind: str, dst: str | None) -> str | None:
    """The external key material file beside a sealed output."""
    if kind not in ("encrypt", "rekey") or dst is None:
        return None
    from ..keys.store import material_path

    return material_path(dst)


def _stamp(path: str | None) -> Stamp | None:
    try:
        return None if path is None else Stamp.of(path)
    except FileNotFoundError:
        return None


def _note(rep: Report, message: str) -> None:
    """A job-level warning: in the report and as a Python warning (per-file engine
    warnings only go to the report: the engine warns where it runs)."""
    rep.warnings.append(message)
    warnings.warn(message, stacklevel=5)   # _note, its caller, run, the public function, the user


def _exists(path: str | None) -> bool:
    return path is not None and os.path.lexists(path)


def _triage(kind: str, p: Plan, journal: Journal | None, o: Options, rep: Report, with_keys: bool) -> list[Task]:
    """The tasks of this run; files skipped or refused before any work go to the report."""

    tasks = []
    for job in p.jobs:
        rec = journal.state.get(job.rel) if journal is not None else None
        state = rec.get("t") if rec else None
        try:
            size = os.path.getsize(job.src)
        except OSError as exc:
            rep.failed.append(FileResult(job.rel, 0, error=f"{type(exc).__name__}: {exc.strerror}: {job.src}"))
            continue
        if kind == "rotate" and not _rotatable(job.src):
            rep.skipped.append(FileResult(job.rel, size, reason=NOT_ROTATABLE))
            continue
        out = _output(kind, job.src, job.dst) if kind in TREE_OUTPUT else None
        if state == "done":
            why = _why_redo(kind, job, rec)   # type: ignore[arg-type]
            if why is None:
                rep.skipped.append(FileResult(job.rel, size, reason="done in an earlier run"))
                continue
            was = Stamp.load(rec.get("out"))  # type: ignore[union-attr]
            replaced = _exists(out) and (was is None or Stamp.of(out).ino != was.ino)  # type: ignore[arg-type]
            if replaced and not o.overwrite:
                rep.failed.append(FileResult(job.rel, size, error=f"OutputExists: {out} was replaced since this "
                                             "job wrote it; pass overwrite=True (CLI: --force) to replace it"))
                continue
            _note(rep, f"{job.rel}: done again ({why})")
        elif state == "failed" and not o.retry_failed:
            rep.skipped.append(FileResult(job.rel, size, error=rec.get("error"),  # type: ignore[union-attr]
                                          reason="failed in an earlier run (retry_failed=True to retry)"))
            continue
        elif state is None and _exists(out) and not o.overwrite:
            rep.failed.append(FileResult(job.rel, size, error=f"OutputExists: {out} exists; pass overwrite=True "
                                         "(CLI: --force) to replace it"))
            continue
        # from here on the output path is this job's: a started file's output is replaced
        tasks.append(Task(kind, job.src, job.dst, job.rel, size, overwrite=True, with_keys=with_keys))
    stuck = [r.path for r in rep.skipped if r.reason == NOT_ROTATABLE]
    if stuck:
        more = f" and {len(stuck) - 10} more" if len(stuck) > 10 else ""
        _note(rep, f"{len(stuck)} files not rotated, {NOT_ROTATABLE}: {', '.join(stuck[:10])}{more}")
    return tasks


# ---- the run -----------------------------------------------------------------------------------


def _cleanup(p: Plan, tasks: list[Task]) -> None:
    """Temporary files left beside this job's outputs by workers that died (every task of
    the job has finished, so none is in use) and staged key material of dead processes."""
    from .. import api
    from ..keys.store import recover

    by_dir: dict[str, set[str]] = {}
    for t in tasks:
        if t.dst is not None:
            by_dir.setdefault(os.path.dirname(t.dst), set()).add(os.path.basename(t.dst))
    for d, names in by_dir.items():
        try:
            entries = os.listdir(d)
        except OSError:
            continue
        for n in entries:
            if is_temp_name(n) and n[1:].rsplit(".pqseal-", 1)[0] in names:
                unlink_quietly(os.path.join(d, n))
        recover(d, api.file_unique)


def run(kind: str, src, dst, o: Options, *, encryption=None, decryption=None) -> Report:
    """Run one dataset job (the public functions of :mod:`pqseal.dataset` call this)."""
    t0 = time.monotonic()
    src = os.fspath(src)
    dst = None if dst is None else os.fspath(dst)
    if not os.path.isdir(src):
        raise NotADirectoryError(errno.ENOTDIR, f"{src} is not a directory (pqseal.api works on single files)")
    if kind in TREE_OUTPUT and dst is None:
        raise TypeError(f"dataset.{kind} needs a destination directory")
    p = plan(src, dst)
    read = kind in ("decrypt", "rekey", "verify", "rotate") or (kind == "inspect" and (
        decryption is not None or o.kms is not None or o.kms_connection_config is not None))
    write = kind in ("encrypt", "rekey")
    ex = make_executor(o.executor, o.workers, allow_insecure=o.allow_insecure, security=o.security)
    journal = None
    try:
        ex.check(keys_travel=read or write)      # refused before anything is written or asked of the KMS
        if dst is not None:
            os.makedirs(dst, exist_ok=True)
        if kind in WRITERS:
            journal = Journal.open(dst if dst is not None else src, kind,
                                   lambda salt: fingerprint(kind, src, salt, encryption=encryption,
                                                            decryption=decryption),
                                   restart=o.overwrite)
    except BaseException:
        ex.close()
        raise
    rep = Report(kind, src, dst, ex.name, ex.workers, ignored=list(p.skipped),
                 journal=None if journal is None else journal.path)
    keys: Paired | None = None
    try:
        tasks = _triage(kind, p, journal, o, rep, read)
        tasks, tenant_keys = _resolve_templates(tasks, encryption if write else None, journal, o, rep)
        # nothing to do (a finished job run again): no key session, no KMS call
        keys = build_keys(o, encryption=encryption, decryption=decryption, read=read, write=write,
                          files=[t.src for t in tasks] if read else None) if tasks else Paired()
        tasks = _unreadable(tasks, keys, journal, o, rep)
        # write KEKs of master keys known per file, before the keys are shipped: tenant keys,
        # and for a rotation the master keys of each file's DEKs (their newest versions)
        if kind == "rotate" and hasattr(keys.read, "file_master_keys"):
            tasks = _add_write_keys(tasks, keys.read, {t.rel: keys.read.file_master_keys(t.src) for t in tasks},
                                    journal, o, rep)
        else:
            tasks = _add_write_keys(tasks, keys.write, tenant_keys, journal, o, rep)
        usage = JobUsage.of(kind, keys) if tasks else None
        if tasks:
            ex.start(keys)
        _dispatch(tasks, ex, journal, o, rep, usage)
        if usage is not None:
            rep.warnings += list(usage.warnings.values())
        if not rep.interrupted:
            _cleanup(p, tasks)
            if kind in TREE_OUTPUT:
                _non_data(kind, p, dst, rep, o.summaries)
    finally:
        ex.close()
        if keys is not None:
            rep.kms_calls = keys.kms_calls
            keys.close()
        if journal is not None:
            if kind == "rotate" and rep.success:
                journal.remove()     # a later rotation is a new job
                rep.journal = None
            journal.close()
    return rep.finish(t0, o.report)


def _non_data(kind: str, p: Plan, dst: str, rep: Report, summaries: str) -> None:
    """``_SUCCESS`` copied; summaries dropped (encrypt, rekey; with a warning unless
    ``summaries="drop"`` asked for it) or regenerated (decrypt, ``summaries="auto"``)."""
    copy_success(p, dst)
    if kind == "decrypt":
        if summaries == "auto":
            done = {r.path for r in rep.ok} | {r.path for r in rep.skipped if r.error is None}
            for w in regenerate(p, dst, done):
                _note(rep, w)
    elif summaries == "auto":
        for w in dropped(p):
            _note(rep, w)


def _rotatable(src: str) -> bool:
    """A file with key material to re-wrap: external beside it, or in its footer (the
    footer key metadata, read without a key); unreadable files go to the worker, which
    reports them."""
    from ..errors import PqsealError
    from ..format.source import Source
    from ..keys.store import material_path

    if os.path.exists(material_path(src)):
        return True
    try:
        with Source(src, verify_footer=False) as s:
            if s.crypto is None:
                return False
            if s.crypto.footer_key_metadata is not None:
                return True
            return bool(s.fmd and s.fmd.get("footer_signing_key_metadata"))
    except (PqsealError, OSError, ValueError):
        return True


def _fail_early(t: Task, line: str, journal: Journal | None, o: Options, rep: Report) -> None:
    """A file that fails on the driver, before it is dispatched: journaled and reported
    like a worker's failure (its source is not touched)."""
    line = " ".join(line.split())
    if journal is not None:
        journal.failed(t.rel, line)
    res = FileResult(t.rel, t.size, error=line)
    rep.failed.append(res)
    if o.on_result is not None:
        o.on_result(res)


def _resolve_templates(tasks: list[Task], encryption, journal: Journal | None, o: Options,
                       rep: Report) -> tuple[list[Task], dict[str, list[str]]]:
    """Master key id templates of the write config (``tenant-{customer_id}``), resolved
    on the driver from each file's partition values (its path relative to the source
    root): the tasks carry their values; returns {relative path: resolved master key ids}
    for :func:`_add_write_keys`. A file the templates cannot be resolved for fails here,
    without being attempted."""
    from ..errors import PqsealError
    from ..keys import template

    if encryption is None or _is_explicit(encryption):
        return tasks, {}
    cfg = _enc_config(encryption)
    if not template.has_templates(cfg):
        return tasks, {}
    keep, ids = [], {}
    for t in tasks:
        try:
            values = template.partition_values(t.rel)
            ids[t.rel] = template.master_key_ids(template.resolve(cfg, values, f" in {t.rel}"))
        except PqsealError as exc:
            _fail_early(t, f"{type(exc).__name__}: {exc}", journal, o, rep)
            continue
        keep.append(dataclasses.replace(t, partition=tuple(sorted(values.items()))))
    return keep, ids


def _add_write_keys(tasks: list[Task], session, ids: Mapping[str, Sequence[str]], journal: Journal | None,
                    o: Options, rep: Report) -> list[Task]:
    """One write KEK in ``session`` per distinct master key of the files still to do
    (``ids``: {relative path: master key ids}; one KMS wrap each, on the driver). A key the
    KMS refuses (missing, disabled, a shredded tenant's, over a refusing usage limit) fails
    that key's files only."""
    from ..errors import PqsealError, SessionExpired

    if not ids or not tasks:
        return tasks
    bad: dict[str, str] = {}
    for mk in sorted({mk for t in tasks for mk in ids[t.rel]}):
        try:
            session.add_master_keys([mk])
        except SessionExpired:
            raise
        except PqsealError as exc:
            bad[mk] = f"{type(exc).__name__}: {exc}"
    keep = []
    for t in tasks:
        why = next((bad[mk] for mk in ids[t.rel] if mk in bad), None)
        if why is None:
            keep.append(t)
        else:
            _fail_early(t, f"keys not writable: {why}", journal, o, rep)
    return keep


def _unreadable(tasks: list[Task], keys: Paired, journal: Journal | None, o: Options, rep: Report) -> list[Task]:
    """Files whose keys the session could not read fail here, without being attempted."""
    bad = keys.unreadable
    if not bad:
        return tasks
    keep = []
    for t in tasks:
        why = bad.get(t.src, bad.get(os.path.abspath(t.src)))
        if why is None:
            keep.append(t)
        else:
            _fail_early(t, f"keys not readable: {why}", journal, o, rep)
    return keep


def _dispatch(tasks: list[Task], ex, journal: Journal | None, o: Options, rep: Report,
              usage: JobUsage | None = None) -> None:
    """Run ``tasks`` on ``ex``, a window of them at a time; ``usage``: checked and counted
    per file on the way out and back (a file over a refusing usage limit fails here)."""
    bar = Progress(VERBS[tasks[0].kind] if tasks else "done", len(tasks), sum(t.size for t in tasks), o.progress)
    queue = deque(tasks)
    inflight: dict = {}
    stamps: dict[str, Stamp] = {}
    window = ex.window      # bounded: results and futures, not the whole tree, in flight

    def handle(t: Task, res: FileResult) -> None:
        if usage is not None:
            usage.done(t, res)
        if res.reason == "cancelled":
            return
        bar.update(res)
        if res.error is None:
            if journal is not None:
                out, mat = _output(t.kind, t.src, t.dst), _material(t.kind, t.dst)
                journal.done(t.rel, stamps.get(t.rel), _stamp(out), _stamp(mat))
            rep.ok.append(res)
            rep.warnings += [f"{t.rel}: {w}" for w in res.warnings]
        else:
            if journal is not None and res.reason != "lost":   # lost: left started, redone on a rerun
                journal.failed(t.rel, res.error)
            rep.failed.append(res)
        if o.on_result is not None:
            o.on_result(res)

    try:
        while queue or inflight:
            if _cancel.requested():
                rep.interrupted = True
                break
            # refilled once half the window is free: one journal fsync and one submission
            # per half window of files, not per file, while the workers still have a queue
            if queue and len(inflight) <= window // 2:
                batch: list[Task] = []
                while queue and len(inflight) + len(batch) < window:
                    t = queue.popleft()
                    why = None if usage is None else usage.admit(t)
                    if why is None:
                        batch.append(t)
                    else:
                        handle(t, FileResult(t.rel, t.size, error=why))
                for t in batch:
                    stamps[t.rel] = Stamp.of(t.src)
                    if journal is not None:
                        journal.started(t.rel, stamps[t.rel])
                if journal is not None:
                    journal.sync()
                if batch:
                    inflight.update(zip(ex.submit(batch), batch))
            for f in ex.wait(list(inflight)) if inflight else ():   # none: the rest refused by a usage limit
                t = inflight.pop(f)
                handle(t, ex.result(f, t))
        if rep.interrupted:
            ex.cancel(list(inflight))
            ex.close()   # running files stop at their next chunk
            for f, t in list(inflight.items()):
                if f.done():
                    handle(t, ex.result(f, t))
    finally:
        bar.close()
