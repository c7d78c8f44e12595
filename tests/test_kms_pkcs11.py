"""The PKCS#11 KMS client (pqseal.kms.pkcs11) against a real token: SoftHSM2 with
throw-away tokens under a private SOFTHSM2_CONF (tests/softhsm.py)."""

from __future__ import annotations

import base64
import json
import os
import pickle
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import pqseal
from pqseal.config import EncryptionConfig
from pqseal.errors import InvalidTag, KeyAccessDenied, KeyDisabled, KeyNotFound, MalformedKeyMaterial, PqsealError
from pqseal.keys import CryptoFactory, clear_caches
from pqseal.kms import KmsConnectionConfig
from pqseal.kms.uri import KmsUri

import softhsm
from counting_kms import CountingKms

PIN = "pin-0815-secret"
TOKEN, FRESH = "pqseal-test", "pqseal-fresh"   # FRESH: never logged in before the wrong-PIN test
OTHER = "pqseal-other"                          # opened through another spelling of the module's path


@pytest.fixture(scope="module")
def hsm(tmp_path_factory):
    return softhsm.start(tmp_path_factory.mktemp("softhsm"), {TOKEN: PIN, FRESH: PIN, OTHER: PIN})


@pytest.fixture(autouse=True)
def fresh_caches(monkeypatch):
    monkeypatch.setenv("PQSEAL_PKCS11_PIN", PIN)
    monkeypatch.delenv("PQSEAL_PKCS11_PIN_FILE", raising=False)
    clear_caches()
    yield
    clear_caches()


_n = iter(range(10**6))


def key_ids(*names):
    """Master key ids unique in this test run (the token lives for the whole module)."""
    i = next(_n)
    return [f"{n}-{i}" for n in names]


def uri_of(hsm, label=TOKEN, **extra):
    opts = {"module": hsm.module, "token": label, **extra}
    return KmsUri("pkcs11", ";".join(f"{k}={v}" for k, v in opts.items()), opts)


@pytest.fixture
def factory(hsm):
    from pqseal.kms.pkcs11 import from_uri

    return from_uri(uri_of(hsm))


@pytest.fixture
def client(factory):
    return factory(KmsConnectionConfig())




def table(n=2000):
    return pa.table({"id": np.arange(n), "ssn": [f"{i:09d}" for i in range(n)], "v": np.arange(n) * 0.5})


def material(path, kms):
    """The footer key's material (internal or external) as a dict."""
    md = pqseal.inspect(path, kms=kms)["footer_key_metadata"]
    return md.get("material", md)


# ---- round trips --------------------------------------------------------------------------------


@pytest.mark.parametrize("double_wrapping", [True, False], ids=["double", "single"])
@pytest.mark.parametrize("internal", [True, False], ids=["internal", "external"])
def test_round_trip_and_pyarrow_reads(tmp_path, factory, client, double_wrapping, internal):
    import pyarrow.parquet.encryption as pe

    from pqseal.arrow import crypto_factory

    footer, pii = key_ids("footer", "pii")
    client.create_key(footer)
    client.create_key(pii, 128)
    t = table()
    src, sealed, out = tmp_path / "p.parquet", tmp_path / "s.parquet", tmp_path / "u.parquet"
    pq.write_table(t, src)
    cfg = EncryptionConfig(footer, column_keys={pii: ["ssn"]}, double_wrapping=double_wrapping,
                           internal_key_material=internal)
    pqseal.encrypt_file(src, sealed, cfg, kms=factory)
    assert (tmp_path / "_KEY_MATERIAL_FOR_s.parquet.json").exists() != internal
    with pytest.raises(OSError, match="decrypt|encrypt|key"):      # no keys, no data
        pq.read_table(sealed)
    m = material(sealed, factory)
    assert m["masterKeyID"] == footer and m["doubleWrapping"] == double_wrapping
    token_wrapped = m["wrappedKEK"] if double_wrapping else m["wrappedDEK"]
    assert token_wrapped.startswith("pqp11:1:")
    clear_caches()
    pqseal.decrypt_file(sealed, out, kms=factory)
    assert pq.read_table(out).equals(t)
    # an independent reader: pyarrow's PME through pqseal.arrow with this client
    clear_caches()
    props = crypto_factory(factory).file_decryption_properties(pe.KmsConnectionConfig(),
                                                               pe.DecryptionConfiguration(), str(sealed))
    assert pq.read_table(sealed, decryption_properties=props).equals(t)


