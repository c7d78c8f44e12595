"""``pqseal.open``: the plaintext view of a PME file ("rb") or a sealing sink ("wb")."""

from __future__ import annotations


def open(path, mode: str = "rb", *, encryption=None, decryption=None, kms=None, **options):  # noqa: A001
    """``"rb"``: a seekable read-only binary file presenting the plaintext Parquet file of
    the PME file ``path`` (see :func:`pqseal.io.view.open_view`). ``"wb"``: a binary file
    that any Parquet writer writes into; on ``close()`` ``path`` is a PME file sealed
    with ``encryption`` (see :func:`pqseal.io.sink.open_sink`). ``kms``: a KMS client, a
    factory or None for the local keystore. ``path``: a local path or an open binary
    file object (of an fsspec file system, say)."""
    if mode == "rb":
        if encryption is not None:
            raise ValueError("encryption= is for mode 'wb'; a view reads with decryption= and kms=")
        from .view import open_view

        return open_view(path, decryption=decryption, kms=kms, **options)
    if mode in ("wb", "xb"):
        if decryption is not None:
            raise ValueError("decryption= is for mode 'rb'; a sink writes with encryption= and kms=")
        from .sink import open_sink

        if mode == "xb":
            if options.get("overwrite"):
                raise ValueError("mode 'xb' creates a new file; it cannot overwrite=True")
            options["overwrite"] = False
        return open_sink(path, encryption=encryption, kms=kms, **options)
    raise ValueError(f"mode must be 'rb' (plaintext view), 'wb' or 'xb' (sealing sink), not {mode!r}: Parquet "
                     "files are binary, and neither appending nor updating in place exists")
