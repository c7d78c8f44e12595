"""Inspect a Parquet file's encryption without keys (and its encrypted footer with them)."""

from __future__ import annotations

from typing import Callable

from ..errors import InvalidTag, KeyNotFound, PqsealError
from .layout import dotted
from .properties import DecryptionProperties
from .source import Source


def describe_key_metadata(md: bytes | None):
    """Key metadata as shown to people when nothing knows its format: text or hex. (The
    key-management layer passes a describer that understands PKMT1 key material.)"""
    if md is None:
        return None
    try:
        return {"text": bytes(md).decode("utf-8")}
    except UnicodeDecodeError:
        return {"hex": bytes(md).hex()}


def _text(b):
    if b is None:
        return None
    try:
        return bytes(b).decode("utf-8")
    except UnicodeDecodeError:
        return "0x" + bytes(b).hex()


def _v2_framing(s: Source, rg: int, col: int):
    """Which DataPageV2 framing the first V2 page of a chunk uses (looking at the headers
    of its first two pages only)."""
    try:
        if s.crypto is None or s.crypto.dialect != "spec" or not s.column_crypto(rg, col).encrypted:
            return None
        return s.chunk_plan(rg, col, max_pages=2).framing
    except PqsealError:
        return None


def _pages(s: Source, rg: int, col: int, meta) -> int:
    """Pages of a chunk (the dictionary page included): from its offset index, else by
    walking its page headers."""
    oi = s.offset_index(rg, col)
    if oi is None:
        return len(s.chunk_plan(rg, col))
    return len(oi.get("page_locations") or []) + (int(meta.get("dictionary_page_offset") or 0) > 0)


def dek_modules(s: Source) -> int:
    """The most modules encrypted under one key of an encrypted file whose keys ``s``
    has (the 2^32 GCM bound of NIST SP 800-38D applies per key): per column chunk its page
    headers and pages, column and offset index, bloom filter header and bitset, and its
    ColumnMetaData where that is a module of its own; the footer (or its signature)
    under the footer key. Keys are told apart by their key metadata (explicit keys
    without metadata: per column)."""
    plaintext_footer = s.crypto is not None and s.crypto.plaintext_footer
    per: dict[object, int] = {"footer": 1}
    for rg in range(s.num_row_groups):
        for col in range(len(s.paths)):
            cc = s.column_crypto(rg, col)
            if not cc.encrypted:
                continue
            meta = s.column_meta(rg, col)
            key = "footer" if cc.footer_key else (cc.key_metadata or ("column", col))
            n = 2 * _pages(s, rg, col, meta)
            n += (s.column_index(rg, col) is not None) + (s.offset_index(rg, col) is not None)
            n += 2 * (meta.get("bloom_filter_offset") is not None)
            n += plaintext_footer or not cc.footer_key
            per[key] = per.get(key, 0) + n
    return max(per.values())


def inspect_file(path, decryption: DecryptionProperties | None = None, *,
                 describe_key: Callable[[bytes | None], object] = describe_key_metadata) -> dict:
    """Everything readable about a file's encryption. Without keys an encrypted footer
    stays closed (its columns are then unknown); with keys the footer is opened."""
    with Source(path, decryption) as s:
        out = {"file": s.path, "size": s.tail.file_size, "magic": s.tail.magic.decode()}
        c = s.crypto
        if c is None:
            out["encrypted"] = False
        else:
            out.update({
                "encrypted": True,
                "algorithm": c.algorithm,
                "footer": "plaintext (signed)" if c.plaintext_footer else "encrypted",
                "dialect": {"spec": "PME spec (parquet-java / Arrow / pqseal)",
                            "duckdb": "DuckDB (no AADs, page sizes without framing)"}[c.dialect],
                "aad_prefix": ("stored: " + _text(c.aad_prefix)) if c.aad_prefix is not None else
                              ("not stored: readers must supply it" if c.supply_aad_prefix else "none"),
                "aad_file_unique": c.aad_file_unique.hex() if c.aad_file_unique else None,
                "footer_key_metadata": describe_key(c.footer_key_metadata),
            })
        fmd = s.fmd
        if fmd is None:
            out["footer_readable"] = False
            out["note"] = "the footer is encrypted: give the footer key to see row groups and columns"
            return out
        out["footer_readable"] = True
        out["created_by"] = _text(fmd.get("created_by"))
        out["num_rows"] = fmd.get("num_rows")
        rgs = fmd.get("row_groups") or []
        out["row_groups"] = [{"ordinal": rg.get("ordinal"), "num_rows": rg.get("num_rows"),
                              "total_byte_size": rg.get("total_byte_size"),
                              "total_compressed_size": rg.get("total_compressed_size")} for rg in rgs]
        cols = []
        for col, path in enumerate(s.paths):
            entry: dict[str, object] = {"path": dotted(path)}
            if rgs:
                cc = s.column_crypto(0, col)
                if not cc.encrypted:
                    entry["encryption"] = "plaintext"
                elif cc.footer_key:
                    entry["encryption"] = "footer key"
                else:
                    entry["encryption"] = "column key"
                    entry["key_metadata"] = describe_key(cc.key_metadata)
                sizes: list[int] = []
                for rg in range(len(rgs)):
                    try:
                        meta = s.column_meta(rg, col)
                        sizes.append(int(meta.get("total_compressed_size") or 0))
                    except (KeyNotFound, InvalidTag):
                        entry["metadata"] = "encrypted (no key given)"
                        break
                else:
                    entry["compressed_bytes"] = sum(sizes)
                if cc.encrypted and decryption is not None:
                    framing = _v2_framing(s, 0, col)
                    if framing:
                        entry["v2_framing"] = framing
            cols.append(entry)
        out["columns"] = cols
        if c is not None and decryption is not None:
            try:
                out["max_dek_modules"] = dek_modules(s)
            except (KeyNotFound, InvalidTag):
                pass
        return out
