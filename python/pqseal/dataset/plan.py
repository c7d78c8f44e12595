"""Which files of a tree are data, and where each one's output goes.

What counts as data follows pyarrow's dataset discovery (``pyarrow.dataset.dataset``):
every file, at any depth, except those whose own name or one of whose directories'
names starts with ``.`` or ``_`` (``ignore_prefixes``' default): hidden files,
``_SUCCESS``, ``_metadata``/``_common_metadata`` summaries, ``_KEY_MATERIAL_FOR_*`` key
material, ``_temporary/`` trees (and so the job journal, ``.pqseal-job/``). Names are not
filtered by extension (``*.PARQUET``, ``*.parq``, Hive's ``000000_0`` are data), so a
data file that is not Parquet fails like any bad file. Partition directories
(``year=2024/``) are kept as they are: outputs mirror the tree.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

IGNORE_PREFIXES = (".", "_")   # pyarrow.dataset's default ignore_prefixes
SUMMARY_NAMES = ("_metadata", "_common_metadata")
SUCCESS_NAME = "_SUCCESS"
JOB_DIRECTORY = ".pqseal-job"   # a job journal pqseal wrote (dataset.journal): ignored without a notice


@dataclass(frozen=True)
class Job:
    src: str
    dst: str | None      # None: nothing is written beside a new tree (verify, inspect, rotate)
    rel: str = ""        # path relative to the source root (the journal's key)


@dataclass
class Plan:
    src: str
    jobs: list[Job]
    directory: bool                                                 # SRC is a directory
    skipped: list[tuple[str, str]] = field(default_factory=list)    # (relative path, reason)


def _reason(name: str, is_dir: bool) -> str:
    if name.startswith("_KEY_MATERIAL_FOR_"):
        return "external key material, stays beside its data file"
    if name in SUMMARY_NAMES:
        return "Parquet summary files, which dataset readers ignore"
    what = "directories" if is_dir else "files"
    return f"{what} named '.*' or '_*', which dataset readers ignore"


def check_destination(src: str, dst: str, *, in_place: bool = False) -> None:
    """Refuse (ValueError) a destination that is a file, the source tree itself (unless
    ``in_place``) or inside it."""
    if os.path.exists(dst) and not os.path.isdir(dst):
        raise ValueError(f"{dst} is not a directory (SRC {src} is one)")
    same = os.path.exists(dst) and os.path.samefile(src, dst)
    if same and not in_place:
        raise ValueError(f"{dst} is the input directory; pass --in-place to replace each file")
    inner = os.path.relpath(os.path.realpath(dst), os.path.realpath(src))
    if not same and not inner.startswith(os.pardir):
        raise ValueError(f"{dst} is inside the input directory {src}; choose a destination outside it")


def plan(src: str, dst: str | None, *, in_place: bool = False) -> Plan:
    """The jobs for SRC (and DST): the file itself, or the data files of a tree (sorted,
    so every run of a job sees them in the same order). Raises ValueError for a
    destination that cannot be used."""
    src, dst = os.fspath(src), None if dst is None else os.fspath(dst)
    if not os.path.isdir(src):
        return Plan(src, [Job(src, dst, os.path.basename(src))], directory=False)
    if dst is not None:
        check_destination(src, dst, in_place=in_place)
    out = Plan(src, [], directory=True)
    for root, dirs, files in os.walk(src):
        rel = os.path.relpath(root, src)
        kept = []
        for d in sorted(dirs):
            if d == JOB_DIRECTORY:
                continue
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
                out.jobs.append(Job(os.path.join(src, path), None if dst is None else os.path.join(dst, path), path))
    return out
