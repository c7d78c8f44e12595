"""Cipher throughput of pqseal's batch module ciphers, with the ``cryptography`` peer, in one run.

Measured side by side (AES-128 and AES-256, plaintext bytes per second):

* ``pqseal``: :class:`~pqseal.crypto.GcmModuleCipher` and :class:`~pqseal.crypto.CtrModuleCipher`
  on every available backend through the fast path (one contiguous input buffer with
  offsets/lengths, one preallocated output buffer), 1 and 2 native threads;
* ``cryptography``: ``AESGCM(key).encrypt(os.urandom(12), module, aad)`` per module and
  ``Cipher(AES(key), CTR(os.urandom(12) + 00000001)).encryptor().update_into(...)`` per
  module, called from Python, one thread (what a pure-Python PME writer would do).

Each module size gets a batch of ~8 MiB of random plaintext (capped at 65536 modules)
laid out contiguously, with the output preallocated once, so input plus output stay
around 16 MiB (in L3). Every configuration is warmed up, then called repeatedly for
``--round-time`` seconds per round; the median of ``--rounds`` rounds is reported.

This module only measures. The repository's ``benchmarks/bench_cipher.py`` adds the
out-of-process anchors (a raw intel-ipsec-mb C loop, ``openssl speed``) and the project's
target ratios. Run ``pqseal bench cipher --help`` (or ``python -m pqseal.bench.cipher``).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import re
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

KiB = 1 << 10
MiB = 1 << 20

DEFAULT_SIZES = (64, KiB, 16 * KiB, 256 * KiB, MiB, 4 * MiB)
QUICK_SIZES = (64, 16 * KiB, MiB)
BATCH_BYTES = 8 * MiB        # plaintext per batch; with the output the working set is ~16 MiB
MAX_MODULES = 65536          # cap for small modules, keeps the Python-side setup cheap
PEER_CHUNK_BYTES = 256 * KiB  # the Python peers check the clock after about this much work
OVERHEAD = {"gcm": 32, "ctr": 16}  # len(4) + nonce(12) [+ tag(16)]
ALGORITHMS = ("gcm", "ctr")
KEY_BITS = (128, 256)
IMPLS = ("pqseal", "cryptography")
FILE_AAD_LEN = 8             # file AAD given to pqseal; the module AAD adds 7 bytes (type + ordinals)


@dataclass
class Result:
    impl: str
    backend: str
    algorithm: str
    key_bits: int
    module_bytes: int
    threads: int
    modules_per_s: float
    gb_per_s: float
    modules_per_batch: int | None = None
    rounds: int | None = None
    gb_per_s_min: float | None = None
    gb_per_s_max: float | None = None
    cpu_util: float | None = None  # process CPU time / wall time over the rounds (cores really used)
    note: str | None = None

    def to_json(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v is not None}


# ---- workload ------------------------------------------------------------------------------


class Workload:
    """One module size: ``n`` modules of random plaintext back to back in ``inp``, an
    output buffer with room for the largest overhead, and the offset arrays."""

    def __init__(self, module_bytes: int, batch_bytes: int = BATCH_BYTES, max_modules: int = MAX_MODULES):
        self.size = int(module_bytes)
        self.n = max(1, min(max_modules, batch_bytes // self.size))
        total = self.n * self.size
        self.inp = np.frombuffer(bytearray(os.urandom(total)), dtype=np.uint8)
        self.offsets = np.arange(self.n, dtype=np.int64) * self.size
        self.lengths = np.full(self.n, self.size, dtype=np.int64)
        self.out = np.empty(self.n * (self.size + max(OVERHEAD.values())), dtype=np.uint8)
        self.out.fill(0)  # fault the pages in now, not during the first timed call
        self.out_offsets = {alg: np.arange(self.n, dtype=np.int64) * (self.size + ov)
                            for alg, ov in OVERHEAD.items()}

    @property
    def nbytes(self) -> int:
        return self.n * self.size

    def module(self, i: int) -> memoryview:
        return self.inp.data[i * self.size:(i + 1) * self.size]

    def framed(self, alg: str, i: int) -> memoryview:
        o = int(self.out_offsets[alg][i])
        return self.out.data[o:o + self.size + OVERHEAD[alg]]


def pqseal_cipher(alg: str, backend: str, key: bytes, file_aad: bytes):
    from ..crypto import CtrModuleCipher, GcmModuleCipher
    if alg == "gcm":
        return GcmModuleCipher(key, file_aad, backend=backend)
    return CtrModuleCipher(key, backend=backend)


def pqseal_runner(w: Workload, cipher, threads: int) -> Callable[[], int]:
    """One call = the whole batch through the fast path; returns the modules done."""
    enc = cipher.encrypt_batch
    inp, offs, lens, out = w.inp, w.offsets, w.lengths, w.out
    out_offs = w.out_offsets[cipher.algorithm]
    n = w.n

    def run() -> int:
        enc(inp, offsets=offs, lengths=lens, threads=threads, out=out, out_offsets=out_offs)
        return n
    return run


def module_aad_for(file_aad: bytes) -> bytes:
    """The AAD pqseal uses for the batch (data page, ordinals 0): file AAD + 7 bytes."""
    from ..crypto import ModuleType, module_aad
    return module_aad(file_aad, ModuleType.DATA_PAGE, 0, 0, 0)


def peer_runner(w: Workload, alg: str, key: bytes, aad: bytes, chunk_modules: int | None = None
                ) -> Callable[[], int]:
    """``cryptography`` called per module from Python with a fresh ``os.urandom(12)`` nonce.
    One call processes ``chunk_modules`` modules (cycling through the batch), or the whole
    batch when None; returns the modules done."""
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    size = w.size
    mv_in, mv_out = w.inp.data, w.out.data
    out_offs = w.out_offsets[alg]
    k = w.n if chunk_modules is None else max(1, min(w.n, chunk_modules))
    urandom = os.urandom
    chunks: list[list]  # of modules (GCM) or of (module, output) pairs (CTR)

    if alg == "gcm":
        ins = [mv_in[i * size:(i + 1) * size] for i in range(w.n)]
        chunks = [ins[i:i + k] for i in range(0, w.n, k)]
        encrypt = AESGCM(key).encrypt

        def work(chunk) -> int:
            for m in chunk:
                encrypt(urandom(12), m, aad)
            return len(chunk)
    else:
        pairs = [(mv_in[i * size:(i + 1) * size], mv_out[int(o):int(o) + size + 16])
                 for i, o in enumerate(out_offs)]
        chunks = [pairs[i:i + k] for i in range(0, w.n, k)]
        aes = algorithms.AES(key)
        ctr = modes.CTR
        one = b"\0\0\0\1"

        def work(chunk) -> int:
            for m, o in chunk:
                Cipher(aes, ctr(urandom(12) + one)).encryptor().update_into(m, o)
            return len(chunk)

    if len(chunks) == 1:
        only = chunks[0]
        return lambda: work(only)
    state = [0]

    def run() -> int:
        i = state[0]
        state[0] = (i + 1) % len(chunks)
        return work(chunks[i])
    return run


def verify(w: Workload, alg: str, key: bytes, aad: bytes) -> str | None:
    """Check that module 0 of the output decrypts to module 0 of the input (so the
    benchmark measured real work); returns an error text or None."""
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    framed = bytes(w.framed(alg, 0))
    plain = bytes(w.module(0))
    length = int.from_bytes(framed[:4], "little")
    if length != len(framed) - 4:
        return f"length prefix {length} != {len(framed) - 4}"
    nonce, body = framed[4:16], framed[16:]
    try:
        if alg == "gcm":
            got = AESGCM(key).decrypt(nonce, body, aad)
        else:
            d = Cipher(algorithms.AES(key), modes.CTR(nonce + b"\0\0\0\1")).decryptor()
            got = d.update(body) + d.finalize()
    except Exception as exc:  # noqa: BLE001 - reported, not raised
        return f"module 0 does not decrypt: {type(exc).__name__}"
    return None if got == plain else "module 0 decrypts to different plaintext"


# ---- timing --------------------------------------------------------------------------------


def time_interleaved(runs: Sequence[Callable[[], int]], *, rounds: int, round_time: float,
                     warmup: float) -> list[tuple[list[float], float]]:
    """Time several configurations round-robin, so that they see the same machine load
    (this is a shared machine): each is warmed up for ``warmup`` seconds (at least one
    call), then round ``r`` of every configuration runs before round ``r + 1`` of any.
    A round calls ``run`` (which returns the modules it did) until ``round_time`` has
    passed, at least once. Returns, per configuration, the modules per second of each
    round and the process CPU time / wall time over its rounds (about 2.0 when two
    native threads really ran in parallel)."""
    clock, cpu_clock = time.perf_counter, time.process_time
    for run in runs:
        end = clock() + warmup
        run()
        while clock() < end:
            run()
    rates: list[list[float]] = [[] for _ in runs]
    wall = [0.0] * len(runs)
    cpu = [0.0] * len(runs)
    gc_was = gc.isenabled()
    gc.disable()
    try:
        for _ in range(rounds):
            for k, run in enumerate(runs):
                done = 0
                c0 = cpu_clock()
                t0 = clock()
                deadline = t0 + round_time
                while True:
                    done += run()
                    t = clock()
                    if t >= deadline:
                        break
                cpu[k] += cpu_clock() - c0
                wall[k] += t - t0
                rates[k].append(done / (t - t0))
    finally:
        if gc_was:
            gc.enable()
    return [(r, c / w if w > 0 else 0.0) for r, c, w in zip(rates, cpu, wall)]


def summarize(impl, backend, alg, key_bits, size, threads, rates, n, cpu_util=None, note=None) -> Result:
    med = statistics.median(rates)
    gb = lambda r: r * size / 1e9  # noqa: E731
    return Result(impl, backend, alg, key_bits, size, threads, med, gb(med), n, len(rates),
                  gb(min(rates)), gb(max(rates)), None if cpu_util is None else round(cpu_util, 3), note)



# ---- reporting -----------------------------------------------------------------------------


def fmt_size(n: int) -> str:
    for unit, div in (("MiB", MiB), ("KiB", KiB)):
        if n >= div and n % div == 0:
            return f"{n // div} {unit}"
    return f"{n} B"


def fmt_rate(x: float) -> str:
    for unit, div in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if x >= div:
            return f"{x / div:.3g}{unit}"
    return f"{x:.3g}"


def parse_size(text: str) -> int:
    m = re.fullmatch(r"\s*([0-9]+)\s*(b|k|kb|kib|m|mb|mib)?\s*", text, re.I)
    if not m:
        raise argparse.ArgumentTypeError(f"bad size {text!r} (e.g. 64, 1K, 16KiB, 1M)")
    mult = {"": 1, "b": 1, "k": KiB, "kb": KiB, "kib": KiB, "m": MiB, "mb": MiB, "mib": MiB}
    v = int(m.group(1)) * mult[(m.group(2) or "").lower()]
    if v <= 0:
        raise argparse.ArgumentTypeError("module size must be positive")
    return v



def _impl_order(r: Result) -> tuple:
    """pqseal, then cryptography, then results measured elsewhere (anchors), by name."""
    rank = IMPLS.index(r.impl) if r.impl in IMPLS else len(IMPLS)
    return (rank, r.impl, r.backend, r.algorithm, r.key_bits, r.threads, r.module_bytes)


def print_table(results: Sequence[Result], file=sys.stdout) -> None:
    head = ("impl", "backend", "alg", "key", "module", "thr", "modules/s", "GB/s", "spread", "cpu")
    rows: list[tuple[str, ...] | None] = []
    prev = None
    for r in sorted(results, key=_impl_order):
        group = (r.impl, r.backend, r.algorithm, r.key_bits, r.threads)
        if prev is not None and group != prev:
            rows.append(None)
        prev = group
        spread = ""
        if r.gb_per_s_min is not None and r.gb_per_s_max is not None and r.gb_per_s > 0:
            spread = f"±{50 * (r.gb_per_s_max - r.gb_per_s_min) / r.gb_per_s:.0f}%"
        rows.append((r.impl, r.backend, r.algorithm, str(r.key_bits), fmt_size(r.module_bytes),
                     str(r.threads), fmt_rate(r.modules_per_s), f"{r.gb_per_s:.3f}", spread,
                     "" if r.cpu_util is None else f"{r.cpu_util:.2f}"))
    widths = [max(len(h), *(len(row[i]) for row in rows if row)) for i, h in enumerate(head)]
    right = {3, 4, 5, 6, 7, 8, 9}

    def line(cells):
        return "  ".join(c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths)))
    print(line(head), file=file)
    print("  ".join("-" * w for w in widths), file=file)
    for row in rows:
        print("" if row is None else line(row), file=file)




def write_plot(results: Sequence[Result], path: str) -> str | None:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed (pip install matplotlib)"
    rs = [r for r in results if r.key_bits == 128]
    fig, ax = plt.subplots(figsize=(10, 6.5))
    colors: dict[tuple, str] = {}
    palette = plt.rcParams["axes.prop_cycle"].by_key()["color"] + ["#444444", "#aa7700", "#007777"]
    groups: dict[tuple, list[Result]] = {}
    for r in sorted(rs, key=_impl_order):
        groups.setdefault((r.impl, r.backend, r.algorithm, r.threads), []).append(r)
    markers: dict[str, str] = {}   # results measured elsewhere (anchors): one marker shape each
    for (impl, backend, alg, threads), pts in groups.items():
        ident = (impl, backend, alg)
        color = colors.setdefault(ident, palette[len(colors) % len(palette)])
        xs = [p.module_bytes for p in pts]
        ys = [p.gb_per_s for p in pts]
        label = f"{impl} {backend} {alg.upper()}" + (f" {threads} threads" if threads > 1 else "")
        if impl not in IMPLS:
            marker = markers.setdefault(impl, "*DsP^"[len(markers) % 5])
            ax.plot(xs, ys, linestyle="none", marker=marker, markersize=11, color=color, label=label)
        else:
            ax.plot(xs, ys, linestyle="--" if threads > 1 else "-", marker="o", markersize=4, color=color,
                    label=label)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    sizes = sorted({r.module_bytes for r in rs})
    ax.set_xticks(sizes)
    ax.set_xticklabels([fmt_size(s) for s in sizes])
    ax.set_xlabel("module size (plaintext)")
    ax.set_ylabel("throughput, GB/s of plaintext (log)")
    ax.set_title("pqseal cipher throughput, AES-128 (solid: 1 thread, dashed: 2 threads)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return None


def environment() -> dict:
    import pqseal
    info = dict(pqseal.backend_info())
    env = {"pqseal": pqseal.__version__, "python": platform.python_version(), "machine": platform.machine(),
           "cpus": os.cpu_count(), "available": info.get("available"),
           "openssl_version": info.get("openssl_version"), "ipsecmb_version": info.get("ipsecmb_version"),
           "ipsecmb_arch": info.get("ipsecmb_arch"), "cpu_features": info.get("cpu_features")}
    try:
        import cryptography
        from cryptography.hazmat.backends.openssl import backend as _ossl
        env["cryptography"] = f"{cryptography.__version__} ({_ossl.openssl_version_text()})"
    except Exception:  # noqa: BLE001
        env["cryptography"] = None
    try:
        with open("/proc/cpuinfo") as fh:
            for ln in fh:
                if ln.startswith("model name"):
                    env["cpu"] = ln.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return env


def _loadavg() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "?"


# ---- main ----------------------------------------------------------------------------------


def _csv(choices: Sequence[object] | None, conv: Callable[[str], object] = str):
    def parse(text: str):
        vals = [conv(t.strip()) for t in text.split(",") if t.strip()]
        if choices is not None:
            bad = [v for v in vals if v not in choices]
            if bad:
                raise argparse.ArgumentTypeError(f"unknown {bad}; choose from {', '.join(map(str, choices))}")
        if not vals:
            raise argparse.ArgumentTypeError("empty list")
        return vals
    return parse


def _positive_int(text: str) -> int:
    v = int(text)
    if v < 1:
        raise argparse.ArgumentTypeError(f"{v} is not a positive integer")
    return v



def build_parser(prog: str | None = None, impls: Sequence[str] = IMPLS) -> argparse.ArgumentParser:
    """The measuring options; ``impls`` lets a caller that adds its own measurements
    (benchmarks/bench_cipher.py) accept their names in ``--impl``."""
    p = argparse.ArgumentParser(
        prog=prog, description="Measure pqseal's batch GCM/CTR ciphers on every backend, side by side "
        "with the cryptography package called per module from Python.",
        epilog="Sizes take B/K/KiB/M/MiB suffixes. Table: 'spread' is half the min-max range of the "
        "rounds relative to the median; 'cpu' is process CPU time / wall time (about 2 when two "
        "native threads really ran in parallel).")
    p.add_argument("--quick", action="store_true",
                   help=f"sizes {', '.join(fmt_size(s) for s in QUICK_SIZES)}, 3 short rounds (< 30 s)")
    p.add_argument("--backend", type=_csv(("ipsecmb", "openssl")), default=None, metavar="LIST",
                   help="pqseal backends (comma-separated); default: all available")
    p.add_argument("--algorithm", type=_csv(ALGORITHMS), default=list(ALGORITHMS), metavar="LIST",
                   help="algorithms: gcm, ctr (default: both)")
    p.add_argument("--sizes", type=_csv(None, parse_size), default=None, metavar="LIST",
                   help="module sizes, e.g. 64,1K,16K,256K,1M,4M; default: "
                   + ",".join(fmt_size(s).replace(" ", "") for s in DEFAULT_SIZES))
    p.add_argument("--threads", type=_csv(None, _positive_int), default=[1, 2], metavar="LIST",
                   help="native threads for pqseal (default: 1,2); the peer runs 1 thread, only if 1 is listed")
    p.add_argument("--key-bits", type=_csv((128, 192, 256), int), default=list(KEY_BITS), metavar="LIST",
                   help="AES key sizes (default: 128,256)")
    p.add_argument("--impl", type=_csv(tuple(impls)), default=list(impls), metavar="LIST",
                   help="implementations to run (default: all): " + ", ".join(impls))
    p.add_argument("--rounds", type=_positive_int, default=None,
                   help="timed rounds per configuration (default 5, quick 3)")
    p.add_argument("--round-time", type=float, default=None,
                   help="seconds per round (default 0.2, quick 0.05)")
    p.add_argument("--batch-bytes", type=parse_size, default=BATCH_BYTES,
                   help="plaintext per batch; the output adds as much again (default: 8M)")
    p.add_argument("--max-modules", type=_positive_int, default=MAX_MODULES,
                   help=f"cap on modules per batch (default: {MAX_MODULES})")
    p.add_argument("--plot", metavar="PATH", default="bench-out/cipher.png",
                   help="PNG to write (default: bench-out/cipher.png)")
    p.add_argument("--no-plot", action="store_true", help="do not write the PNG")
    p.add_argument("--json", action="store_true",
                   help="print one JSON object per measurement (stdout) instead of the table")
    p.add_argument("-v", "--verbose", action="store_true", help="print each measurement to stderr as it is made")
    return p


def run(args: argparse.Namespace, measured_elsewhere: Sequence[Result] = ()) -> list[Result]:
    """Measure what ``args`` asks for (``build_parser``), print the header, the table (or JSON
    lines), warnings and the plot; ``measured_elsewhere`` (e.g. anchors) joins the table,
    the JSON lines and the plot. Returns every result."""
    import pqseal

    t_start = time.perf_counter()
    rounds = args.rounds or (3 if args.quick else 5)
    round_time = args.round_time or (0.05 if args.quick else 0.2)
    warmup = min(0.05, round_time / 2) if not args.quick else 0.02
    sizes = args.sizes or list(QUICK_SIZES if args.quick else DEFAULT_SIZES)
    available = pqseal.available_backends()
    backends = [b for b in (args.backend or available) if b in available]
    skipped_backends = [b for b in (args.backend or []) if b not in available]
    impls = set(args.impl)
    info = sys.stderr if args.json else sys.stdout
    err = sys.stderr
    results: list[Result] = []
    warnings: list[str] = []

    def emit(r: Result) -> None:
        results.append(r)
        if args.json:
            try:
                print(json.dumps(r.to_json()), flush=True)
            except BrokenPipeError:  # e.g. piped into `head`: keep measuring, stop printing
                sys.stdout = open(os.devnull, "w")
        if args.verbose:
            print(f"  {r.impl} {r.backend} {r.algorithm}-{r.key_bits} {fmt_size(r.module_bytes)} "
                  f"x{r.threads}: {r.gb_per_s:.3f} GB/s, {fmt_rate(r.modules_per_s)} modules/s", file=err, flush=True)

    env = environment()
    print(f"pqseal {env['pqseal']} cipher benchmark  (python {env['python']}, {env.get('cpu', env['machine'])}, "
          f"{env['cpus']} CPUs)", file=info)
    print(f"  backends: {', '.join(available)}  |  system OpenSSL: {env['openssl_version']}  |  intel-ipsec-mb: "
          f"{env['ipsecmb_version']} ({env['ipsecmb_arch']})  |  cryptography: {env['cryptography']}", file=info)
    print(f"  {rounds} rounds x {round_time:g} s per configuration, median reported; batch ~"
          f"{fmt_size(args.batch_bytes)} plaintext (<= {args.max_modules} modules); load average {_loadavg()}",
          file=info)
    if skipped_backends:
        warnings.append(f"backend(s) not available here: {', '.join(skipped_backends)}")
    info.flush()
    for r in measured_elsewhere:
        emit(r)

    run_peer = "cryptography" in impls and 1 in args.threads
    if run_peer:
        try:
            import cryptography  # noqa: F401
        except ImportError:
            run_peer = False
            warnings.append("cryptography is not installed: no peer figures")
    file_aad = os.urandom(FILE_AAD_LEN)
    aad = module_aad_for(file_aad)
    keys = {bits: os.urandom(bits // 8) for bits in args.key_bits}

    n_cfg = len(sizes) * len(keys) * len(args.algorithm) * (
        (len(backends) * len(args.threads) if "pqseal" in impls else 0) + (1 if run_peer else 0))
    done = 0
    tty = err.isatty() and not args.verbose

    def progress(what: str) -> None:
        if tty:
            err.write(f"\r  [{done}/{n_cfg}] {what:<52}")
            err.flush()

    for size in sizes:
        w = Workload(size, args.batch_bytes, args.max_modules)
        for alg in args.algorithm:
            for bits, key in keys.items():
                # One group per (size, algorithm, key): every pqseal backend x threads and the
                # peer, timed round-robin so the ratios inside the group share the load.
                labels, runs = [], []
                if "pqseal" in impls:
                    for backend in backends:
                        for threads in args.threads:
                            cipher = pqseal_cipher(alg, backend, key, file_aad)
                            labels.append(("pqseal", backend, threads))
                            runs.append(pqseal_runner(w, cipher, threads))
                if run_peer:
                    labels.append(("cryptography", "openssl", 1))
                    runs.append(peer_runner(w, alg, key, aad, max(1, PEER_CHUNK_BYTES // size)))
                if not runs:
                    continue
                progress(f"{alg}-{bits} {fmt_size(size)}: {len(runs)} configurations")
                timed = time_interleaved(runs, rounds=rounds, round_time=round_time, warmup=warmup)
                for (impl, backend, threads), run_one, (rates, util) in zip(labels, runs, timed):
                    note = env.get("cryptography") if impl == "cryptography" else None
                    if impl == "pqseal":
                        run_one()  # the output of this configuration, for the check
                        bad = verify(w, alg, key, aad)
                        if bad:
                            warnings.append(f"pqseal {backend} {alg}-{bits} {fmt_size(size)} x{threads}: "
                                            f"output check failed: {bad}")
                            note = f"VERIFY FAILED: {bad}"
                    emit(summarize(impl, backend, alg, bits, size, threads, rates, w.n, util, note=note))
                done += len(runs)
        del w
    if tty:
        err.write("\r" + " " * 66 + "\r")
        err.flush()

    if not args.json:
        print(file=info)
        print_table(results, file=info)
    starved = [(r.cpu_util, r) for r in results if r.impl == "pqseal" and r.threads > 1 and r.cpu_util is not None
               and r.cpu_util < 0.75 * r.threads]
    if starved:
        lowest, worst = min(starved, key=lambda s: s[0])
        warnings.append(f"{len(starved)} multi-thread configuration(s) got less than 75% of the CPUs asked for "
                        f"(lowest {lowest:.2f} CPUs: {worst.backend} {worst.algorithm}-{worst.key_bits} "
                        f"{fmt_size(worst.module_bytes)} x{worst.threads}). Either other processes hold the cores "
                        "(see the load average) or the native threads do not run in parallel; see the 'cpu' column.")
    if not args.no_plot and results:
        why = write_plot(results, args.plot)
        if why:
            warnings.append(f"no plot: {why}")
        else:
            print(f"\nplot written to {args.plot}", file=info)
    for wmsg in warnings:
        print(f"warning: {wmsg}", file=err)
    print(f"elapsed {time.perf_counter() - t_start:.1f} s; load average {_loadavg()}", file=info)
    return results


def main(argv: Sequence[str] | None = None, prog: str | None = None) -> int:
    run(build_parser(prog).parse_args(argv))
    return 0


if __name__ == "__main__":
    sys.exit(main(prog="python -m pqseal.bench.cipher"))
