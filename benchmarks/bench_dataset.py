#!/usr/bin/env python3
"""Issue 10's measurements of dataset jobs on Dask, in one run:

1. KMS calls, counted by a KMS server in its own process (kms_server.py), for N small
   files (3 columns, a few KB each), W Dask workers, M = 3 master keys (footer key and
   two column keys), double wrapping: writing the dataset and reading it back with
   - pqseal: ``pqseal.dataset.encrypt`` then ``pqseal.dataset.decrypt`` on a Dask
     ``LocalCluster`` (TLS), the KMS client given to the driver only (goal: M wraps on
     write, one unwrap per distinct KEK on read, whatever N and W);
   - pyarrow: one ``CryptoFactory`` per Dask worker process, a task per file
     (``pq.write_table`` / ``pq.read_table`` with that worker's properties);
   - parquet-java through PySpark (``local-cluster``: W executor JVMs),
     ``PropertiesDrivenCryptoFactory`` with java/HttpKmsClient.java (compiled here with
     javac against PySpark's jars), ``repartition(N)`` on write.
2. Throughput of ``pqseal.dataset.encrypt`` on a dataset of >= 2 GB in >= 64 files:
   2 Dask workers vs 1 (goal >= 1.8x), and 1 worker vs a loop of
   ``pqseal.encrypt_file`` calls in one process (goal >= 0.95x); contenders take turns.
   Timed: the job alone (the Dask clusters are started before, outside the clock); the
   loop gets a new KMS client per job, so it wraps its KEKs once per job as a dataset
   job's key session does. Also the CPU seconds of the driver and of the workers.

    python benchmarks/bench_dataset.py                  # everything; a few minutes
    python benchmarks/bench_dataset.py --only counts    # or: throughput
    python benchmarks/bench_dataset.py --only throughput --tmpfs   # data and outputs in /dev/shm
    python benchmarks/bench_dataset.py --impl pyarrow,spark --json

Prints the tables on stdout (``--json``: also one JSON object per row) and writes
``bench-out/dataset.png``. Needs dask[distributed], pyarrow, and for the Spark column
pyspark, java and javac (missing pieces: the column says why and the rest runs).
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
MASTER_KEYS = ("kf", "kc1", "kc2")
COLUMN_KEYS = {"kc1": ["a"], "kc2": ["b"]}
SPARK_COLUMN_KEYS = "kc1:a;kc2:b"
GB = 10**9


# ---------------------------------------------------------------- data

def small_table(i: int, rows: int):
    """File ``i`` of the small dataset: a (int64), b (string), c (float64)."""
    import pyarrow as pa

    start = i * rows
    return pa.table({"a": pa.array(range(start, start + rows), pa.int64()),
                     "b": [f"row-{k}" for k in range(start, start + rows)],
                     "c": pa.array([k * 0.5 for k in range(start, start + rows)], pa.float64())})


def write_small_dataset(root: Path, n: int, rows: int) -> Path:
    import pyarrow.parquet as pq

    root.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        pq.write_table(small_table(i, rows), root / f"part-{i:05d}.parquet")
    return root


def big_dataset(root: Path, gb: float, files: int) -> tuple[Path, int]:
    """``files`` files of about ``gb / files`` GB each (cached under ``root``: regenerated
    only if a file is missing): int64, float64 and 16-byte string columns of random
    values, pyarrow's defaults (snappy; random data does not compress). Returns the
    directory and its size in bytes."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    per_file = gb * GB / files
    rows = int(per_file / 38)                       # ~38 bytes per row encoded (the ids compress)
    d = root / f"dataset-{gb:g}GB-{files}"
    if len(glob.glob(str(d / "*.parquet"))) != files:
        shutil.rmtree(d, ignore_errors=True)
        d.mkdir(parents=True)
        rng = np.random.default_rng(10)
        hexdigits = np.frombuffer(b"0123456789abcdef", np.uint8)
        offsets = pa.py_buffer(np.arange(0, 16 * (rows + 1), 16, dtype=np.int32))
        for i in range(files):
            raw = rng.integers(0, 1 << 62, rows, dtype=np.int64)
            chars = hexdigits[rng.integers(0, 16, rows * 16, dtype=np.uint8)]
            strings = pa.StringArray.from_buffers(rows, offsets, pa.py_buffer(chars))
            t = pa.table({"id": pa.array(np.arange(i * rows, (i + 1) * rows, dtype=np.int64)),
                          "a": pa.array(raw), "x": pa.array(rng.random(rows)), "s": strings})
            pq.write_table(t, d / f"part-{i:05d}.parquet", row_group_size=1 << 20)
    size = sum(os.path.getsize(p) for p in glob.glob(str(d / "*.parquet")))
    return d, size


