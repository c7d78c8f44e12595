"""The Thrift compact codec (pqseal._thrift, checked against its pure-Python twin tests/thrift_oracle.py).

* byte-identical round trips of real footers, page headers, page indexes and bloom filter
  headers written by pyarrow (V1/V2 pages, dictionaries, statistics, nested columns,
  encryption) and DuckDB;
* decoded values against pyarrow's own metadata reader;
* unknown fields (short/long form, nested, negative ids, type mismatches) survive edits;
* C and Python codecs agree on every input, including Hypothesis-generated objects,
  generic wire trees, random bytes and mutations (same results, same error messages);
* hostile input: truncations, garbage, bit flips, huge counts/lengths, deep nesting, long
  varints -> DecodeError, never a crash; bad values -> EncodeError naming the field.

A small generic compact encoder/decoder (``g_*`` below) is the independent reference used
to build inputs and expected outputs.
"""

from __future__ import annotations

import gc
import json
import mmap
import os
import random
import struct
import subprocess
import sys
import textwrap

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pqseal import _thrift
from pqseal.format import thrift as T
from thrift_oracle import PyCodec

from interop import require

C = T.codec
PY = PyCodec(T.SCHEMA)

BOOL, BOOL_FALSE, BYTE, I16, I32, I64, DOUBLE, BINARY, LIST, SET, MAP, STRUCT = range(1, 13)


def test_runs_against_expected_build():
    """Sanitizer CI passes build the extension elsewhere and point PQSEAL_EXPECT_THRIFT at it."""
    expect = os.environ.get("PQSEAL_EXPECT_THRIFT")
    if not expect:
        pytest.skip("PQSEAL_EXPECT_THRIFT not set")
    from pqseal import _thrift
    assert os.path.realpath(_thrift.__file__) == os.path.realpath(expect)


# --------------------------------------------------------------------------- reference codec
# Generic trees: struct = [(fid, ttype, value), ...] (bool field: ttype 1, value bool);
# list/set = (elem_ttype, [values]); map = (key_ttype, value_ttype, [(k, v), ...]).

def g_varint(v):
    out = bytearray()
    while v > 0x7F:
        out.append((v & 0x7F) | 0x80)
        v >>= 7
    out.append(v)
    return bytes(out)


def g_zz(v):
    return ((v << 1) ^ (v >> 63)) & 0xFFFFFFFFFFFFFFFF


def g_value(t, v):
    if t in (BOOL, BOOL_FALSE):            # as a list/map element
        return b"\x01" if v else b"\x02"
    if t == BYTE:
        return bytes([v & 0xFF])
    if t in (I16, I32, I64):
        return g_varint(g_zz(v))
    if t == DOUBLE:
        return struct.pack("<d", v)
    if t == BINARY:
        return g_varint(len(v)) + bytes(v)
    if t in (LIST, SET):
        et, items = v
        head = bytes([(len(items) << 4) | et]) if len(items) < 15 else bytes([0xF0 | et]) + g_varint(len(items))
        return head + b"".join(g_value(et, x) for x in items)
    if t == MAP:
        kt, vt, items = v
        if not items:
            return b"\x00"
        return g_varint(len(items)) + bytes([(kt << 4) | vt]) + b"".join(
            g_value(kt, k) + g_value(vt, x) for k, x in items)
    if t == STRUCT:
        return g_struct(v)
    raise AssertionError(t)


def g_header(last, fid, t):
    d = fid - last
    return bytes([(d << 4) | t]) if 0 < d <= 15 else bytes([t]) + g_varint(g_zz(fid))


def g_struct(fields):
    out, last = bytearray(), 0
    for fid, t, v in fields:
        if t in (BOOL, BOOL_FALSE):
            out += g_header(last, fid, BOOL if v else BOOL_FALSE)
        else:
            out += g_header(last, fid, t) + g_value(t, v)
        last = fid
    return bytes(out + b"\x00")


def g_read_varint(b, pos):
    v = s = 0
    while True:
        x = b[pos]
        pos += 1
        v |= (x & 0x7F) << s
        s += 7
        if not x & 0x80:
            return v, pos


def g_read(b, pos, t):
    if t in (BOOL, BOOL_FALSE):
        return b[pos] == 1, pos + 1
    if t == BYTE:
        return struct.unpack_from("<b", b, pos)[0], pos + 1
    if t in (I16, I32, I64):
        u, pos = g_read_varint(b, pos)
        return (u >> 1) ^ -(u & 1), pos
    if t == DOUBLE:
        return struct.unpack_from("<d", b, pos)[0], pos + 8
    if t == BINARY:
        n, pos = g_read_varint(b, pos)
        return bytes(b[pos:pos + n]), pos + n
    if t in (LIST, SET):
        h = b[pos]
        pos += 1
        et, n = h & 15, h >> 4
        if n == 15:
            n, pos = g_read_varint(b, pos)
        items = []
        for _ in range(n):
            x, pos = g_read(b, pos, et)
            items.append(x)
        return (et, items), pos
    if t == MAP:
        n, pos = g_read_varint(b, pos)
        if n == 0:
            return (0, 0, []), pos
        kt, vt = b[pos] >> 4, b[pos] & 15
        pos += 1
        items = []
        for _ in range(n):
            k, pos = g_read(b, pos, kt)
            x, pos = g_read(b, pos, vt)
            items.append((k, x))
        return (kt, vt, items), pos
    if t == STRUCT:
        return g_read_struct(b, pos)
    raise AssertionError(t)


def g_read_struct(b, pos=0):
    fields, last = [], 0
    while True:
        h = b[pos]
        pos += 1
        if h == 0:
            return fields, pos
        t, d = h & 15, h >> 4
        if d:
            fid = last + d
        else:
            u, pos = g_read_varint(b, pos)
            fid = (u >> 1) ^ -(u & 1)
        last = fid
        if t in (BOOL, BOOL_FALSE):
            fields.append((fid, BOOL, t == BOOL))
        else:
            v, pos = g_read(b, pos, t)
            fields.append((fid, t, v))


def g_get(fields, fid):
    return next(v for f, _, v in fields if f == fid)


def g_set(fields, fid, t, v):
    """Replace or insert field `fid` keeping ascending order."""
    fields[:] = [f for f in fields if f[0] != fid] + [(fid, t, v)]
    fields.sort(key=lambda f: f[0])


# --------------------------------------------------------------------------- helpers

def outcome(fn, *args):
    """('ok', result) or ('err', exception type name, message) for comparing codecs."""
    try:
        return ("ok", fn(*args))
    except (T.DecodeError, T.EncodeError) as e:
        return ("err", type(e).__name__, str(e))


def decode_both(name, buf, offset=0):
    """Decode with every codec; assert they agree (also with skip); return the result."""
    res = outcome(PY.decode, name, buf, offset)
    skipped = outcome(PY.skip, name, buf, offset)
    assert outcome(C.decode, name, buf, offset) == res
    assert outcome(C.skip, name, buf, offset) == skipped
    if res[0] == "ok":
        assert skipped == ("ok", res[1][1])
    else:
        assert skipped == res
    return res


def roundtrip(name, buf, offset=0, end=None):
    """Decode at offset with both codecs, check agreement and byte-identical re-encoding."""
    res = decode_both(name, buf, offset)
    assert res[0] == "ok", res
    obj, stop = res[1]
    if end is not None:
        assert stop == end
    want = bytes(buf[offset:stop])
    assert PY.encode(name, obj) == want
    assert C.encode(name, obj) == want
    return obj, stop


