"""File benchmark: seal / unseal / verify a ~1 GiB Parquet file, pqseal vs the pyarrow route.

* ``pqseal``: :func:`pqseal.encrypt_file` (seal), :func:`pqseal.decrypt_file` (unseal),
  :func:`pqseal.verify` for AES_GCM_V1 and AES_GCM_CTR_V1 on every available backend,
  uniform 128-bit key, encrypted footer; pages are never decoded.
* ``pyarrow``: the peer route, what a pyarrow user does to encrypt an existing file:
  read the plaintext file and write it again with pyarrow's encryption (seal); read the
  encrypted file and write it plaintext (unseal); read the encrypted file (verify).

The input is a typical analytics file as pyarrow writes it by default (snappy,
dictionary encoding, statistics; 10 columns of ints, floats, timestamps and strings;
1 MiB pages; ~1 GiB), generated once and cached. Every timing is wall clock with the
input in the page cache (written back, dropped and read once before timing, as a file
read from storage; see ``_warm``) and the outputs in ``--work-dir``
(default: beside the cached input, on the same file system, as a real job writes),
one core (native threads=1; pyarrow with ``use_threads=False``), without fsync, median
of ``--repeat`` runs after one untimed warm-up run. The warm-up matters on a virtual
machine whose balloon driver hands free memory back to the host (free page reporting):
the first touch of such memory costs a host page fault, so a run that follows an idle
pause can take several times longer than the same run repeated. The file system
type is printed: on tmpfs the kernel's per-4 KiB page cost caps any writer lower than
on a disk file system with large folios (ext4, xfs).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

MiB = 1 << 20


def generate(path: str, gib: float) -> None:
    """A typical analytics file: pyarrow's defaults (snappy, dictionary encoding,
    statistics), 1 MiB pages, 10 columns of mixed types, ~``gib`` GiB on disk."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(7)
    vocab = np.array([f"category-{i:04d}" for i in range(1000)], dtype=object)
    schema = pa.schema([("id", pa.int64()), ("amount", pa.float64()), ("price", pa.float64()),
                        ("ts", pa.timestamp("us")), ("qty", pa.int32()), ("category", pa.string()),
                        ("token", pa.string()), ("score", pa.float64()), ("user", pa.int64()),
                        ("note", pa.string())])

    def random_strings(n, width):
        data = rng.integers(97, 123, n * width, dtype=np.uint8)
        offsets = np.arange(0, (n + 1) * width, width, dtype=np.int32)
        return pa.StringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(data))

    rows_per_rg = 1 << 20
    tmp = path + ".tmp"
    with pq.ParquetWriter(tmp, schema, compression="snappy", data_page_size=MiB) as w:
        rg = 0
        while os.path.getsize(tmp) < gib * (1 << 30):
            n = rows_per_rg
            base = rg * n
            cols = [pa.array(np.arange(base, base + n)), pa.array(rng.random(n) * 1e4),
                    pa.array(np.round(rng.random(n) * 100, 2)),
                    pa.array(rng.integers(1_600_000_000_000_000, 1_700_000_000_000_000, n), pa.timestamp("us")),
                    pa.array(rng.integers(1, 50, n).astype(np.int32)),
                    pa.array(vocab[rng.integers(0, len(vocab), n)], pa.string()),
                    random_strings(n, 16), pa.array(rng.random(n)), pa.array(rng.integers(0, 1 << 40, n)),
                    random_strings(n, 40)]
            w.write_table(pa.table(cols, schema=schema), row_group_size=n)
            rg += 1
    os.replace(tmp, path)


def _warm(path: str) -> None:
    """Put an input in the page cache as a file read from storage: write it back, drop it
    from the cache, read it once. How a file was written decides how the page cache holds
    it: pyarrow's writes leave the bench input in 4 KiB pages, which made mapping it cost
    0.17 s per 1.16 GB here, against 0.008 s once it is read back from disk (large folios).
    Every input of every contender goes through this, so none depends on its history."""
    with open(path, "rb") as f:
        fd = f.fileno()
        os.fsync(fd)
        if hasattr(os, "posix_fadvise"):
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        while f.read(16 * MiB):
            pass


