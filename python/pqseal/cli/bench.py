"""``pqseal bench``: measuring tools (see benchmarks/README.md)."""

from __future__ import annotations

import sys

import click


@click.group()
def bench() -> None:
    """Benchmarks (see benchmarks/README.md)."""


@bench.command("cipher", context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.pass_context
def bench_cipher(ctx) -> None:
    """Cipher throughput: pqseal GCM/CTR per backend vs cryptography (options: --help)."""
    from ..bench.cipher import main as run

    sys.exit(run(list(ctx.args)) or 0)


@bench.command("seal", context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.pass_context
def bench_seal(ctx) -> None:
    """Seal/unseal/verify a ~1 GiB file: pqseal vs the pyarrow route (options: --help)."""
    from ..bench.seal import main as run

    sys.exit(run(list(ctx.args)) or 0)
