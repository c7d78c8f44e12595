"""Property-based tests (Hypothesis): tampering, truncation and error hygiene.

Any single flipped bit of a GCM module or of its AAD inputs must make decryption
fail; nothing may return data. Truncations fail cleanly. Error messages name the
module and never contain key bytes. Failed batches leave nothing behind.
"""

from __future__ import annotations

import base64
import struct

import numpy as np
import pytest
from hypothesis import assume, given, note
from hypothesis import strategies as st

from pqseal.crypto import CtrModuleCipher, GcmModuleCipher, ModuleKey, ModuleType
from pqseal.errors import InvalidTag, MalformedModule, PqsealError

from pme_reference import ref_module_aad

KEY_LENS = (16, 24, 32)

keys = st.sampled_from(KEY_LENS).flatmap(lambda n: st.binary(min_size=n, max_size=n))
ordinals = st.integers(0, 32767)
mtypes = st.sampled_from(list(ModuleType))


@st.composite
def gcm_cases(draw, max_pt=600):
    return dict(key=draw(keys), pt=draw(st.binary(max_size=max_pt)), fa=draw(st.binary(max_size=300)),
                mtype=draw(mtypes), rg=draw(ordinals), col=draw(ordinals), page=draw(ordinals))


def _enc(case, backend):
    c = GcmModuleCipher(case["key"], case["fa"], backend=backend)
    m = c.encrypt(case["pt"], case["mtype"], case["rg"], case["col"], case["page"])
    assert c.decrypt(m, case["mtype"], case["rg"], case["col"], case["page"]) == case["pt"]
    return c, m


def _decrypt_must_fail(c, module, mtype, rg, col, page, allowed=(InvalidTag,)):
    try:
        got = c.decrypt(module, mtype, rg, col, page)
    except allowed:
        return
    pytest.fail(f"tampered module decrypted to {len(got)} bytes")


# ---- tampering with the module -------------------------------------------------------------


@given(case=gcm_cases(), region=st.sampled_from(["len", "nonce", "ct", "tag"]), data=st.data())
def test_any_flipped_bit_in_module_is_rejected(backend, case, region, data):
    c, m = _enc(case, backend)
    ptlen = len(case["pt"])
    spans = {"len": (0, 4), "nonce": (4, 16), "ct": (16, 16 + ptlen), "tag": (16 + ptlen, 32 + ptlen)}
    lo, hi = spans[region]
    assume(hi > lo)
    pos = data.draw(st.integers(lo, hi - 1), label="byte")
    bit = data.draw(st.integers(0, 7), label="bit")
    bad = bytearray(m)
    bad[pos] ^= 1 << bit
    args = (case["mtype"], case["rg"], case["col"], case["page"])
    if region == "len":
        # the length prefix no longer matches the module size: rejected before the cipher
        with pytest.raises(MalformedModule):
            c.decrypt(bytes(bad), *args)
    else:
        with pytest.raises(InvalidTag) as ei:
            c.decrypt(bytes(bad), *args)
        assert ei.value.index == 0
    # also inside a batch, surrounded by good modules
    good = c.encrypt_batch([b"a" * 20, b"b" * 70], module_type=case["mtype"], row_group=case["rg"],
                           column=case["col"], page=case["page"]).to_list()
    with pytest.raises((InvalidTag, MalformedModule)) as ei:
        c.decrypt_batch([good[0], bytes(bad), good[1]], module_type=case["mtype"], row_group=case["rg"],
                        column=case["col"], page=case["page"])
    assert ei.value.index == 1


@given(case=gcm_cases(), data=st.data())
def test_any_flipped_bit_in_module_aad_is_rejected(backend, case, data):
    """Flip one bit of the file AAD, module type or an ordinal used in the AAD."""
    c, m = _enc(case, backend)
    t, rg, col, pg, fa = case["mtype"], case["rg"], case["col"], case["page"], case["fa"]
    fields = ["file_aad", "type"] if fa else ["type"]
    if t.has_ordinals:
        fields += ["rg", "col"]
    if t.has_page_ordinal:
        fields.append("page")
    field = data.draw(st.sampled_from(fields), label="field")
    if field == "file_aad":
        pos = data.draw(st.integers(0, len(fa) - 1))
        fa2 = bytearray(fa)
        fa2[pos] ^= 1 << data.draw(st.integers(0, 7))
        fa, c = bytes(fa2), GcmModuleCipher(case["key"], bytes(fa2), backend=backend)
    elif field == "type":
        flipped = int(t) ^ (1 << data.draw(st.integers(0, 7), label="bit"))
        assume(flipped <= 9)  # other type bytes are rejected up front (unknown module type)
        t = ModuleType(flipped)
    else:  # bits 0..14: flipping bit 15 would leave the int16 range (InvalidOrdinal, tested elsewhere)
        flip = 1 << data.draw(st.integers(0, 14), label="bit")
        if field == "rg":
            rg ^= flip
        elif field == "col":
            col ^= flip
        else:
            pg ^= flip
    new_aad = ref_module_aad(fa, t, rg, col, pg)
    old_aad = ref_module_aad(case["fa"], case["mtype"], case["rg"], case["col"], case["page"])
    assert new_aad != old_aad
    with pytest.raises(InvalidTag) as ei:
        c.decrypt(m, t, rg, col, pg)
    e = ei.value
    assert (e.index, e.module_type) == (0, t)


