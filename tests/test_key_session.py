"""Two-tier key sessions (pqseal.KeySession): the driver makes every KMS call (one wrap per
master key, one unwrap per distinct KEK), workers wrap and unwrap data keys locally.

Oracles: files written through a session are read by pyarrow's own PME reader with its
own KMS client (tests/pyarrow_kms.py, written with `cryptography`); files a session
reads are written by pyarrow's CryptoFactory; KMS calls are counted by the clients."""

from __future__ import annotations

import base64
import copy
import functools
import json
import multiprocessing
import os
import pickle
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pyarrow.parquet.encryption as pe
import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from hypothesis import given
from hypothesis import strategies as st

import pqseal
from pqseal.config import EncryptionConfig
from pqseal.errors import KeyNotFound, KmsError, MalformedKeyMaterial, PqsealError, SessionExpired, UnsupportedFeature
from pqseal.keys import CryptoFactory, KeySession
from pqseal.keys.store import KeyMaterialStore, read_material
from pqseal.kms import KeyListKms, KmsClient, KmsConnectionConfig

from counting_kms import CountingKms
from pyarrow_kms import key_list_client

MASTER = {"kf": os.urandom(16), "kc1": os.urandom(16), "kc2": os.urandom(32)}
PyarrowKeyList = key_list_client(MASTER)   # pyarrow's side, independent of pqseal
COLUMN_KEYS = {"kc1": ["a"], "kc2": ["b", "c"]}




def counting():
    return CountingKms(KeyListKms(MASTER))


@pytest.fixture(scope="module")
def table():
    n = 2000
    return pa.table({"a": np.arange(n), "b": pa.array([f"x{i % 7}" for i in range(n)]), "c": np.linspace(0, 1, n)})


@pytest.fixture
def plain(tmp_path, table):
    p = tmp_path / "plain.parquet"
    pq.write_table(table, p)
    return p


def pyarrow_read(path, client=PyarrowKeyList):
    """pyarrow's PME reader, its KMS client, external material read from beside ``path``."""
    props = pe.CryptoFactory(client).file_decryption_properties(pe.KmsConnectionConfig(),
                                                                pe.DecryptionConfiguration(), str(path))
    return pq.read_table(path, decryption_properties=props)


def pyarrow_write(table, path, factory, *, conn=None, **kw):
    kw.setdefault("footer_key", "kf")
    props = factory.file_encryption_properties(conn or pe.KmsConnectionConfig(), pe.EncryptionConfiguration(**kw),
                                               str(path))
    pq.write_table(table, path, encryption_properties=props)


def key_material(path) -> list[dict]:
    """Every PKMT1 entry of a file written with a plaintext footer or external material."""
    try:
        return [json.loads(v) for v in read_material(path).values()]
    except KeyNotFound:
        info = pqseal.inspect(path)
        return [info["footer_key_metadata"]]


# ---- write side ---------------------------------------------------------------------------------


@pytest.mark.parametrize("algorithm", ["AES_GCM_V1", "AES_GCM_CTR_V1"])
@pytest.mark.parametrize("plaintext_footer", [False, True])
@pytest.mark.parametrize("uniform", [True, False])
@pytest.mark.parametrize("internal", [True, False])
def test_session_files_are_read_by_pyarrow(tmp_path, table, plain, algorithm, plaintext_footer, uniform, internal):
    cfg = EncryptionConfig("kf", column_keys=None if uniform else COLUMN_KEYS, uniform_encryption=uniform,
                           encryption_algorithm=algorithm, plaintext_footer=plaintext_footer,
                           internal_key_material=internal, data_key_length_bits=256)
    kms = counting()
    with KeySession.open(kms, cfg) as session:
        for i in range(2):
            dst = tmp_path / f"s{i}.parquet"
            pqseal.encrypt_file(plain, dst, session.encryption_properties(dst))
            assert pyarrow_read(dst).equals(table)
            assert pqseal.inspect(dst)["algorithm"] == algorithm
    assert kms.wraps == (1 if uniform else 3) and kms.unwraps == 0
    # the same PKMT1 fields as CryptoFactory writes, one KEK per master key across files
    ref = tmp_path / "factory.parquet"
    pqseal.encrypt_file(plain, ref, CryptoFactory(lambda c: KeyListKms(MASTER)).file_encryption_properties(
        KmsConnectionConfig(), cfg, ref))
    if not internal:
        assert sorted(read_material(tmp_path / "s0.parquet")) == sorted(read_material(ref))
    ours, theirs = key_material(tmp_path / "s0.parquet"), key_material(ref)
    assert [sorted(m) for m in ours] == [sorted(m) for m in theirs]
    assert all(m["doubleWrapping"] is True for m in ours)
    kek_ids = {(m["masterKeyID"], m["keyEncryptionKeyID"]) for m in key_material(tmp_path / "s0.parquet")
               + key_material(tmp_path / "s1.parquet")}
    assert len(kek_ids) == len({mk for mk, _ in kek_ids})


