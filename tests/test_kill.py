"""Kill test: SIGKILL and SIGTERM at random points of encrypt, decrypt, rekey (to a new
file, and in place with the CLI's ``rekey --in-place``) and rotate.

Each operation runs as a subprocess (the CLI; rekey to a new file through
``pqseal.rekey_file`` in a ``python -c`` script) with envelope keys from a throw-away local keystore and external
key material, onto an EXISTING destination. It is killed after a random delay within
its measured run time. After each kill:

* the source is intact (same SHA-256);
* the destination is its previous content (with its previous key material), or a
  complete file that pyarrow reads with the keys (through the material beside it), or
  for decrypt absent / a complete plaintext file; if the process died between the two
  commits (data, then material), ``pqseal verify`` repairs it;
* after SIGTERM: exit code 143, one line on stderr, and no file left behind;
* after SIGKILL: every file left behind is recognisable, its name carries the killed
  pid (``.<dst>.pqseal-<pid>-<random>.tmp``, ``_TMP_KEY_MATERIAL_FOR_<dst>.pqseal-<pid>-<random>.json``),
  and the next pqseal run in that directory removes it.

Figures (trials, kills per phase, leftovers found and cleaned) are printed per
operation (``pytest -s`` shows them). Size and count come from the environment:

    PQSEAL_KILL_TRIALS=200 PQSEAL_KILL_MB=200 python -m pytest -s tests/test_kill.py

(defaults: 8 trials, 8 MB; ``PQSEAL_KILL_SEED`` repeats a run's random delays).
"""

from __future__ import annotations

import collections
import hashlib
import os
import random
import re
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pyarrow.parquet.encryption as pe
import pytest

TRIALS = int(os.environ.get("PQSEAL_KILL_TRIALS", "8"))
SIZE_MB = float(os.environ.get("PQSEAL_KILL_MB", "8"))
SEED = int(os.environ.get("PQSEAL_KILL_SEED") or random.SystemRandom().randrange(1 << 32))
PASS = "kill-test passphrase"
OPS = ("encrypt", "decrypt", "rekey", "rekey-in-place", "rotate")
ROW_BYTES = 8 + 100 + 16

# rekey_file in an application that handles SIGTERM as the CLI does (pqseal.cli.interrupt):
# ask the running operation to stop (it removes its temporary files) and exit 143 with one
# line, also when the signal comes after the work
REKEY = textwrap.dedent("""
    import sys
    from pqseal import _cancel
    from pqseal.cli.interrupt import interruptible
    with interruptible() as interruption:   # what the CLI installs around a command
        import pqseal
        from pqseal.config import EncryptionConfig
        from pqseal.keys import CryptoFactory
        from pqseal.kms import KmsConnectionConfig
        from pqseal.kms.keystore import LocalKeystore
        src, dst = sys.argv[1], sys.argv[2]
        f = CryptoFactory(lambda cfg: LocalKeystore())
        dec = f.file_decryption_properties(KmsConnectionConfig(), None, src)
        enc = f.file_encryption_properties(KmsConnectionConfig(), EncryptionConfig(
            "footer2", column_keys={"pii2": ["payload"]}, internal_key_material=False), dst)
        try:
            pqseal.rekey_file(src, dst, dec, enc, overwrite=True)
            done = "re-keyed"
        except _cancel.Cancelled:
            done = "left as it was"
    if interruption.requested:
        print(f"rekey interrupted ({interruption.name}): {dst} {done}", file=sys.stderr)
        sys.exit(interruption.exit_code)
""")



def sha256(path) -> str | None:
    try:
        with open(path, "rb") as f:
            return hashlib.file_digest(f, "sha256").hexdigest()
    except FileNotFoundError:
        return None


def material_of(path) -> str:
    return os.path.join(os.path.dirname(path), "_KEY_MATERIAL_FOR_" + os.path.basename(path) + ".json")


def leftover_patterns(dst: str, pid: int) -> list[re.Pattern]:
    name = re.escape(os.path.basename(dst))
    return [re.compile(rf"\.{name}\.pqseal-{pid}-[^/]+\.tmp"),
            re.compile(rf"_TMP_KEY_MATERIAL_FOR_{name}\.pqseal-{pid}-[^/]+\.json")]


