/*
 * pqseal._thrift: a schema-directed, lossless, bounded Thrift *compact protocol*
 * codec (plain CPython API).
 *
 *   Codec(defs)                       compile a schema: [(struct_name, [field, ...]), ...]
 *                                     field = (fid, name, ttype, elem_ttype, sub, raw)
 *   codec.decode(name, buf, offset=0) -> (dict, end_offset)
 *   codec.encode(name, obj)           -> bytes
 *   codec.skip(name, buf, offset=0)   -> end_offset   (same validation as decode, no objects)
 *
 * Representation (see python/pqseal/format/thrift.py for the full contract):
 *   known field   -> dict[name] = value (bool/int/float/bytes/list/dict), raw field -> bytes
 *                    of the encoded value;
 *   unknown field -> dict[fid] = (wire_ttype, bytes_of_encoded_value); a field whose wire type
 *                    (or list element type) differs from the schema is kept the same way.
 *
 * Bounds: nesting depth <= MAX_DEPTH containers (the top struct counts as 1); every length
 * and element count is checked against the remaining input before anything is allocated;
 * varints are at most 10 bytes and must fit 64 bits; i16/i32 varints must fit their width;
 * lengths and counts must fit a non-negative i32. Like Apache Arrow's Parquet reader
 * (ReaderProperties' thrift string and container size limits, applied by the Thrift
 * protocol to every value read or skipped), a binary value is at most STRING_SIZE_LIMIT
 * bytes and a list, set or map at most CONTAINER_SIZE_LIMIT elements; the error names the
 * limit and the field. Beyond Arrow, one decode call builds at most OBJECT_BUDGET_BASE +
 * (bytes consumed) / BYTES_PER_OBJECT structs and unknown fields (the values that cost a
 * dict or a tuple each, so tiny-struct input cannot turn a footer into ~100x its size in
 * memory spread over many containers); real footers use tens of bytes per struct.
 * Errors raise DecodeError / EncodeError (both ValueError). The cyclic GC is paused while
 * decoding.
 *
 * The test oracle tests/thrift_oracle.py mirrors this file check for check in pure Python
 * (same accepted inputs, same results, same error messages); the tests compare the two.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdarg.h>
#include <stdint.h>
#include <string.h>

enum {
    T_STOP = 0, T_BOOL = 1, T_BOOL_FALSE = 2, T_BYTE = 3, T_I16 = 4, T_I32 = 5, T_I64 = 6,
    T_DOUBLE = 7, T_BINARY = 8, T_LIST = 9, T_SET = 10, T_MAP = 11, T_STRUCT = 12
};

#define MAX_DEPTH 64
#define MAX_FIELDS 64
#define FID_TABLE 256
#define MAX_LEN 0x7fffffffULL
#define STRING_SIZE_LIMIT 100000000     /* Arrow: kDefaultThriftStringSizeLimit */
#define CONTAINER_SIZE_LIMIT 1000000    /* Arrow: kDefaultThriftContainerSizeLimit */
#define OBJECT_BUDGET_BASE 65536
#define BYTES_PER_OBJECT 8
#define FID_MIN (-32768)
#define FID_MAX 32767

static PyObject *DecodeError;
static PyObject *EncodeError;
static PyObject *TTYPE_OBJ[13];   /* small ints 0..12, for unknown-field tuples */

/* ------------------------------------------------------------------ schema */

typedef struct {
    int fid;
    int ttype;     /* schema type (BOOL = 1) */
    int etype;     /* element type of LIST/SET, else 0 */
    int raw;
    int sub;       /* struct index for STRUCT / LIST<STRUCT>, else -1 */
    PyObject *name;   /* interned str */
} FieldDef;

typedef struct {
    PyObject *name;       /* str */
    int nfields;
    FieldDef *fields;     /* ascending fid */
    int8_t table[FID_TABLE];   /* fid -> slot for 0 <= fid < FID_TABLE, -1 = none */
    PyObject *name_map;   /* dict: field name -> int slot */
} StructDef;

typedef struct {
    PyObject_HEAD
    int nstructs;
    StructDef *structs;
    PyObject *struct_map; /* dict: struct name -> int index */
} CodecObject;

static inline int find_slot(const StructDef *sd, long fid)
{
    if (fid >= 0 && fid < FID_TABLE)
        return sd->table[fid];
    for (int i = 0; i < sd->nfields; i++)
        if (sd->fields[i].fid == fid)
            return i;
    return -1;
}

static const char *type_short_name(PyObject *o)
{
    const char *s = Py_TYPE(o)->tp_name, *dot = strrchr(s, '.');
    return dot ? dot + 1 : s;
}

/* ------------------------------------------------------------------ decoder */

typedef struct {
    const uint8_t *p;      /* whole buffer; offsets are absolute */
    Py_ssize_t pos, len;
    int build;             /* 0: validate only (skip) */
    const CodecObject *codec;
    Py_ssize_t start;      /* where decoding began (for the object budget) */
    Py_ssize_t objects;    /* structs and unknown fields so far */
    /* the field whose value is being read, for limit errors: struct (NULL: none given),
     * field (NULL: unknown field id wfid) */
    const StructDef *wsd;
    const FieldDef *wf;
    long wfid;
} Rd;

static int derr(Py_ssize_t off, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    PyObject *msg = PyUnicode_FromFormatV(fmt, ap);
    va_end(ap);
    if (msg) {
        PyErr_Format(DecodeError, "%U at offset %zd", msg, off);
        Py_DECREF(msg);
    }
    return -1;
}

/* "Struct.field: ", "Struct[fid]: " (unknown field) or "" (no field: top struct, or an
 * encoded value checked by the encoder, whose error names the field itself). */
static PyObject *where_prefix(const Rd *r)
{
    if (r->wsd && r->wf)
        return PyUnicode_FromFormat("%U.%U: ", r->wsd->name, r->wf->name);
    if (r->wsd)
        return PyUnicode_FromFormat("%U[%ld]: ", r->wsd->name, r->wfid);
    return PyUnicode_FromString("");
}

/* A size limit error naming the field being read. */
static int limit_err(const Rd *r, Py_ssize_t off, const char *what, Py_ssize_t n, const char *limit_name,
                     long limit)
{
    PyObject *where = where_prefix(r);
    if (where) {
        derr(off, "%U%s %zd exceeds the %s limit %ld", where, what, n, limit_name, limit);
        Py_DECREF(where);
    }
    return -1;
}

/* Count one struct or unknown field against the object budget. */
static int count_object(Rd *r)
{
    Py_ssize_t consumed = r->pos - r->start;
    if (++r->objects <= OBJECT_BUDGET_BASE + consumed / BYTES_PER_OBJECT)
        return 0;
    PyObject *where = where_prefix(r);
    if (where) {
        derr(r->pos, "%U%zd structs and unknown fields in %zd bytes exceed the object budget "
             "(%d + 1 per %d bytes)", where, r->objects, consumed, OBJECT_BUDGET_BASE, BYTES_PER_OBJECT);
        Py_DECREF(where);
    }
    return -1;
}

