"""Tampering with PME files: every module type, moved and swapped modules, modules from
another file sealed with the same key, truncation. Each must fail with InvalidTag naming
the module (and its column and row group) or with MalformedFile, in ``verify`` and in
``decrypt_file`` (which then leaves nothing behind), never with another exception.

AES_GCM_CTR_V1 pages have no tag: a flipped bit in a CTR page is caught by the page CRC
when the source had one, and is otherwise NOT detected (the spec's design) - pinned by an
explicit test so the behaviour is documented.
"""

from __future__ import annotations

import os
import zlib

import pytest

from pqseal._io import is_temp_name

import pqseal
from pqseal.crypto import ModuleType
from pqseal.errors import InvalidTag, MalformedFile, MalformedModule, PqsealError
from pqseal.format import FOOTER_KEY, DecryptionProperties, EncryptionProperties, VerificationFailed
from pqseal.format.layout import FOOTER_TRAILER

import parquet_gen as G
from pme_reference import RefFile

MT = ModuleType
COLUMNS = {"id": 0, "cat": 1}      # id: its own column key; cat: the footer key
ENC_KW = dict(column_keys={"id": G.KC1, "cat": FOOTER_KEY, "s.b": (G.KC2, b"key-2")})
DEC = DecryptionProperties(G.K16, column_keys={"id": G.KC1, "s.b": G.KC2})


@pytest.fixture(scope="module")
def srcdir(tmp_path_factory):
    return tmp_path_factory.mktemp("tamper_src")


@pytest.fixture(scope="module")
def table():
    return G.make_table(8_000)


@pytest.fixture(scope="module")
def plain(srcdir, table):
    """Two row groups, dictionaries, several pages, page index, plaintext bloom filters, no CRCs."""
    return G.write_pyarrow(srcdir / "plain.parquet", table, row_group_size=4_000, data_page_size=1024,
                           write_page_index=True, bloom_filter_options={"id": {"ndv": 8_000}, "cat": {"ndv": 64}})


@pytest.fixture(scope="module")
def plain_crc(srcdir, table):
    return G.write_pyarrow(srcdir / "plain_crc.parquet", table, row_group_size=4_000, data_page_size=1024,
                           write_page_checksum=True)


_sealed = {}


@pytest.fixture
def sealed(plain, srcdir):
    def make(algorithm="AES_GCM_V1", plaintext_footer=False, src=None):
        src = src or plain
        key = (os.fspath(src), algorithm, plaintext_footer)
        if key not in _sealed:
            out = srcdir / f"sealed-{len(_sealed)}.parquet"
            pqseal.encrypt_file(src, out, EncryptionProperties(G.K16, algorithm=algorithm,
                                                               plaintext_footer=plaintext_footer, **ENC_KW))
            assert pqseal.verify(out, DEC)["ok"]
            _sealed[key] = out
        return _sealed[key]
    return make


def expect_failure(path, tmp_path, exc=InvalidTag, match=None, dec=DEC):
    """verify and decrypt_file both fail with ``exc``; decrypt leaves no output behind.
    Returns (verify's exception, decrypt's exception). Module failures make verify raise
    VerificationFailed (an InvalidTag) listing every failing module in ``report``."""
    errors = []
    for op in ("verify", "decrypt"):
        out = tmp_path / f"out-{op}.parquet"
        with G.raises(exc, match=match) as ei:
            if op == "verify":
                pqseal.verify(path, dec)
            else:
                pqseal.decrypt_file(path, out, dec)
        assert not out.exists()
        assert not [n for n in os.listdir(tmp_path) if is_temp_name(n)]
        errors.append(ei.value)
    return errors


def check_report(exc, kind, rg, column, page=None, *, only=True):
    """verify's VerificationFailed names the failing module: type, row group, column path, page."""
    assert isinstance(exc, VerificationFailed), repr(exc)
    failures = exc.report["failures"]
    assert exc.report["ok"] is False and failures
    hits = [f for f in failures if f.get("row_group") == rg and f.get("column") == column
            and f.get("module") == kind.name
            and (page is None or f.get("page") == page)]
    assert hits, failures
    if only:
        assert len(failures) == 1, failures
    assert str(exc).startswith(os.path.basename(exc.report["file"]) + ":")
    return hits[0]