# --------------------------------------------------------------------------- real files

def _footer(data):
    n = struct.unpack("<I", data[-8:-4])[0]
    return len(data) - 8 - n, n, data[-4:]


def _walk_file(data, md):
    """Round-trip every page header, offset/column index and bloom filter header."""
    counts = {"pages": 0, "v1": 0, "v2": 0, "dict": 0, "oi": 0, "ci": 0, "bloom": 0}
    for rg in md["row_groups"]:
        for cc in rg["columns"]:
            cmd = cc["meta_data"]
            start = cmd.get("dictionary_page_offset") or cmd["data_page_offset"]
            end = start + cmd["total_compressed_size"]
            pos = start
            while pos < end:
                ph, hend = roundtrip("PageHeader", data, pos)
                counts["pages"] += 1
                counts["v1"] += "data_page_header" in ph
                counts["v2"] += "data_page_header_v2" in ph
                counts["dict"] += "dictionary_page_header" in ph
                pos = hend + ph["compressed_page_size"]
            assert pos == end
            if "offset_index_offset" in cc:
                off, ln = cc["offset_index_offset"], cc["offset_index_length"]
                oi, _ = roundtrip("OffsetIndex", data, off, off + ln)
                assert oi["page_locations"][0]["offset"] in (cmd["data_page_offset"], start)
                counts["oi"] += 1
            if "column_index_offset" in cc:
                off, ln = cc["column_index_offset"], cc["column_index_length"]
                roundtrip("ColumnIndex", data, off, off + ln)
                counts["ci"] += 1
            if "bloom_filter_offset" in cmd:
                off = cmd["bloom_filter_offset"]
                bf, hend = roundtrip("BloomFilterHeader", data, off)
                if "bloom_filter_length" in cmd:
                    assert hend - off + bf["numBytes"] == cmd["bloom_filter_length"]
                counts["bloom"] += 1
    return counts


@pytest.fixture(scope="module")
def pa_files(tmp_path_factory):
    pa = require("pyarrow")
    pq = require("pyarrow.parquet")
    import datetime
    import decimal
    d = tmp_path_factory.mktemp("thrift")
    n = 1200
    table = pa.table({
        "i": pa.array([None if k % 7 == 0 else k for k in range(n)], pa.int64()),
        "s": pa.array([f"v{k % 50}" for k in range(n)]),
        "d": pa.array([k / 7 for k in range(n)], pa.float64()),
        "b": pa.array([k % 3 == 0 for k in range(n)]),
        "l": pa.array([[k, k + 1][: k % 3] for k in range(n)], pa.list_(pa.int32())),
        "st": pa.array([{"x": k, "y": f"y{k}"} for k in range(n)]),
        "m": pa.array([[("a", k)] for k in range(n)], pa.map_(pa.string(), pa.int64())),
        "dec": pa.array([decimal.Decimal(k) / 100 for k in range(n)], pa.decimal128(10, 2)),
        "ts": pa.array([datetime.datetime(2020, 1, 1) + datetime.timedelta(seconds=k) for k in range(n)],
                       pa.timestamp("us", tz="UTC")),
    }).replace_schema_metadata({"origin": "pqseal tests"})
    files = {}
    common = dict(row_group_size=400, data_page_size=1024, write_statistics=True, write_page_index=True,
                  bloom_filter_options={"s": True, "i": {"ndv": 100, "fpp": 0.1}},
                  sorting_columns=[pq.SortingColumn(0)])
    files["v1"] = d / "v1.parquet"
    pq.write_table(table, files["v1"], compression="snappy", **common)
    files["v2"] = d / "v2.parquet"
    pq.write_table(table, files["v2"], compression="zstd", data_page_version="2.0",
                   write_page_checksum=True, **common)
    files["plain"] = d / "plain.parquet"     # no dictionary, no statistics, no index
    pq.write_table(table, files["plain"], use_dictionary=False, write_statistics=False, compression="none")
    return {k: v.read_bytes() for k, v in files.items()}


def _pa_encrypted(tmp_path_factory):
    pa = require("pyarrow")
    pq = require("pyarrow.parquet")
    pe = require("pyarrow.parquet.encryption")
    import base64

    class Kms(pe.KmsClient):
        def __init__(self, config):
            pe.KmsClient.__init__(self)
            self.keys = config.custom_kms_conf

        def wrap_key(self, key_bytes, mk):
            return base64.b64encode(bytes(a ^ b for a, b in zip(key_bytes, self.keys[mk].encode()))).decode()

        def unwrap_key(self, wrapped, mk):
            kb = base64.b64decode(wrapped)
            return bytes(a ^ b for a, b in zip(kb, self.keys[mk].encode()))

    kcfg = pe.KmsConnectionConfig(custom_kms_conf={"fk": "0123456789012345", "ck": "5432109876543210"})
    factory = pe.CryptoFactory(lambda cfg: Kms(cfg))
    table = pa.table({"a": list(range(100)), "b": [str(k) for k in range(100)]})
    d = tmp_path_factory.mktemp("thrift_enc")
    out = {}
    for plaintext, algo in ((True, "AES_GCM_CTR_V1"), (False, "AES_GCM_V1")):
        cfg = pe.EncryptionConfiguration(footer_key="fk", column_keys={"ck": ["a"]},
                                         plaintext_footer=plaintext, encryption_algorithm=algo)
        p = d / f"enc_{plaintext}.parquet"
        pq.write_table(table, p, encryption_properties=factory.file_encryption_properties(kcfg, cfg))
        out[plaintext] = p.read_bytes()
    return out


@pytest.fixture(scope="module")
def enc_files(tmp_path_factory):
    return _pa_encrypted(tmp_path_factory)


@pytest.mark.parametrize("kind", ["v1", "v2", "plain"])
def test_pyarrow_file_roundtrip(pa_files, kind):
    data = pa_files[kind]
    start, n, magic = _footer(data)
    assert magic == b"PAR1"
    md, _ = roundtrip("FileMetaData", data, start, start + n)
    # other buffer types and offset=0 on an exact slice give the same
    footer = data[start:start + n]
    assert T.decode("FileMetaData", footer)[0] == md
    assert T.decode("FileMetaData", bytearray(data), start)[0] == md
    assert T.decode("FileMetaData", memoryview(data)[start:])[0] == md
    counts = _walk_file(data, md)
    chunks = sum(len(rg["columns"]) for rg in md["row_groups"])
    assert counts["pages"] > chunks if kind != "plain" else counts["pages"] >= chunks
    if kind == "v1":
        assert counts["v1"] and counts["dict"] and not counts["v2"]
    if kind == "v2":
        assert counts["v2"] and counts["dict"] and not counts["v1"]
    if kind != "plain":
        assert counts["oi"] and counts["ci"] and counts["bloom"] == 2 * len(md["row_groups"])


