"""The fuzz harness itself: its independent PME map finds every module, a file whose
metadata modules are all resealed by it (fresh nonces, the real keys) still verifies
and decrypts in pqseal and reads in pyarrow, and an edited resealed module is caught
by pqseal (so "resealed" edits really get past the tags and reach the parser). The
seeds pass the target's own check, so a finding is never an artefact of the harness."""

from __future__ import annotations

import copy
import os
import warnings

import fuzz_pme
import fuzz_thrift
import oracle
import pme_model as M
import pme_seeds
import pqseal
import pyarrow.parquet as pq
import pytest


@pytest.fixture(scope="module")
def seeds(tmp_path_factory):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pme_seeds.build(str(tmp_path_factory.mktemp("fuzz_seeds")))


def _model(path) -> M.Model:
    with open(path, "rb") as f:
        return M.parse(f.read(), pme_seeds.FOOTER_KEY, pme_seeds.COLUMN_KEYS)


def _reseal_all(model: M.Model) -> bytes:
    out = bytearray(model.data[:model.footer_offset])
    for m in sorted(model.modules, key=lambda m: -m.offset):
        if m.struct and m.kind != M.FOOTER:
            out[m.offset:m.offset + m.length] = model.seal(m, model.open(m))
    fmd = copy.deepcopy(model.fmd)
    for (r, c), (_, meta) in model.column_meta.items():
        fmd["row_groups"][r]["columns"][c]["encrypted_column_metadata"] = M.seal_column_meta(model, r, c, meta)
    return M.build_footer(model, bytes(out), fmd)


def test_seeds_cover_the_features(seeds):
    kinds, variants, page_types, plain_columns = set(), set(), set(), 0
    for path in seeds:
        model = _model(path)
        kinds |= {m.kind for m in model.modules if m.key is not None}
        kinds |= {M.COLUMN_META} if model.column_meta else set()
        plain_columns += sum(1 for m in model.modules if m.key is None)
        variants.add((model.algorithm, model.encrypted_footer, bool(model.column_meta)))
        page_types |= {oracle.codec.decode("PageHeader", model.open(m))[0]["type"]
                       for m in model.modules if m.kind == M.DATA_HEADER}
        assert pqseal.verify(path, pme_seeds.decryption())["ok"]
    assert kinds == set(range(10))  # every PME module type, footer to bloom filter bitset
    assert {(a, f) for a, f, _ in variants} == {(a, f) for a in ("AES_GCM_V1", "AES_GCM_CTR_V1") for f in (True, False)}
    assert {c for _, _, c in variants} == {True, False}  # per-column keys and uniform
    assert page_types == {0, 3} and plain_columns  # V1 and V2 data pages; plaintext columns


def test_resealed_file_verifies_and_reads(seeds, tmp_path):
    for path in seeds:
        model = _model(path)
        resealed = tmp_path / os.path.basename(path)
        resealed.write_bytes(_reseal_all(model))
        assert resealed.read_bytes() != model.data  # new nonces everywhere
        assert pqseal.verify(resealed, pme_seeds.decryption())["ok"]
        a, b = tmp_path / "a.parquet", tmp_path / "b.parquet"
        pqseal.decrypt_file(path, a, pme_seeds.decryption(), fsync=False)
        pqseal.decrypt_file(resealed, b, pme_seeds.decryption(), fsync=False)
        assert pq.read_table(a).equals(pq.read_table(b))
        a.unlink()
        b.unlink()


def test_resealed_edit_reaches_the_parser(seeds, tmp_path):
    """A page header resealed with a wrong page size passes its tag and is refused by
    the page walk, not by a tag check."""
    model = _model(seeds[0])
    m = next(m for m in model.modules if m.kind == M.DATA_HEADER and m.key is not None)
    hdr = oracle.codec.decode("PageHeader", model.open(m))[0]
    hdr["compressed_page_size"] += 1
    data = bytearray(model.data)
    data[m.offset:m.offset + m.length] = model.seal(m, M.encode("PageHeader", hdr))
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(bytes(data))
    with pytest.raises(pqseal.errors.PqsealError) as ei:
        pqseal.decrypt_file(bad, tmp_path / "out.parquet", pme_seeds.decryption(), fsync=False)
    assert not isinstance(ei.value, pqseal.errors.InvalidTag), ei.value


def test_seeds_pass_the_target_check(seeds, tmp_path):
    for path in seeds:
        fuzz_pme.check(path, str(tmp_path))
    assert os.listdir(tmp_path / "out") == []


def test_thrift_check_on_real_structures(seeds):
    if oracle.native is None:
        pytest.skip("pqseal._thrift not built")
    model = _model(seeds[0])
    n = 0
    for m in model.modules:
        if m.struct and m.kind != M.FOOTER:
            body = model.open(m)
            for cut in (len(body), len(body) - 1, len(body) // 2):
                fuzz_thrift.check(bytes([oracle.STRUCTS.index(m.struct), 0]) + body[:cut])
                n += 1
    fuzz_thrift.check(bytes([oracle.STRUCTS.index("FileMetaData"), 4 | 1]) + b"\x00" +
                      M.encode("FileMetaData", model.fmd))
    assert n > 100
