"""Known-answer tests: NIST CAVP AES-GCM and RFC 3686 AES-CTR on every backend.

Sources and the subset used are described in tests/vectors/README.md.
"""

from __future__ import annotations

import base64
import struct

import numpy as np
import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from pqseal._native import lib
from pqseal.crypto.cipher import BatchSpec
from pqseal.crypto import CtrModuleCipher, GcmModuleCipher, ModuleKey, unwrap_key_locally, wrap_key_locally
from pqseal.errors import InvalidTag

from vector_files import GCM_CASES_PER_FILE, ctr_rfc3686, cryptography_vectors_rfc3686, gcm_cavp

KEY_BITS = (128, 192, 256)


def _b64(*parts: bytes) -> str:
    return base64.b64encode(b"".join(parts)).decode("ascii")


def _module(*parts: bytes) -> bytes:
    body = b"".join(parts)
    return struct.pack("<I", len(body)) + body


# ---- the vector files themselves ---------------------------------------------------------


@pytest.mark.parametrize("kind", ["encrypt", "decrypt"])
@pytest.mark.parametrize("bits", KEY_BITS)
def test_cavp_gcm_subset_is_complete(kind, bits):
    vecs = gcm_cavp(kind, bits)
    assert len(vecs) == GCM_CASES_PER_FILE
    assert {len(v.key) for v in vecs} == {bits // 8}
    assert {len(v.ct) for v in vecs} == {0, 13, 16, 32, 51}  # PTlen 0, 104, 128, 256, 408
    assert {len(v.aad) for v in vecs} == {0, 16, 20, 48, 90}  # AADlen 0, 128, 160, 384, 720
    fails = sum(v.fail for v in vecs)
    if kind == "encrypt":
        assert fails == 0
    else:  # CAVP marks some decrypt cases FAIL; both kinds must be present
        assert 0 < fails < len(vecs)


def test_rfc3686_file_matches_rfc_and_cryptography():
    vecs = ctr_rfc3686()
    assert len(vecs) == 9
    assert [len(v.key) for v in vecs] == [16] * 3 + [24] * 3 + [32] * 3
    # an independent transcription of the same RFC section
    theirs = cryptography_vectors_rfc3686()
    assert len(theirs) == 9
    for ours, ref in zip(vecs, theirs):
        assert ours.key == ref["KEY"], ours.name
        assert ours.counter_block == ref["IV"], ours.name
        assert ours.pt == ref["PLAINTEXT"], ours.name
        assert ours.ct == ref["CIPHERTEXT"], ours.name
        # and recomputed with another AES-CTR implementation
        enc = Cipher(algorithms.AES(ours.key), modes.CTR(ours.counter_block)).encryptor()
        assert enc.update(ours.pt) + enc.finalize() == ours.ct, ours.name


# ---- AES-GCM: NIST CAVP --------------------------------------------------------------------


@pytest.mark.parametrize("bits", KEY_BITS)
def test_cavp_gcm_encrypt(backend, bits):
    bad = []
    for v in gcm_cavp("encrypt", bits):
        got = wrap_key_locally(v.pt, v.key, v.aad, backend=backend, _nonce=v.iv)
        if got != _b64(v.iv, v.ct, v.tag):
            bad.append(v.name)
            continue
        # the same case decrypts back (fresh ModuleKey object this time)
        if unwrap_key_locally(got, ModuleKey(v.key), v.aad, backend=backend) != v.pt:
            bad.append(v.name + " (round trip)")
    assert not bad, f"{len(bad)} CAVP encrypt cases wrong on {backend}: {bad[:5]}"


@pytest.mark.parametrize("bits", KEY_BITS)
def test_cavp_gcm_decrypt(backend, bits):
    bad = []
    for v in gcm_cavp("decrypt", bits):
        wrapped = _b64(v.iv, v.ct, v.tag)
        try:
            got = unwrap_key_locally(wrapped, v.key, v.aad, backend=backend)
        except InvalidTag:
            if not v.fail:
                bad.append(v.name + " rejected")
            continue
        if v.fail:
            bad.append(v.name + " FAIL case accepted")
        elif got != v.pt:
            bad.append(v.name + " wrong plaintext")
    assert not bad, f"{len(bad)} CAVP decrypt cases wrong on {backend}: {bad[:5]}"


@pytest.mark.parametrize("bits", KEY_BITS)
def test_cavp_gcm_framed_with_length_prefix(backend, bits):
    """The PME module framing (len || nonce || ct || tag) around CAVP cases, with the
    case's AAD given as a fixed AAD."""
    bad = []
    for v in gcm_cavp("encrypt", bits)[::5]:
        c = GcmModuleCipher(v.key, backend=backend)
        got = c._run(BatchSpec(encrypt=True, modules=[v.pt], module_type=0, nonces=v.iv, aad_mode=lib.PQ_AAD_FIXED,
                               aad=v.aad)).buffer.tobytes()
        if got != _module(v.iv, v.ct, v.tag):
            bad.append(v.name)
            continue
        back = c._run(BatchSpec(encrypt=False, modules=[got], module_type=0, aad_mode=lib.PQ_AAD_FIXED,
                                aad=v.aad)).buffer.tobytes()
        if back != v.pt:
            bad.append(v.name + " (decrypt)")
    assert not bad, bad[:5]


@pytest.mark.parametrize("bits", KEY_BITS)
def test_cavp_gcm_empty_aad_as_one_batch_with_key_table(backend, bits):
    """All empty-AAD cases in one batch: one key-table entry per case, key_index array,
    injected nonces, two native threads requested."""
    enc = [v for v in gcm_cavp("encrypt", bits) if not v.aad]
    assert len(enc) == 75
    c = GcmModuleCipher([v.key for v in enc], backend=backend)
    n = len(enc)
    out = c._run(BatchSpec(encrypt=True, modules=[v.pt for v in enc], module_type=0, key_index=np.arange(n), threads=2,
                           nonces=b"".join(v.iv for v in enc), aad_mode=lib.PQ_AAD_FIXED, aad=b"",
                           framing=lib.PQ_FRAME_RAW)).to_list()
    assert out == [v.iv + v.ct + v.tag for v in enc]
    # reversed key order: key_index must really select the key
    rev = c._run(BatchSpec(encrypt=False, modules=out[::-1], module_type=0, key_index=np.arange(n)[::-1], threads=2,
                           aad_mode=lib.PQ_AAD_FIXED, aad=b"", framing=lib.PQ_FRAME_RAW)).to_list()
    assert rev == [v.pt for v in enc][::-1]

    dec = [v for v in gcm_cavp("decrypt", bits) if not v.aad]
    c = GcmModuleCipher([v.key for v in dec], backend=backend)
    good = [i for i, v in enumerate(dec) if not v.fail]
    got = c._run(BatchSpec(encrypt=False, modules=[dec[i].iv + dec[i].ct + dec[i].tag for i in good], module_type=0,
                           key_index=np.array(good), aad_mode=lib.PQ_AAD_FIXED, aad=b"",
                           framing=lib.PQ_FRAME_RAW)).to_list()
    assert got == [dec[i].pt for i in good]
    # the whole file's empty-AAD cases: the first FAIL case is the one reported
    first_fail = next(i for i, v in enumerate(dec) if v.fail)
    with pytest.raises(InvalidTag) as ei:
        c._run(BatchSpec(encrypt=False, modules=[v.iv + v.ct + v.tag for v in dec], module_type=0,
                         key_index=np.arange(len(dec)), aad_mode=lib.PQ_AAD_FIXED, aad=b"", framing=lib.PQ_FRAME_RAW))
    assert ei.value.index == first_fail


def _as_module_aad(aad: bytes):
    """(file_aad, type, rg, col, page) if ``aad`` has the shape of a PME module AAD, else None."""
    if aad and aad[-1] == 0:
        return aad[:-1], 0, 0, 0, 0
    if len(aad) >= 5 and aad[-5] in (1, 3, 5, 6, 7, 8, 9):
        rg, col = struct.unpack("<hh", aad[-4:])
        if rg >= 0 and col >= 0:
            return aad[:-5], aad[-5], rg, col, 0
    if len(aad) >= 7 and aad[-7] in (2, 4):
        rg, col, page = struct.unpack("<hhh", aad[-6:])
        if min(rg, col, page) >= 0:
            return aad[:-7], aad[-7], rg, col, page
    return None


def test_cavp_gcm_through_public_module_api(backend):
    """CAVP cases whose AAD is a valid module AAD run through encrypt()/decrypt() with the
    module AAD built by the native core from file_aad, type and ordinals."""
    seen = 0
    for bits in KEY_BITS:
        for v in gcm_cavp("encrypt", bits):
            split = _as_module_aad(v.aad)
            if split is None:
                continue
            fa, t, rg, col, pg = split
            c = GcmModuleCipher(v.key, fa, backend=backend)
            got = c._run(BatchSpec(encrypt=True, modules=[v.pt], module_type=t, row_group=rg, column=col, page=pg,
                                   nonces=v.iv)).buffer.tobytes()
            assert got == _module(v.iv, v.ct, v.tag), v.name
            assert c.decrypt(got, t, rg, col, pg) == v.pt, v.name
            seen += 1
        for v in gcm_cavp("decrypt", bits):
            split = _as_module_aad(v.aad)
            if split is None:
                continue
            fa, t, rg, col, pg = split
            c = GcmModuleCipher(v.key, fa, backend=backend)
            mod = _module(v.iv, v.ct, v.tag)
            if v.fail:
                with pytest.raises(InvalidTag):
                    c.decrypt(mod, t, rg, col, pg)
            else:
                assert c.decrypt(mod, t, rg, col, pg) == v.pt, v.name
            seen += 1
    assert seen >= 10  # the vector set is fixed; guards against the filter matching nothing


# ---- AES-CTR: RFC 3686 ----------------------------------------------------------------------


@pytest.mark.parametrize("vec", ctr_rfc3686(), ids=lambda v: v.name.split(":")[0].replace(" ", ""))
def test_rfc3686_ctr(backend, vec):
    c = CtrModuleCipher(vec.key, backend=backend)
    got = c._run(BatchSpec(encrypt=True, modules=[vec.pt], module_type=2, nonces=vec.nonce)).buffer.tobytes()
    assert got == _module(vec.nonce, vec.ct)
    assert c.decrypt(got) == vec.pt
    # decryption is the same keystream: a module built from the vector decrypts
    assert c.decrypt(_module(vec.nonce, vec.ct)) == vec.pt


def test_rfc3686_ctr_one_batch_mixed_key_sizes(backend):
    vecs = ctr_rfc3686()
    n = len(vecs)
    c = CtrModuleCipher([v.key for v in vecs], backend=backend)  # 128/192/256-bit keys in one table
    # repeat the set so the batch spans several multi-buffer chunks
    reps = 5
    idx = np.tile(np.arange(n), reps)
    got = c._run(BatchSpec(encrypt=True, modules=[v.pt for v in vecs] * reps, module_type=2, key_index=idx, threads=2,
                           nonces=b"".join(v.nonce for v in vecs) * reps)).to_list()
    assert got == [_module(v.nonce, v.ct) for v in vecs] * reps
    # contiguous input with offsets/lengths, decrypted in reverse order
    buf = b"".join(got[::-1])
    lens = np.array([len(m) for m in got[::-1]])
    offs = np.concatenate([[0], np.cumsum(lens)[:-1]])
    back = c.decrypt_batch(buf, offsets=offs, lengths=lens, key_index=idx[::-1]).to_list()
    assert back == [v.pt for v in vecs][::-1] * reps


# ---- plaintext-footer signature (PME §5.5) ----------------------------------------------------


@pytest.mark.parametrize("bits", KEY_BITS)
def test_footer_signature_is_gcm_tag_under_a_fresh_nonce(backend, bits):
    """nonce ‖ tag of AES-GCM over the footer with AAD file_aad ‖ 0x00, checked with
    `cryptography`; the nonce is pqseal's, never the caller's."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    from pqseal.crypto import random_bytes

    key, file_aad, footer = random_bytes(bits // 8), b"prefix" + random_bytes(8), b"thrift footer bytes" * 7
    c = GcmModuleCipher(key, file_aad, backend=backend)
    sigs = [c.footer_signature(footer) for _ in range(3)]
    for sig in sigs:
        nonce, tag = sig[:12], sig[12:]
        assert len(sig) == 28
        assert AESGCM(key).encrypt(nonce, footer, file_aad + b"\x00")[-16:] == tag
        c.verify_footer_signature(footer, sig)
        with pytest.raises(InvalidTag):
            c.verify_footer_signature(footer + b"x", sig)
    assert len({s[:12] for s in sigs}) == 3  # a fresh nonce per signature
    # the public call takes no nonce: a caller cannot make pqseal sign under a nonce it chose
    with pytest.raises(TypeError):
        c.footer_signature(footer, nonce=sigs[0][:12])