# ---------------------------------------------------------------- Dask

@contextlib.contextmanager
def dask_cluster(workers: int, profiler: bool = True):
    """A LocalCluster of ``workers`` processes (1 thread each) over TLS, and its client.
    ``profiler=False``: without Dask's statistical profiler in the workers (a sample of
    the running task's stack every 10 ms, on the worker's event loop, under the GIL)."""
    import logging

    import dask
    from distributed import Client, LocalCluster
    from distributed.security import Security

    logging.getLogger("distributed").setLevel(logging.ERROR)   # no connection chatter at shutdown
    sec = Security.temporary()
    with dask.config.set({"distributed.worker.profile.enabled": profiler}), \
            LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, security=sec,
                         dashboard_address=":0", protocol="tls") as cluster, \
            Client(cluster, security=sec) as client:
        client.wait_for_workers(workers)
        yield client


_PA_FACTORY: dict = {}


def _pa_factory():
    """This process's pyarrow CryptoFactory (one per worker process, made on first use)."""
    import pyarrow.parquet.encryption as pe
    from kms_server import pyarrow_client

    if "f" not in _PA_FACTORY:
        _PA_FACTORY["f"] = pe.CryptoFactory(pyarrow_client("pyarrow"))
    return _PA_FACTORY["f"]


def _pa_write(i: int, dst: str, url: str, rows: int) -> int:
    import pyarrow.parquet as pq
    import pyarrow.parquet.encryption as pe

    cfg = pe.EncryptionConfiguration(footer_key="kf", column_keys=COLUMN_KEYS, double_wrapping=True)
    props = _pa_factory().file_encryption_properties(pe.KmsConnectionConfig(kms_instance_url=url), cfg)
    path = os.path.join(dst, f"part-{i:05d}.parquet")
    pq.write_table(small_table(i, rows), path, encryption_properties=props)
    return os.path.getsize(path)


def _pa_read(path: str, url: str) -> int:
    import pyarrow.parquet as pq
    import pyarrow.parquet.encryption as pe

    props = _pa_factory().file_decryption_properties(pe.KmsConnectionConfig(kms_instance_url=url),
                                                     pe.DecryptionConfiguration())
    return pq.read_table(path, decryption_properties=props).num_rows


# ---------------------------------------------------------------- KMS call counts

@dataclass
class Counts:
    impl: str
    n: int
    workers: int
    write: dict = field(default_factory=dict)     # the server's stats: {client: {"wrap": n, "unwrap": n}}
    read: dict = field(default_factory=dict)
    rows_read: int | None = None
    reported: dict = field(default_factory=dict)  # what the tool itself says (pqseal's report)
    error: str | None = None

    def total(self, phase: str, op: str) -> int:
        return sum(c[op] for c in getattr(self, phase).values())

    def clients(self, phase: str) -> int:
        return sum(1 for c in getattr(self, phase).values() if c["wrap"] or c["unwrap"])


def _phase(kms, fn):
    kms.reset()
    out = fn()
    return out, kms.stats()


def pyarrow_counts(kms, n: int, workers: int, rows: int, tmp: Path) -> Counts:
    dst = tmp / f"pyarrow-{n}-{workers}"
    dst.mkdir()
    c = Counts("pyarrow", n, workers)
    with dask_cluster(workers) as client:
        _, c.write = _phase(kms, lambda: client.gather(client.map(_pa_write, range(n), dst=str(dst), url=kms.url,
                                                                  rows=rows, pure=False)))
        paths = sorted(glob.glob(str(dst / "*.parquet")))
        got, c.read = _phase(kms, lambda: client.gather(client.map(_pa_read, paths, url=kms.url, pure=False)))
    c.rows_read = sum(got)
    return c