def test_write_makes_one_kms_call_per_master_key(tmp_path, table, plain):
    kms = counting()
    session = KeySession.open(kms, EncryptionConfig("kf", column_keys={"kc1": ["a"], "kc2": ["b"]}))
    worker = KeySession.import_(session.export())
    for i in range(20):
        dst = tmp_path / f"f{i}.parquet"
        pqseal.encrypt_file(plain, dst, worker.encryption_properties(dst), fsync=False)
    assert (kms.wraps, kms.unwraps, session.kms_calls) == (3, 0, 3)
    assert pyarrow_read(tmp_path / "f19.parquet").equals(table)
    # a session reads what it wrote without asking the KMS again
    assert session.add_files(tmp_path / f"f{i}.parquet" for i in range(20)) == 0
    assert session.unreadable == {}


def test_single_wrapping_and_read_only_sessions():
    with pytest.raises(UnsupportedFeature, match="double wrapping"):
        KeySession.open(counting(), EncryptionConfig("kf", uniform_encryption=True, double_wrapping=False))
    with pytest.raises(ValueError, match="lifetime"):
        KeySession.open(counting(), lifetime=0)
    reader = KeySession.open(counting())
    with pytest.raises(KeyNotFound, match="read-only"):
        reader.encryption_properties()


def test_pyarrow_configuration_and_zone_policy_are_accepted(tmp_path, table, plain):
    from pqseal.io.zones import ZonePolicy

    for enc in (pe.EncryptionConfiguration(footer_key="kf", column_keys={"kc1": ["a"]}),
                ZonePolicy(path=str(tmp_path), footer_key="kf", column_keys="kc1:a")):
        kms = counting()
        session = KeySession.open(kms, enc)
        assert kms.wraps == 2 and session.write_master_key_ids == {"kf", "kc1"}
        dst = tmp_path / f"{type(enc).__name__}.parquet"
        pqseal.encrypt_file(plain, dst, session.encryption_properties(dst))
        assert pyarrow_read(dst).equals(table)


# ---- read side ----------------------------------------------------------------------------------


class PyarrowCounting(PyarrowKeyList):
    wraps = 0

    def wrap_key(self, key_bytes, master_key_identifier):
        type(self).wraps += 1
        return super().wrap_key(key_bytes, master_key_identifier)


def test_read_side_one_unwrap_per_distinct_kek(tmp_path, table):
    """pyarrow writes with three CryptoFactory objects (three KEKs per master key), both
    footer modes, internal and external material; the session unwraps each KEK once."""
    PyarrowCounting.wraps = 0
    paths = []
    for f in range(3):
        factory = pe.CryptoFactory(PyarrowCounting)
        for i in range(4):
            p = tmp_path / f"w{f}-{i}.parquet"
            pyarrow_write(table, p, factory, column_keys=COLUMN_KEYS, plaintext_footer=i % 2 == 1,
                          internal_key_material=i < 2)
            paths.append(p)
    kms = counting()
    session = KeySession.open(kms)
    assert session.add_files(paths) == PyarrowCounting.wraps == kms.unwraps == 9
    assert session.unreadable == {} and session.read_master_key_ids == {"kf", "kc1", "kc2"}
    assert session.add_files(paths) == 0
    worker = KeySession.import_(session.export())
    for p in paths:
        out = tmp_path / f"u-{p.name}"
        pqseal.decrypt_file(p, out, worker.decryption_properties(p))
        assert pq.read_table(out).equals(pyarrow_read(p))
    assert kms.unwraps == 9


