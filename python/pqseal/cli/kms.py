"""KMS selection and ``parquet.encryption.*`` properties on the command line."""

from __future__ import annotations

import os

import click


def _kms_client_factory(kms: str | None, key_list: str | None):
    """``--kms keystore[:PATH] | keylist`` (``--key-list`` alone selects the key list)."""
    key_list = key_list or os.environ.get("PQSEAL_KEY_LIST")
    if kms is None:
        kms = "keylist" if key_list else "keystore"
    if kms == "keylist":
        from ..kms import KeyListKms

        if not key_list:
            raise click.UsageError("--kms keylist needs --key-list 'id: base64, ...' (or PQSEAL_KEY_LIST)")
        client = KeyListKms(key_list)
        return lambda cfg: client
    if kms == "keystore" or kms.startswith("keystore:"):
        from ..kms.keystore import LocalKeystore

        path = kms[len("keystore:"):] or None if kms.startswith("keystore:") else None
        holder = {}

        def factory(cfg):
            if "ks" not in holder:
                holder["ks"] = LocalKeystore(path)
            return holder["ks"]
        return factory
    raise click.UsageError(f"--kms must be keystore, keystore:PATH or keylist, not {kms!r}")


def _kms_decryption(kms, key_list, path, properties=()):
    from ..config import kms_connection_from_properties
    from ..keys import CryptoFactory

    conn = kms_connection_from_properties(dict(_properties(properties)))
    return CryptoFactory(_kms_client_factory(kms, key_list)).file_decryption_properties(conn, None, path)


def _properties(values):
    out = []
    for v in values:
        if "=" not in v:
            raise click.UsageError(f"--property takes NAME=VALUE, got {v!r}")
        k, val = v.split("=", 1)
        out.append((k.strip(), val.strip()))
    return out
