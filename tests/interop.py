"""Interop dependencies of the test suite (pyarrow, DuckDB, PySpark, a JDK): one gate.

A missing dependency skips the tests that need it on a developer's machine; with
``PQSEAL_REQUIRE_INTEROP=1`` (set by ``.ci/run``) it fails them instead, so CI can never
pass by silently not running an interop test.
"""

from __future__ import annotations

import importlib
import os
import shutil
from types import ModuleType
from typing import NoReturn

import pytest

ENV = "PQSEAL_REQUIRE_INTEROP"


def required() -> bool:
    """True when missing interop dependencies must fail (read at call time)."""
    return os.environ.get(ENV, "") not in ("", "0")


def missing(what: str) -> NoReturn:
    """Skip (or, under ``PQSEAL_REQUIRE_INTEROP=1``, fail) because ``what`` is unavailable."""
    if required():
        pytest.fail(f"{what} ({ENV}=1: interop dependencies must be present)", pytrace=False)
    pytest.skip(what, allow_module_level=True)


def require(module: str) -> ModuleType:
    """Import and return ``module``, or skip/fail through :func:`missing`.

    Works at module level (skips or fails the whole test module) and inside tests. Only
    an absent module counts as missing: one that is installed but fails to import raises."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as e:
        missing(f"{module} is not importable: {e}")


def require_tool(name: str) -> str:
    """Absolute path of the executable ``name`` on PATH, or skip/fail through :func:`missing`."""
    path = shutil.which(name)
    if path is None:
        missing(f"{name} not found on PATH (install a JDK: .ci/setup installs default-jdk-headless)")
    return path


KMS_ENV = "PQSEAL_REQUIRE_KMS"


def kms_missing(what: str) -> NoReturn:
    """A real KMS (OpenBao, SoftHSM2, moto) or its client library is unavailable: skip,
    or fail under ``PQSEAL_REQUIRE_KMS=1`` (set by ``.ci/run``) or
    ``PQSEAL_REQUIRE_INTEROP=1``."""
    if os.environ.get(KMS_ENV, "") not in ("", "0"):
        pytest.fail(f"{what} ({KMS_ENV}=1: KMS servers and clients must be present)", pytrace=False)
    missing(what)
