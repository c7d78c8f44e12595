"""The sealing sink (issue 9, item 2): a binary file that any Parquet writer writes a
plaintext Parquet file into, and that is a PME file at its destination once closed.

    with pqseal.open("out.parquet", "wb", encryption=cfg) as f:
        df.write_parquet(f)            # polars; or pq.write_table(t, f), pandas to_parquet(f)

A Parquet file's footer comes last, and only the footer says where the column chunks
lie, so the stream cannot be sealed as it arrives. The sink holds it in a
:class:`~pqseal.io.spill.SpillStore`: the newest ``memory_limit`` bytes in memory, older
bytes spilled to an unnamed file in ``spill_dir`` (default: the destination's directory),
encrypted with AES-GCM under a key that exists only in this process's memory. On
``close()`` the engine reads the store by range (the footer first, then one column chunk
at a time, decrypting the spilled blocks a range covers) and seals it into the
destination.

Memory: at most ``memory_limit`` bytes of the stream (default 64 MiB) plus five spill
blocks (a quarter of the limit each, at most 2 MiB) while writing, 74 MiB at the default;
while sealing on close, in addition about three times the largest column chunk and two
decrypted spill blocks.
After close up to 64 MiB of blocks are kept for the next sink of the process (faulting in
fresh memory costs more than the copy into it).

Disk: while writing, only the spill file, which has no name (gone when the process
dies, however it dies) and holds only ciphertext. On close a local destination is written
as a temporary file beside it, flushed and renamed into place (external key material
committed with it), exactly as :func:`pqseal.encrypt_file` does. Nothing reaches the
destination if the writer fails (an exception inside ``with``, :meth:`SealingSink.abort`),
if the bytes written are no plaintext Parquet file (:class:`~pqseal.errors.MalformedFile`,
or :class:`~pqseal.format.AlreadyEncrypted` for a PME file), or if the sink is garbage
collected without ``close()``.
"""

from __future__ import annotations

import errno
import io
import os
import warnings

from ..api import _is_path, _material_store, _recover_once, encryption_properties
from ..format.engine import transform, transform_into
from ..format.properties import EncryptionProperties
from .spill import SpillStore

DEFAULT_MEMORY_LIMIT = 64 << 20


class SealingSink(io.RawIOBase):
    """A write-only, non-seekable binary file (see the module documentation). ``tell()``
    is the number of bytes written. ``close()`` seals; ``abort()`` discards; as a context
    manager an exception inside ``with`` discards. Closing twice is harmless; after a
    write failed (which discards the stream) the first ``close()`` raises."""

    def __init__(self, dst, encryption: EncryptionProperties, *, overwrite: bool, memory_limit: int,
                 spill_dir: str, fsync: bool, backend: str | None, name: str):
        super().__init__()
        self._dst = dst
        self._encryption = encryption
        self._overwrite = overwrite
        self._fsync = fsync
        self._backend = backend
        self._name = name
        self._store: SpillStore | None = SpillStore(memory_limit=memory_limit, spill_dir=spill_dir, name=name)
        self.stats = None   # the engine's Stats once sealed
        self._failed: BaseException | None = None   # the error of a write that discarded the stream
        self._spilled = 0

    # ---- the file interface -----------------------------------------------------------

    def writable(self) -> bool:
        return True

    def readable(self) -> bool:
        return False

    def seekable(self) -> bool:
        return False

    def readinto(self, buffer) -> int:
        raise io.UnsupportedOperation("a sealing sink is write-only")

    def write(self, data) -> int:
        store = self._store
        if store is None:
            raise ValueError("write to a closed sink")
        data = memoryview(data)     # not bytes-like: a TypeError that leaves the stream as it was
        try:
            return store.append(data)
        except BaseException as exc:
            self._failed = exc
            self.abort()
            raise

    def tell(self) -> int:
        store = self._store
        if store is None:
            raise ValueError("tell on a closed sink")
        return store.size

    def flush(self) -> None:
        if self.closed:
            raise ValueError("flush of a closed sink")

    def __repr__(self) -> str:
        store = self._store
        state = "closed" if store is None else f"{store.size} bytes written"
        return f"<SealingSink {self._name} ({state})>"

    # ---- the end ----------------------------------------------------------------------

    @property
    def spilled_bytes(self) -> int:
        """Bytes of the stream spilled (encrypted) so far."""
        return self._store.spilled_bytes if self._store is not None else self._spilled

    def close(self) -> None:
        """Seal what was written into the destination; on failure nothing reaches it
        (the error is raised) and the sink is closed all the same. After a write failed
        (and so discarded the stream) the first ``close()`` raises too: the destination
        was not written."""
        store = self._store
        if store is None:
            failed, self._failed = self._failed, None
            super().close()
            if failed is not None:
                raise ValueError(f"{self._name} was not written: a write into the sink failed "
                                 f"({type(failed).__name__}: {failed})") from failed
            return
        try:
            store.freeze()
            self.stats = self._seal(store)
        finally:
            self._drop()

    def abort(self) -> None:
        """Discard what was written: nothing reaches the destination."""
        self._drop()

    def _drop(self) -> None:
        store, self._store = self._store, None
        if store is not None:
            self._spilled = store.spilled_bytes
            store.close()
        super().close()

    def _seal(self, store: SpillStore):
        if _is_path(self._dst):
            return transform(store, self._dst, encryption=self._encryption, backend=self._backend,
                             overwrite=self._overwrite, expect="plaintext", fsync=self._fsync,
                             companion=_material_store(self._dst, self._encryption))
        stats = transform_into(store, self._dst, encryption=self._encryption, backend=self._backend,
                               expect="plaintext", name=self._name)
        flush = getattr(self._dst, "flush", None)
        if flush is not None:
            flush()
        return stats

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.abort()
        else:
            self.close()

    def __del__(self) -> None:
        # collected without close(): the writer may not have finished, so never seal
        if getattr(self, "_store", None) is not None:
            try:
                warnings.warn(f"{self._name}: sealing sink collected without close(); nothing was written",
                              ResourceWarning, stacklevel=2)
            except Exception:   # interpreter shutdown
                pass
            self.abort()


