"""Differential tests against ``cryptography`` (AESGCM and Cipher(AES, CTR)).

pqseal encrypts, ``cryptography`` decrypts with an independently built module AAD,
and the other way round; sizes from 0 B to 4 MiB, every key size and module type,
both input forms of the batch API (list and contiguous buffer with offsets), key
tables with key_index arrays, per-module ordinal arrays, 1 and 2 native threads.
Backends are also compared byte for byte with injected nonces.
"""

from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest
from cryptography.exceptions import InvalidTag as CryptoInvalidTag
from hypothesis import given
from hypothesis import strategies as st

from pqseal.crypto.cipher import BatchSpec
from pqseal.crypto import CtrModuleCipher, GcmModuleCipher, ModuleType

from pme_reference import (ALL_TYPES, ctr_decrypt_module, ctr_encrypt_module, ctr_keystream_xor,
                           gcm_decrypt_module, gcm_encrypt_module, ref_module_aad)

KEY_LENS = (16, 24, 32)
KiB, MiB = 1 << 10, 1 << 20
# block and buffer boundaries (AES block 16, GHASH/multi-block strides, 64 KiB thread split)
EDGE_SIZES = [0, 1, 2, 15, 16, 17, 31, 32, 33, 47, 48, 49, 63, 64, 65, 95, 96, 97, 127, 128, 129,
              255, 256, 257, 511, 512, 513, 1023, 1024, 1025, 4095, 4096, 4097, 16383, 16384, 16385,
              65535, 65536, 65537]
LARGE_SIZES = [MiB - 1, MiB, 4 * MiB - 1, 4 * MiB]
# file AAD lengths around the native 256-byte stack buffer (file AAD + 7 bytes of module AAD)
AAD_LENS = [0, 1, 8, 16, 17, 248, 249, 250, 251, 1000, 70000]
ORDINAL_EDGES = np.array([0, 1, 127, 128, 255, 256, 257, 32766, 32767])


def rng_for(*parts) -> np.random.Generator:
    return np.random.default_rng(zlib.crc32(repr(parts).encode()))


def rand_sizes(rng, n, hi=4 * MiB) -> list[int]:
    """Log-uniform sizes in 0..hi (most small, some large)."""
    exps = rng.uniform(0, np.log2(hi + 1), size=n)
    return [int(x) for x in np.minimum(np.floor(2.0 ** exps) - 1, hi)]


def rand_meta(rng, n):
    mt = np.array([ALL_TYPES[i % 10] for i in range(n)], dtype=np.int64)
    rng.shuffle(mt)
    rg = np.where(rng.random(n) < 0.5, rng.choice(ORDINAL_EDGES, n), rng.integers(0, 32768, n))
    col = np.where(rng.random(n) < 0.5, rng.choice(ORDINAL_EDGES, n), rng.integers(0, 32768, n))
    pg = np.where(rng.random(n) < 0.5, rng.choice(ORDINAL_EDGES, n), rng.integers(0, 32768, n))
    return mt, rg, col, pg


def make_keys(rng, lens) -> list[bytes]:
    return [rng.bytes(n) for n in lens]


def check_prefix(module: bytes, ptlen: int, overhead: int):
    assert len(module) == ptlen + overhead
    assert struct.unpack_from("<I", module)[0] == len(module) - 4


# ---- single modules, every key size x module type ------------------------------------------


@pytest.mark.parametrize("key_len", KEY_LENS)
@pytest.mark.parametrize("mtype", list(ModuleType), ids=lambda t: t.name)
def test_gcm_single_modules_both_directions(backend, key_len, mtype):
    rng = rng_for("single", backend, key_len, int(mtype))
    key = rng.bytes(key_len)
    for size in EDGE_SIZES:
        fa = rng.bytes(int(rng.choice(AAD_LENS[:-1])))
        rg, col, pg = (int(x) for x in rng.choice(ORDINAL_EDGES, 3))
        aad = ref_module_aad(fa, int(mtype), rg, col, pg)
        pt = rng.bytes(size)
        c = GcmModuleCipher(key, fa, backend=backend)
        m = c.encrypt(pt, mtype, rg, col, pg)
        check_prefix(m, size, 32)
        assert gcm_decrypt_module(key, m, aad) == pt
        theirs = gcm_encrypt_module(key, pt, aad)
        assert c.decrypt(theirs, mtype, rg, col, pg) == pt
        assert c.decrypt(m, mtype, rg, col, pg) == pt


