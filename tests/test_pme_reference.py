"""The reference reader (tests/pme_reference.py) checked against a third party, so that the
oracle of the structural tests is not trusted blindly: on pyarrow's encrypted files it
finds exactly the pages of pyarrow's plaintext file of the same data, and it rejects a
module whose AAD names another page."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pyarrow.parquet.encryption as pe
import pytest
from cryptography.exceptions import InvalidTag

import parquet_gen as G
from pme_reference import (DATA_PAGE, RefFile, RefKeys, gcm_decrypt_module, gcm_encrypt_module,
                           ref_module_aad)

PREFIX = b"tenant-9"


@pytest.fixture(scope="module")
def table():
    return G.make_table(4_000)


def _pages(f: RefFile) -> dict:
    return {(c.rg, c.col): [({k: v for k, v in p.header.items() if k != "crc"}, p.body) for p in f.pages(c)]
            for c in f.columns()}


@pytest.mark.parametrize("algorithm", ["AES_GCM_V1", "AES_GCM_CTR_V1"])
@pytest.mark.parametrize("plaintext_footer", [False, True], ids=["encfooter", "plainfooter"])
@pytest.mark.parametrize("store", [None, True, False], ids=["noprefix", "stored", "supplied"])
def test_reads_pyarrow_files_as_pyarrow_wrote_them(tmp_path, table, algorithm, plaintext_footer, store):
    kw = dict(row_group_size=1_500, data_page_size=2048, write_page_index=True)
    plain, enc = tmp_path / "plain.parquet", tmp_path / "enc.parquet"
    G.write_pyarrow(plain, table, **kw)
    prefix = dict(aad_prefix=PREFIX, store_aad_prefix=store) if store is not None else {}
    G.write_pyarrow(enc, table, encryption_properties=pe.create_encryption_properties(
        G.K16, encryption_algorithm=algorithm, plaintext_footer=plaintext_footer, **prefix), **kw)
    keys = RefKeys(G.K16, aad_prefix=PREFIX if store is False else None)
    f = RefFile(enc, keys)
    assert f.encrypted and f.algorithm == algorithm and f.magic == (b"PAR1" if plaintext_footer else b"PARE")
    assert f.aad_prefix == (PREFIX if store else None) and f.supply_aad_prefix is (store is False)
    assert f.paths == G.leaf_paths(plain)
    assert {c.encryption for c in f.columns()} == {"footer key"}
    assert _pages(f) == _pages(RefFile(plain))
    assert max(len(v) for v in _pages(f).values()) > 2
    assert {k: v["offset_index"] is not None for k, v in G.indexes(enc, keys).items()} == \
        {k: v["offset_index"] is not None for k, v in G.indexes(plain).items()}


def test_rejects_a_module_with_another_pages_aad(tmp_path):
    t = pa.table({"a": pa.array(range(20_000), pa.int64())})
    path = tmp_path / "enc.parquet"
    pq.write_table(t, path, data_page_size=1024, use_dictionary=False,
                   encryption_properties=pe.create_encryption_properties(G.K16))
    f = RefFile(path, RefKeys(G.K16))
    page = f.pages(f.column(0, 0))[3]
    m = page.page_module
    module = f.data[m.offset:m.offset + m.length]
    body = gcm_decrypt_module(G.K16, module, ref_module_aad(f.file_aad, DATA_PAGE, 0, 0, 3))

    def reencrypted(ordinal: int):
        out = tmp_path / f"page{ordinal}.parquet"
        new = gcm_encrypt_module(G.K16, body, ref_module_aad(f.file_aad, DATA_PAGE, 0, 0, ordinal))
        assert len(new) == len(module)
        return G.splice(path, out, {m.offset: new})

    good = RefFile(reencrypted(3), RefKeys(G.K16))       # a fresh nonce, the right AAD: accepted
    assert [p.body for p in good.pages(good.column(0, 0))] == [p.body for p in f.pages(f.column(0, 0))]
    bad = RefFile(reencrypted(4), RefKeys(G.K16))        # the AAD of the next page: rejected
    with pytest.raises(InvalidTag):
        bad.pages(bad.column(0, 0))
    with pytest.raises(InvalidTag):
        RefFile(path, RefKeys(G.K32))                    # wrong footer key
