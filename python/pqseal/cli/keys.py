"""``pqseal keys``: the local keystore; ``pqseal rotate``: re-wrap files' key material."""

from __future__ import annotations

import json

import click

from . import files
from . import jobs as J
from .kms import KmsChoice, properties


@click.command()
@click.argument("path", type=click.Path())
@click.option("--kms", metavar="URI", help="KMS of the master keys, a URI as for encrypt (keystore[:PATH], keylist, "
              "vault+https://..., 'pkcs11:...', aws-kms://REGION, file:X.toml).")
@click.option("--key-list", metavar="LIST", help="Master keys of the key-list KMS: 'id: base64, ...', env:NAME or "
              "file:PATH.")
@click.option("--property", "props", multiple=True, metavar="NAME=VALUE", help="KMS connection property.")
@click.option("--single-wrapping", is_flag=True, help="A single file: wrap data keys with the KMS directly (no "
              "KEKs); a directory is always double-wrapped (its workers make no KMS call).")
@files.jobs_option
@files.cluster_options(summaries=False)
def rotate(path, kms, key_list, props, single_wrapping, jobs, **o):
    """Re-wrap the data keys of file(s) under the current master key versions (after
    `pqseal keys rotate`); the data keys and data bytes stay the same. External key
    material is replaced beside the file; internal material (in the footer) by
    rewriting the footer alone, in place and crash-safe (a journal beside the file,
    restored by pqseal's next open). For a data key that may be exposed, use `pqseal
    rekey` (new data keys, full re-encryption).

    A directory runs as a dataset job: one KMS unwrap per distinct key-encryption key of
    the tree and one wrap per master key, on the driver; files without key material
    (plaintext, explicit keys) are listed and left alone."""
    from ..keys import CryptoFactory

    choice = KmsChoice(kms, key_list, properties(props))
    cluster = files.cluster_args(o)
    if J.tree_job(path):
        if single_wrapping:
            raise click.UsageError("--single-wrapping applies to a single file: a directory is rotated by a key "
                                   "session, which wraps data keys with KEKs (double wrapping)")

        def line(rep) -> str:
            return f"rotated the key material of {len(rep.ok)} files ({rep.kms_calls} KMS calls)"
        J.run_tree("rotate", path, None, cluster, "rotated", workers=jobs, line=line,
                   kms=choice.client_factory(), kms_connection_config=choice.connection())
        return
    J.refuse_cluster_options(cluster, "PATH is a file")
    factory, conn = CryptoFactory(choice.client_factory()), choice.connection()

    def one(src, _):
        from ..audit import file_operation

        n = file_operation("rotate-file", src,
                           lambda: factory.rotate_master_keys(conn, src, double_wrapping=not single_wrapping))
        click.echo(f"rotated {n} keys of {src}")
    J.run(J.plan(path, None), one, 1, "rotated")


@click.group()
def keys():
    """The local keystore (pqseal's embedded KMS): master keys with versions in the
    states active (wraps), decrypt-only, disabled (reversible) and destroyed; usage
    counts per version; passphrase change (passwd); sealed backups.

    Location: --keystore, $PQSEAL_KEYSTORE, or ~/.config/pqseal/keystore.json.
    Passphrase: $PQSEAL_KEYSTORE_PASSPHRASE, a file named by
    $PQSEAL_KEYSTORE_PASSPHRASE_FILE, or a prompt (never an argument)."""

ks_opt = click.option("--keystore", "path", metavar="PATH", help="Keystore file.")
kms_opt = click.option("--kms", "kms_uri", metavar="URI", help="Manage the keys of another KMS that allows it: "
                       "vault+https://HOST:8200/transit (token from $VAULT_TOKEN/$BAO_TOKEN), "
                       "'pkcs11:module=...;token=NAME' (PIN from $PQSEAL_PKCS11_PIN[_FILE]), aws-kms://REGION "
                       "(whole keys: no per-version states; destroy schedules a deletion), keystore:PATH.")


def _admin(path, kms_uri):
    """The key administration of --keystore PATH (default keystore) or --kms URI."""
    from ..kms.admin import KeyAdmin
    from ..kms.base import KmsConnectionConfig

    if path and kms_uri:
        raise click.UsageError("--keystore and --kms exclude each other")
    if kms_uri is None:
        from ..kms.keystore import LocalKeystore

        return KeyAdmin(LocalKeystore(path))
    from .kms import KmsChoice

    return KeyAdmin(KmsChoice(kms_uri, None, {}).client_factory()(KmsConnectionConfig()))


