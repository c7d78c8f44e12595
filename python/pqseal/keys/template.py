"""Master key id templates: ``tenant-{customer_id}`` filled from a file's partition values.

A master key id of an :class:`~pqseal.config.EncryptionConfig` (footer key, column keys,
uniform key) may hold ``{name}`` placeholders (``name``: a Python identifier). Before a
file is written the config is resolved for that file (:func:`resolve`): each placeholder
is replaced by the value of the partition ``name``, taken from an explicit mapping or
from the file's path relative to the dataset or zone root (hive segments ``name=value``,
URL-decoded as pyarrow writes and reads them: :func:`partition_values`).

Nothing is rewritten silently: a placeholder without a value raises
:class:`UnknownPlaceholder`, a value outside the safe set raises
:class:`InvalidPartitionValue`, and a config that still holds a template when data keys
are to be wrapped raises :class:`UnresolvedTemplate` (:func:`check_resolved`, called
where every config meets the KMS), so no KMS ever sees ``tenant-{customer_id}``.

The safe set of a value (``SAFE_VALUE``): 1 to 64 ASCII letters, digits, ``_``, ``-``
and ``.``, not ``.`` or ``..`` and without ``..``; and not the null partition
(``__HIVE_DEFAULT_PARTITION__``, or None): a row without a tenant has no tenant key. So
a value never adds a path separator, a ``:`` (the column-keys grammar's separator, part
of cloud key ARNs), a ``*``/``?`` (the keystore's creation patterns), whitespace or a
brace to a key id. Other values (``a/b``, ``ü``, ``x y``) are refused, not encoded:
partition by a value in the safe set (an id column) instead.
"""

from __future__ import annotations

import dataclasses
import re
import urllib.parse
from collections.abc import Iterable, Mapping

from ..errors import PqsealError
from .config import EncryptionConfig

_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
SAFE_VALUE = re.compile(r"[A-Za-z0-9_.-]{1,64}", re.ASCII)
NULL_PARTITION = "__HIVE_DEFAULT_PARTITION__"


class TemplateError(PqsealError, ValueError):
    """A master key id template is malformed or cannot be resolved for a file."""


class UnknownPlaceholder(TemplateError):
    """A template names a placeholder for which the file has no partition value."""

    def __init__(self, message: str, *, name: str):
        super().__init__(message)
        self.name = name


class InvalidPartitionValue(TemplateError):
    """A partition value would make an unsafe master key id (see the module docstring)."""

    def __init__(self, message: str, *, name: str):
        super().__init__(message)
        self.name = name


class UnresolvedTemplate(TemplateError):
    """A config holding a master key id template was about to reach a KMS."""


def is_template(key_id: str) -> bool:
    """Whether ``key_id`` is a template (holds a brace; malformed ones are refused by
    :func:`placeholders`)."""
    return "{" in key_id or "}" in key_id


def placeholders(key_id: str) -> tuple[str, ...]:
    """The placeholder names of ``key_id`` in order (empty for a plain id). A brace that
    is not part of a ``{identifier}`` placeholder raises :class:`TemplateError`."""
    names = tuple(_PLACEHOLDER.findall(key_id))
    if is_template(_PLACEHOLDER.sub("", key_id)):
        raise TemplateError(f"master key id {key_id!r}: a brace outside a {{name}} placeholder (name: letters, "
                            "digits and _, not starting with a digit)")
    return names


def master_key_ids(cfg: EncryptionConfig) -> list[str]:
    """The master key ids of ``cfg`` (footer first), templates included."""
    return list(dict.fromkeys([cfg.footer_key, *(cfg.column_keys or {})]))


def config_placeholders(cfg: EncryptionConfig) -> frozenset[str]:
    """Every placeholder name of ``cfg``'s master key ids (checked as :func:`placeholders`)."""
    return frozenset(n for mk in master_key_ids(cfg) for n in placeholders(mk))


def has_templates(cfg: EncryptionConfig) -> bool:
    return any(is_template(mk) for mk in master_key_ids(cfg))


