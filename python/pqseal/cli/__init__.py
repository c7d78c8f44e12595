"""The ``pqseal`` command line: one module per command group (files, keys, demo,
bench) on the group of ``group.py``, which holds the exit-code contract."""

from __future__ import annotations

import json

import click

from .. import __version__
from .._backend import backend_info
from . import audit, bench, compact, demo, files, keys, zones
from .group import EXIT_CODES, Group


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"]},
             epilog=EXIT_CODES)
@click.version_option(__version__, prog_name="pqseal")
def main() -> None:
    """Parquet Modular Encryption with a native AES-GCM/CTR core."""


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def info(as_json: bool) -> None:
    """Show the cipher backend in use, library versions and CPU features."""
    data = backend_info()
    if as_json:
        click.echo(json.dumps(data, indent=2))
        return
    for k, v in data.items():
        click.echo(f"{k:16} {', '.join(v) if isinstance(v, list) else v}")


for _command in (demo.demo, files.encrypt, files.decrypt, files.rekey, files.verify, files.inspect, keys.keys,
                 keys.rotate, compact.compact, bench.bench, zones.zone, audit.audit):
    main.add_command(_command)
