"""API contract: argument validation, error classes, key handling, backends, key
wrapping, batches and the module AAD layout."""

from __future__ import annotations

import base64
import copy
import json
import os
import pickle
import struct
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

import pqseal
from pqseal import errors
from pqseal.crypto.cipher import BatchSpec
from pqseal.crypto import (GCM_INVOCATION_LIMIT, Batch, CtrModuleCipher, GcmModuleCipher, ModuleKey, ModuleType,
                           module_aad, random_bytes, unwrap_key_locally, wrap_key_locally)
from pqseal.errors import (BackendUnavailable, InvalidKey, InvalidOrdinal, InvalidTag, InvocationLimitExceeded,
                           MalformedKeyMaterial, MalformedModule, ShortBuffer)

from pme_reference import gcm_decrypt_module

K16, K24, K32 = bytes(range(16)), bytes(range(100, 124)), bytes(range(200, 232))
CIPHERS = [GcmModuleCipher, CtrModuleCipher]


# ---- keys ------------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [0, 1, 8, 15, 17, 20, 23, 25, 31, 33, 48, 64])
def test_bad_key_lengths(n):
    with pytest.raises(InvalidKey, match=str(n)):
        ModuleKey(bytes(n))
    for cls in CIPHERS:
        with pytest.raises(InvalidKey):
            cls(bytes(n))
        with pytest.raises(InvalidKey):
            cls([K16, bytes(n)])  # one bad entry in a key table
    with pytest.raises(ValueError):  # InvalidKey is a ValueError too
        wrap_key_locally(K16, bytes(n), b"")


@pytest.mark.parametrize("bad", ["0123456789abcdef", 12345, None, 1.5, ["x"] * 16])
def test_non_bytes_keys(bad):
    with pytest.raises(InvalidKey):
        ModuleKey(bad)
    with pytest.raises(InvalidKey):
        GcmModuleCipher(bad if not isinstance(bad, list) else [bad])


def test_empty_key_table():
    for cls in CIPHERS:
        with pytest.raises(InvalidKey):
            cls([])


@pytest.mark.parametrize("raw", [K16, K24, K32])
def test_bytes_like_keys_are_equivalent(backend, raw):
    """bytes, bytearray, memoryview, numpy array and ModuleKey all give the same key."""
    forms = [raw, bytearray(raw), memoryview(raw), np.frombuffer(raw, dtype=np.uint8), ModuleKey(raw)]
    nonce = b"\x07" * 12
    outs = {GcmModuleCipher(k, b"f", backend=backend)._run(BatchSpec(encrypt=True, modules=[b"data"], module_type=2,
                                                                     row_group=1, column=2, page=3,
                                                                     nonces=nonce)).buffer.tobytes() for k in forms}
    assert outs == {struct.pack("<I", 12 + 4 + 16) + nonce
                    + AESGCM(raw).encrypt(nonce, b"data", b"f\x02\x01\x00\x02\x00\x03\x00")}
    assert ModuleKey(raw).bits == len(raw) * 8


def test_module_key_is_redacted_and_not_picklable():
    key = bytes(range(0xA0, 0xC0))
    mk = ModuleKey(key)
    for text in (repr(mk), str(mk), f"{mk}"):
        assert "AES-256" in text and "redacted" in text
        assert key.hex() not in text.lower() and "a0a1" not in text.lower()
    with pytest.raises(TypeError):
        pickle.dumps(mk)
    with pytest.raises(TypeError):
        copy.copy(mk)
    with pytest.raises(TypeError):
        copy.deepcopy(mk)
    with pytest.raises(TypeError):
        ModuleKey(mk)  # already a ModuleKey
    assert ModuleKey.coerce(mk) is mk
    assert mk == mk and mk != ModuleKey(key)  # identity only
    mk.close()
    assert "closed" in repr(mk)
    with pytest.raises(ValueError):
        GcmModuleCipher(mk)
    mk.close()  # idempotent
    with ModuleKey(key) as mk2:
        assert mk2.bits == 256
    assert "closed" in repr(mk2)


