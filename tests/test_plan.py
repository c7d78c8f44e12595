"""The module plan of a column chunk (pqseal.format.plan).

Its three walks (length prefixes over the chunk's bytes, the same reading only the
headers, one header at a time) must agree; and the plan is checked against independent
readers: pyarrow's metadata for the chunk bounds and tests/pme_reference.py (AES from
``cryptography``, AADs re-derived from the spec) for every module it names.
"""

from __future__ import annotations

import warnings

import numpy as np
import pyarrow.parquet as pq
import pyarrow.parquet.encryption as pe
import pytest

import pqseal
from pqseal.crypto import ModuleType as MT
from pqseal.format import DecryptionProperties, EncryptionProperties, thrift
from pqseal.format.layout import PageType
from pqseal.format.plan import ChunkSpot, plan_encrypted
from pqseal.format.source import Source

import parquet_gen as G
import pme_reference as R

DEC = DecryptionProperties(G.K16)
CASES = {  # name: (pyarrow writer options, pqseal encryption options)
    "v1-gcm": ({}, {}),
    "v1-ctr": ({}, {"algorithm": "AES_GCM_CTR_V1"}),
    "v2-arrow-gcm": ({"data_page_version": "2.0"}, {}),
    "v2-java-gcm": ({"data_page_version": "2.0"}, {"v2_framing": "parquet-java"}),
    "v2-java-ctr": ({"data_page_version": "2.0"}, {"v2_framing": "parquet-java", "algorithm": "AES_GCM_CTR_V1"}),
    "crc-ctr": ({"write_page_checksum": True}, {"algorithm": "AES_GCM_CTR_V1"}),
}


@pytest.fixture(scope="module")
def sealed(tmp_path_factory):
    d = tmp_path_factory.mktemp("plan")
    table = G.make_table(6_000)
    out = {}
    for name, (wopts, eopts) in CASES.items():
        plain = G.write_pyarrow(d / f"{name}-plain.parquet", table, row_group_size=3_000, **wopts)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")   # parquet-java framing: Arrow cannot read it
            pqseal.encrypt_file(plain, d / f"{name}.parquet", EncryptionProperties(G.K16, **eopts))
        out[name] = d / f"{name}.parquet"
    return out


def _plans(path):
    with Source(path, DEC) as s:
        for rg in range(s.num_row_groups):
            for col in range(len(s.paths)):
                gcm, ctr = s.column_gcm_ctr(rg, col)
                yield s, s.chunk_plan(rg, col), gcm, (ctr or gcm).overhead


def _same(a, b):
    for f in ("header_offsets", "header_lengths", "body_offsets", "body_lengths", "levels"):
        assert np.array_equal(getattr(a, f), getattr(b, f)), f
    assert a.headers == b.headers and a.dictionary == b.dictionary and a.framing == b.framing


@pytest.mark.parametrize("block", [4 << 10, 40], ids=["4KiB", "40B"])
@pytest.mark.parametrize("case", list(CASES))
def test_the_walks_agree(sealed, case, block, monkeypatch):
    """Prefix walk over the chunk, prefix walk reading the headers only (in blocks: 40
    bytes puts header modules across block ends), and the careful walk (one header at a
    time, as a tolerant verify walk) find the same pages."""
    from pqseal.format import plan

    monkeypatch.setattr(plan, "_SPARSE_BLOCK", block)
    for s, p, gcm, overhead in _plans(sealed[case]):
        spot = ChunkSpot(rg=p.rg, col=p.col, start=p.start, end=p.end, dictionary=p.dictionary, name="t", where="t")
        sparse = plan_encrypted(spot, gcm, page_overhead=overhead, read=s.read)
        failures = []
        careful = plan_encrypted(spot, gcm, page_overhead=overhead, read=s.read, failures=failures)
        assert not failures
        if not p.levels.any():   # the layout the prefix walks take: header module, page module, ...
            offs, lens, hbuf, hoffs = plan._walk_prefixes_sparse(s.read, p.start, p.end, 16)
            assert np.array_equal(offs[0::2], p.header_offsets) and np.array_equal(offs[1::2], p.body_offsets)
            assert np.array_equal(lens[1::2], p.body_lengths)
            assert [hbuf[o:o + n] for o, n in zip(hoffs, lens[0::2])] == \
                [bytes(s.read(o, n)) for o, n in zip(p.header_offsets, p.header_lengths)]
        _same(p, sparse)
        _same(p, careful)
        assert p.framing == ("parquet-java" if "java" in case else "arrow" if "v2" in case else None)


@pytest.mark.parametrize("case", list(CASES))
def test_plan_against_independent_readers(sealed, case):
    """Chunk bounds from pyarrow; every header and (GCM) page module at the plan's offsets
    decrypts with the reference implementation under the AAD the spec gives its type and
    ordinals; CTR pages decrypt to the header's uncompressed size where uncompressed."""
    path = sealed[case]
    md = pq.ParquetFile(path, decryption_properties=pe.create_decryption_properties(G.K16)).metadata
    ctr = "ctr" in case
    seen = 0
    for s, p, _, _ in _plans(path):
        aad = s.file_aad()
        c = md.row_group(p.rg).column(p.col)
        start = c.dictionary_page_offset if c.has_dictionary_page else c.data_page_offset
        assert (p.start, p.end) == (start, start + c.total_compressed_size)
        # the pages tile the chunk: header, levels, page module, next header...
        ends = p.body_offsets + p.body_lengths
        assert p.header_offsets[0] == p.start and ends[-1] == p.end
        assert np.array_equal(p.header_offsets[1:], ends[:-1])
        assert np.array_equal(p.header_offsets + p.header_lengths + p.levels, p.body_offsets)
        data = bytes(s.read(0, s.tail.file_size))
        mods = p.modules()
        for m, body, hdr in zip(mods[0::2], mods[1::2], p.headers):
            page = m.page or 0
            plain = R.gcm_decrypt_module(G.K16, data[m.offset:m.offset + m.length],
                                         R.ref_module_aad(aad, int(m.kind), p.rg, p.col, page))
            ref_hdr, _ = thrift.decode("PageHeader", plain, 0)
            assert ref_hdr == hdr
            assert hdr["compressed_page_size"] == body.levels + body.length
            assert (m.kind == MT.DICTIONARY_PAGE_HEADER) == (hdr["type"] == PageType.DICTIONARY_PAGE)
            mod = data[body.offset:body.offset + body.length]
            if ctr:
                R.ctr_decrypt_module(G.K16, mod)
            else:
                R.gcm_decrypt_module(G.K16, mod, R.ref_module_aad(aad, int(body.kind), p.rg, p.col, page))
            seen += 1
    assert seen > 20


def test_prefix_walks_stop_at_zeroed_bytes():
    """Zeroed bytes read as a run of 4-byte modules: both prefix walks give up at the first
    one (the one reading the file on demand stepped through them 4 bytes at a time, a
    Python iteration and a list entry each: 19 s and 900 MB for 128 MB zeroed)."""
    from pqseal.format import plan

    data = bytearray(1 << 20)
    data[0:4] = (60).to_bytes(4, "little")          # one plausible 64-byte module, then zeros
    reads = []

    def read(off, n):
        reads.append((off, n))
        return memoryview(data)[off:off + n]
    with pytest.raises(plan._NotFast):
        plan._walk_prefixes_sparse(read, 0, len(data), 16)
    assert len(reads) <= 2, len(reads)
    with pytest.raises(plan._NotFast):
        plan._walk_prefixes(np.frombuffer(bytes(data), np.uint8), 0, len(data), 16)
