"""Parquet file layout: magic, footer location, schema leaves, PME footer structures."""

from __future__ import annotations

import struct
from dataclasses import dataclass

from ..errors import MalformedFile

MAGIC = b"PAR1"
MAGIC_ENCRYPTED = b"PARE"
FOOTER_TRAILER = 8           # uint32 LE footer length + magic
SIGNATURE_LEN = 12 + 16      # nonce + tag of a plaintext-footer signature
AAD_FILE_UNIQUE_LEN = 8


class PageType:
    DATA_PAGE = 0
    INDEX_PAGE = 1
    DICTIONARY_PAGE = 2
    DATA_PAGE_V2 = 3


ALGORITHMS = ("AES_GCM_V1", "AES_GCM_CTR_V1")


@dataclass(frozen=True)
class Tail:
    magic: bytes          # b"PAR1" or b"PARE"
    footer_offset: int    # first byte of FileMetaData (PAR1) or FileCryptoMetaData (PARE)
    footer_len: int
    file_size: int

    @property
    def encrypted_footer(self) -> bool:
        return self.magic == MAGIC_ENCRYPTED


def read_tail(head: bytes | memoryview, trailer: bytes | memoryview, size: int, name: str = "file") -> Tail:
    """The file's layout from its first 4 and last 8 bytes (``size``: the file's length)."""
    if size < 4 + FOOTER_TRAILER:
        raise MalformedFile(f"{name}: {size} bytes is too small for a Parquet file")
    head, magic = bytes(head), bytes(trailer[4:])
    if magic not in (MAGIC, MAGIC_ENCRYPTED) or head not in (MAGIC, MAGIC_ENCRYPTED):
        raise MalformedFile(f"{name}: not a Parquet file (magic {head!r} ... {magic!r})")
    if head != magic:
        raise MalformedFile(f"{name}: leading magic {head!r} does not match trailing magic {magic!r}")
    (flen,) = struct.unpack_from("<I", trailer, 0)
    if flen == 0 or flen > size - 4 - FOOTER_TRAILER:
        raise MalformedFile(f"{name}: footer length {flen} does not fit in a {size}-byte file (truncated?)")
    return Tail(magic, size - FOOTER_TRAILER - flen, flen, size)


def leaf_paths(schema: list[dict], name: str = "file") -> list[tuple[str, ...]]:
    """Dotted-path parts of every leaf column, in column order, from the flattened schema."""
    if not schema:
        raise MalformedFile(f"{name}: empty schema")
    paths: list[tuple[str, ...]] = []
    # iterative depth-first walk; each stack entry: (path prefix, children still to read)
    stack: list[tuple[tuple[str, ...], int]] = [((), int(schema[0].get("num_children") or 0))]
    i = 1
    while stack:
        prefix, remaining = stack[-1]
        if remaining == 0:
            stack.pop()
            continue
        stack[-1] = (prefix, remaining - 1)
        if i >= len(schema):
            raise MalformedFile(f"{name}: schema ends early (num_children larger than the element list)")
        el = schema[i]
        i += 1
        raw = el.get("name")
        if not isinstance(raw, (bytes, bytearray)):
            raise MalformedFile(f"{name}: schema element {i - 1} has no name")
        part = bytes(raw).decode("utf-8", "replace")
        kids = int(el.get("num_children") or 0)
        if kids < 0 or len(stack) > 1000:
            raise MalformedFile(f"{name}: schema element {part!r} is malformed")
        if kids:
            stack.append((prefix + (part,), kids))
        else:
            paths.append(prefix + (part,))
    if i != len(schema):
        raise MalformedFile(f"{name}: schema has {len(schema) - i} elements not reachable from the root")
    return paths


def dotted(path) -> str:
    return ".".join(path)
