"""CLI: encrypt / decrypt / verify / inspect of files and directories with explicit keys."""

from __future__ import annotations

import json
import os
import warnings

import click

from .jobs import _pairs, _report, _run_many
from .keyspec import _column_keys, _decryption, load_key
from .kms import _kms_client_factory, _kms_decryption, _properties

ALGORITHMS = ("AES_GCM_V1", "AES_GCM_CTR_V1")


_key_opts = [
    click.option("--footer-key-value", metavar="KEY", help="Explicit footer key (data key): base64, env:NAME or "
                 "file:PATH."),
    click.option("--column-key-value", "column_key_values", multiple=True, metavar="PATH=KEY",
                 help="Explicit key of one column (dotted leaf path), repeatable."),
    click.option("--aad-prefix", metavar="TEXT", help="AAD prefix (UTF-8)."),
    click.option("--kms", metavar="keystore[:PATH]|keylist", help="KMS for envelope keys (default: the local "
                 "keystore, $PQSEAL_KEYSTORE or ~/.config/pqseal/keystore.json; --key-list alone selects keylist)."),
    click.option("--key-list", metavar="'ID: B64, ...'", help="Master keys of the key-list KMS "
                 "(parquet-java InMemoryKMS format; or PQSEAL_KEY_LIST)."),
    click.option("--property", "properties", multiple=True, metavar="NAME=VALUE",
                 help="parquet.encryption.* property (repeatable)."),
]


def _read_keys(src, footer_key_value, column_key_values, aad_prefix, kms, key_list, properties):
    """Decryption keys: explicit values when given, else the KMS (key material in the file)."""
    if footer_key_value or column_key_values:
        return _decryption(footer_key_value, column_key_values, aad_prefix)
    dec = _kms_decryption(kms, key_list, src, properties)
    if aad_prefix is not None:
        dec.aad_prefix = aad_prefix.encode()
    return dec


def _with(opts):
    def deco(f):
        for o in reversed(opts):
            f = o(f)
        return f
    return deco


@click.command()
@click.argument("src", type=click.Path())
@click.argument("dst", type=click.Path())
@_with(_key_opts)
@click.option("--footer-key-column", "footer_key_columns", multiple=True, metavar="PATH",
              help="Encrypt this column with the footer key (repeatable).")
@click.option("--uniform", is_flag=True, help="Encrypt every column with the footer key (the default "
              "when no column keys are given).")
@click.option("--no-store-aad-prefix", is_flag=True, help="Do not store the AAD prefix; readers must supply it.")
@click.option("--algorithm", type=click.Choice(ALGORITHMS), default="AES_GCM_V1", show_default=True)
@click.option("--plaintext-footer", is_flag=True, help="Plaintext (signed) footer for legacy readers.")
@click.option("--v2-framing", type=click.Choice(["arrow", "parquet-java"]), default="arrow", show_default=True,
              help="DataPageV2 framing: the spec's/Arrow's, or parquet-java's (mutually unreadable).")
