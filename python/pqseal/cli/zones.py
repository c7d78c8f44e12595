"""``pqseal zone create|list|show|delete``: encryption zones (see :mod:`pqseal.io.zones`)."""

from __future__ import annotations

import json

import click

from ..format.layout import ALGORITHMS
from .kms import KmsChoice


@click.group()
@click.option("--zones", "zones_file", metavar="FILE", help="Zones file (default: $PQSEAL_ZONES, or zones.json "
              "beside the keystore).")
@click.pass_context
def zone(ctx, zones_file):
    """Encryption zones: a directory (or fsspec URL prefix) whose Parquet files get one
    encryption policy when written through pqseal (ParquetWriter, pqseal.open, the
    pqseal:: file system). The deepest zone holding a path wins; renames across zones
    are refused."""
    ctx.obj = zones_file


def _policy_rows(p) -> list[tuple[str, str]]:
    return [("footer key", p.footer_key), ("column keys", p.column_keys or "(none: every column, footer key)"),
            ("algorithm", p.algorithm), ("footer", "plaintext (signed)" if p.plaintext_footer else "encrypted"),
            ("key material", "internal" if p.internal_key_material else "external (beside each file)"),
            ("data key bits", str(p.data_key_length_bits))]


@zone.command("create")
@click.argument("path")
@click.option("--footer-key", required=True, metavar="ID", help="Master key id of the footer (and of every "
              "column without --column-keys).")
@click.option("--column-keys", metavar="'ID:col,col;ID2:col'", help="Master key ids of columns; other columns "
              "stay plaintext.")
@click.option("--algorithm", type=click.Choice(ALGORITHMS), default="AES_GCM_V1", show_default=True)
@click.option("--plaintext-footer", is_flag=True, help="Signed plaintext footer.")
@click.option("--external-key-material", is_flag=True, help="Key material beside each file, not in its footer.")
@click.option("--data-key-length", "--data-key-bits", "data_key_length", type=click.Choice(["128", "192", "256"]),
              default="128", show_default=True, help="Bits of the data keys.")
@click.option("--encrypt-existing", is_flag=True, help="Seal the plaintext Parquet files already under PATH in "
              "place with the zone's policy (without it they make the command fail).")
@click.option("--force", is_flag=True, help="Replace the policy of an existing zone (its files are not touched).")
@click.option("--kms", metavar="URI", help="KMS of the master keys, a URI (keystore[:PATH], vault+https://..., "
              "'pkcs11:...', aws-kms://REGION, file:X.toml); stored in the policy, so writes into the zone use it. "
              "Default: the writer's KMS (the local keystore). The keys are checked now.")
@click.option("--key-list", metavar="LIST", help="Master keys of the key-list KMS: 'id: base64, ...', env:NAME or "
              "file:PATH.")
@click.pass_obj
def zone_create(zones_file, path, footer_key, column_keys, algorithm, plaintext_footer, external_key_material,
                data_key_length, encrypt_existing, force, kms, key_list):
    """Make PATH (a directory or an fsspec URL prefix) an encryption zone."""
    from ..io.zones import ZoneError, create_zone

    factory = KmsChoice(kms, key_list, {}).client_factory()
    try:
        done = create_zone(path, footer_key, column_keys=column_keys, algorithm=algorithm,
                           plaintext_footer=plaintext_footer, internal_key_material=not external_key_material,
                           data_key_length_bits=int(data_key_length), encrypt_existing=encrypt_existing,
                           replace=force, kms=factory, zones=zones_file,
                           kms_uri=kms if kms and not key_list else None)
    except ZoneError as exc:
        for name, reason in exc.failed:
            click.echo(f"pqseal: error: {name}: {reason}", err=True)
        raise
    for name in done.sealed:
        click.echo(f"sealed {name}")
    click.echo(f"created zone {done.policy.path}" + (f" ({len(done.sealed)} existing files sealed)"
                                                       if done.sealed else ""))


@zone.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_obj
def zone_list(zones_file, as_json):
    """List the zones and their policies."""
    from ..io.zones import list_zones

    zones = list_zones(zones=zones_file)
    if as_json:
        click.echo(json.dumps([z.to_dict() for z in zones], indent=2))
        return
    if not zones:
        click.echo("no zones")
        return
    for z in zones:
        click.echo(z.path)
        for k, v in _policy_rows(z):
            click.echo(f"  {k:<14} {v}")


@zone.command("show")
@click.argument("path")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_obj
def zone_show(zones_file, path, as_json):
    """The policy files written at PATH get, and the zone it comes from."""
    from ..io.zones import location, policy_for

    where = location(path).text
    p = policy_for(path, zones=zones_file)
    if as_json:
        policy = p.to_dict() if p is not None else None
        click.echo(json.dumps({"path": where, "zone": policy.pop("path") if policy else None, "policy": policy},
                              indent=2))
        return
    if p is None:
        click.echo(f"{where} is in no zone")
        return
    click.echo(f"{where} is in zone {p.path}")
    for k, v in _policy_rows(p):
        click.echo(f"  {k:<14} {v}")


@zone.command("delete")
@click.argument("path")
@click.pass_obj
def zone_delete(zones_file, path):
    """Remove the zone rooted at PATH (its files stay as they are)."""
    from ..io.zones import delete_zone

    p = delete_zone(path, zones=zones_file)
    click.echo(f"deleted zone {p.path} (its files are unchanged)")

