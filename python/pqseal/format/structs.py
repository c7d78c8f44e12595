"""The Parquet Thrift structs pqseal reads and writes, as typed dicts (field names of
``parquet.thrift``; the C codec decodes into and encodes from plain dicts of this shape).

Every field is optional here, as the codec keeps whatever a file holds; RAW fields (kept
as their encoded bytes) are ``bytes``. Fields pqseal does not know survive a rewrite
under their integer field ids, which these types do not list. ``tests/test_structs.py``
checks these against the codec's schema."""

from __future__ import annotations

from typing import TypedDict


class FileMetaData(TypedDict, total=False):
    version: int
    schema: list[SchemaElement]
    num_rows: int
    row_groups: list[RowGroup]
    key_value_metadata: list[KeyValue]
    created_by: bytes
    column_orders: bytes
    encryption_algorithm: EncryptionAlgorithm
    footer_signing_key_metadata: bytes


class SchemaElement(TypedDict, total=False):
    type: int
    type_length: int
    repetition_type: int
    name: bytes
    num_children: int
    converted_type: int
    scale: int
    precision: int
    field_id: int
    logicalType: bytes


class KeyValue(TypedDict, total=False):
    key: bytes
    value: bytes


class RowGroup(TypedDict, total=False):
    columns: list[ColumnChunk]
    total_byte_size: int
    num_rows: int
    sorting_columns: bytes
    file_offset: int
    total_compressed_size: int
    ordinal: int


class ColumnChunk(TypedDict, total=False):
    file_path: bytes
    file_offset: int
    meta_data: ColumnMetaData
    offset_index_offset: int
    offset_index_length: int
    column_index_offset: int
    column_index_length: int
    crypto_metadata: ColumnCryptoMetaData
    encrypted_column_metadata: bytes


class ColumnMetaData(TypedDict, total=False):
    type: int
    encodings: list[int]
    path_in_schema: list[bytes]
    codec: int
    num_values: int
    total_uncompressed_size: int
    total_compressed_size: int
    key_value_metadata: list[KeyValue]
    data_page_offset: int
    index_page_offset: int
    dictionary_page_offset: int
    statistics: bytes
    encoding_stats: bytes
    bloom_filter_offset: int
    bloom_filter_length: int
    size_statistics: bytes
    geospatial_statistics: bytes


class EncryptionWithFooterKey(TypedDict, total=False):
    pass


class EncryptionWithColumnKey(TypedDict, total=False):
    path_in_schema: list[bytes]
    key_metadata: bytes


class ColumnCryptoMetaData(TypedDict, total=False):
    ENCRYPTION_WITH_FOOTER_KEY: EncryptionWithFooterKey
    ENCRYPTION_WITH_COLUMN_KEY: EncryptionWithColumnKey


class FileCryptoMetaData(TypedDict, total=False):
    encryption_algorithm: EncryptionAlgorithm
    key_metadata: bytes


class EncryptionAlgorithm(TypedDict, total=False):
    AES_GCM_V1: AesGcmV1
    AES_GCM_CTR_V1: AesGcmCtrV1


class AesGcmV1(TypedDict, total=False):
    aad_prefix: bytes
    aad_file_unique: bytes
    supply_aad_prefix: bool


class AesGcmCtrV1(TypedDict, total=False):
    aad_prefix: bytes
    aad_file_unique: bytes
    supply_aad_prefix: bool


class PageHeader(TypedDict, total=False):
    type: int
    uncompressed_page_size: int
    compressed_page_size: int
    crc: int
    data_page_header: DataPageHeader
    index_page_header: bytes
    dictionary_page_header: DictionaryPageHeader
    data_page_header_v2: DataPageHeaderV2


class DataPageHeader(TypedDict, total=False):
    num_values: int
    encoding: int
    definition_level_encoding: int
    repetition_level_encoding: int
    statistics: bytes


class DictionaryPageHeader(TypedDict, total=False):
    num_values: int
    encoding: int
    is_sorted: bool


class DataPageHeaderV2(TypedDict, total=False):
    num_values: int
    num_nulls: int
    num_rows: int
    encoding: int
    definition_levels_byte_length: int
    repetition_levels_byte_length: int
    is_compressed: bool
    statistics: bytes


class OffsetIndex(TypedDict, total=False):
    page_locations: list[PageLocation]
    unencoded_byte_array_data_bytes: bytes


class PageLocation(TypedDict, total=False):
    offset: int
    compressed_page_size: int
    first_row_index: int


class ColumnIndex(TypedDict, total=False):
    null_pages: bytes
    min_values: bytes
    max_values: bytes
    boundary_order: bytes
    null_counts: bytes
    repetition_level_histograms: bytes
    definition_level_histograms: bytes
    nan_counts: bytes


class BloomFilterHeader(TypedDict, total=False):
    numBytes: int
    algorithm: bytes
    hash: bytes
    compression: bytes