static inline int64_t unzigzag(uint64_t u) { return (int64_t)(u >> 1) ^ -(int64_t)(u & 1); }
static inline uint64_t zigzag(int64_t v) { return ((uint64_t)v << 1) ^ (0 - ((uint64_t)v >> 63)); }
static inline int valid_type(int t) { return t >= 1 && t <= 12; }

static int rd_varint(Rd *r, uint64_t *out)
{
    Py_ssize_t start = r->pos, pos = r->pos;
    uint64_t v = 0;
    if (pos < r->len && r->p[pos] < 0x80) {
        *out = r->p[pos];
        r->pos = pos + 1;
        return 0;
    }
    for (int i = 0; i < 10; i++) {
        if (pos >= r->len)
            return derr(start, "truncated varint");
        uint8_t b = r->p[pos++];
        if (i == 9 && b > 1)
            return derr(start, "varint too long");
        v |= (uint64_t)(b & 0x7f) << (7 * i);
        if (!(b & 0x80)) {
            *out = v;
            r->pos = pos;
            return 0;
        }
    }
    return derr(start, "varint too long");   /* not reached */
}

/* BYTE / I16 / I32 / I64 */
static int rd_int(Rd *r, int t, int64_t *out)
{
    if (t == T_BYTE) {
        if (r->pos >= r->len)
            return derr(r->pos, "truncated input");
        *out = (int8_t)r->p[r->pos++];
        return 0;
    }
    Py_ssize_t start = r->pos;
    uint64_t u;
    if (rd_varint(r, &u))
        return -1;
    if (t == T_I16 && u > 0xffffULL)
        return derr(start, "i16 value out of range");
    if (t == T_I32 && u > 0xffffffffULL)
        return derr(start, "i32 value out of range");
    *out = unzigzag(u);
    return 0;
}

static int rd_double(Rd *r, double *out)
{
    if (r->len - r->pos < 8)
        return derr(r->pos, "truncated input");
    const uint8_t *q = r->p + r->pos;
    uint64_t u = 0;
    for (int i = 7; i >= 0; i--)
        u = (u << 8) | q[i];
    memcpy(out, &u, 8);
    r->pos += 8;
    return 0;
}

static int rd_len(Rd *r, const char *what, Py_ssize_t *out)
{
    Py_ssize_t start = r->pos;
    uint64_t u;
    if (rd_varint(r, &u))
        return -1;
    if (u > MAX_LEN)
        return derr(start, "%s %llu out of range", what, (unsigned long long)u);
    *out = (Py_ssize_t)u;
    return 0;
}

/* binary: returns start of the payload in *data_at, length in *n; advances past it */
static int rd_binary(Rd *r, Py_ssize_t *data_at, Py_ssize_t *n)
{
    Py_ssize_t start = r->pos;
    if (rd_len(r, "binary length", n))
        return -1;
    if (*n > r->len - r->pos)
        return derr(start, "binary length %zd exceeds remaining input", *n);
    if (*n > STRING_SIZE_LIMIT)
        return limit_err(r, start, "binary length", *n, "string size", STRING_SIZE_LIMIT);
    *data_at = r->pos;
    r->pos += *n;
    return 0;
}

static int rd_list_header(Rd *r, int *et, Py_ssize_t *n)
{
    Py_ssize_t start = r->pos;
    if (r->pos >= r->len)
        return derr(start, "truncated input");
    uint8_t h = r->p[r->pos++];
    *et = h & 15;
    *n = h >> 4;
    if (*n == 15 && rd_len(r, "list size", n))
        return -1;
    /* an empty list's element type may be 0 (fastparquet writes 0x00; Apache Thrift's
       readers accept it): it decodes as a mismatch, kept verbatim as an unknown field */
    if (!valid_type(*et) && !(*et == 0 && *n == 0))
        return derr(start, "bad element type %d", *et);
    if (*n > r->len - r->pos)
        return derr(start, "list size %zd exceeds remaining input", *n);
    if (*n > CONTAINER_SIZE_LIMIT)
        return limit_err(r, start, "list size", *n, "container size", CONTAINER_SIZE_LIMIT);
    return 0;
}

static int rd_map_header(Rd *r, int *kt, int *vt, Py_ssize_t *n)
{
    Py_ssize_t start = r->pos;
    *n = 0;
    if (rd_len(r, "map size", n))
        return -1;
    *kt = *vt = 0;
    if (*n == 0)
        return 0;
    if (r->pos >= r->len)
        return derr(start, "truncated input");
    uint8_t h = r->p[r->pos++];
    *kt = h >> 4;
    *vt = h & 15;
    if (!valid_type(*kt))
        return derr(start, "bad element type %d", *kt);
    if (!valid_type(*vt))
        return derr(start, "bad element type %d", *vt);
    if (*n > (r->len - r->pos) / 2)
        return derr(start, "map size %zd exceeds remaining input", *n);
    if (*n > CONTAINER_SIZE_LIMIT)
        return limit_err(r, start, "map size", *n, "container size", CONTAINER_SIZE_LIMIT);
    return 0;
}

/* Field header. Returns 1 on STOP, 0 on a field, -1 on error. */
static int rd_field_header(Rd *r, long *last, int *t, long *fid, Py_ssize_t *hdr)
{
    *hdr = r->pos;
    if (r->pos >= r->len)
        return derr(*hdr, "truncated input");
    uint8_t b = r->p[r->pos++];
    if (b == 0)
        return 1;
    *t = b & 15;
    if (!valid_type(*t))
        return derr(*hdr, "bad field type %d", *t);
    long f;
    if (b >> 4) {
        f = *last + (b >> 4);
    } else {
        uint64_t u;
        if (rd_varint(r, &u))
            return -1;
        if (u > 0xffffULL)
            return derr(*hdr, "field id out of range");
        f = (long)unzigzag(u);
    }
    if (f > FID_MAX)
        return derr(*hdr, "field id out of range");
    *last = f;
    *fid = f;
    return 0;
}

static int skip_struct(Rd *r, int depth);

/* Skip one value of wire type t at nesting depth `depth` (containers check it).
 * elem: the value is a list/map element (a bool element is one byte; a bool field has none). */