def test_read_side_single_wrapped_data_keys(tmp_path, table):
    factory = pe.CryptoFactory(PyarrowKeyList)
    paths = [tmp_path / f"s{i}.parquet" for i in range(3)]
    for p in paths:
        pyarrow_write(table, p, factory, column_keys={"kc1": ["a"]}, double_wrapping=False)
    kms = counting()
    session = KeySession.open(kms)
    assert session.add_files(paths) == kms.unwraps == 6   # footer and column key of each file
    worker = KeySession.import_(session.export())
    out = tmp_path / "u.parquet"
    pqseal.decrypt_file(paths[2], out, worker.decryption_properties(paths[2]))
    assert pq.read_table(out).equals(table)


def test_read_side_kms_coordinates_follow_the_footer(tmp_path, table):
    p = tmp_path / "v.parquet"
    pyarrow_write(table, p, pe.CryptoFactory(PyarrowKeyList), uniform_encryption=True,
                  conn=pe.KmsConnectionConfig(kms_instance_id="vault-7", kms_instance_url="https://v7"))
    seen = []

    def factory(cfg):
        seen.append((cfg.kms_instance_id, cfg.kms_instance_url))
        return KeyListKms(MASTER)
    assert KeySession.open(factory).add_files([p]) == 1
    assert seen == [("vault-7", "https://v7")]
    seen.clear()
    explicit = KmsConnectionConfig(kms_instance_id="other", kms_instance_url="https://o")
    assert KeySession.open(factory, kms_connection_config=explicit).add_files([p]) == 1
    assert seen == [("other", "https://o")]


class DisabledKey(KmsClient):
    """A KMS in which master key kc2 is disabled."""

    def __init__(self):
        self.inner, self.unwraps = KeyListKms(MASTER), 0

    def wrap_key(self, key_bytes, master_key_identifier):
        return self.inner.wrap_key(key_bytes, master_key_identifier)

    def unwrap_key(self, wrapped_key, master_key_identifier):
        self.unwraps += 1
        if master_key_identifier == "kc2":
            raise PermissionError("key kc2 is disabled")
        return self.inner.unwrap_key(wrapped_key, master_key_identifier)


def test_unreadable_files_are_recorded_and_the_scan_goes_on(tmp_path, table, plain):
    factory = pe.CryptoFactory(PyarrowKeyList)
    good = [tmp_path / f"good{i}.parquet" for i in range(2)]
    for p in good:
        pyarrow_write(table, p, factory, column_keys={"kc1": ["a"]})
    disabled = [tmp_path / f"kc2-{i}.parquet" for i in range(3)]
    for p in disabled:
        pyarrow_write(table, p, factory, column_keys={"kc2": ["a"]})
    no_material = tmp_path / "gone.parquet"
    pyarrow_write(table, no_material, factory, uniform_encryption=True, internal_key_material=False)
    os.unlink(tmp_path / "_KEY_MATERIAL_FOR_gone.parquet.json")
    garbage = tmp_path / "garbage.parquet"
    garbage.write_bytes(b"PAR1" + os.urandom(100) + b"PAR1")
    explicit = tmp_path / "explicit.parquet"
    pqseal.encrypt_file(plain, explicit, pqseal.EncryptionProperties(os.urandom(16)))
    kms = DisabledKey()
    session = KeySession.open(kms)
    paths = [garbage, *disabled, no_material, explicit, plain, *good]
    calls = session.add_files(paths)
    assert calls == kms.unwraps == 3   # kf's and kc1's KEKs, kc2's once (not once per file)
    assert set(session.unreadable) == {os.fspath(p) for p in (garbage, *disabled, no_material, explicit)}
    assert all("\n" not in why for why in session.unreadable.values())
    assert "disabled" in session.unreadable[os.fspath(disabled[0])]
    assert "not found" in session.unreadable[os.fspath(no_material)]
    assert "explicit keys" in session.unreadable[os.fspath(explicit)]
    out = tmp_path / "u.parquet"
    pqseal.decrypt_file(good[1], out, session.decryption_properties(good[1]))
    assert pq.read_table(out).equals(table)