_COLUMNS = (("id", "<20"), ("version", ">7"), ("state", "<16"), ("created", "<25"), ("age", ">6"),
            ("wraps", ">7"), ("deks", ">7"), ("unwraps", ">7"), ("files", ">7"), ("bytes", ">8"),
            ("max_dek_modules", ">15"), ("first_use", "<25"), ("last_use", "<25"), ("flag", "<5"))


def _rows(admin, key_id, as_json):
    """The status of key versions: a table, or with ``as_json`` a JSON list of
    :class:`~pqseal.kms.admin.KeyVersionInfo` dicts."""
    from ..kms.limits import show_age, show_size

    rows = [r.as_dict() for r in admin.status(key_id)]
    if as_json:
        click.echo(json.dumps(rows))
        return
    shown = {"age": lambda r: None if r["age_seconds"] is None else show_age(r["age_seconds"]),
             "bytes": lambda r: None if r["bytes"] is None else show_size(r["bytes"])}
    click.echo(" ".join(f"{name:{fmt}}" for name, fmt in _COLUMNS).rstrip())
    for r in rows:
        cells = [shown[name](r) if name in shown else r[name] for name, _ in _COLUMNS]
        click.echo(" ".join(f"{'-' if c is None else c:{fmt}}" for c, (_, fmt) in zip(cells, _COLUMNS)).rstrip())
    for r in rows:
        for x in r["reached"]:
            click.echo(f"{x['mode']}: {r['id']} version {r['version']} reached {x['limit']}", err=True)


@keys.command("init")
@ks_opt
def keys_init(path):
    """Create an empty keystore (mode 0600)."""
    from ..kms.keystore import LocalKeystore

    try:
        ks = LocalKeystore.init(path)
    except FileExistsError:
        raise click.ClickException(f"a keystore already exists at {path or 'the default location'}") from None
    click.echo(f"created keystore {ks.path} ({_kdf_text(ks.kdf())})")


def _kdf_text(kdf: dict) -> str:
    n = int(kdf["n"])
    return f"{kdf['name']} N=2^{n.bit_length() - 1}, r={kdf['r']}, p={kdf['p']}"


@keys.command("create")
@ks_opt
@kms_opt
@click.argument("key_id")
@click.option("--bits", type=click.Choice(["128", "192", "256"]), default="256", show_default=True)
def keys_create(path, kms_uri, key_id, bits):
    """Create master key KEY_ID (version 1)."""
    admin = _admin(path, kms_uri)
    v = admin.create(key_id, int(bits))
    named = "" if admin.per_version else f" as alias/{key_id.removeprefix('alias/')}"
    click.echo(f"created master key {key_id}{named} (version {v}, {bits} bits)")

@keys.command("list")
@ks_opt
@kms_opt
@click.option("--json", "as_json", is_flag=True)
def keys_list(path, kms_uri, as_json):
    """List master keys and their versions (never key bytes)."""
    _rows(_admin(path, kms_uri), None, as_json)

@keys.command("status")
@ks_opt
@kms_opt
@click.argument("key_id", required=False)
@click.option("--json", "as_json", is_flag=True, help="A JSON list, one object per version with the keys id, "
              "version, state, bits, created, age_seconds, wraps, deks, unwraps, files, bytes, max_dek_modules, "
              "first_use, last_use, limits, reached, flag (null where the KMS does not say).")
def keys_status(path, kms_uri, key_id, as_json):
    """The versions of KEY_ID (or of every key, where the KMS can list them): state
    (active: wraps; decrypt-only; disabled; destroyed), created and age, and the usage
    the local keystore counts: wraps (KMS wrap calls), DEKs wrapped, unwraps, files and
    bytes sealed, the most modules one DEK encrypted (GCM allows 2^32 per DEK), first and
    last use. flag: WARN or LIMIT when a usage limit (`keys limits`) set to warn or to
    refuse is reached."""
    _rows(_admin(path, kms_uri), key_id, as_json)


