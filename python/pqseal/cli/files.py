"""``pqseal encrypt|decrypt|verify|inspect`` of files and directory trees.

Keys are explicit (``--footer-key-value``, ``--column-key-value``) or come from a KMS
(master key ids, ``--property``); every option is either honoured or refused with a
usage error, never ignored.
"""

from __future__ import annotations

import dataclasses
import json
import os
import warnings

import click

from ..config import CONNECTION_PROPERTIES, ENCRYPTION_PROPERTIES
from ..format.layout import ALGORITHMS
from ..format.properties import V2_FRAMINGS
from . import jobs as J
from .keyspec import KEY_FORMS, column_key_values, load_key
from .kms import KmsChoice, ReadKeys, prefixed, properties

DEFAULT_JOBS = os.cpu_count() or 1


def _explicit_key_options(prefix: str = "", side: str = ""):
    """--footer-key-value, --column-key-value and --aad-prefix (``prefix``: ``old-`` for
    the old keys of rekey) as a list of options."""
    dest = prefix.replace("-", "_")
    return [
        click.option(f"--{prefix}footer-key-value", metavar="KEY", help=f"Explicit {side}footer key: {KEY_FORMS}."),
        click.option(f"--{prefix}column-key-value", f"{dest}column_key_values", multiple=True, metavar="COLUMN=KEY",
                     help=f"Explicit {side}key of one column (dotted leaf path), repeatable."),
        click.option(f"--{prefix}aad-prefix", metavar="TEXT", help=f"{side.capitalize()}AAD prefix (UTF-8)."),
    ]


def _apply(options):
    def decorate(f):
        for o in reversed(options):
            f = o(f)
        return f
    return decorate


def _read_key_options(f):
    return _apply(_explicit_key_options() + [
        click.option("--kms", metavar="URI", help="KMS of the master keys: keystore[:PATH], keylist, "
                     "vault+https://HOST:8200/MOUNT, 'pkcs11:module=LIB;token=NAME', aws-kms://REGION or "
                     "file:CONFIG.toml; credentials from the environment, never the URI (default: the local "
                     "keystore, $PQSEAL_KEYSTORE or ~/.config/pqseal/keystore.json; a key list selects keylist)."),
        click.option("--key-list", metavar="LIST", help="Master keys of the key-list KMS (parquet-java's "
                     "InMemoryKMS): 'id: base64, ...', env:NAME or file:PATH; or $PQSEAL_KEY_LIST."),
        click.option("--property", "properties", multiple=True, metavar="NAME=VALUE",
                     help="parquet.encryption.* property (repeatable); unknown names are refused."),
    ])(f)


def jobs_option(f):
    return click.option("--jobs", "-j", "--workers", "jobs", type=click.IntRange(min=1), default=DEFAULT_JOBS,
                        show_default=True, help="Files in parallel (--workers: the same; with --scheduler the "
                        "default is the cluster's worker threads).")(f)


def cluster_options(*, summaries: bool = True, retry: bool = True):
    """The options of a directory SRC run as a dataset job (see pqseal.dataset), as a
    decorator; ``summaries=False`` leaves out --summaries (jobs that write no new tree),
    ``retry=False`` --retry-failed (jobs that retry every failure anyway: compact)."""
    options = [
        click.option("--executor", type=click.Choice(["threads", "processes"]), help="Run files on threads of "
                     "this process (default) or on local worker processes."),
        click.option("--scheduler", metavar="ADDR", help="Run on a Dask cluster: its scheduler's address, "
                     "tls://host:8786 (TLS settings from Dask's configuration, e.g. "
                     "DASK_DISTRIBUTED__COMM__TLS__CA_FILE, or the --tls-* options)."),
        click.option("--tls-ca-file", type=click.Path(exists=True, dir_okay=False), help="CA of the Dask cluster."),
        click.option("--tls-cert", type=click.Path(exists=True, dir_okay=False), help="Client certificate for the "
                     "Dask cluster."),
        click.option("--tls-key", type=click.Path(exists=True, dir_okay=False), help="Client key for the Dask "
                     "cluster."),
        click.option("--allow-insecure-scheduler", is_flag=True, help="Send keys to a scheduler that is not "
                     "reached over TLS (tcp://): anyone on the network can read them."),
        *([click.option("--retry-failed", is_flag=True, help="On a rerun, retry the files that failed before "
                        "(by default they are skipped).")] if retry else []),
        click.option("--report", type=click.Path(dir_okay=False), help="Write the job's JSON report here."),
        click.option("--summaries", type=click.Choice(["auto", "drop"]), default="auto", show_default=True,
                     help="_metadata/_common_metadata: auto drops them (with a warning) when sealing and "
                     "regenerates them when unsealing; drop leaves them out silently."),
    ]
    if not summaries:
        options.pop()
    return _apply(options)


