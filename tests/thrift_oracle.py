"""The test oracle for pqseal's Thrift codec: a pure-Python twin of ``pqseal._thrift``.

``PyCodec(defs)`` has exactly the behaviour of ``pqseal._thrift.Codec(defs)`` (same accepted
inputs, same results, same error messages, same bounds and size limits) and is written
independently of it, in plain Python; tests/test_thrift.py compares the two on real
footers, generated objects and hostile bytes. It is not shipped: pqseal runs the C codec.
The representation and the bounds are documented in ``pqseal.format.thrift``.
"""

from __future__ import annotations

import gc
import struct as _struct
import sys

from pqseal.format.thrift import (
    BINARY, BOOL, BOOL_FALSE, BYTE, BYTES_PER_OBJECT, CONTAINER_SIZE_LIMIT, DOUBLE, I16, I32, I64, LIST, MAP,
    MAX_DEPTH, OBJECT_BUDGET_BASE, SET, STRING_SIZE_LIMIT, STRUCT, DecodeError, EncodeError,
)

__all__ = ["PyCodec"]

_MAX_LEN = 0x7FFFFFFF
_FID_MIN, _FID_MAX = -32768, 32767


class _Field:
    __slots__ = ("fid", "name", "ttype", "etype", "sub", "raw")


class _Struct:
    __slots__ = ("name", "fields", "by_fid", "by_name")


_MISMATCH = object()
_unpack_double = _struct.Struct("<d").unpack_from
_pack_double = _struct.Struct("<d").pack
_ELEM_TYPES = (BOOL, BYTE, I16, I32, I64, DOUBLE, BINARY, STRUCT)
_INT_RANGE = {BYTE: ("byte", -128, 127), I16: ("i16", -32768, 32767),
              I32: ("i32", -(1 << 31), (1 << 31) - 1), I64: ("i64", -(1 << 63), (1 << 63) - 1)}


def _schema_err(msg):
    return ValueError("bad schema: " + msg)


def _compile(defs):
    structs = {}
    order = []
    for d in defs:
        if not isinstance(d, tuple) or len(d) != 2:
            raise _schema_err("each def must be a (name, fields) tuple")
        name, _ = d
        if not isinstance(name, str):
            raise TypeError("struct name must be str")
        if name in structs:
            raise _schema_err(f"duplicate struct {name}")
        sd = _Struct()
        sd.name = str(name)
        structs[name] = sd
        order.append((sd, d[1]))
    for sd, fields in order:
        sn = sd.name
        fields = list(fields)
        if len(fields) > 64:
            raise _schema_err(f"{sn}: more than 64 fields")
        out = []
        for fd in fields:
            if not isinstance(fd, tuple) or len(fd) != 6:
                raise _schema_err(f"{sn}: field must be a 6-tuple (fid, name, ttype, elem_ttype, sub, raw)")
            fid, fname, ttype, etype, sub, raw = fd
            if not isinstance(fname, str):
                raise TypeError("field name must be str")
            fid, ttype, etype, raw = int(fid), int(ttype), int(etype), bool(raw)
            if not _FID_MIN <= fid <= _FID_MAX:
                raise _schema_err(f"{sn}: field id {fid} out of range")
            f = _Field()
            f.fid, f.name, f.ttype, f.etype, f.raw, f.sub = fid, sys.intern(str(fname)), ttype, etype, raw, None
            fn = f.name
            if ttype == BOOL_FALSE or not 1 <= ttype <= 12:
                raise _schema_err(f"{sn}.{fn}: bad ttype {ttype}")
            if ttype == BOOL and raw:
                raise _schema_err(f"{sn}.{fn}: a bool field cannot be raw")
            if ttype == MAP and not raw:
                raise _schema_err(f"{sn}.{fn}: map fields must be raw")
            if ttype in (LIST, SET):
                if not raw and etype not in _ELEM_TYPES:
                    raise _schema_err(f"{sn}.{fn}: unsupported element type {etype} (use raw)")
            elif etype != 0:
                raise _schema_err(f"{sn}.{fn}: elem_ttype given for a non-list field")
            if not raw and (ttype == STRUCT or (ttype in (LIST, SET) and etype == STRUCT)):
                if not isinstance(sub, str):
                    raise _schema_err(f"{sn}.{fn}: struct name required")
                if sub not in structs:
                    raise _schema_err(f"{sn}.{fn}: unknown struct {sub}")
                f.sub = structs[sub]
            elif sub is not None and not raw:
                raise _schema_err(f"{sn}.{fn}: sub given for a non-struct field")
            out.append(f)
        out.sort(key=lambda f: f.fid)
        sd.fields, sd.by_fid, sd.by_name = out, {}, {}
        for f in out:
            if f.fid in sd.by_fid:
                raise _schema_err(f"{sn}: duplicate field id {f.fid}")
            if f.name in sd.by_name:
                raise _schema_err(f"{sn}: duplicate field name {f.name}")
            sd.by_fid[f.fid] = f
            sd.by_name[f.name] = f
    return structs


