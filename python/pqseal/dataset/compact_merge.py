"""What a worker does for :func:`pqseal.dataset.compact`: merge one group of files, and,
in place, commit the merged file under a manifest.

The merge is :func:`pqseal.format.engine.merge` (page level, no decode, new DEKs and a
new ``aad_file_unique``). An input it cannot read (key missing or refused, tag failure,
damage) is dropped from the group and carried forward untouched; the rest is merged
again (while two inputs or more remain).

In place (``Group.manifests`` set), the commit of a group, whose inputs and output lie
in one directory, is:

1. the merged file is written under a hidden staging name (``.NAME.pqseal-compact``,
   which dataset readers ignore), fsync'd, renamed there (directory fsync'd), and every
   module's tag checked with the keys it was just sealed with;
2. a manifest naming the staging file (size, inode), the final name and the inputs
   (size, mtime, inode) is written atomically to ``<root>/.pqseal-job/compact/``: the
   commit point;
3. the staging file (and its external key material) is renamed to the final name;
4. the inputs (and their key material) are removed; the manifest is removed.

:func:`recover` (run by every in-place compaction before it plans) finishes each
manifest it finds (steps 3 and 4, for the files that are still the recorded ones) and
removes staging files no manifest names (a run that died before its commit point, whose
inputs were never touched). So after recovery every row is in exactly one data file.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from typing import Any

from .._version import __version__
from .._io import atomic_write, fsync_dir, replace, unlink_quietly
from ..api import file_unique
from ..errors import PqsealError
from ..format.engine import MergeInputFailed, Stats, merge
from ..format.properties import DecryptionProperties, EncryptionProperties
from ..format.source import Source
from ..format.verify import verify_file
from ..keys.store import KeyMaterialStore, material_path
from ..keys.store import recover as recover_material
from .journal import Stamp

STAGING_SUFFIX = ".pqseal-compact"
_STAGING_RE = re.compile(r"^\.(?P<final>.+)" + re.escape(STAGING_SUFFIX) + r"$")
MANIFEST_DIR = "compact"          # under <root>/.pqseal-job/


@dataclass(frozen=True)
class Group:
    """Files of one partition directory merged into one output (``Task.dst``)."""

    inputs: tuple[str, ...]          # paths, in the plan's order
    rels: tuple[str, ...]            # the same, relative to the source root (for the report)
    config: Any = None               # the outputs' EncryptionConfig: the inputs' (derived), or the job's
    #                                  resolved for the partition; None: the job's explicit properties
    plaintext: bool = False          # plaintext inputs and no encryption asked for: a plaintext output
    manifests: str | None = None     # in place: the manifest directory; None: a new tree
    created_by: str = f"pqseal version {__version__} (merged)"


def staging_path(final: str) -> str:
    d, name = os.path.split(final)
    return os.path.join(d, f".{name}{STAGING_SUFFIX}")


def merge_group(group: Group, dst: str | None, keys) -> tuple[dict, int, int]:
    """Merge ``group`` into ``dst`` (in place: commit it); returns (detail, bytes
    written, the most modules one DEK encrypted). ``detail``: ``inputs`` merged
    (relative paths), ``carried`` [{path, reason}] left untouched, ``rows``,
    ``row_groups``."""
    if dst is None:
        raise ValueError("a compaction task needs its output path")
    todo = list(range(len(group.inputs)))
    carried: list[dict] = []
    while len(todo) >= 2:
        paths = [group.inputs[i] for i in todo]
        try:
            stats = _merge_one(group, paths, dst, keys)
        except MergeInputFailed as exc:
            bad = todo.pop(exc.index)
            cause = exc.__cause__ or exc
            carried.append({"path": group.rels[bad],
                            "reason": f"undecryptable: {type(cause).__name__}: {' '.join(str(cause).split())}"})
            continue
        return ({"inputs": [group.rels[i] for i in todo], "carried": carried, "rows": stats[0],
                 "row_groups": stats[1]}, stats[2].bytes_out, stats[2].max_dek_modules)
    carried += [{"path": group.rels[i], "reason": "nothing left to merge it with"} for i in todo]
    return {"inputs": [], "carried": carried}, 0, 0


def _merge_one(group: Group, paths: list[str], dst: str, keys) -> tuple[int, int, Stats]:
    enc = _encryption(group, keys)
    decs = [keys.decryption_properties(p) for p in paths]
    out = dst if group.manifests is None else staging_path(dst)
    store = KeyMaterialStore(out, enc.external_key_material) if enc is not None and enc.external_key_material \
        else None
    # a new tree: the output is this job's (the driver checked it); in place: a staging
    # file left by a run that died before its commit point is replaced
    read = [Stamp.of(p) for p in paths]        # the inputs as merged
    stats = merge(paths, out, decs, encryption=enc, created_by=group.created_by, overwrite=True, companion=store)
    with Source(out, None if enc is None else decryption_of(enc)) as s:
        rows, row_groups = int(s.file_metadata().get("num_rows") or 0), s.num_row_groups
    if group.manifests is not None:
        try:
            if enc is not None:
                verify_file(out, decryption_of(enc))   # every tag, before an input goes
            changed = [p for p, was in zip(paths, read) if not Stamp.of(p).same_file(was)]
            if changed:
                raise InputChanged(f"{', '.join(changed)} changed while it was merged; nothing was removed")
        except BaseException:
            unlink_quietly(material_path(out))
            unlink_quietly(out)
            raise
        _commit(group.manifests, out, dst, list(zip(paths, read)), store is not None)
    return rows, row_groups, stats


def _encryption(group: Group, keys) -> EncryptionProperties | None:
    if group.plaintext:
        return None
    if group.config is not None:
        return keys.write.encryption_properties(None, config=group.config)
    return keys.encryption_properties(None)


def decryption_of(enc: EncryptionProperties) -> DecryptionProperties:
    """The keys that open a file just sealed with ``enc``."""
    cols = {p: ck.key or enc.footer_key for p, ck in enc.column_keys.items()}
    return DecryptionProperties(enc.footer_key, column_keys=cols,
                                aad_prefix=None if enc.store_aad_prefix else enc.aad_prefix)


# ---- the in-place commit and its recovery ------------------------------------------------------


class InputChanged(PqsealError):
    """An input of an in-place merge changed while it was merged (the merge is dropped)."""


def _root(manifests: str) -> str:
    """The tree of a manifest directory (``<root>/.pqseal-job/compact``): manifests name
    files relative to it, so a tree moved after a crash still recovers."""
    return os.path.dirname(os.path.dirname(os.path.abspath(manifests)))


def _commit(manifests: str, staging: str, final: str, inputs: list[tuple[str, Stamp]], material: bool) -> None:
    root = _root(manifests)

    def rel(p: str) -> str:
        return os.path.relpath(p, root)

    out = Stamp.of(staging)
    doc = {"v": 1, "staging": rel(staging), "final": rel(final), "material": material, "out": out.__dict__,
           "inputs": [{"path": rel(p), **was.__dict__} for p, was in inputs]}
    name = os.path.join(manifests, f"{os.path.basename(final)}.{out.ino}.json")
    try:
        os.makedirs(manifests, exist_ok=True)
        atomic_write(name, json.dumps(doc).encode())      # the commit point
    except BaseException:
        # not committed (or, if the manifest reached the disk after all, recovery finds
        # its merged file missing and keeps the inputs): the staging file goes
        if material:
            unlink_quietly(material_path(staging))
        unlink_quietly(staging)
        raise
    _finish(name, doc, root)


def _ino(path: str) -> int | None:
    try:
        return Stamp.of(path).ino
    except FileNotFoundError:
        return None


def _finish(manifest: str, doc: dict, root: str) -> str:
    """Steps 3 and 4 for one manifest (paths relative to ``root``); returns what was done."""
    staging, final = os.path.join(root, doc["staging"]), os.path.join(root, doc["final"])
    out = Stamp.load(doc["out"])
    directory = os.path.dirname(final)
    if out is not None and _ino(staging) == out.ino:
        if doc.get("material") and os.path.exists(material_path(staging)):
            os.replace(material_path(staging), material_path(final))
        if _ino(final) == out.ino:       # linked there already, the staging name not yet removed
            unlink_quietly(staging)
        else:
            replace(staging, final, exclusive=True)
        fsync_dir(directory)
    try:
        now = Stamp.of(final)
        placed = out is not None and (now.ino, now.size) == (out.ino, out.size)
    except FileNotFoundError:
        placed = False
    if not placed:     # the merged file is gone: the inputs stay, whatever the manifest says
        unlink_quietly(manifest)
        return f"{final}: merged file missing, its inputs kept"
    for rec in doc["inputs"]:
        p, was = os.path.join(root, rec["path"]), Stamp.load(rec)
        try:
            if was is None or not Stamp.of(p).same_file(was):
                continue          # another file by now: not this merge's to remove
        except FileNotFoundError:
            pass                  # removed before the crash; its key material perhaps not
        unlink_quietly(p)
        unlink_quietly(material_path(p))
    fsync_dir(directory)
    unlink_quietly(manifest)
    fsync_dir(os.path.dirname(manifest))
    return f"{final}: merge committed, {len(doc['inputs'])} inputs removed"


def recover(root: str, manifests: str) -> list[str]:
    """Finish the commits recorded in ``manifests``, then remove the staging files of runs
    that died before their commit point, anywhere under ``root``. The caller holds the job's
    lock (no other compaction of ``root`` runs). Returns one line per action."""
    actions = []
    kept: set[str] = set()
    for name in sorted(os.listdir(manifests)) if os.path.isdir(manifests) else []:
        path = os.path.join(manifests, name)
        if name.startswith("."):     # atomic_write's temporary file: the manifest never committed
            unlink_quietly(path)
            continue
        doc = None
        try:
            with open(path, "rb") as f:
                doc = json.loads(f.read())
            actions.append(_finish(path, doc, root))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            actions.append(f"manifest {path} not usable, kept: {type(exc).__name__}: {exc}")
            if isinstance(doc, dict) and isinstance(doc.get("staging"), str):
                kept.add(os.path.join(root, doc["staging"]))
    # the manifests are finished: a staging file left (but a kept one's) never committed
    for d, dirs, files in os.walk(root):
        dirs[:] = [x for x in dirs if x != ".pqseal-job"]
        for n in files:
            p = os.path.join(d, n)
            if _STAGING_RE.match(n) and p not in kept:
                unlink_quietly(material_path(p))
                unlink_quietly(p)
                actions.append(f"removed {p} (a merge that did not reach its commit)")
        actions += recover_material(d, file_unique)    # material staged by a writer that died
    return actions

