"""The ``pqseal`` command line. Exit codes: 0 ok, 1 failure (bad input, tag mismatch), 2 usage."""

from __future__ import annotations

import json
import os
import sys

import click

from .. import __version__
from .._backend import backend_info
from ..errors import PqsealError


class _Group(click.Group):
    """Turns pqseal errors (and bad files/paths) into a one-line message and exit code 1."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except BrokenPipeError:
            # the reader went away (`pqseal inspect --json DIR | head`): stop quietly
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            sys.exit(0)
        except (PqsealError, OSError, ValueError) as exc:
            msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            click.echo(f"pqseal: error: {type(exc).__name__}: {msg}", err=True)
            sys.exit(1)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
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


from . import bench, demo, files, keys  # noqa: E402

for _command in (demo.demo, files.encrypt, files.decrypt, files.verify, files.inspect, keys.keys, keys.rotate,
                 bench.bench):
    main.add_command(_command)
