"""Regression tests of the fuzz findings (reproducers in ``findings/``, sealed with the
keys of ``pme_seeds.py``). Each runs the PME target's check on its reproducer: inspect
(without and with keys), verify and decrypt_file must succeed or raise a PqsealError.

Both were found on 2df66b6 and fail there; both pass since the page-walk and bounds work
of issue 8 landed. A new finding gets ``xfail(strict=True, reason="finding N: ...")``
until its fix flips it to XPASS, which fails, and the mark is removed.
"""

from __future__ import annotations

import os

import fuzz_pme

FINDINGS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "findings")


def check(name: str, tmp_path) -> None:
    fuzz_pme.check(os.path.join(FINDINGS, name), str(tmp_path))


def test_finding1_negative_bloom_filter_offset(tmp_path):
    """A plaintext column whose ColumnMetaData.bloom_filter_offset is -1 (plaintext footer,
    re-signed with the real key): on 2df66b6 pqseal.verify and pqseal.decrypt_file raised
    ValueError('offset -1 outside the buffer') from thrift.decode via Source.bloom_filter."""
    check("finding1-bloom-filter-offset.parquet", tmp_path)


def test_finding2_inspect_v2_framing_negative_page_size(tmp_path):
    """A dictionary page header resealed with the real key and a negative
    compressed_page_size (issue 8, defect 11): on 2df66b6 pqseal.inspect with keys raised
    struct.error from _v2_framing (format/inspect.py, _le32 at a negative offset)."""
    check("finding2-inspect-v2-framing.parquet", tmp_path)