@pytest.mark.parametrize("key_len", KEY_LENS)
def test_ctr_single_modules_both_directions(backend, key_len):
    rng = rng_for("ctr-single", backend, key_len)
    key = rng.bytes(key_len)
    c = CtrModuleCipher(key, backend=backend)
    for size in EDGE_SIZES:
        pt = rng.bytes(size)
        m = c.encrypt(pt)
        check_prefix(m, size, 16)
        assert ctr_decrypt_module(key, m) == pt
        assert c.decrypt(ctr_encrypt_module(key, pt)) == pt


# ---- batches: list input, contiguous input, key tables, metadata arrays ---------------------


def _gcm_batch_case(backend, threads, meta, seed):
    rng = rng_for("gcm-batch", backend, threads, meta, seed)
    sizes = EDGE_SIZES + rand_sizes(rng, 24, hi=MiB)
    rng.shuffle(sizes)
    n = len(sizes)
    pts = [rng.bytes(s) for s in sizes]
    fa = rng.bytes(int(rng.choice(AAD_LENS)))
    if meta == "arrays":
        keys = make_keys(rng, [16, 24, 32, 16, 32])
        ki = rng.integers(0, len(keys), n)
        mt, rg, col, pg = rand_meta(rng, n)
        kw = dict(module_type=mt, row_group=rg, column=col, page=pg, key_index=ki)
    else:
        keys = make_keys(rng, [int(rng.choice(KEY_LENS))])
        ki = np.zeros(n, dtype=np.int64)
        t, r, c_, p = int(rng.integers(0, 10)), int(rng.integers(0, 32768)), 32767, int(rng.integers(0, 32768))
        mt, rg, col, pg = (np.full(n, v) for v in (t, r, c_, p))
        kw = dict(module_type=ModuleType(t), row_group=r, column=c_, page=p, key_index=0)
    aads = [ref_module_aad(fa, int(mt[i]), int(rg[i]), int(col[i]), int(pg[i])) for i in range(n)]
    return rng, keys, ki, pts, fa, kw, aads


@pytest.mark.parametrize("meta", ["arrays", "scalars"])
@pytest.mark.parametrize("threads", [1, 2])
def test_gcm_batch_list_input(backend, threads, meta):
    rng, keys, ki, pts, fa, kw, aads = _gcm_batch_case(backend, threads, meta, 1)
    c = GcmModuleCipher(keys, fa, backend=backend)
    out = c.encrypt_batch(pts, threads=threads, **kw)
    assert len(out) == len(pts)
    for i, pt in enumerate(pts):
        m = bytes(out[i])
        check_prefix(m, len(pt), 32)
        assert gcm_decrypt_module(keys[ki[i]], m, aads[i]) == pt, i
    assert out.to_list() == [bytes(m) for m in out]
    theirs = [gcm_encrypt_module(keys[ki[i]], pt, aads[i]) for i, pt in enumerate(pts)]
    assert c.decrypt_batch(theirs, threads=threads, **kw).to_list() == pts
    assert c.decrypt_batch(out.to_list(), threads=threads, **kw).to_list() == pts