def test_worker_lacking_a_kek_gets_key_not_found(tmp_path, table):
    p = tmp_path / "x.parquet"
    pyarrow_write(table, p, pe.CryptoFactory(PyarrowKeyList), uniform_encryption=True)
    material = pqseal.inspect(p)["footer_key_metadata"]
    kek_id = material["keyEncryptionKeyID"]
    session = KeySession.open(counting(), EncryptionConfig("kf", uniform_encryption=True))  # other KEKs
    with pytest.raises(KeyNotFound) as err:
        pqseal.decrypt_file(p, tmp_path / "u.parquet", session.decryption_properties(p))
    assert "'kf'" in str(err.value) and kek_id in str(err.value)
    assert not (tmp_path / "u.parquet").exists()
    rotating = KeySession.open(counting())
    rotating.add_files([p])   # read KEKs, but no write KEK yet
    with pytest.raises(KeyNotFound, match="add_master_keys"):
        rotating.rewrap_material({"footerKey": json.dumps(material)})


# ---- lifetime -----------------------------------------------------------------------------------


def test_expiry_refuses_every_use(tmp_path, table, plain):
    p = tmp_path / "x.parquet"
    pyarrow_write(table, p, pe.CryptoFactory(PyarrowKeyList), uniform_encryption=True)
    session = KeySession.open(counting(), EncryptionConfig("kf", uniform_encryption=True), lifetime=0.5)
    session.add_files([p])
    blob = session.export()
    dec = session.decryption_properties(p)   # made before the end, used after it
    assert session.expires_at == pytest.approx(time.time() + 0.5, abs=0.3)
    time.sleep(max(0.0, session.expires_at - time.time()) + 0.05)
    worker = KeySession.import_(blob)        # the expiry travels with the export (wall clock)
    for s in (session, worker):
        with pytest.raises(SessionExpired):
            s.encryption_properties()
        with pytest.raises(SessionExpired):
            s.decryption_properties(p)
        with pytest.raises(SessionExpired):
            s.export()
    with pytest.raises(SessionExpired):
        pqseal.decrypt_file(p, tmp_path / "u.parquet", dec)
    with pytest.raises(SessionExpired):
        session.add_files([p])
    assert "expired" in repr(session)


class SlowKms(KmsClient):
    def __init__(self, delay):
        self.inner, self.delay = KeyListKms(MASTER), delay

    def wrap_key(self, key_bytes, master_key_identifier):
        return self.inner.wrap_key(key_bytes, master_key_identifier)

    def unwrap_key(self, wrapped_key, master_key_identifier):
        time.sleep(self.delay)
        return self.inner.unwrap_key(wrapped_key, master_key_identifier)


def test_expiry_during_a_scan_stops_it(tmp_path, table):
    """An expired session is an error of the scan, not of the file being scanned."""
    paths = [tmp_path / f"x{i}.parquet" for i in range(2)]
    for p in paths:
        pyarrow_write(table, p, pe.CryptoFactory(PyarrowKeyList), uniform_encryption=True)
    session = KeySession.open(SlowKms(0.6), lifetime=0.5)
    with pytest.raises(SessionExpired):
        session.add_files(paths)
    assert session.unreadable == {}