def test_pyarrow_values_match(pa_files, tmp_path):
    pq = require("pyarrow.parquet")
    data = pa_files["v1"]
    p = tmp_path / "f.parquet"
    p.write_bytes(data)
    ref = pq.ParquetFile(p).metadata
    start, n, _ = _footer(data)
    md, _ = T.decode("FileMetaData", data, start)
    assert md["num_rows"] == ref.num_rows
    assert len(md["row_groups"]) == ref.num_row_groups
    assert md["created_by"].decode() == ref.created_by
    assert {kv["key"]: kv["value"] for kv in md["key_value_metadata"]}.items() >= ref.metadata.items()
    leaves = [e["name"].decode() for e in md["schema"] if "num_children" not in e]
    assert len(leaves) == ref.num_columns
    physical = {0: "BOOLEAN", 1: "INT32", 2: "INT64", 3: "INT96", 4: "FLOAT", 5: "DOUBLE",
                6: "BYTE_ARRAY", 7: "FIXED_LEN_BYTE_ARRAY"}
    codecs = {0: "UNCOMPRESSED", 1: "SNAPPY", 2: "GZIP", 6: "ZSTD"}
    for i, rg in enumerate(md["row_groups"]):
        rref = ref.row_group(i)
        assert rg["num_rows"] == rref.num_rows
        assert rg["total_byte_size"] == rref.total_byte_size
        assert len(rg["columns"]) == rref.num_columns
        assert isinstance(rg["sorting_columns"], bytes)     # raw
        for j, cc in enumerate(rg["columns"]):
            cref = rref.column(j)
            cmd = cc["meta_data"]
            assert ".".join(x.decode() for x in cmd["path_in_schema"]) == cref.path_in_schema
            assert cc["file_offset"] == cref.file_offset
            assert cmd["data_page_offset"] == cref.data_page_offset
            assert cmd.get("dictionary_page_offset") == cref.dictionary_page_offset
            assert cmd["total_compressed_size"] == cref.total_compressed_size
            assert cmd["total_uncompressed_size"] == cref.total_uncompressed_size
            assert cmd["num_values"] == cref.num_values
            assert physical[cmd["type"]] == cref.physical_type
            assert codecs[cmd["codec"]] == cref.compression
            assert cmd.get("bloom_filter_offset") == cref.bloom_filter_offset
            assert cmd.get("bloom_filter_length") == cref.bloom_filter_length
            assert ("offset_index_offset" in cc) == cref.has_offset_index
            assert ("column_index_offset" in cc) == cref.has_column_index
            assert isinstance(cmd["statistics"], bytes) and isinstance(cmd["encoding_stats"], bytes)


def test_encrypted_files_roundtrip(enc_files):
    # plaintext footer: FileMetaData + 28-byte signature; columns encrypted with a column key
    data = enc_files[True]
    start, n, magic = _footer(data)
    assert magic == b"PAR1"
    md, end = roundtrip("FileMetaData", data, start, start + n - 28)
    alg = md["encryption_algorithm"]
    assert set(alg) == {"AES_GCM_CTR_V1"} and isinstance(alg["AES_GCM_CTR_V1"]["aad_file_unique"], bytes)
    assert "footer_signing_key_metadata" in md
    cryptos = [cc.get("crypto_metadata", {}) for cc in md["row_groups"][0]["columns"]]
    kinds = sorted(k for c in cryptos for k in c)
    assert "ENCRYPTION_WITH_COLUMN_KEY" in kinds
    for cc in md["row_groups"][0]["columns"]:
        ck = cc.get("crypto_metadata", {}).get("ENCRYPTION_WITH_COLUMN_KEY")
        if ck is not None:
            assert ck["path_in_schema"] == [b"a"] and isinstance(ck["key_metadata"], bytes)
            assert isinstance(cc["encrypted_column_metadata"], bytes)
    # encrypted footer: FileCryptoMetaData, then the encrypted FileMetaData module
    data = enc_files[False]
    start, n, magic = _footer(data)
    assert magic == b"PARE"
    fcm, end = roundtrip("FileCryptoMetaData", data, start)
    assert end < start + n
    assert set(fcm["encryption_algorithm"]) == {"AES_GCM_V1"}
    assert isinstance(fcm["key_metadata"], bytes)


def test_duckdb_file_roundtrip(tmp_path):
    duckdb = require("duckdb")
    p = tmp_path / "duck.parquet"
    con = duckdb.connect()
    con.execute(
        "COPY (SELECT range AS i, 'x' || (range % 17) AS s, range / 3.0 AS d, [range, range + 1] AS l, "
        "{'a': range, 'b': 'q'} AS st, range % 2 = 0 AS b FROM range(5000)) "
        f"TO '{p}' (FORMAT parquet, ROW_GROUP_SIZE 2000)")
    con.close()
    data = p.read_bytes()
    start, n, magic = _footer(data)
    assert magic == b"PAR1"
    md, _ = roundtrip("FileMetaData", data, start, start + n)
    assert md["num_rows"] == 5000 and len(md["row_groups"]) >= 2
    assert _walk_file(data, md)["pages"] >= len(md["row_groups"]) * 6