def _n(x) -> int:
    return x if isinstance(x, int) else len(x)


def pqseal_counts(kms, n: int, workers: int, rows: int, tmp: Path) -> Counts:
    import pqseal.dataset
    import pyarrow.parquet as pq
    from kms_server import HttpKms

    from pqseal.config import EncryptionConfig

    src = tmp / f"plain-{n}"
    if not src.exists():
        write_small_dataset(src, n, rows)
    enc, back = tmp / f"pqseal-{n}-{workers}", tmp / f"pqseal-{n}-{workers}-back"
    driver = HttpKms(kms.url, "pqseal-driver")
    cfg = EncryptionConfig("kf", column_keys=COLUMN_KEYS, double_wrapping=True)
    c = Counts("pqseal", n, workers)
    with dask_cluster(workers) as client:
        w, c.write = _phase(kms, lambda: pqseal.dataset.encrypt(src, enc, cfg, kms=driver, executor=client))
        r, c.read = _phase(kms, lambda: pqseal.dataset.decrypt(enc, back, kms=driver, executor=client))
    for phase, rep in (("write", w), ("read", r)):
        c.reported[phase] = {"ok": _n(rep.ok), "failed": _n(rep.failed), "skipped": _n(rep.skipped),
                             "kms_calls": getattr(rep, "kms_calls", None)}
        if _n(rep.failed):
            c.error = f"{phase}: {_n(rep.failed)} files failed: {rep.to_json()[:500]}"
    me = f"pqseal-driver pid={os.getpid()}"
    others = sorted({name for phase in (c.write, c.read) for name in phase} - {me})
    if others:
        c.error = f"KMS called by others than the driver: {others}"
    c.rows_read = sum(pq.read_table(p).num_rows for p in back.rglob("*.parquet"))
    _oracle(enc, kms.url, n)
    return c


def java_kms_jar(out: Path) -> str:
    """java/HttpKmsClient.java compiled against PySpark's jars (javac, jar)."""
    import pyspark

    javac, jar = shutil.which("javac"), shutil.which("jar")
    if not (javac and jar):
        raise RuntimeError("javac and jar (a JDK) are needed for the Spark column")
    jars = os.path.join(os.path.dirname(pyspark.__file__), "jars", "*")
    subprocess.run([javac, "-d", str(out / "classes"), "-cp", jars, str(HERE / "java" / "HttpKmsClient.java")],
                   check=True)
    subprocess.run([jar, "cf", str(out / "kms.jar"), "-C", str(out / "classes"), "pqseal"], check=True)
    return str(out / "kms.jar")


def spark_counts(kms, n: int, executors: int, rows: int, tmp: Path) -> Counts:
    from pyspark.sql import SparkSession

    c = Counts("parquet-java", n, executors)
    jar = java_kms_jar(tmp)
    spark = (SparkSession.builder.master(f"local-cluster[{executors},1,1024]").appName("pqseal-bench-kms")
             .config("spark.jars", jar)
             .config("spark.ui.enabled", "false")
             .config("spark.ui.showConsoleProgress", "false")
             .config("spark.executor.memory", "1g")
             .config("spark.hadoop.parquet.crypto.factory.class",
                     "org.apache.parquet.crypto.keytools.PropertiesDrivenCryptoFactory")
             .config("spark.hadoop.parquet.encryption.kms.client.class", "pqseal.bench.HttpKmsClient")
             .config("spark.hadoop.parquet.encryption.kms.instance.url", kms.url)
             .getOrCreate())
    try:
        spark.sparkContext.setLogLevel("ERROR")
        out = str(tmp / f"spark-{n}-{executors}")
        df = spark.range(0, n * rows).selectExpr("id as a", "concat('row-', cast(id as string)) as b",
                                                 "cast(id as double) * 0.5 as c")

        def write():
            (df.repartition(n).write.mode("overwrite")
             .option("parquet.encryption.footer.key", "kf")
             .option("parquet.encryption.column.keys", SPARK_COLUMN_KEYS)
             .option("parquet.encryption.double.wrapping", "true").parquet(out))

        def read():   # every column is read (a count alone would open the footers only)
            return spark.read.parquet(out).selectExpr("count(*)", "sum(a)", "sum(length(b))", "sum(c)").collect()[0]

        _, c.write = _phase(kms, write)
        row, c.read = _phase(kms, read)
        c.rows_read = row[0]
        files = len(glob.glob(os.path.join(out, "*.parquet")))
        if files != n:
            c.error = f"Spark wrote {files} files, not {n}"
    finally:
        spark.stop()
    return c


