"""``pqseal demo``: cipher throughput on this machine and the main job on a throw-away keystore."""

from __future__ import annotations

import os
import time

import click

from .. import __version__
from .._backend import backend_info


@click.command()
@click.option("--mib", default=16, show_default=True, help="Plaintext MiB per batch.")
@click.option("--threads", default=1, show_default=True, help="Native threads per batch (0 = all cores).")
def demo(mib: int, threads: int) -> None:
    """Encrypt and decrypt batches of Parquet-like modules and print throughput."""
    import numpy as np

    from ..crypto import CtrModuleCipher, GcmModuleCipher, ModuleType
    from ..errors import InvalidTag

    info_ = backend_info()
    cpu = " ".join(f for f in info_["cpu_features"] if f in ("aesni", "vaes", "vpclmulqdq", "avx512f"))
    click.echo(f"pqseal {__version__}: backend {info_['backend']} "
               f"(OpenSSL: {info_['openssl_version']}; intel-ipsec-mb: {info_['ipsecmb_version'] or 'not built'}; "
               f"CPU: {cpu or 'n/a'})")
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
            # output buffers allocated once and reused, as the file engine does
            enc_out = np.empty(n * (size + cipher.overhead), dtype=np.uint8)
            dec_out = np.empty(n * size, dtype=np.uint8)
            t_enc = t_dec = float("inf")
            for _ in range(3):
                t0 = time.perf_counter()
                enc = cipher.encrypt_batch(data, offsets=offsets, lengths=lengths, out=enc_out,
                                           module_type=ModuleType.DATA_PAGE, row_group=0, column=1, page=pages,
                                           threads=threads)
                t1 = time.perf_counter()
                dec = cipher.decrypt_batch(enc_out, offsets=enc.offsets, lengths=enc.lengths, out=dec_out,
                                           module_type=ModuleType.DATA_PAGE, row_group=0, column=1, page=pages,
                                           threads=threads)
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
    """The main job on the embedded default: a throw-away local keystore, a sample table
    with sensitive columns sealed with column keys (GCM and CTR), inspect, pyarrow reading
    through the bridge, and a tampered copy rejected."""
    import secrets
    import tempfile

    try:
        import numpy as np
        import pyarrow as pa
        import pyarrow.parquet as pq
        import pyarrow.parquet.encryption as pe
    except ImportError:
        click.echo("(pyarrow not installed: skipping the file demo)")
        return
    from .. import api
    from ..arrow import crypto_factory
    from ..config import EncryptionConfig
    from ..format import VerificationFailed
    from ..keys import CryptoFactory
    from ..kms import KmsConnectionConfig
    from ..kms.keystore import LocalKeystore

    n = 2_000_000
    rng = np.random.default_rng(0)
    ids = np.arange(n)
    table = pa.table({"id": ids,
                      "ssn": pa.array(np.char.mod("%09d", rng.integers(0, 10**9, n)).astype(object), pa.string()),
                      "email": pa.array(np.char.add(np.char.mod("user%d", ids % 50_000), "@example.org").astype(object),
                                        pa.string()),
                      "amount": np.round(rng.random(n) * 1000, 2),
                      "region": pa.array(np.array(["eu", "us", "apac"])[ids % 3].astype(object), pa.string())})
    with tempfile.TemporaryDirectory(prefix="pqseal-demo-") as d:
        ks = LocalKeystore.init(os.path.join(d, "keystore.json"), secrets.token_bytes(16))
        for kid in ("footer-key", "pii-key", "finance-key"):
            ks.create(kid)
        click.echo(f"\nthrow-away keystore {ks.path}: master keys {', '.join(r['id'] for r in ks.list())}")
        plain, sealed, unsealed = (os.path.join(d, x) for x in ("plain.parquet", "sealed.parquet", "unsealed.parquet"))
        pq.write_table(table, plain, row_group_size=500_000)
        size = os.path.getsize(plain)
        click.echo(f"sample table: {n:,} rows, {size / 1e6:.1f} MB Parquet (snappy) written by pyarrow")
        factory = CryptoFactory(lambda cfg: ks)
        conn = KmsConnectionConfig()
        for alg in ("AES_GCM_V1", "AES_GCM_CTR_V1"):
            cfg = EncryptionConfig("footer-key", column_keys={"pii-key": ["ssn", "email"], "finance-key": ["amount"]},
                                   encryption_algorithm=alg)
            st = api.encrypt_file(plain, sealed, factory.file_encryption_properties(conn, cfg), fsync=False,
                                  overwrite=True)
            # pyarrow reads it back through the bridge, with the same keystore
            pa_factory = crypto_factory(lambda cfg: ks)
            t = pq.read_table(sealed, decryption_properties=pa_factory.file_decryption_properties(
                pe.KmsConnectionConfig(), pe.DecryptionConfiguration()))
            click.echo(f"  sealed with {alg:15} {st.seconds * 1000:7.1f} ms ({size / st.seconds / 1e9:5.2f} GB/s); "
                       f"pyarrow reads it through the bridge: {'same table' if t.equals(table) else 'MISMATCH'}")
        info = api.inspect(sealed)
        click.echo(f"  inspect (no keys): {info['algorithm']}, {info['footer']} footer, footer master key "
                   f"{info['footer_key_metadata']['masterKeyID']!r} "
                   f"({'double' if info['footer_key_metadata']['doubleWrapping'] else 'single'} wrapping)")
        full = api.inspect(sealed, factory.file_decryption_properties(conn))
        for c in full["columns"]:
            md = c.get("key_metadata") or {}
            click.echo(f"    {c['path']:<7} {c['encryption']:<11} {md.get('masterKeyID', '')}")
        dec = factory.file_decryption_properties(conn)
        st = api.decrypt_file(sealed, unsealed, dec, fsync=False)
        click.echo(f"  unsealed in {st.seconds * 1000:.1f} ms; same table: {pq.read_table(unsealed).equals(table)}")
        # tamper with one byte of a GCM-sealed copy
        cfg = EncryptionConfig("footer-key", uniform_encryption=True)
        api.encrypt_file(plain, sealed, factory.file_encryption_properties(conn, cfg), fsync=False, overwrite=True)
        with open(sealed, "rb") as f:
            data = bytearray(f.read())
        data[len(data) // 3] ^= 0x01
        with open(sealed, "wb") as f:
            f.write(data)
        try:
            api.verify(sealed, factory.file_decryption_properties(conn))
            raise click.ClickException("tampering was not detected")
        except VerificationFailed as exc:
            click.echo(f"  tampered copy rejected: {exc}")