@click.option("--footer-key", metavar="ID", help="Master key id of the footer (envelope keys via --kms).")
@click.option("--column-keys", metavar="'ID:col,col;ID2:col'", help="Master key ids of columns.")
@click.option("--uniform-key", metavar="ID", help="One master key id for footer and every column.")
@click.option("--single-wrapping", is_flag=True, help="Wrap data keys with the KMS directly (no KEKs).")
@click.option("--external-key-material", is_flag=True, help="Key material in _KEY_MATERIAL_FOR_<file>.json.")
@click.option("--data-key-bits", type=click.Choice(["128", "192", "256"]), default="128", show_default=True)
@click.option("--jobs", "-j", default=os.cpu_count() or 1, show_default=True, help="Files in parallel.")
def encrypt(src, dst, footer_key_value, column_key_values, aad_prefix, kms, key_list, properties,
            footer_key_columns, uniform, no_store_aad_prefix, algorithm, plaintext_footer, v2_framing,
            footer_key, column_keys, uniform_key, single_wrapping, external_key_material, data_key_bits, jobs):
    """Seal plaintext Parquet file(s) SRC into PME file(s) DST (directories: every *.parquet).

    Keys either come from a KMS (--footer-key/--column-keys/--uniform-key or --property,
    fresh data keys per file and column, key material stored in the file) or are given
    explicitly (--footer-key-value, --column-key-value)."""
    from ..api import encrypt_file
    from ..format import FOOTER_KEY, EncryptionProperties

    envelope = footer_key or column_keys or uniform_key or properties
    if envelope and (footer_key_value or column_key_values):
        raise click.UsageError("use either master key ids (--footer-key/--column-keys/--uniform-key) or "
                               "explicit keys (--footer-key-value/--column-key-value), not both")
    if envelope:
        stats = _encrypt_envelope(src, dst, kms, key_list, properties, footer_key, column_keys, uniform_key,
                                  algorithm, plaintext_footer, single_wrapping, external_key_material,
                                  int(data_key_bits), jobs)
        _report(stats, "encrypted")
        return
    if not footer_key_value:
        raise click.UsageError("give master key ids (--footer-key/--column-keys or --uniform-key) or an "
                               "explicit --footer-key-value")
    cols = _column_keys(column_key_values)
    for p in footer_key_columns:
        if p in cols:
            raise click.UsageError(f"column {p!r} given both a column key and the footer key")
        cols[p] = FOOTER_KEY
    if uniform and cols:
        raise click.UsageError("--uniform excludes --column-key-value/--footer-key-column")
    enc = EncryptionProperties(load_key(footer_key_value, "--footer-key-value"),
                               column_keys=cols or None, algorithm=algorithm, plaintext_footer=plaintext_footer,
                               aad_prefix=aad_prefix.encode() if aad_prefix is not None else None,
                               store_aad_prefix=not no_store_aad_prefix, v2_framing=v2_framing)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # reported once per file by _report
        stats = _run_many(_pairs(src, dst), lambda s, d: encrypt_file(s, d, enc), jobs, "encrypt")
    _report(stats, "encrypted")

@click.command()
@click.argument("src", type=click.Path())
@click.argument("dst", type=click.Path())
@_with(_key_opts)
@click.option("--jobs", "-j", default=os.cpu_count() or 1, show_default=True, help="Files in parallel.")
def decrypt(src, dst, footer_key_value, column_key_values, aad_prefix, kms, key_list, properties, jobs):
    """Unseal PME file(s) SRC into plaintext Parquet file(s) DST (keys explicit, or from
    the KMS through the key material in each file)."""
    from ..api import decrypt_file

    def one(s, d):
        return decrypt_file(s, d, _read_keys(s, footer_key_value, column_key_values, aad_prefix, kms, key_list,
                                             properties))
    stats = _run_many(_pairs(src, dst), one, jobs, "decrypt")
    _report(stats, "decrypted")

@click.command()
@click.argument("path", type=click.Path())
@_with(_key_opts)
@click.option("--json", "as_json", is_flag=True)
@click.option("--jobs", "-j", default=os.cpu_count() or 1, show_default=True, help="Files in parallel.")
def verify(path, footer_key_value, column_key_values, aad_prefix, kms, key_list, properties, as_json, jobs):
    """Authenticate every module (and page CRC) of PME file(s) without writing anything."""
    from ..api import verify as verify_one

    from ..format import VerificationFailed

    def one(src, _):
        dec = _read_keys(src, footer_key_value, column_key_values, aad_prefix, kms, key_list, properties)
        try:
            return verify_one(src, dec)
        except VerificationFailed as exc:
            for f in exc.report["failures"]:
                where = ", ".join(f"{k} {f[k]}" for k in ("module", "row_group", "column", "page")
                                  if f.get(k) is not None)
                click.echo(f"FAILED {src}: {where}: {f['error']}", err=True)
            raise
    reports = _run_many(_pairs(path, None), one, jobs, "verify")
    for r in sorted(reports, key=lambda r: r["file"]):
        if as_json:
            click.echo(json.dumps(r))
        else:
            click.echo(f"OK {r['file']}: {r['algorithm']}, {r['modules']} modules authenticated, "
                       f"{r['pages']} pages, {r['row_groups']} row groups")