def test_pyarrow_writes_pqseal_reads(tmp_path, factory, client):
    import pyarrow.parquet.encryption as pe

    from pqseal.arrow import crypto_factory

    footer, pii = key_ids("footer", "pii")
    client.create_key(footer)
    client.create_key(pii)
    t = table(500)
    path = tmp_path / "a.parquet"
    enc = crypto_factory(factory).file_encryption_properties(
        pe.KmsConnectionConfig(), pe.EncryptionConfiguration(footer_key=footer, column_keys={pii: ["ssn"]}))
    pq.write_table(t, path, encryption_properties=enc)
    out = tmp_path / "u.parquet"
    pqseal.decrypt_file(path, out, kms=factory)
    assert pq.read_table(out).equals(t)


# ---- versions and rotation ----------------------------------------------------------------------


def test_rotation_keeps_old_files_open_and_rewraps_external_material(tmp_path, factory, client):
    footer, pii = key_ids("footer", "pii")
    client.create_key(footer)
    client.create_key(pii)
    t = table(1000)
    src = tmp_path / "p.parquet"
    pq.write_table(t, src)
    cfg = EncryptionConfig(footer, column_keys={pii: ["ssn"]}, internal_key_material=False)
    old, internal = tmp_path / "old.parquet", tmp_path / "internal.parquet"
    pqseal.encrypt_file(src, old, cfg, kms=factory)
    pqseal.encrypt_file(src, internal, EncryptionConfig(footer, uniform_encryption=True), kms=factory)
    before = old.read_bytes()

    assert client.rotate_key(pii) == 2 and client.rotate_key(footer) == 2
    states = {(v.id, v.version): v.state for v in client.key_status()}
    assert states[(pii, 1)] == states[(footer, 1)] == "decrypt-only"
    assert states[(pii, 2)] == states[(footer, 2)] == "active"
    clear_caches()
    dek = os.urandom(16)
    assert client.wrap_key(dek, pii).startswith("pqp11:2:")
    for f in (old, internal):       # files wrapped under version 1 still open
        out = tmp_path / f"u-{f.name}"
        pqseal.decrypt_file(f, out, kms=factory)
        assert pq.read_table(out).equals(t)

    # re-wrap the external material under version 2; the Parquet file is not touched
    n = CryptoFactory(factory).rotate_master_keys(KmsConnectionConfig(), old)
    assert n == 2 and old.read_bytes() == before
    doc = json.loads((tmp_path / "_KEY_MATERIAL_FOR_old.parquet.json").read_text())
    assert all(json.loads(v)["wrappedKEK"].startswith("pqp11:2:") for v in doc.values())
    # with version 1 disabled, the rotated file still opens and the internal one does not
    client.disable_key(pii, 1)
    client.disable_key(footer, 1)
    clear_caches()
    out = tmp_path / "u-rotated.parquet"
    pqseal.decrypt_file(old, out, kms=factory)
    assert pq.read_table(out).equals(t)
    with pytest.raises(KeyDisabled):
        pqseal.decrypt_file(internal, tmp_path / "x.parquet", kms=factory)
    assert not (tmp_path / "x.parquet").exists()


def test_disable_enable_destroy(client):
    (k,) = key_ids("k")
    client.create_key(k)
    dek = os.urandom(32)
    w1 = client.wrap_key(dek, k)
    client.disable_key(k)
    assert [v.state for v in client.key_status(k)] == ["disabled"]
    with pytest.raises(KeyDisabled):
        client.wrap_key(dek, k)
    with pytest.raises(KeyDisabled):
        client.unwrap_key(w1, k)
    client.enable_key(k)
    assert client.unwrap_key(w1, k) == dek
    assert client.rotate_key(k) == 2
    w2 = client.wrap_key(dek, k)
    assert client.destroy_key(k, 1) == 1
    with pytest.raises(KeyNotFound, match="no version 1"):
        client.unwrap_key(w1, k)
    assert client.unwrap_key(w2, k) == dek
    assert [(v.version, v.state) for v in client.key_status(k)] == [(2, "active")]
    with pytest.raises(ValueError, match="already exists"):
        client.create_key(k)