static int skip_value(Rd *r, int t, int depth, int elem)
{
    int64_t x;
    double d;
    Py_ssize_t n, at;
    int et, kt, vt;
    switch (t) {
    case T_BOOL:
    case T_BOOL_FALSE:
        if (!elem)
            return 0;
        if (r->pos >= r->len)
            return derr(r->pos, "truncated input");
        r->pos++;
        return 0;
    case T_BYTE:
    case T_I16:
    case T_I32:
    case T_I64:
        return rd_int(r, t, &x);
    case T_DOUBLE:
        return rd_double(r, &d);
    case T_BINARY:
        return rd_binary(r, &at, &n);
    case T_LIST:
    case T_SET:
        if (depth > MAX_DEPTH)
            return derr(r->pos, "nesting too deep");
        if (rd_list_header(r, &et, &n))
            return -1;
        if (et == T_BOOL || et == T_BOOL_FALSE || et == T_BYTE) {
            r->pos += n;   /* one byte each; n <= remaining was checked */
            return 0;
        }
        for (Py_ssize_t i = 0; i < n; i++)
            if (skip_value(r, et, depth + 1, 1))
                return -1;
        return 0;
    case T_MAP:
        if (depth > MAX_DEPTH)
            return derr(r->pos, "nesting too deep");
        if (rd_map_header(r, &kt, &vt, &n))
            return -1;
        for (Py_ssize_t i = 0; i < n; i++)
            if (skip_value(r, kt, depth + 1, 1) || skip_value(r, vt, depth + 1, 1))
                return -1;
        return 0;
    case T_STRUCT:
        if (depth > MAX_DEPTH)
            return derr(r->pos, "nesting too deep");
        return skip_struct(r, depth);
    }
    return derr(r->pos, "bad type %d", t);   /* not reached: types are validated by callers */
}

static int skip_struct(Rd *r, int depth)
{
    long last = 0, fid;
    int t;
    Py_ssize_t hdr;
    for (;;) {
        int rc = rd_field_header(r, &last, &t, &fid, &hdr);
        if (rc < 0)
            return -1;
        if (rc == 1)
            return 0;
        if (skip_value(r, t, depth + 1, 0))
            return -1;
    }
}

static int rd_struct(Rd *r, const StructDef *sd, int depth, PyObject **out);

static PyObject *bytes_at(Rd *r, Py_ssize_t at, Py_ssize_t n)
{
    return PyBytes_FromStringAndSize((const char *)r->p + at, n);
}

/* A value of a non-bool, non-container type (ints, double, binary, struct); ``sub`` is
 * the struct for T_STRUCT. Returns 0 or -1. */
static int rd_scalar(Rd *r, int type, int sub, int depth, PyObject **out)
{
    int64_t x;
    double d;
    Py_ssize_t at, n;
    switch (type) {
    case T_BYTE:
    case T_I16:
    case T_I32:
    case T_I64:
        if (rd_int(r, type, &x))
            return -1;
        if (r->build && !(*out = PyLong_FromLongLong(x)))
            return -1;
        return 0;
    case T_DOUBLE:
        if (rd_double(r, &d))
            return -1;
        if (r->build && !(*out = PyFloat_FromDouble(d)))
            return -1;
        return 0;
    case T_BINARY:
        if (rd_binary(r, &at, &n))
            return -1;
        if (r->build && !(*out = bytes_at(r, at, n)))
            return -1;
        return 0;
    case T_STRUCT:
        return rd_struct(r, &r->codec->structs[sub], depth, out);
    }
    PyErr_SetString(PyExc_SystemError, "pqseal._thrift: bad compiled type");
    return -1;
}

/* One element of a known list, schema element type et. Returns 0, 1 (mismatch), -1. */
static inline int rd_elem(Rd *r, const FieldDef *f, int depth, PyObject **out)
{
    *out = NULL;
    switch (f->etype) {
    case T_BOOL: {
        uint8_t b = r->p[r->pos];   /* present: list size <= remaining */
        if (b != 1 && b != 2)
            return 1;
        r->pos++;
        if (r->build) {
            *out = b == 1 ? Py_True : Py_False;
            Py_INCREF(*out);
        }
        return 0;
    }
    default:
        return rd_scalar(r, f->etype, f->sub, depth, out);
    }
}

/* Value of a known field whose wire type matches the schema. Returns 0, 1 (element type
 * mismatch: caller rewinds and keeps the field as unknown), -1 on error. */
static int rd_field_value(Rd *r, const FieldDef *f, int t, int depth, PyObject **out)
{
    Py_ssize_t n;
    *out = NULL;
    if (f->raw) {
        Py_ssize_t start = r->pos;
        if (skip_value(r, t, depth, 0))
            return -1;
        if (r->build && !(*out = bytes_at(r, start, r->pos - start)))
            return -1;
        return 0;
    }
    switch (f->ttype) {
    case T_BOOL:
        if (r->build) {
            *out = t == T_BOOL ? Py_True : Py_False;
            Py_INCREF(*out);
        }
        return 0;
    case T_LIST:
    case T_SET: {
        int et;
        if (depth > MAX_DEPTH)
            return derr(r->pos, "nesting too deep");
        if (rd_list_header(r, &et, &n))
            return -1;
        if (et != f->etype)
            return 1;
        PyObject *lst = NULL;
        if (r->build && !(lst = PyList_New(n)))
            return -1;
        const StructDef *wsd = r->wsd;
        for (Py_ssize_t i = 0; i < n; i++) {
            PyObject *v;
            r->wsd = wsd;   /* an element struct's fields moved it */
            r->wf = f;
            int rc = rd_elem(r, f, depth + 1, &v);
            if (rc) {
                Py_XDECREF(lst);
                return rc;
            }
            if (lst)
                PyList_SET_ITEM(lst, i, v);
        }
        *out = lst;
        return 0;
    }
    default:
        return rd_scalar(r, f->ttype, f->sub, depth, out);
    }
}

/* Skip mode: the unknown field ids seen in one struct instance (decode uses the dict).
 * Open addressing, grows by doubling: O(1) per field, memory O(fields). */
#define FS_EMPTY INT32_MIN
typedef struct {
    int32_t *slots;
    uint32_t cap, n;
    int32_t small[16];
} FidSet;

static void fs_init(FidSet *s)
{
    s->slots = s->small;
    s->cap = 16;
    s->n = 0;
    for (int i = 0; i < 16; i++)
        s->small[i] = FS_EMPTY;
}

static void fs_free(FidSet *s)
{
    if (s->slots && s->slots != s->small)
        PyMem_Free(s->slots);
    s->slots = NULL;
}

static inline uint32_t fs_hash(int32_t fid, uint32_t cap)
{
    return ((uint32_t)fid * 2654435761u) & (cap - 1);
}

/* 1: already present, 0: added, -1: out of memory */
static int fs_add(FidSet *s, int32_t fid)
{
    if (!s->slots)
        fs_init(s);
    if ((s->n + 1) * 2 > s->cap) {
        uint32_t ncap = s->cap * 2;
        int32_t *ns = PyMem_Malloc(sizeof(int32_t) * ncap);
        if (!ns) {
            PyErr_NoMemory();
            return -1;
        }
        for (uint32_t i = 0; i < ncap; i++)
            ns[i] = FS_EMPTY;
        for (uint32_t i = 0; i < s->cap; i++) {
            if (s->slots[i] == FS_EMPTY)
                continue;
            uint32_t h = fs_hash(s->slots[i], ncap);
            while (ns[h] != FS_EMPTY)
                h = (h + 1) & (ncap - 1);
            ns[h] = s->slots[i];
        }
        if (s->slots != s->small)
            PyMem_Free(s->slots);
        s->slots = ns;
        s->cap = ncap;
    }
    uint32_t h = fs_hash(fid, s->cap);
    while (s->slots[h] != FS_EMPTY) {
        if (s->slots[h] == fid)
            return 1;
        h = (h + 1) & (s->cap - 1);
    }
    s->slots[h] = fid;
    s->n++;
    return 0;
}

