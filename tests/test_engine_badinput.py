"""Bad input to the file engine: garbage, truncated and malformed files, wrong or missing
keys and AAD prefixes, the wrong kind of file, unknown columns, ordinal limits, bad
arguments. Always a pqseal error (or ValueError/TypeError/OSError for arguments and
paths) with a useful message, never a crash; the source is never modified and no output
(nor temporary file) is left behind - an existing destination survives a failed run.
"""

from __future__ import annotations

import os
import pickle
import random
import struct

import pyarrow as pa
import pyarrow.parquet as pq
import pyarrow.parquet.encryption as pe
import pytest

from pqseal._io import is_temp_name

import pqseal
from pqseal.crypto import ModuleType as MT
from pqseal.errors import InvalidKey, InvalidOrdinal, InvalidTag, KeyNotFound, MalformedFile, PqsealError
from pqseal.format import (FOOTER_KEY, AlreadyEncrypted, DecryptionProperties, EncryptionProperties, NotEncrypted,
                           thrift)

import parquet_gen as G
from interop import require

ENC = EncryptionProperties(G.K16, column_keys={"id": G.KC1, "cat": FOOTER_KEY, "s.b": (G.KC2, b"md")})
DEC = DecryptionProperties(G.K16, column_keys={"id": G.KC1, "s.b": G.KC2})


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("bad")
    t = G.make_table(6_000)
    plain = G.write_pyarrow(d / "plain.parquet", t, row_group_size=3_000, write_page_index=True,
                            write_page_checksum=True)
    sealed = d / "sealed.parquet"
    pqseal.encrypt_file(plain, sealed, ENC)
    sealed_pf = d / "sealed_pf.parquet"
    pqseal.encrypt_file(plain, sealed_pf, EncryptionProperties(
        G.K16, column_keys={"id": G.KC1, "cat": FOOTER_KEY, "s.b": (G.KC2, b"md")}, plaintext_footer=True))
    return {"dir": d, "table": t, "plain": plain, "sealed": os.fspath(sealed), "sealed_pf": os.fspath(sealed_pf)}


def all_ops(src, dst):
    """Every engine entry point on ``src`` (keys that would fit a good file)."""
    return {
        "encrypt": lambda: pqseal.encrypt_file(src, dst, ENC),
        "decrypt": lambda: pqseal.decrypt_file(src, dst, DEC),
        "rekey": lambda: pqseal.rekey_file(src, dst, DEC, ENC),
        "verify": lambda: pqseal.verify(src, DEC),
        "inspect": lambda: pqseal.inspect(src),
        "inspect_keys": lambda: pqseal.inspect(src, DEC),
    }


def check_all_fail(src, tmp_path, exc=PqsealError, *, match=None, skip=()):
    before = G.sha256(src)
    dst = tmp_path / "out.parquet"
    for name, op in all_ops(src, dst).items():
        if name in skip:
            continue
        with G.raises(exc, match=match):
            op()
        assert not dst.exists(), name
        assert not [n for n in os.listdir(tmp_path) if is_temp_name(n)], name
    assert G.sha256(src) == before


# --------------------------------------------------------------------------- garbage

