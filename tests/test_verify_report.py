"""verify's report: bounded whatever the damage (one failure per chunk whose framing is
broken, the first MAX_LISTED failures listed and all counted), and honest about what it
authenticated (CTR page bodies carry no tag: their framing is checked, nothing more)."""

from __future__ import annotations


import numpy as np
import pyarrow as pa
import pytest

import pqseal
from pqseal.crypto import ModuleType as MT
from pqseal.format import DecryptionProperties, EncryptionProperties, VerificationFailed
from pqseal.format.verify import MAX_LISTED

import parquet_gen as G

DEC = DecryptionProperties(G.K16)


@pytest.fixture(scope="module")
def big_chunk(tmp_path_factory):
    """One row group; column "v" is ~4 MB of incompressible int64 in 8 KiB pages."""
    d = tmp_path_factory.mktemp("vrep")
    rng = np.random.default_rng(5)
    t = pa.table({"v": pa.array(rng.integers(0, 1 << 62, 500_000)), "w": pa.array(np.arange(500_000))})
    return G.write_pyarrow(d / "plain.parquet", t, row_group_size=500_000, compression="none",
                           use_dictionary=False)


def _seal(plain, dst, algorithm="AES_GCM_V1"):
    pqseal.encrypt_file(plain, dst, EncryptionProperties(G.K16, algorithm=algorithm))
    return dst


def _verify_failure(path) -> dict:
    with G.raises(VerificationFailed) as ei:
        pqseal.verify(path, DEC)
    return ei.value.report


@pytest.mark.parametrize("algorithm", ["AES_GCM_V1", "AES_GCM_CTR_V1"])
def test_zeroed_megabytes_are_one_failure(big_chunk, tmp_path, algorithm):
    """Zeroing 2 MB inside a column chunk recorded a failure per 4-byte step (half a
    million here); the broken framing is now one failure naming the unchecked bytes."""
    sealed = _seal(big_chunk, tmp_path / "s.parquet", algorithm)
    pages = [m for m in G.module_map(sealed, DEC) if m.kind == MT.DATA_PAGE and m.col == 0]
    start = pages[10].offset + 100
    size = 2 << 20
    assert start + size < pages[-1].offset
    bad = G.splice(sealed, tmp_path / "bad.parquet", {start: bytes(size)})
    report = _verify_failure(bad)
    assert len(report["failures"]) <= 3, len(report["failures"])
    assert report["failures_total"] == len(report["failures"])
    assert {f["column"] for f in report["failures"]} == {"v"}
    broken = [f for f in report["failures"] if f["module"] == "PAGES"]
    assert len(broken) == 1 and start < broken[0]["offset"] < start + size < broken[0]["end"]
    assert "not checked" in broken[0]["error"]
    with G.raises(pqseal.errors.PqsealError):
        pqseal.decrypt_file(bad, tmp_path / "out.parquet", DEC)


def test_failures_beyond_the_cap_are_counted(big_chunk, tmp_path):
    """Every page body of a chunk altered: each is a failure (framing intact), the report
    lists MAX_LISTED of them and counts the rest."""
    sealed = _seal(big_chunk, tmp_path / "s.parquet")
    pages = [m for m in G.module_map(sealed, DEC) if m.kind == MT.DATA_PAGE and m.col == 0]
    assert len(pages) > MAX_LISTED + 50
    data = bytearray(open(sealed, "rb").read())
    for m in pages:
        data[m.ciphertext_offset] ^= 0x10
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(data)
    report = _verify_failure(bad)
    assert len(report["failures"]) == MAX_LISTED
    assert report["failures_total"] == len(pages)
    assert [f["page"] for f in report["failures"]] == list(range(MAX_LISTED))
    assert all(f["module"] == "DATA_PAGE" for f in report["failures"])


def test_ctr_page_bodies_are_not_counted_as_authenticated(big_chunk, tmp_path):
    """The same file sealed with GCM and with CTR: the CTR report counts its page bodies
    as framing-checked, not among the authenticated modules (it counted them before)."""
    gcm = pqseal.verify(_seal(big_chunk, tmp_path / "g.parquet"), DEC)
    ctr = pqseal.verify(_seal(big_chunk, tmp_path / "c.parquet", "AES_GCM_CTR_V1"), DEC)
    assert gcm["pages"] == ctr["pages"] > 100
    assert ctr["modules"] == gcm["modules"] - ctr["pages"]
    assert gcm["pages_framing_checked"] == 0
    assert ctr["pages_framing_checked"] == ctr["pages"]
    assert ctr["modules_authenticated"] == ctr["modules"] == gcm["modules"] - ctr["pages"]
    assert gcm["modules_authenticated"] == gcm["modules"]