def test_close_wipes_the_keys_and_refuses_use(tmp_path, table, plain):
    p = tmp_path / "x.parquet"
    pyarrow_write(table, p, pe.CryptoFactory(PyarrowKeyList), column_keys={"kc1": ["a"]}, double_wrapping=False)
    with KeySession.open(counting(), EncryptionConfig("kf", column_keys=COLUMN_KEYS)) as session:
        session.add_files([p])
        keys = [k.key for k, _ in session._write.values()] + [k.key for k in session._read.values()] \
            + list(session._deks.values())
        assert len(keys) == 3 + 3 + 2 and all(isinstance(k, bytearray) and any(k) for k in keys)
        enc = session.encryption_properties()
    assert all(not any(k) for k in keys)
    assert session.closed and repr(session) == "<KeySession closed>"
    for use in (session.encryption_properties, session.decryption_properties, session.export,
                lambda: session.add_files([p]), lambda: session.add_master_keys(["kf"]),
                lambda: session.rewrap_material({})):
        with pytest.raises(SessionExpired, match="closed"):
            use()
    # properties made before close keep their own key copies (bytes, a Python limit)
    pqseal.encrypt_file(plain, tmp_path / "late.parquet", enc)
    session.close()   # idempotent


# ---- portability --------------------------------------------------------------------------------


def test_pickling_is_refused_unless_portable(tmp_path, table, plain):
    kms = counting()
    session = KeySession.open(kms, EncryptionConfig("kf", uniform_encryption=True))
    for attempt in (pickle.dumps, copy.deepcopy, copy.copy):
        with pytest.raises(TypeError, match=r"portable\(\)"):
            attempt(session)
    assert session.portable() is session and session.is_portable
    data = pickle.dumps(session)
    assert b"CountingKms" not in data and b"KeyListKms" not in data
    worker = pickle.loads(data)
    assert worker.is_portable and worker.write_master_key_ids == {"kf"}
    with pytest.raises(KmsError, match="no KMS client"):
        worker.add_master_keys(["kc1"])
    with pytest.raises(KmsError, match="no KMS client"):
        worker.add_files([plain])
    dst = tmp_path / "w.parquet"
    pqseal.encrypt_file(plain, dst, worker.encryption_properties(dst))
    assert pyarrow_read(dst).equals(table) and kms.wraps == 1


def test_export_import_round_trip(tmp_path, table, plain):
    p = tmp_path / "pa.parquet"
    pyarrow_write(table, p, pe.CryptoFactory(PyarrowKeyList), column_keys={"kc2": ["c"]},
                  internal_key_material=False)
    single = tmp_path / "single.parquet"
    pyarrow_write(table, single, pe.CryptoFactory(PyarrowKeyList), uniform_encryption=True, double_wrapping=False)
    cfg = EncryptionConfig("kf", column_keys=COLUMN_KEYS, encryption_algorithm="AES_GCM_CTR_V1",
                           plaintext_footer=True, internal_key_material=False, data_key_length_bits=192,
                           kek_length_bits=256, aad_prefix=b"job-7")
    session = KeySession.open(counting(), cfg, lifetime=600,
                              kms_connection_config=KmsConnectionConfig(key_access_token="token-of-the-driver"))
    session.add_files([p, single])
    blob = session.export()
    doc = json.loads(blob)
    assert doc["format"] == "pqseal-key-session" and doc["version"] == 1 and b"token-of-the-driver" not in blob
    worker = KeySession.import_(blob)
    assert worker.expires_at == session.expires_at and not worker.is_portable
    assert worker.read_master_key_ids == session.read_master_key_ids
    assert KeySession.import_(worker.export()).export() == blob
    dst = tmp_path / "w.parquet"
    pqseal.encrypt_file(plain, dst, worker.encryption_properties(dst))
    assert pyarrow_read(dst).equals(table)
    info = pqseal.inspect(dst)
    assert info["algorithm"] == "AES_GCM_CTR_V1" and info["footer"].startswith("plaintext")
    assert len(base64.b64decode(doc["write_keks"][0]["kek"])) == 32
    for src in (p, single, dst):
        out = tmp_path / f"u-{src.name}"
        pqseal.decrypt_file(src, out, worker.decryption_properties(src))
        assert pq.read_table(out).equals(table)


def _valid_export():
    session = KeySession.open(KeyListKms(MASTER), EncryptionConfig("kf", column_keys={"kc1": ["a"]}))
    return json.loads(session.export())


