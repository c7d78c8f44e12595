"""FIPS mode: the switch (PQSEAL_FIPS=1, pqseal.enable_fips()), its errors, and what it pins.

Each case runs in a subprocess: FIPS mode (and a failed request for it) lasts for the
life of a process. The error paths point OPENSSL_MODULES at a directory without a FIPS
provider, so they hold on machines that have one too. The positive path needs a FIPS
provider, which Debian's OpenSSL 3.0 packages do not ship: it runs when
PQSEAL_TEST_FIPS=1 is set together with an OpenSSL config (OPENSSL_CONF) that includes
the provider's fipsmodule.cnf and, if needed, OPENSSL_MODULES. One way to get a provider:
in OpenSSL 3.0's source, `./Configure enable-fips && make build_generated && make
providers/fips.so`; then `openssl fipsinstall -module DIR/fips.so -out fipsmodule.cnf`,
OPENSSL_MODULES=DIR, and an OPENSSL_CONF that `.include`s fipsmodule.cnf and lists
`fips = fips_sect` (and `default = default_sect` with `activate = 1`) under its providers.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

import pqseal

PY_PATH = os.path.dirname(os.path.dirname(pqseal.__file__))

FIPS_YES_CONF = """\
openssl_conf = openssl_init
[openssl_init]
alg_section = evp_properties
[evp_properties]
default_properties = fips=yes
"""

# Calls that need keys, ciphers or random bytes; each prints one line.
CALLS = """
import json, sys
import pqseal
from pqseal.crypto import GcmModuleCipher, ModuleKey, random_bytes, wrap_key_locally
from pqseal.errors import CryptoLibraryError

def attempt(name, fn):
    try:
        fn()
    except CryptoLibraryError as e:
        print(json.dumps([name, "CryptoLibraryError", str(e)]))
    except Exception as e:
        print(json.dumps([name, type(e).__name__, str(e)]))
    else:
        print(json.dumps([name, "ok", ""]))

attempt("random_bytes", lambda: random_bytes(16))
attempt("ModuleKey", lambda: ModuleKey(bytes(16)))
attempt("encrypt", lambda: GcmModuleCipher(bytes(16), backend="openssl").encrypt(b"module"))
attempt("wrap", lambda: wrap_key_locally(bytes(16), bytes(16), b"aad"))
"""


def run(code: str, tmp_path, **env_extra) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENSSL_", "PQSEAL_"))}
    env["PYTHONPATH"] = PY_PATH + os.pathsep + env.get("PYTHONPATH", "")
    env.update(env_extra)
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=120, check=False)


def results(r: subprocess.CompletedProcess) -> dict:
    assert r.returncode == 0, r.stderr
    return {name: (kind, msg) for name, kind, msg in map(json.loads, r.stdout.splitlines())}


@pytest.fixture
def no_provider_dir(tmp_path):
    """A module directory without fips.so."""
    d = tmp_path / "ossl-modules"
    d.mkdir()
    return d


def test_pqseal_fips_without_provider_names_what_is_missing(tmp_path, no_provider_dir):
    r = run(CALLS + """
