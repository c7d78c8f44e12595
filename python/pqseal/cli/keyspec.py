"""Keys and key lists on the command line, with their encoding always explicit:

- ``BASE64``: the key itself, base64 (visible in ``ps`` and shell history);
- ``env:NAME``: base64 text in an environment variable;
- ``file:PATH``: base64 text in a file (surrounding whitespace ignored);
- ``raw:PATH``: the raw 16, 24 or 32 key bytes in a file.

Key files must not be readable by group or others (like the keystore). Error messages
name options, columns, variables and files, never a key or a part of one.
"""

from __future__ import annotations

import base64
import binascii
import os

import click

from ..errors import InvalidKey
from ..kms.keystore import read_private_file

KEY_FORMS = "base64, env:NAME, file:PATH (base64 text) or raw:PATH (raw bytes)"


def load_key(spec: str, what: str) -> bytes:
    """The key bytes of a key spec (see the module's docstring)."""
    if spec.startswith("raw:"):
        key = read_private_file(spec[4:], f"{what}: key file")
        if len(key) not in (16, 24, 32):
            raise InvalidKey(f"{what}: raw key file {spec[4:]} holds {len(key)} bytes, not 16, 24 or 32 "
                             "(base64 text goes in file:PATH)")
        return key
    if spec.startswith("env:"):
        name = spec[4:]
        if name not in os.environ:
            raise InvalidKey(f"{what}: environment variable {name} is not set")
        text, source = os.environ[name].encode(), f"environment variable {name}"
    elif spec.startswith("file:"):
        text, source = read_private_file(spec[5:], f"{what}: key file"), f"key file {spec[5:]}"
    elif spec.startswith("@"):
        raise click.UsageError(f"{what}: @PATH is ambiguous; use file:PATH for base64 text or raw:PATH for raw "
                               "key bytes")
    else:
        text, source = spec.encode(), "the value"
    hint = "; for raw key bytes use raw:PATH" if spec.startswith("file:") else ""
    try:
        key = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise InvalidKey(f"{what}: {source} is not valid base64 (keys are {KEY_FORMS}){hint}") from None
    if len(key) not in (16, 24, 32):
        raise InvalidKey(f"{what}: {source} decodes to {len(key)} bytes, not 16, 24 or 32{hint}")
    return key


def column_key_values(values, option: str = "--column-key-value") -> dict[str, bytes]:
    """``PATH=KEY`` values → {column path: key}. A value without a column path (such as
    a bare base64 key, whose ``=`` padding looks like a separator) is refused without
    being echoed."""
    out: dict[str, bytes] = {}
    for v in values:
        path, sep, spec = v.partition("=")
        path = path.strip()
        if not sep or not path or not spec.strip("= \t"):
            raise click.UsageError(f"{option} takes COLUMN=KEY (a dotted column path, '=', then a key as "
                                   f"{KEY_FORMS}); a value was given without a column path or without a key")
        if path in out:
            raise click.UsageError(f"{option}: column {path!r} given twice")
        out[path] = load_key(spec, f"key of column {path!r}")
    return out


def load_key_list(spec: str, what: str = "--key-list") -> str:
    """The text of a key list (``"id: base64, ..."``), given as such, as ``env:NAME`` or
    as ``file:PATH`` (a private file)."""
    if spec.startswith("env:"):
        name = spec[4:]
        if name not in os.environ:
            raise InvalidKey(f"{what}: environment variable {name} is not set")
        return os.environ[name]
    if spec.startswith("file:"):
        try:
            return read_private_file(spec[5:], f"{what}: key list file").decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidKey(f"{what}: key list file {spec[5:]} is not UTF-8 text") from None
    return spec