def pick(mods, kind, col=None, rg=1):
    cands = [m for m in mods if m.kind == kind and (col is None or m.col == col) and (rg is None or m.rg == rg)]
    assert cands, (kind, col, rg)
    return cands[len(cands) // 2]


# --------------------------------------------------------------------------- one bit, every module

COLUMN_MODULES = [MT.DATA_PAGE_HEADER, MT.DATA_PAGE, MT.DICTIONARY_PAGE_HEADER, MT.DICTIONARY_PAGE, MT.COLUMN_INDEX,
                  MT.OFFSET_INDEX, MT.BLOOM_FILTER_HEADER, MT.BLOOM_FILTER_BITSET]


@pytest.mark.parametrize("plaintext_footer", [False, True], ids=["encfooter", "plainfooter"])
@pytest.mark.parametrize("column", list(COLUMNS))
@pytest.mark.parametrize("kind", COLUMN_MODULES, ids=lambda k: k.name)
def test_bit_flip_in_column_module(sealed, tmp_path, kind, column, plaintext_footer):
    path = sealed(plaintext_footer=plaintext_footer)
    m = pick(G.module_map(path, DEC), kind, COLUMNS[column])
    bad = G.flip_bit(path, tmp_path / "bad.parquet", m.ciphertext_offset, 3)
    v, e = expect_failure(bad, tmp_path)
    check_report(v, kind, 1, column, m.page)
    msg = str(e)
    assert f"column {column}" in msg and "row group 1" in msg, msg
    assert e.row_group == 1 and e.column == COLUMNS[column]
    if e.module_type is not None:
        assert e.module_type == kind
    if kind in (MT.DATA_PAGE_HEADER, MT.DATA_PAGE):
        assert e.page == m.page and f"page {m.page}" in msg
    assert kind.name in msg or "index" in msg or "bloom" in msg, msg


@pytest.mark.parametrize("kind", [MT.DATA_PAGE_HEADER, MT.DICTIONARY_PAGE_HEADER, MT.COLUMN_INDEX, MT.OFFSET_INDEX,
                                  MT.BLOOM_FILTER_HEADER, MT.BLOOM_FILTER_BITSET], ids=lambda k: k.name)
def test_ctr_files_authenticate_everything_but_pages(sealed, tmp_path, kind):
    """Under AES_GCM_CTR_V1 headers, indexes and bloom filters are still GCM."""
    path = sealed(algorithm="AES_GCM_CTR_V1")
    m = pick(G.module_map(path, DEC), kind, 0)
    bad = G.flip_bit(path, tmp_path / "bad.parquet", m.ciphertext_offset)
    v, e = expect_failure(bad, tmp_path)
    check_report(v, kind, 1, "id", m.page)
    assert "column id" in str(e) and e.row_group == 1


@pytest.mark.parametrize("where", ["length_prefix", "nonce", "tag"])
def test_framing_bytes(sealed, tmp_path, where):
    path = sealed()
    m = pick(G.module_map(path, DEC), MT.DATA_PAGE_HEADER, 0)
    off = {"length_prefix": m.offset, "nonce": m.offset + 6, "tag": m.offset + m.length - 1}[where]
    bad = G.flip_bit(path, tmp_path / "bad.parquet", off, 7 if where == "length_prefix" else 0)
    expect_failure(bad, tmp_path, exc=(InvalidTag, MalformedFile, MalformedModule))


def test_length_prefix_beyond_chunk(sealed, tmp_path):
    path = sealed()
    m = pick(G.module_map(path, DEC), MT.DATA_PAGE, 0)
    bad = G.flip_bit(path, tmp_path / "bad.parquet", m.offset + 3, 6)   # +2^30
    expect_failure(bad, tmp_path, exc=(MalformedFile, MalformedModule, InvalidTag))


def test_encrypted_footer(sealed, tmp_path):
    path = sealed()
    m = pick(G.module_map(path, DEC), MT.FOOTER, rg=None)
    bad = G.flip_bit(path, tmp_path / "bad.parquet", m.ciphertext_offset)
    for e in expect_failure(bad, tmp_path, match="footer"):
        assert e.module_type == MT.FOOTER
    # inspect without keys still works (the footer stays closed), with keys it fails
    assert pqseal.inspect(bad)["footer_readable"] is False
    with G.raises(InvalidTag):
        pqseal.inspect(bad, DEC)


def test_file_crypto_metadata_aad_file_unique(sealed, tmp_path):
    """aad_file_unique is plaintext but bound into every AAD: altering it fails the footer."""
    path = sealed()
    f = RefFile(path, DEC)
    at = f.footer_offset + f.data[f.footer_offset:].index(f.aad_file_unique)
    bad = G.flip_bit(path, tmp_path / "bad.parquet", at + 2)
    expect_failure(bad, tmp_path, match="footer")


def test_stored_aad_prefix_altered(plain, tmp_path):
    sealed = tmp_path / "s.parquet"
    pqseal.encrypt_file(plain, sealed, EncryptionProperties(G.K16, aad_prefix=b"PREFIX-ABCDEF"))
    data = sealed.read_bytes()
    at = data.rindex(b"PREFIX-ABCDEF")
    bad = G.flip_bit(sealed, tmp_path / "bad.parquet", at + 3)
    expect_failure(bad, tmp_path, match="footer", dec=DecryptionProperties(G.K16))


@pytest.mark.parametrize("where", ["metadata", "signature_nonce", "signature_tag"])
def test_plaintext_footer_signature(sealed, tmp_path, where):
    path = sealed(plaintext_footer=True)
    f = RefFile(path, DEC)
    end = len(f.data) - FOOTER_TRAILER
    if where == "metadata":
        at = f.footer_offset + f.data[f.footer_offset:end].index(b"parquet-cpp-arrow") + 3   # inside created_by
    elif where == "signature_nonce":
        at = end - 28 + 5
    else:
        at = end - 1
    bad = G.flip_bit(path, tmp_path / "bad.parquet", at, 1)
    for e in expect_failure(bad, tmp_path, match="footer"):
        assert e.module_type == MT.FOOTER
    assert pqseal.inspect(bad)["encrypted"] is True   # readable without keys (unverified)


@pytest.mark.parametrize("plaintext_footer", [False, True], ids=["encfooter", "plainfooter"])
def test_encrypted_column_metadata(sealed, tmp_path, plaintext_footer):
    """Flip a bit inside a column's encrypted_column_metadata and re-seal the footer with
    the right footer key: only the column-metadata module can catch it."""
    path = sealed(plaintext_footer=plaintext_footer)

    def mutate(fmd):
        cc = fmd["row_groups"][1]["columns"][0]            # "id": column key
        b = bytearray(cc["encrypted_column_metadata"])
        b[len(b) // 2] ^= 0x10
        cc["encrypted_column_metadata"] = bytes(b)

    bad = G.rewrite_footer(path, tmp_path / "bad.parquet", G.K16, mutate)
    v, e = expect_failure(bad, tmp_path, match="metadata of column id")
    check_report(v, MT.COLUMN_META_DATA, 1, "id")
    assert e.module_type == MT.COLUMN_META_DATA and (e.row_group, e.column) == (1, 0)


def test_rewrite_footer_helper_is_faithful(sealed, tmp_path):
    """Guard for the tests above: an unmodified rewritten footer still verifies."""
    for pf in (False, True):
        out = G.rewrite_footer(sealed(plaintext_footer=pf), tmp_path / f"same{pf}.parquet", G.K16, lambda fmd: None)
        assert pqseal.verify(out, DEC)["ok"]


def test_column_metadata_moved_between_row_groups(sealed, tmp_path):
    path = sealed(plaintext_footer=True)

    def mutate(fmd):
        a, b = fmd["row_groups"][0]["columns"][0], fmd["row_groups"][1]["columns"][0]
        a["encrypted_column_metadata"], b["encrypted_column_metadata"] = \
            b["encrypted_column_metadata"], a["encrypted_column_metadata"]

    bad = G.rewrite_footer(path, tmp_path / "bad.parquet", G.K16, mutate)
    expect_failure(bad, tmp_path, match="metadata of column id")


# --------------------------------------------------------------------------- moved modules

@pytest.fixture(scope="module")
def uniform_pages(srcdir):
    """One int64 column, no dictionary/compression/statistics: every page (and every
    row group's chunk) has the same size, so pages and chunks can be swapped in place."""
    import pyarrow as pa

    t = pa.table({"v": pa.array(range(4_000), pa.int64())})
    return G.write_pyarrow(srcdir / "uniform.parquet", t, row_group_size=2_000, max_rows_per_page=500,
                           use_dictionary=False, compression="none", write_statistics=False)


def _seal_uniform(src, out, algorithm="AES_GCM_V1"):
    pqseal.encrypt_file(src, out, EncryptionProperties(G.K16, algorithm=algorithm))
    return out, DecryptionProperties(G.K16)


def _swap(path, dst, a, b):
    data = open(path, "rb").read()
    assert a[1] == b[1]
    return G.splice(path, dst, {a[0]: data[b[0]:b[0] + b[1]], b[0]: data[a[0]:a[0] + a[1]]})


@pytest.mark.parametrize("algorithm", ["AES_GCM_V1", "AES_GCM_CTR_V1"])
def test_swapped_pages_within_a_chunk(uniform_pages, tmp_path, algorithm):
    path, dec = _seal_uniform(uniform_pages, tmp_path / "s.parquet", algorithm)
    mods = G.module_map(path, dec)
    hdrs = [m for m in mods if m.kind == MT.DATA_PAGE_HEADER and m.rg == 0]
    body = {m.offset: m for m in mods if m.kind == MT.DATA_PAGE}
    h1, h2 = hdrs[1], hdrs[2]
    p1, p2 = body[h1.offset + h1.length], body[h2.offset + h2.length]
    pair1, pair2 = (h1.offset, h1.length + p1.length), (h2.offset, h2.length + p2.length)
    bad = _swap(path, tmp_path / "bad.parquet", pair1, pair2)
    v, e = expect_failure(bad, tmp_path, dec=dec)
    check_report(v, MT.DATA_PAGE_HEADER, 0, "v", 1, only=False)
    check_report(v, MT.DATA_PAGE_HEADER, 0, "v", 2, only=False)
    assert e.module_type == MT.DATA_PAGE_HEADER and e.page == 1 and e.row_group == 0


def test_swapped_page_bodies_gcm(uniform_pages, tmp_path):
    path, dec = _seal_uniform(uniform_pages, tmp_path / "s.parquet")
    pages = [m for m in G.module_map(path, dec) if m.kind == MT.DATA_PAGE and m.rg == 0]
    bad = _swap(path, tmp_path / "bad.parquet", (pages[0].offset, pages[0].length), (pages[3].offset, pages[3].length))
    v, e = expect_failure(bad, tmp_path, dec=dec)
    check_report(v, MT.DATA_PAGE, 0, "v", 0, only=False)
    check_report(v, MT.DATA_PAGE, 0, "v", 3, only=False)
    assert len(v.report["failures"]) == 2
    assert e.module_type == MT.DATA_PAGE and e.page == 0


def test_swapped_page_bodies_ctr_without_crc_go_undetected(uniform_pages, tmp_path):
    """CTR pages carry no AAD: swapping two page bodies of a chunk is not detected without
    page CRCs (spec design; AES_GCM_V1 or page checksums prevent this)."""
    import pyarrow.parquet as pq

    path, dec = _seal_uniform(uniform_pages, tmp_path / "s.parquet", "AES_GCM_CTR_V1")
    pages = [m for m in G.module_map(path, dec) if m.kind == MT.DATA_PAGE and m.rg == 0]
    bad = _swap(path, tmp_path / "bad.parquet", (pages[0].offset, pages[0].length), (pages[3].offset, pages[3].length))
    out = tmp_path / "out.parquet"
    pqseal.decrypt_file(bad, out, dec)
    v = pq.read_table(out)["v"].to_pylist()
    assert v[:500] == list(range(1500, 2000)) and v[1500:2000] == list(range(500))


def test_swapped_row_group_chunks(uniform_pages, tmp_path):
    path, dec = _seal_uniform(uniform_pages, tmp_path / "s.parquet")
    f = RefFile(path, dec)
    spans = [(f.column(rg, 0).meta["data_page_offset"], f.column(rg, 0).meta["total_compressed_size"])
             for rg in range(2)]
    bad = _swap(path, tmp_path / "bad.parquet", spans[0], spans[1])
    v, e = expect_failure(bad, tmp_path, dec=dec)
    for rg in (0, 1):
        for page in range(4):
            check_report(v, MT.DATA_PAGE_HEADER, rg, "v", page, only=False)
            check_report(v, MT.DATA_PAGE, rg, "v", page, only=False)
    assert e.row_group == 0 and e.module_type == MT.DATA_PAGE_HEADER


@pytest.mark.parametrize("plaintext_footer", [False, True], ids=["encfooter", "plainfooter"])
def test_swapped_row_group_footer_entries(sealed, tmp_path, plaintext_footer):
    """Swap two RowGroup entries (ordinals included) and re-seal the footer: the chunks'
    modules carry the row-group ordinal they were written under."""
    path = sealed(plaintext_footer=plaintext_footer)

    def mutate(fmd):
        fmd["row_groups"] = fmd["row_groups"][::-1]

    bad = G.rewrite_footer(path, tmp_path / "bad.parquet", G.K16, mutate)
    expect_failure(bad, tmp_path)


@pytest.mark.parametrize("fix_path", [False, True], ids=["as_is", "path_rewritten"])
def test_swapped_column_chunks_between_columns(sealed, tmp_path, fix_path):
    """Footer edit swapping the chunks of two column-key columns ("id", "s.b"): caught by
    the path in the crypto metadata, or, with that rewritten too, by the column key/AAD."""
    path = sealed()
    assert G.leaf_paths(_plain_of(path))[9] == "s.b"

    def mutate(fmd):
        cols = fmd["row_groups"][0]["columns"]
        cols[0], cols[9] = cols[9], cols[0]
        if fix_path:
            for i, p in ((0, [b"id"]), (9, [b"s", b"b"])):
                cols[i] = dict(cols[i])
                cm = dict(cols[i]["crypto_metadata"]["ENCRYPTION_WITH_COLUMN_KEY"], path_in_schema=p)
                cols[i]["crypto_metadata"] = {"ENCRYPTION_WITH_COLUMN_KEY": cm}

    bad = G.rewrite_footer(path, tmp_path / "bad.parquet", G.K16, mutate)
    v, e = expect_failure(bad, tmp_path, exc=(InvalidTag, MalformedFile), match="id|s\\.b")
    assert isinstance(e, InvalidTag if fix_path else MalformedFile)
    check_report(v, MT.COLUMN_META_DATA, 0, "id", only=False)


def _plain_of(path):
    for (src, _, _), out in _sealed.items():
        if out == path:
            return src
    raise AssertionError(path)


@pytest.mark.parametrize("kind", [MT.DATA_PAGE, MT.DATA_PAGE_HEADER, MT.COLUMN_INDEX, MT.OFFSET_INDEX],
                         ids=lambda k: k.name)
def test_module_from_another_file_with_the_same_key(uniform_pages, tmp_path, kind):
    """Two files sealed with the same key differ in aad_file_unique: a module copied
    across is rejected although key, ordinals and sizes all match."""
    a, dec = _seal_uniform(uniform_pages, tmp_path / "a.parquet")
    b, _ = _seal_uniform(uniform_pages, tmp_path / "b.parquet")
    # page index needed for the index kinds
    if kind in (MT.COLUMN_INDEX, MT.OFFSET_INDEX):
        import pyarrow.parquet as pq

        src = tmp_path / "pi.parquet"
        G.write_pyarrow(src, pq.read_table(uniform_pages), row_group_size=2_000, max_rows_per_page=500,
                        use_dictionary=False, compression="none", write_page_index=True)
        a, _ = _seal_uniform(src, tmp_path / "a2.parquet")
        b, _ = _seal_uniform(src, tmp_path / "b2.parquet")
    ma, mb = pick(G.module_map(a, dec), kind, 0, 1), pick(G.module_map(b, dec), kind, 0, 1)
    assert (ma.offset, ma.length) == (mb.offset, mb.length)
    data_a = open(a, "rb").read()
    bad = G.splice(b, tmp_path / "bad.parquet", {mb.offset: data_a[ma.offset:ma.offset + ma.length]})
    v, e = expect_failure(bad, tmp_path, dec=dec)
    check_report(v, kind, 1, "v", ma.page)
    assert e.row_group == 1


def test_footer_from_another_file_with_the_same_key(uniform_pages, tmp_path):
    a, dec = _seal_uniform(uniform_pages, tmp_path / "a.parquet")
    b, _ = _seal_uniform(uniform_pages, tmp_path / "b.parquet")
    ma, mb = pick(G.module_map(a, dec), MT.FOOTER, rg=None), pick(G.module_map(b, dec), MT.FOOTER, rg=None)
    data_a = open(a, "rb").read()
    bad = G.splice(b, tmp_path / "bad.parquet", {mb.offset: data_a[ma.offset:ma.offset + ma.length]})
    expect_failure(bad, tmp_path, dec=dec, match="footer")


# --------------------------------------------------------------------------- CTR pages and CRCs

@pytest.mark.parametrize("kind", [MT.DATA_PAGE, MT.DICTIONARY_PAGE], ids=lambda k: k.name)
def test_ctr_page_flip_caught_by_crc(plain_crc, sealed, tmp_path, kind):
    path = sealed(algorithm="AES_GCM_CTR_V1", src=plain_crc)
    m = pick(G.module_map(path, DEC), kind, 0)
    bad = G.flip_bit(path, tmp_path / "bad.parquet", m.ciphertext_offset)
    v, e = expect_failure(bad, tmp_path, match="CRC")
    check_report(v, kind, 1, "id", m.page)
    assert e.row_group == 1 and e.column == 0 and "column id" in str(e)


@pytest.mark.parametrize("kind", [MT.DATA_PAGE, MT.DICTIONARY_PAGE], ids=lambda k: k.name)
def test_ctr_page_flip_without_crc_is_not_detected(plain, sealed, tmp_path, kind):
    """The spec's design: CTR page bodies have no tag. Without page CRCs a flipped
    ciphertext bit decrypts to a flipped plaintext bit and nothing notices."""
    path = sealed(algorithm="AES_GCM_CTR_V1")
    m = pick(G.module_map(path, DEC), kind, 0)
    bad = G.flip_bit(path, tmp_path / "bad.parquet", m.ciphertext_offset, 5)
    assert pqseal.verify(bad, DEC)["ok"]
    out = tmp_path / "out.parquet"
    pqseal.decrypt_file(bad, out, DEC)
    src_pages, out_pages = G.pages(plain), G.pages(out)
    diffs = [(k, i) for k in src_pages for i, (a, b) in enumerate(zip(src_pages[k], out_pages[k])) if a != b]
    assert len(diffs) == 1
    (rg, col), i = diffs[0]
    assert (rg, col) == (1, 0)
    a, b = src_pages[rg, col][i][1], out_pages[rg, col][i][1]
    x = int.from_bytes(a, "little") ^ int.from_bytes(b, "little")
    assert x == 1 << (5 + 8 * (m.ciphertext_offset - m.offset - 16))    # exactly that one bit


def test_gcm_page_flip_with_crc_is_caught(plain_crc, sealed, tmp_path):
    path = sealed(src=plain_crc)
    m = pick(G.module_map(path, DEC), MT.DATA_PAGE, 1)
    bad = G.flip_bit(path, tmp_path / "bad.parquet", m.ciphertext_offset)
    v, e = expect_failure(bad, tmp_path)
    check_report(v, MT.DATA_PAGE, 1, "cat", m.page)
    assert "column cat" in str(e)


def test_crc_is_over_the_encrypted_bytes(plain_crc, sealed):
    path = sealed(algorithm="AES_GCM_CTR_V1", src=plain_crc)
    f = RefFile(path, DEC)
    checked = 0
    for rg in range(f.num_row_groups):
        for p in f.pages(f.column(rg, 0)):
            body = f.data[p.header_module.offset + p.header_module.length:p.page_module.offset + p.page_module.length]
            crc = zlib.crc32(body)
            assert p.header["crc"] == (crc - (1 << 32) if crc >= 1 << 31 else crc)
            checked += 1
    assert checked > 1


# --------------------------------------------------------------------------- truncation

@pytest.mark.parametrize("plaintext_footer", [False, True], ids=["encfooter", "plainfooter"])
def test_truncation_everywhere(sealed, tmp_path, plaintext_footer):
    path = sealed(plaintext_footer=plaintext_footer)
    data = open(path, "rb").read()
    n = len(data)
    cuts = sorted({0, 1, 3, 4, 7, 8, 11, 12, 13, 100, n // 3, n // 2, n - 1000, n - 100, n - 40, n - 29, n - 28,
                   n - 12, n - 9, n - 8, n - 5, n - 4, n - 1} | set(range(16, n, max(1, n // 25))))
    for cut in cuts:
        f = tmp_path / f"cut{cut}.parquet"
        f.write_bytes(data[:cut])
        for op in (lambda: pqseal.verify(f, DEC), lambda: pqseal.decrypt_file(f, tmp_path / "o.parquet", DEC),
                   lambda: pqseal.inspect(f)):
            with G.raises(PqsealError):
                op()
        assert not (tmp_path / "o.parquet").exists()


def test_middle_cut_with_tail_kept(sealed, tmp_path):
    """Remove bytes from the middle but keep the footer: offsets now point past or into
    wrong modules."""
    path = sealed()
    data = open(path, "rb").read()
    for start, length in ((4, 16), (len(data) // 3, 1), (len(data) // 2, 4096)):
        f = tmp_path / "cut.parquet"
        f.write_bytes(data[:start] + data[start + length:])
        expect_failure(f, tmp_path, exc=(InvalidTag, MalformedFile, MalformedModule))


def test_random_corruption_never_crashes(sealed, tmp_path):
    """Seeded random byte edits: anything but a PqsealError (or success for CTR-free
    regions nobody reads) is a bug."""
    import random

    rng = random.Random(1234)
    outcomes = {}
    for alg, pf in (("AES_GCM_V1", False), ("AES_GCM_CTR_V1", True)):
        path = sealed(algorithm=alg, plaintext_footer=pf)
        data = bytearray(open(path, "rb").read())
        for _ in range(60):
            d = bytearray(data)
            for _ in range(rng.choice((1, 1, 2, 8))):
                d[rng.randrange(len(d))] = rng.randrange(256)
            f = tmp_path / "fuzz.parquet"
            f.write_bytes(d)
            try:
                pqseal.verify(f, DEC)
                r = "ok"
            except PqsealError as exc:
                r = type(exc).__name__
            outcomes[r] = outcomes.get(r, 0) + 1
    assert outcomes.get("InvalidTag", 0) > 0


def test_caught_tamper_errors_survive_the_garbage_collector(sealed, tmp_path):
    """Regression: InvalidTag tracebacks kept in a reference cycle (as pytest.raises, or any
    caller storing the exception, does) used to crash CPython's GC (SIGSEGV): the raising
    frame held cffi exports of memoryviews. Run in a child process without any scrubbing."""
    import subprocess
    import sys
    import textwrap

    path = sealed()
    m = pick(G.module_map(path, DEC), MT.DATA_PAGE_HEADER, 0)
    bad = G.flip_bit(path, tmp_path / "bad.parquet", m.ciphertext_offset)
    script = textwrap.dedent(f"""
        import gc
        import pqseal
        from pqseal.format import DecryptionProperties
        dec = DecryptionProperties({G.K16!r}, column_keys={{"id": {G.KC1!r}, "s.b": {G.KC2!r}}})
        kept = []
        for i in range(30):
            for op in (lambda: pqseal.verify({os.fspath(bad)!r}, dec),
                       lambda: pqseal.decrypt_file({os.fspath(bad)!r}, {os.fspath(tmp_path / 'o.parquet')!r}, dec)):
                try:
                    op()
                except pqseal.PqsealError as exc:
                    exc.me = exc            # a cycle through the exception and its traceback
                    kept.append(exc)
            if i % 10 == 9:
                kept.clear()
                gc.collect()
        # the minimal form: a single-module decrypt of a memoryview slice
        from pqseal.crypto import GcmModuleCipher, ModuleType
        c = GcmModuleCipher(b"k" * 16, b"aad12345")
        mod = bytearray(c.encrypt(b"x" * 100, ModuleType.DATA_PAGE_HEADER))
        mod[30] ^= 1
        data = bytes(mod)
        for i in range(100):
            try:
                c.decrypt(memoryview(data)[0:len(data)], ModuleType.DATA_PAGE_HEADER)
            except pqseal.InvalidTag as exc:
                exc.me = exc
            gc.collect()
        print("ok")
    """)
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and r.stdout.strip() == "ok", (r.returncode, r.stderr[-2000:])