def _tail_garbage(plain):
    data = open(plain, "rb").read()
    return {
        "empty": b"",
        "tiny": b"PAR1",
        "eleven": b"PAR1abcPAR1",
        "random": random.Random(5).randbytes(5000),
        "text": b"id,name\n1,alice\n" * 100,
        "no_leading_magic": b"XXXX" + data[4:],
        "mixed_magic": b"PARE" + data[4:],
        "footer_len_too_big": data[:-8] + struct.pack("<I", len(data)) + b"PAR1",
        "footer_len_zero": data[:-8] + struct.pack("<I", 0) + b"PAR1",
        "truncated_half": data[:len(data) // 2],
        "truncated_tail_byte": data[:-1],
    }


@pytest.mark.parametrize("case", ["empty", "tiny", "eleven", "random", "text", "no_leading_magic", "mixed_magic",
                                  "footer_len_too_big", "footer_len_zero", "truncated_half", "truncated_tail_byte"])
def test_garbage_outside_the_footer(files, tmp_path, case):
    f = tmp_path / f"{case}.parquet"
    f.write_bytes(_tail_garbage(files["plain"])[case])
    check_all_fail(f, tmp_path, MalformedFile, match=f"{case}.parquet")


def _footer_garbage(plain, sealed):
    data = open(plain, "rb").read()
    (flen,) = struct.unpack("<I", data[-8:-4])
    fstart = len(data) - 8 - flen
    sdata = open(sealed, "rb").read()
    (slen,) = struct.unpack("<I", sdata[-8:-4])
    sstart = len(sdata) - 8 - slen
    out = {
        "footer_zeroed": data[:fstart] + bytes(flen) + data[-8:],
        "footer_ff": data[:fstart] + b"\xff" * flen + data[-8:],
        "footer_shifted": data[:fstart] + data[fstart + 1:-8] + b"\x00" + data[-8:],
        "footer_short_len": data[:-8] + struct.pack("<I", flen - 10) + b"PAR1",
        "crypto_md_garbage": sdata[:sstart] + b"\x7f" * 40 + sdata[sstart + 40:],
        "crypto_md_empty_union": sdata[:sstart] + b"\x0c\x00\x00" + sdata[sstart + 3:],
        "encrypted_footer_cut": sdata[:sstart] + sdata[sstart:-8][:60] + struct.pack("<I", 60) + b"PARE",
    }
    return out


@pytest.mark.parametrize("case", ["footer_zeroed", "footer_ff", "footer_shifted", "footer_short_len",
                                  "crypto_md_garbage", "crypto_md_empty_union", "encrypted_footer_cut"])
def test_garbage_footers(files, tmp_path, case):
    data = _footer_garbage(files["plain"], files["sealed"])[case]
    f = tmp_path / f"{case}.parquet"
    f.write_bytes(data)
    check_all_fail(f, tmp_path, PqsealError)


def test_schema_and_row_group_mismatch(files, tmp_path):
    """Structurally valid Thrift, inconsistent Parquet: chunk offsets outside the data,
    columns missing from a row group, empty schema."""
    fmd, _ = thrift.decode("FileMetaData", open(files["plain"], "rb").read(), _foff(files["plain"]))
    data = open(files["plain"], "rb").read()
    cases = {}
    f1 = {**fmd, "row_groups": [dict(rg) for rg in fmd["row_groups"]]}
    cc = dict(f1["row_groups"][0]["columns"][0])
    cc["meta_data"] = dict(cc["meta_data"], data_page_offset=len(data) * 2, dictionary_page_offset=len(data) * 2)
    f1["row_groups"][0]["columns"] = [cc] + f1["row_groups"][0]["columns"][1:]
    cases["offset_outside"] = f1
    f2 = {**fmd, "row_groups": [dict(fmd["row_groups"][0], columns=fmd["row_groups"][0]["columns"][:-1])]}
    cases["missing_column"] = f2
    cases["empty_schema"] = {**fmd, "schema": []}
    f4 = {**fmd, "row_groups": [dict(rg) for rg in fmd["row_groups"]]}
    cc = dict(f4["row_groups"][0]["columns"][0])
    cc["meta_data"] = dict(cc["meta_data"], total_compressed_size=cc["meta_data"]["total_compressed_size"] - 7)
    f4["row_groups"][0]["columns"] = [cc] + f4["row_groups"][0]["columns"][1:]
    cases["chunk_size_short"] = f4
    f5 = {**fmd, "schema": [dict(fmd["schema"][0], num_children=99)] + fmd["schema"][1:]}
    cases["num_children_too_big"] = f5
    for name, new in cases.items():
        f = tmp_path / f"{name}.parquet"
        body = thrift.encode("FileMetaData", new)
        f.write_bytes(data[:_foff(files["plain"])] + body + struct.pack("<I", len(body)) + b"PAR1")
        for op in ("encrypt", "inspect_keys"):
            try:
                all_ops(f, tmp_path / "o.parquet")[op]()
            except PqsealError as exc:
                G.scrub(exc)
                assert f.name in str(exc), (name, exc)
            else:
                if not (op == "inspect_keys" and name in ("offset_outside", "chunk_size_short")):
                    raise AssertionError(f"{name}: {op} accepted a malformed file")
        assert not (tmp_path / "o.parquet").exists()


def test_column_crypto_metadata_in_a_plaintext_file(files, tmp_path):
    """Regression: a plaintext footer (no encryption algorithm) whose column chunk claims
    crypto metadata made ``inspect`` with keys raise AttributeError and ``encrypt`` a
    misleading "keys are needed"; both are now a MalformedFile naming the column."""
    fmd, _ = thrift.decode("FileMetaData", open(files["plain"], "rb").read(), _foff(files["plain"]))
    data = open(files["plain"], "rb").read()
    for cm in ({"ENCRYPTION_WITH_FOOTER_KEY": {}}, {"ENCRYPTION_WITH_COLUMN_KEY": {"path_in_schema": [b"id"]}}):
        rg = dict(fmd["row_groups"][0])
        rg["columns"] = [dict(rg["columns"][0], crypto_metadata=cm)] + rg["columns"][1:]
        body = thrift.encode("FileMetaData", {**fmd, "row_groups": [rg] + fmd["row_groups"][1:]})
        f = tmp_path / "claims_crypto.parquet"
        f.write_bytes(data[:_foff(files["plain"])] + body + struct.pack("<I", len(body)) + b"PAR1")
        for op in ("encrypt", "inspect_keys"):
            with G.raises(MalformedFile, match="claims_crypto.parquet: column id has crypto metadata"):
                all_ops(f, tmp_path / "o.parquet")[op]()
        assert not (tmp_path / "o.parquet").exists()


def _foff(path):
    data = open(path, "rb").read()
    (flen,) = struct.unpack("<I", data[-8:-4])
    return len(data) - 8 - flen


def test_random_footer_mutations_never_crash(files, tmp_path):
    """Random byte edits inside a plaintext footer: sealing either works (the edit was
    harmless) or fails with a pqseal error; any other exception is a bug."""
    data = open(files["plain"], "rb").read()
    fstart = _foff(files["plain"])
    rng = random.Random(99)
    other = {}
    for i in range(150):
        d = bytearray(data)
        for _ in range(rng.choice((1, 2, 4))):
            d[rng.randrange(fstart, len(d) - 8)] = rng.randrange(256)
        f = tmp_path / "m.parquet"
        f.write_bytes(d)
        try:
            pqseal.encrypt_file(f, tmp_path / "o.parquet", EncryptionProperties(G.K16))
        except PqsealError as exc:
            G.scrub(exc)
        except Exception as exc:   # noqa: BLE001 - collected and reported below
            if isinstance(exc, thrift.EncodeError) and "OffsetIndex" in str(exc):
                continue   # known bug, pinned by test_offset_index_with_a_field_of_the_wrong_type
            other.setdefault(f"{type(exc).__name__}: {exc}"[:160], i)
    assert not other, other


def test_offset_index_with_a_field_of_the_wrong_type(tmp_path):
    pq.write_table(pa.table({"a": list(range(100))}), tmp_path / "oi.parquet", write_page_index=True)
    data = (tmp_path / "oi.parquet").read_bytes()
    fstart = _foff(tmp_path / "oi.parquet")
    fmd, _ = thrift.decode("FileMetaData", data, fstart)
    cc = fmd["row_groups"][0]["columns"][0]
    bogus = b"\x15\x02\x00"          # OffsetIndex {1: i32 1}
    cc["offset_index_offset"], cc["offset_index_length"] = fstart, len(bogus)
    body = thrift.encode("FileMetaData", fmd)
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(data[:fstart] + bogus + body + struct.pack("<I", len(body)) + b"PAR1")
    with G.raises(MalformedFile, match="offset index"):
        pqseal.encrypt_file(bad, tmp_path / "o.parquet", EncryptionProperties(G.K16))


# --------------------------------------------------------------------------- keys

@pytest.mark.parametrize("which", ["sealed", "sealed_pf"])
def test_wrong_footer_key(files, tmp_path, which):
    src = files[which]
    before = G.sha256(src)
    bad = DecryptionProperties(G.K32, column_keys=DEC.column_keys)
    for op in (lambda: pqseal.decrypt_file(src, tmp_path / "o.parquet", bad), lambda: pqseal.verify(src, bad),
               lambda: pqseal.inspect(src, bad),
               lambda: pqseal.rekey_file(src, tmp_path / "o.parquet", bad, ENC)):
        with G.raises(InvalidTag, match="footer") as ei:
            op()
        assert "wrong footer key" in str(ei.value) or "footer key is wrong" in str(ei.value)
        assert G.K32.hex() not in str(ei.value) and G.K32.decode() not in str(ei.value)
    assert not (tmp_path / "o.parquet").exists()
    assert G.sha256(src) == before


@pytest.mark.parametrize("which", ["sealed", "sealed_pf"])
def test_wrong_column_key(files, tmp_path, which):
    src = files[which]
    bad = DecryptionProperties(G.K16, column_keys={"id": G.KC3, "s.b": G.KC2})
    with G.raises(InvalidTag, match="column id") as ei:
        pqseal.decrypt_file(src, tmp_path / "o.parquet", bad)
    assert ei.value.column == 0
    with G.raises(InvalidTag, match="id"):
        pqseal.verify(src, bad)
    assert not (tmp_path / "o.parquet").exists()


@pytest.mark.parametrize("which", ["sealed", "sealed_pf"])
def test_missing_column_key(files, tmp_path, which):
    src = files[which]
    with G.raises(KeyNotFound, match="s.b"):
        pqseal.decrypt_file(src, tmp_path / "o.parquet", DecryptionProperties(G.K16, column_keys={"id": G.KC1}))
    with G.raises(KeyNotFound, match="'id'"):
        pqseal.decrypt_file(src, tmp_path / "o.parquet", DecryptionProperties(G.K16))
    assert not (tmp_path / "o.parquet").exists()


def test_missing_footer_key(files, tmp_path):
    for which in ("sealed", "sealed_pf"):
        with G.raises(KeyNotFound, match="footer key"):
            pqseal.decrypt_file(files[which], tmp_path / "o.parquet", DecryptionProperties())
        with G.raises(KeyNotFound, match="footer key"):
            pqseal.verify(files[which], DecryptionProperties(column_keys=DEC.column_keys))
    assert not (tmp_path / "o.parquet").exists()


def test_key_retriever_failures(files, tmp_path):
    src = files["sealed"]

    def refuses(md, path):
        raise KeyNotFound(f"KMS has no key for {path}")

    with G.raises(KeyNotFound, match="KMS has no key"):
        pqseal.decrypt_file(src, tmp_path / "o.parquet", DecryptionProperties(key_retriever=refuses))
    with G.raises(InvalidKey):
        pqseal.decrypt_file(src, tmp_path / "o.parquet", DecryptionProperties(key_retriever=lambda md, p: b"short"))
    with G.raises(InvalidTag):
        pqseal.decrypt_file(src, tmp_path / "o.parquet", DecryptionProperties(key_retriever=lambda md, p: G.K24))
    seen = []

    def records(md, path):
        seen.append((md, path))
        return {None: G.K16, "id": G.KC1, "s.b": G.KC2}[path]

    pqseal.decrypt_file(src, tmp_path / "o.parquet", DecryptionProperties(key_retriever=records))
    assert (b"md", "s.b") in seen and (None, "id") in seen and (None, None) in seen
    assert {p for _, p in seen} == {None, "id", "s.b"}


def test_missing_and_wrong_aad_prefix(files, tmp_path):
    src = tmp_path / "aad.parquet"
    pqseal.encrypt_file(files["plain"], src, EncryptionProperties(G.K16, aad_prefix=b"ns/1", store_aad_prefix=False))
    with G.raises(KeyNotFound, match="AAD prefix"):
        pqseal.decrypt_file(src, tmp_path / "o.parquet", DecryptionProperties(G.K16))
    with G.raises(InvalidTag):
        pqseal.decrypt_file(src, tmp_path / "o.parquet", DecryptionProperties(G.K16, aad_prefix=b"ns/2"))
    assert not (tmp_path / "o.parquet").exists()
    pqseal.decrypt_file(src, tmp_path / "o.parquet", DecryptionProperties(G.K16, aad_prefix=b"ns/1"))


def test_existing_destination_survives_a_failed_run(files, tmp_path):
    dst = tmp_path / "dst.parquet"
    dst.write_bytes(b"precious")
    with G.raises(InvalidTag):
        pqseal.decrypt_file(files["sealed"], dst, DecryptionProperties(G.K32), overwrite=True)
    with G.raises(KeyNotFound):
        pqseal.decrypt_file(files["sealed"], dst, DecryptionProperties(G.K16), overwrite=True)
    with G.raises(AlreadyEncrypted):
        pqseal.encrypt_file(files["sealed"], dst, ENC, overwrite=True)
    assert dst.read_bytes() == b"precious"
    assert sorted(os.listdir(tmp_path)) == ["dst.parquet"]


# --------------------------------------------------------------------------- wrong kind of file

def test_already_encrypted(files, tmp_path):
    for which in ("sealed", "sealed_pf"):
        with G.raises(AlreadyEncrypted, match="already encrypted") as ei:
            pqseal.encrypt_file(files[which], tmp_path / "o.parquet", ENC)
        assert isinstance(ei.value, ValueError)
    theirs = tmp_path / "theirs.parquet"
    pq.write_table(files["table"], theirs, encryption_properties=pe.create_encryption_properties(G.K16))
    with G.raises(AlreadyEncrypted):
        pqseal.encrypt_file(theirs, tmp_path / "o.parquet", ENC)
    assert not (tmp_path / "o.parquet").exists()


def test_already_encrypted_duckdb(tmp_path):
    require("duckdb")
    f = G.write_duckdb(tmp_path / "d.parquet", rows=1000, key=G.K16)
    with G.raises(AlreadyEncrypted):
        pqseal.encrypt_file(f, tmp_path / "o.parquet", ENC)


def test_not_encrypted(files, tmp_path):
    before = G.sha256(files["plain"])
    for op in (lambda: pqseal.decrypt_file(files["plain"], tmp_path / "o.parquet", DEC),
               lambda: pqseal.verify(files["plain"], DEC),
               lambda: pqseal.rekey_file(files["plain"], tmp_path / "o.parquet", DEC, ENC)):
        with G.raises(NotEncrypted, match="not an encrypted") as ei:
            op()
        assert isinstance(ei.value, ValueError)
    assert not (tmp_path / "o.parquet").exists()
    assert G.sha256(files["plain"]) == before
    info = pqseal.inspect(files["plain"])
    assert info["encrypted"] is False and info["magic"] == "PAR1"


def test_column_key_for_unknown_column(files, tmp_path):
    enc = EncryptionProperties(G.K16, column_keys={"id": G.KC1, "nope": G.KC2, "s": G.KC3})
    with G.raises(ValueError, match="nope") as ei:
        pqseal.encrypt_file(files["plain"], tmp_path / "o.parquet", enc)
    msg = str(ei.value)
    assert "'s'" in msg or " s" in msg or "s," in msg      # a group, not a leaf: also unknown
    assert "s.b" in msg                                     # the valid columns are listed
    assert not (tmp_path / "o.parquet").exists()
    assert not [n for n in os.listdir(tmp_path) if is_temp_name(n)]


# --------------------------------------------------------------------------- paths and arguments

def test_paths(files, tmp_path):
    with G.raises(FileNotFoundError):
        pqseal.encrypt_file(tmp_path / "missing.parquet", tmp_path / "o.parquet", ENC)
    with G.raises(FileNotFoundError):
        pqseal.encrypt_file(files["plain"], tmp_path / "no" / "such" / "dir.parquet", ENC)
    with G.raises(ValueError, match="in_place"):
        pqseal.encrypt_file(files["plain"], files["plain"], ENC)
    with G.raises((IsADirectoryError, PqsealError, OSError)):
        pqseal.encrypt_file(tmp_path, tmp_path / "o.parquet", ENC)
    assert not [n for n in os.listdir(tmp_path) if is_temp_name(n)]


@pytest.mark.parametrize("bad", [b"", b"x" * 15, b"x" * 17, b"x" * 33, "a" * 16, 1234, None])
def test_bad_keys(bad):
    exc = (InvalidKey, TypeError, ValueError)
    with G.raises(exc):
        EncryptionProperties(bad)
    with G.raises(exc):
        EncryptionProperties(G.K16, column_keys={"id": bad})
    with G.raises(exc):
        EncryptionProperties(G.K16, column_keys={"id": (bad, b"md")})
    if bad is not None:
        with G.raises(exc):
            DecryptionProperties(bad)
        with G.raises(exc):
            DecryptionProperties(G.K16, column_keys={"id": bad})


def test_bad_properties():
    with G.raises(ValueError, match="algorithm"):
        EncryptionProperties(G.K16, algorithm="AES_CTR")
    with G.raises(ValueError, match="aad_prefix"):
        EncryptionProperties(G.K16, store_aad_prefix=False)
    with G.raises(ValueError, match="v2_framing"):
        EncryptionProperties(G.K16, v2_framing="spark")
    with G.raises(ValueError):
        EncryptionProperties(G.K16, column_keys={"": G.KC1})
    with G.raises((TypeError, ValueError)):
        EncryptionProperties(G.K16, column_keys={"id": (G.KC1, b"md", b"extra")})


def test_properties_hide_keys():
    for p in (ENC, DEC):
        r = repr(p)
        for k in (G.K16, G.KC1, G.KC2):
            assert k.decode("latin-1") not in r and k.hex() not in r
        with G.raises(TypeError):
            pickle.dumps(p)


# --------------------------------------------------------------------------- ordinal limits

@pytest.fixture(scope="module")
def many_pages(tmp_path_factory):
    d = tmp_path_factory.mktemp("ordinals")

    def make(n, dictionary=False):
        t = pa.table({"v": pa.array([i % 100 for i in range(n)], pa.int8())})
        f = d / f"pages{n}{'d' if dictionary else ''}.parquet"
        pq.write_table(t, f, max_rows_per_page=1, write_batch_size=1, data_page_size=1, use_dictionary=dictionary,
                       write_statistics=False, compression="none")
        assert G.count_data_pages(f) == n
        return f, t
    return make


def test_too_many_data_pages_in_a_chunk(many_pages, tmp_path):
    src, _ = many_pages(32_769)
    before = G.sha256(src)
    with G.raises(InvalidOrdinal, match="32769 data pages") as ei:
        pqseal.encrypt_file(src, tmp_path / "o.parquet", EncryptionProperties(G.K16))
    assert isinstance(ei.value, ValueError) and "column v" in str(ei.value)
    assert not (tmp_path / "o.parquet").exists()
    assert not [n for n in os.listdir(tmp_path) if is_temp_name(n)]
    assert G.sha256(src) == before
    with G.raises(InvalidOrdinal):
        pqseal.encrypt_file(src, tmp_path / "o.parquet", EncryptionProperties(G.K16, column_keys={"v": G.KC1}))
    # plaintext columns have no ordinals: with the column left in plaintext (footer-only
    # encryption) the file seals, and pyarrow reads it
    pqseal.encrypt_file(src, tmp_path / "o2.parquet", EncryptionProperties(G.K16, column_keys={}))
    got = pq.read_table(tmp_path / "o2.parquet", decryption_properties=pe.create_decryption_properties(G.K16))
    assert got.equals(pq.read_table(src))


@pytest.mark.parametrize("dictionary", [False, True], ids=["plain", "dict"])
def test_exactly_32768_data_pages(many_pages, tmp_path, dictionary):
    """Ordinals 0..32767 are all valid; a dictionary page has no ordinal."""
    src, t = many_pages(32_768, dictionary)
    sealed, out = tmp_path / "s.parquet", tmp_path / "o.parquet"
    pqseal.encrypt_file(src, sealed, EncryptionProperties(G.K16, algorithm="AES_GCM_CTR_V1"))
    assert pq.read_table(sealed, decryption_properties=pe.create_decryption_properties(G.K16)).equals(t)
    pqseal.decrypt_file(sealed, out, DecryptionProperties(G.K16))
    assert G.raw_chunks(out) == G.raw_chunks(src)


def test_key_retriever_called_once_per_key(files, tmp_path):
    import collections

    calls = collections.Counter()

    def retriever(md, path):
        calls[path] += 1
        return {None: G.K16, "id": G.KC1, "s.b": G.KC2}[path]

    pqseal.decrypt_file(files["sealed"], tmp_path / "o.parquet", DecryptionProperties(key_retriever=retriever))
    assert max(calls.values()) == 1, dict(calls)


# --------------------------------------------------------------------------- offsets the footer vouches for
# A footer re-sealed with the right key can point anywhere: the writer holds the keys.


def test_inspect_of_a_chunk_outside_the_file(files, tmp_path):
    """inspect with keys looks at the first page headers of each encrypted chunk (DataPageV2
    framing); a chunk placed past the end of the file raised struct.error there."""
    size = os.path.getsize(files["sealed"])

    def move(fmd):
        md = fmd["row_groups"][0]["columns"][1]["meta_data"]   # "cat": footer key, metadata in the footer
        md.pop("dictionary_page_offset", None)
        md["data_page_offset"] = size + 100
    bad = G.rewrite_footer(files["sealed"], tmp_path / "bad.parquet", G.K16, move)
    info = pqseal.inspect(bad, DEC)
    assert [c["path"] for c in info["columns"]][1] == "cat" and "v2_framing" not in info["columns"][1]
    check_all_fail(bad, tmp_path, skip=("encrypt", "inspect", "inspect_keys"))


@pytest.mark.parametrize("framing", ["arrow", "parquet-java"])
def test_data_page_v2_cut_short_by_its_chunk(tmp_path, monkeypatch, framing):
    """A chunk that ends inside its last DataPageV2: the level lengths and the framing were
    read before the page's size was checked against the chunk (struct.error when the chunk
    was read into a buffer of its own size, as all chunks are now)."""
    monkeypatch.setenv("PQSEAL_READ", "pread")   # older versions read through a mapping unless told so
    plain = G.write_pyarrow(tmp_path / "v2.parquet", G.make_table(3_000, nested=False), data_page_version="2.0",
                            row_group_size=3_000)
    sealed = tmp_path / "sealed.parquet"
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")   # the parquet-java framing warns that Arrow cannot read it
        pqseal.encrypt_file(plain, sealed, EncryptionProperties(G.K16, v2_framing=framing))
    dec = DecryptionProperties(G.K16)
    last = [m for m in G.module_map(sealed, dec) if m.kind == MT.DATA_PAGE and m.rg == 0 and m.col == 0][-1]

    def cut(fmd):
        md = fmd["row_groups"][0]["columns"][0]["meta_data"]
        start = md.get("dictionary_page_offset") or md["data_page_offset"]
        md["total_compressed_size"] = last.offset - last.levels + 2 - start
    bad = G.rewrite_footer(sealed, tmp_path / "bad.parquet", G.K16, cut)
    for op in (lambda: pqseal.verify(bad, dec), lambda: pqseal.decrypt_file(bad, tmp_path / "out.parquet", dec)):
        with G.raises(PqsealError):
            op()
    assert not (tmp_path / "out.parquet").exists()


_TRUNCATE_WHILE_READING = r"""
import os, sys
from pqseal.errors import MalformedFile
from pqseal.format import DecryptionProperties
from pqseal.format.source import Source

path, keyed = sys.argv[1], sys.argv[2] == "1"
with Source(path, DecryptionProperties(bytes.fromhex(sys.argv[3])) if keyed else None) as s:
    s.read_chunk(0, 0)
    os.truncate(path, s.tail.footer_offset // 2)
    try:
        for rg in range(s.num_row_groups):
            for col in range(len(s.paths)):
                s.read_chunk(rg, col, verify_only=keyed)
                s.bloom_filter(rg, col, s.column_meta(rg, col))
                s.column_index(rg, col)
    except MalformedFile as exc:
        print(exc)
        sys.exit(3)
sys.exit(0)
"""


@pytest.mark.parametrize("keyed", [False, True], ids=["plaintext", "sealed"])
def test_file_truncated_while_being_read(files, tmp_path, keyed):
    """A file truncated between two chunk reads is a MalformedFile: reading through a
    mapping killed the process with SIGBUS (a signal exit code here)."""
    import shutil
    import subprocess
    import sys

    src = tmp_path / "victim.parquet"
    if keyed:
        pqseal.encrypt_file(files["plain"], src, EncryptionProperties(G.K16))
    else:
        shutil.copy(files["plain"], src)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    r = subprocess.run([sys.executable, "-c", _TRUNCATE_WHILE_READING, os.fspath(src), "1" if keyed else "0",
                        G.K16.hex()], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 3, (r.returncode, r.stdout, r.stderr)
    assert "changed while being read" in r.stdout or "outside" in r.stdout, r.stdout