def _mutated(change):
    doc = _valid_export()
    change(doc)
    return json.dumps(doc).encode()


MALFORMED = {
    "empty": b"",
    "not json": b"{nope",
    "not utf-8": b"\xff\xfe",
    "a list": b"[]",
    "an int": 7,
    "none": None,
    "deeply nested": b"[" * 100_000 + b"]" * 100_000,
    "version true": lambda: _mutated(lambda d: d.update(version=True)),
    "wrong format": lambda: _mutated(lambda d: d.update(format="other")),
    "future version": lambda: _mutated(lambda d: d.update(version=2)),
    "missing field": lambda: _mutated(lambda d: d.pop("deks")),
    "extra field": lambda: _mutated(lambda d: d.update(extra=1)),
    "expiry text": lambda: _mutated(lambda d: d.update(expires_at="soon")),
    "expiry nan": lambda: _mutated(lambda d: d.update(expires_at=float("nan"))),
    "kek not base64": lambda: _mutated(lambda d: d["write_keks"][0].update(kek="!!")),
    "kek 5 bytes": lambda: _mutated(lambda d: d["write_keks"][0].update(kek=base64.b64encode(b"12345").decode())),
    "kek id 8 bytes": lambda: _mutated(lambda d: d["write_keks"][0].update(kek_id=base64.b64encode(b"8" * 8).decode())),
    "kek as number": lambda: _mutated(lambda d: d["write_keks"][0].update(kek=5)),
    "write kek missing": lambda: _mutated(lambda d: d["write_keks"].pop()),
    "write kek twice": lambda: _mutated(lambda d: d["write_keks"].append(d["write_keks"][0])),
    "keks not a list": lambda: _mutated(lambda d: d.update(read_keks={})),
    "bad config": lambda: _mutated(lambda d: d["encryption"].update(encryption_algorithm="ROT13")),
    "config type": lambda: _mutated(lambda d: d["encryption"].update(plaintext_footer="yes")),
    "single wrapping": lambda: _mutated(lambda d: d["encryption"].update(double_wrapping=False)),
    "columns": lambda: _mutated(lambda d: d["encryption"].update(column_keys={"kc1": "a"})),
    "kms": lambda: _mutated(lambda d: d.update(kms={"kms_instance_id": 1, "kms_instance_url": "x"})),
    "dek": lambda: _mutated(lambda d: d["deks"].append({"master_key_id": "kf", "wrapped_dek": "w", "dek": "AA=="})),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_import_is_a_typed_error(case):
    data = MALFORMED[case]
    with pytest.raises(MalformedKeyMaterial) as err:
        KeySession.import_(data() if callable(data) else data)
    assert isinstance(err.value, PqsealError)


@functools.cache
def _export_with_everything() -> str:
    session = KeySession.open(KeyListKms(MASTER), EncryptionConfig("kf", column_keys={"kc1": ["a"]}, aad_prefix=b"p"))
    session._deks[("kc2", "d2FwcGVk")] = bytearray(16)   # a single-wrapped key, as add_files would hold
    kek = session._write["kf"][0]
    session._read[("kc2", b"k" * 16)] = type(kek)("kc2", b"k" * 16, bytearray(16))   # a KEK read from a file
    assert json.loads(session.export())["read_keks"] and json.loads(session.export())["deks"]
    return session.export().decode()


def _nodes(obj, path=()):
    yield path
    items = obj.items() if isinstance(obj, dict) else enumerate(obj) if isinstance(obj, list) else ()
    for k, v in items:
        yield from _nodes(v, (*path, k))


JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12),
                    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
                    max_leaves=6)


@given(which=st.integers(min_value=0), value=JSON)
def test_any_altered_export_imports_or_is_a_typed_error(which, value):
    doc = json.loads(_export_with_everything())
    nodes = list(_nodes(doc))[1:]
    *parent_path, last = nodes[which % len(nodes)]
    parent = doc
    for k in parent_path:
        parent = parent[k]
    parent[last] = value
    try:
        KeySession.import_(json.dumps(doc).encode())
    except MalformedKeyMaterial:
        pass


