"""A large plaintext column chunk is sealed in parts (pqseal.format.source.STREAM_BYTES,
8 MiB): read, encrypted and written part by part, so the read buffer stays small and in
the CPU's cache. The output is the same file as when the chunk is read whole (checked on
its plaintext pages and by decrypting both to plaintext files byte for byte), readable by
pyarrow and by the independent reference reader; a page larger than a part is read whole;
a malformed chunk fails the same way, leaving no output."""

from __future__ import annotations

import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pyarrow.parquet.encryption as pe
import pytest

from pqseal.errors import MalformedFile
from pqseal.format import DecryptionProperties, EncryptionProperties
from pqseal.format import source as source_mod
from pqseal.format.engine import transform

import parquet_gen as G
from pme_reference import RefFile

PART = 4096


def _table(rows: int = 30_000) -> pa.Table:
    rng = np.random.default_rng(5)
    return pa.table({"x": rng.random(rows), "cat": [f"c{i % 11}" for i in range(rows)],
                     "s": [f"value-{i}-{'y' * (i % 23)}" for i in range(rows)]})


def _seal(src, dst, enc, monkeypatch, part: int) -> dict:
    """Seal with parts of ``part`` bytes; returns counts of parts and of parts grown for a large page."""
    seen = {"parts": 0, "grown": 0}
    walk = source_mod.walk_plain

    def counted(spot, buf, base, pos, avail):
        plan, nxt = walk(spot, buf, base, pos, avail)
        seen["parts" if nxt > pos else "grown"] += 1
        return plan, nxt

    monkeypatch.setattr(source_mod, "STREAM_BYTES", part)
    monkeypatch.setattr(source_mod, "walk_plain", counted)
    transform(src, dst, encryption=enc)
    monkeypatch.undo()
    return seen


@pytest.mark.parametrize("algorithm", ["AES_GCM_V1", "AES_GCM_CTR_V1"])
@pytest.mark.parametrize("options", [{}, {"write_page_checksum": True}, {"data_page_version": "2.0"},
                                     {"data_page_version": "2.0", "framing": "parquet-java"}],
                         ids=["v1", "crc", "v2", "v2-parquet-java"])
def test_parts_give_the_same_file_as_a_whole_chunk(tmp_path, monkeypatch, algorithm, options):
    options = dict(options)
    framing = options.pop("framing", "arrow")
    src = tmp_path / "plain.parquet"
    table = _table()
    pq.write_table(table, src, data_page_size=1024, use_dictionary=["cat"], write_page_index=True, **options)
    enc = EncryptionProperties(G.K16, algorithm=algorithm, v2_framing=framing)
    dec = DecryptionProperties(G.K16)
    seen = _seal(src, tmp_path / "parts.parquet", enc, monkeypatch, PART)
    assert seen["parts"] > 3 * 3 and seen["grown"] > 0      # every chunk in parts; some pages larger than one
    assert _seal(src, tmp_path / "whole.parquet", enc, monkeypatch, 1 << 30)["parts"] == 0
    assert G.pages(tmp_path / "parts.parquet", dec) == G.pages(src)
    ref, want = RefFile(tmp_path / "parts.parquet", dec), G.indexes(src)
    mods = G.module_map(tmp_path / "parts.parquet", dec)
    sizes = {m.offset: m.length + nxt.levels + nxt.length for m, nxt in zip(mods, mods[1:])}
    for c in ref.columns():   # the offset index points at the output's pages
        key = c.rg, c.col
        assert ref.column_index(c) == want[key]["column_index"]
        locs, src_locs = ref.offset_index(c)["page_locations"], want[key]["offset_index"]["page_locations"]
        assert [loc["first_row_index"] for loc in locs] == [loc["first_row_index"] for loc in src_locs]
        assert all(sizes[loc["offset"]] == loc["compressed_page_size"] for loc in locs)
    if "write_page_checksum" not in options:   # a CRC's varint length follows the random nonces
        assert os.path.getsize(tmp_path / "parts.parquet") == os.path.getsize(tmp_path / "whole.parquet")
    for name in ("parts", "whole"):
        transform(tmp_path / f"{name}.parquet", tmp_path / f"{name}.plain.parquet", decryption=dec)
    assert (tmp_path / "parts.plain.parquet").read_bytes() == (tmp_path / "whole.plain.parquet").read_bytes()
    if framing == "arrow":
        assert pq.read_table(tmp_path / "parts.parquet", decryption_properties=pe.create_decryption_properties(G.K16),
                             page_checksum_verification=True).equals(table)


def test_malformed_chunk_in_parts_fails_without_output(tmp_path, monkeypatch):
    """A page whose size runs past its chunk is a MalformedFile in parts as when read whole."""
    src = tmp_path / "plain.parquet"
    pq.write_table(pa.table({"x": np.arange(40_000, dtype=np.float64)}), src, data_page_size=1024,
                   use_dictionary=False, compression="none")
    ref = G.pages(src)
    assert len(ref[0, 0]) > 10
    # the last page's header rewritten (in as many bytes) to say one byte more than is left
    from pqseal.format import thrift
    from pqseal.format.source import Source

    with Source(str(src)) as s:
        plan = s.chunk_plan(0, 0)
        off, hl = int(plan.header_offsets[-1]), int(plan.header_lengths[-1])
        header = dict(plan.headers[-1])
    header["compressed_page_size"] += 1
    new = thrift.encode("PageHeader", header)
    assert len(new) == hl
    bad = G.splice(src, tmp_path / "bad.parquet", {off: new})
    for part in (PART, 1 << 30):
        monkeypatch.setattr(source_mod, "STREAM_BYTES", part)
        with pytest.raises(MalformedFile, match="overruns its column chunk"):
            transform(bad, tmp_path / "out.parquet", encryption=EncryptionProperties(G.K16))
        assert sorted(os.listdir(tmp_path)) == ["bad.parquet", "plain.parquet"]