attempt("enable_fips", pqseal.enable_fips)
info = pqseal.backend_info()
print(json.dumps(["info", info["fips_mode"], info["fips_error"]]))
""", tmp_path, PQSEAL_FIPS="1", OPENSSL_MODULES=str(no_provider_dir))
    lines = [json.loads(x) for x in r.stdout.splitlines()]
    assert r.returncode == 0, r.stderr
    info = lines.pop()
    assert info[0] == "info" and info[1] is False
    msg = info[2]
    assert "FIPS mode" in msg and "'fips' provider could not be loaded" in msg
    assert f"there is no {no_provider_dir / 'fips.so'}" in msg
    assert f"module directory {no_provider_dir} (from OPENSSL_MODULES)" in msg
    assert "OpenSSL config" in msg
    # every call that needs crypto refuses with that same error: nothing runs outside FIPS mode
    assert {name: (kind, text) for name, kind, text in lines} == {
        name: ("CryptoLibraryError", msg) for name in ("random_bytes", "ModuleKey", "encrypt", "wrap", "enable_fips")}


def test_fips_provider_file_present_but_unloadable(tmp_path, no_provider_dir):
    (no_provider_dir / "fips.so").write_bytes(b"not a shared object")
    r = run(CALLS, tmp_path, PQSEAL_FIPS="1", OPENSSL_MODULES=str(no_provider_dir))
    kind, msg = results(r)["random_bytes"]
    assert kind == "CryptoLibraryError"
    assert f"{no_provider_dir / 'fips.so'} exists but did not load or failed its self-test" in msg
    assert "OpenSSL said:" in msg  # OpenSSL's own reason is passed on


def test_openssl_config_fips_yes_without_provider(tmp_path, no_provider_dir):
    """Before: every call failed with "the CSPRNG failed". Now: detected at import and
    reported by every call as what it is."""
    conf = tmp_path / "fips-yes.cnf"
    conf.write_text(FIPS_YES_CONF)
    r = run(CALLS + """
info = pqseal.backend_info()
print(json.dumps(["info", "", info["fips_error"]]))
""", tmp_path, OPENSSL_CONF=str(conf), OPENSSL_MODULES=str(no_provider_dir))
    got = results(r)
    msg = got.pop("info")[1]
    assert "default_properties = fips=yes" in msg and "'fips' provider could not be loaded" in msg
    assert f"OpenSSL config {conf} (from OPENSSL_CONF)" in msg
    assert "CSPRNG" not in msg
    assert got == {name: ("CryptoLibraryError", msg) for name in ("random_bytes", "ModuleKey", "encrypt", "wrap")}


def test_failed_enable_fips_is_sticky(tmp_path, no_provider_dir):
    r = run(CALLS.replace('attempt("random_bytes"', 'attempt("before", lambda: random_bytes(16))\n'
                          'attempt("enable_fips", pqseal.enable_fips)\nattempt("random_bytes"'),
            tmp_path, OPENSSL_MODULES=str(no_provider_dir))
    got = results(r)
    assert got.pop("before") == ("ok", "")
    kind, msg = got.pop("enable_fips")
    assert kind == "CryptoLibraryError" and "'fips' provider could not be loaded" in msg
    assert got == {name: ("CryptoLibraryError", msg) for name in ("random_bytes", "ModuleKey", "encrypt", "wrap")}


def test_ipsecmb_is_refused_when_fips_is_asked_for(tmp_path, no_provider_dir):
    r = run("""
import json, pqseal
from pqseal.crypto import GcmModuleCipher
info = pqseal.backend_info()
print(json.dumps([info["backend"], info["error"], info["available"]]))
""", tmp_path, PQSEAL_FIPS="1", PQSEAL_BACKEND="ipsecmb", OPENSSL_MODULES=str(no_provider_dir))
    assert r.returncode == 0, r.stderr
    backend, error, available = json.loads(r.stdout)
    assert backend is None and available == ["openssl"]
    assert "'ipsecmb' is not allowed in FIPS mode" in error and "PQSEAL_BACKEND=openssl" in error


@pytest.mark.parametrize("value, fips_error", [("0", None), ("", None), ("maybe", "PQSEAL_FIPS='maybe'")])
def test_pqseal_fips_values(tmp_path, value, fips_error):
    r = run(CALLS + """
