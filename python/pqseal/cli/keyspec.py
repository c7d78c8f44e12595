"""Key values on the command line: base64, ``env:NAME`` or ``file:PATH``."""

from __future__ import annotations

import base64
import binascii
import os

import click

from ..errors import InvalidKey


def load_key(spec: str, what: str) -> bytes:
    """A key given as base64, ``env:NAME`` (base64 in an environment variable) or
    ``file:PATH`` / ``@PATH`` (a file holding base64 or the raw 16/24/32 bytes), so keys
    need not appear in shell history."""
    if spec.startswith("env:"):
        name = spec[4:]
        if name not in os.environ:
            raise InvalidKey(f"{what}: environment variable {name} is not set")
        text = os.environ[name].strip().encode()
    elif spec.startswith(("file:", "@")):
        path = spec[5:] if spec.startswith("file:") else spec[1:]
        with open(path, "rb") as f:
            text = f.read()
        if len(text) in (16, 24, 32):
            return text
        text = text.strip()
    else:
        text = spec.strip().encode()
    try:
        key = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidKey(f"{what} is not valid base64 (or env:NAME / file:PATH)") from None
    if len(key) not in (16, 24, 32):
        raise InvalidKey(f"{what} must decode to 16, 24 or 32 bytes, got {len(key)}")
    return key


def _column_keys(values, what="--column-key-value") -> dict:
    out = {}
    for v in values:
        if "=" not in v:
            raise click.UsageError(f"{what} takes PATH=KEY, got {v!r}")
        path, key = v.split("=", 1)
        path = path.strip()
        if not path or path in out:
            raise click.UsageError(f"{what}: empty or repeated column {path!r}")
        out[path] = load_key(key, f"key of column {path!r}")
    return out


def _decryption(footer_key, column_key_values, aad_prefix):
    from ..format import DecryptionProperties

    return DecryptionProperties(load_key(footer_key, "--footer-key-value") if footer_key else None,
                                column_keys=_column_keys(column_key_values),
                                aad_prefix=aad_prefix.encode() if aad_prefix is not None else None)
