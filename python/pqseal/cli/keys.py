"""``pqseal keys``: the local keystore; ``pqseal rotate``: re-wrap external key material."""

from __future__ import annotations

import json

import click

from . import jobs as J
from .kms import KmsChoice, properties


@click.command()
@click.argument("path", type=click.Path())
@click.option("--kms", metavar="keystore[:PATH]|keylist", help="KMS of the master keys (as for encrypt).")
@click.option("--key-list", metavar="LIST", help="Master keys of the key-list KMS: 'id: base64, ...', env:NAME or "
              "file:PATH.")
@click.option("--property", "props", multiple=True, metavar="NAME=VALUE", help="KMS connection property.")
@click.option("--single-wrapping", is_flag=True, help="Wrap data keys with the KMS directly (no KEKs).")
def rotate(path, kms, key_list, props, single_wrapping):
    """Re-wrap the keys of file(s) with external key material under the current master
    key versions (after `pqseal keys rotate`); the Parquet data is not touched."""
    from ..keys import CryptoFactory

    choice = KmsChoice(kms, key_list, properties(props))
    factory, conn = CryptoFactory(choice.client_factory()), choice.connection()

    def one(src, _):
        n = factory.rotate_master_keys(conn, src, double_wrapping=not single_wrapping)
        click.echo(f"rotated {n} keys of {src}")
    J.run(J.plan(path, None), one, 1, "rotated")


@click.group()
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
    from ..kms.keystore import LocalKeystore

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
    from ..kms.keystore import LocalKeystore

    LocalKeystore(path).create(key_id, int(bits))
    click.echo(f"created master key {key_id} (version 1, {bits} bits)")

@keys.command("list")
@ks_opt
@click.option("--json", "as_json", is_flag=True)
def keys_list(path, as_json):
    """List master keys and their versions (never key bytes)."""
    from ..kms.keystore import LocalKeystore

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
    from ..kms.keystore import LocalKeystore

    v = LocalKeystore(path).rotate(key_id)
    click.echo(f"master key {key_id} is now at version {v}; earlier versions are decrypt-only")