static int rd_struct(Rd *r, const StructDef *sd, int depth, PyObject **out)
{
    *out = NULL;
    if (depth > MAX_DEPTH)
        return derr(r->pos, "nesting too deep");
    if (count_object(r))
        return -1;
    PyObject *d = NULL;
    if (r->build && !(d = PyDict_New()))
        return -1;
    uint64_t seen = 0;
    FidSet unknown = {NULL, 0, 0, {0}};
    long last = 0, fid;
    int t;
    Py_ssize_t hdr;
    for (;;) {
        int rc = rd_field_header(r, &last, &t, &fid, &hdr);
        if (rc < 0)
            goto fail;
        if (rc == 1)
            break;
        int slot = find_slot(sd, fid);
        PyObject *key = NULL;
        r->wsd = sd;
        r->wfid = fid;
        r->wf = NULL;
        if (slot >= 0) {
            const FieldDef *f = &sd->fields[slot];
            if (seen & (1ULL << slot)) {
                derr(hdr, "duplicate field id %ld", fid);
                goto fail;
            }
            seen |= 1ULL << slot;
            if (f->ttype == t || (f->ttype == T_BOOL && t == T_BOOL_FALSE)) {
                Py_ssize_t vstart = r->pos;
                PyObject *v;
                r->wf = f;
                rc = rd_field_value(r, f, t, depth + 1, &v);
                if (rc < 0)
                    goto fail;
                if (rc == 0) {
                    if (d) {
                        rc = PyDict_SetItem(d, f->name, v);
                        Py_DECREF(v);
                        if (rc)
                            goto fail;
                    }
                    continue;
                }
                r->pos = vstart;   /* element type mismatch: keep as unknown */
                r->wsd = sd;
                r->wf = NULL;
            }
            if (d && !(key = PyLong_FromLong(fid)))
                goto fail;
        } else if (d) {
            if (!(key = PyLong_FromLong(fid)))
                goto fail;
            int has = PyDict_Contains(d, key);
            if (has) {
                Py_DECREF(key);
                if (has > 0)
                    derr(hdr, "duplicate field id %ld", fid);
                goto fail;
            }
        } else {
            int has = fs_add(&unknown, (int32_t)fid);
            if (has) {
                if (has > 0)
                    derr(hdr, "duplicate field id %ld", fid);
                goto fail;
            }
        }
        /* unknown field, or known id with another wire type: keep the encoded value */
        Py_ssize_t vstart = r->pos;
        if (count_object(r) || skip_value(r, t, depth + 1, 0)) {
            Py_XDECREF(key);
            goto fail;
        }
        if (d) {
            PyObject *b = bytes_at(r, vstart, r->pos - vstart);
            PyObject *tup = b ? PyTuple_New(2) : NULL;
            if (!tup) {
                Py_XDECREF(b);
                Py_DECREF(key);
                goto fail;
            }
            Py_INCREF(TTYPE_OBJ[t]);
            PyTuple_SET_ITEM(tup, 0, TTYPE_OBJ[t]);
            PyTuple_SET_ITEM(tup, 1, b);
            PyObject_GC_UnTrack(tup);   /* (int, bytes): atomic, immutable */
            rc = PyDict_SetItem(d, key, tup);
            Py_DECREF(key);
            Py_DECREF(tup);
            if (rc)
                goto fail;
        }
    }
    fs_free(&unknown);
    *out = d;
    return 0;
fail:
    fs_free(&unknown);
    Py_XDECREF(d);
    return -1;
}

static int lookup_struct(const CodecObject *c, PyObject *name)
{
    PyObject *idx = PyDict_GetItemWithError(c->struct_map, name);
    if (!idx) {
        if (!PyErr_Occurred())
            PyErr_Format(PyExc_ValueError, "unknown struct name %R", name);
        return -1;
    }
    return (int)PyLong_AsLong(idx);
}

static PyObject *decode_impl(CodecObject *self, PyObject *args, PyObject *kw, int build, const char *fmt)
{
    static char *kwlist[] = {"name", "buf", "offset", NULL};
    PyObject *name;
    Py_buffer view;
    Py_ssize_t offset = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kw, fmt, kwlist, &PyUnicode_Type, &name, &view, &offset))
        return NULL;
    PyObject *res = NULL, *obj = NULL;
    int si = lookup_struct(self, name);
    if (si < 0)
        goto done;
    if (offset < 0 || offset > view.len) {
        PyErr_Format(PyExc_ValueError, "offset %zd outside the buffer (length %zd)", offset, view.len);
        goto done;
    }
    Rd r = {.p = view.buf, .pos = offset, .len = view.len, .build = build, .codec = self, .start = offset};
    int gc_was_enabled = build ? PyGC_Disable() : 0;
    int rc = rd_struct(&r, &self->structs[si], 1, &obj);
    if (gc_was_enabled)
        PyGC_Enable();
    if (rc)
        goto done;
    res = build ? Py_BuildValue("(Nn)", obj, r.pos) : PyLong_FromSsize_t(r.pos);
done:
    PyBuffer_Release(&view);
    return res;
}

static PyObject *Codec_decode(CodecObject *self, PyObject *args, PyObject *kw)
{
    return decode_impl(self, args, kw, 1, "O!y*|n:decode");
}

static PyObject *Codec_skip(CodecObject *self, PyObject *args, PyObject *kw)
{
    return decode_impl(self, args, kw, 0, "O!y*|n:skip");
}

/* ------------------------------------------------------------------ encoder */

typedef struct {
    uint8_t *b;
    Py_ssize_t n, cap;
} Wr;

static int wr_reserve(Wr *w, Py_ssize_t need)
{
    if (w->cap - w->n >= need)
        return 0;
    Py_ssize_t cap = w->cap ? w->cap : 256;
    while (cap - w->n < need) {
        if (cap > PY_SSIZE_T_MAX / 2) {
            PyErr_NoMemory();
            return -1;
        }
        cap *= 2;
    }
    uint8_t *nb = PyMem_Realloc(w->b, (size_t)cap);
    if (!nb) {
        PyErr_NoMemory();
        return -1;
    }
    w->b = nb;
    w->cap = cap;
    return 0;
}

static inline int wr_byte(Wr *w, uint8_t c)
{
    if (w->n == w->cap && wr_reserve(w, 1))
        return -1;
    w->b[w->n++] = c;
    return 0;
}

static inline int wr_varint(Wr *w, uint64_t v)
{
    if (wr_reserve(w, 10))
        return -1;
    while (v > 0x7f) {
        w->b[w->n++] = (uint8_t)((v & 0x7f) | 0x80);
        v >>= 7;
    }
    w->b[w->n++] = (uint8_t)v;
    return 0;
}

static int wr_bytes(Wr *w, const void *p, Py_ssize_t n)
{
    if (wr_reserve(w, n))
        return -1;
    memcpy(w->b + w->n, p, (size_t)n);
    w->n += n;
    return 0;
}

