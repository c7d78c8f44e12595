"""The files of a tree that are not data.

- ``_SUCCESS`` markers are copied to the destination (encrypt, decrypt, rekey).
- ``_metadata`` / ``_common_metadata`` summaries (``summaries="auto"``, the default): on
  encrypt and rekey they are dropped
  with a warning. A plaintext summary beside sealed files would expose every sealed
  footer (schema, row counts, column statistics), and no reader reads a sealed one. On
  decrypt they are regenerated with pyarrow from the decrypted outputs of their directory
  (``_common_metadata``: the schema; ``_metadata``: every file's row groups) when the
  source had them and every data file under them was decrypted.
- ``summaries="drop"`` (CLI ``--summaries drop``): summaries are left out everywhere,
  without a warning (there is no policy that copies a plaintext summary beside sealed
  files).
- Key material (``_KEY_MATERIAL_FOR_*``) follows its data file: new material is written
  beside each sealed output; the source's is never copied.
- Everything else pyarrow ignores (``.*``, ``_*``) is left out and listed in the report.
"""

from __future__ import annotations

import os
import shutil

from .plan import SUCCESS_NAME, SUMMARY_NAMES, Plan

DROPPED = ("{path} dropped: a plaintext Parquet summary beside sealed files would expose their footers "
           "(schema, row counts, statistics), and no reader reads a sealed one")


def _named(p: Plan, names) -> list[str]:
    return [rel for rel, _ in p.skipped if os.path.basename(rel) in names]


def copy_success(p: Plan, dst: str) -> None:
    for rel in _named(p, (SUCCESS_NAME,)):
        target = os.path.join(dst, rel)
        if not os.path.exists(target):
            os.makedirs(os.path.dirname(target), exist_ok=True)
            shutil.copyfile(os.path.join(p.src, rel), target)


def dropped(p: Plan) -> list[str]:
    """Warnings for the summaries an encrypt or rekey leaves out."""
    return [DROPPED.format(path=rel) for rel in _named(p, SUMMARY_NAMES)]


def regenerate(p: Plan, dst: str, decrypted: set[str]) -> list[str]:
    """Write the summaries of the source again from the decrypted files (relative paths
    in ``decrypted``); returns warnings for those that could not be."""
    import pyarrow.parquet as pq

    from .._io import temp_name

    notes = []
    for rel in sorted(_named(p, SUMMARY_NAMES)):
        base = os.path.dirname(rel)
        under = sorted(j.rel for j in p.jobs if base == "" or j.rel.startswith(base + os.sep))
        if not under or any(r not in decrypted for r in under):
            notes.append(f"{rel} not regenerated: not every data file under it was decrypted")
            continue
        target = os.path.join(dst, rel)
        tmp = os.path.join(os.path.dirname(target), temp_name(os.path.basename(target)))
        try:
            if os.path.basename(rel) == "_common_metadata":
                pq.write_metadata(pq.read_schema(os.path.join(dst, under[0])), tmp)
            else:
                md = None
                for r in under:
                    m = pq.read_metadata(os.path.join(dst, r))
                    m.set_file_path(os.path.relpath(r, base) if base else r)
                    if md is None:
                        md = m
                    else:
                        md.append_row_groups(m)
                assert md is not None
                md.write_metadata_file(tmp)
            os.replace(tmp, target)
        except Exception as exc:   # pyarrow's errors (schemas that differ) are not ours to type
            if os.path.exists(tmp):
                os.unlink(tmp)
            notes.append(f"{rel} not regenerated: {type(exc).__name__}: {' '.join(str(exc).split())}")
    return notes
