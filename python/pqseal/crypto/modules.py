"""PME module types and module AADs (parquet-format Encryption.md §4.4.2)."""

from __future__ import annotations

import enum
import struct

from ..errors import InvalidOrdinal

MAX_ORDINAL = 32767


class ModuleType(enum.IntEnum):
    FOOTER = 0
    COLUMN_META_DATA = 1
    DATA_PAGE = 2
    DICTIONARY_PAGE = 3
    DATA_PAGE_HEADER = 4
    DICTIONARY_PAGE_HEADER = 5
    COLUMN_INDEX = 6
    OFFSET_INDEX = 7
    BLOOM_FILTER_HEADER = 8
    BLOOM_FILTER_BITSET = 9

    @property
    def has_page_ordinal(self) -> bool:
        return self in (ModuleType.DATA_PAGE, ModuleType.DATA_PAGE_HEADER)

    @property
    def has_ordinals(self) -> bool:
        return self is not ModuleType.FOOTER


def check_ordinal(name: str, value: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise InvalidOrdinal(f"{name} ordinal must be an int, got {type(value).__name__}")
    if not 0 <= value <= MAX_ORDINAL:
        raise InvalidOrdinal(f"{name} ordinal {value} outside 0..{MAX_ORDINAL} (PME ordinals are int16)")
    return value


def module_aad(file_aad: bytes, module_type: ModuleType | int, row_group: int | None = None,
               column: int | None = None, page: int | None = None) -> bytes:
    """The AAD of one module: ``file_aad ‖ type ‖ rg ‖ col ‖ page`` (int16 LE), trailing
    parts omitted as the module type requires. The native core builds the same bytes
    itself for batches; this is the reference and the convenience for single modules."""
    mt = ModuleType(module_type)
    out = bytes(file_aad) + bytes([mt])
    if not mt.has_ordinals:
        return out
    out += struct.pack("<hh", check_ordinal("row group", row_group or 0), check_ordinal("column", column or 0))
    if mt.has_page_ordinal:
        out += struct.pack("<h", check_ordinal("page", page or 0))
    return out
