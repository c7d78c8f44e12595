"""Parquet Thrift structures, compact protocol, schema-directed, lossless and bounded.

Decoding gives plain Python objects::

    obj, end = decode("FileMetaData", buf, offset)   # buf: any contiguous buffer
    buf2 = encode("FileMetaData", obj)               # == buf[offset:end] if obj is unmodified
    end = skip("PageHeader", buf, offset)            # validate and find the end, no objects

Representation of a struct: a ``dict``.

* A known field (its id is in the schema below *and* its wire type, and for lists the wire
  element type, matches) is ``obj[name]``: bool -> ``bool``, byte/i16/i32/i64/enum -> ``int``,
  double -> ``float``, binary/string -> ``bytes``, list/set -> ``list``, struct/union ->
  ``dict``. Unions are dicts with (normally) one field set.
* A *raw* known field (marked RAW below: values pqseal never looks inside, e.g. Statistics)
  is ``obj[name] = bytes``: the encoded value, everything after the field header.
* Any other field (an id the schema does not know, or a known id whose wire type differs
  from the schema; nothing is coerced) is ``obj[fid] = (wire_ttype, bytes)`` with the
  encoded value (empty bytes for bool fields, whose value is the ttype: 1 true, 2 false).

``encode`` writes the fields in ascending field-id order (names and int keys merged) with
short-form field headers when the id delta is 1..15, so decode -> encode is byte-identical
for writers that emit ascending ids in canonical form (Parquet writers do). Raw and unknown
values are re-emitted verbatim after checking they are exactly one well-formed value.

Bounds (enforced by the C extension ``pqseal._thrift``): at most ``MAX_DEPTH`` (64)
nested containers; every length and count is checked against the remaining input before
anything is allocated; varints are at most 10 bytes and fit 64 bits, i16/i32 varints fit
their width, lengths/counts fit a non-negative i32, field ids fit i16, a struct may not
repeat a field id. As in Apache Arrow's Parquet reader (its default thrift string and
container size limits), a binary value is at most ``STRING_SIZE_LIMIT`` (100,000,000)
bytes and a list, set or map at most ``CONTAINER_SIZE_LIMIT`` (1,000,000) elements,
whether decoded or skipped (encode refuses the same); the error names the limit and the
field. One decode call also builds at most ``OBJECT_BUDGET_BASE`` + (bytes consumed) /
``BYTES_PER_OBJECT`` structs and unknown fields, so a footer of empty structs spread over
many lists cannot cost ~100 times its size in memory (real footers use tens of bytes per
struct). Malformed input raises ``DecodeError`` (a ``ValueError``) whose message ends
with the byte offset; values that do not fit the schema raise ``EncodeError`` (a
``ValueError``) naming the struct and field.

The tests check the C codec against an independent pure-Python twin (tests/thrift_oracle.py).

Schema: apache/parquet-format ``parquet.thrift`` @ 24102ed.
"""

from __future__ import annotations

from .. import _thrift

__all__ = [
    "decode", "encode", "skip", "codec", "DecodeError", "EncodeError", "SCHEMA", "MAX_DEPTH",
    "STRING_SIZE_LIMIT", "CONTAINER_SIZE_LIMIT", "OBJECT_BUDGET_BASE", "BYTES_PER_OBJECT",
    "BOOL", "BYTE", "I16", "I32", "I64", "DOUBLE", "BINARY", "LIST", "SET", "MAP", "STRUCT",
]

# compact protocol type ids (a bool field's value is its type: 1 true, 2 false)
BOOL, BOOL_FALSE, BYTE, I16, I32, I64, DOUBLE, BINARY, LIST, SET, MAP, STRUCT = range(1, 13)

DecodeError = _thrift.DecodeError
EncodeError = _thrift.EncodeError
MAX_DEPTH = _thrift.MAX_DEPTH
STRING_SIZE_LIMIT = _thrift.STRING_SIZE_LIMIT
CONTAINER_SIZE_LIMIT = _thrift.CONTAINER_SIZE_LIMIT
OBJECT_BUDGET_BASE = _thrift.OBJECT_BUDGET_BASE
BYTES_PER_OBJECT = _thrift.BYTES_PER_OBJECT