def test_buffer_types(pa_files, tmp_path):
    data = pa_files["v1"]
    start, n, _ = _footer(data)
    want = T.decode("FileMetaData", data, start)
    np = require("numpy")
    p = tmp_path / "f.bin"
    p.write_bytes(data)
    with open(p, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
        for codec in (C, PY):
            assert codec.decode("FileMetaData", mm, start) == want
            assert codec.decode("FileMetaData", np.frombuffer(data, np.uint8), offset=start) == want
            assert codec.skip("FileMetaData", mm, start) == start + n


# --------------------------------------------------------------------------- unknown fields

@pytest.fixture(scope="module")
def small_footer(pa_files):
    data = pa_files["v1"]
    start, n, _ = _footer(data)
    return data[start:start + n]


def _first_cmd(tree):
    rgs = g_get(tree, 4)[1]
    cols = g_get(rgs[0], 1)[1]
    return g_get(cols[0], 3)


def _inject_cases(footer):
    base, _ = g_read_struct(footer)
    assert g_struct(base) == footer          # the reference codec itself is byte-exact here
    cases = {}

    def case(name, edit):
        tree, _ = g_read_struct(footer)
        edit(tree)
        cases[name] = tree

    case("cmd_fid18_short", lambda t: g_set(_first_cmd(t), 18, I32, 777))
    case("cmd_fid99_long", lambda t: g_set(_first_cmd(t), 99, I32, 12345))
    case("fmd_negative_fid", lambda t: g_set(t, -5, BINARY, b"neg"))
    case("fmd_fid10_nested", lambda t: g_set(t, 10, STRUCT, [
        (1, STRUCT, [(1, I64, 42), (3, BINARY, b"deep"), (4, LIST, (STRUCT, [[(1, BOOL, False)]]))]),
        (2, BOOL, True), (3, MAP, (BINARY, I32, [(b"k", 1), (b"l", -2)])), (4, DOUBLE, 2.5),
        (5, SET, (BOOL, [True, False, True])), (6, BYTE, -7), (7, I16, -300)]))
    case("union_unknown_member", lambda t: g_set(t, 8, STRUCT, [(3, STRUCT, [(1, BINARY, b"x")])]))
    # known ids with another wire type: kept as unknown, not coerced
    case("mismatch_created_by_i32", lambda t: g_set(t, 6, I32, 5))
    case("mismatch_schema_name_i64", lambda t: g_set(g_get(t, 2)[1][1], 4, I64, 9))
    case("mismatch_encodings_list_i64", lambda t: g_set(_first_cmd(t), 2, LIST, (I64, [0, 3])))
    case("mismatch_path_set", lambda t: g_set(_first_cmd(t), 3, SET, (BINARY, [b"a"])))
    case("mismatch_meta_data_binary", lambda t: g_set(g_get(g_get(t, 4)[1][0], 1)[1][1], 3, BINARY, b"zz"))
    case("mismatch_rowgroups_elem", lambda t: g_set(t, 4, LIST, (I32, [1, 2])))
    case("mismatch_statistics_raw_list", lambda t: g_set(_first_cmd(t), 12, LIST, (I32, [1])))
    case("mismatch_version_bool", lambda t: g_set(t, 1, BOOL, True))
    case("unknown_inside_raw_statistics", lambda t: g_set(g_get(_first_cmd(t), 12), 10, BINARY, b"zz"))
    return {k: g_struct(v) for k, v in cases.items()}, cases


def test_unknown_fields_survive_edit(small_footer):
    inputs, trees = _inject_cases(small_footer)
    for name, buf in inputs.items():
        obj, end = roundtrip("FileMetaData", buf)      # both codecs, byte-identical
        assert end == len(buf)
        # edit a known field, re-encode: the reference edit of the wire tree must match
        if 6 in obj:                                    # created_by itself is the mismatch
            obj["num_rows"] = 123456789
            want_tree = [f for f in trees[name]]
            g_set(want_tree, 3, I64, 123456789)
        else:
            obj["created_by"] = b"modified by pqseal"
            want_tree = [f for f in trees[name]]
            g_set(want_tree, 6, BINARY, b"modified by pqseal")
        want = g_struct(want_tree)
        for codec in (C, PY):
            out = codec.encode("FileMetaData", obj)
            assert out == want, name
            again, _ = codec.decode("FileMetaData", out)
            assert again == obj, name


def test_unknown_field_representation(small_footer):
    inputs, _ = _inject_cases(small_footer)
    for codec in (C, PY):
        obj, _ = codec.decode("FileMetaData", inputs["cmd_fid18_short"])
        assert obj["row_groups"][0]["columns"][0]["meta_data"][18] == (I32, g_varint(g_zz(777)))
        obj, _ = codec.decode("FileMetaData", inputs["cmd_fid99_long"])
        assert obj["row_groups"][0]["columns"][0]["meta_data"][99] == (I32, g_varint(g_zz(12345)))
        obj, _ = codec.decode("FileMetaData", inputs["fmd_negative_fid"])
        assert obj[-5] == (BINARY, b"\x03neg")
        obj, _ = codec.decode("FileMetaData", inputs["mismatch_created_by_i32"])
        assert "created_by" not in obj and obj[6] == (I32, b"\x0a")
        obj, _ = codec.decode("FileMetaData", inputs["mismatch_version_bool"])
        assert "version" not in obj and obj[1] == (BOOL, b"")
        obj, _ = codec.decode("FileMetaData", inputs["mismatch_encodings_list_i64"])
        cmd = obj["row_groups"][0]["columns"][0]["meta_data"]
        assert "encodings" not in cmd and cmd[2] == (LIST, b"\x26\x00\x06")
        obj, _ = codec.decode("FileMetaData", inputs["fmd_fid10_nested"])
        assert obj[10][0] == STRUCT and isinstance(obj[10][1], bytes)


def test_bool_fields_and_lists():
    for codec in (C, PY):
        # DictionaryPageHeader.is_sorted: wire types 1 (true) and 2 (false)
        for b, want in ((b"\x15\x02\x15\x00\x11\x00", True), (b"\x15\x02\x15\x00\x12\x00", False)):
            obj, end = codec.decode("DictionaryPageHeader", b)
            assert obj == {"num_values": 1, "encoding": 0, "is_sorted": want} and end == len(b)
            assert codec.encode("DictionaryPageHeader", obj) == b
    # a schema list<bool> (a test schema; Parquet's only one, ColumnIndex.null_pages, is raw)
    defs = [("S", [(1, "flags", LIST, BOOL, None, False), (2, "x", DOUBLE, 0, None, False)])]
    codecs = [PyCodec(defs), _thrift.Codec(defs)]
    for codec in codecs:
        b = b"\x19\x31\x01\x02\x01" + b"\x17" + struct.pack("<d", -0.5) + b"\x00"
        obj, _ = codec.decode("S", b)
        assert obj == {"flags": [True, False, True], "x": -0.5}
        assert codec.encode("S", obj) == b
        # an element byte other than 1/2, or element type 2, is not a canonical bool list: kept raw
        for bad in (b"\x19\x21\x01\x00\x00", b"\x19\x22\x01\x02\x00"):
            obj, _ = codec.decode("S", bad)
            assert obj == {1: (LIST, bad[1:-1])}
            assert codec.encode("S", obj) == bad


# --------------------------------------------------------------------------- hostile input

HOSTILE = {
    "list_struct_2^31": ("FileMetaData", b"\x15\x02" + b"\x19\xfc" + g_varint(2**31),
                         "list size 2147483648 out of range"),
    "list_struct_2^31-1": ("FileMetaData", b"\x15\x02\x19\xfc" + g_varint(2**31 - 1) + b"\0" * 10,
                           "exceeds remaining input"),
    "list_i32_mismatch_2^31-1": ("FileMetaData", b"\x15\x02\x19\xf5" + g_varint(2**31 - 1), "exceeds remaining input"),
    "list_bool_raw": ("ColumnIndex", b"\x19\xf1" + g_varint(2**31 - 1), "exceeds remaining input"),
    "binary_len_2^31": ("FileMetaData", b"\x15\x02\x48" + g_varint(2**31) + b"abc",
                        "binary length 2147483648 out of range"),
    "binary_len_2^62": ("FileMetaData", b"\x15\x02\x48" + g_varint(2**62) + b"abc", "out of range"),
    "binary_len_too_long": ("FileMetaData", b"\x68\x05abc", "binary length 5 exceeds remaining input at offset 1"),
    "map_huge": ("FileMetaData", b"\x0b" + g_varint(g_zz(50)) + g_varint(2**30) + b"\x88" + b"\0" * 8, "map size"),
    "deep_struct_1e5": ("FileMetaData", b"\x0c" + g_varint(g_zz(100)) + b"\x1c" * 100000, "nesting too deep"),
    "deep_list_1e5": ("FileMetaData", b"\x09" + g_varint(g_zz(100)) + b"\x19" * 100000, "nesting too deep"),
    "deep_known_structs": ("ColumnChunk", b"\x3c" + b"\x1c" * 100000, "nesting too deep"),
    "varint_11_bytes": ("FileMetaData", b"\x15" + b"\x80" * 10 + b"\x00", "varint too long at offset 1"),
    "varint_10th_byte_overflow": ("FileMetaData", b"\x16" + b"\xff" * 9 + b"\x02\x00", "varint too long"),
    "i32_out_of_range": ("FileMetaData", b"\x15" + g_varint(2**32) + b"\x00", "i32 value out of range"),
    "i16_out_of_range": ("RowGroup", b"\x74" + g_varint(2**16) + b"\x00", "i16 value out of range"),
    "empty": ("FileMetaData", b"", "truncated input at offset 0"),
    "no_stop": ("FileMetaData", b"\x15\x02", "truncated input at offset 2"),
    "bad_type_13": ("FileMetaData", b"\x1d\x00", "bad field type 13 at offset 0"),
    "bad_type_0": ("FileMetaData", b"\x10\x00", "bad field type 0 at offset 0"),
    "bad_elem_type": ("FileMetaData", b"\x19\x1d\x00", "bad element type 13 at offset 1"),
    "fid_out_of_range": ("FileMetaData", b"\x05" + g_varint(g_zz(40000)) + b"\x00\x00", "field id out of range"),
    "fid_overflow_short": ("FileMetaData", b"\x05" + g_varint(g_zz(32767)) + b"\x00\x15\x00\x00",
                           "field id out of range"),
    "duplicate_known": ("FileMetaData", b"\x15\x02\x05\x02\x02\x00", "duplicate field id 1 at offset 2"),
    "duplicate_unknown": ("FileMetaData", b"\x05\x28\x02\x05\x28\x02\x00", "duplicate field id 20"),
    # the same unknown id inside a nested struct does not count; the repeat in the outer one does
    "duplicate_unknown_after_nested": ("PageHeader", b"\x06\x15\x02\x0c\x0a\x06\x15\x02\x00\x06\x15\x02\x00",
                                       "duplicate field id -11 at offset 9"),
    "duplicate_after_5000_unknown": ("FileMetaData", b"\x05\xc8\x01\x00" + b"\x15\x00" * 5000 + b"\x05\xc8\x01\x00\x00",
                                     "duplicate field id 100 at offset 10004"),
    "duplicate_mismatched": ("FileMetaData", b"\x16\x02\x05\x02\x02\x00", "duplicate field id 1"),
    "truncated_double": ("FileMetaData", b"\xa7\x00\x00", "truncated input at offset 1"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_inputs(case):
    name, buf, msg = HOSTILE[case]
    res = decode_both(name, buf)
    assert res[0] == "err" and res[1] == "DecodeError", res
    assert msg in res[2]
    with pytest.raises(ValueError):       # DecodeError is a ValueError
        T.decode(name, buf)


def test_duplicates_in_unknown_nested_struct_are_kept_verbatim():
    buf = b"\xac" + b"\x15\x02\x15\x02\x00" + b"\x00"     # fid 10 struct with fid 1 twice
    obj, _ = roundtrip("FileMetaData", buf)
    assert obj == {10: (STRUCT, b"\x15\x02\x15\x02\x00")}


def test_empty_list_of_element_type_0_is_kept_verbatim():
    """fastparquet writes an empty key_value_metadata list as 0x00 (element type 0),
    which Apache Thrift's readers accept: it stays an unknown field, re-encoded as is; a
    non-empty list of type 0 is still refused."""
    obj, _ = roundtrip("ColumnMetaData", b"\x89\x00\x00")   # field 8 (list), header 0x00
    assert obj == {8: (LIST, b"\x00")}
    assert "bad element type 0" in decode_both("ColumnMetaData", b"\x89\x10\x00")[2]


@pytest.fixture(scope="module")
def tiny_footer(tmp_path_factory):
    pa = require("pyarrow")
    pq = require("pyarrow.parquet")
    p = tmp_path_factory.mktemp("thrift_tiny") / "t.parquet"
    pq.write_table(pa.table({"a": [1, 2, 3], "s": ["x", None, "z"]}), p, row_group_size=2)
    data = p.read_bytes()
    start, n, _ = _footer(data)
    return data[start:start + n]


def test_every_truncation(tiny_footer):
    """Both codecs, every prefix of a small real footer: same DecodeError, offset <= cut."""
    for cut in range(len(tiny_footer)):
        res = decode_both("FileMetaData", tiny_footer[:cut])
        assert res[0] == "err" and res[1] == "DecodeError"
        assert int(res[2].rsplit(" ", 1)[1]) <= cut, res
    assert decode_both("FileMetaData", tiny_footer)[0] == "ok"


@pytest.mark.parametrize("kind", ["v1", "v2"])
def test_every_truncation_bigger_footer_c(pa_files, kind):
    data = pa_files[kind]
    start, n, _ = _footer(data)
    footer = data[start:start + n]
    for cut in range(n):
        with pytest.raises(T.DecodeError):
            C.decode("FileMetaData", footer[:cut])
        with pytest.raises(T.DecodeError):
            C.skip("FileMetaData", footer[:cut])


def _flip(rnd, buf):
    b = bytearray(buf)
    for _ in range(rnd.randrange(1, 6)):
        if rnd.random() < 0.5:
            b[rnd.randrange(len(b))] ^= 1 << rnd.randrange(8)
        else:
            b[rnd.randrange(len(b))] = rnd.randrange(256)
    return bytes(b)


def test_garbage_and_bit_flips(tiny_footer):
    rnd = random.Random(20240607)
    names = ["FileMetaData", "PageHeader", "ColumnChunk", "OffsetIndex", "ColumnIndex", "BloomFilterHeader"]
    oks = 0
    for _ in range(1500):
        buf = bytes(rnd.randrange(256) for _ in range(rnd.randrange(0, 64)))
        oks += decode_both(rnd.choice(names), buf)[0] == "ok"
    for _ in range(1500):
        res = decode_both("FileMetaData", _flip(rnd, tiny_footer))
        if res[0] == "ok":
            oks += 1
            obj, end = res[1]
            # whatever decodes re-encodes (maybe canonicalised) and decodes to the same
            out = PY.encode("FileMetaData", obj)
            assert T.decode("FileMetaData", out)[0] == obj
            assert C.encode("FileMetaData", obj) == out
    assert oks > 0


def test_bit_flips_bigger_footer_c(small_footer):
    rnd = random.Random(7)
    for _ in range(3000):
        try:
            obj, _ = C.decode("FileMetaData", _flip(rnd, small_footer))
        except T.DecodeError:
            continue
        assert C.decode("FileMetaData", C.encode("FileMetaData", obj))[0] == obj


def test_gc_state_restored():
    assert gc.isenabled()
    for codec in (C, PY):
        with pytest.raises(T.DecodeError):
            codec.decode("FileMetaData", b"\x15")
        assert gc.isenabled()
        gc.disable()
        try:
            codec.decode("FileMetaData", b"\x15\x02\x00")
            assert not gc.isenabled()
        finally:
            gc.enable()


def test_bad_arguments():
    for codec in (C, PY):
        with pytest.raises(ValueError, match="unknown struct"):
            codec.decode("Nope", b"\x00")
        with pytest.raises(ValueError, match="unknown struct"):
            codec.encode("Nope", {})
        with pytest.raises(ValueError, match="outside the buffer"):
            codec.decode("FileMetaData", b"\x00", 2)
        with pytest.raises(ValueError, match="outside the buffer"):
            codec.skip("FileMetaData", b"\x00", -1)
        with pytest.raises(TypeError):
            codec.decode("FileMetaData", "not bytes")
        assert codec.decode("KeyValue", b"xx\x00", 2) == ({}, 3)
        assert set(codec.structs) >= {"FileMetaData", "PageHeader", "ColumnIndex", "FileCryptoMetaData"}


# --------------------------------------------------------------------------- encode errors

def _enc_err(name, obj):
    res = outcome(PY.encode, name, obj)
    assert outcome(C.encode, name, obj) == res
    assert res[0] == "err" and res[1] == "EncodeError", res
    return res[2]


def test_encode_errors():
    cases = [
        ("KeyValue", {"key": "str"}, "KeyValue.key: expected bytes-like, got str"),
        ("FileMetaData", {"version": 2**31}, "FileMetaData.version: value out of range for i32: 2147483648"),
        ("FileMetaData", {"num_rows": 2**63}, "FileMetaData.num_rows: value out of range for i64"),
        ("FileMetaData", {"num_rows": 10**5000}, "value out of range for i64: <unrepresentable>"),
        ("RowGroup", {"ordinal": -32769}, "RowGroup.ordinal: value out of range for i16: -32769"),
        ("FileMetaData", {"version": True}, "FileMetaData.version: expected int, got bool"),
        ("FileMetaData", {"version": 1.0}, "FileMetaData.version: expected int, got float"),
        ("FileMetaData", {"bogus": 1}, "FileMetaData: unknown field name 'bogus'"),
        ("FileMetaData", {1.5: 1}, "FileMetaData: field key must be str or int, got float"),
        ("FileMetaData", {True: (1, b"")}, "FileMetaData: field key must be str or int, got bool"),
        ("FileMetaData", {40000: (5, b"\x00")}, "FileMetaData: field id out of range: 40000"),
        ("FileMetaData", {"version": 1, 1: (6, b"\x00")}, "FileMetaData: duplicate field id 1"),
        ("DictionaryPageHeader", {"is_sorted": 1}, "DictionaryPageHeader.is_sorted: expected bool, got int"),
        ("FileMetaData", {"schema": {}}, "FileMetaData.schema: expected list, got dict"),
        ("FileMetaData", {"schema": [{"name": b"x"}, 3]}, "FileMetaData.schema[1]: expected dict, got int"),
        ("FileMetaData", {"schema": [{"name": b"x"}, {"name": 3}]}, "SchemaElement.name: expected bytes-like, got int"),
        ("ColumnMetaData", {"encodings": [0, "x"]}, "ColumnMetaData.encodings[1]: expected int, got str"),
        ("ColumnMetaData", {"path_in_schema": [b"a", None]},
         "ColumnMetaData.path_in_schema[1]: expected bytes-like, got NoneType"),
        ("ColumnMetaData", {"statistics": "x"},
         "ColumnMetaData.statistics: expected bytes-like encoded value, got str"),
        ("ColumnMetaData", {"statistics": b"\x15"},
         "ColumnMetaData.statistics: invalid encoded value: truncated varint at offset 1"),
        ("ColumnMetaData", {"statistics": b"\x00\x00"},
         "ColumnMetaData.statistics: invalid encoded value: 1 trailing bytes"),
        ("ColumnMetaData", {"statistics": b""}, "invalid encoded value: truncated input at offset 0"),
        ("FileMetaData", {10: [12, b"\x00"]}, "FileMetaData[10]: expected (ttype, bytes) tuple, got list"),
        ("FileMetaData", {10: (13, b"\x00")}, "FileMetaData[10]: bad ttype 13"),
        ("FileMetaData", {10: (True, b"")}, "FileMetaData[10]: expected int ttype, got bool"),
        ("FileMetaData", {10: (1, b"\x01")}, "FileMetaData[10]: a bool field has no encoded value bytes"),
        ("FileMetaData", {10: (8, "x")}, "FileMetaData[10]: expected bytes-like encoded value, got str"),
        ("FileMetaData", {10: (12, b"\x1c" * 70 + b"\x00" * 71)},
         "FileMetaData[10]: invalid encoded value: nesting too deep"),
        ("FileMetaData", [], "FileMetaData: expected dict, got list"),
        ("FileMetaData", {"encryption_algorithm": {"AES_GCM_V1": {"supply_aad_prefix": None}}},
         "AesGcmV1.supply_aad_prefix: expected bool, got NoneType"),
        ("ColumnChunk", {"meta_data": {"key_value_metadata": [{"key": b"k", "value": bytearray(b"v")}, {"key": "k"}]}},
         "KeyValue.key: expected bytes-like, got str"),
        ("FileMetaData", {"created_by": memoryview(b"abcd")[::2]},
         "FileMetaData.created_by: expected bytes-like, got memoryview"),
        ("FileMetaData", {"key_value_metadata": [{"key": b"k"}], "row_groups": [{"columns": [{"meta_data": []}]}]},
         "ColumnChunk.meta_data: expected dict, got list"),
    ]
    for name, obj, msg in cases:
        got = _enc_err(name, obj)
        assert msg in got, (msg, got)
    # a dict that contains itself under a wrong name fails on the name, not by recursion
    loop = {}
    loop["encryption_algorithm"] = {"AES_GCM_V1": loop}
    assert "AesGcmV1: unknown field name 'encryption_algorithm'" in _enc_err("FileMetaData", loop)


def test_encode_depth_bound():
    defs = [("N", [(1, "next", STRUCT, 0, "N", False), (2, "xs", LIST, STRUCT, "N", False)])]
    codecs = [PyCodec(defs), _thrift.Codec(defs)]
    cyc = {}
    cyc["next"] = cyc
    lcyc = {"xs": []}
    lcyc["xs"].append(lcyc)
    ok = {}
    cur = ok
    for _ in range(63):
        cur["next"] = {}
        cur = cur["next"]
    msgs = []
    for codec in codecs:
        with pytest.raises(T.EncodeError, match="nesting too deep") as e1:
            codec.encode("N", cyc)
        with pytest.raises(T.EncodeError, match="nesting too deep") as e2:
            codec.encode("N", lcyc)
        out = codec.encode("N", ok)                    # 64 nested structs: the bound itself
        assert codec.decode("N", out) == (ok, len(out))
        deeper = {"next": ok}
        with pytest.raises(T.EncodeError, match="nesting too deep"):
            codec.encode("N", deeper)
        with pytest.raises(T.DecodeError, match="nesting too deep"):
            codec.decode("N", b"\x1c" + out)
        msgs.append((str(e1.value), str(e2.value)))
    assert len(set(msgs)) == 1


def test_encode_accepts_bytes_like_and_tuples():
    obj = {"key": bytearray(b"k"), "value": memoryview(b"xvx")[1:2]}
    for codec in (C, PY):
        assert codec.encode("KeyValue", obj) == b"\x18\x01k\x18\x01v\x00"
        assert codec.encode("ColumnMetaData", {"encodings": (0, 3)}) == b"\x29\x25\x00\x06\x00"
        assert codec.encode("FileMetaData", {10: (1, b""), 3: (2, bytearray())}) == b"\x32\x71\x00"
        # long-form list header, long-form and negative field ids
        big = {"encodings": list(range(20))}
        out = codec.encode("ColumnMetaData", big)
        assert out[:3] == b"\x29\xf5\x14" and codec.decode("ColumnMetaData", out)[0] == big
        assert codec.encode("FileMetaData", {-1: (5, b"\x02"), 100: (5, b"\x02")}) == \
            b"\x05\x01\x02\x05\xc8\x01\x02\x00"


def test_schema_compile_errors():
    bad = [
        [("S", [(1, "a", 2, 0, None, False)])],                    # ttype 2 is not a schema type
        [("S", [(1, "a", 1, 0, None, True)])],                     # raw bool
        [("S", [(1, "a", 11, 0, None, False)])],                   # non-raw map
        [("S", [(1, "a", 9, 9, None, False)])],                    # list<list> needs raw
        [("S", [(1, "a", 12, 0, "Missing", False)])],              # unknown struct
        [("S", [(1, "a", 12, 0, None, False)])],                   # struct name required
        [("S", [(1, "a", 5, 5, None, False)])],                    # elem type on a scalar
        [("S", [(1, "a", 5, 0, None, False), (1, "b", 5, 0, None, False)])],
        [("S", [(1, "a", 5, 0, None, False), (2, "a", 5, 0, None, False)])],
        [("S", []), ("S", [])],
        [("S", [(40000, "a", 5, 0, None, False)])],
        [("S", [(i, f"f{i}", 5, 0, None, False) for i in range(65)])],
    ]
    for defs in bad:
        with pytest.raises(ValueError, match="bad schema"):
            PyCodec(defs)
        with pytest.raises(ValueError, match="bad schema"):
            _thrift.Codec(defs)


# --------------------------------------------------------------------------- Hypothesis

STRUCTS = {name: fields for name, fields in T.SCHEMA}
_INT_BOUNDS = {BYTE: 7, I16: 15, I32: 31, I64: 63}
_SCALARS = [BOOL, BYTE, I16, I32, I64, DOUBLE, BINARY]


def _int_st(t):
    b = _INT_BOUNDS[t]
    return st.integers(-(1 << b), (1 << b) - 1)


@st.composite
def g_values(draw, t, depth):
    """A generic wire value of type t for g_value()."""
    if t == BOOL:
        return draw(st.booleans())
    if t in _INT_BOUNDS:
        return draw(_int_st(t))
    if t == DOUBLE:
        return draw(st.floats(allow_nan=False))
    if t == BINARY:
        return draw(st.binary(max_size=12))
    if depth >= 4:                  # keep trees small: minimal containers
        return {LIST: (BYTE, [1]), SET: (BYTE, []), MAP: (0, 0, []), STRUCT: []}[t]
    if t in (LIST, SET):
        et = draw(st.sampled_from(_SCALARS + [LIST, STRUCT, MAP]))
        return et, draw(st.lists(g_values(et, depth + 1), max_size=3 if et >= LIST else 17))
    if t == MAP:
        kt = draw(st.sampled_from(_SCALARS))
        vt = draw(st.sampled_from(_SCALARS + [STRUCT, LIST]))
        return kt, vt, draw(st.lists(st.tuples(g_values(kt, depth + 1), g_values(vt, depth + 1)), max_size=3))
    return draw(g_structs(depth + 1))


@st.composite
def g_structs(draw, depth=1):
    """A generic struct with ascending, unique field ids (canonical encoding)."""
    fids = sorted(draw(st.sets(st.integers(-40, 40) | st.integers(-32768, 32767), max_size=5 if depth < 3 else 2)))
    return [(fid, t, draw(g_values(t, depth))) for fid in fids
            for t in [draw(st.sampled_from(_SCALARS + ([LIST, SET, MAP, STRUCT] if depth < 4 else [])))]]


def _wire_matches(f, t, v):
    fid, name, ttype, etype, sub, raw = f
    same = ttype == t or (ttype == BOOL and t == BOOL_FALSE)
    if same and ttype in (LIST, SET) and not raw:
        same = v[0] == etype
    return same


@st.composite
def objects(draw, name, depth=1):
    """A schema-conforming dict for struct `name`, with raw and unknown fields."""
    obj = {}
    for f in STRUCTS[name]:
        fid, fname, ttype, etype, sub, raw = f
        if not draw(st.booleans()):
            continue
        if raw:
            v = draw(g_values(ttype, depth + 1))
            obj[fname] = g_value(ttype, v)
        elif ttype == BOOL:
            obj[fname] = draw(st.booleans())
        elif ttype in _INT_BOUNDS:
            obj[fname] = draw(_int_st(ttype))
        elif ttype == BINARY:
            obj[fname] = draw(st.binary(max_size=10))
        elif ttype == STRUCT:
            obj[fname] = draw(objects(sub, depth + 1))
        elif etype == STRUCT:
            obj[fname] = draw(st.lists(objects(sub, depth + 2), max_size=2))
        elif etype in _INT_BOUNDS:
            obj[fname] = draw(st.lists(_int_st(etype), max_size=16))
        else:
            obj[fname] = draw(st.lists(st.binary(max_size=4), max_size=3))
    known = {f[0]: f for f in STRUCTS[name]}
    for fid in draw(st.sets(st.integers(-20, 40), max_size=2)):
        t = draw(st.sampled_from(_SCALARS + [LIST, SET, MAP, STRUCT]))
        v = draw(g_values(t, depth + 1))
        if fid in known and (_wire_matches(known[fid], t, v) or known[fid][1] in obj):
            continue
        obj[fid] = (BOOL if v else BOOL_FALSE, b"") if t == BOOL else (t, g_value(t, v))
    return obj


_HSET = settings(suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@_HSET
@given(st.data())
def test_random_objects_roundtrip(data):
    name = data.draw(st.sampled_from(sorted(STRUCTS)))
    obj = data.draw(objects(name))
    out = PY.encode(name, obj)
    assert C.encode(name, obj) == out
    res = decode_both(name, out)
    assert res == ("ok", (obj, len(out)))
    assert PY.encode(name, res[1][0]) == out


@_HSET
@given(st.sampled_from(sorted(STRUCTS)), g_structs())
def test_random_wire_trees_roundtrip(name, tree):
    """Any canonical encoding decodes (both codecs agree) and re-encodes byte-identically."""
    buf = g_struct(tree)
    res = decode_both(name, buf)
    assert res[0] == "ok", res
    obj, end = res[1]
    assert end == len(buf)
    assert PY.encode(name, obj) == buf
    assert C.encode(name, obj) == buf


@_HSET
@given(st.sampled_from(sorted(STRUCTS)), g_structs(),
       st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), max_size=4), st.integers(0, 10**6))
def test_random_mutations_agree(name, tree, edits, cut):
    buf = bytearray(g_struct(tree))
    for pos, val in edits:
        buf[pos % len(buf)] = val
    buf = bytes(buf[: max(1, cut % (len(buf) + 1))]) if cut % 3 == 0 else bytes(buf)
    res = decode_both(name, buf)
    if res[0] == "ok":
        obj = res[1][0]
        out = PY.encode(name, obj)
        assert C.encode(name, obj) == out
        assert decode_both(name, out) == ("ok", (obj, len(out)))


@_HSET
@given(st.sampled_from(sorted(STRUCTS)), st.binary(max_size=200))
def test_random_bytes_agree(name, buf):
    decode_both(name, buf)


# --------------------------------------------------------------------------- size limits (Arrow's)
# Arrow's ReaderProperties: thrift string size limit 100,000,000 bytes, container size limit
# 1,000,000 elements, applied to every value read or skipped. Beyond them, a decode call
# builds at most OBJECT_BUDGET_BASE + consumed / BYTES_PER_OBJECT structs and unknown fields.

def test_limits_are_arrows():
    assert (T.STRING_SIZE_LIMIT, T.CONTAINER_SIZE_LIMIT) == (100_000_000, 1_000_000)
    assert (_thrift.STRING_SIZE_LIMIT, _thrift.CONTAINER_SIZE_LIMIT) == (T.STRING_SIZE_LIMIT, T.CONTAINER_SIZE_LIMIT)
    assert (_thrift.OBJECT_BUDGET_BASE, _thrift.BYTES_PER_OBJECT) == (T.OBJECT_BUDGET_BASE, T.BYTES_PER_OBJECT)


def _list_header(et, n):
    return bytes([0xF0 | et]) + g_varint(n)


# FileMetaData: version 1, schema [root], num_rows 0, then field 4 (row_groups) at offset 15
FMD_HEAD = b"\x15\x02" + b"\x19\x1c" + b"\x48\x06schema\x00" + b"\x16\x00" + b"\x19"


def test_container_limit_known_list():
    lim = T.CONTAINER_SIZE_LIMIT
    # ColumnMetaData.encodings, list<i32> of zeros: one byte per element
    at_limit = b"\x29" + _list_header(I32, lim) + b"\x00" * lim + b"\x00"
    res = decode_both("ColumnMetaData", at_limit)
    assert res[0] == "ok" and len(res[1][0]["encodings"]) == lim
    over = b"\x29" + _list_header(I32, lim + 1) + b"\x00" * (lim + 1) + b"\x00"
    res = decode_both("ColumnMetaData", over)
    assert res[:2] == ("err", "DecodeError")
    assert res[2] == "ColumnMetaData.encodings: list size 1000001 exceeds the container size limit 1000000 at offset 1"


def test_container_limit_in_list_of_structs_names_the_field():
    n = T.CONTAINER_SIZE_LIMIT + 1
    buf = FMD_HEAD + _list_header(STRUCT, n) + b"\x00" * n + b"\x00"
    res = decode_both("FileMetaData", buf)
    assert res[2] == ("FileMetaData.row_groups: list size 1000001 exceeds the container size limit 1000000 "
                      "at offset 16")


def test_container_limit_in_skipped_values():
    n = T.CONTAINER_SIZE_LIMIT + 1
    # unknown field 10 of FileMetaData: a list<byte>, skipped without building it
    unknown = b"\xa9" + _list_header(BYTE, n) + b"\x00" * n + b"\x00"
    res = decode_both("FileMetaData", unknown)
    assert res[2] == "FileMetaData[10]: list size 1000001 exceeds the container size limit 1000000 at offset 1"
    # a raw field (ColumnMetaData.statistics) holding a map nested in a struct
    raw = b"\xcc" + b"\x1b" + g_varint(n) + b"\x33" + b"\x00" * (2 * n) + b"\x00" + b"\x00"
    res = decode_both("ColumnMetaData", raw)
    assert res[2] == ("ColumnMetaData.statistics: map size 1000001 exceeds the container size limit 1000000 "
                      "at offset 2")
    # a known id with another wire type is kept as unknown: named by its id
    mism = b"\x69" + _list_header(BYTE, n) + b"\x00" * n + b"\x00"
    res = decode_both("FileMetaData", mism)
    assert res[2] == "FileMetaData[6]: list size 1000001 exceeds the container size limit 1000000 at offset 1"


def test_string_limit():
    lim = T.STRING_SIZE_LIMIT
    over = b"\x68" + g_varint(lim + 1) + bytes(lim + 1) + b"\x00"
    res = decode_both("FileMetaData", over)
    assert res[2] == ("FileMetaData.created_by: binary length 100000001 exceeds the string size limit 100000000"
                      " at offset 1")
    del over
    exact = b"\x68" + g_varint(lim) + bytes(lim) + b"\x00"
    for codec in (C, PY):
        obj, end = codec.decode("FileMetaData", exact)
        assert len(obj["created_by"]) == lim and end == len(exact)
        del obj
        assert codec.skip("FileMetaData", exact) == len(exact)


def test_encode_respects_the_limits():
    lim = T.CONTAINER_SIZE_LIMIT
    for codec in (C, PY):
        out = codec.encode("ColumnMetaData", {"encodings": [0] * lim})
        assert codec.decode("ColumnMetaData", out)[0] == {"encodings": [0] * lim}
    msg = _enc_err("ColumnMetaData", {"encodings": [0] * (lim + 1)})
    assert msg == "ColumnMetaData.encodings: list of 1000001 elements exceeds the container size limit 1000000"
    big = bytes(T.STRING_SIZE_LIMIT + 1)
    msg = _enc_err("KeyValue", {"key": b"k", "value": big})
    assert msg == "KeyValue.value: binary value of 100000001 bytes exceeds the string size limit 100000000"
    del big
    # a raw value breaking a limit is not a valid encoded value
    msg = _enc_err("FileMetaData", {10: (LIST, _list_header(BYTE, lim + 1) + bytes(lim + 1))})
    assert msg == ("FileMetaData[10]: invalid encoded value: list size 1000001 exceeds the container size limit "
                   "1000000 at offset 0")


def _empty_struct_lists(n_lists, per_list):
    """FileMetaData whose row groups hold many empty ColumnChunks (each list under the limit)."""
    rg = b"\x19" + _list_header(STRUCT, per_list) + b"\x00" * per_list + b"\x00"
    return FMD_HEAD + _list_header(STRUCT, n_lists) + rg * n_lists + b"\x00"


def _unknown_bool_fields(n_structs):
    """FileMetaData whose row groups each carry 32,668 unknown bool fields (1 byte each)."""
    rg = b"\x01" + g_varint(g_zz(100)) + b"\x11" * 32667 + b"\x00"
    return FMD_HEAD + _list_header(STRUCT, n_structs) + rg * n_structs + b"\x00"


def test_object_budget():
    base, per = T.OBJECT_BUDGET_BASE, T.BYTES_PER_OBJECT
    # many empty structs spread over lists that each stay under the container limit
    res = decode_both("FileMetaData", _empty_struct_lists(2, base))
    assert res[:2] == ("err", "DecodeError")
    assert res[2].startswith("RowGroup.columns: ")
    assert "structs and unknown fields in " in res[2]
    assert res[2].split(" at offset")[0].endswith(f"exceed the object budget ({base} + 1 per {per} bytes)")
    objects, consumed = int(res[2].split()[1]), int(res[2].split()[7])
    assert objects == base + consumed // per + 1
    # unknown fields count too
    res = decode_both("FileMetaData", _unknown_bool_fields(40))
    assert res[:2] == ("err", "DecodeError") and "exceed the object budget" in res[2]
    assert res[2].startswith("RowGroup[")
    # under the budget: both decode, and real footers use far more than 8 bytes per struct
    n = base * 4 // 10
    res = decode_both("FileMetaData", _empty_struct_lists(2, n))
    assert res[0] == "ok" and len(res[1][0]["row_groups"][1]["columns"]) == n


_INSPECT_CHILD = textwrap.dedent("""
    import json, resource, sys
    import pqseal
    from pqseal.errors import MalformedFile
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    try:
        pqseal.inspect(sys.argv[1])
        out = {"error": None}
    except Exception as e:
        out = {"error": type(e).__name__, "malformed": isinstance(e, MalformedFile), "message": str(e)}
    out["growth_kib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    print(json.dumps(out))
""")


@pytest.mark.parametrize("shape", ["10M_row_groups", "10x1M_column_chunks", "unknown_fields"])
def test_inspect_footer_amplification_bounded(tmp_path, shape):
    """A ~10 MB footer of empty structs or 1-byte unknown fields: inspect (no keys) fails
    cleanly with MalformedFile naming the limit, and the process grows by far less than the
    ~750 MB to 2.6 GB such footers used to cost (peak RSS is a memory bound, not a timing)."""
    if shape == "10M_row_groups":
        n = 10_000_000
        footer = FMD_HEAD + _list_header(STRUCT, n) + b"\x00" * n + b"\x00"
        want = "FileMetaData.row_groups: list size 10000000 exceeds the container size limit 1000000"
    elif shape == "10x1M_column_chunks":
        footer = _empty_struct_lists(10, 1_000_000)
        want = "exceed the object budget"
    else:
        footer = _unknown_bool_fields(310)
        want = "exceed the object budget"
    assert len(footer) > 10_000_000
    p = tmp_path / f"{shape}.parquet"
    p.write_bytes(b"PAR1" + footer + struct.pack("<I", len(footer)) + b"PAR1")
    r = subprocess.run([sys.executable, "-c", _INSPECT_CHILD, os.fspath(p)], capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["error"] == "MalformedFile" and out["malformed"], out
    assert want in out["message"], out
    assert out["growth_kib"] < 250 * 1024, out
