"""Regression tests of the fuzz findings (reproducers in ``findings/``, sealed with the
keys of ``pme_seeds.py``). Each runs the PME target's check on its reproducer: inspect
(without and with keys), verify and decrypt_file must succeed or raise a PqsealError.

Marked ``xfail(strict=True)`` while the defect is open: the fix flips the test to
XPASS, which fails, and the mark is then removed.
"""

from __future__ import annotations

import os
import struct

import fuzz_pme
import pytest

FINDINGS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "findings")


def check(name: str, tmp_path) -> None:
    fuzz_pme.check(os.path.join(FINDINGS, name), str(tmp_path))


@pytest.mark.xfail(strict=True, raises=ValueError, reason=(
    "finding 1: a plaintext column whose ColumnMetaData.bloom_filter_offset is -1 (plaintext footer, "
    "re-signed with the real key): pqseal.verify and pqseal.decrypt_file raise ValueError('offset -1 outside "
    "the buffer') from thrift.decode via Source.bloom_filter (format/source.py _decode), not a PqsealError"))
def test_finding1_negative_bloom_filter_offset(tmp_path):
    check("finding1-bloom-filter-offset.parquet", tmp_path)


@pytest.mark.xfail(strict=True, raises=struct.error, reason=(
    "finding 2 (issue 8, defect 11): a dictionary page header resealed with the real key and a negative "
    "compressed_page_size: pqseal.inspect with keys raises struct.error from _v2_framing "
    "(format/inspect.py, _le32 at a negative offset)"))
def test_finding2_inspect_v2_framing_negative_page_size(tmp_path):
    check("finding2-inspect-v2-framing.parquet", tmp_path)
