"""Which files of a tree :func:`pqseal.dataset.compact` merges, and into which outputs.

Each data file's footer is read on the driver (with the job's read keys): its Parquet
schema, Arrow schema (``ARROW:schema``), row groups and, when the outputs take their keys
from the inputs (``encryption=None``), its encryption as an
:class:`~pqseal.keys.config.EncryptionConfig` (master key per column, algorithm, footer
mode, key material storage, data key length). Files are grouped per partition directory,
in the plan's (sorted) order: a file joins the open group of its kind (same schemas,
same derived keys) while the group stays within ``target_size`` bytes and 32768 row
groups, else the group is closed and a new one started. Files of another kind are never
merged together. A group of one file is not rewritten; a file whose footer cannot be
opened is carried forward.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field

from ..errors import PqsealError
from ..format.engine import MAX_ROW_GROUPS
from ..format.layout import dotted
from ..format.source import Source
from ..keys.config import EncryptionConfig
from ..keys.material import KeyMetadata
from ..keys.scan import KeyMaterialReader
from .plan import Job


class NotDerivable(PqsealError, ValueError):
    """A file's encryption cannot be expressed as an EncryptionConfig (pass encryption=)."""


@dataclass
class FileInfo:
    job: Job
    size: int
    row_groups: int = 0
    kind: str = ""                           # files of one kind may be merged together
    config: EncryptionConfig | None = None   # derived keys (encryption=None)
    plaintext: bool = False
    why: str | None = None                   # carried forward untouched, because


@dataclass
class Planned:
    directory: str                           # relative to the root
    files: list[FileInfo] = field(default_factory=list)

    @property
    def size(self) -> int:
        return sum(f.size for f in self.files)

    @property
    def row_groups(self) -> int:
        return sum(f.row_groups for f in self.files)


KEYS_NOT_READABLE = "undecryptable: keys not readable: "


def survey(job: Job, decryption, derive: bool, unreadable: str | None = None) -> FileInfo:
    """Read one file's footer; a failure becomes ``why`` (the file is carried forward),
    as does ``unreadable`` (why the job's keys cannot open it)."""
    info = FileInfo(job, 0)
    try:
        info.size = os.path.getsize(job.src)
        if unreadable is not None:
            info.why = KEYS_NOT_READABLE + unreadable
            return info
        with Source(job.src, decryption) as s:
            fmd = s.file_metadata()
            info.row_groups = s.num_row_groups
            arrow = next((kv.get("value") for kv in fmd.get("key_value_metadata") or []
                          if kv.get("key") in (b"ARROW:schema", "ARROW:schema")), None)
            shape = None
            if derive:
                if s.crypto is None:
                    info.plaintext = True
                else:
                    info.config = derive_config(s, decryption, job.src)
                    shape = json.dumps(info.config.__dict__, sort_keys=True, default=str)
            text = json.dumps([fmd.get("schema"), arrow, shape, info.plaintext], sort_keys=True, default=repr)
            info.kind = hashlib.sha256(text.encode()).hexdigest()
    except (PqsealError, OSError, ValueError) as exc:
        info.why = f"undecryptable: {type(exc).__name__}: {' '.join(str(exc).split())}"
    return info


def derive_config(s: Source, decryption, path: str) -> EncryptionConfig:
    """The EncryptionConfig that seals like ``s`` was sealed: the same master key per
    column (read from its key material), algorithm, footer mode and material storage."""
    crypto = s.file_crypto()
    if crypto.supply_aad_prefix:
        raise NotDerivable(f"{s.name}: its AAD prefix is not stored in the file; pass encryption=")
    reader = KeyMaterialReader(path)
    footer = reader.material(crypto.footer_key_metadata)
    internal = KeyMetadata.parse(crypto.footer_key_metadata).material is not None
    by_key: dict[str, list[str]] = {}
    footer_cols, plain_cols = [], []
    for col, p in enumerate(s.paths):
        cc = s.column_crypto(0, col) if s.num_row_groups else None
        if cc is None or not cc.encrypted:
            plain_cols.append(dotted(p))
        elif cc.footer_key:
            footer_cols.append(dotted(p))
        else:
            by_key.setdefault(reader.material(cc.key_metadata).master_key_id, []).append(dotted(p))
    if not by_key and plain_cols:
        raise NotDerivable(f"{s.name}: no column has a column key; pass encryption=")
    if footer_cols and plain_cols:
        raise NotDerivable(f"{s.name}: some columns use the footer key and others are plaintext; no "
                           "EncryptionConfig says that: pass encryption=")
    dek = decryption.get_footer_key(crypto.footer_key_metadata)
    return EncryptionConfig(footer.master_key_id, column_keys=by_key or None, uniform_encryption=not by_key,
                            complete_columns=bool(by_key and footer_cols), encryption_algorithm=crypto.algorithm,
                            plaintext_footer=crypto.plaintext_footer, internal_key_material=internal,
                            data_key_length_bits=len(dek) * 8, aad_prefix=crypto.aad_prefix)


def group(infos: list[FileInfo], target_size: int) -> tuple[list[Planned], list[FileInfo]]:
    """(groups of two files or more, files left as they are). ``infos`` in plan order."""
    out: list[Planned] = []
    alone: list[FileInfo] = []
    open_groups: dict[tuple[str, str], Planned] = {}

    def close(g: Planned) -> None:
        if len(g.files) > 1:
            out.append(g)
        else:
            alone.extend(g.files)

    for info in infos:
        if info.why is not None:
            alone.append(info)
            continue
        d = os.path.dirname(info.job.rel)
        key = (d, info.kind)
        g = open_groups.get(key)
        if g is not None and (g.size + info.size > target_size or g.row_groups + info.row_groups > MAX_ROW_GROUPS):
            close(open_groups.pop(key))
            g = None
        if g is None:
            g = open_groups[key] = Planned(d)
        g.files.append(info)
    for g in open_groups.values():
        close(g)
    out.sort(key=lambda g: g.files[0].job.rel)
    return out, alone


def output_name(g: Planned) -> str:
    """The merged file's name: its first input's, tagged with a hash of the inputs (so a
    rerun over the same inputs names it alike, and no existing file is hit)."""
    first = os.path.basename(g.files[0].job.rel)
    stem, ext = os.path.splitext(first)
    h = hashlib.sha256()
    for f in g.files:
        st = os.stat(f.job.src)
        h.update(f"{f.job.rel}\0{st.st_size}\0{st.st_mtime_ns}\0".encode())
    return f"{stem}-m{h.hexdigest()[:10]}{ext or '.parquet'}"