def _admin_in_other_process(module, key_id, action):
    from pqseal.kms.pkcs11 import Pkcs11Kms

    client = Pkcs11Kms(module, TOKEN, pin=PIN)
    if action == "disable":
        client.disable_key(key_id, 1)
    elif action == "enable":
        client.enable_key(key_id)
    else:
        client.destroy_key(key_id, 1)


def test_state_changes_by_another_process_are_seen(hsm, client):
    """Unwrapping remembers key objects, yet reads their state from the token each time."""
    import multiprocessing

    (k,) = key_ids("k")
    client.create_key(k)
    dek = os.urandom(16)
    w = client.wrap_key(dek, k)
    assert client.unwrap_key(w, k) == dek
    ctx = multiprocessing.get_context("spawn")
    for action, expect in (("disable", KeyDisabled), ("enable", None), ("destroy", KeyNotFound)):
        p = ctx.Process(target=_admin_in_other_process, args=(hsm.module, k, action))
        p.start()
        p.join(120)
        assert p.exitcode == 0
        if expect is None:
            assert client.unwrap_key(w, k) == dek
        else:
            with pytest.raises(expect):
                client.unwrap_key(w, k)


def test_master_key_is_not_extractable(hsm, client):
    import pkcs11

    (k,) = key_ids("k")
    client.create_key(k)
    A = pkcs11.Attribute

    def check(session):
        (_, obj), = client._versions(session, k)
        assert obj[A.EXTRACTABLE] is False and obj[A.SENSITIVE] is True and obj[A.NEVER_EXTRACTABLE] is True
        with pytest.raises(pkcs11.exceptions.AttributeSensitive):
            obj[A.VALUE]
        # nor can it be exported wrapped under another key of the token
        kek = session.generate_key(pkcs11.KeyType.AES, 256, store=False, capabilities=pkcs11.MechanismFlag.WRAP)
        with pytest.raises(pkcs11.exceptions.PKCS11Error):
            kek.wrap_key(obj)
        return True

    assert client._token.run(check)


# ---- errors --------------------------------------------------------------------------------------


def test_wrong_pin_is_access_denied_and_never_shown(hsm, monkeypatch):
    from pqseal.kms.pkcs11 import Pkcs11Kms, from_uri

    bad = "wrong-pin-9999"
    for label in (FRESH, TOKEN):  # the token's own check (FRESH), and a second login in this process (TOKEN)
        monkeypatch.setenv("PQSEAL_PKCS11_PIN", bad)
        with pytest.raises(KeyAccessDenied, match="wrong PIN") as ei:
            from_uri(uri_of(hsm, label))(KmsConnectionConfig())
        text = str(ei.value) + repr(ei.value) + "".join(map(str, ei.value.args))
        assert bad not in text and PIN not in text
    monkeypatch.setenv("PQSEAL_PKCS11_PIN", PIN)
    good = Pkcs11Kms(hsm.module, FRESH)
    (k,) = key_ids("k")
    good.create_key(k)
    with pytest.raises(KeyNotFound) as ei:
        good.wrap_key(b"x" * 16, "nope")
    factory = from_uri(uri_of(hsm, FRESH))
    text = repr(good) + repr(factory) + str(ei.value) + repr(good.key_status()) + str(factory.__getstate__())
    assert PIN not in text
    with pytest.raises(TypeError):
        pickle.dumps(good)


def test_pin_file_is_mode_checked(tmp_path, hsm, monkeypatch):
    from pqseal.kms.pkcs11 import Pkcs11Kms

    monkeypatch.delenv("PQSEAL_PKCS11_PIN")
    f = tmp_path / "pin"
    f.write_text(PIN + "\n")
    os.chmod(f, 0o644)
    monkeypatch.setenv("PQSEAL_PKCS11_PIN_FILE", str(f))
    with pytest.raises(KeyAccessDenied, match="chmod 600"):
        Pkcs11Kms(hsm.module, TOKEN)
    os.chmod(f, 0o600)
    Pkcs11Kms(hsm.module, TOKEN).key_status()
    monkeypatch.delenv("PQSEAL_PKCS11_PIN_FILE")
    with pytest.raises(KeyAccessDenied, match="PQSEAL_PKCS11_PIN"):   # no terminal under pytest
        Pkcs11Kms(hsm.module, TOKEN)


