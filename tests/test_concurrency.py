"""Concurrency: many Python threads sharing keys and ciphers on every backend, the GIL
being released during native calls, native thread splitting, and fork safety."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading

import numpy as np
import pytest

import pqseal
from pqseal.crypto import CtrModuleCipher, GcmModuleCipher, ModuleKey, ModuleType
from pqseal.errors import InvalidTag

from pme_reference import (ctr_decrypt_module, ctr_encrypt_module, gcm_decrypt_module, gcm_encrypt_module,
                           ref_module_aad)

MiB = 1 << 20
N_THREADS = 16
ITERATIONS = 50


def test_sixteen_threads_share_keys_and_ciphers():
    backends = pqseal.available_backends()
    raw = [os.urandom(n) for n in (16, 24, 32)]
    mkeys = [ModuleKey(k) for k in raw]
    fa = os.urandom(40)
    gcm = {be: GcmModuleCipher(mkeys, fa, backend=be) for be in backends}
    ctr = {be: CtrModuleCipher(mkeys, backend=be) for be in backends}
    barrier = threading.Barrier(N_THREADS)
    failures: list[str] = []
    used = np.zeros((N_THREADS, len(mkeys)), dtype=np.int64)  # encryptions per thread and key
    ops_done = np.zeros(N_THREADS, dtype=np.int64)

    def sizes(rng, n):
        s = rng.integers(0, 3000, n)
        if rng.random() < 0.3:
            s[0] = int(rng.integers(64 * 1024, 300 * 1024))  # big enough for a native thread split
        return [int(x) for x in s]

    def worker(tid: int):
        rng = np.random.default_rng(1000 + tid)
        out_buf = bytearray(2 * MiB)
        barrier.wait()
        try:
            for _ in range(ITERATIONS):
                be = backends[int(rng.integers(len(backends)))]
                other = backends[int(rng.integers(len(backends)))]
                threads = int(rng.choice([1, 2]))
                op = int(rng.integers(0, 6))
                n = int(rng.integers(1, 12))
                pts = [rng.bytes(s) for s in sizes(rng, n)]
                ki = rng.integers(0, len(mkeys), n)
                mt = rng.integers(0, 10, n)
                rg, col, pg = rng.integers(0, 32768, (3, n))
                kw = dict(module_type=mt, row_group=rg, column=col, page=pg, key_index=ki)
                aads = [ref_module_aad(fa, int(mt[i]), int(rg[i]), int(col[i]), int(pg[i])) for i in range(n)]
                if op == 0:  # single-module GCM, checked by cryptography
                    i = 0
                    m = gcm[be].encrypt(pts[0], ModuleType(int(mt[0])), int(rg[0]), int(col[0]), int(pg[0]),
                                        key_index=int(ki[0]))
                    used[tid, ki[0]] += 1
                    assert gcm_decrypt_module(raw[ki[i]], m, aads[0]) == pts[0]
                elif op == 1:  # GCM batch encrypt here, decrypt on the other backend
                    out = gcm[be].encrypt_batch(pts, threads=threads, **kw)
                    np.add.at(used[tid], ki, 1)
                    for i in range(n):
                        assert gcm_decrypt_module(raw[ki[i]], out[i], aads[i]) == pts[i]
                    assert gcm[other].decrypt_batch(out.to_list(), threads=threads, **kw).to_list() == pts
                elif op == 2:  # decrypt cryptography's modules from one contiguous buffer
                    theirs = [gcm_encrypt_module(raw[ki[i]], pts[i], aads[i]) for i in range(n)]
                    lens = np.array([len(t) for t in theirs])
                    offs = np.concatenate([[0], np.cumsum(lens)[:-1]])
                    got = gcm[be].decrypt_batch(b"".join(theirs), offsets=offs, lengths=lens, threads=threads, **kw)
                    assert got.to_list() == pts
                elif op == 3:  # CTR both ways, into a per-thread caller buffer
                    out = ctr[be].encrypt_batch(pts, key_index=ki, threads=threads, out=out_buf)
                    np.add.at(used[tid], ki, 1)
                    for i in range(n):
                        assert ctr_decrypt_module(raw[ki[i]], out[i]) == pts[i]
                    theirs = [ctr_encrypt_module(raw[ki[i]], pts[i]) for i in range(n)]
                    assert ctr[other].decrypt_batch(theirs, key_index=ki, threads=threads).to_list() == pts
                elif op == 4:  # tampering is caught, and names the right module
                    out = gcm[be].encrypt_batch(pts, threads=threads, **kw).to_list()
                    np.add.at(used[tid], ki, 1)
                    bad = int(rng.integers(n))
                    out[bad] = out[bad][:-1] + bytes([out[bad][-1] ^ 1])
                    try:
                        gcm[other].decrypt_batch(out, threads=1, **kw)
                    except InvalidTag as e:
                        assert e.index == bad
                    else:
                        raise AssertionError("tampered batch decrypted")
                else:  # a new cipher over the shared key objects, made in this thread
                    c = GcmModuleCipher([mkeys[2], mkeys[0]], b"", backend=be)
                    m = c.encrypt(pts[0], ModuleType.FOOTER, key_index=1)
                    used[tid, 0] += 1
                    assert gcm_decrypt_module(raw[0], m, b"\x00") == pts[0]
                    assert c.decrypt(m, ModuleType.FOOTER, key_index=1) == pts[0]
                ops_done[tid] += 1
        except BaseException as exc:  # noqa: BLE001 - reported below
            failures.append(f"thread {tid}: {type(exc).__name__}: {exc}")

    workers = [threading.Thread(target=worker, args=(t,)) for t in range(N_THREADS)]
    for t in workers:
        t.start()
    for t in workers:
        t.join(timeout=300)
    assert not any(t.is_alive() for t in workers), "a worker thread hung"
    assert not failures, failures[:5]
    assert ops_done.sum() == N_THREADS * ITERATIONS
    # invocation counting is exact under contention
    assert [k.invocations for k in mkeys] == used.sum(axis=0).tolist()


@pytest.mark.parametrize("threads", [1, 2])
def test_gil_is_released_during_native_calls(backend, threads):
    """While one thread is inside a big native batch, another Python thread runs.

    The forced GIL hand-off interval is raised for the test, so if the native call held
    the GIL the main thread could not run at all until the call had returned (and
    `done` was set): progress would be 0. No timing is asserted."""
    c = GcmModuleCipher(os.urandom(32), backend=backend)
    n = 48
    data = np.frombuffer(os.urandom(n * MiB), dtype=np.uint8)
    offs = np.arange(n, dtype=np.int64) * MiB
    lens = np.full(n, MiB, dtype=np.int64)
    out = np.empty(n * (MiB + 32), dtype=np.uint8)
    old = sys.getswitchinterval()
    progress = 0
    sys.setswitchinterval(30.0)
    try:
        for _attempt in range(5):
            started, done = threading.Event(), threading.Event()

            def work():
                started.set()
                c.encrypt_batch(data, offsets=offs, lengths=lens, out=out, threads=threads)
                done.set()

            t = threading.Thread(target=work)
            t.start()
            started.wait()
            while not done.is_set():
                progress += 1
                done.wait(0.0005)
            t.join()
            if progress:
                break
    finally:
        sys.setswitchinterval(old)
    assert progress > 0, "no other Python thread ran during the native call: the GIL was held"
    first = bytes(out[:MiB + 32])
    assert c.decrypt(first) == data[:MiB].tobytes()


def _two_bad_modules(c, big):
    """[small good, big bad, small bad, small good]. With native threads the modules are
    claimed in index order, so module 2 can be found bad while module 1 (16 MiB) is still
    being decrypted by another thread: the later failure may be recorded first."""
    mods = [bytearray(m) for m in c.encrypt_batch([b"a" * 64, big, b"b" * 64, b"c" * 64]).to_list()]
    mods[1][-1] ^= 1
    mods[2][-1] ^= 1
    return mods


@pytest.mark.parametrize("threads", [1, 2])
def test_invalid_tag_names_the_first_failing_module(backend, threads):
    """Always module 1, never 2 (csrc/core.c): a worker skips only modules after the
    lowest failure seen so far (pq_should_stop), so module 1 is always decrypted and found
    bad, and of the failures recorded by all workers the lowest index is reported."""
    c = GcmModuleCipher(os.urandom(16), backend=backend)
    mods = _two_bad_modules(c, os.urandom(16 * MiB))
    for _ in range(5):
        with pytest.raises(InvalidTag) as ei:
            c.decrypt_batch(mods, threads=threads)
        assert ei.value.index == 1 and "module 1" in str(ei.value)


_FORK_SCRIPT = textwrap.dedent("""
    import os, sys, time
    from pqseal.crypto import GcmModuleCipher, CtrModuleCipher
    be = sys.argv[1]
    big = [os.urandom(1 << 20) for _ in range(4)]
    ciphers = [GcmModuleCipher(bytes(16), backend=be), CtrModuleCipher(bytes(32), backend=be)]
    for c in ciphers:  # start native worker threads (if any) before forking
        c.encrypt_batch(big, threads=2)
    pid = os.fork()
    if pid == 0:
        try:
            ok = all(c.decrypt_batch(c.encrypt_batch(big, threads=2).to_list(), threads=2).to_list() == big
                     for c in ciphers)
            os._exit(0 if ok else 1)
        except BaseException:
            os._exit(2)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        p, status = os.waitpid(pid, os.WNOHANG)
        if p:
            code = os.waitstatus_to_exitcode(status)
            break
        time.sleep(0.01)
    else:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
        print("child hung after fork"); sys.exit(3)
    if code != 0:
        print("child failed", code); sys.exit(4)
    # the parent's threads still work
    ok = all(c.decrypt_batch(c.encrypt_batch(big, threads=2).to_list(), threads=2).to_list() == big
             for c in ciphers)
    sys.exit(0 if ok else 5)
    """)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork() on this platform")
def test_native_threads_survive_fork(backend):
    r = subprocess.run([sys.executable, "-c", _FORK_SCRIPT, backend], capture_output=True, text=True,
                       timeout=180)
    assert r.returncode == 0, (r.returncode, r.stdout, r.stderr[-2000:])