static int wr_field_header(Wr *w, long *last, long fid, int t)
{
    long delta = fid - *last;
    *last = fid;
    if (delta > 0 && delta <= 15)
        return wr_byte(w, (uint8_t)((delta << 4) | t));
    if (wr_byte(w, (uint8_t)t))
        return -1;
    return wr_varint(w, zigzag(fid));
}

/* Where an encode error happened: "Struct.field[index]" or "Struct[fid]". */
typedef struct {
    const StructDef *sd;
    const FieldDef *f;   /* NULL: unknown field (fid) or the struct itself (fid == NO_FID) */
    long fid;
    Py_ssize_t index;    /* list element index, or -1 */
} Ctx;
#define NO_FID (FID_MAX + 1)

static int eerr(const Ctx *c, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    PyObject *msg = PyUnicode_FromFormatV(fmt, ap);
    va_end(ap);
    if (!msg)
        return -1;
    PyObject *where;
    if (c->f)
        where = PyUnicode_FromFormat("%U.%U", c->sd->name, c->f->name);
    else if (c->fid != NO_FID)
        where = PyUnicode_FromFormat("%U[%ld]", c->sd->name, c->fid);
    else
        where = PyUnicode_FromFormat("%U", c->sd->name);
    if (where) {
        if (c->index >= 0)
            PyErr_Format(EncodeError, "%U[%zd]: %U", where, c->index, msg);
        else
            PyErr_Format(EncodeError, "%U: %U", where, msg);
        Py_DECREF(where);
    }
    Py_DECREF(msg);
    return -1;
}

/* eerr with "<prefix><repr(o) or type name of o>", the object text cut to 100 characters. */
static int eerr_obj(const Ctx *c, const char *prefix, PyObject *o, int use_repr)
{
    PyObject *s = use_repr ? PyObject_Repr(o) : PyUnicode_FromString(type_short_name(o));
    if (!s && use_repr) {   /* e.g. an int too large for str(); keep the EncodeError */
        PyErr_Clear();
        s = PyUnicode_FromString("<unrepresentable>");
    }
    if (!s)
        return -1;
    if (PyUnicode_GET_LENGTH(s) > 100) {
        PyObject *cut = PyUnicode_Substring(s, 0, 100);
        Py_DECREF(s);
        if (!cut)
            return -1;
        s = PyUnicode_FromFormat("%U...", cut);
        Py_DECREF(cut);
        if (!s)
            return -1;
    }
    eerr(c, "%s%U", prefix, s);
    Py_DECREF(s);
    return -1;
}

static int get_bytes_like(PyObject *v, Py_buffer *view)
{
    if (PyUnicode_Check(v) || !PyObject_CheckBuffer(v))
        return 0;
    if (PyObject_GetBuffer(v, view, PyBUF_SIMPLE)) {
        PyErr_Clear();
        return 0;
    }
    return 1;
}

/* Check that `data` is exactly one encoded value of wire type t at nesting depth `depth`. */
static int check_encoded(const Ctx *c, const CodecObject *codec, int t, const Py_buffer *view, int depth)
{
    if (t == T_BOOL || t == T_BOOL_FALSE) {
        if (view->len)
            return eerr(c, "a bool field has no encoded value bytes");
        return 0;
    }
    Rd r = {.p = view->buf, .pos = 0, .len = view->len, .build = 0, .codec = codec};
    if (skip_value(&r, t, depth, 0)) {
        if (!PyErr_ExceptionMatches(DecodeError))
            return -1;
        PyObject *et, *ev, *tb;
        PyErr_Fetch(&et, &ev, &tb);
        PyErr_NormalizeException(&et, &ev, &tb);
        PyObject *s = ev ? PyObject_Str(ev) : NULL;
        Py_XDECREF(et);
        Py_XDECREF(ev);
        Py_XDECREF(tb);
        if (s) {
            eerr(c, "invalid encoded value: %U", s);
            Py_DECREF(s);
        }
        return -1;
    }
    if (r.pos != view->len)
        return eerr(c, "invalid encoded value: %zd trailing bytes", view->len - r.pos);
    return 0;
}

static int wr_struct(Wr *w, const CodecObject *codec, const StructDef *sd, PyObject *obj, int depth);

static int wr_int(Wr *w, const Ctx *c, int t, PyObject *v)
{
    if (!PyLong_Check(v) || PyBool_Check(v))
        return eerr_obj(c, "expected int, got ", v, 0);
    int overflow;
    long long x = PyLong_AsLongLongAndOverflow(v, &overflow);
    if (x == -1 && PyErr_Occurred())
        return -1;
    long long lo, hi;
    const char *tn;
    switch (t) {
    case T_BYTE: lo = -128; hi = 127; tn = "byte"; break;
    case T_I16: lo = -32768; hi = 32767; tn = "i16"; break;
    case T_I32: lo = INT32_MIN; hi = INT32_MAX; tn = "i32"; break;
    default: lo = INT64_MIN; hi = INT64_MAX; tn = "i64"; break;
    }
    if (overflow || x < lo || x > hi) {
        char prefix[40];
        PyOS_snprintf(prefix, sizeof prefix, "value out of range for %s: ", tn);
        return eerr_obj(c, prefix, v, 1);
    }
    if (t == T_BYTE)
        return wr_byte(w, (uint8_t)(int8_t)x);
    return wr_varint(w, zigzag(x));
}