@given(case=gcm_cases(), rg=ordinals, col=ordinals, page=ordinals)
def test_ordinals_outside_the_aad_do_not_matter(backend, case, rg, col, page):
    """Only the ordinals the module type carries are authenticated: footer has none,
    non-page modules ignore the page ordinal. Decryption must then succeed."""
    c, m = _enc(case, backend)
    t = case["mtype"]
    if t == ModuleType.FOOTER:
        assert c.decrypt(m, t, rg, col, page) == case["pt"]
    elif not t.has_page_ordinal:
        assert c.decrypt(m, t, case["rg"], case["col"], page) == case["pt"]
    else:
        assume(page != case["page"])
        _decrypt_must_fail(c, m, t, case["rg"], case["col"], page)


@given(case=gcm_cases(max_pt=100), other=keys)
def test_wrong_key_is_rejected(backend, case, other):
    assume(other != case["key"])
    c, m = _enc(case, backend)
    table = GcmModuleCipher([case["key"], other], case["fa"], backend=backend)
    args = (case["mtype"], case["rg"], case["col"], case["page"])
    assert table.decrypt(m, *args, key_index=0) == case["pt"]
    with pytest.raises(InvalidTag):
        table.decrypt(m, *args, key_index=1)


# ---- truncation and extension ------------------------------------------------------------------


@given(case=gcm_cases(max_pt=200), data=st.data())
def test_truncation_fails_cleanly(backend, case, data):
    c, m = _enc(case, backend)
    cut = data.draw(st.integers(0, len(m) - 1), label="keep")
    args = (case["mtype"], case["rg"], case["col"], case["page"])
    _decrypt_must_fail(c, m[:cut], *args, allowed=(MalformedModule, InvalidTag))
    # an attacker who also fixes the length prefix still cannot get data out
    if cut >= 4:
        fixed = struct.pack("<I", cut - 4) + m[4:cut]
        _decrypt_must_fail(c, fixed, *args, allowed=(MalformedModule, InvalidTag))
        if cut >= 32:  # long enough to be a module: it is the tag that fails
            with pytest.raises(InvalidTag):
                c.decrypt(fixed, *args)


@given(case=gcm_cases(max_pt=200), extra=st.binary(min_size=1, max_size=40))
def test_extension_fails_cleanly(backend, case, extra):
    c, m = _enc(case, backend)
    args = (case["mtype"], case["rg"], case["col"], case["page"])
    with pytest.raises(MalformedModule):
        c.decrypt(m + extra, *args)
    fixed = struct.pack("<I", len(m) - 4 + len(extra)) + m[4:] + extra
    with pytest.raises(InvalidTag):
        c.decrypt(fixed, *args)


@given(key=keys, pt=st.binary(max_size=200), data=st.data())
def test_ctr_truncation_is_caught_by_the_length_prefix(backend, key, pt, data):
    c = CtrModuleCipher(key, backend=backend)
    m = c.encrypt(pt)
    cut = data.draw(st.integers(0, len(m) - 1))
    with pytest.raises(MalformedModule):
        c.decrypt(m[:cut])
    assert c.decrypt(m) == pt


@given(blob=st.binary(max_size=80), key=keys)
def test_arbitrary_bytes_never_decrypt(backend, blob, key):
    c = GcmModuleCipher(key, b"f", backend=backend)
    _decrypt_must_fail(c, blob, ModuleType.DATA_PAGE, 0, 0, 0, allowed=(MalformedModule, InvalidTag))


# ---- error messages ---------------------------------------------------------------------------


def _leaks(text: str, key: bytes) -> bool:
    forms = [key.hex(), key.hex().upper(), base64.b64encode(key).decode(), repr(key)[2:-1]]
    return any(f in text for f in forms) or key.decode("latin-1") in text


def _all_text(exc) -> str:
    parts = [str(exc), repr(exc), repr(exc.args)] + [repr(v) for v in vars(exc).values()]
    return "\n".join(parts)