def _derr(off, msg):
    return DecodeError(f"{msg} at offset {off}")


def _unzigzag(u):
    return (u >> 1) ^ -(u & 1)


def _zigzag(v):
    return ((v << 1) ^ (v >> 63)) & 0xFFFFFFFFFFFFFFFF


class _Reader:
    """Mirrors the decoder in csrc/thrift.c check for check."""

    __slots__ = ("buf", "pos", "n", "build", "start", "objects", "wsd", "wf", "wfid")

    def __init__(self, buf, pos, build):
        self.buf, self.pos, self.n, self.build = buf, pos, len(buf), build
        self.start, self.objects = pos, 0
        self.wsd = self.wf = self.wfid = None     # the field being read, for limit errors

    def where(self):
        if self.wsd is None:
            return ""
        if self.wf is not None:
            return f"{self.wsd.name}.{self.wf.name}: "
        return f"{self.wsd.name}[{self.wfid}]: "

    def limit(self, off, what, n, limit_name, limit):
        return _derr(off, f"{self.where()}{what} {n} exceeds the {limit_name} limit {limit}")

    def count_object(self):
        self.objects += 1
        consumed = self.pos - self.start
        if self.objects > OBJECT_BUDGET_BASE + consumed // BYTES_PER_OBJECT:
            raise _derr(self.pos, f"{self.where()}{self.objects} structs and unknown fields in {consumed} bytes "
                                  f"exceed the object budget ({OBJECT_BUDGET_BASE} + 1 per {BYTES_PER_OBJECT} bytes)")

    def varint(self):
        buf, start = self.buf, self.pos
        pos, v = start, 0
        for i in range(10):
            if pos >= self.n:
                raise _derr(start, "truncated varint")
            b = buf[pos]
            pos += 1
            if i == 9 and b > 1:
                raise _derr(start, "varint too long")
            v |= (b & 0x7F) << (7 * i)
            if not b & 0x80:
                self.pos = pos
                return v
        raise _derr(start, "varint too long")  # pragma: no cover

    def rd_int(self, t):
        if t == BYTE:
            if self.pos >= self.n:
                raise _derr(self.pos, "truncated input")
            b = self.buf[self.pos]
            self.pos += 1
            return b - 256 if b > 127 else b
        start = self.pos
        u = self.varint()
        if t == I16 and u > 0xFFFF:
            raise _derr(start, "i16 value out of range")
        if t == I32 and u > 0xFFFFFFFF:
            raise _derr(start, "i32 value out of range")
        return _unzigzag(u)

    def rd_double(self):
        if self.n - self.pos < 8:
            raise _derr(self.pos, "truncated input")
        v = _unpack_double(self.buf, self.pos)[0]
        self.pos += 8
        return v

    def rd_len(self, what):
        start = self.pos
        u = self.varint()
        if u > _MAX_LEN:
            raise _derr(start, f"{what} {u} out of range")
        return u

    def rd_binary(self):
        start = self.pos
        n = self.rd_len("binary length")
        if n > self.n - self.pos:
            raise _derr(start, f"binary length {n} exceeds remaining input")
        if n > STRING_SIZE_LIMIT:
            raise self.limit(start, "binary length", n, "string size", STRING_SIZE_LIMIT)
        at = self.pos
        self.pos = at + n
        return at, n

    def list_header(self):
        start = self.pos
        if self.pos >= self.n:
            raise _derr(start, "truncated input")
        h = self.buf[self.pos]
        self.pos += 1
        et, n = h & 15, h >> 4
        if n == 15:
            n = self.rd_len("list size")
        if not 1 <= et <= 12 and not (et == 0 and n == 0):   # empty lists may say type 0 (fastparquet)
            raise _derr(start, f"bad element type {et}")
        if n > self.n - self.pos:
            raise _derr(start, f"list size {n} exceeds remaining input")
        if n > CONTAINER_SIZE_LIMIT:
            raise self.limit(start, "list size", n, "container size", CONTAINER_SIZE_LIMIT)
        return et, n

    def map_header(self):
        start = self.pos
        n = self.rd_len("map size")
        if n == 0:
            return 0, 0, 0
        if self.pos >= self.n:
            raise _derr(start, "truncated input")
        h = self.buf[self.pos]
        self.pos += 1
        kt, vt = h >> 4, h & 15
        if not 1 <= kt <= 12:
            raise _derr(start, f"bad element type {kt}")
        if not 1 <= vt <= 12:
            raise _derr(start, f"bad element type {vt}")
        if n > (self.n - self.pos) // 2:
            raise _derr(start, f"map size {n} exceeds remaining input")
        if n > CONTAINER_SIZE_LIMIT:
            raise self.limit(start, "map size", n, "container size", CONTAINER_SIZE_LIMIT)
        return kt, vt, n

    def field_header(self, last):
        """-> (hdr_offset, ttype, fid); ttype 0 is STOP."""
        hdr = self.pos
        if hdr >= self.n:
            raise _derr(hdr, "truncated input")
        b = self.buf[hdr]
        self.pos = hdr + 1
        if b == 0:
            return hdr, 0, 0
        t = b & 15
        if not 1 <= t <= 12:
            raise _derr(hdr, f"bad field type {t}")
        if b >> 4:
            fid = last + (b >> 4)
        else:
            u = self.varint()
            if u > 0xFFFF:
                raise _derr(hdr, "field id out of range")
            fid = _unzigzag(u)
        if fid > _FID_MAX:
            raise _derr(hdr, "field id out of range")
        return hdr, t, fid

    def skip_value(self, t, depth, elem):
        if t == BOOL or t == BOOL_FALSE:
            if elem:
                if self.pos >= self.n:
                    raise _derr(self.pos, "truncated input")
                self.pos += 1
        elif BYTE <= t <= I64:
            self.rd_int(t)
        elif t == DOUBLE:
            self.rd_double()
        elif t == BINARY:
            self.rd_binary()
        elif t == LIST or t == SET:
            if depth > MAX_DEPTH:
                raise _derr(self.pos, "nesting too deep")
            et, n = self.list_header()
            if et in (BOOL, BOOL_FALSE, BYTE):
                self.pos += n
            else:
                for _ in range(n):
                    self.skip_value(et, depth + 1, True)
        elif t == MAP:
            if depth > MAX_DEPTH:
                raise _derr(self.pos, "nesting too deep")
            kt, vt, n = self.map_header()
            for _ in range(n):
                self.skip_value(kt, depth + 1, True)
                self.skip_value(vt, depth + 1, True)
        else:  # STRUCT (types are validated by the callers)
            if depth > MAX_DEPTH:
                raise _derr(self.pos, "nesting too deep")
            last = 0
            while True:
                _, ft, last_ = self.field_header(last)
                if ft == 0:
                    return
                last = last_
                self.skip_value(ft, depth + 1, False)

    def rd_elem(self, f, depth):
        et = f.etype
        if et == BOOL:
            b = self.buf[self.pos]
            if b != 1 and b != 2:
                return _MISMATCH
            self.pos += 1
            return b == 1
        if et == BINARY:
            at, n = self.rd_binary()
            return bytes(self.buf[at:at + n]) if self.build else None
        if et == STRUCT:
            return self.rd_struct(f.sub, depth)
        if et == DOUBLE:
            return self.rd_double()
        return self.rd_int(et)

    def rd_field_value(self, f, t, depth):
        if f.raw:
            start = self.pos
            self.skip_value(t, depth, False)
            return bytes(self.buf[start:self.pos]) if self.build else None
        tt = f.ttype
        if tt == BOOL:
            return t == BOOL
        if BYTE <= tt <= I64:
            return self.rd_int(tt)
        if tt == DOUBLE:
            return self.rd_double()
        if tt == BINARY:
            at, n = self.rd_binary()
            return bytes(self.buf[at:at + n]) if self.build else None
        if tt == STRUCT:
            return self.rd_struct(f.sub, depth)
        # LIST / SET
        if depth > MAX_DEPTH:
            raise _derr(self.pos, "nesting too deep")
        et, n = self.list_header()
        if et != f.etype:
            return _MISMATCH
        out = []
        wsd = self.wsd
        for _ in range(n):
            self.wsd, self.wf = wsd, f      # an element struct's fields moved them
            v = self.rd_elem(f, depth + 1)
            if v is _MISMATCH:
                return _MISMATCH
            out.append(v)
        return out if self.build else None

    def rd_struct(self, sd, depth):
        if depth > MAX_DEPTH:
            raise _derr(self.pos, "nesting too deep")
        self.count_object()
        build = self.build
        d = {} if build else None
        seen = set()
        last = 0
        by_fid = sd.by_fid
        while True:
            hdr, t, fid = self.field_header(last)
            if t == 0:
                return d
            last = fid
            f = by_fid.get(fid)
            if fid in seen:
                raise _derr(hdr, f"duplicate field id {fid}")
            seen.add(fid)
            self.wsd, self.wfid, self.wf = sd, fid, None
            if f is not None and (f.ttype == t or (f.ttype == BOOL and t == BOOL_FALSE)):
                vstart = self.pos
                self.wf = f
                v = self.rd_field_value(f, t, depth + 1)
                if v is not _MISMATCH:
                    if build:
                        d[f.name] = v
                    continue
                self.pos = vstart
                self.wsd, self.wf = sd, None
            vstart = self.pos
            self.count_object()
            self.skip_value(t, depth + 1, False)
            if build:
                d[fid] = (t, bytes(self.buf[vstart:self.pos]))


