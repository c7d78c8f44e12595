"""An independent map of a PME file, for mutations that need the keys.

Built from the parquet-format spec with the Thrift oracle codec and the
``cryptography``-only module primitives of ``tests/pme_reference.py``; nothing here
uses pqseal's reader, so the fuzz target does not share its blind spots. :func:`parse`
finds every module (footer, column metadata, page headers, pages, column and offset
indexes, bloom filter header and bitset) with its key and AAD; :func:`reseal` puts a
new plaintext into a metadata module with the real key and a fresh nonce, and
:func:`build_footer` re-encrypts (or re-signs) an edited footer, so an edited size,
offset, count or type reaches pqseal behind tags that verify.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass, field

import harness  # noqa: F401  (sets sys.path)
import oracle
import pme_reference as ref
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

FOOTER, COLUMN_META, DATA_PAGE, DICT_PAGE, DATA_HEADER, DICT_HEADER = 0, 1, 2, 3, 4, 5
COLUMN_INDEX, OFFSET_INDEX, BLOOM_HEADER, BLOOM_BITSET = 6, 7, 8, 9
#: Thrift struct of each metadata module type
STRUCT_OF = {FOOTER: "FileMetaData", COLUMN_META: "ColumnMetaData", DATA_HEADER: "PageHeader",
             DICT_HEADER: "PageHeader", COLUMN_INDEX: "ColumnIndex", OFFSET_INDEX: "OffsetIndex",
             BLOOM_HEADER: "BloomFilterHeader"}


class NotModelled(Exception):
    """The file is outside what this map understands (it only maps the seeds)."""


@dataclass(frozen=True)
class Module:
    kind: int
    rg: int | None
    col: int | None
    page: int | None           # data-page ordinal (AAD) of page headers and pages
    offset: int                # first byte (the length prefix of an encrypted module)
    length: int
    key: bytes | None          # None: a plaintext module of an unencrypted column

    @property
    def struct(self) -> str | None:
        return STRUCT_OF.get(self.kind)


@dataclass
class Model:
    data: bytes
    encrypted_footer: bool
    footer_key: bytes
    file_aad: bytes
    footer_offset: int                     # FileCryptoMetaData (PARE) or FileMetaData (PAR1)
    crypto_md: bytes                       # the encoded FileCryptoMetaData (PARE only)
    fmd: dict
    modules: list[Module] = field(default_factory=list)
    #: (rg, col) -> (column key, ColumnMetaData) for encrypted_column_metadata
    column_meta: dict = field(default_factory=dict)
    algorithm: str = ""                    # AES_GCM_V1 or AES_GCM_CTR_V1

    def aad(self, m: Module) -> bytes:
        return ref.ref_module_aad(self.file_aad, m.kind, m.rg or 0, m.col or 0, m.page or 0)

    def open(self, m: Module) -> bytes:
        """The plaintext of a metadata module."""
        raw = self.data[m.offset:m.offset + m.length]
        return raw if m.key is None else ref.gcm_decrypt_module(m.key, raw, self.aad(m))

    def seal(self, m: Module, plaintext: bytes) -> bytes:
        """``plaintext`` as module ``m`` (a fresh nonce, the real key and AAD)."""
        return plaintext if m.key is None else ref.gcm_encrypt_module(m.key, plaintext, self.aad(m))


def _le32(b: bytes, off: int) -> int:
    return struct.unpack_from("<I", b, off)[0]


def _algorithm(alg: dict) -> bytes:
    (params,) = alg.values()
    return bytes(params.get("aad_prefix") or b"") + bytes(params["aad_file_unique"])


def _decode(name: str, buf: bytes, off: int = 0):
    try:
        return oracle.codec.decode(name, buf, off)
    except ValueError as e:
        raise NotModelled(f"{name}: {e}") from None


def parse(data: bytes, footer_key: bytes, column_keys: dict) -> Model:
    """Map a PME file whose AAD prefix (if any) is stored in it."""
    size = len(data)
    flen = _le32(data, size - 8)
    foff = size - 8 - flen
    if data[-4:] == b"PARE":
        fcm, end = _decode("FileCryptoMetaData", data, foff)
        file_aad = _algorithm(fcm["encryption_algorithm"])
        footer_mod = Module(FOOTER, None, None, None, end, size - 8 - end, footer_key)
        model = Model(data, True, footer_key, file_aad, foff, bytes(data[foff:end]), {},
                      algorithm=next(iter(fcm["encryption_algorithm"])))
        model.fmd = _decode("FileMetaData", model.open(footer_mod))[0]
        model.modules.append(footer_mod)
    else:
        fmd, end = _decode("FileMetaData", data, foff)
        file_aad = _algorithm(fmd["encryption_algorithm"])
        model = Model(data, False, footer_key, file_aad, foff, b"", fmd,
                      algorithm=next(iter(fmd["encryption_algorithm"])))
    for r, rg in enumerate(model.fmd.get("row_groups", [])):
        for c, cc in enumerate(rg.get("columns", [])):
            _chunk(model, r, c, cc, column_keys)
    return model


def _chunk(model: Model, r: int, c: int, cc: dict, column_keys: dict) -> None:
    crypto = cc.get("crypto_metadata")
    if crypto is None:
        key = None
    elif "ENCRYPTION_WITH_FOOTER_KEY" in crypto:
        key = model.footer_key
    else:
        path = ".".join(p.decode() for p in crypto["ENCRYPTION_WITH_COLUMN_KEY"]["path_in_schema"])
        key = column_keys[path]
    meta = cc.get("meta_data")
    if cc.get("encrypted_column_metadata") is not None:
        m = Module(COLUMN_META, r, c, None, -1, 0, key)
        meta = _decode("ColumnMetaData", ref.gcm_decrypt_module(key, cc["encrypted_column_metadata"], model.aad(m)))[0]
        model.column_meta[r, c] = (key, meta)
    data = model.data
    dpo = meta["data_page_offset"]
    dict_off = meta.get("dictionary_page_offset")
    start = dict_off if dict_off is not None and 0 < dict_off < dpo else dpo
    end = start + meta["total_compressed_size"]
    pos, ordinal, first = start, 0, True
    while pos < end:
        is_dict = first and start != dpo
        kind = DICT_HEADER if is_dict else DATA_HEADER
        page = None if is_dict else ordinal
        if key is None:
            hdr, hend = _decode("PageHeader", data, pos)
            hlen = hend - pos
        else:
            hlen = _le32(data, pos) + 4
            hdr = None
        m = Module(kind, r, c, page, pos, hlen, key)
        model.modules.append(m)
        if hdr is None:
            hdr = _decode("PageHeader", model.open(m))[0]
        pos += hlen
        n = hdr["compressed_page_size"]
        model.modules.append(Module(DICT_PAGE if is_dict else DATA_PAGE, r, c, page, pos, n, key))
        pos += n
        ordinal += 0 if is_dict else 1
        first = False
    for kind, off_f, len_f in ((COLUMN_INDEX, "column_index_offset", "column_index_length"),
                               (OFFSET_INDEX, "offset_index_offset", "offset_index_length")):
        if cc.get(off_f) is not None:
            model.modules.append(Module(kind, r, c, None, cc[off_f], cc[len_f], key))
    bo = meta.get("bloom_filter_offset")
    if bo is not None:
        if key is None:
            bh, bend = _decode("BloomFilterHeader", data, bo)
            model.modules.append(Module(BLOOM_HEADER, r, c, None, bo, bend - bo, None))
            model.modules.append(Module(BLOOM_BITSET, r, c, None, bend, bh["numBytes"], None))
        else:
            hl = _le32(data, bo) + 4
            model.modules.append(Module(BLOOM_HEADER, r, c, None, bo, hl, key))
            model.modules.append(Module(BLOOM_BITSET, r, c, None, bo + hl, _le32(data, bo + hl) + 4, key))


def encode(name: str, obj: dict) -> bytes:
    return oracle.codec.encode(name, obj)


def build_footer(model: Model, body: bytes, fmd: dict) -> bytes:
    """``body`` (the file up to its footer) + ``fmd`` sealed as the footer of ``model``."""
    plain = encode("FileMetaData", fmd)
    aad = ref.ref_module_aad(model.file_aad, FOOTER)
    if model.encrypted_footer:
        tail = model.crypto_md + ref.gcm_encrypt_module(model.footer_key, plain, aad)
        magic = b"PARE"
    else:
        nonce = os.urandom(12)
        tag = AESGCM(model.footer_key).encrypt(nonce, plain, aad)[-16:]
        tail = plain + nonce + tag
        magic = b"PAR1"
    return body + tail + struct.pack("<I", len(tail)) + magic


def seal_column_meta(model: Model, r: int, c: int, meta: dict) -> bytes:
    key = model.column_meta[r, c][0]
    return ref.gcm_encrypt_module(key, encode("ColumnMetaData", meta),
                                  ref.ref_module_aad(model.file_aad, COLUMN_META, r, c))