@given(data=st.data(), n=st.integers(1, 12), key_count=st.integers(1, 4))
def test_invalid_tag_names_the_module_and_hides_keys(backend, data, n, key_count):
    keys_ = [data.draw(keys, label=f"key{i}") for i in range(key_count)]
    fa = data.draw(st.binary(max_size=40))
    mt = data.draw(st.lists(mtypes, min_size=n, max_size=n))
    rg = data.draw(st.lists(ordinals, min_size=n, max_size=n))
    col = data.draw(st.lists(ordinals, min_size=n, max_size=n))
    pg = data.draw(st.lists(ordinals, min_size=n, max_size=n))
    ki = data.draw(st.lists(st.integers(0, key_count - 1), min_size=n, max_size=n))
    bad_i = data.draw(st.integers(0, n - 1), label="bad module")
    c = GcmModuleCipher(keys_, fa, backend=backend)
    kw = dict(module_type=np.array(mt), row_group=np.array(rg), column=np.array(col), page=np.array(pg),
              key_index=np.array(ki))
    mods = c.encrypt_batch([bytes([i]) * (i * 7) for i in range(n)], **kw).to_list()
    mods[bad_i] = mods[bad_i][:-1] + bytes([mods[bad_i][-1] ^ 0x80])
    with pytest.raises(InvalidTag) as ei:
        c.decrypt_batch(mods, **kw)
    e = ei.value
    msg = str(e)
    note(msg)
    t = ModuleType(mt[bad_i])
    assert e.index == bad_i and e.module_type == t
    # a one-module batch names the module without its (meaningless) batch index
    assert (f"module {bad_i}" in msg if n > 1 else f"module ({t.name}" in msg) and t.name in msg
    if t.has_ordinals:
        assert (e.row_group, e.column) == (rg[bad_i], col[bad_i])
        assert f"row group {rg[bad_i]}" in msg and f"column {col[bad_i]}" in msg
    else:
        assert e.row_group is None and e.column is None and "row group" not in msg
    if t.has_page_ordinal:
        assert e.page == pg[bad_i] and f"page {pg[bad_i]}" in msg
    else:
        assert e.page is None and "page" not in msg
    text = _all_text(e)
    for k in keys_:
        assert not _leaks(text, k)
    assert e.__cause__ is None


@given(key=keys, pt=st.binary(max_size=64))
def test_other_errors_hide_keys(backend, key, pt):
    c = GcmModuleCipher(key, backend=backend)
    m = c.encrypt(pt)
    failures = []
    for call in (lambda: c.decrypt(m[:-1]),                      # MalformedModule
                 lambda: c.decrypt(m, ModuleType.FOOTER),         # InvalidTag
                 lambda: c.encrypt(pt, row_group=40000),          # InvalidOrdinal
                 lambda: c.encrypt(pt, key_index=3),              # bad key index
                 lambda: c.encrypt_batch([pt], out=bytearray(3))):  # ShortBuffer
        with pytest.raises(PqsealError) as ei:
            call()
        failures.append(_all_text(ei.value))
    for text in failures:
        assert not _leaks(text, key)
    mk = ModuleKey(key)
    assert not _leaks(repr(mk) + str(mk) + repr(c) + str(c), key)


# ---- failed batches leave nothing behind ------------------------------------------------------


@given(data=st.data(), n=st.integers(1, 10), threads=st.sampled_from([1, 2]))
def test_failed_batch_returns_nothing_and_wipes_caller_buffer(backend, data, n, threads):
    key = data.draw(keys)
    c = GcmModuleCipher(key, b"aad", backend=backend)
    sizes = data.draw(st.lists(st.integers(0, 3000), min_size=n, max_size=n))
    if threads == 2:
        sizes[0] = 70_000  # enough bytes for the batch to be split across two native threads
        if n > 1:
            sizes[-1] = 70_000
    pts = [bytes([0x41 + i % 26]) * s for i, s in enumerate(sizes)]
    mods = c.encrypt_batch(pts).to_list()
    bad = data.draw(st.integers(0, n - 1))
    mods[bad] = mods[bad][:20] + bytes([mods[bad][20] ^ 1]) + mods[bad][21:] if sizes[bad] else \
        mods[bad][:-1] + bytes([mods[bad][-1] ^ 1])
    result = None
    with pytest.raises(InvalidTag):
        result = c.decrypt_batch(mods, threads=threads)
    assert result is None

    lens = np.array(sizes)
    out_offs = np.concatenate([[0], np.cumsum(lens + 5)[:-1]]) + 3
    out = bytearray(b"\xee" * int(out_offs[-1] + lens[-1] + 9))
    with pytest.raises(InvalidTag):
        c.decrypt_batch(mods, threads=threads, out=out, out_offsets=out_offs)
    arr = np.frombuffer(out, dtype=np.uint8)
    for i in range(n):
        region = arr[out_offs[i]:out_offs[i] + lens[i]]
        assert not region.any(), f"module {i}'s output was not wiped"
    # the buffer holds no plaintext byte anywhere
    assert not (set(arr.tolist()) - {0, 0xEE})
    # the cipher still works after a failure
    good = c.decrypt_batch(c.encrypt_batch(pts).to_list(), threads=threads, out=out, out_offsets=out_offs)
    assert good.to_list() == pts
