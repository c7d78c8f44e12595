"""File jobs: one file, or the data files of a directory tree, run in parallel.

What counts as data in a directory follows pyarrow's dataset discovery
(``pyarrow.dataset.dataset``): every file, at any depth, except those whose own name or
one of whose directories' names starts with ``.`` or ``_`` (``ignore_prefixes``'
default): hidden files, ``_SUCCESS``, ``_metadata``/``_common_metadata`` summaries,
``_KEY_MATERIAL_FOR_*`` key material, ``_temporary/`` trees. Names are not filtered by
extension (``*.PARQUET``, ``*.parq``, Hive's ``000000_0`` are data), so a data file
that is not Parquet fails like any bad file. What is left out is printed with the
reason.
"""

from __future__ import annotations

import os
import sys
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import CancelledError, ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field

import click

from .. import _cancel
from ..errors import PqsealError
from .group import fail, one_line
from .interrupt import current

IGNORE_PREFIXES = (".", "_")   # pyarrow.dataset's default ignore_prefixes
SHOWN_PER_REASON = 10


@dataclass(frozen=True)
class Job:
    src: str
    dst: str | None      # None: nothing is written (verify, inspect, rotate)


@dataclass
class Plan:
    src: str
    jobs: list[Job]
    directory: bool                                     # SRC is a directory
    skipped: list[tuple[str, str]] = field(default_factory=list)   # (path, reason)


def _reason(name: str, is_dir: bool) -> str:
    if name.startswith("_KEY_MATERIAL_FOR_"):
        return "external key material, stays beside its data file"
    if name in ("_metadata", "_common_metadata"):
        return "Parquet summary files, which dataset readers ignore"
    what = "directories" if is_dir else "files"
    return f"{what} named '.*' or '_*', which dataset readers ignore"


def plan(src: str, dst: str | None, *, in_place: bool = False) -> Plan:
    """The jobs for SRC (and DST): the file itself, or the data files of a tree."""
    if not os.path.isdir(src):
        return Plan(src, [Job(src, dst)], directory=False)
    if dst is not None:
        if os.path.exists(dst) and not os.path.isdir(dst):
            fail(f"{dst} is not a directory (SRC {src} is one)")
        same = os.path.exists(dst) and os.path.samefile(src, dst)
        if same and not in_place:
            fail(f"{dst} is the input directory; pass --in-place to replace each file")
        inner = os.path.relpath(os.path.realpath(dst), os.path.realpath(src))
        if not same and not inner.startswith(os.pardir):
            fail(f"{dst} is inside the input directory {src}; choose a destination outside it")
    out = Plan(src, [], directory=True)
    for root, dirs, files in os.walk(src):
        rel = os.path.relpath(root, src)
        kept = []
        for d in sorted(dirs):
            if d.startswith(IGNORE_PREFIXES):
                out.skipped.append((os.path.normpath(os.path.join(rel, d)) + os.sep, _reason(d, True)))
            else:
                kept.append(d)
        dirs[:] = kept
        for name in sorted(files):
            path = os.path.normpath(os.path.join(rel, name))
            if name.startswith(IGNORE_PREFIXES):
                out.skipped.append((path, _reason(name, False)))
            else:
                out.jobs.append(Job(os.path.join(src, path), None if dst is None else os.path.join(dst, path)))
    return out


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
