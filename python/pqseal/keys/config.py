"""Encryption and decryption configuration with pyarrow's field names and defaults, and
``from_properties()`` for parquet-java's ``parquet.encryption.*`` Hadoop properties."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta

from ..format.layout import ALGORITHMS
from ..format.properties import V2_FRAMINGS


def seconds(v: float | timedelta) -> float:
    """A cache lifetime in seconds (the configs take a number or a ``timedelta``)."""
    if isinstance(v, timedelta):
        return v.total_seconds()
    return float(v)


def prefix_bytes(v: bytes | str | None) -> bytes | None:
    """An AAD prefix as bytes (text is taken as UTF-8)."""
    if isinstance(v, str):
        return v.encode("utf-8")
    if v is not None and not isinstance(v, bytes):
        raise TypeError(f"aad_prefix must be bytes or str, not {type(v).__name__}")
    return v


@dataclass
class EncryptionConfig:
    """Like ``pyarrow.parquet.encryption.EncryptionConfiguration``.

    ``column_keys``: {master key id: [column paths]} (ids may contain ``:``, e.g. cloud key
    ARNs); ``uniform_encryption``: every column with the footer key. Exactly one of the
    two. ``complete_columns`` (parquet-java's ``parquet.encryption.complete.columns``):
    columns not in ``column_keys`` are encrypted with the footer key instead of staying
    plaintext. ``aad_prefix`` (bytes, or text as UTF-8) and ``store_aad_prefix`` (else
    readers must supply it) as in parquet-java's ``withAADPrefix`` /
    ``withoutAADPrefixStorage``; ``v2_framing``: see :class:`EncryptionProperties`."""

    footer_key: str
    column_keys: Mapping[str, list] | None = None
    uniform_encryption: bool = False
    encryption_algorithm: str = "AES_GCM_V1"
    plaintext_footer: bool = False
    double_wrapping: bool = True
    cache_lifetime: float | timedelta = timedelta(minutes=10)
    internal_key_material: bool = True
    data_key_length_bits: int = 128
    kek_length_bits: int = 128
    complete_columns: bool = False
    aad_prefix: bytes | str | None = None
    store_aad_prefix: bool = True
    v2_framing: str = "arrow"

    def __post_init__(self):
        alg = str(self.encryption_algorithm).upper()
        if alg not in ALGORITHMS:
            raise ValueError(f"encryption_algorithm must be one of {', '.join(ALGORITHMS)}, got "
                             f"{self.encryption_algorithm!r}")
        self.encryption_algorithm = alg
        if not self.footer_key:
            raise ValueError("footer_key (a master key id) is required")
        if self.uniform_encryption and self.column_keys:
            raise ValueError("column_keys and uniform_encryption are mutually exclusive")
        if not self.uniform_encryption and not self.column_keys:
            raise ValueError("give column_keys or set uniform_encryption=True")
        if self.complete_columns and self.uniform_encryption:
            raise ValueError("complete_columns needs column_keys: with uniform_encryption every column already "
                             "uses the footer key")
        self.aad_prefix = prefix_bytes(self.aad_prefix)
        if not self.store_aad_prefix and not self.aad_prefix:
            raise ValueError("store_aad_prefix=False needs an aad_prefix")
        if self.v2_framing not in V2_FRAMINGS:
            raise ValueError(f"v2_framing must be one of {', '.join(V2_FRAMINGS)}, got {self.v2_framing!r}")
        if self.data_key_length_bits not in (128, 192, 256):
            raise ValueError("data_key_length_bits must be 128, 192 or 256")
        if self.kek_length_bits not in (128, 192, 256):
            raise ValueError("kek_length_bits must be 128, 192 or 256")
        seen: dict[str, str] = {}
        for mk, cols in (self.column_keys or {}).items():
            if not mk:
                raise ValueError("empty master key id in column_keys")
            for c in cols:
                if not c or not str(c).strip():
                    raise ValueError(f"empty column name for master key {mk!r}")
                if c in seen:
                    raise ValueError(f"column {c!r} listed for master keys {seen[c]!r} and {mk!r}")
                seen[c] = mk
        self.cache_lifetime = seconds(self.cache_lifetime)

    @staticmethod
    def from_properties(props: Mapping[str, str]) -> EncryptionConfig | None:
        """See :func:`encryption_config_from_properties`."""
        return encryption_config_from_properties(props)


@dataclass
class DecryptionConfig:
    """Like ``pyarrow.parquet.encryption.DecryptionConfiguration``."""

    cache_lifetime: float | timedelta = timedelta(minutes=10)

    def __post_init__(self):
        self.cache_lifetime = seconds(self.cache_lifetime)


def parse_column_keys(text: str) -> dict[str, list]:
    """parquet-java's column-keys grammar: ``"mk1:col,col;mk2:col"``: entries split on
    ``;``, each into exactly ``masterKeyId:columns``, columns on ``,``, all trimmed, empty
    entries skipped; an empty id or column, or a column listed twice, is an error."""
    out: dict[str, list] = {}
    seen: dict[str, str] = {}
    for entry in (text or "").split(";"):
        entry = entry.strip()
        if not entry:
            continue
        parts = entry.split(":")
        if len(parts) != 2:
            raise ValueError(f"incorrect key to columns mapping in {entry!r} (expected 'masterKeyId:col,col')")
        mk = parts[0].strip()
        if not mk:
            raise ValueError(f"empty master key id in {entry!r}")
        cols = [c.strip() for c in parts[1].split(",")]
        for c in cols:
            if not c:
                raise ValueError(f"empty column name in {entry!r}")
            if c in seen:
                raise ValueError(f"multiple keys defined for column {c!r}")
            seen[c] = mk
        out.setdefault(mk, []).extend(cols)
    return out


_PREFIXES = ("parquet.encryption.", "encryption.")

#: Property names (without the prefix) that parquet-java's PropertiesDrivenCryptoFactory
#: and KeyToolkit read to encrypt a file,
ENCRYPTION_PROPERTIES = frozenset((
    "column.keys", "footer.key", "uniform.key", "complete.columns", "algorithm", "plaintext.footer",
    "double.wrapping", "key.material.store.internally", "data.key.length.bits", "kek.length.bits"))
#: and those that reach the KMS, when encrypting and decrypting (``key.list``: the master
#: keys of parquet-java's InMemoryKMS; ``kms.client.class``: pqseal has no Java classes).
CONNECTION_PROPERTIES = frozenset((
    "kms.client.class", "kms.instance.id", "kms.instance.url", "key.access.token", "cache.lifetime.seconds",
    "key.list"))


def property_name(name: str) -> str | None:
    """The name of a ``parquet.encryption.x`` / ``encryption.x`` property without its
    prefix (``x``), None for other names."""
    for p in _PREFIXES:
        if name.startswith(p):
            return name[len(p):]
    return None


def _props(props: Mapping[str, str]) -> dict:
    """Normalise property names: ``parquet.encryption.x`` and the older ``encryption.x``."""
    out: dict[str, str] = {}
    for k, v in props.items():
        name = property_name(k)
        if name is not None:
            if name in out and out[name] != v:
                raise ValueError(f"property {name!r} given twice with different values")
            out[name] = v
    return out


def _bool_prop(p, name, default):
    v = p.get(name)
    if v is None:
        return default
    if str(v).strip().lower() not in ("true", "false"):
        raise ValueError(f"property {name} must be true or false, got {v!r}")
    return str(v).strip().lower() == "true"


def encryption_config_from_properties(props: Mapping[str, str]) -> EncryptionConfig | None:
    """An :class:`EncryptionConfig` from Hadoop-style properties, or ``None`` when neither
    footer nor column keys are set (the file stays plaintext, as in parquet-java)."""
    p = _props(props)
    footer, cols, uniform = p.get("footer.key"), p.get("column.keys"), p.get("uniform.key")
    if uniform:
        if footer or cols:
            raise ValueError("uniform.key excludes footer.key and column.keys")
        footer = uniform
    elif not footer and not cols:
        return None
    elif not footer or not cols:
        raise ValueError("set both footer.key and column.keys (or uniform.key); only one is set")
    alg = p.get("algorithm", "AES_GCM_V1")
    if alg not in ALGORITHMS:  # parquet-java: Enum.valueOf, case-sensitive
        raise ValueError(f"unknown encryption algorithm {alg!r}")
    column_keys = parse_column_keys(cols) if cols else None
    complete = _bool_prop(p, "complete.columns", False)
    cfg = EncryptionConfig(
        footer_key=footer, column_keys=column_keys, uniform_encryption=bool(uniform),
        encryption_algorithm=alg, plaintext_footer=_bool_prop(p, "plaintext.footer", False),
        double_wrapping=_bool_prop(p, "double.wrapping", True),
        cache_lifetime=float(p.get("cache.lifetime.seconds", 600)),
        internal_key_material=_bool_prop(p, "key.material.store.internally", True),
        data_key_length_bits=int(p.get("data.key.length.bits", 128)),
        kek_length_bits=int(p.get("kek.length.bits", 128)), complete_columns=complete)
    return cfg


def kms_connection_from_properties(props: Mapping[str, str]):
    from ..kms.base import KmsConnectionConfig

    p = _props(props)
    return KmsConnectionConfig(kms_instance_id=p.get("kms.instance.id", "DEFAULT"),
                               kms_instance_url=p.get("kms.instance.url", "DEFAULT"),
                               key_access_token=p.get("key.access.token", "DEFAULT"))