def test_repr_shows_no_key_bytes(tmp_path, table):
    p = tmp_path / "s.parquet"
    pyarrow_write(table, p, pe.CryptoFactory(PyarrowKeyList), uniform_encryption=True, double_wrapping=False)
    session = KeySession.open(counting(), EncryptionConfig("kf", column_keys=COLUMN_KEYS))
    session.add_files([p])
    doc = json.loads(session.export())
    secrets = [e[f] for name in ("write_keks", "read_keks", "deks") for e in doc[name]
               for f in ("kek", "dek", "wrapped_kek", "wrapped_dek", "kek_id") if f in e]
    assert len(secrets) == 3 * 3 + 2
    for text in (repr(session), str(session), repr(KeySession.import_(session.export()).portable())):
        assert "kf" in text and "kc2" in text and "portable=" in text and "expires" in text
        for s in secrets:
            raw = base64.b64decode(s)
            assert s not in text and raw.hex() not in text and raw.hex().upper() not in text


# ---- rotation -----------------------------------------------------------------------------------


class VersionedKeys:
    """Master keys with versions: wrap with the newest (``v<n>:`` prefix), unwrap any
    version not retired (None). `cryptography` only."""

    def __init__(self, versions):
        self.versions = versions

    def wrap(self, key, mk):
        n = len(self.versions[mk])
        nonce = os.urandom(12)
        ct = AESGCM(self.versions[mk][-1]).encrypt(nonce, bytes(key), mk.encode())
        return f"v{n}:" + base64.b64encode(nonce + ct).decode()

    def unwrap(self, wrapped, mk):
        version, text = wrapped.split(":", 1)
        key = self.versions[mk][int(version[1:]) - 1]
        if key is None:
            raise PermissionError(f"{mk} {version} is retired")
        raw = base64.b64decode(text)
        return AESGCM(key).decrypt(raw[:12], raw[12:], mk.encode())


class PqsealVersioned(KmsClient):
    def __init__(self, keys):
        self.keys, self.wraps, self.unwraps = keys, 0, 0

    def wrap_key(self, key_bytes, master_key_identifier):
        self.wraps += 1
        return self.keys.wrap(key_bytes, master_key_identifier)

    def unwrap_key(self, wrapped_key, master_key_identifier):
        self.unwraps += 1
        return self.keys.unwrap(wrapped_key, master_key_identifier)


def pyarrow_versioned(keys):
    class PyarrowVersioned(pe.KmsClient):
        def __init__(self, cfg):
            super().__init__()

        def wrap_key(self, key_bytes, master_key_identifier):
            return keys.wrap(key_bytes, master_key_identifier)

        def unwrap_key(self, wrapped_key, master_key_identifier):
            return keys.unwrap(wrapped_key, master_key_identifier)
    return PyarrowVersioned


def test_rotation_of_external_material_at_dataset_scale(tmp_path, table):
    v1 = {mk: [os.urandom(16)] for mk in MASTER}
    keys = VersionedKeys(v1)
    conn = pe.KmsConnectionConfig(kms_instance_id="vault-1", kms_instance_url="https://vault-1")
    paths = []
    for f in range(2):   # two pyarrow writers: two KEKs per master key
        factory = pe.CryptoFactory(pyarrow_versioned(keys))
        for i in range(3):
            p = tmp_path / f"part-{f}-{i}.parquet"
            pyarrow_write(table, p, factory, conn=conn, column_keys=COLUMN_KEYS, internal_key_material=False,
                          plaintext_footer=i == 1)
            paths.append(p)
    kms = PqsealVersioned(keys)
    driver = KeySession.open(kms)
    assert driver.add_files(paths) == kms.unwraps == 6
    for mk in MASTER:   # the KMS rotates every master key
        v1[mk].append(os.urandom(16))
    assert driver.add_master_keys(sorted(driver.read_master_key_ids)) == kms.wraps == 3
    worker = KeySession.import_(driver.export())
    before = {p: read_material(p) for p in paths}
    for p in paths:   # worker side: no KMS
        KeyMaterialStore(p, worker.rewrap_material(read_material(p))).write()
    assert (kms.wraps, kms.unwraps) == (3, 6)
    new_keks = set()
    for p in paths:
        doc = read_material(p)
        assert sorted(doc) == sorted(before[p])
        for ref, text in doc.items():
            m = json.loads(text)
            assert m["wrappedKEK"].startswith("v2:") and m["wrappedDEK"] != json.loads(before[p][ref])["wrappedDEK"]
            new_keks.add((m["masterKeyID"], m["keyEncryptionKeyID"]))
            if m["isFooterKey"]:
                assert (m["kmsInstanceID"], m["kmsInstanceURL"]) == ("vault-1", "https://vault-1")
    assert len(new_keks) == 3
    for mk in MASTER:   # the old versions are retired: only the rotated material opens
        v1[mk][0] = None
    for p in paths:
        assert pyarrow_read(p, pyarrow_versioned(keys)).equals(table)
    with pytest.raises(MalformedKeyMaterial):
        worker.rewrap_material({"footerKey": 5})