# --------------------------------------------------------------------------- schema

RAW = True


def _f(fid, name, ttype, elem=0, sub=None, raw=False):
    return (fid, name, ttype, elem, sub, raw)


_AES_FIELDS = [
    _f(1, "aad_prefix", BINARY),
    _f(2, "aad_file_unique", BINARY),
    _f(3, "supply_aad_prefix", BOOL),
]

#: (struct_name, [(fid, name, ttype, elem_ttype, sub, raw), ...]) from parquet.thrift.
#: Enums are i32. RAW fields keep their encoded bytes (pqseal only copies them).
SCHEMA = [
    ("FileMetaData", [
        _f(1, "version", I32),
        _f(2, "schema", LIST, STRUCT, "SchemaElement"),
        _f(3, "num_rows", I64),
        _f(4, "row_groups", LIST, STRUCT, "RowGroup"),
        _f(5, "key_value_metadata", LIST, STRUCT, "KeyValue"),
        _f(6, "created_by", BINARY),
        _f(7, "column_orders", LIST, STRUCT, raw=RAW),           # list<ColumnOrder>
        _f(8, "encryption_algorithm", STRUCT, sub="EncryptionAlgorithm"),
        _f(9, "footer_signing_key_metadata", BINARY),
    ]),
    ("SchemaElement", [
        _f(1, "type", I32),
        _f(2, "type_length", I32),
        _f(3, "repetition_type", I32),
        _f(4, "name", BINARY),
        _f(5, "num_children", I32),
        _f(6, "converted_type", I32),
        _f(7, "scale", I32),
        _f(8, "precision", I32),
        _f(9, "field_id", I32),
        _f(10, "logicalType", STRUCT, raw=RAW),                   # LogicalType (union)
    ]),
    ("KeyValue", [
        _f(1, "key", BINARY),
        _f(2, "value", BINARY),
    ]),
    ("RowGroup", [
        _f(1, "columns", LIST, STRUCT, "ColumnChunk"),
        _f(2, "total_byte_size", I64),
        _f(3, "num_rows", I64),
        _f(4, "sorting_columns", LIST, STRUCT, raw=RAW),          # list<SortingColumn>
        _f(5, "file_offset", I64),
        _f(6, "total_compressed_size", I64),
        _f(7, "ordinal", I16),
    ]),
    ("ColumnChunk", [
        _f(1, "file_path", BINARY),
        _f(2, "file_offset", I64),
        _f(3, "meta_data", STRUCT, sub="ColumnMetaData"),
        _f(4, "offset_index_offset", I64),
        _f(5, "offset_index_length", I32),
        _f(6, "column_index_offset", I64),
        _f(7, "column_index_length", I32),
        _f(8, "crypto_metadata", STRUCT, sub="ColumnCryptoMetaData"),
        _f(9, "encrypted_column_metadata", BINARY),
    ]),
    ("ColumnMetaData", [
        _f(1, "type", I32),
        _f(2, "encodings", LIST, I32),
        _f(3, "path_in_schema", LIST, BINARY),
        _f(4, "codec", I32),
        _f(5, "num_values", I64),
        _f(6, "total_uncompressed_size", I64),
        _f(7, "total_compressed_size", I64),
        _f(8, "key_value_metadata", LIST, STRUCT, "KeyValue"),
        _f(9, "data_page_offset", I64),
        _f(10, "index_page_offset", I64),
        _f(11, "dictionary_page_offset", I64),
        _f(12, "statistics", STRUCT, raw=RAW),                    # Statistics
        _f(13, "encoding_stats", LIST, STRUCT, raw=RAW),          # list<PageEncodingStats>
        _f(14, "bloom_filter_offset", I64),
        _f(15, "bloom_filter_length", I32),
        _f(16, "size_statistics", STRUCT, raw=RAW),               # SizeStatistics
        _f(17, "geospatial_statistics", STRUCT, raw=RAW),         # GeospatialStatistics
    ]),
    ("EncryptionWithFooterKey", []),
    ("EncryptionWithColumnKey", [
        _f(1, "path_in_schema", LIST, BINARY),
        _f(2, "key_metadata", BINARY),
    ]),
    ("ColumnCryptoMetaData", [                                    # union
        _f(1, "ENCRYPTION_WITH_FOOTER_KEY", STRUCT, sub="EncryptionWithFooterKey"),
        _f(2, "ENCRYPTION_WITH_COLUMN_KEY", STRUCT, sub="EncryptionWithColumnKey"),
    ]),
    ("FileCryptoMetaData", [
        _f(1, "encryption_algorithm", STRUCT, sub="EncryptionAlgorithm"),
        _f(2, "key_metadata", BINARY),
    ]),
    ("EncryptionAlgorithm", [                                     # union
        _f(1, "AES_GCM_V1", STRUCT, sub="AesGcmV1"),
        _f(2, "AES_GCM_CTR_V1", STRUCT, sub="AesGcmCtrV1"),
    ]),
    ("AesGcmV1", list(_AES_FIELDS)),
    ("AesGcmCtrV1", list(_AES_FIELDS)),
    ("PageHeader", [
        _f(1, "type", I32),
        _f(2, "uncompressed_page_size", I32),
        _f(3, "compressed_page_size", I32),
        _f(4, "crc", I32),
        _f(5, "data_page_header", STRUCT, sub="DataPageHeader"),
        _f(6, "index_page_header", STRUCT, raw=RAW),              # IndexPageHeader
        _f(7, "dictionary_page_header", STRUCT, sub="DictionaryPageHeader"),
        _f(8, "data_page_header_v2", STRUCT, sub="DataPageHeaderV2"),
    ]),
    ("DataPageHeader", [
        _f(1, "num_values", I32),
        _f(2, "encoding", I32),
        _f(3, "definition_level_encoding", I32),
        _f(4, "repetition_level_encoding", I32),
        _f(5, "statistics", STRUCT, raw=RAW),
    ]),
    ("DictionaryPageHeader", [
        _f(1, "num_values", I32),
        _f(2, "encoding", I32),
        _f(3, "is_sorted", BOOL),
    ]),
    ("DataPageHeaderV2", [
        _f(1, "num_values", I32),
        _f(2, "num_nulls", I32),
        _f(3, "num_rows", I32),
        _f(4, "encoding", I32),
        _f(5, "definition_levels_byte_length", I32),
        _f(6, "repetition_levels_byte_length", I32),
        _f(7, "is_compressed", BOOL),
        _f(8, "statistics", STRUCT, raw=RAW),
    ]),
    ("OffsetIndex", [
        _f(1, "page_locations", LIST, STRUCT, "PageLocation"),
        _f(2, "unencoded_byte_array_data_bytes", LIST, I64, raw=RAW),
    ]),
    ("PageLocation", [
        _f(1, "offset", I64),
        _f(2, "compressed_page_size", I32),
        _f(3, "first_row_index", I64),
    ]),
    ("ColumnIndex", [                                             # only copied: all raw
        _f(1, "null_pages", LIST, BOOL, raw=RAW),
        _f(2, "min_values", LIST, BINARY, raw=RAW),
        _f(3, "max_values", LIST, BINARY, raw=RAW),
        _f(4, "boundary_order", I32, raw=RAW),
        _f(5, "null_counts", LIST, I64, raw=RAW),
        _f(6, "repetition_level_histograms", LIST, I64, raw=RAW),
        _f(7, "definition_level_histograms", LIST, I64, raw=RAW),
        _f(8, "nan_counts", LIST, I64, raw=RAW),
    ]),
    ("BloomFilterHeader", [
        _f(1, "numBytes", I32),
        _f(2, "algorithm", STRUCT, raw=RAW),                      # BloomFilterAlgorithm
        _f(3, "hash", STRUCT, raw=RAW),                           # BloomFilterHash
        _f(4, "compression", STRUCT, raw=RAW),                    # BloomFilterCompression
    ]),
]


codec = _thrift.Codec(SCHEMA)
decode = codec.decode
encode = codec.encode
skip = codec.skip