@keys.command("limits")
@ks_opt
@click.argument("key_id", required=False)
@click.option("--default", "default", is_flag=True, help="Set the keystore's default (for keys without their own).")
@click.option("--max-age", metavar="AGE", help="Age of a version since its creation: 90d, 12h, 2w, 1y; 0: none.")
@click.option("--max-wraps", type=click.IntRange(min=0), metavar="N", help="DEKs a version may wrap; 0: none.")
@click.option("--max-bytes", metavar="SIZE", help="Bytes of files sealed with its DEKs: 500GB, 1TiB; 0: none.")
@click.option("--mode", type=click.Choice(["warn", "refuse"]), help="What a reached limit does (default: warn).")
def keys_limits(path, key_id, default, max_age, max_wraps, max_bytes, mode):
    """Show or set the usage limits of KEY_ID's versions (or with --default, of the whole
    keystore; a key's own settings win, field by field). warn: a warning (Python warning,
    one line on stderr) and an audit record; refuse: new wraps and seals fail with
    KeyUsageLimitExceeded. Limits apply to new wraps and seals with the active version:
    after `keys rotate` the new version starts from zero, and a decrypt-only version
    never refuses an unwrap (max-age on an unwrap only warns). Stored in the keystore
    (MAC-protected). Without options: print the limits."""
    from ..kms.limits import parse_age, parse_size

    if default == (key_id is not None):
        raise click.UsageError("name a KEY_ID or give --default")
    try:
        values = {"max_age": None if max_age is None else parse_age(max_age), "max_wraps": max_wraps,
                  "max_bytes": None if max_bytes is None else parse_size(max_bytes), "mode": mode}
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    ks = _keystore(path)
    what = "default" if default else f"master key {key_id}"
    if any(v is not None for v in values.values()):
        try:
            new = ks.limits(key_id).changed(**values)
        except ValueError as exc:
            raise click.UsageError(str(exc)) from None
        ks.set_limits(key_id, new)
    own = ks.limits(key_id).text()
    eff = "" if default else f"; in effect: {ks.effective_limits(key_id).text()}"
    click.echo(f"limits of {what}: {own}{eff}")

@keys.command("rotate")
@ks_opt
@kms_opt
@click.argument("key_id")
def keys_rotate(path, kms_uri, key_id):
    """New version of KEY_ID; older versions stay for unwrapping existing files."""
    v = _admin(path, kms_uri).rotate(key_id)
    click.echo(f"master key {key_id} is now at version {v}; earlier versions are decrypt-only")


def version_opt(required: bool):
    return click.option("--version", "version", type=click.IntRange(min=1), metavar="N",
                        help="Key version (required, except on AWS KMS, which acts on whole keys)." if required
                        else "Key version (default: every version).")


def _versioned(path, kms_uri, version):
    """The key administration, once --version is known to be given where versions have states."""
    admin = _admin(path, kms_uri)
    if version is None and admin.per_version:
        raise click.UsageError("name the key version: --version N")
    return admin


def _which(key_id, version) -> str:
    return f"master key {key_id}" if version is None else f"master key {key_id} version {version}"


@keys.command("disable")
@ks_opt
@kms_opt
@click.argument("key_id")
@version_opt(True)
def keys_disable(path, kms_uri, key_id, version):
    """Refuse unwraps (and wraps) with version N of KEY_ID until `keys enable`: files
    wrapped with it fail to open with KeyDisabled; nothing is erased."""
    _versioned(path, kms_uri, version).disable(key_id, version)
    click.echo(f"{_which(key_id, version)} is disabled")

@keys.command("enable")
@ks_opt
@kms_opt
@click.argument("key_id")
@version_opt(True)
def keys_enable(path, kms_uri, key_id, version):
    """Undo `keys disable`: the version is active again if it is the newest, else decrypt-only.
    On AWS KMS: enable the key, first cancelling its scheduled deletion (`keys destroy`)."""
    admin = _versioned(path, kms_uri, version)
    if not admin.per_version and admin.cancel_deletion(key_id):
        click.echo(f"cancelled the scheduled deletion of master key {key_id}")
    state = admin.enable(key_id, version)
    click.echo(f"{_which(key_id, version)} is {state}")

@keys.command("destroy")
@ks_opt
@kms_opt
@click.argument("key_id")
@version_opt(False)
@click.option("--yes", is_flag=True, help="Confirm: destroying is irreversible.")
@click.option("--pending-days", type=click.IntRange(7, 30), metavar="DAYS", help="AWS KMS: days before the key is "
              "deleted, 7 to 30 (default 30, AWS's); `keys enable` cancels until then.")
def keys_destroy(path, kms_uri, key_id, version, yes, pending_days):
    """Erase version N of KEY_ID (every version without --version) from the keystore and
    from the backups `keys backup` wrote: files wrapped with it can never be opened again.
    Copies pqseal did not write keep it sealed under the passphrase of their time: run
    `keys passwd` afterwards. On AWS KMS: schedule the key's deletion after --pending-days
    (AWS never deletes at once); until then every use of it fails and `keys enable`
    cancels the deletion."""
    from ..kms.admin import ScheduledDeletion

    if not yes:
        raise click.UsageError("destroying a key is irreversible: add --yes")
    rep = _admin(path, kms_uri).destroy(key_id, version, pending_days)
    if isinstance(rep, ScheduledDeletion):
        click.echo(f"master key {key_id} is scheduled for deletion on {rep.deletion_date} (in {rep.pending_days} "
                   f"days; every use fails from now on); cancel with: pqseal keys enable {key_id} --kms '{kms_uri}'")
        return
    click.echo(f"destroyed master key {key_id} version(s) {', '.join(map(str, rep.versions))}")
    for b in rep.backups_rewritten:
        click.echo(f"rewrote backup {b} without them")
    for b, why in rep.backups_skipped:
        click.echo(f"warning: backup {b} not rewritten: {why}", err=True)