@pytest.mark.parametrize("meta", ["arrays", "scalars"])
@pytest.mark.parametrize("threads", [1, 2])
def test_gcm_batch_contiguous_input_and_caller_output(backend, threads, meta):
    rng, keys, ki, pts, fa, kw, aads = _gcm_batch_case(backend, threads, meta, 2)
    n = len(pts)
    c = GcmModuleCipher(keys, fa, backend=backend)
    # plaintexts in one buffer, in shuffled order with gaps between them
    order = rng.permutation(n)
    buf = bytearray()
    offs = np.zeros(n, dtype=np.int64)
    for i in order:
        buf += rng.bytes(int(rng.integers(0, 40)))  # garbage gap
        offs[i] = len(buf)
        buf += pts[i]
    lens = np.array([len(p) for p in pts], dtype=np.int64)
    src = np.frombuffer(bytes(buf), dtype=np.uint8)  # read-only input is fine

    res = c.encrypt_batch(src, offsets=offs, lengths=lens, threads=threads, **kw)
    for i in range(n):
        assert gcm_decrypt_module(keys[ki[i]], res[i], aads[i]) == pts[i], i

    # caller-provided output with gaps filled with a sentinel that must survive
    need = lens + 32
    gaps = rng.integers(0, 24, n)
    out_offs = np.cumsum(gaps + np.concatenate([[0], need[:-1]]))
    out = bytearray(b"\xa5" * int(out_offs[-1] + need[-1] + 7))
    res2 = c.encrypt_batch(src, offsets=offs, lengths=lens, threads=threads, out=out,
                           out_offsets=out_offs, **kw)
    mask = np.ones(len(out), dtype=bool)
    for i in range(n):
        o = int(out_offs[i])
        m = bytes(out[o:o + need[i]])
        assert bytes(res2[i]) == m
        assert gcm_decrypt_module(keys[ki[i]], m, aads[i]) == pts[i], i
        mask[o:o + need[i]] = False
    assert np.all(np.frombuffer(out, dtype=np.uint8)[mask] == 0xA5), "bytes outside the modules changed"

    # cryptography's modules in one contiguous buffer (reverse order), decrypted in place of offsets
    theirs = [gcm_encrypt_module(keys[ki[i]], pt, aads[i]) for i, pt in enumerate(pts)]
    cbuf = bytearray()
    coffs = np.zeros(n, dtype=np.int64)
    for i in reversed(range(n)):
        coffs[i] = len(cbuf)
        cbuf += theirs[i]
    clens = np.array([len(t) for t in theirs], dtype=np.int64)
    back = c.decrypt_batch(cbuf, offsets=coffs, lengths=clens, threads=threads, **kw)
    assert back.to_list() == pts
    # and into a caller buffer at chosen offsets
    pout = np.full(int(lens.sum()) + 3 * n, 0x5A, dtype=np.uint8)
    poffs = np.concatenate([[0], np.cumsum(lens + 3)[:-1]])
    back2 = c.decrypt_batch(memoryview(cbuf), offsets=coffs, lengths=clens, threads=threads, out=pout,
                            out_offsets=poffs, **kw)
    for i in range(n):
        assert pout[poffs[i]:poffs[i] + lens[i]].tobytes() == pts[i]
        assert pout[poffs[i] + lens[i]:poffs[i] + lens[i] + 3].tobytes() == b"\x5a" * 3
        assert bytes(back2[i]) == pts[i]


@pytest.mark.parametrize("threads", [1, 2])
def test_ctr_batch_both_inputs(backend, threads):
    rng = rng_for("ctr-batch", backend, threads)
    sizes = EDGE_SIZES + rand_sizes(rng, 30, hi=MiB)
    rng.shuffle(sizes)
    n = len(sizes)
    pts = [rng.bytes(s) for s in sizes]
    keys = make_keys(rng, [16, 24, 32, 24])
    ki = rng.integers(0, len(keys), n)
    c = CtrModuleCipher(keys, backend=backend)
    out = c.encrypt_batch(pts, key_index=ki, threads=threads)
    for i in range(n):
        check_prefix(bytes(out[i]), sizes[i], 16)
        assert ctr_decrypt_module(keys[ki[i]], out[i]) == pts[i], i
    theirs = [ctr_encrypt_module(keys[ki[i]], p) for i, p in enumerate(pts)]
    assert c.decrypt_batch(theirs, key_index=ki, threads=threads).to_list() == pts
    buf = b"".join(theirs)
    lens = np.array([len(t) for t in theirs])
    offs = np.concatenate([[0], np.cumsum(lens)[:-1]])
    assert c.decrypt_batch(buf, offsets=offs, lengths=lens, key_index=ki, threads=threads).to_list() == pts
    # module type / ordinals play no part in CTR (no AAD)
    mt = rng.integers(0, 10, n)
    assert c.decrypt_batch(theirs, key_index=ki, module_type=mt, row_group=7, threads=threads).to_list() == pts