@click.command()
@click.argument("path", type=click.Path())
@_with(_key_opts)
@click.option("--json", "as_json", is_flag=True)
def inspect(path, footer_key_value, column_key_values, aad_prefix, kms, key_list, properties, as_json):
    """Show a file's encryption (no keys needed; keys or --kms open an encrypted footer)."""
    from ..api import inspect as inspect_one

    want_keys = footer_key_value or column_key_values or aad_prefix is not None or kms or key_list
    for src, _ in _pairs(path, None):
        dec = _read_keys(src, footer_key_value, column_key_values, aad_prefix, kms, key_list, properties) \
            if want_keys else None
        info = inspect_one(src, dec)
        if as_json:
            click.echo(json.dumps(info))
        else:
            _print_inspect(info)


def _encrypt_envelope(src, dst, kms, key_list, properties, footer_key, column_keys, uniform_key, algorithm,
                      plaintext_footer, single_wrapping, external, data_key_bits, jobs):
    from ..api import encrypt_file
    from ..config import (EncryptionConfig, encryption_config_from_properties, kms_connection_from_properties,
                         parse_column_keys)
    from ..keys import CryptoFactory

    props = dict(_properties(properties))
    conn = kms_connection_from_properties(props)
    if props:
        if footer_key or column_keys or uniform_key:
            raise click.UsageError("give master keys either as options or as --property, not both")
        cfg = encryption_config_from_properties(props)
        if cfg is None:
            raise click.UsageError("the properties set neither footer/column keys nor a uniform key")
    else:
        if uniform_key and (footer_key or column_keys):
            raise click.UsageError("--uniform-key excludes --footer-key/--column-keys")
        if not uniform_key and not (footer_key and column_keys):
            raise click.UsageError("give --footer-key with --column-keys, or --uniform-key")
        cfg = EncryptionConfig(uniform_key or footer_key, column_keys=parse_column_keys(column_keys) if column_keys
                               else None, uniform_encryption=bool(uniform_key), encryption_algorithm=algorithm,
                               plaintext_footer=plaintext_footer, double_wrapping=not single_wrapping,
                               internal_key_material=not external, data_key_length_bits=data_key_bits)
    factory = CryptoFactory(_kms_client_factory(kms, key_list))

    def one(s, d):
        return encrypt_file(s, d, factory.file_encryption_properties(conn, cfg, d))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return _run_many(_pairs(src, dst), one, jobs, "encrypt")


def _print_inspect(info: dict) -> None:
    click.echo(f"file        {info['file']} ({info['size']:,} bytes, {info['magic']})")
    if not info["encrypted"]:
        click.echo("encryption  none (plaintext Parquet)")
    else:
        click.echo(f"encryption  {info['algorithm']}, {info['footer']} footer")
        click.echo(f"dialect     {info['dialect']}")
        click.echo(f"aad prefix  {info['aad_prefix']}")
        if info.get("footer_key_metadata"):
            click.echo(f"footer key  {json.dumps(info['footer_key_metadata'])}")
    if not info.get("footer_readable", True):
        click.echo(info["note"])
        return
    click.echo(f"created_by  {info.get('created_by')}")
    click.echo(f"rows        {info.get('num_rows')} in {len(info.get('row_groups') or [])} row groups")
    width = max([len(c["path"]) for c in info.get("columns", [])] + [6])
    click.echo(f"{'column':<{width}}  {'encryption':<11} {'bytes':>14}  key metadata")
    for c in info.get("columns", []):
        md = c.get("key_metadata")
        extra = json.dumps(md) if md else ""
        if c.get("v2_framing"):
            extra = (extra + " " if extra else "") + f"[DataPageV2: {c['v2_framing']} framing]"
        size = c.get("compressed_bytes")
        click.echo(f"{c['path']:<{width}}  {c.get('encryption', '?'):<11} {size if size is not None else '?':>14}  "
                   f"{extra}")