def check_value(name: str, value) -> str:
    """``value`` as text if it is in the safe set, else :class:`InvalidPartitionValue`."""
    if value is None or value == NULL_PARTITION:
        raise InvalidPartitionValue(f"partition {name} is null: a null partition value has no master key of its own",
                                    name=name)
    text = str(value)
    if not SAFE_VALUE.fullmatch(text) or ".." in text or text == ".":
        raise InvalidPartitionValue(f"partition value {name}={text!r} cannot be part of a master key id (allowed: 1 "
                                    "to 64 ASCII letters, digits, '_', '-', '.'; not '.' or '..')", name=name)
    return text


def resolve_id(key_id: str, values: Mapping[str, object], where: str = "") -> str:
    """``key_id`` with each placeholder replaced by its checked value from ``values``."""
    for name in placeholders(key_id):
        if name not in values:
            known = ", ".join(sorted(values)) or "none"
            raise UnknownPlaceholder(f"master key id {key_id!r}: no value for {{{name}}}{where} (partition values "
                                     f"there: {known})", name=name)
    return _PLACEHOLDER.sub(lambda m: check_value(m.group(1), values[m.group(1)]), key_id)


def resolve(cfg: EncryptionConfig, values: Mapping[str, object], where: str = "") -> EncryptionConfig:
    """``cfg`` with its master key ids resolved for one file whose partition values are
    ``values`` (``where``: text naming the file, for messages). A config without templates
    is returned as is. Columns of two templates that resolve to one id are merged."""
    if not has_templates(cfg):
        return cfg
    footer = resolve_id(cfg.footer_key, values, where)
    columns: dict[str, list] | None = None
    if cfg.column_keys is not None:
        columns = {}
        for mk, cols in cfg.column_keys.items():
            columns.setdefault(resolve_id(mk, values, where), []).extend(cols)
    return dataclasses.replace(cfg, footer_key=footer, column_keys=columns)


def resolved_ids(cfg: EncryptionConfig, partitions: Iterable[Mapping[str, object]]) -> list[str]:
    """The distinct master key ids ``cfg`` resolves to over ``partitions`` (sorted)."""
    out: set[str] = set()
    for values in partitions:
        out.update(master_key_ids(resolve(cfg, values)))
    return sorted(out)


def partition_values(rel_path: str) -> dict[str, str]:
    """The hive partition values of a file's path relative to its dataset or zone root:
    ``{name: value}`` of the directory segments ``name=value`` (URL-decoded). A name given
    twice with different values raises :class:`TemplateError`."""
    out: dict[str, str] = {}
    for seg in rel_path.replace("\\", "/").split("/")[:-1]:
        name, eq, raw = seg.partition("=")
        if not eq or not name:
            continue
        name, value = urllib.parse.unquote(name), urllib.parse.unquote(raw)
        if out.setdefault(name, value) != value:
            raise TemplateError(f"{rel_path}: partition {name} given twice ({out[name]!r} and {value!r})")
    return out


def resolve_for_path(cfg: EncryptionConfig, rel_path: str) -> EncryptionConfig:
    """``cfg`` resolved from the partition values of ``rel_path`` (relative to the root)."""
    if not has_templates(cfg):
        return cfg
    return resolve(cfg, partition_values(rel_path), f" in {rel_path}")


def check_id_resolved(key_id: str) -> None:
    """Raise :class:`UnresolvedTemplate` when ``key_id`` is a template (pyarrow's own
    writer hands pqseal's KMS clients the ids of its config as they are)."""
    if is_template(key_id):
        raise UnresolvedTemplate(f"master key id template {key_id!r} refused: pyarrow's writer "
                                 "does not fill templates; write with pqseal.ParquetWriter(partition_cols=...) or "
                                 "pqseal.write_to_dataset")


def check_resolved(cfg: EncryptionConfig) -> None:
    """Raise :class:`UnresolvedTemplate` when ``cfg`` still holds a template: its data keys
    would be wrapped under a master key literally named ``tenant-{customer_id}``."""
    left = [mk for mk in master_key_ids(cfg) if is_template(mk)]
    if left:
        raise UnresolvedTemplate(f"master key id template(s) {', '.join(map(repr, left))} not resolved: write with "
                                 "partition_cols=[...] (pqseal.ParquetWriter, write_to_dataset), into a zone "
                                 "directory holding the partition, through a dataset job, or resolve the config for "
                                 "the file first (pqseal.keys.template.resolve)")