def test_uri_refuses_pins_and_unknown_attributes(hsm):
    from pqseal.kms.pkcs11 import from_uri

    for attr in ("pin-value", "pin-source"):
        with pytest.raises(ValueError, match="refused") as ei:
            from_uri(uri_of(hsm, **{attr: "1234-in-uri"}))
        assert "1234-in-uri" not in str(ei.value)
    with pytest.raises(ValueError, match="unknown attribute"):
        from_uri(uri_of(hsm, tokn="x"))
    with pytest.raises(ValueError, match="module=PATH and token=LABEL"):
        from_uri(KmsUri("pkcs11", f"module={hsm.module}", {"module": hsm.module}))
    f = from_uri(uri_of(hsm))
    g = pickle.loads(pickle.dumps(f))      # the factory travels to worker processes, the client does not
    assert (g.module, g.token) == (hsm.module, TOKEN)


def test_open_kms_names_the_token(tmp_path, hsm):
    from pqseal.kms.uri import open_kms

    factory = open_kms(hsm.uri(TOKEN))
    client = factory(KmsConnectionConfig())
    (k,) = key_ids("k")
    client.create_key(k)
    dek = os.urandom(16)
    assert factory(KmsConnectionConfig()).unwrap_key(client.wrap_key(dek, k), k) == dek
    with pytest.raises(ValueError) as ei:
        open_kms(hsm.uri(TOKEN) + ";pin-value=1234-in-uri")
    assert "1234-in-uri" not in str(ei.value)


def test_module_path_spelled_another_way_loads_it_once(tmp_path, hsm, client):
    from pqseal.kms.pkcs11 import Pkcs11Kms

    link = tmp_path / "lib" / "libsofthsm2-link.so"
    link.parent.mkdir()
    link.symlink_to(hsm.module)
    other = Pkcs11Kms(str(link), OTHER)     # the module is loaded already (through client)
    (k,) = key_ids("k")
    other.create_key(k)
    dek = os.urandom(16)
    assert other.unwrap_key(other.wrap_key(dek, k), k) == dek
    client.key_status()


def test_missing_key_token_and_module(hsm, client):
    from pqseal.errors import KmsUnavailable
    from pqseal.kms.pkcs11 import Pkcs11Kms

    with pytest.raises(KeyNotFound):
        client.wrap_key(b"k" * 16, "no-such-key")
    with pytest.raises(KeyNotFound):
        client.rotate_key("no-such-key")
    with pytest.raises(KmsUnavailable, match="no PKCS#11 token"):
        Pkcs11Kms(hsm.module, "no-such-token")
    with pytest.raises(KmsUnavailable, match="cannot load"):
        Pkcs11Kms("/nonexistent/libpkcs11.so", TOKEN)


def test_tampered_or_moved_wrapped_key_fails_closed(client):
    a, b = key_ids("a", "b")
    client.create_key(a)
    client.create_key(b)
    dek = os.urandom(16)
    w = client.wrap_key(dek, a)
    prefix, version, blob = w.split(":", 2)
    raw = base64.b64decode(blob)
    for i in (0, 12, len(raw) - 1):     # IV, ciphertext, tag
        bad = bytearray(raw)
        bad[i] ^= 1
        with pytest.raises(InvalidTag):
            client.unwrap_key(f"{prefix}:{version}:{base64.b64encode(bytes(bad)).decode()}", a)
    with pytest.raises(InvalidTag):        # moved to another master key (AAD = id:version)
        client.unwrap_key(w, b)
    client.rotate_key(a)
    with pytest.raises(InvalidTag):        # relabelled to another version of the same key
        client.unwrap_key(w.replace("pqp11:1:", "pqp11:2:"), a)
    for junk in ("", "pqks1:1:AAAA", "pqp11:x:AAAA", "pqp11:1:not base64!", "pqp11:1:" + "A" * 8):
        with pytest.raises(MalformedKeyMaterial):
            client.unwrap_key(junk, a)
    assert client.unwrap_key(w, a) == dek