/* A value of schema type t (elem type et, struct sub) at nesting depth `depth`. */
static int wr_value(Wr *w, const CodecObject *codec, const Ctx *c, int t, int et, int sub,
                    PyObject *v, int depth)
{
    switch (t) {
    case T_BOOL:
        if (!PyBool_Check(v))
            return eerr_obj(c, "expected bool, got ", v, 0);
        return wr_byte(w, v == Py_True ? T_BOOL : T_BOOL_FALSE);   /* list element */
    case T_BYTE:
    case T_I16:
    case T_I32:
    case T_I64:
        return wr_int(w, c, t, v);
    case T_DOUBLE: {
        if (!PyFloat_Check(v))
            return eerr_obj(c, "expected float, got ", v, 0);
        double d = PyFloat_AS_DOUBLE(v);
        uint64_t u;
        uint8_t le[8];
        memcpy(&u, &d, 8);
        for (int i = 0; i < 8; i++)
            le[i] = (uint8_t)(u >> (8 * i));
        return wr_bytes(w, le, 8);
    }
    case T_BINARY: {
        Py_buffer view;
        if (!get_bytes_like(v, &view))
            return eerr_obj(c, "expected bytes-like, got ", v, 0);
        int rc;
        if (view.len > STRING_SIZE_LIMIT)
            rc = eerr(c, "binary value of %zd bytes exceeds the string size limit %ld", view.len,
                      (long)STRING_SIZE_LIMIT);
        else
            rc = (wr_varint(w, (uint64_t)view.len) || wr_bytes(w, view.buf, view.len)) ? -1 : 0;
        PyBuffer_Release(&view);
        return rc;
    }
    case T_STRUCT:
        if (!PyDict_Check(v))
            return eerr_obj(c, "expected dict, got ", v, 0);
        if (depth > MAX_DEPTH)
            return eerr(c, "nesting too deep");
        return wr_struct(w, codec, &codec->structs[sub], v, depth);
    case T_LIST:
    case T_SET: {
        int is_list = PyList_Check(v);
        if (!is_list && !PyTuple_Check(v))
            return eerr_obj(c, "expected list, got ", v, 0);
        if (depth > MAX_DEPTH)
            return eerr(c, "nesting too deep");
        Py_ssize_t n = Py_SIZE(v);
        if (n > CONTAINER_SIZE_LIMIT)
            return eerr(c, "list of %zd elements exceeds the container size limit %ld", n,
                        (long)CONTAINER_SIZE_LIMIT);
        if (n < 15) {
            if (wr_byte(w, (uint8_t)((n << 4) | et)))
                return -1;
        } else if (wr_byte(w, (uint8_t)(0xf0 | et)) || wr_varint(w, (uint64_t)n)) {
            return -1;
        }
        Ctx ec = *c;
        for (Py_ssize_t i = 0; i < n; i++) {
            if (Py_SIZE(v) != n)
                return eerr(c, "list changed size during encoding");
            PyObject *item = is_list ? PyList_GET_ITEM(v, i) : PyTuple_GET_ITEM(v, i);
            Py_INCREF(item);
            ec.index = i;
            int rc = wr_value(w, codec, &ec, et, 0, sub, item, depth + 1);
            Py_DECREF(item);
            if (rc)
                return -1;
        }
        if (Py_SIZE(v) != n)
            return eerr(c, "list changed size during encoding");
        return 0;
    }
    }
    PyErr_SetString(PyExc_SystemError, "pqseal._thrift: bad compiled type");
    return -1;
}

typedef struct {
    long fid;
    int slot;          /* -1: int key (unknown field) */
    PyObject *key, *val;
} Entry;

static int wr_entry(Wr *w, const CodecObject *codec, const StructDef *sd, const Entry *e,
                    long *last, int depth)
{
    Ctx c = {sd, e->slot >= 0 ? &sd->fields[e->slot] : NULL, e->fid, -1};
    PyObject *v = e->val;
    if (e->slot >= 0 && !c.f->raw) {
        const FieldDef *f = c.f;
        if (f->ttype == T_BOOL) {
            if (!PyBool_Check(v))
                return eerr_obj(&c, "expected bool, got ", v, 0);
            return wr_field_header(w, last, e->fid, v == Py_True ? T_BOOL : T_BOOL_FALSE);
        }
        if (wr_field_header(w, last, e->fid, f->ttype))
            return -1;
        return wr_value(w, codec, &c, f->ttype, f->etype, f->sub, v, depth + 1);
    }
    int t;
    PyObject *data;
    if (e->slot >= 0) {            /* raw known field: bytes of the encoded value */
        t = c.f->ttype;
        data = v;
    } else {                       /* unknown field: (wire_ttype, bytes) */
        if (!PyTuple_Check(v) || PyTuple_GET_SIZE(v) != 2)
            return eerr_obj(&c, "expected (ttype, bytes) tuple, got ", v, 0);
        PyObject *to = PyTuple_GET_ITEM(v, 0);
        if (!PyLong_Check(to) || PyBool_Check(to))
            return eerr_obj(&c, "expected int ttype, got ", to, 0);
        int overflow;
        long tl = PyLong_AsLongAndOverflow(to, &overflow);
        if (tl == -1 && PyErr_Occurred())
            return -1;
        if (overflow || !valid_type((int)tl) || tl != (int)tl)
            return eerr_obj(&c, "bad ttype ", to, 1);
        t = (int)tl;
        data = PyTuple_GET_ITEM(v, 1);
    }
    Py_buffer view;
    if (!get_bytes_like(data, &view))
        return eerr_obj(&c, "expected bytes-like encoded value, got ", data, 0);
    int rc = check_encoded(&c, codec, t, &view, depth + 1);
    if (!rc)
        rc = (wr_field_header(w, last, e->fid, t) || wr_bytes(w, view.buf, view.len)) ? -1 : 0;
    PyBuffer_Release(&view);
    return rc;
}

static int wr_struct(Wr *w, const CodecObject *codec, const StructDef *sd, PyObject *obj, int depth)
{
    Entry stack_entries[16];
    Entry *ent = stack_entries;
    Py_ssize_t cap = PyDict_GET_SIZE(obj), n = 0, pos = 0;
    int rc = -1;
    if (cap > 16) {
        if (!(ent = PyMem_Malloc(sizeof(Entry) * (size_t)cap))) {
            PyErr_NoMemory();
            return -1;
        }
    }
    Ctx sc = {sd, NULL, NO_FID, -1};
    PyObject *k, *v;
    while (PyDict_Next(obj, &pos, &k, &v)) {
        if (n == cap)
            break;   /* dict grew under us: handled by the size check below */
        Entry *e = &ent[n];
        Py_INCREF(k);
        Py_INCREF(v);
        e->key = k;
        e->val = v;
        n++;
        if (PyUnicode_Check(k)) {
            PyObject *slot = PyDict_GetItemWithError(sd->name_map, k);
            if (!slot) {
                if (!PyErr_Occurred())
                    eerr_obj(&sc, "unknown field name ", k, 1);
                goto done;
            }
            e->slot = (int)PyLong_AsLong(slot);
            e->fid = sd->fields[e->slot].fid;
        } else if (PyLong_Check(k) && !PyBool_Check(k)) {
            int overflow;
            long fid = PyLong_AsLongAndOverflow(k, &overflow);
            if (fid == -1 && PyErr_Occurred())
                goto done;
            if (overflow || fid < FID_MIN || fid > FID_MAX) {
                eerr_obj(&sc, "field id out of range: ", k, 1);
                goto done;
            }
            e->slot = -1;
            e->fid = fid;
        } else {
            eerr_obj(&sc, "field key must be str or int, got ", k, 0);
            goto done;
        }
    }
    if (n != PyDict_GET_SIZE(obj)) {
        eerr(&sc, "dict changed size during encoding");
        goto done;
    }
    /* insertion sort by fid (stable; dicts from decode are already in order) */
    for (Py_ssize_t i = 1; i < n; i++) {
        Entry tmp = ent[i];
        Py_ssize_t j = i;
        while (j > 0 && ent[j - 1].fid > tmp.fid) {
            ent[j] = ent[j - 1];
            j--;
        }
        ent[j] = tmp;
    }
    for (Py_ssize_t i = 1; i < n; i++) {
        if (ent[i].fid == ent[i - 1].fid) {
            eerr(&sc, "duplicate field id %ld", ent[i].fid);
            goto done;
        }
    }
    long last = 0;
    for (Py_ssize_t i = 0; i < n; i++)
        if (wr_entry(w, codec, sd, &ent[i], &last, depth))
            goto done;
    rc = wr_byte(w, 0);
done:
    for (Py_ssize_t i = 0; i < n; i++) {
        Py_DECREF(ent[i].key);
        Py_DECREF(ent[i].val);
    }
    if (ent != stack_entries)
        PyMem_Free(ent);
    return rc;
}

