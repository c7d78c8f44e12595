"""Explicit-key encryption and decryption properties for the file engine.

The key-management layer (KMS, key material) builds these same objects: it passes
DEKs and the key-metadata bytes that go into the file, or a key retriever that maps
key metadata back to a DEK.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping, Optional

from ..crypto.keys import KEY_LENGTHS
from ..errors import InvalidKey, KeyNotFound
from .layout import ALGORITHMS

V2_FRAMINGS = ("arrow", "parquet-java")


class _FooterKey:
    def __repr__(self) -> str:
        return "FOOTER_KEY"


#: Column-key value meaning "encrypt this column with the footer key".
FOOTER_KEY = _FooterKey()


def _check_key(key, what: str) -> bytes:
    if isinstance(key, str) or not isinstance(key, (bytes, bytearray, memoryview)):
        raise InvalidKey(f"{what} must be bytes, not {type(key).__name__}")
    if len(key) not in KEY_LENGTHS:
        raise InvalidKey(f"{what} must be 16, 24 or 32 bytes, got {len(key)}")
    return bytes(key)


@dataclass(frozen=True, repr=False)
class ColumnKey:
    key: bytes | None            # None: the footer key
    key_metadata: bytes | None = None


class EncryptionProperties:
    """How to seal a file.

    - ``footer_key``: AES key of the footer (16/24/32 bytes) and, in uniform mode, of
      every column. ``footer_key_metadata``: bytes stored with it (KMS key material).
    - ``column_keys``: ``{"a.b.c": key | (key, key_metadata) | FOOTER_KEY}``; columns
      not listed stay plaintext. ``None`` (the default) means uniform encryption.
    - ``algorithm``: ``AES_GCM_V1`` or ``AES_GCM_CTR_V1``; ``plaintext_footer``.
    - ``aad_prefix`` (bytes), ``store_aad_prefix`` (else readers must supply it).
    - ``complete_columns``: columns not in ``column_keys`` use the footer key.
    - ``external_key_material``: ``{reference: PKMT1 JSON}`` committed beside the output
      as ``_KEY_MATERIAL_FOR_<file>.json`` (set by the key-management layer).
    - ``v2_framing``: how DataPageV2 pages are encrypted: ``"arrow"`` (the spec's and
      Arrow's: levels and values in one module) or ``"parquet-java"`` (levels left in
      plaintext). The two are mutually unreadable between those implementations.
    """

    def __init__(self, footer_key, *, column_keys: Optional[Mapping[str, object]] = None,
                 algorithm: str = "AES_GCM_V1", plaintext_footer: bool = False,
                 aad_prefix: bytes | None = None, store_aad_prefix: bool = True,
                 footer_key_metadata: bytes | None = None, v2_framing: str = "arrow",
                 complete_columns: bool = False, external_key_material: Optional[Mapping[str, str]] = None):
        self.footer_key = _check_key(footer_key, "footer key")
        self.footer_key_metadata = None if footer_key_metadata is None else bytes(footer_key_metadata)
        if algorithm not in ALGORITHMS:
            raise ValueError(f"algorithm must be one of {', '.join(ALGORITHMS)}, got {algorithm!r}")
        self.algorithm = algorithm
        self.plaintext_footer = bool(plaintext_footer)
        self.aad_prefix = None if aad_prefix is None else bytes(aad_prefix)
        if not store_aad_prefix and not self.aad_prefix:
            raise ValueError("store_aad_prefix=False needs an aad_prefix")
        self.store_aad_prefix = bool(store_aad_prefix)
        if v2_framing not in V2_FRAMINGS:
            raise ValueError(f"v2_framing must be one of {', '.join(V2_FRAMINGS)}, got {v2_framing!r}")
        self.v2_framing = v2_framing
        self.uniform = column_keys is None
        # columns not listed use the footer key (parquet-java's complete.columns)
        self.complete_columns = bool(complete_columns)
        # {key reference: PKMT1 JSON} written as _KEY_MATERIAL_FOR_<file>.json beside the output
        self.external_key_material = dict(external_key_material) if external_key_material else None
        # set by the key-management layer: counts the sealed file (files, bytes) for the
        # master key versions that wrapped its DEKs (pqseal.kms.keyusage.SealUsage)
        self.key_usage = None
        self.column_keys: dict[str, ColumnKey] = {}
        for path, value in (column_keys or {}).items():
            if not isinstance(path, str) or not path:
                raise ValueError(f"column path must be a non-empty dotted string, got {path!r}")
            if value is FOOTER_KEY:
                self.column_keys[path] = ColumnKey(None, None)
            elif isinstance(value, tuple):
                key, md = value
                self.column_keys[path] = ColumnKey(_check_key(key, f"key of column {path!r}"),
                                                   None if md is None else bytes(md))
            else:
                self.column_keys[path] = ColumnKey(_check_key(value, f"key of column {path!r}"), None)

    def column(self, path: str) -> ColumnKey | None:
        """The key of a column: ``ColumnKey(None)`` for the footer key, ``None`` for plaintext."""
        if self.uniform:
            return ColumnKey(None, None)
        ck = self.column_keys.get(path)
        if ck is None and self.complete_columns:
            return ColumnKey(None, None)
        if ck is not None and ck.key is not None and ck.key == self.footer_key:
            return ColumnKey(None, ck.key_metadata)  # same key as the footer: a footer-key column
        return ck

    def __repr__(self) -> str:  # no key bytes
        mode = "uniform" if self.uniform else f"{len(self.column_keys)} column keys"
        return (f"<EncryptionProperties {self.algorithm} {mode} "
                f"{'plaintext' if self.plaintext_footer else 'encrypted'} footer>")

    def __reduce__(self):
        raise TypeError("EncryptionProperties holds keys and cannot be pickled")


KeyRetriever = Callable[[Optional[bytes], Optional[str]], bytes]


class DecryptionProperties:
    """Keys for reading a PME file.

    - ``footer_key`` and ``column_keys`` (``{"a.b": key}``) given explicitly, and/or
    - ``key_retriever(key_metadata, column_path) -> key`` called for keys not given
      (``column_path`` is ``None`` for the footer key).
    - ``aad_prefix`` when the file was written without storing it.
    """

    def __init__(self, footer_key=None, *, column_keys: Optional[Mapping[str, bytes]] = None,
                 key_retriever: KeyRetriever | None = None, aad_prefix: bytes | None = None):
        self.footer_key = None if footer_key is None else _check_key(footer_key, "footer key")
        self.column_keys = {p: _check_key(k, f"key of column {p!r}") for p, k in (column_keys or {}).items()}
        self.key_retriever = key_retriever
        self.aad_prefix = None if aad_prefix is None else bytes(aad_prefix)
        self._retrieved: dict = {}  # (key_metadata, path) -> key: one retriever call per key

    def _retrieve(self, retriever: KeyRetriever, key_metadata, path, what: str) -> bytes:
        k = (None if key_metadata is None else bytes(key_metadata), path)
        key = self._retrieved.get(k)
        if key is None:
            key = self._retrieved[k] = _check_key(retriever(key_metadata, path), what)
        return key

    def get_footer_key(self, key_metadata: bytes | None) -> bytes:
        if self.footer_key is not None:
            return self.footer_key
        if self.key_retriever is not None:
            return self._retrieve(self.key_retriever, key_metadata, None, "retrieved footer key")
        raise KeyNotFound("the file's footer key is needed: give footer_key or a key retriever")

    def get_column_key(self, path: str, key_metadata: bytes | None) -> bytes:
        key = self.column_keys.get(path)
        if key is not None:
            return key
        if self.key_retriever is not None:
            return self._retrieve(self.key_retriever, key_metadata, path, f"retrieved key of column {path!r}")
        raise KeyNotFound(f"no key for encrypted column {path!r}")

    def __repr__(self) -> str:
        return f"<DecryptionProperties footer_key={'set' if self.footer_key else 'unset'} " \
               f"column_keys={sorted(self.column_keys)}>"

    def __reduce__(self):
        raise TypeError("DecryptionProperties holds keys and cannot be pickled")