COUNTERS = {"pqseal": pqseal_counts, "pyarrow": pyarrow_counts, "spark": spark_counts}


def counts_table(rows: list[Counts]) -> str:
    head = (f"{'impl':13} {'N':>5} {'W':>2}   {'write: wraps':>12} {'unwraps':>7} {'clients':>7}   "
            f"{'read: wraps':>11} {'unwraps':>7} {'clients':>7}   {'rows read':>9}  note")
    lines = [head, "-" * len(head)]
    for c in rows:
        if c.error and not c.write:
            lines.append(f"{c.impl:13} {c.n:5} {c.workers:2}   n/a: {c.error}")
            continue
        note = c.error or ""
        rows_read = "" if c.rows_read is None else c.rows_read
        if c.reported:
            note += " pqseal's report: " + ", ".join(f"{p} kms_calls={v['kms_calls']}" for p, v in c.reported.items())
        lines.append(f"{c.impl:13} {c.n:5} {c.workers:2}   {c.total('write', 'wrap'):12} "
                     f"{c.total('write', 'unwrap'):7} {c.clients('write'):7}   {c.total('read', 'wrap'):11} "
                     f"{c.total('read', 'unwrap'):7} {c.clients('read'):7}   {rows_read:>9}"
                     f"  {note.strip()}")
    return "\n".join(lines)


def pqseal_goals(rows: list[Counts]) -> list[tuple[str, bool]]:
    """Issue 10's goals for pqseal's rows: M wraps on write (no unwrap); on read one
    unwrap per distinct KEK, which is M since one session wrote the dataset; only the
    driver calls the KMS; the report's own count agrees with the server's; the same
    counts for every N and W."""
    m = len(MASTER_KEYS)
    ours = [c for c in rows if c.impl == "pqseal" and c.write]
    out = []
    for c in ours:
        out.append((f"pqseal N={c.n} W={c.workers}: write = {m} wraps, 0 unwraps",
                    (c.total("write", "wrap"), c.total("write", "unwrap")) == (m, 0)))
        out.append((f"pqseal N={c.n} W={c.workers}: read = {m} unwraps (distinct KEKs), 0 wraps",
                    (c.total("read", "wrap"), c.total("read", "unwrap")) == (0, m)))
        out.append((f"pqseal N={c.n} W={c.workers}: only the driver called the KMS", c.error is None))
        for phase, rep in c.reported.items():
            if rep["kms_calls"] is not None:
                server = c.total(phase, "wrap") + c.total(phase, "unwrap")
                out.append((f"pqseal N={c.n} W={c.workers}: {phase} report's kms_calls "
                            f"({rep['kms_calls']}) = the server's count ({server})", rep["kms_calls"] == server))
    if len(ours) > 1:
        seen = {(c.total("write", "wrap"), c.total("write", "unwrap"), c.total("read", "wrap"),
                 c.total("read", "unwrap")) for c in ours}
        out.append(("pqseal: counts independent of N and W", len(seen) == 1))
    return out


