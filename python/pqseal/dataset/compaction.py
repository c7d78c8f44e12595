"""The driver of :func:`pqseal.dataset.compact`: merge the small PME files of each
partition directory into files of up to ``target_size`` bytes, page by page.

- **What merges** (``compact_groups.py``): data files as pyarrow finds them
  (``plan.py``), per partition directory, in sorted order; only files of equal Parquet
  and Arrow schemas (and, with ``encryption=None``, equal encryption) are merged into
  one output. Files that are already ``target_size`` or larger, or alone of their kind,
  are left as they are.
- **Keys**: the driver makes every KMS call. ``encryption``: an ``EncryptionConfig``
  (outputs sealed under its master keys, resolved per partition where they are
  templates such as ``tenant-{customer_id}``; fresh DEKs per output and column),
  explicit ``EncryptionProperties`` (those keys, the same for every output), or None:
  each output is sealed like its inputs (same master key per column, algorithm, footer
  mode and key material storage; read from their key material), with fresh DEKs. A
  :class:`~pqseal.keys.KeySession` reads the inputs (one KMS call per distinct KEK) and
  wraps (one per master key); key usage and limits are counted and checked per output
  as for ``encrypt`` (``usage.py``).
- **Carried forward**: a file that cannot be decrypted (keys missing, disabled or
  destroyed, a tag failure) is never merged and never deleted: it stays in place (or is
  copied byte for byte into ``dst``) and is listed in ``Report.skipped`` with the reason.
- **In place** (``dst=None``): each merge commits under a manifest
  (``compact_merge.py``); a run recovers what an interrupted one left before it plans,
  so after any crash and a rerun every row is in exactly one data file. One compaction
  of a tree runs at a time (a lock in ``<root>/.pqseal-job/``).
- **New tree** (``dst``): merged files and carried-forward copies; ``dst`` must not hold
  anything but this job's journal unless ``overwrite=True``; a rerun resumes.
- **Report**: ``ok`` has one record per merged output (``detail``: its inputs, rows,
  row groups), ``skipped`` the files left as they were, ``failed`` the merges that failed.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import shutil
import time

from .._io import unlink_quietly
from ..errors import OutputExists, PqsealError, SessionExpired
from ..format.properties import DecryptionProperties
from ..keys.config import EncryptionConfig
from .compact_groups import KEYS_NOT_READABLE, FileInfo, Planned, group, output_name, survey
from .compact_merge import MANIFEST_DIR, Group, recover
from .executors import make_executor
from .journal import DIRECTORY, Journal, Stamp, done_outputs, path_in
from .keys import Paired
from .ops import Options, _dispatch, _enc_config, _is_explicit, _note, build_keys, fingerprint
from .plan import check_destination, plan
from .report import FileResult, Report
from .summary import SUMMARY_NAMES, copy_success, dropped
from .usage import JobUsage
from .worker import Task

DEFAULT_TARGET_SIZE = 128 << 20
ALONE = "nothing to merge it with (alone of its kind in its directory, or already target_size)"


class CompactionRunning(OutputExists):
    """Another compaction of the same tree is running."""


class UnfinishedCompaction(PqsealError):
    """The source tree holds an in-place compaction that was interrupted after its commit
    point: until a compaction in place finishes it, some rows are in two data files."""


class NoKeysReadable(PqsealError):
    """The keys of no file of the tree could be read (a wrong keystore passphrase, wrong
    key list, the KMS unreachable): nothing would be compacted."""


def _check_no_pending_commit(src: str) -> None:
    d = os.path.join(src, DIRECTORY, MANIFEST_DIR)
    pending = sorted(n for n in os.listdir(d) if not n.startswith(".")) if os.path.isdir(d) else []
    if pending:
        raise UnfinishedCompaction(f"{src} holds {len(pending)} interrupted in-place merge(s) (manifests in {d}): "
                                   "some rows are in two files until they are finished; compact it in place first "
                                   "(without a destination)")


def _lock(root: str) -> int:
    d = os.path.join(root, DIRECTORY)
    os.makedirs(d, exist_ok=True)
    fd = os.open(os.path.join(d, "compact.lock"), os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise CompactionRunning(f"another compaction of {root} is running") from None
    return fd


def refuse_same_tree(src: str, dst: str) -> None:
    """ValueError when ``dst`` is ``src`` itself: in place is no destination."""
    if os.path.isdir(dst) and os.path.isdir(src) and os.path.samefile(src, dst):
        raise ValueError(f"{dst} is the source tree; to compact it in place give no destination")


def _check_dst(src: str, dst: str, overwrite: bool) -> None:
    """A new tree, or one a compaction wrote and journaled (the journal then must be of
    this job: :class:`JournalMismatch` otherwise)."""
    refuse_same_tree(src, dst)
    check_destination(src, dst)
    if os.path.isdir(dst) and not overwrite and not os.path.exists(path_in(dst)):
        extra = [n for n in os.listdir(dst) if n != DIRECTORY]
        if extra:
            raise OutputExists(f"{dst} exists and is not empty; pass overwrite=True (CLI: --force) to write into it")


def run(src, dst, encryption, decryption, target_size: int, o: Options) -> Report:
    t0 = time.monotonic()
    src = os.fspath(src)
    dst = None if dst is None else os.fspath(dst)
    if not os.path.isdir(src):
        raise NotADirectoryError(errno.ENOTDIR, f"{src} is not a directory")
    if isinstance(target_size, bool) or not isinstance(target_size, int) or target_size <= 0:
        raise ValueError(f"target_size must be a positive number of bytes, got {target_size!r}")
    if encryption is None and isinstance(decryption, DecryptionProperties):
        raise TypeError("with explicit DecryptionProperties give the outputs' keys too (encryption=...): the "
                        "inputs' master keys are known only from their key material, through a KMS")
    if dst is None and o.overwrite:
        raise ValueError("overwrite (CLI: --force) applies to a destination tree; in place nothing is overwritten")
    if dst is not None:
        _check_dst(src, dst, o.overwrite)
        _check_no_pending_commit(src)
    root = src if dst is None else dst
    manifests = os.path.join(src, DIRECTORY, MANIFEST_DIR) if dst is None else None
    ex = make_executor(o.executor, o.workers, allow_insecure=o.allow_insecure, security=o.security)
    try:
        ex.check(keys_travel=True)      # refused before anything is written or asked of the KMS
        if dst is not None:
            os.makedirs(dst, exist_ok=True)
        lock = _lock(root)
    except BaseException:
        ex.close()
        raise
    journal = keys = rep = None
    try:
        recovered = recover(src, manifests) if manifests is not None else []
        p = plan(src, dst)
        if dst is not None:
            earlier = done_outputs(dst, "compact") if o.overwrite else []
            journal = Journal.open(dst, "compact", lambda salt: fingerprint(
                "compact", src, salt, encryption=encryption, decryption=decryption, target_size=target_size),
                restart=o.overwrite)
            if not journal.resumed:
                _remove_replaced(dst, earlier)
        rep = Report("compact", src, dst, ex.name, ex.workers, ignored=list(p.skipped),
                     journal=None if journal is None else journal.path)
        for line in recovered:
            _note(rep, f"recovered: {line}")
        keys = _keys(o, encryption, decryption, [j.src for j in p.jobs])
        unreadable = keys.unreadable
        infos = [survey(j, keys.decryption_properties(j.src), encryption is None,
                        unreadable.get(j.src, unreadable.get(os.path.abspath(j.src)))) for j in p.jobs]
        locked = [i.why for i in infos if i.why and i.why.startswith(KEYS_NOT_READABLE)]
        if locked and len(locked) == len(infos):
            raise NoKeysReadable(f"the keys of none of the {len(infos)} files could be read (first: "
                                 f"{locked[0][len(KEYS_NOT_READABLE):]}); nothing was compacted")
        groups, alone = group(infos, target_size)
        named = [(os.path.join(g.directory, output_name(g)), g) for g in groups]
        todo = []
        for rel, g in named:
            if journal is not None and _done(journal, rel, os.path.join(root, rel)):
                rep.skipped.append(FileResult(rel, g.size, reason="done in an earlier run"))
            else:
                todo.append((rel, g))
        tasks = []
        for rel, g, cfg in _write_configs(todo, encryption, keys, journal, o, rep):
            first = g.files[0]
            grp = Group(tuple(f.job.src for f in g.files), tuple(f.job.rel for f in g.files), cfg,
                        first.plaintext and encryption is None, manifests)
            tasks.append(Task("compact", first.job.src, os.path.join(root, rel), rel, g.size, overwrite=True,
                              group=grp))
        usage = _usage(keys) if tasks else None
        if tasks:
            ex.start(keys)
        _dispatch(tasks, ex, journal, o, rep, usage)
        if usage is not None:
            rep.warnings += list(usage.warnings.values())
        _carried(rep, alone, src, None if rep.interrupted else dst)
        if dst is not None and not rep.interrupted:
            copy_success(p, dst)
            if o.summaries == "auto":
                for w in dropped(p):
                    _note(rep, w)
        elif o.summaries == "auto":
            for rel, _ in p.skipped:
                if os.path.basename(rel) in SUMMARY_NAMES:
                    _note(rep, f"{rel} still describes the files before compaction; regenerate or remove it")
    finally:
        ex.close()
        if keys is not None:
            if rep is not None:
                rep.kms_calls = keys.kms_calls
            keys.close()
        if journal is not None:
            journal.close()
        if manifests is not None:
            with contextlib.suppress(OSError):
                os.rmdir(manifests)      # when empty: every merge committed
        os.close(lock)
    return rep.finish(t0, o.report)


def _remove_replaced(dst: str, earlier: list[tuple[str, Stamp]]) -> None:
    """Starting over (``overwrite`` and a journal of other options): remove the merged
    files the replaced compaction wrote, where they are still as it wrote them. Their
    names depend on the grouping, so the new outputs would not replace them: their rows
    would be in ``dst`` twice."""
    from ..keys.store import material_path

    for rel, was in earlier:
        path = os.path.join(dst, rel)
        try:
            if not Stamp.of(path).same_file(was):
                continue
        except FileNotFoundError:
            continue
        unlink_quietly(material_path(path))
        unlink_quietly(path)


def _keys(o: Options, encryption, decryption, files: list[str]) -> Paired:
    """Read keys for every file; write keys from ``encryption``, or (None) the read
    session, which the driver gives a write KEK per master key the outputs need."""
    keys = build_keys(o, encryption=encryption, decryption=decryption, read=True, write=encryption is not None,
                      files=files)
    return keys if encryption is not None else Paired(keys.read, keys.read)


def _write_configs(todo: list[tuple[str, Planned]], encryption, keys: Paired, journal: Journal | None,
                   o: Options, rep: Report) -> list[tuple[str, Planned, EncryptionConfig | None]]:
    """Each output with its EncryptionConfig: its inputs' (``encryption=None``), or the
    job's resolved for its partition (master key id templates such as
    ``tenant-{customer_id}``); None for explicit properties or a plaintext output. The
    driver adds a write KEK per master key they name (one KMS wrap each). An output whose
    config cannot be resolved, or whose master key the KMS refuses (missing, disabled, a
    shredded tenant's, over a refusing usage limit), fails alone: its inputs stay."""
    from ..keys import template

    job_cfg = None if encryption is None or _is_explicit(encryption) else _enc_config(encryption)
    out: list[tuple[str, Planned, EncryptionConfig | None]] = []
    for rel, g in todo:
        first = g.files[0]
        try:
            cfg = first.config if encryption is None else \
                None if job_cfg is None else template.resolve_for_path(job_cfg, first.job.rel)
        except PqsealError as exc:
            _fail_group(rel, g, f"{type(exc).__name__}: {exc}", journal, o, rep)
            continue
        out.append((rel, g, cfg))
    bad: dict[str, str] = {}
    for mk in sorted({mk for _, _, cfg in out if cfg is not None for mk in template.master_key_ids(cfg)}):
        try:
            keys.write.add_master_keys([mk])
        except SessionExpired:
            raise
        except PqsealError as exc:
            bad[mk] = f"{type(exc).__name__}: {exc}"
    keep = []
    for rel, g, cfg in out:
        why = next((bad[mk] for mk in (template.master_key_ids(cfg) if cfg else ()) if mk in bad), None)
        if why is None:
            keep.append((rel, g, cfg))
        else:
            _fail_group(rel, g, f"keys not writable: {why}", journal, o, rep)
    return keep


def _fail_group(rel: str, g: Planned, line: str, journal: Journal | None, o: Options, rep: Report) -> None:
    line = " ".join(line.split())
    if journal is not None:
        journal.failed(rel, line)
    res = FileResult(rel, g.size, error=line, detail={"inputs": [f.job.rel for f in g.files], "carried": []})
    rep.failed.append(res)
    if o.on_result is not None:
        o.on_result(res)


def _usage(keys: Paired) -> JobUsage | None:
    """Usage counting and limits of the outputs' DEKs, where the KMS counts usage (see
    ``usage.py``): per output, one DEK per footer and column key of its config."""
    session = keys.write
    seal_usage = session.kms_seal_usage() if hasattr(session, "kms_seal_usage") else None
    if seal_usage is None:
        return None
    return JobUsage(seal_usage, lambda t: session.write_wrappings(config=t.group.config), count_files=True)


def _done(journal: Journal, rel: str, out: str) -> bool:
    rec = journal.state.get(rel)
    if not rec or rec.get("t") != "done":
        return False
    was = Stamp.load(rec.get("out"))
    try:
        return was is not None and Stamp.of(out).same_file(was)
    except FileNotFoundError:
        return False


def _carried(rep: Report, alone: list[FileInfo], src: str, dst: str | None) -> None:
    """Files left as they were go to ``skipped`` (and, for a new tree, are copied there
    byte for byte, with their external key material)."""
    left: list[tuple[str, int, str]] = [(f.job.rel, f.size, f.why or ALONE) for f in alone]
    for r in list(rep.ok):
        for c in r.detail.get("carried", []):
            size = os.path.getsize(os.path.join(src, c["path"]))
            left.append((c["path"], size, c["reason"]))
            r.bytes -= size
        if not r.detail.get("inputs"):
            rep.ok.remove(r)
    for rel, size, why in left:
        if dst is not None:
            _copy(os.path.join(src, rel), os.path.join(dst, rel))
        rep.skipped.append(FileResult(rel, size, reason=why))


def _copy(a: str, b: str) -> None:
    from ..keys.store import material_path

    os.makedirs(os.path.dirname(b), exist_ok=True)
    for x, y in ((material_path(a), material_path(b)), (a, b)):
        if os.path.exists(x) and not (os.path.exists(y) and Stamp.of(x).same_content(Stamp.of(y))):
            shutil.copy2(x, y)
