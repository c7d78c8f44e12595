"""An independent reference for PME modules and files, built on ``cryptography`` only.

Nothing here imports pqseal: the module AAD layout is re-derived from the
parquet-format spec (Encryption.md, "Module AAD") so that a mistake shared by
``pqseal.crypto.module_aad`` and the native AAD builder cannot cancel out, and
:class:`RefFile` reads a whole (PME or plaintext) Parquet file with its own Thrift
compact decoder, so that structural checks of sealed files do not go through pqseal's
``Source``.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

NONCE = 12
TAG = 16
PAGE_TYPES = (2, 4)  # DATA_PAGE, DATA_PAGE_HEADER carry a page ordinal
ALL_TYPES = tuple(range(10))


def ref_module_aad(file_aad: bytes, mtype: int, rg: int = 0, col: int = 0, page: int = 0) -> bytes:
    """file_aad || type(1) [|| rg int16 LE || col int16 LE [|| page int16 LE]]."""
    out = bytes(file_aad) + bytes([mtype])
    if mtype == 0:  # footer: no ordinals
        return out
    out += struct.pack("<hh", rg, col)
    if mtype in PAGE_TYPES:
        out += struct.pack("<h", page)
    return out


def gcm_encrypt_module(key: bytes, pt: bytes, aad: bytes, nonce: bytes | None = None) -> bytes:
    nonce = os.urandom(NONCE) if nonce is None else nonce
    body = nonce + AESGCM(key).encrypt(nonce, bytes(pt), aad)
    return struct.pack("<I", len(body)) + body


def gcm_decrypt_module(key: bytes, module: bytes, aad: bytes) -> bytes:
    module = bytes(module)
    (n,) = struct.unpack_from("<I", module)
    assert n == len(module) - 4, "length prefix"
    return AESGCM(key).decrypt(module[4:4 + NONCE], module[4 + NONCE:], aad)


def ctr_keystream_xor(key: bytes, nonce: bytes, data: bytes) -> bytes:
    c = Cipher(algorithms.AES(key), modes.CTR(nonce + b"\x00\x00\x00\x01")).encryptor()
    return c.update(bytes(data)) + c.finalize()


def ctr_encrypt_module(key: bytes, pt: bytes, nonce: bytes | None = None) -> bytes:
    nonce = os.urandom(NONCE) if nonce is None else nonce
    body = nonce + ctr_keystream_xor(key, nonce, pt)
    return struct.pack("<I", len(body)) + body


def ctr_decrypt_module(key: bytes, module: bytes) -> bytes:
    module = bytes(module)
    (n,) = struct.unpack_from("<I", module)
    assert n == len(module) - 4, "length prefix"
    return ctr_keystream_xor(key, module[4:4 + NONCE], module[4 + NONCE:])


# --------------------------------------------------------------------------- Thrift compact

# Field names of the parquet.thrift structs the reference reads ({id: (name, struct)}),
# written from parquet-format's parquet.thrift; fields not listed decode under their id.
_S = {
    "FileMetaData": {1: ("version", None), 2: ("schema", "SchemaElement"), 3: ("num_rows", None),
                     4: ("row_groups", "RowGroup"), 5: ("key_value_metadata", "KeyValue"),
                     6: ("created_by", None), 7: ("column_orders", None),
                     8: ("encryption_algorithm", "EncryptionAlgorithm"),
                     9: ("footer_signing_key_metadata", None)},
    "SchemaElement": {1: ("type", None), 2: ("type_length", None), 3: ("repetition_type", None),
                      4: ("name", None), 5: ("num_children", None), 6: ("converted_type", None)},
    "KeyValue": {1: ("key", None), 2: ("value", None)},
    "RowGroup": {1: ("columns", "ColumnChunk"), 2: ("total_byte_size", None), 3: ("num_rows", None),
                 4: ("sorting_columns", None), 5: ("file_offset", None), 6: ("total_compressed_size", None),
                 7: ("ordinal", None)},
    "ColumnChunk": {1: ("file_path", None), 2: ("file_offset", None), 3: ("meta_data", "ColumnMetaData"),
                    4: ("offset_index_offset", None), 5: ("offset_index_length", None),
                    6: ("column_index_offset", None), 7: ("column_index_length", None),
                    8: ("crypto_metadata", "ColumnCryptoMetaData"), 9: ("encrypted_column_metadata", None)},
    "ColumnMetaData": {1: ("type", None), 2: ("encodings", None), 3: ("path_in_schema", None), 4: ("codec", None),
                       5: ("num_values", None), 6: ("total_uncompressed_size", None),
                       7: ("total_compressed_size", None), 8: ("key_value_metadata", "KeyValue"),
                       9: ("data_page_offset", None), 10: ("index_page_offset", None),
                       11: ("dictionary_page_offset", None), 12: ("statistics", None),
                       13: ("encoding_stats", None), 14: ("bloom_filter_offset", None),
                       15: ("bloom_filter_length", None)},
    "ColumnCryptoMetaData": {1: ("ENCRYPTION_WITH_FOOTER_KEY", None),
                             2: ("ENCRYPTION_WITH_COLUMN_KEY", "EncryptionWithColumnKey")},
    "EncryptionWithColumnKey": {1: ("path_in_schema", None), 2: ("key_metadata", None)},
    "EncryptionAlgorithm": {1: ("AES_GCM_V1", "AesGcm"), 2: ("AES_GCM_CTR_V1", "AesGcm")},
    "AesGcm": {1: ("aad_prefix", None), 2: ("aad_file_unique", None), 3: ("supply_aad_prefix", None)},
    "FileCryptoMetaData": {1: ("encryption_algorithm", "EncryptionAlgorithm"), 2: ("key_metadata", None)},
    "PageHeader": {1: ("type", None), 2: ("uncompressed_page_size", None), 3: ("compressed_page_size", None),
                   4: ("crc", None), 5: ("data_page_header", None), 6: ("index_page_header", None),
                   7: ("dictionary_page_header", None), 8: ("data_page_header_v2", "DataPageHeaderV2")},
    "DataPageHeaderV2": {1: ("num_values", None), 2: ("num_nulls", None), 3: ("num_rows", None),
                         4: ("encoding", None), 5: ("definition_levels_byte_length", None),
                         6: ("repetition_levels_byte_length", None), 7: ("is_compressed", None),
                         8: ("statistics", None)},
    "OffsetIndex": {1: ("page_locations", "PageLocation"), 2: ("unencoded_byte_array_data_bytes", None)},
    "PageLocation": {1: ("offset", None), 2: ("compressed_page_size", None), 3: ("first_row_index", None)},
    "BloomFilterHeader": {1: ("numBytes", None), 2: ("algorithm", None), 3: ("hash", None),
                          4: ("compression", None)},
}


def _varint(buf, pos: int) -> tuple[int, int]:
    shift = out = 0
    while True:
        b = buf[pos]
        pos += 1
        out |= (b & 0x7F) << shift
        if not b & 0x80:
            return out, pos
        shift += 7


def _zigzag(n: int) -> int:
    return (n >> 1) ^ -(n & 1)


def _value(buf, pos: int, ttype: int, struct_name: str | None):
    if ttype in (1, 2):                          # bool inside a list: one byte, 1 = true
        return buf[pos] == 1, pos + 1
    if ttype == 3:
        return struct.unpack_from("<b", buf, pos)[0], pos + 1
    if ttype in (4, 5, 6):
        n, pos = _varint(buf, pos)
        return _zigzag(n), pos
    if ttype == 7:
        return struct.unpack_from("<d", buf, pos)[0], pos + 8
    if ttype == 8:
        n, pos = _varint(buf, pos)
        return bytes(buf[pos:pos + n]), pos + n
    if ttype in (9, 10):
        head = buf[pos]
        pos += 1
        n, etype = head >> 4, head & 0x0F
        if n == 15:
            n, pos = _varint(buf, pos)
        out = []
        for _ in range(n):
            v, pos = _value(buf, pos, etype, struct_name)
            out.append(v)
        return out, pos
    if ttype == 11:
        n, pos = _varint(buf, pos)
        if n == 0:
            return {}, pos
        kv = buf[pos]
        pos += 1
        out = {}
        for _ in range(n):
            k, pos = _value(buf, pos, kv >> 4, None)
            out[k], pos = _value(buf, pos, kv & 0x0F, None)
        return out, pos
    if ttype == 12:
        return decode_struct(buf, pos, struct_name)
    raise ValueError(f"unknown compact type {ttype} at {pos}")


def decode_struct(buf, pos: int = 0, name: str | None = None) -> tuple[dict, int]:
    """Decode one Thrift compact-protocol struct: ({field name or id: value}, end)."""
    fields = _S.get(name, {}) if name else {}
    out: dict = {}
    fid = 0
    while True:
        head = buf[pos]
        pos += 1
        if head == 0:
            return out, pos
        delta, ttype = head >> 4, head & 0x0F
        if delta:
            fid += delta
        else:
            n, pos = _varint(buf, pos)
            fid = _zigzag(n)
        fname, sub = fields.get(fid, (fid, None))
        if ttype in (1, 2):
            out[fname] = ttype == 1
        else:
            out[fname], pos = _value(buf, pos, ttype, sub)


# --------------------------------------------------------------------------- PME file reader

FOOTER, COLUMN_META, DATA_PAGE, DICT_PAGE, DATA_PAGE_HEADER, DICT_PAGE_HEADER = range(6)
COLUMN_INDEX, OFFSET_INDEX, BLOOM_HEADER, BLOOM_BITSET = range(6, 10)
DICTIONARY_PAGE_TYPE, DATA_PAGE_V2_TYPE = 2, 3
GCM_OVERHEAD = 4 + NONCE + TAG


class RefKeys:
    """Keys for the reference reader: a footer key, ``{"a.b": key}`` column keys, an
    optional ``retriever(key_metadata, path)`` and a supplied AAD prefix. ``of(obj)``
    copies them from any object with those attributes (e.g. pqseal's DecryptionProperties)."""

    def __init__(self, footer_key=None, column_keys=None, retriever=None, aad_prefix=None):
        self.footer_key = footer_key
        self.column_keys = dict(column_keys or {})
        self.retriever = retriever
        self.aad_prefix = aad_prefix

    @classmethod
    def of(cls, obj) -> "RefKeys | None":
        if obj is None or isinstance(obj, RefKeys):
            return obj
        return cls(obj.footer_key, obj.column_keys, getattr(obj, "key_retriever", None), obj.aad_prefix)

    def footer(self, key_metadata) -> bytes:
        if self.footer_key is None:
            assert self.retriever is not None, "footer key needed"
            return self.retriever(key_metadata, None)
        return self.footer_key

    def column(self, path: str, key_metadata) -> bytes:
        if path not in self.column_keys:
            assert self.retriever is not None, f"key of column {path} needed"
            return self.retriever(key_metadata, path)
        return self.column_keys[path]


@dataclass
class RefModule:
    kind: int
    offset: int          # first byte of the 4-byte length prefix
    length: int          # whole module including the prefix


@dataclass
class RefPage:
    header: dict         # PageHeader, compressed_page_size set to the plaintext body's length
    body: bytes          # plaintext page (V2 level bytes included)
    header_module: RefModule | None
    page_module: RefModule | None
    levels: int = 0      # plaintext V2 level bytes before the page module (parquet-java framing)


@dataclass
class RefColumn:
    rg: int
    col: int
    path: str
    chunk: dict          # ColumnChunk as stored in the footer
    meta: dict           # plaintext ColumnMetaData (decrypted when the footer holds it encrypted)
    encryption: str      # "plaintext", "footer key" or "column key"
    key: bytes | None

    @property
    def start(self) -> int:
        d, first = self.meta.get("dictionary_page_offset"), self.meta["data_page_offset"]
        # a dictionary precedes the data pages; pyarrow writes data_page_offset 0 for a
        # chunk of an empty row group that holds only its dictionary page
        return d if d is not None and d > 0 and (d < first or first <= 0) else first

    @property
    def end(self) -> int:
        return self.start + self.meta["total_compressed_size"]


class RefFile:
    """A Parquet file (plaintext or PME) read by the reference: footer, column metadata,
    pages, indexes and bloom filters, every encrypted module decrypted with ``cryptography``
    and its AAD re-derived from the spec. DuckDB's dialect (no aad_file_unique, no key
    metadata: no AADs, page sizes without framing) is read too."""

    def __init__(self, path, keys=None):
        """``keys``: a :class:`RefKeys` or anything :meth:`RefKeys.of` takes. Without keys an
        encrypted footer is not opened (``fmd`` and ``paths`` are None)."""
        with open(path, "rb") as f:
            self.data = data = f.read()
        self.keys = RefKeys.of(keys)
        self.magic = data[-4:]
        assert data[:4] in (b"PAR1", b"PARE") and self.magic in (b"PAR1", b"PARE"), "not a Parquet file"
        (n,) = struct.unpack_from("<I", data, len(data) - 8)
        self.footer_offset = len(data) - 8 - n
        region = data[self.footer_offset:len(data) - 8]
        self.crypto_meta: dict | None = None
        self.footer_module: RefModule | None = None
        self.footer_signature: bytes | None = None
        if self.magic == b"PARE":
            self.crypto_meta, end = decode_struct(region, 0, "FileCryptoMetaData")
            self.algorithm_union = self.crypto_meta["encryption_algorithm"]
            self.footer_module = RefModule(FOOTER, self.footer_offset + end, len(region) - end)
            self._set_file_aad()
            if self.keys is None:            # without keys: only the plaintext crypto metadata
                self.fmd, self.paths = None, None
                return
            key = self.keys.footer(self.crypto_meta.get("key_metadata"))
            fmd = self._gcm(key, region[end:], FOOTER)
            self.fmd, _ = decode_struct(fmd, 0, "FileMetaData")
        else:
            self.fmd, end = decode_struct(region, 0, "FileMetaData")
            self.algorithm_union = self.fmd.get("encryption_algorithm")
            if self.algorithm_union is not None:
                self._set_file_aad()
                self.footer_signature = region[end:]
                assert len(self.footer_signature) == NONCE + TAG
                if self.keys is not None:
                    nonce, tag = self.footer_signature[:NONCE], self.footer_signature[NONCE:]
                    key = self.keys.footer(self.fmd.get("footer_signing_key_metadata"))
                    want = AESGCM(key).encrypt(nonce, region[:end], ref_module_aad(self.file_aad, FOOTER))[-TAG:]
                    assert want == tag, "footer signature"
            else:
                assert end == len(region), "bytes after a plaintext footer"
        self.paths = self._leaf_paths()

    # ---- file-level crypto ------------------------------------------------------------

    def _set_file_aad(self) -> None:
        ((self.algorithm, params),) = self.algorithm_union.items()
        self.aad_prefix = params.get("aad_prefix")
        self.supply_aad_prefix = params.get("supply_aad_prefix", False)
        self.aad_file_unique = params.get("aad_file_unique")
        self.duckdb = self.aad_file_unique is None and (self.crypto_meta or {}).get("key_metadata") is None
        prefix = self.aad_prefix if self.aad_prefix is not None else (self.keys.aad_prefix if self.keys else None)
        self.file_aad = None if self.duckdb else (prefix or b"") + self.aad_file_unique

    @property
    def encrypted(self) -> bool:
        return self.algorithm_union is not None

    def _aad(self, kind: int, rg: int = 0, col: int = 0, page: int = 0) -> bytes:
        return b"" if self.duckdb else ref_module_aad(self.file_aad, kind, rg, col, page)

    def _gcm(self, key: bytes, module, kind: int, rg: int = 0, col: int = 0, page: int = 0) -> bytes:
        return gcm_decrypt_module(key, module, self._aad(kind, rg, col, page))

    def _module(self, pos: int) -> bytes:
        (n,) = struct.unpack_from("<I", self.data, pos)
        return self.data[pos:pos + 4 + n]

    # ---- schema and columns -------------------------------------------------------------

    def _leaf_paths(self) -> list[str]:
        out, stack = [], []
        for el in self.fmd["schema"][1:]:
            name = el["name"].decode()
            while stack and stack[-1][1] == 0:
                stack.pop()
            if stack:
                stack[-1][1] -= 1
            prefix = [s[0] for s in stack]
            if el.get("num_children"):
                stack.append([name, el["num_children"]])
            else:
                out.append(".".join(prefix + [name]))
        return out

    @property
    def num_row_groups(self) -> int:
        return len(self.fmd.get("row_groups") or [])

    def column(self, rg: int, col: int) -> RefColumn:
        chunk = self.fmd["row_groups"][rg]["columns"][col]
        cm = chunk.get("crypto_metadata")
        path = self.paths[col]
        if cm is None and not (self.encrypted and self.duckdb):
            return RefColumn(rg, col, path, chunk, chunk["meta_data"], "plaintext", None)
        if cm is None or "ENCRYPTION_WITH_FOOTER_KEY" in cm:
            enc = "footer key"
            key = None if self.keys is None else self.keys.footer((self.crypto_meta or {}).get("key_metadata")
                                                                  or self.fmd.get("footer_signing_key_metadata"))
        else:
            enc = "column key"
            ck = cm["ENCRYPTION_WITH_COLUMN_KEY"]
            assert [p.decode() for p in ck["path_in_schema"]] == path.split("."), "crypto metadata path"
            key = None if self.keys is None else self.keys.column(path, ck.get("key_metadata"))
        meta = chunk.get("meta_data")
        if "encrypted_column_metadata" in chunk and key is not None:
            plain = self._gcm(key, chunk["encrypted_column_metadata"], COLUMN_META, rg, col)
            meta, _ = decode_struct(plain, 0, "ColumnMetaData")
        return RefColumn(rg, col, path, chunk, meta, enc, key)

    def columns(self):
        for rg in range(self.num_row_groups):
            for col in range(len(self.paths)):
                yield self.column(rg, col)

    # ---- pages --------------------------------------------------------------------------

    def pages(self, c: RefColumn) -> list[RefPage]:
        """Every page of a column chunk, walked header by header and decrypted."""
        assert c.key is not None or c.encryption == "plaintext", f"no key for column {c.path}"
        data, pos, out, ordinal = self.data, c.start, [], 0
        ctr = self.algorithm == "AES_GCM_CTR_V1" if c.key is not None else False
        while pos < c.end:
            if c.key is None:
                hdr, body_pos = decode_struct(data, pos, "PageHeader")
                size = hdr["compressed_page_size"]
                out.append(RefPage(hdr, data[body_pos:body_pos + size], None, None))
                pos = body_pos + size
                continue
            hmod = RefModule(DATA_PAGE_HEADER, pos, len(self._module(pos)))
            first = not out
            try:
                plain = self._gcm(c.key, self._module(pos), DATA_PAGE_HEADER, c.rg, c.col, ordinal)
            except InvalidTag:
                if not first:
                    raise
                plain = self._gcm(c.key, self._module(pos), DICT_PAGE_HEADER, c.rg, c.col)
                hmod.kind = DICT_PAGE_HEADER
            hdr, _ = decode_struct(plain, 0, "PageHeader")
            if self.duckdb:                      # no AADs: the header says what it is
                hmod.kind = DICT_PAGE_HEADER if hdr["type"] == DICTIONARY_PAGE_TYPE else DATA_PAGE_HEADER
            is_dict = hmod.kind == DICT_PAGE_HEADER
            assert (hdr["type"] == DICTIONARY_PAGE_TYPE) == is_dict, "page header AAD type"
            pos += hmod.length
            size, lev = hdr["compressed_page_size"], 0
            if self.duckdb:
                size = len(self._module(pos))
            elif hdr["type"] == DATA_PAGE_V2_TYPE and struct.unpack_from("<I", data, pos)[0] + 4 != size:
                v2 = hdr["data_page_header_v2"]
                lev = v2.get("definition_levels_byte_length", 0) + v2.get("repetition_levels_byte_length", 0)
            kind = DICT_PAGE if is_dict else DATA_PAGE
            pmod = RefModule(kind, pos + lev, size - lev)
            module = data[pmod.offset:pmod.offset + pmod.length]
            assert struct.unpack_from("<I", module)[0] + 4 == pmod.length, "page module length"
            if ctr:
                body = ctr_decrypt_module(c.key, module)
            else:
                body = self._gcm(c.key, module, kind, c.rg, c.col, 0 if is_dict else ordinal)
            body = data[pos:pos + lev] + body
            hdr["compressed_page_size"] = len(body)
            out.append(RefPage(hdr, body, hmod, pmod, lev))
            pos += size
            ordinal += not is_dict
        assert pos == c.end, f"pages overrun chunk {c.rg}/{c.col}"
        return out

    # ---- indexes and bloom filters -------------------------------------------------------

    def _index(self, c: RefColumn, which: str, kind: int) -> tuple[bytes, RefModule] | None:
        off = c.chunk.get(f"{which}_offset")
        if off is None:
            return None
        raw = self.data[off:off + c.chunk[f"{which}_length"]]
        mod = RefModule(kind, off, len(raw))
        if c.key is None:
            return raw, mod
        return self._gcm(c.key, raw, kind, c.rg, c.col), mod

    def column_index(self, c: RefColumn) -> bytes | None:
        """The ColumnIndex as plaintext Thrift bytes."""
        got = self._index(c, "column_index", COLUMN_INDEX)
        return None if got is None else got[0]

    def offset_index(self, c: RefColumn) -> dict | None:
        got = self._index(c, "offset_index", OFFSET_INDEX)
        return None if got is None else decode_struct(got[0], 0, "OffsetIndex")[0]

    def bloom_filter(self, c: RefColumn) -> tuple[dict, bytes] | None:
        off = c.meta.get("bloom_filter_offset")
        if off is None:
            return None
        if c.key is None:
            hdr, end = decode_struct(self.data, off, "BloomFilterHeader")
            return hdr, self.data[end:end + hdr["numBytes"]]
        hmod = self._module(off)
        hdr, _ = decode_struct(self._gcm(c.key, hmod, BLOOM_HEADER, c.rg, c.col), 0, "BloomFilterHeader")
        bitset = self._gcm(c.key, self._module(off + len(hmod)), BLOOM_BITSET, c.rg, c.col)
        assert len(bitset) == hdr["numBytes"]
        return hdr, bitset

    def index_modules(self, c: RefColumn) -> list[RefModule]:
        """The column index, offset index, bloom filter header and bitset modules of an
        encrypted chunk (those present)."""
        out = []
        for which, kind in (("column_index", COLUMN_INDEX), ("offset_index", OFFSET_INDEX)):
            got = self._index(c, which, kind)
            if got is not None:
                out.append(got[1])
        off = c.meta.get("bloom_filter_offset")
        if off is not None:
            hl = len(self._module(off))
            out += [RefModule(BLOOM_HEADER, off, hl), RefModule(BLOOM_BITSET, off + hl, len(self._module(off + hl)))]
        return out