static PyObject *Codec_encode(CodecObject *self, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"name", "obj", NULL};
    PyObject *name, *obj;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "O!O:encode", kwlist, &PyUnicode_Type, &name, &obj))
        return NULL;
    int si = lookup_struct(self, name);
    if (si < 0)
        return NULL;
    const StructDef *sd = &self->structs[si];
    if (!PyDict_Check(obj)) {
        Ctx c = {sd, NULL, NO_FID, -1};
        eerr_obj(&c, "expected dict, got ", obj, 0);
        return NULL;
    }
    Wr w = {NULL, 0, 0};
    PyObject *res = NULL;
    if (!wr_struct(&w, self, sd, obj, 1))
        res = PyBytes_FromStringAndSize((const char *)w.b, w.n);
    PyMem_Free(w.b);
    return res;
}

/* ------------------------------------------------------------------ Codec type */

static void free_structs(CodecObject *self)
{
    if (!self->structs)
        return;
    for (int i = 0; i < self->nstructs; i++) {
        StructDef *sd = &self->structs[i];
        Py_XDECREF(sd->name);
        Py_XDECREF(sd->name_map);
        if (sd->fields) {
            for (int j = 0; j < sd->nfields; j++)
                Py_XDECREF(sd->fields[j].name);
            PyMem_Free(sd->fields);
        }
    }
    PyMem_Free(self->structs);
    self->structs = NULL;
}

static void Codec_dealloc(CodecObject *self)
{
    free_structs(self);
    Py_XDECREF(self->struct_map);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int schema_err(const char *fmt, ...)
{
    char msg[200];
    va_list ap;
    va_start(ap, fmt);
    PyOS_vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    PyErr_Format(PyExc_ValueError, "bad schema: %s", msg);
    return -1;
}

static int is_elem_type(int t)
{
    return t == T_BOOL || (t >= T_BYTE && t <= T_BINARY) || t == T_STRUCT;
}

static int compile_field(CodecObject *self, StructDef *sd, PyObject *fdef, FieldDef *f)
{
    const char *sn = PyUnicode_AsUTF8(sd->name);
    PyObject *fid_o, *name_o, *sub_o, *raw_o;
    int ttype, etype;
    if (!PyTuple_Check(fdef) || PyTuple_GET_SIZE(fdef) != 6)
        return schema_err("%s: field must be a 6-tuple (fid, name, ttype, elem_ttype, sub, raw)", sn);
    if (!PyArg_ParseTuple(fdef, "OUiiOO", &fid_o, &name_o, &ttype, &etype, &sub_o, &raw_o))
        return -1;
    long fid = PyLong_AsLong(fid_o);
    if (fid == -1 && PyErr_Occurred())
        return -1;
    if (fid < FID_MIN || fid > FID_MAX)
        return schema_err("%s: field id %ld out of range", sn, fid);
    f->fid = (int)fid;
    f->name = PyUnicode_FromObject(name_o);   /* exact str */
    if (!f->name)
        return -1;
    PyUnicode_InternInPlace(&f->name);
    const char *fn = PyUnicode_AsUTF8(f->name);
    if (!fn)
        return -1;
    int raw = PyObject_IsTrue(raw_o);
    if (raw < 0)
        return -1;
    f->raw = raw;
    f->ttype = ttype;
    f->etype = etype;
    f->sub = -1;
    if (ttype == T_BOOL_FALSE || !valid_type(ttype))
        return schema_err("%s.%s: bad ttype %d", sn, fn, ttype);
    if (ttype == T_BOOL && raw)
        return schema_err("%s.%s: a bool field cannot be raw", sn, fn);
    if (ttype == T_MAP && !raw)
        return schema_err("%s.%s: map fields must be raw", sn, fn);
    if (ttype == T_LIST || ttype == T_SET) {
        if (!raw && !is_elem_type(etype))
            return schema_err("%s.%s: unsupported element type %d (use raw)", sn, fn, etype);
    } else if (etype != 0) {
        return schema_err("%s.%s: elem_ttype given for a non-list field", sn, fn);
    }
    int needs_sub = !raw && (ttype == T_STRUCT || ((ttype == T_LIST || ttype == T_SET) && etype == T_STRUCT));
    if (needs_sub) {
        if (!PyUnicode_Check(sub_o))
            return schema_err("%s.%s: struct name required", sn, fn);
        PyObject *idx = PyDict_GetItemWithError(self->struct_map, sub_o);
        if (!idx) {
            if (PyErr_Occurred())
                return -1;
            return schema_err("%s.%s: unknown struct %s", sn, fn, PyUnicode_AsUTF8(sub_o));
        }
        f->sub = (int)PyLong_AsLong(idx);
    } else if (sub_o != Py_None && !raw) {
        return schema_err("%s.%s: sub given for a non-struct field", sn, fn);
    }
    return 0;
}

static int compile_struct(CodecObject *self, StructDef *sd, PyObject *fields)
{
    const char *sn = PyUnicode_AsUTF8(sd->name);
    PyObject *seq = PySequence_Fast(fields, "struct fields must be a sequence");
    if (!seq)
        return -1;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    int rc = -1;
    if (n > MAX_FIELDS) {
        schema_err("%s: more than %d fields", sn, MAX_FIELDS);
        goto out;
    }
    sd->fields = PyMem_Calloc(n ? (size_t)n : 1, sizeof(FieldDef));
    if (!sd->fields) {
        PyErr_NoMemory();
        goto out;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        sd->nfields = (int)i + 1;
        if (compile_field(self, sd, PySequence_Fast_GET_ITEM(seq, i), &sd->fields[i]))
            goto out;
    }
    /* sort by fid */
    for (int i = 1; i < sd->nfields; i++) {
        FieldDef tmp = sd->fields[i];
        int j = i;
        while (j > 0 && sd->fields[j - 1].fid > tmp.fid) {
            sd->fields[j] = sd->fields[j - 1];
            j--;
        }
        sd->fields[j] = tmp;
    }
    memset(sd->table, -1, sizeof sd->table);
    if (!(sd->name_map = PyDict_New()))
        goto out;
    for (int i = 0; i < sd->nfields; i++) {
        FieldDef *f = &sd->fields[i];
        if (i && f->fid == sd->fields[i - 1].fid) {
            schema_err("%s: duplicate field id %d", sn, f->fid);
            goto out;
        }
        if (PyDict_GetItemWithError(sd->name_map, f->name)) {
            schema_err("%s: duplicate field name %s", sn, PyUnicode_AsUTF8(f->name));
            goto out;
        }
        if (PyErr_Occurred())
            goto out;
        PyObject *slot = PyLong_FromLong(i);
        if (!slot || PyDict_SetItem(sd->name_map, f->name, slot)) {
            Py_XDECREF(slot);
            goto out;
        }
        Py_DECREF(slot);
        if (f->fid >= 0 && f->fid < FID_TABLE)
            sd->table[f->fid] = (int8_t)i;
    }
    rc = 0;
out:
    Py_DECREF(seq);
    return rc;
}

static int Codec_init(CodecObject *self, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"defs", NULL};
    PyObject *defs;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "O:Codec", kwlist, &defs))
        return -1;
    if (self->structs || self->struct_map) {
        PyErr_SetString(PyExc_TypeError, "Codec is already initialised");
        return -1;
    }
    PyObject *seq = PySequence_Fast(defs, "defs must be a sequence of (name, fields)");
    if (!seq)
        return -1;
    int rc = -1;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    if (n > 10000) {
        schema_err("too many structs");
        goto out;
    }
    if (!(self->struct_map = PyDict_New()))
        goto out;
    self->structs = PyMem_Calloc(n ? (size_t)n : 1, sizeof(StructDef));
    if (!self->structs) {
        PyErr_NoMemory();
        goto out;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *d = PySequence_Fast_GET_ITEM(seq, i), *name, *fields;
        if (!PyTuple_Check(d) || PyTuple_GET_SIZE(d) != 2) {
            schema_err("each def must be a (name, fields) tuple");
            goto out;
        }
        if (!PyArg_ParseTuple(d, "UO", &name, &fields))
            goto out;
        self->nstructs = (int)i + 1;
        StructDef *sd = &self->structs[i];
        if (!(sd->name = PyUnicode_FromObject(name)))
            goto out;
        PyObject *idx = PyLong_FromSsize_t(i);
        if (!idx)
            goto out;
        if (PyDict_GetItemWithError(self->struct_map, sd->name)) {
            Py_DECREF(idx);
            schema_err("duplicate struct %s", PyUnicode_AsUTF8(sd->name));
            goto out;
        }
        if (PyErr_Occurred() || PyDict_SetItem(self->struct_map, sd->name, idx)) {
            Py_DECREF(idx);
            goto out;
        }
        Py_DECREF(idx);
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *d = PySequence_Fast_GET_ITEM(seq, i);
        if (compile_struct(self, &self->structs[i], PyTuple_GET_ITEM(d, 1)))
            goto out;
    }
    rc = 0;