info = pqseal.backend_info()
print(json.dumps(["info", info["fips_mode"], info["fips_error"]]))
""", tmp_path, PQSEAL_FIPS=value)
    got = results(r)
    mode, err = got.pop("info")
    assert mode is False
    if fips_error is None:
        assert err is None
        assert got == {name: ("ok", "") for name in ("random_bytes", "ModuleKey", "encrypt", "wrap")}
    else:
        assert fips_error in err and "expected 1 (FIPS mode) or 0" in err
        assert got == {name: ("CryptoLibraryError", err) for name in ("random_bytes", "ModuleKey", "encrypt", "wrap")}


def test_info_command_shows_the_fips_error(tmp_path, no_provider_dir):
    r = run("import sys; from pqseal.cli import main; sys.argv = ['pqseal', 'info', '--json']; main()",
            tmp_path, PQSEAL_FIPS="1", OPENSSL_MODULES=str(no_provider_dir))
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    assert info["fips_mode"] is False and "'fips' provider could not be loaded" in info["fips_error"]


# ---- with a FIPS provider ------------------------------------------------------------------

needs_provider = pytest.mark.skipif(
    os.environ.get("PQSEAL_TEST_FIPS") != "1",
    reason="needs OpenSSL's FIPS provider (not in Debian's packages): set PQSEAL_TEST_FIPS=1 and OPENSSL_CONF")


def run_with_provider(code: str, tmp_path, **env_extra) -> subprocess.CompletedProcess:
    env = {k: os.environ[k] for k in ("OPENSSL_CONF", "OPENSSL_MODULES") if k in os.environ}
    env.update(env_extra)
    return run(code, tmp_path, **env)


@needs_provider
def test_fips_mode_pins_provider_backend_and_drbg(tmp_path):
    r = run_with_provider("""
import hashlib, json
import pqseal
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from pqseal.crypto import GcmModuleCipher, random_bytes
from pqseal.errors import BackendUnavailable
info = pqseal.backend_info()
key = random_bytes(32)
module = GcmModuleCipher(key, b"file-aad").encrypt(b"a data page", 2, 1, 2, 3)
body = module[4:]
pt = AESGCM(key).decrypt(body[:12], body[12:], b"file-aad" + bytes([2, 1, 0, 2, 0, 3, 0]))
try:
    GcmModuleCipher(key, backend="ipsecmb")
    ipsecmb = "accepted"
except BackendUnavailable as e:
    ipsecmb = str(e)
try:
    hashlib.md5(b"x")
    md5 = "allowed"
except ValueError:
    md5 = "refused"
print(json.dumps([info, pt.decode(), ipsecmb, md5]))
""", tmp_path, PQSEAL_FIPS="1")
    assert r.returncode == 0, r.stderr
    info, pt, ipsecmb, md5 = json.loads(r.stdout)
    assert info["fips_mode"] is True and info["fips_error"] is None
    assert info["backend"] == "openssl" and info["available"] == ["openssl"]
    assert pt == "a data page"  # the independent oracle reads what the FIPS provider wrote
    assert "not allowed in FIPS mode" in ipsecmb
    assert md5 == "refused"  # the switch holds for the whole libcrypto of the process


@needs_provider
def test_enable_fips_after_the_drbg_ran_is_refused(tmp_path):
    r = run_with_provider(CALLS.replace('attempt("random_bytes"', 'attempt("before", lambda: random_bytes(16))\n'
                                        'attempt("enable_fips", pqseal.enable_fips)\nattempt("random_bytes"'),
                          tmp_path)
    got = results(r)
    assert got.pop("before") == ("ok", "")
    kind, msg = got.pop("enable_fips")
    assert kind == "CryptoLibraryError" and "already running outside the FIPS provider" in msg
    assert got == {name: ("CryptoLibraryError", msg) for name in ("random_bytes", "ModuleKey", "encrypt", "wrap")}


@needs_provider
def test_enable_fips_at_run_time(tmp_path):
    r = run_with_provider(CALLS.replace('attempt("random_bytes"', 'attempt("enable_fips", pqseal.enable_fips)\n'
                                        'attempt("again", pqseal.enable_fips)\nattempt("random_bytes"'),
                          tmp_path)
    got = results(r)
    assert got == {name: ("ok", "") for name in ("enable_fips", "again", "random_bytes", "ModuleKey", "encrypt",
                                                  "wrap")}
