"""KMS keys for polars' native PME reader and writer.

polars reads and writes Parquet modular encryption (AES_GCM_V1) with explicit keys
only. pqseal supplies them from its key management, so polars works on files that
pyarrow, Spark and pqseal read and write with a KMS::

    import polars as pl
    import pqseal

    props = pqseal.polars.decryption_properties("sealed.parquet")   # kms=None: the local keystore
    df = pl.read_parquet("sealed.parquet", decryption=props)

    cfg = pqseal.EncryptionConfig("footer-key-id", column_keys={"pii-key-id": ["ssn"]})
    pqseal.polars.write_parquet(df, "out.parquet", cfg)

Reading: the file's key material (in the footer or in the ``_KEY_MATERIAL_FOR_<name>.json``
file beside it) is unwrapped by pqseal's KMS and handed to polars, which then decrypts
at its own speed. Writing: polars writes with fresh data keys from pqseal, then pqseal
stamps the PKMT1 key material into the footer (a footer-only rewrite; the data bytes
stay as polars wrote them), so pyarrow and Spark open the file with their KMS clients.

What polars cannot do (AES_GCM_CTR_V1, DuckDB's dialect, parquet-java's DataPageV2
framing, 192-bit keys) raises :class:`~pqseal.errors.UnsupportedFeature`; such files
are read through pqseal's plaintext view, ``pl.read_parquet(pqseal.open(path, "rb"))``.
"""

from __future__ import annotations

import io
import os
from typing import TYPE_CHECKING

from . import api
from .arrow import encryption_config
from ._io import create_temp, fsync_dir, plan_output, remove_stale, replace, unlink_quietly
from .errors import KeyNotFound, MalformedFile, UnsupportedFeature
from .format.footer import COLUMN_KEY_CRYPTO, FOOTER_KEY_CRYPTO, Footer, rewrite_footer
from .format.layout import dotted
from .format.properties import DecryptionProperties, EncryptionProperties
from .format.source import Source

if TYPE_CHECKING:
    import polars

#: AES key sizes polars accepts (no AES-192)
POLARS_KEY_LENGTHS = (16, 32)

_VIEW = "read it through pqseal's plaintext view instead: pl.read_parquet(pqseal.open(path, 'rb'))"

#: write_parquet options pqseal cannot honour: the output is one local file it renames into place
_REFUSED_OPTIONS = {
    "partition_by": "partitioned writing makes a directory of files",
    "partition_chunk_size_bytes": "partitioned writing makes a directory of files",
    "use_pyarrow": "pyarrow's writer takes no polars encryption (use pqseal.ParquetWriter for pyarrow)",
    "pyarrow_options": "pyarrow's writer takes no polars encryption (use pqseal.ParquetWriter for pyarrow)",
    "storage_options": "the output is a local file (remote stores: the pqseal fsspec file system)",
    "credential_provider": "the output is a local file (remote stores: the pqseal fsspec file system)",
}


def _polars():
    import polars

    return polars


# ---- reading ------------------------------------------------------------------------------


def _unsupported_read(name: str, what: str) -> UnsupportedFeature:
    return UnsupportedFeature(f"{name}: {what}, which polars cannot decrypt; {_VIEW}")


def _check_key(name: str, key: bytes, what: str) -> bytes:
    if len(key) not in POLARS_KEY_LENGTHS:
        raise _unsupported_read(name, f"the {what} is a {len(key) * 8}-bit AES key")
    return key


def _selected(path: str, columns) -> bool:
    return columns is None or any(path == c or path.startswith(c + ".") for c in columns)


