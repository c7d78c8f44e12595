"""CLI: encrypt / decrypt / verify / inspect of files and directories with explicit keys."""

from __future__ import annotations

import base64
import binascii
import json
import os
import sys
import warnings
from concurrent.futures import ThreadPoolExecutor, as_completed

import click

from .errors import InvalidKey, PqsealError

ALGORITHMS = ("AES_GCM_V1", "AES_GCM_CTR_V1")


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
    from .format import DecryptionProperties

    return DecryptionProperties(load_key(footer_key, "--footer-key-value") if footer_key else None,
                                column_keys=_column_keys(column_key_values),
                                aad_prefix=aad_prefix.encode() if aad_prefix is not None else None)


def _kms_client_factory(kms: str | None, key_list: str | None):
    """``--kms keystore[:PATH] | keylist`` (``--key-list`` alone selects the key list)."""
    key_list = key_list or os.environ.get("PQSEAL_KEY_LIST")
    if kms is None:
        kms = "keylist" if key_list else "keystore"
    if kms == "keylist":
        from .kms import KeyListKms

        if not key_list:
            raise click.UsageError("--kms keylist needs --key-list 'id: base64, ...' (or PQSEAL_KEY_LIST)")
        client = KeyListKms(key_list)
        return lambda cfg: client
    if kms == "keystore" or kms.startswith("keystore:"):
        from .kms.keystore import LocalKeystore

        path = kms[len("keystore:"):] or None if kms.startswith("keystore:") else None
        holder = {}

        def factory(cfg):
            if "ks" not in holder:
                holder["ks"] = LocalKeystore(path)
            return holder["ks"]
        return factory
    raise click.UsageError(f"--kms must be keystore, keystore:PATH or keylist, not {kms!r}")


def _kms_decryption(kms, key_list, path, properties=()):
    from .config import kms_connection_from_properties
    from .keys import CryptoFactory

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


def _pairs(src: str, dst: str | None):
    """(src, dst) file pairs: one file, or every *.parquet file under a directory."""
    if not os.path.isdir(src):
        return [(src, dst)]
    pairs = []
    for root, dirs, files in os.walk(src):
        dirs.sort()
        for name in sorted(files):
            if name.endswith(".parquet") and not name.startswith("."):
                s = os.path.join(root, name)
                pairs.append((s, None if dst is None else os.path.join(dst, os.path.relpath(s, src))))
    if not pairs:
        raise click.UsageError(f"no *.parquet files under {src}")
    return pairs


def _run_many(pairs, fn, jobs: int, label: str):
    """Run fn(src, dst) over the pairs in parallel with a progress bar; a failing file is
    reported on one line and makes the exit code 1, the others still complete."""
    from tqdm import tqdm

    if len(pairs) == 1:
        return [fn(*pairs[0])]
    for _, d in pairs:
        if d:
            os.makedirs(os.path.dirname(d) or ".", exist_ok=True)
    results, failed = [], 0
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool, \
            tqdm(total=len(pairs), desc=label, unit="file", disable=None, file=sys.stderr) as bar:
        futs = {pool.submit(fn, s, d): s for s, d in pairs}
        for fut in as_completed(futs):
            try:
                results.append(fut.result())
            except (PqsealError, OSError, ValueError) as exc:
                failed += 1
                tqdm.write(f"pqseal: error: {futs[fut]}: {type(exc).__name__}: {exc}", file=sys.stderr)
            bar.update(1)
    if failed:
        click.echo(f"pqseal: {failed} of {len(pairs)} files failed", err=True)
        sys.exit(1)
    return results


def _report(stats_list, verb):
    total_in = sum(s.bytes_in for s in stats_list)
    for s in stats_list:
        for w in s.warnings:
            click.echo(f"warning: {w}", err=True)
    if len(stats_list) == 1:
        s = stats_list[0]
        click.echo(f"{verb} {s.src} -> {s.dst}: {s.row_groups} row groups, {s.columns} columns, {s.pages} pages, "
                   f"{s.bytes_in:,} -> {s.bytes_out:,} bytes in {s.seconds:.3f} s "
                   f"({s.bytes_in / max(s.seconds, 1e-9) / 1e9:.2f} GB/s)")
    else:
        click.echo(f"{verb} {len(stats_list)} files, {total_in:,} bytes")


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


