"""Encryption zones (HDFS TDE's model): a directory prefix with a policy. To be built
(issue 9, item 5); the interface others use is fixed here."""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True, kw_only=True)
class ZonePolicy:
    """The policy of one zone."""

    path: str                                  # the zone's root: an absolute path or URL, no trailing slash
    footer_key: str
    column_keys: str | None = None             # parquet.encryption.column.keys grammar; None: uniform
    algorithm: str = "AES_GCM_V1"
    plaintext_footer: bool = False
    internal_key_material: bool = True
    data_key_length_bits: int = 128

    def encryption_config(self):
        """The :class:`~pqseal.config.EncryptionConfig` files written in the zone get."""
        raise NotImplementedError


def policy_for(path, *, zones=None) -> ZonePolicy | None:
    """The policy of the deepest zone holding ``path`` (a local path or URL), or None.
    ``zones``: the zones file (default: beside the default keystore)."""
    return None


def check_rename(src, dst, *, zones=None) -> None:
    """Raise :class:`ZoneError` when ``src`` and ``dst`` lie in different zones."""


class ZoneError(ValueError):
    pass


def _norm(path) -> str:
    return os.fspath(path)