def decryption_properties(path, *, kms=None, aad_prefix: bytes | None = None,
                          columns=None) -> polars.ParquetDecryptionProperties | None:
    """``polars.ParquetDecryptionProperties`` for the PME file ``path``: its data keys,
    unwrapped from the file's key material by ``kms`` (a KMS client, a factory
    ``(KmsConnectionConfig) -> KmsClient``, or None for the local keystore; KEKs are
    cached per ``kms`` as in :func:`pqseal.api.crypto_factory`). ``aad_prefix``: the
    AAD prefix of a file written without storing it (a stored prefix needs nothing).
    ``columns``: unwrap only the keys of these columns (top-level names or dotted leaf
    paths), for a reader whose KMS grants some column keys only; polars then reads
    those columns (``pl.read_parquet(path, columns=..., decryption=...)``).

    The footer is opened and the first row group's column metadata authenticated here,
    so a wrong key fails with pqseal's typed errors before polars reads anything. A
    plaintext Parquet file gives None (``pl.read_parquet(..., decryption=None)``)."""
    pl = _polars()
    if isinstance(columns, str):
        columns = [columns]
    api._recover_once(path)
    with Source(path) as s:   # what the file says without keys
        c = s.crypto
        if c is None:
            return None
        if c.dialect != "spec":
            raise _unsupported_read(s.name, "it uses DuckDB's encryption dialect (no AADs)")
        if c.algorithm != "AES_GCM_V1":
            raise _unsupported_read(s.name, f"it is encrypted with {c.algorithm}")
        if c.footer_key_metadata is None:
            raise KeyNotFound(f"{s.name} carries no key material for its footer key (written with explicit "
                              "keys?): no KMS can unwrap it; give polars the keys themselves")
    dec = api.decryption_properties(path, None, kms=kms)
    if aad_prefix is not None:
        dec = DecryptionProperties(key_retriever=dec.key_retriever, aad_prefix=bytes(aad_prefix))
    with Source(path, dec) as s:   # opens the footer: a wrong key or AAD prefix fails here
        c = s.file_crypto()
        footer_key = _check_key(s.name, dec.get_footer_key(c.footer_key_metadata), "footer key")
        column_keys: dict[str, bytes] = {}
        encrypted = set()
        for rg in range(s.num_row_groups):
            for col, parts in enumerate(s.paths):
                cc = s.column_crypto(rg, col)
                name = dotted(parts)
                if not cc.encrypted or not _selected(name, columns):
                    continue
                encrypted.add(col)
                if cc.footer_key:
                    continue
                key = _check_key(s.name, dec.get_column_key(name, cc.key_metadata), f"key of column {name}")
                if column_keys.setdefault(name, key) != key:
                    raise _unsupported_read(s.name, f"column {name} has different keys in different row groups")
        for col in sorted(encrypted):
            s.column_meta(0, col)   # authenticates the column's key (encrypted column metadata)
            if s.chunk_plan(0, col, max_pages=2).framing == "parquet-java":
                raise _unsupported_read(s.name, f"column {dotted(s.paths[col])} has DataPageV2 pages in "
                                                "parquet-java's framing (levels outside the page module)")
    return pl.ParquetDecryptionProperties(footer_key=footer_key, column_keys=column_keys or None,
                                          aad_prefix=None if aad_prefix is None else bytes(aad_prefix))


# ---- writing ------------------------------------------------------------------------------


def _leaf_paths(df, options: dict) -> list[str]:
    """The Parquet leaf columns polars writes for ``df`` (from an empty file written in
    memory with the same schema options)."""
    buf = io.BytesIO()
    schema_options = {k: options[k] for k in ("arrow_schema",) if k in options}
    df.head(0).write_parquet(buf, compression="uncompressed", statistics=False, **schema_options)
    with Source(buf.getvalue()) as s:
        return [dotted(p) for p in s.paths]


def _unsupported_write(what: str) -> UnsupportedFeature:
    return UnsupportedFeature(f"polars cannot write {what} (AES_GCM_V1 with 128- or 256-bit keys only); use "
                              "pqseal.ParquetWriter, or polars into pqseal.open(path, 'wb', encryption=...)")


def _check_write_key(key: bytes | None, what: str) -> None:
    if key is not None and len(key) not in POLARS_KEY_LENGTHS:
        raise _unsupported_write(f"with a {len(key) * 8}-bit {what}")


class _Plan:
    """How one pqseal EncryptionProperties is written by polars and then stamped
    (``leaves``: the leaf columns polars writes; None for uniform encryption)."""

    def __init__(self, props: EncryptionProperties, leaves: list[str] | None):
        if props.algorithm != "AES_GCM_V1":
            raise _unsupported_write(props.algorithm)
        _check_write_key(props.footer_key, "footer key")
        self.props = props
        keys: dict[str, bytes] | None = None
        if leaves is not None:
            unknown = sorted(set(props.column_keys) - set(leaves))
            if unknown:
                raise ValueError(f"column keys for columns not in the schema: {', '.join(unknown)} "
                                 f"(columns: {', '.join(leaves)})")
            keys = {}
            for p in leaves:
                ck = props.column(p)
                if ck is not None:
                    _check_write_key(ck.key, f"key of column {p}")
                    keys[p] = props.footer_key if ck.key is None else ck.key
            if not keys:
                raise UnsupportedFeature("these keys leave every column in plaintext under an encrypted footer, "
                                         "which polars cannot write (no column keys means every column with the "
                                         "footer key there)")
        # polars: listed columns with their key (footer-key columns too, stamped as such
        # afterwards), others plaintext; None: every column with the footer key
        self.column_keys = keys
        prefix = props.aad_prefix
        self.polars = _polars().ParquetEncryptionProperties(
            footer_key=props.footer_key, column_keys=keys, plaintext_footer=props.plaintext_footer,
            aad_prefix=prefix, store_aad_prefix=bool(prefix) and props.store_aad_prefix)
        self.decryption = DecryptionProperties(props.footer_key, column_keys=keys, aad_prefix=prefix)

    def stamp(self, f: Footer) -> None:
        """Put the key metadata into the footer polars wrote, checking that polars
        encrypted each column as asked."""
        props = self.props
        if f.file_crypto.algorithm != "AES_GCM_V1" or f.plaintext_footer != props.plaintext_footer:
            raise MalformedFile("polars did not write the encryption it was asked for")
        f.footer_key_metadata = props.footer_key_metadata
        for rg, group in enumerate(f.metadata.get("row_groups") or []):
            for col, cc in enumerate(group.get("columns") or []):
                path = dotted(f.paths[col])
                want = props.column(path)
                cm = cc.get("crypto_metadata") or {}
                if want is None:
                    if cm:
                        raise MalformedFile(f"polars encrypted column {path}, which should stay plaintext")
                elif FOOTER_KEY_CRYPTO in cm and want.key is None:
                    pass
                elif COLUMN_KEY_CRYPTO not in cm:
                    raise MalformedFile(f"polars did not encrypt column {path} as asked")
                elif want.key is None:   # written with the footer key as a column key: say so
                    meta = f.column_meta(rg, col)
                    cc["crypto_metadata"] = {"ENCRYPTION_WITH_FOOTER_KEY": {}}
                    f.set_column_meta(rg, col, meta)
                elif want.key_metadata is not None:
                    cm["ENCRYPTION_WITH_COLUMN_KEY"]["key_metadata"] = want.key_metadata