# ---- large modules (up to 4 MiB), split across native threads -------------------------------


@pytest.mark.parametrize("alg", ["gcm", "ctr"])
def test_large_modules(backend, alg):
    rng = rng_for("large", backend, alg)
    sizes = LARGE_SIZES + rand_sizes(rng, 2, hi=4 * MiB) + [int(rng.integers(64 * KiB, 4 * MiB))]
    n = len(sizes)
    pts = [rng.bytes(s) for s in sizes]
    keys = make_keys(rng, KEY_LENS)
    ki = np.arange(n) % 3
    if alg == "gcm":
        fa = rng.bytes(300)
        mt = np.array([2, 3, 4, 2, 0, 9, 2][:n])
        rg, col, pg = rng.integers(0, 32768, (3, n))
        c = GcmModuleCipher(keys, fa, backend=backend)
        kw = dict(module_type=mt, row_group=rg, column=col, page=pg, key_index=ki)
        aads = [ref_module_aad(fa, int(mt[i]), int(rg[i]), int(col[i]), int(pg[i])) for i in range(n)]
        enc_ref = lambda i: gcm_encrypt_module(keys[ki[i]], pts[i], aads[i])  # noqa: E731
        dec_ref = lambda i, m: gcm_decrypt_module(keys[ki[i]], m, aads[i])  # noqa: E731
    else:
        c = CtrModuleCipher(keys, backend=backend)
        kw = dict(key_index=ki)
        enc_ref = lambda i: ctr_encrypt_module(keys[ki[i]], pts[i])  # noqa: E731
        dec_ref = lambda i, m: ctr_decrypt_module(keys[ki[i]], m)  # noqa: E731
    out = c.encrypt_batch(pts, threads=2, **kw)
    for i in range(n):
        assert dec_ref(i, bytes(out[i])) == pts[i], sizes[i]
    theirs = [enc_ref(i) for i in range(n)]
    assert c.decrypt_batch(theirs, threads=2, **kw).to_list() == pts
    # one at a time through the single-module API as well
    for i in (0, n - 1):
        one = c.encrypt(pts[i], **({"key_index": int(ki[i])} if alg == "ctr" else dict(
            module_type=int(kw["module_type"][i]), row_group=int(kw["row_group"][i]),
            column=int(kw["column"][i]), page=int(kw["page"][i]), key_index=int(ki[i]))))
        assert dec_ref(i, one) == pts[i]


# ---- nonces -----------------------------------------------------------------------------------


@pytest.mark.parametrize("cls", [GcmModuleCipher, CtrModuleCipher])
def test_nonces_are_fresh(backend, cls):
    c = cls(bytes(range(16)), backend=backend)
    a = c.encrypt_batch([b""] * 2000)
    b = c.encrypt_batch([b""] * 2000)
    nonces = {bytes(m[4:16]) for m in a} | {bytes(m[4:16]) for m in b}
    assert len(nonces) == 4000
    assert c.encrypt(b"same") != c.encrypt(b"same")


# ---- backend against backend, byte for byte -----------------------------------------------


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("alg", ["gcm", "ctr"])
def test_backends_agree_with_injected_nonces(all_backends, alg, threads):
    rng = rng_for("backends", alg, threads)
    sizes = EDGE_SIZES + rand_sizes(rng, 12, hi=2 * MiB) + [MiB + 3]
    n = len(sizes)
    pts = [rng.bytes(s) for s in sizes]
    keys = make_keys(rng, [16, 24, 32])
    ki = rng.integers(0, 3, n)
    nonces = bytearray(rng.bytes(12 * n))
    nonces[:12] = b"\x00" * 12
    nonces[12:24] = b"\xff" * 12
    nonces = bytes(nonces)
    mt, rg, col, pg = rand_meta(rng, n)
    fa = rng.bytes(251)
    outs = {}
    for be in all_backends:
        if alg == "gcm":
            c = GcmModuleCipher(keys, fa, backend=be)
        else:
            c = CtrModuleCipher(keys, backend=be)
        outs[be] = c._run(BatchSpec(encrypt=True, modules=pts, module_type=mt, row_group=rg, column=col, page=pg,
                                    key_index=ki, threads=threads, nonces=nonces)).to_list()
    first = outs[all_backends[0]]
    for be in all_backends[1:]:
        diff = [i for i in range(n) if outs[be][i] != first[i]]
        assert not diff, (f"{be} differs from {all_backends[0]} at modules {diff[:5]} "
                          f"(sizes {[sizes[i] for i in diff[:5]]})")
    # and both equal cryptography with the same nonces
    for i in range(n):
        nonce = nonces[12 * i:12 * i + 12]
        if alg == "gcm":
            aad = ref_module_aad(fa, int(mt[i]), int(rg[i]), int(col[i]), int(pg[i]))
            assert first[i] == gcm_encrypt_module(keys[ki[i]], pts[i], aad, nonce), i
        else:
            assert first[i] == ctr_encrypt_module(keys[ki[i]], pts[i], nonce), i


