"""The 2^32 GCM invocation limit counts per key per process, not per key object.

A file engine makes a fresh ModuleKey per file, so a key reused across files must be
counted in total: every ModuleKey made from the same bytes shares one count.
"""

from __future__ import annotations

import gc
import threading

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import pqseal
from pqseal.crypto import GCM_INVOCATION_LIMIT, CtrModuleCipher, GcmModuleCipher, ModuleKey, random_bytes
from pqseal.errors import InvocationLimitExceeded
from pqseal.format import EncryptionProperties

LIMIT = GCM_INVOCATION_LIMIT


def test_key_objects_of_the_same_bytes_share_the_count(backend):
    key = random_bytes(16)
    a, b = ModuleKey(key), ModuleKey(bytearray(key))
    GcmModuleCipher(a, backend=backend).encrypt_batch([b"x"] * 5)
    CtrModuleCipher(b, backend=backend).encrypt_batch([b"y"] * 2)
    assert a.invocations == b.invocations == 7
    other = ModuleKey(random_bytes(16))
    assert other.invocations == 0


@pytest.mark.parametrize("cls", [GcmModuleCipher, CtrModuleCipher])
def test_the_limit_trips_across_key_objects(backend, cls):
    key = random_bytes(32)
    a, b = ModuleKey(key), ModuleKey(key)
    a._set_invocations(LIMIT - 2)
    assert b.invocations == LIMIT - 2
    cls(b, backend=backend).encrypt(b"one")
    cls(a, backend=backend).encrypt(b"two")
    for k in (a, b, ModuleKey(key)):
        with pytest.raises(InvocationLimitExceeded):
            cls(k, backend=backend).encrypt(b"three")
    assert a.invocations == LIMIT
    # a batch spread over both objects reserves all or nothing on the one count
    a._set_invocations(LIMIT - 3)
    c = cls([a, b], backend=backend)
    with pytest.raises(InvocationLimitExceeded):
        c.encrypt_batch([b"m"] * 4, key_index=np.array([0, 1, 0, 1]))
    assert b.invocations == LIMIT - 3
    c.encrypt_batch([b"m"] * 3, key_index=np.array([0, 1, 0]))
    assert a.invocations == LIMIT


def test_the_count_outlives_the_key_objects(backend):
    key = random_bytes(24)
    mk = ModuleKey(key)
    GcmModuleCipher(mk, backend=backend).encrypt_batch([b"x"] * 3)
    del mk
    gc.collect()
    assert ModuleKey(key).invocations == 3


def test_explicit_key_reused_across_files_is_counted_in_total(tmp_path):
    """The defect: each file made its own key object, starting at 0."""
    src = tmp_path / "plain.parquet"
    pq.write_table(pa.table({"a": list(range(100)), "b": [str(i) for i in range(100)]}), src)
    key = random_bytes(16)
    props = EncryptionProperties(key)
    pqseal.encrypt_file(src, tmp_path / "one.parquet", props)
    used_by_one_file = ModuleKey(key).invocations
    assert used_by_one_file > 0
    pqseal.encrypt_file(src, tmp_path / "two.parquet", props)
    assert ModuleKey(key).invocations == 2 * used_by_one_file
    # one file short of the limit: the next file is refused, not written with a nonce at risk
    watcher = ModuleKey(key)
    watcher._set_invocations(LIMIT - used_by_one_file + 1)
    with pytest.raises(InvocationLimitExceeded):
        pqseal.encrypt_file(src, tmp_path / "three.parquet", props)
    assert not (tmp_path / "three.parquet").exists()
    # decryption is not limited
    pqseal.decrypt_file(tmp_path / "one.parquet", tmp_path / "one-plain.parquet", pqseal.DecryptionProperties(key))
    assert pq.read_table(tmp_path / "one-plain.parquet").equals(pq.read_table(src))


def test_counting_is_exact_across_threads_and_objects(backend):
    key = random_bytes(16)
    per_thread, threads = 200, 8
    errors = []

    def work():
        try:
            for _ in range(per_thread // 4):
                mk = ModuleKey(key)  # a fresh object each time, as per file
                GcmModuleCipher(mk, backend=backend).encrypt_batch([b"z"] * 4)
                mk.close()
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    ts = [threading.Thread(target=work) for _ in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(timeout=120)
    assert not errors, errors[:3]
    assert ModuleKey(key).invocations == per_thread * threads


def test_the_table_of_unused_keys_is_bounded():
    """Counts of keys no object uses are forgotten, least recently used first, once
    65536 others have fallen out of use after them; a key in use keeps its count."""
    old, kept, live_raw = random_bytes(16), random_bytes(16), random_bytes(16)
    live = ModuleKey(live_raw)
    for k in (old, kept):
        GcmModuleCipher(ModuleKey(k)).encrypt(b"x")
    GcmModuleCipher(live).encrypt(b"x")
    for i in range(70000):
        ModuleKey(random_bytes(16)).close()
        if i % 10000 == 0:
            ModuleKey(kept).close()  # used now and then: stays recent
    gc.collect()
    assert ModuleKey(old).invocations == 0
    assert ModuleKey(kept).invocations == 1
    assert ModuleKey(live_raw).invocations == 1
