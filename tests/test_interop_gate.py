"""The interop gate of tests/interop.py: a missing dependency skips a test on a
developer's machine and fails it under ``PQSEAL_REQUIRE_INTEROP=1`` (what CI sets)."""

from __future__ import annotations

import pytest

import interop

PROBE = """
import pytest
from interop import require, require_tool

def test_module():
    require("pqseal_no_such_module_for_the_gate")

def test_tool():
    require_tool("pqseal-no-such-tool-for-the-gate")

def test_present():
    assert require("json").dumps(1) == "1"
"""

MODULE_LEVEL = """
from interop import require
require("pqseal_no_such_module_for_the_gate")

def test_never_runs():
    pass
"""


@pytest.mark.parametrize("value", [None, "", "0"])
def test_missing_dependency_skips_without_the_variable(pytester, monkeypatch, value):
    if value is None:
        monkeypatch.delenv(interop.ENV, raising=False)
    else:
        monkeypatch.setenv(interop.ENV, value)
    pytester.makepyfile(test_probe=PROBE)
    pytester.runpytest("-p", "no:cacheprovider").assert_outcomes(passed=1, skipped=2)


def test_missing_dependency_fails_with_the_variable(pytester, monkeypatch):
    monkeypatch.setenv(interop.ENV, "1")
    pytester.makepyfile(test_probe=PROBE)
    r = pytester.runpytest("-p", "no:cacheprovider", "-rf")
    r.assert_outcomes(passed=1, failed=2)
    r.stdout.fnmatch_lines(["*pqseal_no_such_module_for_the_gate*PQSEAL_REQUIRE_INTEROP=1*",
                            "*pqseal-no-such-tool-for-the-gate not found*PQSEAL_REQUIRE_INTEROP=1*"])


@pytest.mark.parametrize("value,outcome", [("", {"skipped": 1}), ("1", {"errors": 1})])
def test_module_level_require(pytester, monkeypatch, value, outcome):
    monkeypatch.setenv(interop.ENV, value)
    pytester.makepyfile(test_probe=MODULE_LEVEL)
    pytester.runpytest("-p", "no:cacheprovider").assert_outcomes(**outcome)


def test_ci_sets_the_variable():
    import pathlib
    run = (pathlib.Path(__file__).parents[1] / ".ci" / "run").read_text()
    assert f"export {interop.ENV}=1" in run.splitlines()