_cluster_options = cluster_options()


def cluster_args(o: dict) -> dict:
    """The directory-job options, popped from a command's options."""
    return {k: o.pop(k, v) for k, v in J.CLUSTER_DEFAULTS.items()}


def _output_options(f):
    f = click.option("--in-place", is_flag=True, help="DST may be SRC: replace the input file(s).")(f)
    return click.option("--force", is_flag=True, help="Replace existing output files (they keep their mode).")(f)


def _read_keys(footer_key_value, column_key_values, aad_prefix, kms, key_list, props) -> ReadKeys:
    keys = ReadKeys(footer_key_value, column_key_values, aad_prefix,
                    KmsChoice(kms, key_list, properties(props, CONNECTION_PROPERTIES)))
    keys.check()
    return keys


def _tree_read_keys(read: ReadKeys, prefix: str = "", kms: tuple | None = None) -> dict:
    """Read keys of a dataset job: explicit DecryptionProperties, or a KMS whose calls the
    job's key session makes on the driver (``kms``: a client factory and connection made
    already; ``prefix``: of the options, as in :func:`_explicit_key_options`)."""
    from ..format import DecryptionProperties

    aad = read.aad_prefix.encode() if read.aad_prefix is not None else None
    if read.explicit:
        footer = load_key(read.footer_key_value, f"--{prefix}footer-key-value") if read.footer_key_value else None
        return {"decryption": DecryptionProperties(footer, column_keys=column_key_values(read.column_key_values),
                                                   aad_prefix=aad)}
    if aad is not None:
        raise click.UsageError(f"--{prefix}aad-prefix with a KMS applies to a single file (a directory job's key "
                               "session reads each file's footer on the driver, with the AAD prefix stored in it)")
    factory, conn = kms if kms is not None else (read.kms.client_factory(), read.kms.connection())
    return {"kms": factory, "kms_connection_config": conn}


# ---- encrypt -----------------------------------------------------------------------------------------

#: envelope-only options and the parquet.encryption property each one sets
_ENVELOPE_OPTIONS = {"single_wrapping": ("--single-wrapping", "double.wrapping", "false"),
                     "external_key_material": ("--external-key-material", "key.material.store.internally", "false"),
                     "data_key_bits": ("--data-key-bits", "data.key.length.bits", None)}