# python-pkcs11 finalizes the search of the failed attempt on the dead session, and says so
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_session_loss_is_retried(client):
    (k,) = key_ids("k")
    client.create_key(k)
    dek = os.urandom(16)
    w = client.wrap_key(dek, k)
    dead = client._token._session
    dead.close()                        # the session goes away under the client (logs out too)
    assert client.unwrap_key(w, k) == dek
    assert client._token._session is not dead


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_token_gone_is_unavailable_after_bounded_retries(hsm, client, monkeypatch):
    import pkcs11

    from pqseal.errors import KmsUnavailable
    from pqseal.kms.pkcs11 import Pkcs11Kms
    from pqseal.kms.resilience import RetryPolicy

    (k,) = key_ids("k")
    client.create_key(k)
    w = client.wrap_key(b"d" * 16, k)
    c = Pkcs11Kms(hsm.module, TOKEN, retry=RetryPolicy(retries=2, base_delay=0, failure_threshold=10))
    opens = []

    def removed(self, pin):
        opens.append(1)
        raise pkcs11.exceptions.DeviceRemoved()

    monkeypatch.setattr(type(c._token), "_open", removed)
    c._token._session.close()
    with pytest.raises(KmsUnavailable, match="3 attempt"):
        c.unwrap_key(w, k)
    assert len(opens) == 2           # attempt 1 found the dead session, 2 and 3 could not reopen
    monkeypatch.undo()                # the token is back: the next call reopens
    assert c.unwrap_key(w, k) == b"d" * 16


def test_other_token_failures_are_kms_errors(client, monkeypatch):
    import pkcs11

    from pqseal.errors import KmsError

    (k,) = key_ids("k")
    client.create_key(k)
    w = client.wrap_key(b"d" * 16, k)

    def refuse(*args, **kwargs):
        raise pkcs11.exceptions.MechanismInvalid()

    monkeypatch.setattr(pkcs11.SecretKey, "decrypt", refuse, raising=False)
    client._token.handles.clear()
    with pytest.raises(KmsError, match="MechanismInvalid.*CKM_AES_GCM"):
        client.unwrap_key(w, k)


def _in_forked_child(factory, wrapped, key_id, q):
    from pqseal.kms import pkcs11 as p11kms

    client = factory()
    q.put((client.unwrap_key(wrapped, key_id), p11kms._initialized_in[os.path.realpath(factory.module)] == os.getpid()))


def test_forked_worker_initializes_the_module_and_logs_in_anew(factory, client):
    import multiprocessing

    (k,) = key_ids("k")
    client.create_key(k)
    dek = os.urandom(16)
    w = client.wrap_key(dek, k)
    ctx = multiprocessing.get_context("fork")
    q = ctx.Queue()
    p = ctx.Process(target=_in_forked_child, args=(pickle.loads(pickle.dumps(factory)), w, k, q))
    p.start()
    got = q.get(timeout=60)
    p.join(60)
    assert p.exitcode == 0 and got == (dek, True)
    assert client.unwrap_key(w, k) == dek      # the parent's session is untouched


# ---- jobs: threads, and token calls per master key ------------------------------------------------


