"""File jobs: one file, or the data files of a directory tree.

A directory runs as a dataset job (:mod:`pqseal.dataset`): pyarrow's discovery rules
decide what is data (what is left out is printed with the reason), the job is journaled
in DST (a rerun skips finished files), and it runs on threads, local processes or a Dask
cluster. A single file (and a directory replaced ``--in-place``) runs here, on threads.
"""

from __future__ import annotations

import os
import sys
from collections import defaultdict
from collections.abc import Callable
from typing import Any
from concurrent.futures import CancelledError, ThreadPoolExecutor, as_completed

import click

from .. import _cancel
from ..dataset.plan import Job, Plan
from ..errors import PqsealError
from .group import fail, one_line
from .interrupt import current

SHOWN_PER_REASON = 10


def plan(src: str, dst: str | None, *, in_place: bool = False) -> Plan:
    """The jobs for SRC (and DST): the file itself, or the data files of a tree."""
    from ..dataset.plan import plan as dataset_plan

    try:
        return dataset_plan(src, dst, in_place=in_place)
    except ValueError as exc:
        fail(str(exc))
        raise   # not reached: fail() exits


def print_skipped(p: Plan) -> None:
    by_reason: dict[str, list[str]] = defaultdict(list)
    for path, reason in p.skipped:
        by_reason[reason].append(path)
    for reason, paths in by_reason.items():
        shown = ", ".join(paths[:SHOWN_PER_REASON])
        more = f" and {len(paths) - SHOWN_PER_REASON} more" if len(paths) > SHOWN_PER_REASON else ""
        click.echo(f"skipped {len(paths)} ({reason}): {shown}{more}", err=True)


def _leftovers(jobs: list[Job]) -> list[str]:
    """Temporary files of this process still in the destinations' directories."""
    mark = f".pqseal-{os.getpid()}-"
    dirs = {os.path.dirname(os.path.abspath(j.dst)) for j in jobs if j.dst is not None}
    found = []
    for d in sorted(dirs):
        try:
            found += [os.path.join(d, n) for n in os.listdir(d) if mark in n]
        except OSError:
            continue
    return found


def run(p: Plan, fn: Callable[[str, str | None], object], jobs: int, verb: str,
        show: Callable[[list], None] | None = None) -> list:
    """Run ``fn(src, dst)`` over the plan's jobs, ``jobs`` at a time, with a progress bar,
    and ``show`` the results. A failing file is reported on one line and the others still
    run; the command then exits 1. SIGINT/SIGTERM stop every job at its next chunk (see
    ``interrupt``)."""
    if p.directory:
        print_skipped(p)
        if not p.jobs:
            fail(f"no data files in {p.src}")
    results: list = []
    failures: list[str] = []

    def one(job: Job):
        _cancel.check()
        if job.dst is not None and p.directory:
            os.makedirs(os.path.dirname(job.dst) or ".", exist_ok=True)
        return fn(job.src, job.dst)

    def failed(job: Job, exc: BaseException) -> None:
        line = one_line(exc, job.src, job.dst)
        failures.append(line)
        if p.directory:
            from tqdm import tqdm

            tqdm.write(f"pqseal: error: {job.src}: {line}", file=sys.stderr)
        else:
            click.echo(f"pqseal: error: {line}", err=True)

    def collect(fut, job: Job) -> None:
        try:
            results.append(fut.result())
        except (_cancel.Cancelled, CancelledError):
            pass
        except (PqsealError, OSError, ValueError) as exc:
            failed(job, exc)

    interruption = current()   # the command's (handlers installed by the group)
    if len(p.jobs) == 1 and not p.directory:
        try:
            results.append(one(p.jobs[0]))
        except _cancel.Cancelled:
            pass
        except (PqsealError, OSError, ValueError) as exc:
            failed(p.jobs[0], exc)
    else:
        from tqdm import tqdm

        with ThreadPoolExecutor(max_workers=max(1, min(jobs, len(p.jobs)))) as pool, \
                tqdm(total=len(p.jobs), desc=verb, unit="file", disable=None, file=sys.stderr) as bar:
            futures = {pool.submit(one, j): j for j in p.jobs}
            pending = set(futures)
            for fut in as_completed(futures):
                pending.discard(fut)
                collect(fut, futures[fut])
                bar.update(1)
                if interruption.requested:
                    # files not started are not started; running ones stop at their next
                    # chunk (cancelled futures never complete: stop waiting on them)
                    pool.shutdown(wait=True, cancel_futures=True)
                    break
            for fut in pending:
                if fut.done() and not fut.cancelled():
                    collect(fut, futures[fut])
    if show is not None:
        show(results)
    if interruption.requested:
        _interrupted(interruption, p, len(results), len(failures), verb)
    if failures:
        if p.directory:
            fail(f"{len(failures)} of {len(p.jobs)} files failed")
        sys.exit(1)
    return results