def _envelope_config(o: dict, props: dict):
    """An EncryptionConfig from master key ids given as options and/or properties."""
    from ..config import encryption_config_from_properties

    if o["footer_key_columns"]:
        raise click.UsageError("--footer-key-column takes explicit keys; with master key ids list the column "
                               "under the footer's master key in --column-keys, or use --complete-columns")
    if o["uniform"] and not o["footer_key"]:
        raise click.UsageError("--uniform goes with --footer-key (or give --uniform-key)")
    given: dict[str, tuple[str, str]] = {}      # property -> (option, value)
    if o["footer_key"]:
        # alone, the footer's master key is every column's too, as with --footer-key-value
        uniform = o["uniform"] or not (o["column_keys"] or "column.keys" in props)
        given["uniform.key" if uniform else "footer.key"] = ("--footer-key", o["footer_key"])
    if o["column_keys"]:
        if o["uniform"]:
            raise click.UsageError("--uniform excludes --column-keys")
        given["column.keys"] = ("--column-keys", o["column_keys"])
    if o["uniform_key"]:
        if "uniform.key" in given or "footer.key" in given:
            raise click.UsageError("--uniform-key excludes --footer-key")
        given["uniform.key"] = ("--uniform-key", o["uniform_key"])
    if o["algorithm"]:
        given["algorithm"] = ("--algorithm", o["algorithm"])
    if o["plaintext_footer"]:
        given["plaintext.footer"] = ("--plaintext-footer", "true")
    if o["complete_columns"]:
        given["complete.columns"] = ("--complete-columns", "true")
    for name, (option, prop, value) in _ENVELOPE_OPTIONS.items():
        if o[name]:
            given[prop] = (option, value or str(o[name]))
    for prop, (option, _) in given.items():
        if prop in props:
            raise click.UsageError(f"{option} and --property parquet.encryption.{prop} both given")
    try:
        cfg = encryption_config_from_properties(prefixed({**props, **{k: v for k, (_, v) in given.items()}}))
        if cfg is None:
            raise click.UsageError("no master key ids: give --footer-key [--column-keys], --uniform-key, or "
                                   "the footer.key/column.keys/uniform.key properties")
        aad = o["aad_prefix"].encode() if o["aad_prefix"] is not None else None
        return dataclasses.replace(cfg, aad_prefix=aad, store_aad_prefix=not o["no_store_aad_prefix"],
                                   v2_framing=o["v2_framing"])
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None


def _explicit_properties(o: dict, *, kms_used: bool = False):
    """EncryptionProperties from explicit keys; ``kms_used``: the KMS options serve the
    old keys of rekey, so they are not refused here."""
    from ..format import FOOTER_KEY, EncryptionProperties

    envelope_only = [(name, option) for name, (option, _, _) in _ENVELOPE_OPTIONS.items()]
    kms_options = [] if kms_used else [("kms", "--kms"), ("key_list", "--key-list"), ("properties", "--property")]
    for name, option in envelope_only + kms_options:
        if o[name]:
            raise click.UsageError(f"{option} applies to master key ids (--footer-key/--column-keys), not to "
                                   "explicit keys")
    if not o["footer_key_value"]:
        raise click.UsageError("give master key ids (--footer-key [--column-keys], --uniform-key, --property) or "
                               "an explicit --footer-key-value")
    cols: dict = dict(column_key_values(o["column_key_values"]))
    for p in o["footer_key_columns"]:
        if p in cols:
            raise click.UsageError(f"column {p!r} given both a column key and the footer key")
        cols[p] = FOOTER_KEY
    if o["uniform"] and cols:
        raise click.UsageError("--uniform excludes --column-key-value/--footer-key-column")
    if o["complete_columns"] and not cols:
        raise click.UsageError("--complete-columns needs column keys: without them every column uses the "
                               "footer key already")
    try:
        return EncryptionProperties(load_key(o["footer_key_value"], "--footer-key-value"), column_keys=cols or None,
                                    algorithm=o["algorithm"] or "AES_GCM_V1", plaintext_footer=o["plaintext_footer"],
                                    aad_prefix=o["aad_prefix"].encode() if o["aad_prefix"] is not None else None,
                                    store_aad_prefix=not o["no_store_aad_prefix"], v2_framing=o["v2_framing"],
                                    complete_columns=o["complete_columns"])
    except ValueError as exc:
        if type(exc) is not ValueError:     # InvalidKey: a bad key, not a bad command line
            raise
        raise click.UsageError(str(exc)) from None