def _time(fn, repeat: int, out: str | None = None) -> float:
    """Median wall time of ``repeat`` runs after one untimed warm-up run; ``out`` is
    deleted before each run (replacing an existing file would add the kernel's cost of
    dropping the old one to the timing)."""
    ts = []
    for i in range(repeat + 1):
        if out and os.path.exists(out):
            os.unlink(out)
        t0 = time.perf_counter()
        fn()
        if i:
            ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="pqseal bench seal", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gib", type=float, default=1.0, help="input size in GiB (default 1)")
    ap.add_argument("--cache-dir", default=os.path.join("bench-out", "data"))
    ap.add_argument("--work-dir", default=None,
                    help="where outputs are written (default: <cache-dir>; e.g. /dev/shm for tmpfs)")
    ap.add_argument("--repeat", type=_positive_int, default=5, help="timed runs per measurement (default 5)")
    ap.add_argument("--backend", action="append", help="pqseal backend(s) (default: all available)")
    ap.add_argument("--algorithm", action="append", choices=["AES_GCM_V1", "AES_GCM_CTR_V1"])
    ap.add_argument("--no-peer", action="store_true", help="skip the pyarrow route")
    ap.add_argument("--json", action="store_true", help="print one JSON object per measurement")
    ap.add_argument("--plot", default=os.path.join("bench-out", "seal.png"), help="PNG path ('' to skip)")
    args = ap.parse_args(argv)

    import pyarrow.parquet as pq
    import pyarrow.parquet.encryption as pe

    import pqseal
    from pqseal.format import DecryptionProperties, EncryptionProperties

    os.makedirs(args.cache_dir, exist_ok=True)
    src = os.path.join(args.cache_dir, f"bench-{args.gib:g}GiB-typical-10col-1MiBpages.parquet")
    if not os.path.exists(src):
        print(f"generating {src} ...", file=sys.stderr)
        generate(src, args.gib)
    size = os.path.getsize(src)
    work = os.path.join(args.work_dir or args.cache_dir, "pqseal-bench-work")
    os.makedirs(work, exist_ok=True)
    fs = _fs_type(work)
    enc_path, dec_path = os.path.join(work, "sealed.parquet"), os.path.join(work, "unsealed.parquet")
    key = os.urandom(16)
    backends = args.backend or pqseal.available_backends()
    algorithms = args.algorithm or ["AES_GCM_V1", "AES_GCM_CTR_V1"]
    rows = []

    def record(op, impl, backend, alg, seconds):
        row = {"op": op, "impl": impl, "backend": backend, "algorithm": alg, "bytes": size, "fs": fs,
               "seconds": round(seconds, 4), "gb_per_s": round(size / seconds / 1e9, 3)}
        rows.append(row)
        if args.json:
            print(json.dumps(row), flush=True)
        else:
            print(f"{op:7} {impl:8} {backend or '-':8} {alg:15} {seconds:8.3f} s {row['gb_per_s']:7.2f} GB/s",
                  file=sys.stderr, flush=True)

    _warm(src)
    dec = DecryptionProperties(key)
    for alg in algorithms:
        for be in backends:
            enc = EncryptionProperties(key, algorithm=alg)
            record("seal", "pqseal", be, alg, _time(
                lambda: pqseal.encrypt_file(src, enc_path, enc, backend=be, fsync=False), args.repeat, enc_path))
            _warm(enc_path)
            record("unseal", "pqseal", be, alg, _time(
                lambda: pqseal.decrypt_file(enc_path, dec_path, dec, backend=be, fsync=False), args.repeat, dec_path))
            record("verify", "pqseal", be, alg, _time(lambda: pqseal.verify(enc_path, dec, backend=be), args.repeat))
        if args.no_peer:
            continue
        ep = pe.create_encryption_properties(key, encryption_algorithm=alg)
        dp = pe.create_decryption_properties(key)
        pa_enc = os.path.join(work, "pyarrow-sealed.parquet")

        # the same writer settings as the input (pyarrow's defaults, 1 MiB pages)
        def pa_seal():
            t = pq.read_table(src, use_threads=False)
            pq.write_table(t, pa_enc, encryption_properties=ep, data_page_size=MiB, row_group_size=1 << 20)

        def pa_unseal():
            t = pq.read_table(pa_enc, decryption_properties=dp, use_threads=False)
            pq.write_table(t, dec_path, data_page_size=MiB, row_group_size=1 << 20)

        record("seal", "pyarrow", None, alg, _time(pa_seal, args.repeat, pa_enc))
        _warm(pa_enc)
        record("unseal", "pyarrow", None, alg, _time(pa_unseal, args.repeat, dec_path))
        record("verify", "pyarrow", None, alg, _time(
            lambda: pq.read_table(pa_enc, decryption_properties=dp, use_threads=False), args.repeat))

    if not args.json:
        print(f"\ninput: {src} ({size / 1e9:.2f} GB); outputs in {work} ({_fs_type(work)}); one core, "
              f"page cache, no fsync; median of {args.repeat}")
        print(f"{'op':7} {'impl':8} {'backend':8} {'algorithm':15} {'seconds':>8} {'GB/s':>7} {'vs pyarrow':>10}")
        peer = {(r["op"], r["algorithm"]): r["seconds"] for r in rows if r["impl"] == "pyarrow"}
        for r in rows:
            ratio = peer.get((r["op"], r["algorithm"]))
            ratio_s = f"{ratio / r['seconds']:9.1f}x" if (ratio and r["impl"] == "pqseal") else ""
            print(f"{r['op']:7} {r['impl']:8} {r['backend'] or '-':8} {r['algorithm']:15} {r['seconds']:8.3f} "
                  f"{r['gb_per_s']:7.2f} {ratio_s:>10}")
    if args.plot:
        why = _plot(rows, args.plot)
        if why:
            print(f"warning: no plot: {why}", file=sys.stderr)
        elif not args.json:
            print(f"plot: {args.plot}")
    for p in (enc_path, dec_path, os.path.join(work, "pyarrow-sealed.parquet")):
        if os.path.exists(p):
            os.unlink(p)
    os.rmdir(work) if not os.listdir(work) else None
    return 0