out:
    Py_DECREF(seq);
    if (rc) {
        free_structs(self);
        self->nstructs = 0;
        Py_CLEAR(self->struct_map);
    }
    return rc;
}

static PyObject *Codec_structs(CodecObject *self, void *closure)
{
    if (!self->struct_map)
        return PyTuple_New(0);
    PyObject *t = PyTuple_New(self->nstructs);
    if (!t)
        return NULL;
    for (int i = 0; i < self->nstructs; i++) {
        Py_INCREF(self->structs[i].name);
        PyTuple_SET_ITEM(t, i, self->structs[i].name);
    }
    return t;
}

static int ready(CodecObject *self)
{
    if (!self->struct_map) {
        PyErr_SetString(PyExc_ValueError, "Codec is not initialised");
        return 0;
    }
    return 1;
}

static PyObject *Codec_decode_m(CodecObject *self, PyObject *args, PyObject *kw)
{
    return ready(self) ? Codec_decode(self, args, kw) : NULL;
}
static PyObject *Codec_skip_m(CodecObject *self, PyObject *args, PyObject *kw)
{
    return ready(self) ? Codec_skip(self, args, kw) : NULL;
}
static PyObject *Codec_encode_m(CodecObject *self, PyObject *args, PyObject *kw)
{
    return ready(self) ? Codec_encode(self, args, kw) : NULL;
}

static PyMethodDef Codec_methods[] = {
    {"decode", (PyCFunction)(void (*)(void))Codec_decode_m, METH_VARARGS | METH_KEYWORDS,
     "decode(name, buf, offset=0) -> (dict, end_offset)"},
    {"encode", (PyCFunction)(void (*)(void))Codec_encode_m, METH_VARARGS | METH_KEYWORDS,
     "encode(name, obj) -> bytes"},
    {"skip", (PyCFunction)(void (*)(void))Codec_skip_m, METH_VARARGS | METH_KEYWORDS,
     "skip(name, buf, offset=0) -> end_offset (validates like decode, builds nothing)"},
    {NULL}
};

static PyGetSetDef Codec_getset[] = {
    {"structs", (getter)Codec_structs, NULL, "names of the compiled structs", NULL},
    {NULL}
};

static PyTypeObject CodecType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "pqseal._thrift.Codec",
    .tp_basicsize = sizeof(CodecObject),
    .tp_dealloc = (destructor)Codec_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Codec(defs): compiled Thrift compact-protocol schema",
    .tp_methods = Codec_methods,
    .tp_getset = Codec_getset,
    .tp_init = (initproc)Codec_init,
    .tp_new = PyType_GenericNew,
};

static struct PyModuleDef thrift_module = {
    PyModuleDef_HEAD_INIT, "pqseal._thrift",
    "Schema-directed Thrift compact protocol codec (lossless, bounded).", -1, NULL, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__thrift(void)
{
    if (PyType_Ready(&CodecType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&thrift_module);
    if (!m)
        return NULL;
    for (int i = 0; i < 13; i++)
        if (!TTYPE_OBJ[i] && !(TTYPE_OBJ[i] = PyLong_FromLong(i)))
            goto fail;
    if (!DecodeError && !(DecodeError = PyErr_NewExceptionWithDoc(
            "pqseal._thrift.DecodeError", "Malformed or out-of-bounds Thrift compact input.",
            PyExc_ValueError, NULL)))
        goto fail;
    if (!EncodeError && !(EncodeError = PyErr_NewExceptionWithDoc(
            "pqseal._thrift.EncodeError", "A value does not fit the Thrift schema.",
            PyExc_ValueError, NULL)))
        goto fail;
    Py_INCREF(DecodeError);
    if (PyModule_AddObject(m, "DecodeError", DecodeError)) {
        Py_DECREF(DecodeError);
        goto fail;
    }
    Py_INCREF(EncodeError);
    if (PyModule_AddObject(m, "EncodeError", EncodeError)) {
        Py_DECREF(EncodeError);
        goto fail;
    }
    Py_INCREF(&CodecType);
    if (PyModule_AddObject(m, "Codec", (PyObject *)&CodecType)) {
        Py_DECREF(&CodecType);
        goto fail;
    }
    if (PyModule_AddIntConstant(m, "MAX_DEPTH", MAX_DEPTH)
        || PyModule_AddIntConstant(m, "STRING_SIZE_LIMIT", STRING_SIZE_LIMIT)
        || PyModule_AddIntConstant(m, "CONTAINER_SIZE_LIMIT", CONTAINER_SIZE_LIMIT)
        || PyModule_AddIntConstant(m, "OBJECT_BUDGET_BASE", OBJECT_BUDGET_BASE)
        || PyModule_AddIntConstant(m, "BYTES_PER_OBJECT", BYTES_PER_OBJECT))
        goto fail;
    return m;
fail:
    Py_DECREF(m);
    return NULL;
}