def _write_keys(o: dict, *, old: ReadKeys | None = None) -> tuple:
    """(new keys, KMS client factory, KMS connection) of encrypt or rekey from the encrypt
    options: an EncryptionConfig (master key ids) or explicit EncryptionProperties.
    ``old``: rekey's old keys; when they come through the KMS, --kms, --key-list and
    connection properties serve them too."""
    old_kms = old is not None and not old.explicit
    props = properties(o["properties"], ENCRYPTION_PROPERTIES | CONNECTION_PROPERTIES) if old_kms else None
    ids = o["footer_key"] or o["column_keys"] or o["uniform_key"]
    envelope = ids or (any(k in ENCRYPTION_PROPERTIES for k in props) if props is not None else o["properties"])
    if envelope and (o["footer_key_value"] or o["column_key_values"]):
        raise click.UsageError("use either master key ids (--footer-key/--column-keys/--uniform-key/--property) "
                               "or explicit keys (--footer-key-value/--column-key-value), not both")
    if props is None:
        props = properties(o["properties"], ENCRYPTION_PROPERTIES | CONNECTION_PROPERTIES)
    choice = KmsChoice(o["kms"], o["key_list"], {k: v for k, v in props.items() if k in CONNECTION_PROPERTIES})
    if envelope:
        cfg = _envelope_config(o, {k: v for k, v in props.items() if k in ENCRYPTION_PROPERTIES})
    else:
        cfg = _explicit_properties(o, kms_used=old_kms)
    if envelope or old_kms:
        return cfg, choice.client_factory(), choice.connection()
    return cfg, None, None


_write_key_options = _apply([
    _read_key_options,
    click.option("--footer-key-column", "footer_key_columns", multiple=True, metavar="COLUMN",
                 help="With explicit keys: encrypt this column with the footer key (repeatable)."),
    click.option("--uniform", is_flag=True, help="Encrypt every column with the footer key (the default when no "
                 "column keys are given)."),
    click.option("--complete-columns", is_flag=True, help="Columns without a key of their own are encrypted with "
                 "the footer key instead of staying plaintext (parquet.encryption.complete.columns)."),
    click.option("--no-store-aad-prefix", is_flag=True, help="Do not store the AAD prefix; readers must supply it."),
    click.option("--algorithm", type=click.Choice(ALGORITHMS), help="Default: AES_GCM_V1."),
    click.option("--plaintext-footer", is_flag=True, help="Plaintext (signed) footer for legacy readers."),
    click.option("--v2-framing", type=click.Choice(V2_FRAMINGS), default="arrow", show_default=True,
                 help="DataPageV2 framing: the spec's/Arrow's, or parquet-java's (mutually unreadable)."),
    click.option("--footer-key", metavar="ID", help="Master key id of the footer; alone, of every column too."),
    click.option("--column-keys", metavar="'ID:col,col;ID2:col'", help="Master key ids of columns."),
    click.option("--uniform-key", metavar="ID", help="One master key id for footer and every column."),
    click.option("--single-wrapping", is_flag=True, help="Wrap data keys with the KMS directly (no KEKs)."),
    click.option("--external-key-material", is_flag=True, help="Key material in _KEY_MATERIAL_FOR_<file>.json."),
    click.option("--data-key-bits", type=click.Choice(["128", "192", "256"]), help="Default: 128."),
    jobs_option,
    _cluster_options,
    _output_options,
])