def _interrupted(interruption, p: Plan, done: int, failed: int, verb: str) -> None:
    what = f"{done} of {len(p.jobs)} file{'s' if len(p.jobs) != 1 else ''} {verb}"
    if failed:
        what += f", {failed} failed"
    if any(j.dst is not None for j in p.jobs):
        left = _leftovers(p.jobs)
        what += f"; partial outputs left: {', '.join(left)}" if left else "; no partial outputs left"
    click.echo(f"pqseal: interrupted ({interruption.name}): {what}", err=True)
    sys.exit(interruption.exit_code)


def report(stats_list, verb: str) -> None:
    for s in stats_list:
        for w in s.warnings:
            click.echo(f"warning: {w}", err=True)
    if not stats_list:
        return
    if len(stats_list) == 1:
        s = stats_list[0]
        click.echo(f"{verb} {s.src} -> {s.dst}: {s.row_groups} row groups, {s.columns} columns, {s.pages} pages, "
                   f"{s.bytes_in:,} -> {s.bytes_out:,} bytes in {s.seconds:.3f} s "
                   f"({s.bytes_in / max(s.seconds, 1e-9) / 1e9:.2f} GB/s)")
    else:
        click.echo(f"{verb} {len(stats_list)} files, {sum(s.bytes_in for s in stats_list):,} bytes")


# ---- directories: dataset jobs ---------------------------------------------------------------

#: the options of a directory job (files.cluster_options), with their defaults
CLUSTER_DEFAULTS = {"executor": None, "scheduler": None, "tls_ca_file": None, "tls_cert": None, "tls_key": None,
                    "allow_insecure_scheduler": False, "retry_failed": False, "report": None, "summaries": "auto"}
CLUSTER_FLAGS = {"executor": "--executor", "scheduler": "--scheduler", "tls_ca_file": "--tls-ca-file",
                 "tls_cert": "--tls-cert", "tls_key": "--tls-key",
                 "allow_insecure_scheduler": "--allow-insecure-scheduler", "retry_failed": "--retry-failed",
                 "report": "--report", "summaries": "--summaries"}


def tree_job(src: str, in_place: bool = False) -> bool:
    """True when SRC is a directory run as a dataset job (not replaced in place)."""
    return os.path.isdir(src) and not in_place


def refuse_cluster_options(o: dict, why: str) -> None:
    """Directory-job options given where they do not apply are refused, never ignored."""
    for name, flag in CLUSTER_FLAGS.items():
        if name in o and o[name] != CLUSTER_DEFAULTS[name]:
            raise click.UsageError(f"{flag} applies to a directory SRC run as a dataset job ({why})")


def _security(o: dict):
    given = [o["tls_ca_file"], o["tls_cert"], o["tls_key"]]
    if not any(given):
        return None
    if not o["scheduler"]:
        raise click.UsageError("--tls-ca-file/--tls-cert/--tls-key go with --scheduler")
    if not all(given):
        raise click.UsageError("give all of --tls-ca-file, --tls-cert and --tls-key (or none: Dask's configuration)")
    from distributed.security import Security

    return Security(tls_ca_file=o["tls_ca_file"], tls_client_cert=o["tls_cert"], tls_client_key=o["tls_key"],
                    require_encryption=True)