def _keystore(path):
    from ..kms.keystore import LocalKeystore

    return LocalKeystore(path)

@keys.command("passwd")
@ks_opt
@click.option("--kdf-n", type=int, metavar="N", help="scrypt cost N, a power of two from 131072 (2^17, the "
              "default) to 1048576 (2^20).")
def keys_passwd(path, kdf_n):
    """Re-seal the keystore under a new passphrase (from $PQSEAL_KEYSTORE_NEW_PASSPHRASE,
    a file named by $PQSEAL_KEYSTORE_NEW_PASSPHRASE_FILE, or a prompt), in one atomic
    replacement; the old passphrase then fails. Also upgrades a store of format 1."""
    from ..kms.keystore import kdf_cost, passphrase_from_environment

    kdf_cost(kdf_n)    # a bad --kdf-n is refused before any passphrase is asked for
    ks = _keystore(path)
    new = passphrase_from_environment(confirm=True, variable="PQSEAL_KEYSTORE_NEW_PASSPHRASE")
    ks.passwd(new, kdf_n)
    click.echo(f"re-sealed keystore {ks.path} ({_kdf_text(ks.kdf())})")

@keys.command("backup")
@ks_opt
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--force", is_flag=True, help="Overwrite FILE.")
def keys_backup(path, file, force):
    """Write a sealed copy of the keystore to FILE (0600; same passphrase). `keys destroy`
    rewrites it while it stays at FILE."""
    target = _keystore(path).backup(file, overwrite=force)
    click.echo(f"wrote backup {target}")

@keys.command("restore")
@ks_opt
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--force", is_flag=True, help="Replace a keystore that is newer than FILE or another store.")
def keys_restore(path, file, force):
    """Replace the keystore by the backup FILE (atomically). Refused when FILE holds a
    key version the keystore has destroyed, and (unless --force) when the keystore is
    newer than FILE."""
    from ..kms.keystore import LocalKeystore

    ks = LocalKeystore.restore(file, path, force=force)
    click.echo(f"restored keystore {ks.path} from {file}")

@keys.command("policy")
@ks_opt
@click.option("--auto-create", "patterns", multiple=True, metavar="PATTERN", help="Create a missing master key "
              "matching this glob (e.g. 'tenant-*') when a wrap needs it. Repeatable; replaces the patterns.")
@click.option("--users", metavar="USER,...", help="OS users allowed to trigger that (default: any user who can open "
              "the keystore).")
@click.option("--bits", type=click.Choice(["128", "192", "256"]), show_default="256",
              help="Length of keys created on first use.")
@click.option("--clear", is_flag=True, help="Create no keys on first use (the default).")
def keys_policy(path, patterns, users, bits, clear):
    """Show or set which missing master keys a wrap creates (tenant keys on first use).
    Without options: show the policy. Only wraps create (never unwraps), each creation is
    audited (auto-create), and concurrent first writers end with one key. This guards
    against mistakes, not against a holder of the passphrase, who can change the policy."""
    from ..kms.creation import CreationPolicy

    ks = _keystore(path)
    if clear or patterns:
        if clear and (patterns or users or bits):
            raise click.UsageError("--clear excludes --auto-create, --users and --bits")
        if users is not None and not patterns:
            raise click.UsageError("--users goes with --auto-create")
        try:
            policy = CreationPolicy(tuple(patterns), tuple(u.strip() for u in (users or "").split(",") if u.strip()),
                                    int(bits or 256))
        except ValueError as exc:
            raise click.UsageError(str(exc)) from None
        ks.set_creation_policy(policy)
        for line in policy.cautions():
            click.echo(f"pqseal: warning: {line}", err=True)
    elif users is not None or bits:
        raise click.UsageError("--users and --bits go with --auto-create")
    p = ks.creation_policy()
    if not p.patterns:
        click.echo("no keys are created on first use (a missing master key is an error)")
        return
    who = ", ".join(p.users) if p.users else "any user who can open the keystore"
    click.echo(f"created on first use ({p.bits} bits): {', '.join(p.patterns)}; by: {who}")