def test_backends_agree_on_contiguous_batches(all_backends):
    """Many small modules through the contiguous fast path on every backend."""
    rng = rng_for("backends-contiguous")
    n = 700
    lens = rng.integers(0, 300, n)
    buf = rng.bytes(int(lens.sum()))
    offs = np.concatenate([[0], np.cumsum(lens)[:-1]])
    keys = make_keys(rng, [16, 32])
    ki = rng.integers(0, 2, n)
    nonces = rng.bytes(12 * n)
    results = []
    for be in all_backends:
        for cls, extra in ((GcmModuleCipher, (b"file",)), (CtrModuleCipher, ())):
            c = cls(keys, *extra, backend=be)
            r = c._run(BatchSpec(encrypt=True, modules=buf, offsets=offs, lengths=lens, module_type=3, row_group=5,
                                 column=6, key_index=ki, threads=2, nonces=nonces))
            results.append((cls.__name__, r.buffer.tobytes()))
    by_alg = {}
    for name, data in results:
        by_alg.setdefault(name, set()).add(data)
    assert all(len(v) == 1 for v in by_alg.values())


# ---- property-based differential ----------------------------------------------------------


@given(pt=st.binary(max_size=2048), key_len=st.sampled_from(KEY_LENS), fa=st.binary(max_size=300),
       mtype=st.integers(0, 9), rg=st.integers(0, 32767), col=st.integers(0, 32767),
       pg=st.integers(0, 32767), nonce=st.binary(min_size=12, max_size=12), data=st.data())
def test_gcm_matches_cryptography_property(backend, pt, key_len, fa, mtype, rg, col, pg, nonce, data):
    key = data.draw(st.binary(min_size=key_len, max_size=key_len))
    c = GcmModuleCipher(key, fa, backend=backend)
    aad = ref_module_aad(fa, mtype, rg, col, pg)
    got = c._run(BatchSpec(encrypt=True, modules=[pt], module_type=mtype, row_group=rg, column=col, page=pg,
                           nonces=nonce)).buffer.tobytes()
    assert got == gcm_encrypt_module(key, pt, aad, nonce)
    assert c.decrypt(got, mtype, rg, col, pg) == pt
    fresh = c.encrypt(pt, mtype, rg, col, pg)
    assert gcm_decrypt_module(key, fresh, aad) == pt
    # a module encrypted for another AAD must not verify under cryptography either
    other = ref_module_aad(fa + b"x", mtype, rg, col, pg)
    with pytest.raises(CryptoInvalidTag):
        gcm_decrypt_module(key, fresh, other)


@given(pt=st.binary(max_size=2048), key_len=st.sampled_from(KEY_LENS),
       nonce=st.binary(min_size=12, max_size=12), data=st.data())
def test_ctr_matches_cryptography_property(backend, pt, key_len, nonce, data):
    key = data.draw(st.binary(min_size=key_len, max_size=key_len))
    c = CtrModuleCipher(key, backend=backend)
    got = c._run(BatchSpec(encrypt=True, modules=[pt], module_type=2, nonces=nonce)).buffer.tobytes()
    assert got == struct.pack("<I", 12 + len(pt)) + nonce + ctr_keystream_xor(key, nonce, pt)
    assert c.decrypt(got) == pt
