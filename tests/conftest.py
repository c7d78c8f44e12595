"""Shared fixtures and Hypothesis profiles for the pqseal test suite.

Hypothesis profiles (choose with ``HYPOTHESIS_PROFILE``):

* ``default``: quick local runs;
* ``ci``: more examples, no deadline (CI exports ``HYPOTHESIS_PROFILE=ci``; the
  sanitizer and OpenSSL-only passes inherit it);
* ``slow``: many more examples, for occasional soak runs
  (``HYPOTHESIS_PROFILE=slow python -m pytest tests``). Only used when asked for.
"""

from __future__ import annotations

import os
from datetime import timedelta

import pytest
from hypothesis import HealthCheck, settings

import pqseal

settings.register_profile("default", max_examples=40, deadline=timedelta(seconds=2),
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("ci", max_examples=150, deadline=None, print_blob=True,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("slow", max_examples=2000, deadline=None, print_blob=True,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
_profile = os.environ.get("HYPOTHESIS_PROFILE", "default")
if _profile not in ("default", "ci", "slow"):
    raise pytest.UsageError(f"HYPOTHESIS_PROFILE={_profile!r}: expected default, ci or slow")
settings.load_profile(_profile)

pytest_plugins = ["pytester"]

# Keystores made by the suite (and by the pqseal processes it starts) use scrypt at a
# test-only cost (2^14; kms/keystore.py): the production default, 2^17 (~0.5 s and
# 128 MiB each), would make every keystore open of hundreds of tests pay it. The tests of
# the default cost unset this (tests/test_keystore_lifecycle.py).
os.environ.setdefault("PQSEAL_KEYSTORE_TEST_KDF_N", str(1 << 14))

BACKENDS = pqseal.available_backends()


@pytest.fixture
def fresh_key_caches():
    """Key caches and the audit logs opened cleared before and after the test: one test's
    keys (or an audit log it could not open) are not the next test's."""
    from pqseal.audit import forget_logs
    from pqseal.keys import clear_caches

    clear_caches()
    forget_logs()
    yield
    clear_caches()
    forget_logs()


@pytest.fixture
def make_keystore(tmp_path):
    """``make_keystore(passphrase, *key_ids)``: a new local keystore at ``tmp_path/ks.json``
    (the test KDF cost above) holding new master keys of these ids."""
    from pqseal.kms.keystore import LocalKeystore

    def make(passphrase: bytes, *key_ids: str) -> LocalKeystore:
        k = LocalKeystore.init(tmp_path / "ks.json", passphrase)
        for key_id in key_ids:
            k.create(key_id)
        return k
    return make


def pytest_report_header(config):
    info = pqseal.backend_info()
    return [f"pqseal {pqseal.__version__}: backends {info['available']} (default {info['backend']}), "
            f"{info['openssl_version']}, ipsec-mb {info['ipsecmb_version']} {info['ipsecmb_arch']}; "
            f"hypothesis profile {_profile}"]


def pytest_sessionstart(session):
    # The sanitizer / OpenSSL-only CI passes build the native core elsewhere and put it
    # first on PYTHONPATH; make sure the tests really run against that build.
    expect = os.environ.get("PQSEAL_EXPECT_NATIVE")
    if expect:
        from pqseal import _native, _nativeio
        got = os.path.realpath(_native.__file__)
        if got != os.path.realpath(expect):
            raise pytest.UsageError(f"PQSEAL_EXPECT_NATIVE={expect} but pqseal._native is {got}")
        io_dir = os.path.dirname(os.path.realpath(_nativeio.__file__))
        if io_dir != os.path.dirname(got):  # built together, from the same tree
            raise pytest.UsageError(f"pqseal._nativeio is from {io_dir}, pqseal._native from {os.path.dirname(got)}")


@pytest.fixture(scope="session", params=BACKENDS)
def backend(request) -> str:
    """Every backend usable in this process (session scoped, so Hypothesis tests may use it)."""
    return request.param


@pytest.fixture(scope="session")
def all_backends() -> list[str]:
    """All usable backends; tests comparing backends need at least two."""
    if len(BACKENDS) < 2:
        pytest.skip(f"only {BACKENDS} available in this build: nothing to compare against")
    return list(BACKENDS)