def _as_bytes_like(v):
    """The bytes of a C-contiguous buffer (not str), or None."""
    if isinstance(v, str):
        return None
    if isinstance(v, bytes):
        return v
    try:
        m = memoryview(v)
    except TypeError:
        return None
    if not m.c_contiguous:
        return None
    return m.tobytes()


def _short(s):
    return s if len(s) <= 100 else s[:100] + "..."


def _type_name(o):
    return type(o).__name__


def _repr(o):
    try:
        return repr(o)
    except Exception:
        return "<unrepresentable>"


class _Ctx:
    __slots__ = ("sd", "f", "fid", "index")

    def __init__(self, sd, f=None, fid=None, index=-1):
        self.sd, self.f, self.fid, self.index = sd, f, fid, index

    def err(self, msg):
        if self.f is not None:
            where = f"{self.sd.name}.{self.f.name}"
        elif self.fid is not None:
            where = f"{self.sd.name}[{self.fid}]"
        else:
            where = self.sd.name
        if self.index >= 0:
            where += f"[{self.index}]"
        return EncodeError(f"{where}: {msg}")

    def err_type(self, prefix, o):
        return self.err(prefix + _short(_type_name(o)))

    def err_repr(self, prefix, o):
        return self.err(prefix + _short(_repr(o)))