def _executor(o: dict):
    if o["scheduler"] and o["executor"]:
        raise click.UsageError("--scheduler runs on Dask: it excludes --executor")
    if o["allow_insecure_scheduler"] and not o["scheduler"]:
        raise click.UsageError("--allow-insecure-scheduler goes with --scheduler")
    if o["scheduler"] and "://" not in o["scheduler"]:
        raise click.UsageError(f"--scheduler takes an address such as tls://host:8786, not {o['scheduler']!r}")
    return o["scheduler"] or o["executor"] or "threads"


#: the audit log's operation of each dataset job kind
_AUDIT_OPS = {"encrypt": "seal", "decrypt": "unseal", "rekey": "rekey", "rotate": "rotate-file",
              "verify": "verify", "inspect": "inspect"}


def _audit(kind: str, src: str, dst: str | None, rep) -> None:
    """One audit record per file of a finished dataset job (the sealed file for encrypt),
    in the logs of the keystores the job's driver opened."""
    from .. import audit

    root = dst if kind in ("encrypt", "compact") and dst is not None else src
    audit.record_files(_AUDIT_OPS.get(kind, kind),
                       [(os.path.join(root, r.path), "ok") for r in rep.ok]
                       + [(os.path.join(root, r.path), (r.error or "error").split(":", 1)[0][:80]) for r in rep.failed])


def run_tree(kind: str, src: str, dst: str | None, o: dict, verb: str, *, workers: int, force: bool = False,
             show: Callable[[list], None] | None = None, line: Callable[[Any], str] | None = None,
             **keys) -> None:
    """Run a dataset job for a directory SRC, print what it did (``show`` the files'
    details, or the ``line`` of the report), exit 1 if a file failed."""
    import warnings

    from tqdm import tqdm

    from .. import dataset

    p = plan(src, dst)
    print_skipped(p)
    if not p.jobs:
        fail(f"no data files in {src}")
    executor, security = _executor(o), _security(o)
    ctx = click.get_current_context(silent=True)
    if o["scheduler"] and ctx is not None and ctx.get_parameter_source("jobs") in (
            click.core.ParameterSource.DEFAULT, None):
        workers = 0          # on Dask: as many files at once as the cluster has worker threads

    def on_result(res) -> None:
        if res.error is None:
            return
        path = os.path.join(src, res.path)
        for f in (res.detail or {}).get("failures", []) if isinstance(res.detail, dict) else []:
            where = ", ".join(f"{k} {f[k]}" for k in ("module", "row_group", "column", "page") if f.get(k) is not None)
            tqdm.write(f"FAILED {path}: {where}: {f['error']}", file=sys.stderr)
        tqdm.write(f"pqseal: error: {path}: {res.error}", file=sys.stderr)

    options = dict(executor=executor, workers=workers or None, overwrite=force, retry_failed=o["retry_failed"],
                   summaries=o["summaries"],
                   report=o["report"], allow_insecure=o["allow_insecure_scheduler"], security=security,
                   on_result=on_result, **keys)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")   # printed below as "warning:" lines
            if dst is None:      # verify, inspect, rotate
                rep = getattr(dataset, kind)(src, **options)
            else:
                rep = getattr(dataset, kind)(src, dst, **options)
    except (PqsealError, OSError, ValueError) as exc:
        fail(one_line(exc, src, dst))
    _audit(kind, src, dst, rep)
    for w in rep.warnings:
        click.echo(f"warning: {w}", err=True)
    by_reason: dict[str, int] = defaultdict(int)
    for r in rep.skipped:
        by_reason[r.reason or ""] += 1
    for reason, n in by_reason.items():
        click.echo(f"skipped {n} data file{'s' if n != 1 else ''} ({reason})", err=True)
    if show is not None:
        show([r.detail for r in rep.ok])
    elif line is not None:
        click.echo(line(rep))
    elif rep.ok:
        click.echo(f"{verb} {len(rep.ok)} files, {rep.bytes:,} bytes")
    interruption = current()
    if rep.interrupted and interruption.requested:
        _interrupted(interruption, p, len(rep.ok), len(rep.failed), verb)
    if rep.failed:
        fail(f"{len(rep.failed)} of {len(p.jobs)} files failed")
