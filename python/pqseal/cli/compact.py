"""``pqseal compact SRC_DIR [DST_DIR]``: merge the small PME files of each partition."""

from __future__ import annotations

import re

import click

from ..config import CONNECTION_PROPERTIES, ENCRYPTION_PROPERTIES
from ..format.layout import ALGORITHMS
from . import files
from . import jobs as J
from .kms import KmsChoice, properties

_UNITS = {"": 1, "b": 1, "k": 1 << 10, "kb": 1 << 10, "kib": 1 << 10, "m": 1 << 20, "mb": 1 << 20, "mib": 1 << 20,
          "g": 1 << 30, "gb": 1 << 30, "gib": 1 << 30}


class Size(click.ParamType):
    """A byte count: 128MB, 64MiB, 1G, 1000000 (K/M/G are binary units)."""

    name = "size"

    def convert(self, value, param, ctx):
        if isinstance(value, int):
            return value
        m = re.fullmatch(r"\s*([0-9]+)\s*([a-z]*)\s*", str(value), re.I)
        if not m or m.group(2).lower() not in _UNITS or int(m.group(1)) <= 0:
            self.fail(f"{value!r} is not a size such as 128MB, 64MiB, 1G or 1000000", param, ctx)
        return int(m.group(1)) * _UNITS[m.group(2).lower()]


#: what _envelope_config reads that this command does not offer
_NOT_OFFERED = {"footer_key_columns": (), "uniform": False, "complete_columns": False, "single_wrapping": False,
                "data_key_bits": None, "aad_prefix": None, "no_store_aad_prefix": False, "v2_framing": "arrow"}


@click.command()
@click.argument("src", metavar="SRC_DIR", type=click.Path())
@click.argument("dst", metavar="[DST_DIR]", type=click.Path(), required=False)
@click.option("--target-size", type=Size(), default="128MiB", show_default=True,
              help="Merged files grow up to this size (K, M, G: binary units).")
@click.option("--kms", metavar="URI", help="KMS of the master keys, a URI as for encrypt (default: the local "
              "keystore).")
@click.option("--key-list", metavar="LIST", help="Master keys of the key-list KMS: 'id: base64, ...', env:NAME or "
              "file:PATH.")
@click.option("--property", "props", multiple=True, metavar="NAME=VALUE",
              help="parquet.encryption.* property of the new keys or the KMS connection (repeatable).")
@click.option("--footer-key", metavar="ID", help="Seal the merged files under these master keys instead of their "
              "inputs' (with --column-keys, --uniform-key, as for encrypt).")
@click.option("--column-keys", metavar="'ID:col,col;ID2:col'", help="Master key ids of columns.")
@click.option("--uniform-key", metavar="ID", help="One master key id for footer and every column.")
@click.option("--algorithm", type=click.Choice(ALGORITHMS), help="With new master keys; default: AES_GCM_V1.")
@click.option("--plaintext-footer", is_flag=True, help="With new master keys: a plaintext (signed) footer.")
@click.option("--external-key-material", is_flag=True, help="With new master keys: key material beside each file.")
@click.option("--force", is_flag=True, help="Write into a DST_DIR that is not empty.")
@files.jobs_option
@files.cluster_options(retry=False)
def compact(src, dst, target_size, kms, key_list, props, jobs, force, **o):
    """Merge the small data files of each partition directory of SRC_DIR into files of
    up to --target-size, page by page (nothing is decoded): each merged file is sealed
    with new data keys and a new file AAD, under its inputs' master keys (or the ones
    given). Only files with equal schemas (and keys) are merged, in file-name order.

    Without DST_DIR the tree is compacted in place: an input is removed only once the
    merged file is on disk and verified, and an interrupted run is finished or rolled
    back by the next one. Files that cannot be decrypted are never merged nor deleted:
    they stay (or are copied to DST_DIR) unchanged and are listed."""
    cluster = files.cluster_args(o)
    conn_props = properties(props, ENCRYPTION_PROPERTIES | CONNECTION_PROPERTIES)
    choice = KmsChoice(kms, key_list, {k: v for k, v in conn_props.items() if k in CONNECTION_PROPERTIES})
    enc_props = {k: v for k, v in conn_props.items() if k in ENCRYPTION_PROPERTIES}
    new_keys = o["footer_key"] or o["column_keys"] or o["uniform_key"] or enc_props
    if not new_keys and (o["algorithm"] or o["plaintext_footer"] or o["external_key_material"]):
        raise click.UsageError("--algorithm, --plaintext-footer and --external-key-material go with new master keys "
                               "(--footer-key/--column-keys/--uniform-key); without them each merged file is sealed "
                               "like its inputs")
    encryption = files._envelope_config({**_NOT_OFFERED, **o}, enc_props) if new_keys else None
    if not J.tree_job(src):
        raise click.UsageError(f"{src} is not a directory: compact merges the files of a directory tree")
    if dst is not None:
        from ..dataset.compaction import refuse_same_tree

        try:
            refuse_same_tree(src, dst)
        except ValueError as exc:
            raise click.UsageError(str(exc)) from None

    def line(rep) -> str:
        merged = sum(len(r.detail["inputs"]) for r in rep.ok)
        return (f"{len(rep.ok)} merged files from {merged} inputs ({rep.bytes:,} bytes); "
                f"{len(rep.skipped)} files left as they were; {rep.kms_calls} KMS calls")
    J.run_tree("compact", src, dst, cluster, "compacted", workers=jobs, force=force, line=line,
               encryption=encryption, target_size=target_size, kms=choice.client_factory(),
               kms_connection_config=choice.connection())