def _is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)


class _Writer:
    __slots__ = ("out",)

    def __init__(self):
        self.out = bytearray()

    def varint(self, v):
        out = self.out
        while v > 0x7F:
            out.append((v & 0x7F) | 0x80)
            v >>= 7
        out.append(v)

    def field_header(self, last, fid, t):
        delta = fid - last
        if 0 < delta <= 15:
            self.out.append((delta << 4) | t)
        else:
            self.out.append(t)
            self.varint(_zigzag(fid))
        return fid

    def wr_int(self, c, t, v):
        if not _is_int(v):
            raise c.err_type("expected int, got ", v)
        tn, lo, hi = _INT_RANGE[t]
        if not lo <= v <= hi:
            raise c.err_repr(f"value out of range for {tn}: ", v)
        if t == BYTE:
            self.out.append(v & 0xFF)
        else:
            self.varint(_zigzag(v))

    def wr_value(self, c, t, et, sub, v, depth):
        if t == BOOL:
            if not isinstance(v, bool):
                raise c.err_type("expected bool, got ", v)
            self.out.append(BOOL if v else BOOL_FALSE)
        elif BYTE <= t <= I64:
            self.wr_int(c, t, v)
        elif t == DOUBLE:
            if not isinstance(v, float):
                raise c.err_type("expected float, got ", v)
            self.out += _pack_double(v)
        elif t == BINARY:
            b = _as_bytes_like(v)
            if b is None:
                raise c.err_type("expected bytes-like, got ", v)
            if len(b) > STRING_SIZE_LIMIT:
                raise c.err(f"binary value of {len(b)} bytes exceeds the string size limit {STRING_SIZE_LIMIT}")
            self.varint(len(b))
            self.out += b
        elif t == STRUCT:
            if not isinstance(v, dict):
                raise c.err_type("expected dict, got ", v)
            if depth > MAX_DEPTH:
                raise c.err("nesting too deep")
            self.wr_struct(sub, v, depth)
        else:  # LIST / SET
            if not isinstance(v, (list, tuple)):
                raise c.err_type("expected list, got ", v)
            if depth > MAX_DEPTH:
                raise c.err("nesting too deep")
            n = len(v)
            if n > CONTAINER_SIZE_LIMIT:
                raise c.err(f"list of {n} elements exceeds the container size limit {CONTAINER_SIZE_LIMIT}")
            if n < 15:
                self.out.append((n << 4) | et)
            else:
                self.out.append(0xF0 | et)
                self.varint(n)
            for i in range(n):
                if len(v) != n:
                    raise c.err("list changed size during encoding")
                self.wr_value(_Ctx(c.sd, c.f, c.fid, i), et, 0, sub, v[i], depth + 1)
            if len(v) != n:
                raise c.err("list changed size during encoding")

    def wr_entry(self, sd, fid, f, v, last, depth):
        c = _Ctx(sd, f, fid if f is None else None)
        if f is not None and not f.raw:
            if f.ttype == BOOL:
                if not isinstance(v, bool):
                    raise c.err_type("expected bool, got ", v)
                return self.field_header(last, fid, BOOL if v else BOOL_FALSE)
            last = self.field_header(last, fid, f.ttype)
            self.wr_value(c, f.ttype, f.etype, f.sub, v, depth + 1)
            return last
        if f is not None:
            t, data = f.ttype, v
        else:
            if not isinstance(v, tuple) or len(v) != 2:
                raise c.err_type("expected (ttype, bytes) tuple, got ", v)
            to = v[0]
            if not _is_int(to):
                raise c.err_type("expected int ttype, got ", to)
            if not 1 <= to <= 12:
                raise c.err_repr("bad ttype ", to)
            t, data = int(to), v[1]
        b = _as_bytes_like(data)
        if b is None:
            raise c.err_type("expected bytes-like encoded value, got ", data)
        _check_encoded(c, t, b, depth + 1)
        last = self.field_header(last, fid, t)
        self.out += b
        return last

    def wr_struct(self, sd, obj, depth):
        entries = []
        sc = _Ctx(sd)
        by_name = sd.by_name
        for k, v in list(obj.items()):
            if isinstance(k, str):
                f = by_name.get(k)
                if f is None:
                    raise sc.err_repr("unknown field name ", k)
                entries.append((f.fid, f, v))
            elif _is_int(k):
                if not _FID_MIN <= k <= _FID_MAX:
                    raise sc.err_repr("field id out of range: ", k)
                entries.append((int(k), None, v))
            else:
                raise sc.err_type("field key must be str or int, got ", k)
        entries.sort(key=lambda e: e[0])
        for i in range(1, len(entries)):
            if entries[i][0] == entries[i - 1][0]:
                raise sc.err(f"duplicate field id {entries[i][0]}")
        last = 0
        for fid, f, v in entries:
            last = self.wr_entry(sd, fid, f, v, last, depth)
        self.out.append(0)