@pytest.mark.parametrize("cls", CIPHERS)
def test_cipher_not_picklable_and_repr_redacted(backend, cls):
    c = cls([K16, K32], backend=backend)
    with pytest.raises(TypeError):
        pickle.dumps(c)
    with pytest.raises(TypeError):
        copy.deepcopy(c)
    r = repr(c)
    assert backend in r and "keys=2" in r and K16.hex() not in r and K32.hex() not in r
    assert c.backend == backend
    assert c.algorithm == ("gcm" if cls is GcmModuleCipher else "ctr")
    assert c.overhead == (32 if cls is GcmModuleCipher else 16)
    assert [k.bits for k in c.keys] == [128, 256]
    c.keys.append("junk")  # a copy: the cipher's table is not changed
    assert len(c.keys) == 2


_CLOSED_KEY_SCRIPT = textwrap.dedent("""
    import sys
    from pqseal.crypto import GcmModuleCipher, CtrModuleCipher, ModuleKey
    for cls in (GcmModuleCipher, CtrModuleCipher):
        for be in sys.argv[1:]:
            mk = ModuleKey(bytes(range(16)))
            c = cls(mk, backend=be)
            mk.close()
            try:
                c.encrypt(b"secret page")
            except ValueError:
                continue
            print(f"{cls.__name__}/{be}: encrypt() under a closed (freed) key returned data")
            sys.exit(1)
    """)