@click.command()
@click.argument("src", type=click.Path())
@click.argument("dst", type=click.Path())
@_write_key_options
def encrypt(src, dst, **o):
    """Seal plaintext Parquet file(s) SRC into PME file(s) DST (a directory: its data
    files, as pyarrow.dataset finds them).

    Keys come from a KMS (--footer-key/--column-keys/--uniform-key or --property: fresh
    data keys per file and column, key material in the file or beside it) or are given
    explicitly (--footer-key-value, --column-key-value). Existing outputs are refused
    unless --force (or --in-place when DST is SRC)."""
    from ..api import encrypt_file
    from ..audit import file_operation

    cluster = cluster_args(o)
    cfg, kms, conn = _write_keys(o)
    if J.tree_job(src, o["in_place"]):
        J.run_tree("encrypt", src, dst, cluster, "encrypted", workers=o["jobs"], force=o["force"], encryption=cfg,
                   kms=kms, kms_connection_config=conn)
        return
    J.refuse_cluster_options(cluster, "SRC is a file" if not os.path.isdir(src) else "not with --in-place")
    plan = J.plan(src, dst, in_place=o["in_place"])

    def one(s, d):
        return file_operation("seal", d, lambda: encrypt_file(s, d, cfg, kms=kms, kms_connection_config=conn,
                                                              overwrite=o["force"], in_place=o["in_place"]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # reported once per file by report()
        J.run(plan, one, o["jobs"], "encrypted", lambda stats: J.report(stats, "encrypted"))


@click.command()
@click.argument("src", type=click.Path())
@click.argument("dst", type=click.Path())
@_apply(_explicit_key_options("old-", "old "))
@_write_key_options
def rekey(src, dst, old_footer_key_value, old_column_key_values, old_aad_prefix, **o):
    """Re-key PME file(s) SRC into DST: decrypt with the old keys and seal with new data
    keys in one pass, page by page (nothing is decoded; plaintext never reaches the disk).

    Old keys: explicit (--old-footer-key-value, --old-column-key-value) or through each
    file's key material and the KMS. New keys: as for encrypt (master key ids, or
    explicit --footer-key-value, ...). A directory runs as a dataset job."""
    from ..api import decryption_properties, rekey_file

    cluster = cluster_args(o)
    conn_props = properties(o["properties"], ENCRYPTION_PROPERTIES | CONNECTION_PROPERTIES)
    old = ReadKeys(old_footer_key_value, old_column_key_values, old_aad_prefix,
                   KmsChoice(o["kms"], o["key_list"], {k: v for k, v in conn_props.items()
                                                       if k in CONNECTION_PROPERTIES}))
    cfg, kms, conn = _write_keys(o, old=old)
    if J.tree_job(src, o["in_place"]):
        read = _tree_read_keys(old, "old-", (kms, conn))      # one KMS client for both sides
        J.run_tree("rekey", src, dst, cluster, "rekeyed", workers=o["jobs"], force=o["force"], encryption=cfg,
                   **{"kms": kms, "kms_connection_config": conn, **read})
        return
    J.refuse_cluster_options(cluster, "SRC is a file" if not os.path.isdir(src) else "not with --in-place")
    plan = J.plan(src, dst, in_place=o["in_place"])
    old_keys = old.decryption() if old.explicit else None
    aad = old_aad_prefix.encode() if old_aad_prefix is not None else None

    def one(s, d):
        if old_keys is not None:
            dec = old_keys(s)
        else:       # through the file's key material, with the KMS of the new keys' side
            dec = decryption_properties(s, None, kms=kms, kms_connection_config=conn)
            dec.aad_prefix = aad
        return rekey_file(s, d, dec, cfg, kms=kms, kms_connection_config=conn, overwrite=o["force"],
                          in_place=o["in_place"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # reported once per file by report()
        J.run(plan, one, o["jobs"], "rekeyed", lambda stats: J.report(stats, "rekeyed"))


# ---- decrypt, verify, inspect ------------------------------------------------------------------------


@click.command()
@click.argument("src", type=click.Path())
@click.argument("dst", type=click.Path())
@_read_key_options
@jobs_option
@_cluster_options
@_output_options
def decrypt(src, dst, footer_key_value, column_key_values, aad_prefix, kms, key_list, properties, jobs, force,
            in_place, **cluster):
    """Unseal PME file(s) SRC into plaintext Parquet file(s) DST (mode 0600 when new);
    keys explicit, or from the KMS through each file's key material. Existing outputs
    are refused unless --force (or --in-place when DST is SRC)."""
    from ..api import decrypt_file
    from ..audit import file_operation

    read = _read_keys(footer_key_value, column_key_values, aad_prefix, kms, key_list, properties)
    if J.tree_job(src, in_place):
        J.run_tree("decrypt", src, dst, cluster, "decrypted", workers=jobs, force=force, **_tree_read_keys(read))
        return
    J.refuse_cluster_options(cluster, "SRC is a file" if not os.path.isdir(src) else "not with --in-place")
    keys = read.decryption()
    plan = J.plan(src, dst, in_place=in_place)
    J.run(plan, lambda s, d: file_operation("unseal", s, lambda: decrypt_file(s, d, keys(s), overwrite=force,
                                                                               in_place=in_place)), jobs, "decrypted",
          lambda stats: J.report(stats, "decrypted"))


def _ok_line(r: dict) -> str:
    if "modules_authenticated" in r:
        what = f"{r['modules_authenticated']} modules authenticated"
        if r.get("pages_framing_checked"):
            what += f", {r['pages_framing_checked']} CTR pages framing checked (not authenticated)"
    else:
        what = f"{r['modules']} modules authenticated"
    return f"OK {r['file']}: {r['algorithm']}, {what}, {r['pages']} pages, {r['row_groups']} row groups"


@click.command()
@click.argument("path", type=click.Path())
@_read_key_options
@click.option("--json", "as_json", is_flag=True)
@jobs_option
@_cluster_options
def verify(path, footer_key_value, column_key_values, aad_prefix, kms, key_list, properties, as_json, jobs,
           **cluster):
    """Authenticate every module (and check page CRCs) of PME file(s) without writing
    anything; every failing module and every failing file is reported."""
    from ..api import verify as verify_one
    from ..format import VerificationFailed

    read = _read_keys(footer_key_value, column_key_values, aad_prefix, kms, key_list, properties)

    def show(reports):
        for r in sorted(reports, key=lambda r: r["file"]):
            click.echo(json.dumps(r) if as_json else _ok_line(r))
    if J.tree_job(path):
        J.run_tree("verify", path, None, cluster, "verified", workers=jobs, show=show, **_tree_read_keys(read))
        return
    J.refuse_cluster_options(cluster, "SRC is a file")
    keys = read.decryption()

    def one(src, _):
        try:
            return verify_one(src, keys(src))
        except VerificationFailed as exc:
            for f in exc.report["failures"]:
                where = ", ".join(f"{k} {f[k]}" for k in ("module", "row_group", "column", "page")
                                  if f.get(k) is not None)
                click.echo(f"FAILED {src}: {where}: {f['error']}", err=True)
            raise
    J.run(J.plan(path, None), one, jobs, "verified", show)


@click.command()
@click.argument("path", type=click.Path())
@_read_key_options
@click.option("--json", "as_json", is_flag=True)
@_cluster_options
def inspect(path, footer_key_value, column_key_values, aad_prefix, kms, key_list, properties, as_json, **cluster):
    """Show a file's encryption (no keys needed; keys or a KMS open an encrypted footer).
    A directory: every data file; each bad file is reported and the rest still shown."""
    from ..api import inspect as inspect_one

    read = _read_keys(footer_key_value, column_key_values, aad_prefix, kms, key_list, properties)

    def show(infos):
        for info in sorted(infos, key=lambda i: i["file"]):
            click.echo(json.dumps(info)) if as_json else _print_inspect(info)
    if J.tree_job(path):
        J.run_tree("inspect", path, None, cluster, "inspected", workers=1, show=show,
                   **(_tree_read_keys(read) if read.any else {}))
        return
    J.refuse_cluster_options(cluster, "SRC is a file")
    keys = read.decryption() if read.any else None
    J.run(J.plan(path, None), lambda s, _: inspect_one(s, keys(s) if keys else None), 1, "inspected", show)


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
    if "max_dek_modules" in info:
        click.echo(f"most modules under one data key: {info['max_dek_modules']:,} (GCM allows 2^32 per key)")