def open_sink(dst, *, encryption=None, kms=None, overwrite: bool = False, memory_limit: int = DEFAULT_MEMORY_LIMIT,
              spill_dir=None, fsync: bool = True, backend: str | None = None, zones=None) -> SealingSink:
    """A writable binary file that any Parquet writer writes a plaintext Parquet file
    into; ``close()`` seals it into ``dst``.

    ``dst``: a local path (written as a temporary file beside it and renamed; an existing
    file is refused with :class:`~pqseal.errors.OutputExists` unless ``overwrite``), or a
    writable binary file object positioned at its start (an fsspec file, say): the sealed
    file is written into it on ``close()`` and it is flushed, not closed (committing or
    discarding it is the caller's business; on a failure while sealing it may hold part
    of a file, which the caller must discard).

    ``encryption``: an :class:`~pqseal.config.EncryptionConfig` or pyarrow
    ``EncryptionConfiguration`` (fresh data keys wrapped by ``kms``, default the local
    keystore) or explicit :class:`EncryptionProperties`; None: the policy of ``dst``'s
    encryption zone (a ValueError here when there is none; ``zones``: the zones file, see
    :func:`pqseal.io.zones.policy_for`). A file object is placed by its ``path``
    attribute, if it has one.

    ``memory_limit``: bytes of the stream held in memory before older bytes are spilled
    (encrypted under an ephemeral in-memory key) to an unnamed file in ``spill_dir``
    (default: the destination's directory, or the system temporary directory for a file
    object). Memory stays below ``memory_limit`` plus 10 MiB while writing, plus about
    three times the largest column chunk while sealing. ``fsync``: flush a local
    destination to disk before renaming it into place."""
    path = _is_path(dst)
    if not path and not hasattr(dst, "write"):
        raise TypeError(f"dst must be a path or a writable binary file object, not {type(dst).__name__}")
    if path:
        from .._io import plan_output

        out = plan_output(dst, overwrite=overwrite)   # refuse now, not after the writer's work
        _recover_once(out.path)
        name, directory = out.path, out.directory
    else:
        name = str(getattr(dst, "path", None) or getattr(dst, "name", None) or "<file object>")
        directory = None
    if encryption is None:
        policy = _zone_policy(name if path else getattr(dst, "path", None), zones)
        from .zones import encryption_config_for

        encryption = encryption_config_for(policy, name if path else getattr(dst, "path", None))
        if kms is None:
            kms = policy.kms
    spill_dir = os.fspath(spill_dir) if spill_dir is not None else (directory or _tmpdir())
    if not os.path.isdir(spill_dir):
        raise FileNotFoundError(errno.ENOENT, f"spill directory {spill_dir} does not exist")
    props = encryption_properties(encryption, dst if path else None, kms=kms)
    if props.external_key_material and not path:
        raise ValueError("external key material needs a local path as destination, not a file object")
    return SealingSink(dst, props, overwrite=overwrite, memory_limit=int(memory_limit), spill_dir=spill_dir,
                       fsync=fsync, backend=backend, name=name)


def _zone_policy(where, zones):
    from .zones import policy_for

    policy = policy_for(where, zones=zones) if where else None
    if policy is None:
        raise ValueError(f"no encryption given and {where or 'the destination'} lies in no encryption zone: "
                         "pass encryption= (an EncryptionConfig or EncryptionProperties)")
    return policy


def _tmpdir() -> str:
    import tempfile

    return tempfile.gettempdir()