def test_cipher_refuses_to_use_a_closed_key():
    # in a subprocess: the bug is a use-after-free that aborts a sanitizer build
    r = subprocess.run([sys.executable, "-c", _CLOSED_KEY_SCRIPT, *pqseal.available_backends()],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr[-2000:]


# ---- ordinals, module types, key indexes -------------------------------------------------------


@pytest.mark.parametrize("bad", [32768, -1, 65536, 2**31, -(2**15)])
@pytest.mark.parametrize("field", ["row_group", "column", "page"])
def test_bad_ordinals_scalar(backend, field, bad):
    for cls in CIPHERS:
        c = cls(K16, backend=backend)
        with pytest.raises(InvalidOrdinal):
            c.encrypt(b"x", **{"module_type": ModuleType.DATA_PAGE, field: bad})
        with pytest.raises(InvalidOrdinal):
            c.encrypt_batch([b"x", b"y"], **{field: bad})
        with pytest.raises(InvalidOrdinal):
            c.decrypt_batch([bytes(40)], **{field: bad})
    with pytest.raises(InvalidOrdinal):
        module_aad(b"", ModuleType.DATA_PAGE, **{field: bad})
    with pytest.raises(ValueError):  # InvalidOrdinal is a ValueError
        GcmModuleCipher(K16, backend=backend).decrypt(bytes(40), ModuleType.DATA_PAGE, **{field: bad})


@pytest.mark.parametrize("dtype", [np.int64, np.int32, np.uint16, np.uint64])
@pytest.mark.parametrize("field", ["row_group", "column", "page"])
def test_bad_ordinals_array_names_the_module(backend, field, dtype):
    c = GcmModuleCipher(K16, backend=backend)
    arr = np.array([0, 5, 32767, 32768, 1], dtype=dtype)
    with pytest.raises(InvalidOrdinal, match="module 3"):
        c.encrypt_batch([b"a"] * 5, **{field: arr})
    if np.issubdtype(dtype, np.signedinteger):
        arr = np.array([0, -1, 0, 0, 0], dtype=dtype)
        with pytest.raises(InvalidOrdinal, match="module 1"):
            c.encrypt_batch([b"a"] * 5, **{field: arr})
    # the boundary values themselves are fine
    ok = np.array([0, 1, 32766, 32767, 256], dtype=dtype)
    mods = c.encrypt_batch([b"a"] * 5, **{field: ok})
    assert c.decrypt_batch(mods.to_list(), **{field: ok}).to_list() == [b"a"] * 5


def test_failed_validation_uses_no_invocations(backend):
    mk = ModuleKey(random_bytes(16))  # a key of its own: counts are per key per process
    c = GcmModuleCipher(mk, backend=backend)
    with pytest.raises(InvalidOrdinal):
        c.encrypt_batch([b"a", b"b"], row_group=np.array([1, 40000]))
    with pytest.raises(ShortBuffer):
        c.encrypt_batch([b"a", b"b"], out=bytearray(10))
    assert mk.invocations == 0
    c.encrypt_batch([b"a", b"b", b"c"])
    assert mk.invocations == 3


@pytest.mark.parametrize("bad", [10, 11, 255, -1])
def test_bad_module_type(backend, bad):
    c = GcmModuleCipher(K16, backend=backend)
    with pytest.raises(ValueError):
        c.encrypt(b"x", bad)
    with pytest.raises(ValueError):
        c.encrypt_batch([b"x", b"y"], module_type=np.array([2, bad]))
    with pytest.raises(ValueError):
        module_aad(b"", bad)


def test_metadata_arrays_must_match_the_batch(backend):
    c = GcmModuleCipher(K16, backend=backend)
    for kw in (dict(row_group=[1, 2]), dict(module_type=np.array([2, 2, 2, 2])), dict(page=np.zeros((3, 1))),
               dict(key_index=[0, 0])):
        with pytest.raises(ValueError):
            c.encrypt_batch([b"a", b"b", b"c"], **kw)


def test_metadata_accepts_enums_lists_and_numpy_scalars(backend):
    c = GcmModuleCipher(K16, b"F", backend=backend)
    mods = c.encrypt_batch([b"a", b"b"], module_type=[ModuleType.DATA_PAGE, ModuleType.COLUMN_INDEX],
                           row_group=np.int16(3), column=np.uint8(4), page=[5, 6])
    assert gcm_decrypt_module(K16, mods[0], b"F\x02\x03\x00\x04\x00\x05\x00") == b"a"
    assert gcm_decrypt_module(K16, mods[1], b"F\x06\x03\x00\x04\x00") == b"b"


@pytest.mark.parametrize("cls", CIPHERS)
def test_key_index_out_of_range(backend, cls):
    c = cls([K16, K24], backend=backend)
    for bad in (2, 3, 65535, -1):
        with pytest.raises(ValueError, match="key"):
            c.encrypt(b"x", key_index=bad)
        with pytest.raises(ValueError, match="key"):
            c.encrypt_batch([b"x", b"y"], key_index=np.array([0, bad]))
        with pytest.raises(ValueError, match="key"):
            c.decrypt_batch([bytes(40)], key_index=bad)
    # in range works, and really selects the key
    m = c.encrypt(b"x", key_index=1)
    assert c.decrypt(m, key_index=1) == b"x"
    if cls is GcmModuleCipher:
        with pytest.raises(InvalidTag):
            c.decrypt(m, key_index=0)


def test_key_index_out_of_range_is_invalid_key(backend):
    c = GcmModuleCipher([K16, K24], backend=backend)
    with pytest.raises(InvalidKey):
        c.encrypt(b"x", key_index=2)


# ---- buffers ----------------------------------------------------------------------------------


@pytest.mark.parametrize("cls", CIPHERS)
def test_short_output_buffer(backend, cls):
    c = cls(K16, backend=backend)
    ov = c.overhead
    pts = [b"a" * 10, b"b" * 20]
    need = 30 + 2 * ov
    with pytest.raises(ShortBuffer):
        c.encrypt_batch(pts, out=bytearray(need - 1))
    with pytest.raises(ShortBuffer):
        c.encrypt_batch(pts, out=np.zeros(need, dtype=np.uint8), out_offsets=[0, need - (20 + ov) + 1])
    with pytest.raises(ShortBuffer):
        c.encrypt_batch(pts, out=bytearray(need), out_offsets=[0, 10**9])
    exact = bytearray(need)
    res = c.encrypt_batch(pts, out=exact)
    assert bytes(exact) == b"".join(res.to_list())
    assert c.decrypt_batch(res.to_list(), out=bytearray(30)).to_list() == pts
    with pytest.raises(ShortBuffer):
        c.decrypt_batch(res.to_list(), out=bytearray(29))
    with pytest.raises(ValueError):
        c.encrypt_batch(pts, out_offsets=[0, 100])  # out_offsets without out
    with pytest.raises((TypeError, ValueError, BufferError)):
        c.encrypt_batch(pts, out=bytes(need))  # read-only output


@pytest.mark.parametrize("cls", CIPHERS)
def test_contiguous_input_validation(backend, cls):
    c = cls(K16, backend=backend)
    buf = bytes(100)
    with pytest.raises(ValueError):
        c.encrypt_batch(buf, offsets=[0, 10])  # lengths missing
    with pytest.raises(ValueError):
        c.encrypt_batch(buf, lengths=[10])  # offsets missing
    with pytest.raises(ValueError):
        c.encrypt_batch(buf, offsets=[0, 95], lengths=[10, 10])  # reaches past the end
    with pytest.raises(ValueError):
        c.encrypt_batch(buf, offsets=[101], lengths=[0])
    with pytest.raises(ValueError):
        c.encrypt_batch(buf, offsets=[-1], lengths=[5])
    with pytest.raises(ValueError):
        c.encrypt_batch(buf, offsets=[0, 1], lengths=[1])
    with pytest.raises(TypeError):
        c.encrypt_batch(buf)  # a bare buffer is not a sequence of modules
    with pytest.raises((TypeError, ValueError)):
        c.encrypt_batch(buf, offsets=[0.5], lengths=[1])
    ok = c.encrypt_batch(buf, offsets=[100, 0], lengths=[0, 100])
    assert ok.lengths.tolist() == [c.overhead, 100 + c.overhead]


@pytest.mark.parametrize("cls", CIPHERS)
def test_malformed_modules(backend, cls):
    c = cls(K16, backend=backend)
    m = c.encrypt(b"hello")
    for bad in (b"", b"\x00", m[:3], m[:c.overhead - 1], m[:-1], m + b"\x00"):
        with pytest.raises(MalformedModule) as ei:
            c.decrypt(bad)
        assert ei.value.index == 0
    wrong_prefix = (len(m) - 3).to_bytes(4, "little") + m[4:]
    with pytest.raises(MalformedModule):
        c.decrypt(wrong_prefix)
    with pytest.raises(MalformedModule) as ei:
        c.decrypt_batch([m, m, m[:-2]])
    assert ei.value.index == 2 and "module 2" in str(ei.value)


# ---- invocation limit -----------------------------------------------------------------------


@pytest.mark.parametrize("cls", CIPHERS)
def test_invocation_limit(backend, cls):
    assert GCM_INVOCATION_LIMIT == 2**32
    mk = ModuleKey(random_bytes(32))  # a key of its own: counts are per key per process
    c = cls(mk, backend=backend)
    mk._set_invocations(2**32 - 1)
    m = c.encrypt(b"last one")
    assert mk.invocations == 2**32
    with pytest.raises(InvocationLimitExceeded, match="key #0"):
        c.encrypt(b"one too many")
    assert mk.invocations == 2**32
    assert c.decrypt(m) == b"last one"  # decryption is not limited
    # a batch reserves all or nothing
    mk._set_invocations(2**32 - 2)
    with pytest.raises(InvocationLimitExceeded):
        c.encrypt_batch([b"a", b"b", b"c"])
    assert mk.invocations == 2**32 - 2
    assert len(c.encrypt_batch([b"a", b"b"])) == 2
    assert mk.invocations == 2**32


def test_invocation_limit_rolls_back_other_keys(backend):
    # 300 keys: more than the native 256-entry fast table
    keys = [ModuleKey(random_bytes(16)) for i in range(300)]
    c = GcmModuleCipher(keys, backend=backend)
    keys[299]._set_invocations(2**32)
    ki = np.array([0, 5, 299, 7, 270])
    with pytest.raises(InvocationLimitExceeded, match="key #299"):
        c.encrypt_batch([b"x"] * 5, key_index=ki)
    assert [keys[i].invocations for i in (0, 5, 7, 270)] == [0, 0, 0, 0]
    out = c.encrypt_batch([b"x"] * 4, key_index=np.array([0, 5, 7, 270]))
    assert [keys[i].invocations for i in (0, 5, 7, 270)] == [1, 1, 1, 1]
    for j, i in enumerate((0, 5, 7, 270)):
        assert c.decrypt(out[j], key_index=i) == b"x"


def test_same_key_twice_in_a_table_counts_once_per_use(backend):
    mk = ModuleKey(random_bytes(16))
    c = GcmModuleCipher([mk, mk], backend=backend)
    mk._set_invocations(2**32 - 3)
    with pytest.raises(InvocationLimitExceeded):
        c.encrypt_batch([b"a"] * 4, key_index=np.array([0, 1, 0, 1]))
    assert mk.invocations == 2**32 - 3
    c.encrypt_batch([b"a"] * 3, key_index=np.array([0, 1, 0]))
    assert mk.invocations == 2**32


# ---- backends -----------------------------------------------------------------------------------


def test_backend_info_fields():
    info = pqseal.backend_info()
    assert set(info) >= {"backend", "requested", "error", "available", "fips_mode", "openssl_version",
                         "ipsecmb_version", "ipsecmb_arch", "cpu_features"}
    assert info["available"] == pqseal.available_backends()
    assert info["available"] and set(info["available"]) <= {"openssl", "ipsecmb"}
    assert "openssl" in info["available"]  # OpenSSL is always there
    assert isinstance(info["fips_mode"], bool)
    assert info["openssl_version"].startswith("OpenSSL")
    assert isinstance(info["cpu_features"], list)
    if os.environ.get("PQSEAL_BACKEND", "auto").strip().lower() == "auto":
        assert info["backend"] == info["available"][0] and info["error"] is None
    if "ipsecmb" in info["available"]:
        assert info["ipsecmb_version"] and info["ipsecmb_arch"] in ("sse", "avx", "avx2", "avx512")
        assert "aesni" in info["cpu_features"]
        assert info["available"][0] == "ipsecmb"  # fastest first
        assert not info["fips_mode"]


def test_explicit_backend_names(backend):
    assert GcmModuleCipher(K16, backend=backend).backend == backend
    assert GcmModuleCipher(K16, backend=backend.upper()).backend == backend
    for bad in ("bogus", "openssl3", "aesni"):
        with pytest.raises(BackendUnavailable):
            GcmModuleCipher(K16, backend=bad)


_ENV_SCRIPT = textwrap.dedent("""
    import json, pqseal
    from pqseal.crypto import GcmModuleCipher
    from pqseal.errors import BackendUnavailable
    res = {"info": pqseal.backend_info()}
    try:
        c = GcmModuleCipher(bytes(16))
        res["cipher_backend"] = c.backend
        res["roundtrip"] = c.decrypt(c.encrypt(b"x")) == b"x"
    except BackendUnavailable as e:
        res["error"] = "BackendUnavailable: " + str(e)
    c = GcmModuleCipher(bytes(16), backend="openssl")
    res["explicit_openssl"] = c.decrypt(c.encrypt(b"y")) == b"y"
    print(json.dumps(res))
    """)


def _run_with_backend_env(value):
    env = dict(os.environ)
    env.pop("PQSEAL_BACKEND", None)
    if value is not None:
        env["PQSEAL_BACKEND"] = value
    r = subprocess.run([sys.executable, "-c", _ENV_SCRIPT], env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("value", ["openssl", " OpenSSL ", "ipsecmb", "auto", None, "bogus"])
def test_pqseal_backend_env(value):
    res = _run_with_backend_env(value)
    info = res["info"]
    avail = info["available"]
    assert res["explicit_openssl"] is True  # an explicit backend always works
    want = (value or "auto").strip().lower()
    if want == "auto":
        want = avail[0]
    if want in avail:
        assert info["backend"] == want and info["error"] is None
        assert res["cipher_backend"] == want and res["roundtrip"] is True
    else:  # unusable choice: import works, first use raises
        assert info["backend"] is None and info["error"]
        assert res["error"].startswith("BackendUnavailable") and (value == "bogus") == ("unknown" in res["error"])
        assert "cipher_backend" not in res
    if value is not None:
        assert info["requested"] == value


# ---- key wrapping ---------------------------------------------------------------------------------


@pytest.mark.parametrize("kek", [K16, K24, K32])
@pytest.mark.parametrize("dek_len", [0, 16, 24, 32, 100])
def test_wrap_unwrap_round_trip(backend, kek, dek_len):
    dek = os.urandom(dek_len)
    aad = b"master-key-id"
    w = wrap_key_locally(dek, kek, aad, backend=backend)
    assert isinstance(w, str)
    raw = base64.b64decode(w, validate=True)
    assert len(raw) == 12 + dek_len + 16
    assert AESGCM(kek).decrypt(raw[:12], raw[12:], aad) == dek  # the format parquet-java expects
    assert unwrap_key_locally(w, kek, aad, backend=backend) == dek
    assert unwrap_key_locally(w.encode(), ModuleKey(kek), aad, backend=backend) == dek
    # the other direction: wrapped by cryptography
    nonce = os.urandom(12)
    theirs = base64.b64encode(nonce + AESGCM(kek).encrypt(nonce, dek, aad)).decode()
    assert unwrap_key_locally(theirs, kek, aad, backend=backend) == dek
    # fresh nonce each time
    assert wrap_key_locally(dek, kek, aad, backend=backend) != w


def test_unwrap_rejects_wrong_aad_key_and_tampering(backend):
    w = wrap_key_locally(K16, K32, b"kek-1", backend=backend)
    with pytest.raises(InvalidTag) as ei:
        unwrap_key_locally(w, K32, b"kek-2", backend=backend)
    assert K32.hex() not in str(ei.value) and K16.hex() not in str(ei.value)
    with pytest.raises(InvalidTag):
        unwrap_key_locally(w, K32, b"", backend=backend)
    with pytest.raises(InvalidTag):
        unwrap_key_locally(w, bytes(32), b"kek-1", backend=backend)
    raw = bytearray(base64.b64decode(w))
    for pos in (0, 11, 12, len(raw) - 17, len(raw) - 1):
        t = bytearray(raw)
        t[pos] ^= 4
        with pytest.raises(InvalidTag):
            unwrap_key_locally(base64.b64encode(t), K32, b"kek-1", backend=backend)


@pytest.mark.parametrize("bad", ["not base64!!", "abc", "QUJD=", "QUJD\n" * 3, "", "AAAA" * 6,
                                 base64.b64encode(bytes(27)).decode(), "ä" * 8])
def test_unwrap_malformed_key_material(backend, bad):
    with pytest.raises(MalformedKeyMaterial):
        unwrap_key_locally(bad, K16, b"aad", backend=backend)
    assert issubclass(MalformedKeyMaterial, ValueError)


# ---- batches ------------------------------------------------------------------------------------


@pytest.mark.parametrize("cls", CIPHERS)
def test_empty_batches(backend, cls):
    c = cls(K16, backend=backend)
    for res in (c.encrypt_batch([]), c.decrypt_batch([]), c.encrypt_batch([], threads=2),
                c.encrypt_batch(b"", offsets=np.array([], dtype=np.int64), lengths=np.array([], dtype=np.int64)),
                c.decrypt_batch(bytearray(10), offsets=np.zeros(0, np.uint64), lengths=np.zeros(0, np.int32)),
                c.encrypt_batch([], out=bytearray(0))):
        assert isinstance(res, Batch)
        assert len(res) == 0 and res.to_list() == [] and list(res) == [] and res.nbytes == 0
        assert res.buffer.size == 0 and res.buffer.dtype == np.uint8
    # empty modules are fine too
    m = c.encrypt_batch([b"", b""])
    assert m.lengths.tolist() == [c.overhead] * 2
    assert c.decrypt_batch(m.to_list()).to_list() == [b"", b""]


def test_batch_object(backend):
    c = GcmModuleCipher(K16, backend=backend)
    pts = [b"a" * 3, b"", b"c" * 40]
    b = c.encrypt_batch(pts)
    assert len(b) == 3 and b.nbytes == 43 + 96 == int(b.lengths.sum())
    assert b.buffer.dtype == np.uint8 and b.buffer.size == b.nbytes
    assert b.offsets.tolist() == [0, 35, 67]
    assert isinstance(b[0], memoryview) and bytes(b[-1]) == b.to_list()[2]
    assert [bytes(x) for x in b] == b.to_list()
    assert repr(b) == "<Batch 3 modules, 139 bytes>"
    assert c.decrypt_batch(b.buffer, offsets=b.offsets, lengths=b.lengths).to_list() == pts
    # inputs of other buffer types
    assert c.decrypt_batch([bytearray(x) for x in b] + [memoryview(b.to_list()[0])]).to_list() == pts + [pts[0]]
    with pytest.raises(TypeError):
        c.encrypt_batch(["text"])


def test_single_module_api_matches_batch(backend):
    c = GcmModuleCipher([K16, K32], b"file", backend=backend)
    m = c.encrypt(b"payload", ModuleType.DATA_PAGE_HEADER, 1, 2, 3, key_index=1)
    b = c.decrypt_batch([m], module_type=4, row_group=1, column=2, page=3, key_index=1)
    assert b.to_list() == [b"payload"]
    assert gcm_decrypt_module(K32, m, b"file\x04\x01\x00\x02\x00\x03\x00") == b"payload"


def test_threads_argument(backend):
    c = GcmModuleCipher(K16, backend=backend)
    pts = [os.urandom(100_000) for _ in range(4)]
    for threads in (0, 1, 2, 3, 64, 1000, -1):
        out = c.encrypt_batch(pts, threads=threads)
        assert c.decrypt_batch(out.to_list(), threads=threads).to_list() == pts


# ---- module AAD -----------------------------------------------------------------------------------


def test_module_aad_reference_values():
    T = ModuleType
    assert module_aad(b"", T.FOOTER) == b"\x00"
    assert module_aad(b"AAD", T.FOOTER, 5, 6, 7) == b"AAD\x00"  # footer: no ordinals at all
    assert module_aad(b"fa", T.COLUMN_META_DATA, 1, 2) == b"fa\x01\x01\x00\x02\x00"
    assert module_aad(b"", T.DATA_PAGE, 0x0102, 0x0304, 0x0506) == b"\x02\x02\x01\x04\x03\x06\x05"
    assert module_aad(b"x", T.DICTIONARY_PAGE, 5, 6, 7) == b"x\x03\x05\x00\x06\x00"  # no page ordinal
    assert module_aad(b"", T.DATA_PAGE_HEADER, 32767, 0, 256) == b"\x04\xff\x7f\x00\x00\x00\x01"
    assert module_aad(b"", T.DICTIONARY_PAGE_HEADER, 0, 1) == b"\x05\x00\x00\x01\x00"
    assert module_aad(b"", T.COLUMN_INDEX, 2, 3) == b"\x06\x02\x00\x03\x00"
    assert module_aad(b"", T.OFFSET_INDEX, 2, 3) == b"\x07\x02\x00\x03\x00"
    assert module_aad(b"", T.BLOOM_FILTER_HEADER, 2, 3) == b"\x08\x02\x00\x03\x00"
    assert module_aad(b"\xff", T.BLOOM_FILTER_BITSET, 255, 256, 9) == b"\xff\x09\xff\x00\x00\x01"
    assert module_aad(b"", 2) == b"\x02\x00\x00\x00\x00\x00\x00"  # ints accepted, ordinals default 0
    assert [t.has_page_ordinal for t in T] == [False, False, True, False, True] + [False] * 5
    with pytest.raises(InvalidOrdinal):
        module_aad(b"", T.DATA_PAGE, True, 0, 0)  # bools are not ordinals


@pytest.mark.parametrize("mtype,rg,col,page,aad", [
    (ModuleType.FOOTER, 9, 9, 9, b"FA\x00"),
    (ModuleType.DATA_PAGE, 0x0102, 0x0304, 0x0506, b"FA\x02\x02\x01\x04\x03\x06\x05"),
    (ModuleType.DICTIONARY_PAGE, 1, 2, 3, b"FA\x03\x01\x00\x02\x00"),
    (ModuleType.DATA_PAGE_HEADER, 32767, 32767, 32767, b"FA\x04\xff\x7f\xff\x7f\xff\x7f"),
    (ModuleType.BLOOM_FILTER_BITSET, 0, 256, 0, b"FA\x09\x00\x00\x00\x01"),
])
def test_native_aad_matches_hand_computed_bytes(backend, mtype, rg, col, page, aad):
    """The native core builds the module AAD itself; check it against literal bytes."""
    c = GcmModuleCipher(K24, b"FA", backend=backend)
    m = c.encrypt(b"page bytes", mtype, rg, col, page)
    assert gcm_decrypt_module(K24, m, aad) == b"page bytes"
    assert module_aad(b"FA", mtype, rg, col, page) == aad


def test_errors_hierarchy():
    for cls in (MalformedModule, ShortBuffer, InvalidOrdinal, InvalidKey, MalformedKeyMaterial):
        assert issubclass(cls, ValueError) and issubclass(cls, errors.PqsealError)
    assert issubclass(InvalidTag, errors.PqsealError) and not issubclass(InvalidTag, ValueError)
    assert pqseal.InvalidTag is InvalidTag


@pytest.mark.parametrize("bad", [1.9, True, np.array([1.7]), np.array([True])])
def test_non_integer_ordinals_are_rejected(backend, bad):
    c = GcmModuleCipher(K16, backend=backend)
    with pytest.raises(InvalidOrdinal):
        c.encrypt_batch([b"x"], row_group=bad)


def test_empty_offsets_lists_make_an_empty_batch(backend):
    c = GcmModuleCipher(K16, backend=backend)
    b = c.encrypt_batch(b"", offsets=[], lengths=[])
    assert len(b) == 0 and b.nbytes == 0