def _fs_type(path: str) -> str:
    """The type of the file system holding ``path`` (from /proc/mounts; "?" elsewhere)."""
    path = os.path.realpath(path)
    best, kind = "", "?"
    try:
        with open("/proc/mounts") as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 3 and (path == parts[1] or path.startswith(parts[1].rstrip("/") + "/")) \
                        and len(parts[1]) >= len(best):
                    best, kind = parts[1], parts[2]
    except OSError:
        pass
    return kind


def _positive_int(text: str) -> int:
    v = int(text)
    if v < 1:
        raise argparse.ArgumentTypeError(f"{v} is not a positive integer")
    return v


def _plot(rows, path: str) -> str | None:
    """Write the bar chart; returns why not, or None."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed (pip install matplotlib)"

    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    ops = ["seal", "unseal", "verify"]
    labels = sorted({(r["impl"], r["backend"] or "", r["algorithm"]) for r in rows})
    fig, ax = plt.subplots(figsize=(9, 4.5))
    width = 0.8 / max(1, len(labels))
    for i, lab in enumerate(labels):
        vals = [next((r["gb_per_s"] for r in rows if (r["impl"], r["backend"] or "", r["algorithm"]) == lab
                      and r["op"] == op), 0) for op in ops]
        ax.bar([j + i * width for j in range(len(ops))], vals, width, label=" ".join(x for x in lab if x))
    ax.set_xticks([j + width * (len(labels) - 1) / 2 for j in range(len(ops))], ops)
    ax.set_yscale("log")  # verify of CTR files is ~50x the rest
    ax.set_ylabel("GB/s of file (one core, page cache; log scale)")
    ax.set_title("pqseal vs pyarrow: seal / unseal / verify a ~1 GiB Parquet file")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return None


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