def _check_options(options: dict) -> None:
    for name, why in _REFUSED_OPTIONS.items():
        if name in options and options[name] is not None and options[name] is not False:
            raise ValueError(f"pqseal.polars.write_parquet does not take {name}=: {why}")
        options.pop(name, None)


def write_parquet(df: polars.DataFrame, path, encryption, *, kms=None, overwrite: bool = False,
                  fsync: bool = True, **options) -> None:
    """polars writes ``df`` to the PME file ``path`` with fresh data keys from pqseal;
    then the key material is stamped into the footer, as parquet-java, pyarrow and
    pqseal write it, so their KMS clients open the file.

    ``encryption``: a :class:`pqseal.EncryptionConfig` or pyarrow's
    ``EncryptionConfiguration`` (keys wrapped by ``kms``: a client, a factory or None
    for the local keystore), or explicit :class:`pqseal.EncryptionProperties` (their
    key metadata is stamped). Column keys mean what they mean in pqseal: listed columns
    with their keys, the others plaintext (with ``complete_columns``: with the footer
    key). ``options`` go to ``polars.DataFrame.write_parquet`` (compression,
    row_group_size, statistics, metadata, ...; ``mkdir``); partitioned, pyarrow and
    remote writing are refused.

    The file is written beside ``path`` under a temporary name and renamed into place
    (with external key material, the ``_KEY_MATERIAL_FOR_`` file is committed with it);
    an existing ``path`` is replaced only with ``overwrite=True``; on failure nothing
    is left behind."""
    pl = _polars()
    if not isinstance(df, pl.DataFrame):
        raise TypeError(f"df must be a polars DataFrame, not {type(df).__name__}")
    if not isinstance(path, (str, os.PathLike)) or "://" in os.fspath(path):
        raise TypeError("path must be a local file path (remote stores: the pqseal fsspec file system)")
    options = dict(options)
    _check_options(options)
    if options.pop("mkdir", False):
        os.makedirs(os.path.dirname(os.path.abspath(os.fspath(path))), exist_ok=True)
    out = plan_output(path, overwrite=overwrite)
    api._recover_once(out.path)
    remove_stale(out.directory)
    if not isinstance(encryption, EncryptionProperties):   # refuse before the KMS draws keys
        encryption = encryption_config(encryption)
        if encryption.encryption_algorithm != "AES_GCM_V1":
            raise _unsupported_write(encryption.encryption_algorithm)
        if encryption.data_key_length_bits // 8 not in POLARS_KEY_LENGTHS:
            raise _unsupported_write(f"{encryption.data_key_length_bits}-bit data keys")
    props = api.encryption_properties(encryption, out.path, kms=kms)
    plan = _Plan(props, None if props.uniform else _leaf_paths(df, options))
    companion = api._material_store(out.path, props)
    fd, tmp = create_temp(out.directory, out.name, 0o666)
    os.close(fd)
    try:
        df.write_parquet(tmp, encryption=plan.polars, **options)
        footer = rewrite_footer(tmp, plan.decryption, plan.stamp, fsync=fsync)
        if out.mode is not None:
            os.chmod(tmp, out.mode)
        if companion is not None:
            companion.stage(footer.file_crypto.aad_file_unique or b"")
        replace(tmp, out.path, exclusive=not overwrite)
    except BaseException:
        unlink_quietly(tmp)
        if companion is not None:
            companion.abort()
        raise
    if companion is not None:
        companion.commit()
    fsync_dir(out.directory)


__all__ = ["decryption_properties", "write_parquet", "POLARS_KEY_LENGTHS"]