def run_counts(impls: list[str], n: int, workers: int, rows: int, extra: bool) -> list[Counts]:
    """Each implementation at (n, workers); pqseal also at (n/5, workers) and (n, 1)
    to show that its counts do not depend on either."""
    from kms_server import KmsServer

    plan = [(impl, n, workers) for impl in impls]
    if extra and "pqseal" in impls:
        plan += [("pqseal", max(1, n // 5), workers), ("pqseal", n, 1)]
    out = []
    with KmsServer(MASTER_KEYS) as kms, tempfile.TemporaryDirectory(prefix="pqseal-bench-kms-") as tmp:
        for impl, nn, w in plan:
            t0 = time.perf_counter()
            try:
                c = COUNTERS[impl](kms, nn, w, rows, Path(tmp))
            except Exception as e:    # one contender missing (no Java, no pqseal.dataset yet) leaves the others
                c = Counts({"spark": "parquet-java"}.get(impl, impl), nn, w, error=f"{type(e).__name__}: {e}")
            print(f"  {c.impl} N={nn} W={w}: {time.perf_counter() - t0:.1f} s", file=sys.stderr)
            out.append(c)
    return out


# ---------------------------------------------------------------- throughput

@dataclass
class Timing:
    case: str
    seconds: list[float]
    bytes: int
    cpu: list[tuple[float, float]] = field(default_factory=list)   # (driver, workers) CPU seconds per turn

    @property
    def best(self) -> float:
        return min(self.seconds)

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)

    @property
    def gb_per_s(self) -> float:
        return self.bytes / self.median / GB

    def median_cpu(self, i: int) -> float:
        return statistics.median(c[i] for c in self.cpu)


def _loop(src: Path, dst: Path, cfg, url: str, part: int = 0, parts: int = 1) -> float:
    """The contender without pqseal.dataset: ``encrypt_file`` per file in this process
    (files ``part``, ``part + parts``, ...), with a new KMS client per job (so its KEKs
    are wrapped once per job, as a dataset job's key session wraps them: not once for
    every turn). Returns the CPU seconds of this process."""
    import pqseal
    from kms_server import HttpKms

    c0 = time.process_time()
    kms = HttpKms(url, "pqseal-loop")
    dst.mkdir(exist_ok=True)
    for p in sorted(src.glob("*.parquet"))[part::parts]:
        pqseal.encrypt_file(p, dst / p.name, cfg, kms=kms)
    return time.process_time() - c0


LOOP, ONE, TWO = "loop of encrypt_file (1 process)", "dataset.encrypt, Dask 1 worker", "dataset.encrypt, Dask 2 workers"
HALVES = "2 processes, a loop over half each"
THREAD = "dataset.encrypt, 1 thread (no Dask)"


def _import_pqseal() -> None:
    """What a worker imports on its first file (run on every worker before the clock)."""
    import pqseal.api
    import pqseal.dataset.worker
    import pqseal.format.engine
    import pqseal.keys.session  # noqa: F401


@contextlib.contextmanager
def _two_processes():
    """Two fresh worker processes (forkserver), both started and having imported pqseal."""
    import multiprocessing

    with multiprocessing.get_context("forkserver").Pool(2, initializer=_import_pqseal) as pool:
        pool.map(time.sleep, [0.3, 0.3], chunksize=1)      # both busy at once: both up
        yield pool


def _cpu(ctx) -> tuple[float, float]:
    """CPU seconds so far of this process (the driver: with a LocalCluster, the scheduler
    too) and of a Dask client's workers (0 for the others: their jobs return it)."""
    from distributed import Client

    workers = sum(ctx.run(time.process_time).values()) if isinstance(ctx, Client) else 0.0
    return time.process_time(), workers


def run_throughput(gb: float, files: int, rounds: int, data_dir: Path, work_dir: Path,
                   profiler: bool = True) -> tuple[list[Timing], dict]:
    """The contenders in turns; without ``pqseal.dataset`` (not merged yet) the loops alone.
    Only the contender's own processes run during its turn: a Dask case starts its
    cluster for the turn (an idle LocalCluster costs some 4 % of a core per worker and 4 %
    in the driver, which would be taken from 2 busy workers), has every worker import
    pqseal and runs a job of one file, all before the clock starts. ``HALVES`` (two plain
    processes, no Dask, each a loop over every other file) is what two workers can reach
    on this machine. Ratios are of the medians of the turns."""
    from kms_server import HttpKms, KmsServer

    from pqseal.config import EncryptionConfig

    try:
        import pqseal.dataset as dataset
    except ImportError as e:
        dataset = None
        print(f"  no pqseal.dataset ({e}): the loops alone, no ratios", file=sys.stderr)
    src, size = big_dataset(data_dir, gb, files)
    print(f"  dataset: {files} files, {size / GB:.2f} GB in {src}", file=sys.stderr)
    cfg = EncryptionConfig("kf", column_keys={"kc1": ["a"], "kc2": ["s"]}, double_wrapping=True)
    warm_src = work_dir / "bench-dataset-warm-src"
    shutil.rmtree(warm_src, ignore_errors=True)
    warm_src.mkdir()
    shutil.copy(sorted(src.glob("*.parquet"))[0], warm_src)
    with KmsServer(MASTER_KEYS) as kms:
        driver = HttpKms(kms.url, "pqseal-driver")

        def loop(source: Path, dst: Path, _) -> None:
            _loop(source, dst, cfg, kms.url)

        def halves(source: Path, dst: Path, pool) -> float:
            return sum(pool.starmap(_loop, [(source, dst, cfg, kms.url, i, 2) for i in range(2)], chunksize=1))

        def thread_job(source: Path, dst: Path, _) -> None:
            rep = dataset.encrypt(source, dst, cfg, kms=driver, executor="threads", workers=1, progress=False)
            if source == src:
                _check(rep, files)

        def dask_job(source: Path, dst: Path, client) -> None:
            rep = dataset.encrypt(source, dst, cfg, kms=driver, executor=client)
            if source == src:
                _check(rep, files)

        # case: (its processes, a job of the files of a directory; returns the workers' CPU or None)
        cases = {LOOP: (contextlib.nullcontext, loop), HALVES: (_two_processes, halves)}
        if dataset is not None:
            cases.update({THREAD: (contextlib.nullcontext, thread_job),
                          ONE: (lambda: dask_cluster(1, profiler), dask_job),
                          TWO: (lambda: dask_cluster(2, profiler), dask_job)})
        timings = {case: Timing(case, [], size) for case in cases}
        for r in range(rounds):
            for i, case in enumerate(list(cases) if r % 2 == 0 else list(reversed(cases))):
                processes, job = cases[case]
                dst, warm = work_dir / f"bench-dataset-out-{i}", work_dir / "bench-dataset-warm-out"
                with processes() as ctx:
                    if hasattr(ctx, "run"):
                        ctx.run(_import_pqseal)
                    job(warm_src, warm, ctx)
                    shutil.rmtree(warm)
                    cpu0 = _cpu(ctx)
                    t0 = time.perf_counter()
                    workers_cpu = job(src, dst, ctx)
                    timings[case].seconds.append(time.perf_counter() - t0)
                    cpu1 = _cpu(ctx)
                timings[case].cpu.append((cpu1[0] - cpu0[0], workers_cpu or cpu1[1] - cpu0[1]))
                print(f"  {case}: {timings[case].seconds[-1]:.2f} s", file=sys.stderr)
                _oracle(dst, kms.url, files)
                shutil.rmtree(dst)
    shutil.rmtree(warm_src)
    t = {x.case: x.median for x in timings.values()}
    ratios = {}
    if dataset is not None:
        ratios = {"2 workers / 1 worker (speed)": (t[ONE] / t[TWO], 1.8),
                  "1 worker / loop of encrypt_file (speed)": (t[LOOP] / t[ONE], 0.95)}
        ratios["reference: 1 thread, no Dask / loop"] = (t[LOOP] / t[THREAD], "pqseal.dataset's own cost (1: none)")
    ratios["reference: 2 processes / 1 (no Dask)"] = (t[LOOP] / t[HALVES], "the machine's ceiling for the 2-worker "
                                                                          "ratio")
    return list(timings.values()), ratios


@contextlib.contextmanager
def tmpfs_dirs(gb: float):
    """A directory in /dev/shm (memory: no disk bandwidth in the way) for the dataset and
    the outputs, removed at the end; refused when the dataset and one output would not fit."""
    root = Path("/dev/shm")
    if not root.is_dir():
        raise SystemExit("--tmpfs: /dev/shm does not exist here; pass --data-dir on a tmpfs")
    need = 2.3 * gb * GB
    free = shutil.disk_usage(root).free
    if free < need:
        raise SystemExit(f"--tmpfs: /dev/shm has {free / GB:.1f} GB free, {need / GB:.1f} GB needed "
                         f"(the dataset and one output); try a smaller --gb")
    d = Path(tempfile.mkdtemp(prefix="pqseal-bench-dataset-", dir=root))
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


def _check(report, files: int) -> None:
    if _n(report.ok) != files or _n(report.failed):
        raise RuntimeError(f"dataset job: {_n(report.ok)} of {files} files ok: {report.to_json()[:500]}")


def _oracle(dst: Path, url: str, files: int) -> None:
    """pyarrow's own reader opens one output file (its KMS client: the HTTP one)."""
    import pyarrow.parquet as pq
    import pyarrow.parquet.encryption as pe
    from kms_server import pyarrow_client

    outs = sorted(dst.rglob("*.parquet"))
    if len(outs) != files:
        raise RuntimeError(f"{dst}: {len(outs)} output files, expected {files}")
    props = pe.CryptoFactory(pyarrow_client("oracle")).file_decryption_properties(
        pe.KmsConnectionConfig(kms_instance_url=url), pe.DecryptionConfiguration())
    pq.read_table(outs[-1], decryption_properties=props)


# ---------------------------------------------------------------- output

def plot(counts: list[Counts], ratios: dict, path: str) -> str | None:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed (pip install matplotlib)"
    panels = [p for p in (counts and "counts", ratios and "ratios") if p]
    if not panels:
        return "nothing measured"
    fig, axes = plt.subplots(1, len(panels), figsize=(6.5 * len(panels), 4.2), squeeze=False)
    for ax, panel in zip(axes[0], panels):
        if panel == "counts":
            ok = [c for c in counts if c.write]
            labels = [f"{c.impl}\nN={c.n} W={c.workers}" for c in ok]
            x = range(len(ok))
            ax.bar([i - 0.2 for i in x], [c.total("write", "wrap") + c.total("write", "unwrap") for c in ok], 0.4,
                   label="write")
            ax.bar([i + 0.2 for i in x], [c.total("read", "wrap") + c.total("read", "unwrap") for c in ok], 0.4,
                   label="read")
            ax.set_xticks(list(x), labels, fontsize=7)
            ax.set_ylabel("KMS calls (counted by the server)")
            ax.set_title("KMS calls per job, M = 3 master keys")
            ax.legend()
        else:
            names = [k for k in ratios if not isinstance(ratios[k][1], str)]
            vals = [ratios[k][0] for k in names]
            ax.barh(names, vals, color=["tab:green" if v >= ratios[k][1] else "tab:red" for k, v in zip(names, vals)])
            for i, k in enumerate(names):
                ax.plot([ratios[k][1]] * 2, [i - 0.4, i + 0.4], color="black", linewidth=2)
            ax.set_xlabel("ratio (black bar: the goal)")
            ax.set_title("dataset.encrypt throughput")
    fig.tight_layout()
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    fig.savefig(path, dpi=110)
    return None


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", default="counts,throughput", help="counts, throughput or both (comma-separated)")
    ap.add_argument("--impl", default="pqseal,pyarrow,spark", help="contenders of the KMS count")
    ap.add_argument("--files", type=int, default=500, help="N of the KMS count")
    ap.add_argument("--workers", type=int, default=2, help="W of the KMS count (Dask workers, Spark executors)")
    ap.add_argument("--rows", type=int, default=200, help="rows per small file (200: ~4 KB)")
    ap.add_argument("--no-extra", action="store_true", help="skip pqseal's runs at N/5 and at W=1")
    ap.add_argument("--gb", type=float, default=2.2, help="size of the throughput dataset (GB)")
    ap.add_argument("--big-files", type=int, default=64, help="files of the throughput dataset")
    ap.add_argument("--rounds", type=int, default=5,
                    help="turns of the throughput contenders, the order reversed every other turn (ratios of "
                         "the medians)")
    ap.add_argument("--data-dir", default=os.path.join("bench-out", "data"), help="cache of the generated dataset")
    ap.add_argument("--work-dir", default=None, help="where outputs go (default: beside the data)")
    ap.add_argument("--no-dask-profiler", action="store_true",
                    help="throughput: Dask workers without their statistical profiler "
                         "(distributed.worker.profile.enabled: false)")
    ap.add_argument("--tmpfs", action="store_true",
                    help="throughput: generate the dataset and write the outputs in /dev/shm (memory), removed "
                         "at the end: no disk bandwidth in the way, so 2 workers vs 1 shows the CPU side")
    ap.add_argument("--plot", default=os.path.join("bench-out", "dataset.png"))
    ap.add_argument("--json", action="store_true", help="also one JSON object per row")
    a = ap.parse_args(argv)
    # Dask's worker processes import this module and kms_server by name
    os.environ["PYTHONPATH"] = os.pathsep.join([str(HERE), *filter(None, [os.environ.get("PYTHONPATH")])])

    parts = a.only.split(",")
    counts, ratios = [], {}
    if "counts" in parts:
        counts = run_counts(a.impl.split(","), a.files, a.workers, a.rows, not a.no_extra)
        print(f"\nKMS calls (server-side count), M = {len(MASTER_KEYS)} master keys, double wrapping; "
              "clients = processes that called the KMS")
        print(counts_table(counts))
        for what, met in pqseal_goals(counts):
            print(f"  {what:82} {'PASS' if met else 'MISS'}")
        if a.json:
            for c in counts:
                print(json.dumps({"kind": "kms_calls", **asdict(c)}))
    if "throughput" in parts:
        with contextlib.ExitStack() as stack:
            data = stack.enter_context(tmpfs_dirs(a.gb)) if a.tmpfs else Path(a.data_dir)
            work = Path(a.work_dir) if a.work_dir else data
            work.mkdir(parents=True, exist_ok=True)
            load = os.getloadavg()[0]
            timings, ratios = run_throughput(a.gb, a.big_files, a.rounds, data, work, not a.no_dask_profiler)
        print(f"\nthroughput, {timings[0].bytes / GB:.2f} GB in {a.big_files} files, "
              f"{'tmpfs (/dev/shm)' if a.tmpfs else 'outputs in ' + str(work)}, {a.rounds} turns, "
              f"Dask's worker profiler {'off' if a.no_dask_profiler else 'on (the default)'} "
              f"(load average {load:.1f} before, {os.getloadavg()[0]:.1f} after); CPU: seconds per job, "
              "medians (driver: this process, with the LocalCluster's scheduler)")
        if max(load, os.getloadavg()[0]) > 1.5:
            print("warning: other processes were running; the ratios need two idle cores", file=sys.stderr)
        print(f"{'':40} {'median':>8} {'best':>8} {'GB/s':>7} {'CPU driver':>11} {'CPU workers':>12}")
        for t in timings:
            print(f"{t.case:40} {t.median:7.2f}s {t.best:7.2f}s {t.gb_per_s:7.2f} {t.median_cpu(0):10.2f}s "
                  f"{t.median_cpu(1):11.2f}s")
        for k, (v, goal) in ratios.items():
            verdict = goal if isinstance(goal, str) else f"goal >= {goal}  {'PASS' if v >= goal else 'MISS'}"
            print(f"{k:40} {v:8.2f}   {verdict}  (medians)")
        if a.json:
            for t in timings:
                print(json.dumps({"kind": "throughput", "case": t.case, "seconds": t.seconds, "bytes": t.bytes,
                                  "cpu_driver": [c[0] for c in t.cpu], "cpu_workers": [c[1] for c in t.cpu],
                                  "tmpfs": a.tmpfs, "dask_profiler": not a.no_dask_profiler}))
            for k, (v, goal) in ratios.items():
                note = goal if isinstance(goal, str) else None
                print(json.dumps({"kind": "ratio", "what": k, "value": v, "goal": None if note else goal,
                                  "note": note}))
    problem = plot(counts, ratios, a.plot)
    print(f"plot: {a.plot}" if problem is None else f"no plot: {problem}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(HERE))
    import bench_dataset          # the Dask tasks must live in an importable module, not __main__

    sys.exit(bench_dataset.main())
