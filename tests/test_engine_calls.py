"""Native calls of a seal: a fixed number per column chunk and per file, not per module.

Files of many small row groups (polars writes a row group per ~1.4 MB) have hundreds of
column chunks of one or two pages; each native call costs tens of microseconds of Python
set-up, so the seal's cost there is the number of calls. The sealed files are read back
by pyarrow (page CRCs checked) and by the independent reference reader.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pyarrow.parquet.encryption as pe
import pytest

from pqseal.crypto import ModuleType
from pqseal.crypto.cipher import _ModuleCipher
from pqseal.format import DecryptionProperties, EncryptionProperties
from pqseal.format.engine import transform

import parquet_gen as G
from pme_reference import RefFile

ROW_GROUPS, COLUMNS = 20, 3


def _source(path, **options) -> pa.Table:
    n = ROW_GROUPS * 100
    table = pa.table({"id": list(range(n)), "cat": [f"c{i % 7}" for i in range(n)],
                      "x": [i / 3 for i in range(n)]})
    pq.write_table(table, path, row_group_size=100, write_page_index=True, **options)
    return table


@pytest.mark.parametrize("algorithm", ["AES_GCM_V1", "AES_GCM_CTR_V1"])
@pytest.mark.parametrize("crc", [False, True], ids=["no-crc", "crc"])
def test_native_calls_per_chunk(tmp_path, monkeypatch, algorithm, crc):
    src, dst = tmp_path / "plain.parquet", tmp_path / "sealed.parquet"
    table = _source(src, write_page_checksum=crc)
    calls = []
    run = _ModuleCipher._run

    def counted(self, spec):
        calls.append(spec.module_type)
        return run(self, spec)

    monkeypatch.setattr(_ModuleCipher, "_run", counted)
    transform(src, dst, encryption=EncryptionProperties(G.K16, algorithm=algorithm))
    monkeypatch.undo()
    # per chunk: header and page modules together (GCM pages, no CRC), or the pages
    # first when the header CRCs cover them (or their cipher is CTR); per file: the
    # column indexes, the offset indexes, the footer
    per_chunk = 1 if algorithm == "AES_GCM_V1" and not crc else 2
    assert len(calls) == per_chunk * ROW_GROUPS * COLUMNS + 3
    assert pq.read_table(dst, decryption_properties=pe.create_decryption_properties(G.K16),
                         page_checksum_verification=True).equals(table)
    dec = DecryptionProperties(G.K16)
    assert G.pages(dst, dec) == G.pages(src)
    got, want = G.indexes(dst, dec), G.indexes(src)
    mods = G.module_map(dst, dec)
    header_at = {m.offset: (m, nxt) for m, nxt in zip(mods, mods[1:]) if m.kind == ModuleType.DATA_PAGE_HEADER}
    ref = RefFile(dst, dec)
    for c in ref.columns():
        assert got[c.rg, c.col]["column_index"] == want[c.rg, c.col]["column_index"] is not None
        locs = ref.offset_index(c)["page_locations"]
        assert [loc["first_row_index"] for loc in locs] == \
            [loc["first_row_index"] for loc in want[c.rg, c.col]["offset_index"]["page_locations"]]
        for loc in locs:
            header, page = header_at[loc["offset"]]
            assert (header.rg, header.col) == (c.rg, c.col)
            assert loc["compressed_page_size"] == header.length + page.length


def test_source_page_offsets_listed_once_per_chunk(tmp_path, monkeypatch):
    """The source offsets of a chunk's pages are built into a list once per chunk (or
    part of one), not once per page (that made a seal quadratic in the pages of a chunk:
    8000 pages of 4 KiB took 0.25 s instead of 0.05 s)."""
    from pqseal.format.source import Pages

    src, dst = tmp_path / "plain.parquet", tmp_path / "sealed.parquet"
    pq.write_table(pa.table({"x": [i / 7 for i in range(200_000)]}), src, data_page_size=1024, use_dictionary=False,
                   compression="none")
    pages = sum(len(c) for c in G.pages(src).values())
    assert pages > 100
    listed = []
    offsets = Pages.src_header_offsets

    def counted(self):
        listed.append(len(self.plan))
        return offsets.fget(self)

    monkeypatch.setattr(Pages, "src_header_offsets", property(counted))
    transform(src, dst, encryption=EncryptionProperties(G.K16))
    monkeypatch.undo()
    assert len(listed) == 1
    assert G.pages(dst, DecryptionProperties(G.K16)) == G.pages(src)
