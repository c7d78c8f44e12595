"""``pqseal audit show|verify``: the audit log of the local keystore (``pqseal.audit``)."""

from __future__ import annotations

import datetime as _dt
import json

import click

from .group import fail


@click.group()
def audit():
    """The tamper-evident audit log of the local keystore's operations.

    Location: --log, $PQSEAL_AUDIT_LOG, or audit.log beside the keystore
    (PQSEAL_AUDIT_LOG=off turns logging off). Each record is chained to the previous one
    by an HMAC under a key kept in the keystore: `verify` detects an edited, removed,
    reordered or inserted record. Cutting records off the end is detected only against an
    anchor recorded earlier (--expect-count, --expect-head)."""


ks_opt = click.option("--keystore", "keystore", metavar="PATH", help="Keystore file (default: $PQSEAL_KEYSTORE "
                      "or ~/.config/pqseal/keystore.json).")
log_opt = click.option("--log", "log", metavar="PATH", help="Audit log file (default: beside the keystore).")


def _log_path(keystore: str | None, log: str | None) -> str:
    from ..audit import log_path
    from ..kms.keystore import default_path

    if log:
        return log
    path = log_path(keystore or default_path())
    if path is None:
        raise click.UsageError("audit logging is off (PQSEAL_AUDIT_LOG=off): name a log with --log")
    return path


def _since(value: str | None) -> _dt.datetime | None:
    if value is None:
        return None
    try:
        t = _dt.datetime.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(f"not an ISO 8601 time: {value!r}", param_hint="--since") from None
    return t if t.tzinfo else t.replace(tzinfo=_dt.timezone.utc)


@audit.command()
@ks_opt
@log_opt
@click.option("--json", "as_json", is_flag=True, help="Print the records as JSON lines.")
@click.option("--since", metavar="TIME", help="Only records at or after TIME (ISO 8601; UTC unless it says).")
@click.option("--key", "key_id", metavar="ID", help="Only records of this master key.")
def show(keystore, log, as_json, since, key_id):
    """Print the audit log's records (not verified: run `pqseal audit verify`)."""
    from ..audit import read

    path, start = _log_path(keystore, log), _since(since)
    for n, rec in read(path):
        if rec is None:
            click.echo(f"pqseal: warning: {path} line {n}: malformed record", err=True)
            continue
        if key_id is not None and rec["key"] != key_id:
            continue
        if start is not None:
            try:
                t = _dt.datetime.fromisoformat(str(rec["time"]))
                if (t if t.tzinfo else t.replace(tzinfo=_dt.timezone.utc)) < start:
                    continue
            except ValueError:
                click.echo(f"pqseal: warning: {path} line {n}: malformed time", err=True)
                continue
        if as_json:
            click.echo(json.dumps(rec))
            continue
        key = "" if rec["key"] is None else f"{rec['key']}" + ("" if rec["version"] is None else f":{rec['version']}")
        click.echo(f"{rec['seq']:>6} {rec['time']} {rec['user']}@{rec['host']}[{rec['pid']}] {rec['op']:<8} "
                   f"{key:<16} {rec['outcome']}" + (f" {rec['file']}" if rec["file"] else ""))


@audit.command()
@ks_opt
@log_opt
@click.option("--expect-count", type=click.IntRange(min=0), metavar="N",
              help="Fail unless at least N records are intact (an anchor from an earlier verify).")
@click.option("--expect-head", metavar="MAC", help="Fail unless this MAC (a head printed by an earlier verify) "
              "is in the intact chain.")
def verify(keystore, log, expect_count, expect_head):
    """Check the audit log's chain with the keystore's audit key (passphrase needed).

    Exit 0 when intact, printing the record count and head MAC: record them elsewhere to
    detect a later cut of the log's tail (--expect-count, --expect-head). Exit 1 naming
    the first broken line otherwise."""
    from ..audit import verify as verify_log
    from ..kms.keystore import LocalKeystore

    path = _log_path(keystore, log)
    result = verify_log(path, LocalKeystore(keystore).audit_key(), expect_count, expect_head)
    if not result.ok:
        fail(f"{path} line {result.bad_line}: {result.error}")
    click.echo(f"{path}: intact, {result.count} records, head {result.head}")
