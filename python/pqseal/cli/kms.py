"""Where master keys come from on the command line (``--kms URI``, ``--key-list``,
``--property``), and decryption keys: explicit, or through the file's key material."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

import click

from ..config import CONNECTION_PROPERTIES, ENCRYPTION_PROPERTIES, property_name
from .keyspec import column_key_values, load_key, load_key_list

KEY_LIST_ENV = "PQSEAL_KEY_LIST"


def properties(values, allowed=CONNECTION_PROPERTIES) -> dict[str, str]:
    """``--property NAME=VALUE`` values → {short name: value}; names pqseal does not
    read (or that this command does not use) are refused, not ignored."""
    out: dict[str, str] = {}
    for v in values:
        full, sep, value = v.partition("=")
        full = full.strip()
        name = property_name(full)
        if not sep or not re.fullmatch(r"[A-Za-z0-9._-]+", full):
            # not echoed: a mistyped value may hold master keys (key.list)
            raise click.UsageError("--property takes NAME=VALUE, NAME made of letters, digits, '.', '_' and '-'")
        if name is None:
            raise click.UsageError(f"--property {full}: not a parquet.encryption.* (or encryption.*) property")
        if name not in allowed:
            if name in ENCRYPTION_PROPERTIES:
                raise click.UsageError(f"--property {full} applies to encrypt only")
            raise click.UsageError(f"--property {full}: unknown property (known: "
                                   f"{', '.join(sorted(allowed))})")
        if name in out and out[name] != value.strip():
            raise click.UsageError(f"--property {name} given twice with different values")
        out[name] = value.strip()
    if "kms.client.class" in out and not out["kms.client.class"].endswith("InMemoryKMS"):
        raise click.UsageError(f"--property kms.client.class={out['kms.client.class']}: pqseal runs no Java KMS "
                               "client; choose the KMS with --kms (InMemoryKMS is --key-list)")
    return out


def prefixed(props: dict[str, str]) -> dict[str, str]:
    return {f"parquet.encryption.{k}": v for k, v in props.items()}


@dataclass(frozen=True)
class KmsChoice:
    """``--kms keystore[:PATH] | keylist | URI`` (any KMS URI or ``file:X.toml``, see
    :mod:`pqseal.kms.uri`) and the key list (``--key-list``, the ``key.list`` property, or
    ``$PQSEAL_KEY_LIST``) of the key-list KMS."""

    kms: str | None
    key_list: str | None
    props: dict

    def client_factory(self):
        key_list = self.key_list
        if key_list and self.props.get("key.list"):
            raise click.UsageError("give the key list either with --key-list or as --property key.list, not both")
        key_list = key_list or self.props.get("key.list") or os.environ.get(KEY_LIST_ENV)
        kms = self.kms
        if kms is None:
            kms = "keylist" if key_list or "kms.client.class" in self.props else "keystore"
        if kms in ("keylist", "keylist:"):
            from ..kms import KeyListKms

            if not key_list:
                raise click.UsageError(f"the key-list KMS needs --key-list 'id: base64, ...' (or env:NAME, "
                                       f"file:PATH, ${KEY_LIST_ENV})")
            client = KeyListKms(load_key_list(key_list))
            return lambda cfg: client
        if key_list and (self.key_list or self.props.get("key.list")):
            raise click.UsageError(f"--kms {kms} and a key list exclude each other")
        if kms == "keystore" or kms.startswith("keystore:"):
            from ..api import kms_factory
            from ..kms.keystore import LocalKeystore

            path = kms[len("keystore:"):] or None
            return kms_factory(LocalKeystore(path)) if path else kms_factory(None)
        from ..errors import InvalidKmsUri
        from ..kms import open_kms

        try:
            return open_kms(kms)
        except InvalidKmsUri as exc:  # names no credential value (see pqseal.kms.uri)
            raise click.UsageError(f"--kms: {exc}") from None

    def connection(self):
        from ..config import kms_connection_from_properties

        return kms_connection_from_properties(prefixed(self.props))


@dataclass(frozen=True)
class ReadKeys:
    """The key options of decrypt, verify and inspect."""

    footer_key_value: str | None
    column_key_values: tuple
    aad_prefix: str | None
    kms: KmsChoice

    @property
    def explicit(self) -> bool:
        return bool(self.footer_key_value or self.column_key_values)

    @property
    def any(self) -> bool:
        k = self.kms
        return self.explicit or self.aad_prefix is not None or bool(k.kms or k.key_list or k.props)

    def check(self) -> None:
        k = self.kms
        if self.explicit and (k.kms or k.key_list or k.props):
            raise click.UsageError("give explicit keys (--footer-key-value/--column-key-value) or a KMS "
                                   "(--kms/--key-list/--property), not both")

    def decryption(self):
        """``path -> DecryptionProperties``: explicit keys, or a retriever unwrapping each
        file's key material through the KMS (opened once, here)."""
        from ..format import DecryptionProperties
        from ..keys import CryptoFactory

        aad = self.aad_prefix.encode() if self.aad_prefix is not None else None
        if self.explicit:
            footer = load_key(self.footer_key_value, "--footer-key-value") if self.footer_key_value else None
            columns = column_key_values(self.column_key_values)
            return lambda path: DecryptionProperties(footer, column_keys=columns, aad_prefix=aad)
        factory, conn = CryptoFactory(self.kms.client_factory()), self.kms.connection()

        def from_material(path):
            dec = factory.file_decryption_properties(conn, None, path)
            dec.aad_prefix = aad
            return dec
        return from_material