def register(main: click.Group) -> None:
    _register_keys(main)
    _register_rotate(main)

    @main.command()
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
        from .api import encrypt_file
        from .format import FOOTER_KEY, EncryptionProperties

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

    @main.command()
    @click.argument("src", type=click.Path())
    @click.argument("dst", type=click.Path())
    @_with(_key_opts)
    @click.option("--jobs", "-j", default=os.cpu_count() or 1, show_default=True, help="Files in parallel.")
    def decrypt(src, dst, footer_key_value, column_key_values, aad_prefix, kms, key_list, properties, jobs):
        """Unseal PME file(s) SRC into plaintext Parquet file(s) DST (keys explicit, or from
        the KMS through the key material in each file)."""
        from .api import decrypt_file

        def one(s, d):
            return decrypt_file(s, d, _read_keys(s, footer_key_value, column_key_values, aad_prefix, kms, key_list,
                                                 properties))
        stats = _run_many(_pairs(src, dst), one, jobs, "decrypt")
        _report(stats, "decrypted")

    @main.command()
    @click.argument("path", type=click.Path())
    @_with(_key_opts)
    @click.option("--json", "as_json", is_flag=True)
    @click.option("--jobs", "-j", default=os.cpu_count() or 1, show_default=True, help="Files in parallel.")
    def verify(path, footer_key_value, column_key_values, aad_prefix, kms, key_list, properties, as_json, jobs):
        """Authenticate every module (and page CRC) of PME file(s) without writing anything."""
        from .api import verify as verify_one

        from .format import VerificationFailed

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

    @main.command()
    @click.argument("path", type=click.Path())
    @_with(_key_opts)
    @click.option("--json", "as_json", is_flag=True)
    def inspect(path, footer_key_value, column_key_values, aad_prefix, kms, key_list, properties, as_json):
        """Show a file's encryption (no keys needed; keys or --kms open an encrypted footer)."""
        from .api import inspect as inspect_one

        want_keys = footer_key_value or column_key_values or aad_prefix is not None or kms or key_list
        for src, _ in _pairs(path, None):
            dec = _read_keys(src, footer_key_value, column_key_values, aad_prefix, kms, key_list, properties) \
                if want_keys else None
            info = inspect_one(src, dec)
            if as_json:
                click.echo(json.dumps(info))
            else:
                _print_inspect(info)


def _register_rotate(main: click.Group) -> None:
    @main.command()
    @click.argument("path", type=click.Path())
    @click.option("--kms", metavar="keystore[:PATH]|keylist")
    @click.option("--key-list", metavar="'ID: B64, ...'")
    @click.option("--property", "properties", multiple=True, metavar="NAME=VALUE")
    @click.option("--single-wrapping", is_flag=True)
    def rotate(path, kms, key_list, properties, single_wrapping):
        """Re-wrap the keys of file(s) with external key material under the current master
        key versions (after `pqseal keys rotate`); the Parquet data is not touched."""
        from .config import kms_connection_from_properties
        from .keys import CryptoFactory

        factory = CryptoFactory(_kms_client_factory(kms, key_list))
        conn = kms_connection_from_properties(dict(_properties(properties)))
        for src, _ in _pairs(path, None):
            n = factory.rotate_master_keys(conn, src, double_wrapping=not single_wrapping)
            click.echo(f"rotated {n} keys of {src}")


def _register_keys(main: click.Group) -> None:
    @main.group()
    def keys():
        """The local keystore (pqseal's embedded KMS): master keys with versions.

        Location: --keystore, $PQSEAL_KEYSTORE, or ~/.config/pqseal/keystore.json.
        Passphrase: $PQSEAL_KEYSTORE_PASSPHRASE, a file named by
        $PQSEAL_KEYSTORE_PASSPHRASE_FILE, or a prompt (never an argument)."""

    ks_opt = click.option("--keystore", "path", metavar="PATH", help="Keystore file.")

    @keys.command("init")
    @ks_opt
    def keys_init(path):
        """Create an empty keystore (mode 0600)."""
        from .kms.keystore import LocalKeystore

        try:
            ks = LocalKeystore.init(path)
        except FileExistsError:
            raise click.ClickException(f"a keystore already exists at {path or 'the default location'}") from None
        click.echo(f"created keystore {ks.path}")

    @keys.command("create")
    @ks_opt
    @click.argument("key_id")
    @click.option("--bits", type=click.Choice(["128", "192", "256"]), default="256", show_default=True)
    def keys_create(path, key_id, bits):
        """Create master key KEY_ID (version 1)."""
        from .kms.keystore import LocalKeystore

        LocalKeystore(path).create(key_id, int(bits))
        click.echo(f"created master key {key_id} (version 1, {bits} bits)")

    @keys.command("list")
    @ks_opt
    @click.option("--json", "as_json", is_flag=True)
    def keys_list(path, as_json):
        """List master keys and their versions (never key bytes)."""
        from .kms.keystore import LocalKeystore

        rows = LocalKeystore(path).list()
        if as_json:
            click.echo(json.dumps(rows))
            return
        click.echo(f"{'id':<24} {'version':>7} {'bits':>5}  {'state':<13} created")
        for r in rows:
            click.echo(f"{r['id']:<24} {r['version']:>7} {r['bits']:>5}  {r['state']:<13} {r['created']}")

    @keys.command("rotate")
    @ks_opt
    @click.argument("key_id")
    def keys_rotate(path, key_id):
        """New version of KEY_ID; older versions stay for unwrapping existing files."""
        from .kms.keystore import LocalKeystore

        v = LocalKeystore(path).rotate(key_id)
        click.echo(f"master key {key_id} is now at version {v}; earlier versions are decrypt-only")


def _encrypt_envelope(src, dst, kms, key_list, properties, footer_key, column_keys, uniform_key, algorithm,
                      plaintext_footer, single_wrapping, external, data_key_bits, jobs):
    from .api import encrypt_file
    from .config import (EncryptionConfig, encryption_config_from_properties, kms_connection_from_properties,
                         parse_column_keys)
    from .keys import CryptoFactory

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
