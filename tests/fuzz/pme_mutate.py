"""Mutations of PME seed files, driven by the fuzzer's bytes.

:func:`mutate` turns (seed models, fuzzer input) into one file:

1. up to two *resealed* edits, made with the real keys so every tag still verifies: an
   edited footer (FileMetaData: sizes, offsets, counts, types, lists dropped, duplicated
   or emptied; anywhere, or in one column chunk), an edited encrypted ColumnMetaData, an
   edited page header, column index, offset index or bloom filter header (re-encrypted
   in place, its size may change); the footer is then re-encrypted or re-signed;
2. up to three byte-level edits: bit flips, byte writes, truncation, an edited length
   prefix (of a module or of the footer), a module spliced in from another position or
   another seed (same keys), a range zeroed, bytes inserted or removed.

The result is a complete file; the fuzz target saves it as the reproducer.
"""

from __future__ import annotations

import copy
import struct

import pme_model as M

_INTS = [0, 1, -1, 2, 3, 7, 8, 15, 16, 127, 128, 255, 256, 4095, 4096, 65535, 65536, (1 << 31) - 1, -(1 << 31),
         1 << 31, 1 << 32, (1 << 63) - 1, -(1 << 63)]


def _int_value(fdp, old: int, file_size: int) -> int:
    k = fdp.ConsumeIntInRange(0, 9)
    if k == 0:
        return fdp.ConsumeIntInRange(-(1 << 63), (1 << 63) - 1)
    if k < 4:
        return old + fdp.ConsumeIntInRange(-64, 64)
    if k == 4:
        return old * 2
    if k == 5:
        return file_size + fdp.ConsumeIntInRange(-64, 64)
    return _INTS[fdp.ConsumeIntInRange(0, len(_INTS) - 1)]


def _slots(obj):
    """Every (container, key) of a decoded Thrift value, depth first."""
    items = obj.items() if isinstance(obj, dict) else enumerate(obj)
    for k, v in list(items):
        yield obj, k
        if isinstance(v, (dict, list)):
            yield from _slots(v)


def _wrap(v: int, bits: int) -> int:
    half = 1 << (bits - 1)
    return ((v + half) % (1 << bits)) - half


def edit_struct(fdp, name: str, obj: dict, file_size: int) -> bytes:
    """Edit one to three values of a decoded struct; returns its encoding (oracle codec).
    An int is folded into its field's width (i64, i32, i16, byte) when it does not fit."""
    obj = copy.deepcopy(obj)
    for _ in range(fdp.ConsumeIntInRange(1, 3)):
        slots = list(_slots(obj))
        ints = [(p, k) for p, k in slots if isinstance(p[k], int)]
        if ints and fdp.ConsumeIntInRange(0, 3):  # mostly sizes, offsets, counts and types
            slots = ints
        if not slots:
            break
        parent, key = slots[fdp.ConsumeIntInRange(0, len(slots) - 1)]
        v = parent[key]
        op = fdp.ConsumeIntInRange(0, 3)
        if op == 0 and isinstance(parent, dict):
            del parent[key]
        elif isinstance(v, bool):
            parent[key] = not v
        elif isinstance(v, int):
            new = _int_value(fdp, v, file_size)
            for cand in (new, _wrap(new, 64), _wrap(new, 32), _wrap(new, 16), _wrap(new, 8)):
                parent[key] = cand
                try:
                    M.encode(name, obj)
                    break
                except ValueError:
                    continue
        elif isinstance(v, list):
            if not v or op == 1:
                parent[key] = []
            elif op == 2:
                parent[key] = v + [copy.deepcopy(v[fdp.ConsumeIntInRange(0, len(v) - 1)])] * \
                    fdp.ConsumeIntInRange(1, 64)
            else:
                del v[fdp.ConsumeIntInRange(0, len(v) - 1)]
        elif isinstance(v, bytes):  # a binary field, or the encoding of a raw one
            parent[key] = fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 16))
            try:
                M.encode(name, obj)
            except ValueError:
                parent[key] = v
    return M.encode(name, obj)


