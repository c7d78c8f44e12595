"""The ``pqseal`` command line. Exit codes: 0 ok, 1 failure (bad input, tag mismatch), 2 usage."""

from __future__ import annotations

import json
import os
import sys
import time

import click

from . import __version__
from ._backend import backend_info
from .errors import PqsealError


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


@main.command()
@click.option("--mib", default=16, show_default=True, help="Plaintext MiB per batch.")
@click.option("--threads", default=1, show_default=True, help="Native threads per batch (0 = all cores).")
def demo(mib: int, threads: int) -> None:
    """Encrypt and decrypt batches of Parquet-like modules and print throughput."""
    import numpy as np

    from .crypto import CtrModuleCipher, GcmModuleCipher, ModuleType
    from .errors import InvalidTag

    info_ = backend_info()
    click.echo(f"pqseal {__version__}: backend {info_['backend']} "
               f"(OpenSSL: {info_['openssl_version']}; intel-ipsec-mb: {info_['ipsecmb_version'] or 'not built'}; "
               f"CPU: {' '.join(f for f in info_['cpu_features'] if f in ('aesni', 'vaes', 'vpclmulqdq', 'avx512f')) or 'n/a'})")
    rng = np.random.default_rng()
    file_aad = os.urandom(8)
    click.echo(f"{'modules':>18} {'algorithm':>10} {'encrypt GB/s':>13} {'decrypt GB/s':>13} {'modules/s':>12}")
    for size in (1 << 20, 16 << 10, 1 << 10):
        n = max(1, (mib << 20) // size)
        data = rng.integers(0, 256, n * size, dtype=np.uint8)
        offsets = np.arange(n, dtype=np.int64) * size
        lengths = np.full(n, size, dtype=np.int64)
        pages = np.arange(n, dtype=np.int64) % 32768
        for name, cipher in (("AES_GCM", GcmModuleCipher(os.urandom(16), file_aad)),
                             ("AES_CTR", CtrModuleCipher(os.urandom(16)))):
            kw = dict(module_type=ModuleType.DATA_PAGE, row_group=0, column=1, page=pages, threads=threads)
            # output buffers allocated once and reused, as the file engine does
            enc_out = np.empty(n * (size + cipher.overhead), dtype=np.uint8)
            dec_out = np.empty(n * size, dtype=np.uint8)
            t_enc = t_dec = float("inf")
            for _ in range(3):
                t0 = time.perf_counter()
                enc = cipher.encrypt_batch(data, offsets=offsets, lengths=lengths, out=enc_out, **kw)
                t1 = time.perf_counter()
                dec = cipher.decrypt_batch(enc_out, offsets=enc.offsets, lengths=enc.lengths, out=dec_out, **kw)
                t2 = time.perf_counter()
                t_enc, t_dec = min(t_enc, t1 - t0), min(t_dec, t2 - t1)
            if not np.array_equal(dec.buffer, data):
                raise click.ClickException("round trip mismatch")
            click.echo(f"{n:>7} x {size:>8} B {name:>10} {n * size / t_enc / 1e9:>13.2f} "
                       f"{n * size / t_dec / 1e9:>13.2f} {n / t_enc:>12,.0f}")
    # integrity: flip one ciphertext bit of one GCM module and show the rejection
    cipher = GcmModuleCipher(os.urandom(16), file_aad)
    enc = cipher.encrypt_batch([b"page %d" % i for i in range(8)], page=np.arange(8))
    tampered = enc.buffer.copy()
    tampered[int(enc.offsets[5]) + 20] ^= 1
    try:
        cipher.decrypt_batch(tampered, offsets=enc.offsets, lengths=enc.lengths, page=np.arange(8))
    except InvalidTag as exc:
        click.echo(f"tampered module rejected: {exc}")
    else:
        raise click.ClickException("tampering was not detected")
    _demo_file()


def _demo_file() -> None:
    """Seal a sample Parquet file (explicit random keys), read it with pyarrow, tamper, verify."""
    import tempfile

    try:
        import numpy as np
        import pyarrow as pa
        import pyarrow.parquet as pq
        import pyarrow.parquet.encryption as pe
    except ImportError:
        click.echo("(pyarrow not installed: skipping the file demo)")
        return
    from . import api
    from .format import DecryptionProperties, EncryptionProperties, VerificationFailed

    n = 2_000_000
    rng = np.random.default_rng(0)
    table = pa.table({"id": np.arange(n), "ssn": pa.array([f"{i % 1000:03d}-{i % 100:02d}-{i % 10000:04d}"
                                                          for i in range(n)]),
                      "amount": rng.random(n) * 1000, "region": pa.array(["eu", "us", "apac"] * (n // 3) + ["eu"] * (n % 3))})
    footer_key, ssn_key = os.urandom(16), os.urandom(32)
    with tempfile.TemporaryDirectory(prefix="pqseal-demo-") as d:
        plain, sealed, unsealed = (os.path.join(d, x) for x in ("plain.parquet", "sealed.parquet", "unsealed.parquet"))
        pq.write_table(table, plain, row_group_size=500_000)
        click.echo(f"\nfile demo: {n:,} rows, {os.path.getsize(plain) / 1e6:.1f} MB plaintext Parquet written by pyarrow")
        for alg in ("AES_GCM_V1", "AES_GCM_CTR_V1"):
            st = api.encrypt_file(plain, sealed, EncryptionProperties(footer_key, algorithm=alg), fsync=False)
            t = pq.read_table(sealed, decryption_properties=pe.create_decryption_properties(footer_key))
            click.echo(f"  sealed {alg:15} uniform key: {st.bytes_in / st.seconds / 1e9:5.2f} GB/s; "
                       f"pyarrow reads it back: {'same table' if t.equals(table) else 'MISMATCH'}")
        enc = EncryptionProperties(footer_key, column_keys={"ssn": ssn_key, "amount": (footer_key, None)},
                                   algorithm="AES_GCM_CTR_V1", plaintext_footer=True)
        api.encrypt_file(plain, sealed, enc, fsync=False)
        info = api.inspect(sealed)
        click.echo(f"  inspect (no keys): {info['algorithm']}, {info['footer']} footer; " +
                   ", ".join(f"{c['path']}={c['encryption']}" for c in info["columns"]))
        dec = DecryptionProperties(footer_key, column_keys={"ssn": ssn_key})
        st = api.decrypt_file(sealed, unsealed, dec, fsync=False)
        click.echo(f"  unsealed: {st.bytes_in / st.seconds / 1e9:.2f} GB/s; pyarrow reads the same table: "
                   f"{pq.read_table(unsealed).equals(table)}")
        # tamper with one byte of a uniformly GCM-sealed copy and verify it
        api.encrypt_file(plain, sealed, EncryptionProperties(footer_key), fsync=False)
        data = bytearray(open(sealed, "rb").read())
        data[len(data) // 3] ^= 0x01
        with open(sealed, "wb") as f:
            f.write(data)
        try:
            api.verify(sealed, DecryptionProperties(footer_key))
            raise click.ClickException("tampering was not detected")
        except VerificationFailed as exc:
            click.echo(f"  tampered copy rejected: {exc}")


from .cli_files import register as _register_file_commands  # noqa: E402

_register_file_commands(main)


@main.group()
def bench() -> None:
    """Benchmarks (see benchmarks/README.md)."""


@bench.command("cipher", context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.pass_context
def bench_cipher(ctx) -> None:
    """Cipher throughput: pqseal GCM/CTR per backend vs cryptography (options: --help)."""
    from .bench.cipher import main as run

    sys.exit(run(list(ctx.args)) or 0)


@bench.command("seal", context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.pass_context
def bench_seal(ctx) -> None:
    """Seal/unseal/verify a ~1 GiB file: pqseal vs the pyarrow route (options: --help)."""
    from .bench.seal import main as run

    sys.exit(run(list(ctx.args)) or 0)


if __name__ == "__main__":  # pragma: no cover
    main()