def _check_encoded(c, t, b, depth):
    if t == BOOL or t == BOOL_FALSE:
        if b:
            raise c.err("a bool field has no encoded value bytes")
        return
    r = _Reader(b, 0, False)
    try:
        r.skip_value(t, depth, False)
    except DecodeError as e:
        raise c.err(f"invalid encoded value: {e}") from None
    if r.pos != len(b):
        raise c.err(f"invalid encoded value: {len(b) - r.pos} trailing bytes")


def _as_buffer(buf):
    if isinstance(buf, (bytes, bytearray)):
        return buf
    m = memoryview(buf)
    if m.format != "B" or m.ndim != 1:
        m = m.cast("B")
    return m


class PyCodec:
    """Pure-Python codec with exactly the behaviour of ``pqseal._thrift.Codec``."""

    def __init__(self, defs):
        self._structs = _compile(defs)

    @property
    def structs(self):
        return tuple(self._structs)

    def _struct(self, name):
        if not isinstance(name, str):
            raise TypeError("struct name must be str")
        sd = self._structs.get(name)
        if sd is None:
            raise ValueError(f"unknown struct name {name!r}")
        return sd

    def _run(self, name, buf, offset, build):
        data = _as_buffer(buf)
        sd = self._struct(name)
        offset = int(offset)
        if not 0 <= offset <= len(data):
            raise ValueError(f"offset {offset} outside the buffer (length {len(data)})")
        r = _Reader(data, offset, build)
        was = gc.isenabled() if build else False
        if was:
            gc.disable()
        try:
            obj = r.rd_struct(sd, 1)
        finally:
            if was:
                gc.enable()
        return obj, r.pos

    def decode(self, name, buf, offset=0):
        return self._run(name, buf, offset, True)

    def skip(self, name, buf, offset=0):
        return self._run(name, buf, offset, False)[1]

    def encode(self, name, obj):
        sd = self._struct(name)
        if not isinstance(obj, dict):
            raise _Ctx(sd).err_type("expected dict, got ", obj)
        w = _Writer()
        w.wr_struct(sd, obj, 1)
        return bytes(w.out)