# ---- workers never hold a KMS client ------------------------------------------------------------


class RecordingKms(KmsClient):
    """Notes the process id of every construction and call in a log file."""

    def __init__(self, log):
        self.log, self.inner = log, KeyListKms(MASTER)
        self._note("construct")

    def _note(self, what):
        with open(self.log, "a") as f:
            f.write(f"{os.getpid()} {what}\n")

    def wrap_key(self, key_bytes, master_key_identifier):
        self._note("wrap")
        return self.inner.wrap_key(key_bytes, master_key_identifier)

    def unwrap_key(self, wrapped_key, master_key_identifier):
        self._note("unwrap")
        return self.inner.unwrap_key(wrapped_key, master_key_identifier)


def _worker(blob, pickled, plain, dst, sealed, out):
    exported = KeySession.import_(blob)
    pqseal.encrypt_file(plain, dst, exported.encryption_properties(dst))
    unpickled = pickle.loads(pickled)
    pqseal.decrypt_file(sealed, out, unpickled.decryption_properties(sealed))


def test_workers_never_construct_a_kms_client(tmp_path, table, plain):
    log = tmp_path / "kms.log"
    sealed = tmp_path / "pa.parquet"
    pyarrow_write(table, sealed, pe.CryptoFactory(PyarrowKeyList), column_keys=COLUMN_KEYS,
                  internal_key_material=False)
    session = KeySession.open(lambda cfg: RecordingKms(log), EncryptionConfig("kf", column_keys=COLUMN_KEYS))
    assert session.add_files([sealed]) == 3
    ctx = multiprocessing.get_context("spawn")
    dst, out = tmp_path / "w.parquet", tmp_path / "u.parquet"
    proc = ctx.Process(target=_worker, args=(session.export(), pickle.dumps(session.portable()), plain, dst,
                                             sealed, out))
    proc.start()
    proc.join(120)
    assert proc.exitcode == 0
    lines = log.read_text().split()
    assert lines[1::2].count("construct") == 1 and lines[1::2].count("wrap") == 3
    assert set(lines[0::2]) == {str(os.getpid())}
    assert pyarrow_read(dst).equals(table) and pq.read_table(out).equals(table)


def test_threads_share_one_session(tmp_path, table, plain):
    from concurrent.futures import ThreadPoolExecutor

    kms = counting()
    session = KeySession.open(kms, EncryptionConfig("kf", column_keys=COLUMN_KEYS, internal_key_material=False))

    def job(i):
        dst = tmp_path / f"t{i}.parquet"
        pqseal.encrypt_file(plain, dst, session.encryption_properties(dst), fsync=False)
        out = tmp_path / f"u{i}.parquet"
        pqseal.decrypt_file(dst, out, session.decryption_properties(dst), fsync=False)
        return pq.read_table(out).equals(table)

    with ThreadPoolExecutor(8) as pool:
        assert all(pool.map(job, range(24)))
    assert (kms.wraps, kms.unwraps) == (3, 0)
    assert pyarrow_read(tmp_path / "t23.parquet").equals(table)
