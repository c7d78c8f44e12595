"""File jobs: one file or every *.parquet file of a directory tree, in parallel."""

from __future__ import annotations

import os
import sys
from concurrent.futures import ThreadPoolExecutor, as_completed

import click

from ..errors import PqsealError


def _pairs(src: str, dst: str | None):
    """(src, dst) file pairs: one file, or every *.parquet file under a directory."""
    if not os.path.isdir(src):
        return [(src, dst)]
    pairs = []
    for root, dirs, files in os.walk(src):
        dirs.sort()
        for name in sorted(files):
            if name.endswith(".parquet") and not name.startswith("."):
                s = os.path.join(root, name)
                pairs.append((s, None if dst is None else os.path.join(dst, os.path.relpath(s, src))))
    if not pairs:
        raise click.UsageError(f"no *.parquet files under {src}")
    return pairs


def _run_many(pairs, fn, jobs: int, label: str):
    """Run fn(src, dst) over the pairs in parallel with a progress bar; a failing file is
    reported on one line and makes the exit code 1, the others still complete."""
    from tqdm import tqdm

    if len(pairs) == 1:
        return [fn(*pairs[0])]
    for _, d in pairs:
        if d:
            os.makedirs(os.path.dirname(d) or ".", exist_ok=True)
    results, failed = [], 0
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool, \
            tqdm(total=len(pairs), desc=label, unit="file", disable=None, file=sys.stderr) as bar:
        futs = {pool.submit(fn, s, d): s for s, d in pairs}
        for fut in as_completed(futs):
            try:
                results.append(fut.result())
            except (PqsealError, OSError, ValueError) as exc:
                failed += 1
                tqdm.write(f"pqseal: error: {futs[fut]}: {type(exc).__name__}: {exc}", file=sys.stderr)
            bar.update(1)
    if failed:
        click.echo(f"pqseal: {failed} of {len(pairs)} files failed", err=True)
        sys.exit(1)
    return results


def _report(stats_list, verb):
    total_in = sum(s.bytes_in for s in stats_list)
    for s in stats_list:
        for w in s.warnings:
            click.echo(f"warning: {w}", err=True)
    if len(stats_list) == 1:
        s = stats_list[0]
        click.echo(f"{verb} {s.src} -> {s.dst}: {s.row_groups} row groups, {s.columns} columns, {s.pages} pages, "
                   f"{s.bytes_in:,} -> {s.bytes_out:,} bytes in {s.seconds:.3f} s "
                   f"({s.bytes_in / max(s.seconds, 1e-9) / 1e9:.2f} GB/s)")
    else:
        click.echo(f"{verb} {len(stats_list)} files, {total_in:,} bytes")