class Env:
    """The keystore, the table and the source files shared by every trial."""

    def __init__(self, root):
        from pqseal.kms.keystore import LocalKeystore

        self.root = str(root)
        self.keystore = os.path.join(self.root, "keystore.json")
        ks = LocalKeystore.init(self.keystore, PASS.encode())
        for k in ("footer", "pii", "footer2", "pii2"):
            ks.create(k)
        self.env = dict(os.environ, PQSEAL_KEYSTORE=self.keystore, PQSEAL_KEYSTORE_PASSPHRASE=PASS)
        rows = max(1000, int(SIZE_MB * (1 << 20) / ROW_BYTES))
        rng = np.random.default_rng(1)
        self.table = pa.table({
            "id": pa.array(np.arange(rows, dtype=np.int64)),
            "payload": pa.FixedSizeBinaryArray.from_buffers(pa.binary(100), rows,
                                                            [None, pa.py_buffer(rng.bytes(rows * 100))]),
            "tag": pa.array(np.char.add("t", (np.arange(rows) % 997).astype(str)).astype(object), pa.string()),
        })
        srcdir = os.path.join(self.root, "src")
        os.makedirs(srcdir)
        self.plain = os.path.join(srcdir, "plain.parquet")
        pq.write_table(self.table, self.plain, row_group_size=max(1000, rows // 32))
        self.sealed = os.path.join(srcdir, "sealed.parquet")  # with its external key material
        self.run(self.encrypt_cmd(self.plain, self.sealed), check=True)
        self.tiny = os.path.join(srcdir, "tiny.parquet")
        pq.write_table(self.table.slice(0, 100), self.tiny)
        t0 = time.monotonic()  # time to the CLI's main(): a SIGTERM before it has no handler yet
        self.run(self.cli("--version"), check=True)
        self.startup = time.monotonic() - t0

    def run(self, cmd, check=False, **kw):
        p = subprocess.run(cmd, check=False, env=self.env, capture_output=True, text=True, timeout=600, **kw)
        if check and p.returncode != 0:
            raise AssertionError(f"{cmd[3:]} exited {p.returncode}: {p.stderr.strip()}")
        return p

    @staticmethod
    def cli(*args) -> list[str]:
        return [sys.executable, "-m", "pqseal", *args]

    def encrypt_cmd(self, src, dst, force=False) -> list[str]:
        return self.cli("encrypt", src, dst, "--footer-key", "footer", "--column-keys", "pii:payload",
                        "--external-key-material", *(["--force"] if force else []))

    def command(self, op: str, dst: str) -> list[str]:
        if op == "encrypt":
            return self.encrypt_cmd(self.plain, dst, force=True)
        if op == "decrypt":
            return self.cli("decrypt", self.sealed, dst, "--force")
        if op == "rekey":
            return [sys.executable, "-c", REKEY, self.sealed, dst]
        if op == "rekey-in-place":   # new data keys under the other master keys, or back
            footer, pii = ("footer", "pii") if self.footer_key_of(dst) == "footer2" else ("footer2", "pii2")
            return self.cli("rekey", dst, dst, "--in-place", "--footer-key", footer, "--column-keys",
                            f"{pii}:payload", "--external-key-material")
        return self.cli("rotate", dst)

    @staticmethod
    def footer_key_of(path) -> str:
        import json

        with open(material_of(path)) as f:
            return json.loads(json.load(f)["footerKey"])["masterKeyID"]

    def read_encrypted(self, path) -> pa.Table:
        """pyarrow reads ``path`` with keys from the keystore, through its key material."""
        from pqseal.arrow import crypto_factory
        from pqseal.keys import clear_caches
        from pqseal.kms.keystore import LocalKeystore

        clear_caches()
        ks = LocalKeystore(self.keystore, PASS.encode())
        props = crypto_factory(lambda cfg: ks).file_decryption_properties(
            pe.KmsConnectionConfig(), pe.DecryptionConfiguration(cache_lifetime=0), path)
        return pq.read_table(path, decryption_properties=props)


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    return Env(tmp_path_factory.mktemp("kill"))


def _readable(env: Env, op: str, dst: str) -> bool:
    try:
        t = pq.read_table(dst) if op == "decrypt" else env.read_encrypted(dst)
    except (OSError, pa.ArrowException):
        return False
    return t.equals(env.table)


_GOOD: set = set()  # (data, material) hashes of destinations known to read back


def _prepare(env: Env, op: str, workdir: str) -> str:
    """The destination as it is before a trial: an existing file (decrypt: absent every
    other time) and, for encrypted outputs, its key material."""
    dst = os.path.join(workdir, "out.parquet")
    if op == "decrypt":
        return dst
    state = (sha256(dst), sha256(material_of(dst)))
    if state not in _GOOD and (state[0] is None or not _readable(env, op, dst)):
        for p in (dst, material_of(dst)):
            if os.path.exists(p):
                os.unlink(p)
        env.run(env.encrypt_cmd(env.plain, dst), check=True)
    _GOOD.add((sha256(dst), sha256(material_of(dst))))
    if op == "rotate":
        from pqseal.kms.keystore import LocalKeystore
        ks = LocalKeystore(env.keystore, PASS.encode())
        ks.rotate("footer")
        ks.rotate("pii")
    return dst


def _stat(path):
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return st.st_ino, st.st_size, st.st_mtime_ns


def _snapshot(workdir: str, dst: str):
    """Cheap enough to take at the moment of a kill: names, and the identity of the
    destination and of its key material."""
    return set(os.listdir(workdir)), _stat(dst), _stat(material_of(dst))


def _phase(before, now, alive: bool) -> str:
    """What the process had done when the signal was sent (seen from the directory)."""
    if not alive:
        return "finished"
    if now[1:] != before[1:]:
        return "committing"
    if now[0] - before[0]:
        return "writing"
    return "starting"


def _calibrate(env: Env, op: str, workdir: str) -> tuple[float, float]:
    """(run time, time when the run first changed its directory) of unkilled runs: the
    faster of two (the first one also warms the page cache)."""
    runs = []
    for _ in range(2):
        dst = _prepare(env, op, workdir)
        before = _snapshot(workdir, dst)
        t0 = time.monotonic()
        p = subprocess.Popen(env.command(op, dst), env=env.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
        first = None
        while p.poll() is None:
            if first is None and _snapshot(workdir, dst) != before:
                first = time.monotonic() - t0
            time.sleep(0.005)
        took = time.monotonic() - t0
        _, err = p.communicate()
        assert p.returncode == 0, f"{op} (not killed) exited {p.returncode}: {err.strip()}"
        assert _readable(env, op, dst), f"{op} (not killed): the destination does not read back"
        runs.append((took, min(first or env.startup, took)))
    return min(runs)


@pytest.mark.slow  # the main CI pass runs it; the sanitizer passes (-m "not slow") do not
@pytest.mark.parametrize("op", OPS)
def test_kill(env, op, tmp_path):
    rng = random.Random(f"{SEED}-{op}")
    workdir = str(tmp_path / op)
    os.makedirs(workdir)
    n = max(2, -(-TRIALS // len(OPS)))
    duration, work = _calibrate(env, op, workdir)
    src = env.sealed if op in ("decrypt", "rekey") else env.plain
    src_hash = sha256(src)
    src_material = sha256(material_of(src))
    figures = collections.Counter()
    problems = []
    for trial in range(n):
        sig = (signal.SIGKILL, signal.SIGTERM)[trial % 2]
        if op == "decrypt" and rng.random() < 0.5 and os.path.exists(os.path.join(workdir, "out.parquet")):
            os.unlink(os.path.join(workdir, "out.parquet"))
        dst = _prepare(env, op, workdir)
        snap = _snapshot(workdir, dst)
        before = snap[0]
        dst_hash, mat_hash = sha256(dst), sha256(material_of(dst))
        # three kills in four land where the run writes, the rest anywhere
        delay = rng.uniform(max(0.0, work - 0.05) if rng.random() < 0.75 else 0.0, duration * 1.05)
        p = subprocess.Popen(env.command(op, dst), env=env.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
        time.sleep(delay)
        alive = p.poll() is None
        if alive:
            p.send_signal(sig)
        phase = _phase(snap, _snapshot(workdir, dst), alive)
        try:
            _, err = p.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            p.kill()
            _, err = p.communicate()
            problems.append(f"trial {trial}: {op} did not stop within 120 s of {sig.name}")
            continue
        figures[f"{sig.name} {phase}"] += 1
        if not alive:  # runs are faster than measured: aim earlier
            duration = max(work + 0.05, delay)
        where = f"trial {trial} ({sig.name} after {delay:.2f} s, {phase}, exit {p.returncode})"

        if sha256(src) != src_hash or sha256(material_of(src)) != src_material:
            problems.append(f"{where}: the source or its key material changed")
        new_hash, new_mat = sha256(dst), sha256(material_of(dst))
        if (new_hash, new_mat) != (dst_hash, mat_hash) or op == "rotate":
            if new_hash is not None and (new_hash, new_mat) not in _GOOD and not _readable(env, op, dst):
                if op != "decrypt" and env.run(env.cli("verify", dst)).returncode == 0 and _readable(env, op, dst):
                    figures["repaired by verify"] += 1
                else:
                    problems.append(f"{where}: the destination changed and does not read back "
                                    f"(data {'same' if new_hash == dst_hash else 'new'}, "
                                    f"material {'same' if new_mat == mat_hash else 'new'})")
            elif new_hash is not None and op != "decrypt":
                _GOOD.add((new_hash, new_mat))
            if op == "rotate" and new_hash != dst_hash:
                problems.append(f"{where}: rotate changed the data file")
            if new_hash is None and dst_hash is not None:
                problems.append(f"{where}: the existing destination was removed")
        left = sorted(set(os.listdir(workdir)) - before - {os.path.basename(dst), os.path.basename(material_of(dst))})
        if alive and p.returncode == 0 and (sig == signal.SIGKILL or phase == "committing"):
            figures[f"{sig.name} too late (the run had completed)"] += 1
        elif sig == signal.SIGTERM and alive:
            lines = err.strip().splitlines()
            if p.returncode == -signal.SIGTERM and not left and delay < env.startup:
                figures["SIGTERM before the handler was installed"] += 1
            elif p.returncode != 143 or len(lines) != 1:
                problems.append(f"{where}: expected exit 143 and one line on stderr, got {len(lines)} line(s): "
                                f"{err.strip()[-300:]!r}")
            if left:
                problems.append(f"{where}: files left after SIGTERM: {left}")
        elif sig == signal.SIGKILL and alive and left:
            figures["leftovers after SIGKILL"] += len(left)
            pats = leftover_patterns(dst, p.pid)
            strange = [f for f in left if not any(pt.fullmatch(f) for pt in pats)]
            if strange:
                problems.append(f"{where}: leftovers whose name does not carry pid {p.pid}: {strange}")
            r = env.run(env.encrypt_cmd(env.tiny, os.path.join(workdir, "next.parquet"), force=True))
            still = [f for f in left if os.path.exists(os.path.join(workdir, f))]
            figures["leftovers cleaned by the next run"] += len(left) - len(still)
            if r.returncode != 0 or still:
                problems.append(f"{where}: the next run (exit {r.returncode}) left {still}")
        elif not alive and p.returncode != 0:
            problems.append(f"{where}: the unkilled run failed: {err.strip()[-300:]}")
        for f in left:  # keep the next trials' accounting clean
            if os.path.exists(os.path.join(workdir, f)):
                os.unlink(os.path.join(workdir, f))
    summary = ", ".join(f"{k}: {v}" for k, v in sorted(figures.items()))
    print(f"\nkill {op}: {n} trials on {os.path.getsize(env.plain) / 1e6:.0f} MB (seed {SEED}, "
          f"run {duration:.2f} s, first write at {work:.2f} s, start-up {env.startup:.2f} s): {summary}")
    assert not problems, "\n".join(problems)


def test_next_run_removes_leftovers_of_dead_processes_only(env, tmp_path):
    """Leftovers named after a pid that is gone are removed by the next run in their
    directory; those of a live process, and files pqseal did not name, stay."""
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    live = os.getpid()
    names = {
        f".a.parquet.pqseal-{dead.pid}-x1y2.tmp": False,
        f"_TMP_KEY_MATERIAL_FOR_a.parquet.pqseal-{dead.pid}-x1y2.json": False,
        f".a.parquet.pqseal-{live}-x1y2.tmp": True,
        f"_TMP_KEY_MATERIAL_FOR_a.parquet.pqseal-{live}-x1y2.json": True,
        ".a.parquet.pqseal-notapid-x.tmp": True,
        "a.parquet.pqseal-tmp": True,
    }
    for name in names:
        (tmp_path / name).write_bytes(b"x")
    r = env.run(env.encrypt_cmd(env.tiny, str(tmp_path / "b.parquet")))
    assert r.returncode == 0, r.stderr
    kept = {name: (tmp_path / name).exists() for name in names}
    assert kept == names
