"""One DRBG: every key, key id, salt and file AAD pqseal makes comes from OpenSSL's
DRBG through ``pqseal.crypto.random_bytes`` (nonces are drawn in the native batch call)."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import textwrap

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import pqseal
from pqseal.crypto import random_bytes, unwrap_key_locally, wrap_key_locally
from pqseal.errors import InvalidTag
from pqseal.format import EncryptionProperties
from pqseal.keys.toolkit import KeyWrapper, clear_caches
from pqseal.kms import KmsClient, KmsConnectionConfig
from pqseal.kms.keystore import LocalKeystore

PY_PATH = os.path.dirname(os.path.dirname(pqseal.__file__))


@pytest.mark.parametrize("n", [0, 1, 12, 16, 32, 1000, 3 << 20])
def test_length_and_type(n):
    out = random_bytes(n)
    assert type(out) is bytes and len(out) == n


def test_distinct_draws():
    draws = [random_bytes(16) for _ in range(2000)]
    assert len(set(draws)) == len(draws)
    # not a constant pattern within one draw either: 1 MiB of output uses every byte value
    assert len(set(random_bytes(1 << 20))) == 256


@pytest.mark.parametrize("bad, exc", [(-1, ValueError), (1.5, TypeError), (True, TypeError), ("16", TypeError)])
def test_bad_length(bad, exc):
    with pytest.raises(exc):
        random_bytes(bad)


# ---- no site draws keys from os.urandom ------------------------------------------------------
# With os.urandom made constant, everything pqseal draws must still differ between draws.


@pytest.fixture
def constant_urandom(monkeypatch):
    monkeypatch.setattr(os, "urandom", lambda n: bytes(n))


class _RecordingKms(KmsClient):
    """Wraps by returning the key in base64 (so the test sees the KEKs)."""

    def wrap_key(self, key_bytes: bytes, master_key_identifier: str) -> str:
        return base64.b64encode(key_bytes).decode()

    def unwrap_key(self, wrapped_key: str, master_key_identifier: str) -> bytes:
        return base64.b64decode(wrapped_key)


def test_keystore_salts_and_master_keys(constant_urandom, tmp_path):
    pw = b"a passphrase"
    a = LocalKeystore.init(tmp_path / "a.json", pw)
    b = LocalKeystore.init(tmp_path / "b.json", pw)
    salts = [json.loads((tmp_path / f"{x}.json").read_text())["kdf"]["salt"] for x in "ab"]
    assert salts[0] != salts[1]
    for ks, kid in ((a, "k1"), (a, "k2"), (b, "k1")):
        ks.create(kid, 128)
    masters = [a._master("k1", None)[1], a._master("k2", None)[1], b._master("k1", None)[1]]
    # three different master keys: what one wraps, no other unwraps (same AAD)
    for i, mk in enumerate(masters):
        wrapped = wrap_key_locally(b"sixteen byte dek", mk, b"aad")
        for j, other in enumerate(masters):
            if i != j:
                with pytest.raises(InvalidTag):
                    unwrap_key_locally(wrapped, other, b"aad")


def test_keks_and_kek_ids(constant_urandom):
    clear_caches()
    try:
        w = KeyWrapper(_RecordingKms(), KmsConnectionConfig(), double_wrapping=True)
        m1 = w.wrap(random_bytes(16), "master-1", True)
        m2 = w.wrap(random_bytes(16), "master-2", False)
    finally:
        clear_caches()
    assert m1.kek_id != m2.kek_id
    assert m1.wrapped_kek != m2.wrapped_kek  # the KEKs (base64 of themselves) differ


def test_file_aad_unique(constant_urandom, tmp_path):
    src = tmp_path / "plain.parquet"
    pq.write_table(pa.table({"x": list(range(10))}), src)
    key = random_bytes(16)
    uniques = []
    for i in range(2):
        dst = tmp_path / f"sealed{i}.parquet"
        pqseal.encrypt_file(src, dst, EncryptionProperties(key))
        uniques.append(pqseal.inspect(dst)["aad_file_unique"])
    assert uniques[0] and uniques[0] != uniques[1]


# ---- a failing DRBG is a typed, clear error --------------------------------------------------

_BROKEN_DRBG_CONF = """\
openssl_conf = openssl_init
[openssl_init]
random = random_sect
[random_sect]
random = NO-SUCH-DRBG
"""


def run_python(code: str, env_extra: dict, tmp_path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENSSL_", "PQSEAL_"))}
    env["PYTHONPATH"] = PY_PATH + os.pathsep + env.get("PYTHONPATH", "")
    env.update(env_extra)
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=120, check=False)


def test_drbg_failure_is_a_clear_crypto_library_error(tmp_path):
    conf = tmp_path / "broken-drbg.cnf"
    conf.write_text(_BROKEN_DRBG_CONF)
    code = """
        import pqseal
        from pqseal.crypto import GcmModuleCipher, random_bytes
        from pqseal.errors import CryptoLibraryError
        for what, call in (("random_bytes", lambda: random_bytes(16)),
                           ("nonce", lambda: GcmModuleCipher(bytes(16), backend="openssl").encrypt(b"x"))):
            try:
                call()
            except CryptoLibraryError as e:
                print(what, "->", e)
            else:
                print(what, "-> no error")
    """
    r = run_python(code, {"OPENSSL_CONF": str(conf)}, tmp_path)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.strip().splitlines()
    assert len(lines) == 2, r.stdout
    for line in lines:
        assert "-> OpenSSL's random generator (DRBG) failed" in line, line
        assert "unable to fetch drbg" in line.lower(), line  # OpenSSL's own reason is passed on


def test_data_keys_come_from_the_drbg(constant_urandom):
    """DEKs of the footer and of every column differ even when os.urandom returns zeros."""
    from pqseal.config import EncryptionConfig
    from pqseal.keys import CryptoFactory

    clear_caches()
    try:
        cfg = EncryptionConfig("fk", column_keys={"ck": ["a", "b"]}, double_wrapping=False)
        props = CryptoFactory(lambda c: _RecordingKms()).file_encryption_properties(KmsConnectionConfig(), cfg)
    finally:
        clear_caches()
    keys = [props.footer_key] + [props.column_keys[c].key for c in ("a", "b")]
    assert len(set(keys)) == 3 and bytes(16) not in keys