def _resealed(fdp, model: M.Model) -> bytes:
    """Up to two edits behind valid tags (see the module doc)."""
    data = bytearray(model.data[:model.footer_offset])
    fmd = model.fmd
    edited_footer = False
    targets = [m for m in model.modules if m.struct and m.kind != M.FOOTER]
    for _ in range(fdp.ConsumeIntInRange(0, 2)):
        what = fdp.ConsumeIntInRange(0, 3)
        chunks = [(r, c) for r, rg in enumerate(fmd.get("row_groups") or [])
                  for c in range(len(rg.get("columns") or []))]
        if what == 0:
            fmd = _decode_again(edit_struct(fdp, "FileMetaData", fmd, len(model.data)))
            edited_footer = True
        elif what == 1 and chunks:  # one column chunk of the footer (offsets, index locations, plaintext metadata)
            r, c = chunks[fdp.ConsumeIntInRange(0, len(chunks) - 1)]
            fmd = copy.deepcopy(fmd)
            cols = fmd["row_groups"][r]["columns"]
            cols[c] = M.oracle.codec.decode("ColumnChunk", edit_struct(fdp, "ColumnChunk", cols[c], len(model.data)))[0]
            edited_footer = True
        elif what == 2 and model.column_meta:
            keys = sorted(model.column_meta)
            r, c = keys[fdp.ConsumeIntInRange(0, len(keys) - 1)]
            meta = model.column_meta[r, c][1]
            plain = edit_struct(fdp, "ColumnMetaData", meta, len(model.data))
            fmd = copy.deepcopy(fmd)
            try:
                fmd["row_groups"][r]["columns"][c]["encrypted_column_metadata"] = \
                    M.seal_column_meta(model, r, c, M.oracle.codec.decode("ColumnMetaData", plain)[0])
            except (KeyError, IndexError, TypeError):
                pass  # an earlier footer edit removed that column
            edited_footer = True
        elif targets:
            m = targets[fdp.ConsumeIntInRange(0, len(targets) - 1)]
            obj = M.oracle.codec.decode(m.struct, model.open(m))[0]
            data[m.offset:m.offset + m.length] = model.seal(m, edit_struct(fdp, m.struct, obj, len(model.data)))
            targets = [t for t in targets if t.offset < m.offset]  # offsets after m moved
    if not edited_footer and len(data) == model.footer_offset:
        return bytes(data) + model.data[model.footer_offset:]
    return M.build_footer(model, bytes(data), fmd)


def _decode_again(encoded: bytes) -> dict:
    return M.oracle.codec.decode("FileMetaData", encoded)[0]


_LENGTHS = [0, 1, 3, 4, 11, 12, 27, 28, 29, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF, 0xFFFFFFF0]


def _byte_edit(fdp, buf: bytearray, model: M.Model, models: list[M.Model]) -> bytearray:
    n = len(buf)
    if n == 0:
        return buf
    op = fdp.ConsumeIntInRange(0, 8)
    pos = fdp.ConsumeIntInRange(0, n - 1)
    if op == 0:
        buf[pos] ^= 1 << fdp.ConsumeIntInRange(0, 7)
    elif op == 1:
        buf[pos] = fdp.ConsumeIntInRange(0, 255)
    elif op == 2:  # truncation, mostly near the end
        cut = n - fdp.ConsumeIntInRange(1, min(n, 64)) if fdp.ConsumeBool() else pos
        del buf[cut:]
    elif op in (3, 4):  # a length prefix: of a module, or of the footer
        enc = [m for m in model.modules if m.key is not None and m.offset + 4 <= n]
        if op == 3 and enc:
            m = enc[fdp.ConsumeIntInRange(0, len(enc) - 1)]
            at, old = m.offset, m.length - 4
        else:
            at, old = n - 8, struct.unpack_from("<I", buf, n - 8)[0] if n >= 8 else 0
            at = max(at, 0)
        k = fdp.ConsumeIntInRange(0, len(_LENGTHS) + 1)
        new = _LENGTHS[k] if k < len(_LENGTHS) else (old + fdp.ConsumeIntInRange(-40, 40)) & 0xFFFFFFFF
        buf[at:at + 4] = struct.pack("<I", new)[:max(0, min(4, n - at))]
    elif op == 5:  # splice a module from another position or another seed over one of this file
        donor = models[fdp.ConsumeIntInRange(0, len(models) - 1)]
        src = donor.modules[fdp.ConsumeIntInRange(0, len(donor.modules) - 1)]
        dst = model.modules[fdp.ConsumeIntInRange(0, len(model.modules) - 1)]
        piece = donor.data[src.offset:src.offset + src.length]
        if dst.offset < n:
            buf[dst.offset:dst.offset + (dst.length if fdp.ConsumeBool() else len(piece))] = piece
    elif op == 6:  # zero a range
        length = min(n - pos, 1 << fdp.ConsumeIntInRange(0, 16))
        buf[pos:pos + length] = bytes(length)
    elif op == 7:
        buf[pos:pos] = fdp.ConsumeBytes(fdp.ConsumeIntInRange(1, 32))
    else:
        del buf[pos:pos + fdp.ConsumeIntInRange(1, 64)]
    return buf


def mutate(fdp, models: list[M.Model]) -> bytes:
    model = models[fdp.ConsumeIntInRange(0, len(models) - 1)]
    buf = bytearray(_resealed(fdp, model))
    for _ in range(fdp.ConsumeIntInRange(0, 3)):
        buf = _byte_edit(fdp, buf, model, models)
    return bytes(buf)