@pytest.mark.parametrize("double_wrapping", [True, False], ids=["double", "single"])
def test_200_file_job_token_calls(tmp_path, client, double_wrapping):
    """A 200-file job on 4 threads as the dataset jobs run one: the driver's key session
    wraps one KEK per master key (double wrapping); single wrapping has the token wrap
    every data key (the session refuses it, so workers call the KMS through the API).
    Reading: the session unwraps what the files name, once per KEK or data key."""
    from pqseal.keys import KeySession

    footer, pii = key_ids("footer", "pii")
    client.create_key(footer)
    client.create_key(pii)
    counting = CountingKms(client)
    files, masters = 200, 2
    src = tmp_path / "p.parquet"
    t = table(50)
    pq.write_table(t, src)
    cfg = EncryptionConfig(footer, column_keys={pii: ["ssn"]}, double_wrapping=double_wrapping)
    (tmp_path / "out").mkdir()
    (tmp_path / "plain").mkdir()
    sealed = [tmp_path / "out" / f"{i}.parquet" for i in range(files)]

    if double_wrapping:
        writer = KeySession.open(counting, cfg)

        def seal(dst):
            pqseal.encrypt_file(src, dst, writer.encryption_properties(dst), fsync=False)
    else:
        def seal(dst):
            pqseal.encrypt_file(src, dst, cfg, kms=counting, fsync=False)

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(seal, sealed))
    assert counting.wraps == (masters if double_wrapping else masters * files)
    assert material(sealed[-1], counting)["doubleWrapping"] == double_wrapping

    clear_caches()
    counting.unwraps = 0        # inspect() above opened one footer
    reader = KeySession.open(counting)
    assert reader.add_files(sealed) == counting.unwraps and not reader.unreadable
    assert counting.unwraps == (masters if double_wrapping else masters * files)

    def unseal(i):
        out = tmp_path / "plain" / f"{i}.parquet"
        pqseal.decrypt_file(sealed[i], out, reader.decryption_properties(sealed[i]), fsync=False)
        return pq.read_table(out).equals(t)

    with ThreadPoolExecutor(4) as pool:
        assert all(pool.map(unseal, range(files)))
    assert counting.unwraps == (masters if double_wrapping else masters * files)


def test_concurrent_threads_share_the_token(client):
    (k,) = key_ids("k")
    client.create_key(k)
    deks = [os.urandom(16) for _ in range(64)]

    def one(dek):
        return client.unwrap_key(client.wrap_key(dek, k), k) == dek

    with ThreadPoolExecutor(8) as pool:
        assert all(pool.map(one, deks))


def test_errors_are_pqseal_errors(client):
    with pytest.raises(PqsealError):
        client.unwrap_key("pqp11:1:" + base64.b64encode(os.urandom(40)).decode(), "no-such-key")


# ---- dataset jobs and key sessions naming the token by URI ----------------------------------------


def test_dataset_job_and_key_session_by_uri(tmp_path, hsm, client):
    """``pqseal.dataset.encrypt(..., kms="pkcs11:...")`` and ``KeySession.open(kms=URI)``.
    The job's key session wraps its KEKs before any file: with the master keys disabled
    after the first file, the job still finishes (workers never use the token)."""
    import pyarrow.parquet.encryption as pe

    from pqseal.arrow import crypto_factory
    from pqseal.kms import open_kms

    footer, pii = key_ids("footer", "pii")
    client.create_key(footer)
    client.create_key(pii)
    uri = hsm.uri(TOKEN)
    cfg = EncryptionConfig(footer, column_keys={pii: ["ssn"]})
    tables = [table(100 + i) for i in range(4)]
    for i, t in enumerate(tables):
        (tmp_path / "plain" / f"d={i}").mkdir(parents=True)
        pq.write_table(t, tmp_path / "plain" / f"d={i}" / "x.parquet")
    disabled = []

    def disable_after_first(result):
        if not disabled:
            client.disable_key(footer)
            client.disable_key(pii)
            disabled.append(result)

    report = pqseal.dataset.encrypt(tmp_path / "plain", tmp_path / "sealed", cfg, kms=uri, workers=1,
                                    on_result=disable_after_first, progress=False)
    assert disabled and report.ok == len(tables) and not report.failed and report.kms_calls == 2
    with pytest.raises(KeyDisabled):     # a new session does need the token
        pqseal.KeySession.open(kms=uri, encryption=cfg)
    client.enable_key(footer)
    client.enable_key(pii)
    sealed = [tmp_path / "sealed" / f"d={i}" / "x.parquet" for i in range(len(tables))]
    clear_caches()
    with pqseal.KeySession.open(kms=uri) as reader:
        assert reader.add_files(sealed) == 2 and not reader.unreadable
        for p, t in zip(sealed, tables):
            out = p.with_name("out.parquet")
            pqseal.decrypt_file(p, out, reader.decryption_properties(p))
            assert pq.read_table(out).equals(t)
    props = crypto_factory(open_kms(uri)).file_decryption_properties(pe.KmsConnectionConfig(),
                                                                     pe.DecryptionConfiguration())
    assert pq.read_table(sealed[0], decryption_properties=props).equals(tables[0])
