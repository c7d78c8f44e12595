"""Batch module ciphers over the native core (hazmat layer).

A batch is many PME modules encrypted or decrypted in one native call with the GIL
released. Input is either a sequence of bytes-like objects or one contiguous buffer
with ``offsets`` and ``lengths`` (the fast path: no per-module Python work). Output
is one contiguous buffer that Python allocates and C fills in place.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np

from .. import _backend
from .._native import ffi, lib
from ..errors import (CryptoLibraryError, InvalidKey, InvalidOrdinal, InvalidTag,
                      InvocationLimitExceeded, MalformedModule, ShortBuffer)
from .keys import ModuleKey
from .modules import ModuleType

NONCE_LEN = 12
TAG_LEN = 16
LEN_PREFIX = 4

_ALGS = {"gcm": lib.PQ_ALG_GCM, "ctr": lib.PQ_ALG_CTR}


class Batch:
    """Output of a batch call: ``buffer`` (numpy uint8) holding module ``i`` at
    ``buffer[offsets[i]:offsets[i] + lengths[i]]``."""

    __slots__ = ("buffer", "offsets", "lengths")

    def __init__(self, buffer: np.ndarray, offsets: np.ndarray, lengths: np.ndarray):
        self.buffer, self.offsets, self.lengths = buffer, offsets, lengths

    def __len__(self) -> int:
        return len(self.lengths)

    def __getitem__(self, i: int) -> memoryview:
        o = int(self.offsets[i])
        return self.buffer[o:o + int(self.lengths[i])].data

    def __iter__(self) -> Iterator[memoryview]:
        return (self[i] for i in range(len(self)))

    def to_list(self) -> list[bytes]:
        return [bytes(m) for m in self]

    @property
    def nbytes(self) -> int:
        return int(self.lengths.sum())

    def __repr__(self) -> str:
        return f"<Batch {len(self)} modules, {self.nbytes} bytes>"


def _u64_view(arr, name: str) -> np.ndarray:
    """A 1-D contiguous uint64 view of non-negative integers (no copy when already int64/uint64)."""
    a = np.asarray(arr)
    if a.size == 0:
        return np.zeros(0, dtype=np.uint64)
    if a.ndim != 1:
        raise ValueError(f"{name} must be 1-D")
    if a.dtype == np.uint64:
        return np.ascontiguousarray(a)
    if a.dtype.kind not in "iu":
        raise TypeError(f"{name} must hold integers")
    a = np.ascontiguousarray(a, dtype=np.int64)
    if a.size and a.min() < 0:
        raise ValueError(f"{name} must not be negative")
    return a.view(np.uint64)


def _as_meta(value, n: int, dtype, name: str, lo: int, hi: int, error=InvalidOrdinal):
    """A scalar (returned as int) or an array of n values (returned contiguous in
    ``dtype``). An array already in ``dtype`` goes to the core as it is, which checks the
    range wherever the value is used (naming the module); any other is checked here, as
    narrowing it could wrap a value into range."""
    if isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_)):
        v = int(value)
        if not lo <= v <= hi:
            raise error(f"{name} {v} outside {lo}..{hi}")
        return v, None
    if isinstance(value, (bool, np.bool_)) or np.isscalar(value):
        raise error(f"{name} must be an integer, got {type(value).__name__}")
    arr = np.asarray(value)
    if arr.shape != (n,):
        raise ValueError(f"{name} must be a scalar or have one entry per module ({n}), got shape {arr.shape}")
    if arr.dtype == dtype and arr.flags.c_contiguous:
        return 0, arr
    if arr.size and arr.dtype.kind not in "iu":
        raise error(f"{name} must hold integers, got {arr.dtype}")
    if arr.size and (arr.min() < lo or arr.max() > hi):
        bad = int(np.flatnonzero((arr < lo) | (arr > hi))[0])
        raise error(f"{name} {int(arr[bad])} of module {bad} outside {lo}..{hi}")
    return 0, np.ascontiguousarray(arr, dtype=dtype)


def _pointer(handles: list, ctype: str, arr: np.ndarray):
    """A C pointer to the data of the contiguous array ``arr`` (released with ``handles``)."""
    p = ffi.from_buffer(ctype, arr)
    handles.append(p)
    return p


@dataclass(frozen=True, kw_only=True)
class BatchSpec:
    """One native batch call: what :meth:`encrypt_batch`, :meth:`decrypt_batch`, the
    single-module calls, footer signing and local key wrapping all come down to.

    ``modules`` is a sequence of bytes-like modules, or one buffer with ``offsets`` and
    ``lengths``. Metadata (``module_type``, ordinals, ``key_index``) are scalars or one
    entry per module. ``out``/``out_offsets``: a caller's output buffer and where each
    module goes in it. ``aad_mode``, ``aad`` and ``framing`` override the cipher's
    (key wrapping: one fixed AAD, raw ``nonce ‖ ct ‖ tag``). ``nonces`` is a test hook
    (known-answer vectors): n × 12 bytes used instead of the DRBG."""

    encrypt: bool
    modules: Any
    offsets: Any = None
    lengths: Any = None
    module_type: Any = ModuleType.DATA_PAGE
    row_group: Any = 0
    column: Any = 0
    page: Any = 0
    key_index: Any = 0
    threads: int = 1
    out: Any = None
    out_offsets: Any = None
    nonces: bytes | None = None
    aad_mode: int | None = None
    aad: bytes | None = None
    framing: int | None = None


class _ModuleCipher:
    """Shared machinery of :class:`GcmModuleCipher` and :class:`CtrModuleCipher`."""

    _alg = "gcm"
    _framing = lib.PQ_FRAME_MODULE

    def __init__(self, keys, file_aad: bytes = b"", *, backend: str | None = None, module_aad: bool = True):
        if isinstance(keys, (list, tuple)):
            key_list = [ModuleKey.coerce(k) for k in keys]
        else:
            key_list = [ModuleKey.coerce(keys)]
        if not key_list:
            raise InvalidKey("at least one key is required")
        if len(key_list) > 65535:
            raise InvalidKey("at most 65535 keys per cipher")
        self._keys = key_list
        self._key_table = ffi.new("pq_key *[]", [k._handle() for k in key_list])
        self.file_aad = bytes(file_aad)
        # module_aad=False: no AAD at all (DuckDB's non-spec files)
        self._aad_mode = lib.PQ_AAD_MODULE if module_aad else lib.PQ_AAD_FIXED
        if not module_aad and self.file_aad:
            raise ValueError("module_aad=False takes no file AAD")
        self.backend, self._backend_code = _backend.backend_code(backend)

    @property
    def keys(self) -> list[ModuleKey]:
        return list(self._keys)

    @property
    def algorithm(self) -> str:
        return self._alg

    @property
    def overhead(self) -> int:
        """Bytes a module grows by when encrypted."""
        return LEN_PREFIX + NONCE_LEN + (TAG_LEN if self._alg == "gcm" else 0)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} backend={self.backend} keys={len(self._keys)}>"

    def __reduce__(self):
        raise TypeError(f"{type(self).__name__} holds keys and cannot be pickled")

    # ---- batch API -----------------------------------------------------------------

    def encrypt_batch(self, modules, *, offsets=None, lengths=None, module_type=ModuleType.DATA_PAGE,
                      row_group=0, column=0, page=0, key_index=0, threads: int = 1,
                      out=None, out_offsets=None) -> Batch:
        """Encrypt many modules in one native call; returns the framed modules
        (``len ‖ nonce ‖ ciphertext [‖ tag]``). Metadata arguments are scalars or
        arrays with one entry per module. ``threads`` > 1 splits the batch across
        native threads (0 = all cores)."""
        return self._run(BatchSpec(encrypt=True, modules=modules, offsets=offsets, lengths=lengths,
                                   module_type=module_type, row_group=row_group, column=column, page=page,
                                   key_index=key_index, threads=threads, out=out, out_offsets=out_offsets))

    def decrypt_batch(self, modules, *, offsets=None, lengths=None, module_type=ModuleType.DATA_PAGE,
                      row_group=0, column=0, page=0, key_index=0, threads: int = 1,
                      out=None, out_offsets=None) -> Batch:
        """Decrypt and verify many framed modules in one native call. Any failure
        raises (:class:`InvalidTag` names the first failing module) and no output
        of the batch is returned (the output buffer is wiped)."""
        return self._run(BatchSpec(encrypt=False, modules=modules, offsets=offsets, lengths=lengths,
                                   module_type=module_type, row_group=row_group, column=column, page=page,
                                   key_index=key_index, threads=threads, out=out, out_offsets=out_offsets))

    # ---- single-module conveniences ------------------------------------------------

    def encrypt(self, data, module_type=ModuleType.DATA_PAGE, row_group: int = 0, column: int = 0,
                page: int = 0, *, key_index: int = 0) -> bytes:
        return self._run(BatchSpec(encrypt=True, modules=[data], module_type=module_type, row_group=row_group,
                                   column=column, page=page, key_index=key_index)).buffer.tobytes()

    def decrypt(self, module, module_type=ModuleType.DATA_PAGE, row_group: int = 0, column: int = 0,
                page: int = 0, *, key_index: int = 0) -> bytes:
        return self._run(BatchSpec(encrypt=False, modules=[module], module_type=module_type, row_group=row_group,
                                   column=column, page=page, key_index=key_index)).buffer.tobytes()

    # ---- the one place that talks to C -----------------------------------------------

    def _run(self, spec: BatchSpec) -> Batch:
        pinned: list[ModuleKey] = []
        handles: list[object] = []  # every ffi.from_buffer handle, released deterministically below
        try:
            for k in self._keys:  # keys stay alive (and open) for the whole native call
                k._acquire()
                pinned.append(k)
            return self._run_pinned(handles, spec)
        finally:
            # Release buffer exports now rather than at garbage collection: a memoryview
            # with a live export caught in an exception's reference cycle crashes
            # CPython 3.11's GC when it is collected.
            for h in handles:
                ffi.release(h)
            for k in pinned:
                k._release()

    def _run_pinned(self, handles: list, spec: BatchSpec) -> Batch:
        encrypt, modules, offsets, lengths = spec.encrypt, spec.modules, spec.offsets, spec.lengths
        module_type, row_group, column, page = spec.module_type, spec.row_group, spec.column, spec.page
        key_index, threads, nonces = spec.key_index, spec.threads, spec.nonces
        out, out_offsets = spec.out, spec.out_offsets
        aad_mode, aad, framing = spec.aad_mode, spec.aad, spec.framing
        b = ffi.new("pq_batch *")
        if offsets is not None or lengths is not None:
            if offsets is None or lengths is None:
                raise ValueError("offsets and lengths go together")
            src_buf = ffi.from_buffer(modules)
            handles.append(src_buf)
            offs = _u64_view(offsets, "offsets")
            src_lens = _u64_view(lengths, "lengths")
            if offs.shape != src_lens.shape:
                raise ValueError("offsets and lengths must be of equal length")
            n = offs.size
            b.src_base = src_buf
            b.src_size = len(src_buf)
            if n:
                b.src_off = _pointer(handles, "uint64_t[]", offs)
        else:
            if isinstance(modules, (bytes, bytearray, memoryview, np.ndarray)):
                raise TypeError("pass a sequence of modules, or one buffer with offsets= and lengths=")
            bufs = []
            for m in modules:
                bufs.append(ffi.from_buffer(m))
                handles.append(bufs[-1])
            n = len(bufs)
            src_lens = np.fromiter((len(x) for x in bufs), dtype=np.uint64, count=n)
            if n:
                ptr_arr = ffi.new("uint8_t *[]", bufs)
                b.src = ptr_arr

        framing = self._framing if framing is None else framing
        ov = self.overhead if framing == lib.PQ_FRAME_MODULE else NONCE_LEN + TAG_LEN
        out_lens = src_lens.view(np.int64) + ov if encrypt else np.maximum(src_lens.view(np.int64) - ov, 0)
        if out_offsets is None:
            dst_offs = np.empty(n, dtype=np.int64)
            if n:
                dst_offs[0] = 0
                out_lens[:-1].cumsum(out=dst_offs[1:])
        else:
            if out is None:
                raise ValueError("out_offsets needs out")
            dst_offs = _u64_view(out_offsets, "out_offsets").view(np.int64)
            if dst_offs.shape != (n,):
                raise ValueError("out_offsets needs one entry per module")
        if out is None:
            total = int(dst_offs[-1] + out_lens[-1]) if n else 0
            out_arr = np.empty(total, dtype=np.uint8)
            dst_buf = ffi.from_buffer(out_arr, require_writable=True)
            handles.append(dst_buf)
        else:
            dst_buf = ffi.from_buffer(out, require_writable=True)
            handles.append(dst_buf)
            out_arr = out.reshape(-1).view(np.uint8) if isinstance(out, np.ndarray) else np.frombuffer(out, np.uint8)
        b.dst_base = dst_buf
        b.dst_size = len(dst_buf)
        if n:
            b.src_len = _pointer(handles, "uint64_t[]", src_lens)
            b.dst_off = _pointer(handles, "uint64_t[]", dst_offs)

        b.backend = self._backend_code
        b.algorithm = _ALGS[self._alg]
        b.framing = framing
        b.aad_mode = self._aad_mode if aad_mode is None else aad_mode
        aad_bytes = self.file_aad if aad is None else aad
        if aad_bytes:
            aad_c = ffi.from_buffer(aad_bytes)
            handles.append(aad_c)
            b.aad = aad_c
        b.aad_len = len(aad_bytes)
        b.keys = self._key_table
        b.nkeys = len(self._keys)
        if threads == 0:
            threads = os.cpu_count() or 1
        b.threads = int(threads)
        b.n = n
        mt0, mt = _as_meta(module_type, n, np.uint8, "module_type", 0, 9, ValueError)
        rg0, rg = _as_meta(row_group, n, np.int32, "row group", 0, 32767)
        col0, col = _as_meta(column, n, np.int32, "column", 0, 32767)
        pg0, pg = _as_meta(page, n, np.int32, "page", 0, 32767)
        ki0, ki = _as_meta(key_index, n, np.uint16, "key_index", 0, len(self._keys) - 1, InvalidKey)
        b.mtype0, b.rg0, b.col0, b.page0, b.key_index0 = mt0, rg0, col0, pg0, ki0
        if mt is not None:
            b.mtype = _pointer(handles, "uint8_t[]", mt)
        if rg is not None:
            b.rg = _pointer(handles, "int32_t[]", rg)
        if col is not None:
            b.col = _pointer(handles, "int32_t[]", col)
        if pg is not None:
            b.page = _pointer(handles, "int32_t[]", pg)
        if ki is not None:
            b.key_index = _pointer(handles, "uint16_t[]", ki)
        if nonces is not None:
            nb = ffi.from_buffer(nonces)
            handles.append(nb)
            if len(nb) != n * NONCE_LEN:
                raise ValueError(f"need {n * NONCE_LEN} nonce bytes, got {len(nb)}")
            b.nonces = nb

        status = lib.pq_encrypt_batch(b) if encrypt else lib.pq_decrypt_batch(b)
        if status != lib.PQ_OK:
            idx = b.fail_index
            idx = None if idx == ffi.cast("size_t", -1) else int(idx)
            self._raise(status, idx, encrypt, (mt0, mt), (rg0, rg), (col0, col), (pg0, pg), (ki0, ki),
                        b.aad_mode, n)
        return Batch(out_arr, dst_offs, out_lens)

    def _raise(self, status, idx, encrypt, mt, rg, col, pg, ki, aad_mode, n=2):
        def at(pair):
            scalar, arr = pair
            return int(arr[idx]) if (arr is not None and idx is not None) else scalar

        where = ("module" if n == 1 else f"module {idx}") if idx is not None else "batch"
        if aad_mode == lib.PQ_AAD_MODULE and idx is not None:
            t = ModuleType(at(mt))
            parts = [t.name]
            if t.has_ordinals:
                parts += [f"row group {at(rg)}", f"column {at(col)}"]
            if t.has_page_ordinal:
                parts.append(f"page {at(pg)}")
            where += " (" + ", ".join(parts) + ")"
        if status == lib.PQ_ERR_TAG:
            info = {}
            if aad_mode == lib.PQ_AAD_MODULE and idx is not None:
                t = ModuleType(at(mt))
                info = dict(module_type=t, row_group=at(rg) if t.has_ordinals else None,
                            column=at(col) if t.has_ordinals else None,
                            page=at(pg) if t.has_page_ordinal else None)
            raise InvalidTag(f"authentication tag mismatch in {where}: tampered data, wrong key or wrong AAD",
                             index=idx, **info)
        if status == lib.PQ_ERR_LENGTH:
            what = "too large to encrypt" if encrypt else "truncated or malformed (length prefix/size mismatch)"
            raise MalformedModule(f"{where} is {what}", index=idx)
        if status == lib.PQ_ERR_SHORT_BUFFER:
            raise ShortBuffer(f"output buffer too small for {where}")
        if status == lib.PQ_ERR_ORDINAL:
            raise InvalidOrdinal(f"ordinal of {where} outside 0..32767")
        if status == lib.PQ_ERR_KEY_INDEX:
            raise InvalidKey(f"key index of {where} outside the key table")
        if status == lib.PQ_ERR_LIMIT:
            raise InvocationLimitExceeded(
                f"key #{at(ki)} reached 2^32 encryptions; use a fresh key")
        if status == lib.PQ_ERR_MODULE_TYPE:
            raise ValueError(f"unknown module type in {where}")
        if status == lib.PQ_ERR_BACKEND:
            raise _backend.unavailable(self.backend)
        if status == lib.PQ_ERR_FIPS:
            raise _backend.native_error(status)
        if status == lib.PQ_ERR_RNG:
            raise _backend.rng_error()
        if status == lib.PQ_ERR_ARGUMENT:
            if idx is not None:
                raise ValueError(f"{where} lies outside the input buffer")
            raise ValueError("inconsistent batch arguments")
        raise CryptoLibraryError(f"native cipher failed in {where} (status {status})")


class GcmModuleCipher(_ModuleCipher):
    """AES-GCM PME modules: ``len(4 LE) ‖ nonce(12) ‖ ciphertext ‖ tag(16)`` with the
    module AAD built from ``file_aad``, module type and ordinals."""

    _alg = "gcm"

    def footer_signature(self, footer: bytes, *, key_index: int = 0) -> bytes:
        """``nonce ‖ tag`` of GCM over ``footer`` with the footer AAD (plaintext-footer
        signing, PME §5.5) under a fresh nonce from the DRBG: the ciphertext is discarded."""
        return self._footer_tag(footer, key_index, None)

    def verify_footer_signature(self, footer: bytes, signature: bytes, *, key_index: int = 0) -> None:
        """Raise :class:`InvalidTag` unless ``signature`` (``nonce ‖ tag``) signs ``footer``."""
        import hmac

        if len(signature) != NONCE_LEN + TAG_LEN:
            raise MalformedModule(f"footer signature must be {NONCE_LEN + TAG_LEN} bytes")
        expect = self._footer_tag(footer, key_index, bytes(signature[:NONCE_LEN]))
        if not hmac.compare_digest(expect, bytes(signature)):
            raise InvalidTag("plaintext footer signature mismatch: the footer was altered or the footer key is wrong",
                             module_type=ModuleType.FOOTER)

    def _footer_tag(self, footer: bytes, key_index: int, nonce: bytes | None) -> bytes:
        """``nonce ‖ tag`` over ``footer``. A given ``nonce`` (read from a file, to verify
        its signature) is for recomputing a tag only: its output is compared, never
        written, so no caller can make pqseal sign under a nonce of its choice."""
        batch = self._run(BatchSpec(encrypt=True, modules=[footer], module_type=ModuleType.FOOTER,
                                    key_index=key_index, nonces=nonce, framing=lib.PQ_FRAME_RAW))
        raw = batch.buffer
        return raw[:NONCE_LEN].tobytes() + raw[len(raw) - TAG_LEN:].tobytes()


class CtrModuleCipher(_ModuleCipher):
    """AES-CTR PME page modules (AES_GCM_CTR_V1 data/dictionary pages):
    ``len(4 LE) ‖ nonce(12) ‖ ciphertext``, counter block ``nonce ‖ 00000001``, no
    tag and no AAD. CTR has no integrity: tampering is only caught by page CRCs."""

    _alg = "ctr"

    def __init__(self, keys, *, backend: str | None = None):
        super().__init__(keys, b"", backend=backend)

