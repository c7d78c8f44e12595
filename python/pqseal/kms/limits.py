"""Usage limits of the local keystore's master key versions.

A limit is set per key (``pqseal keys limits ID``) or for the whole store (``pqseal keys
limits --default``); a key's own setting wins field by field. Limits, each of a version
since its creation:

- ``max_age`` (seconds since the version was created),
- ``max_wraps`` (DEKs wrapped under it, directly or through a KEK),
- ``max_bytes`` (bytes of the files sealed with DEKs it wrapped).

``mode``: ``warn`` (the default: a :class:`~pqseal.errors.KeyUsageWarning`, a one-line
CLI warning and an audit record, once per process and limit) or ``refuse``
(:class:`~pqseal.errors.KeyUsageLimitExceeded`, naming the key, version and limit).
Limits apply to new wraps and seals only, so they concern the active version: after
``pqseal keys rotate`` the new version starts from zero, and a decrypt-only version never
refuses an unwrap because of a limit (``max_age`` on an unwrap only warns).

The 2^32 bound of NIST SP 800-38D on GCM invocations with random 96-bit IVs applies per
DEK; pqseal's native core refuses to encrypt more modules than that under one key, and
the usage counters keep the most modules one DEK encrypted (``max_dek_modules``).

Counts of other processes are seen once they flush them (at most a second late, see
:mod:`pqseal.kms.keyusage`), so a ``refuse`` limit can be overshot by what concurrent
processes do within that second. The limits live in the MAC-protected keystore, the
counts in the unauthenticated usage file: limits guard against overuse by mistake, not
against someone who can write that file.
"""

from __future__ import annotations

import datetime as _dt
import re
import threading
import warnings
from dataclasses import asdict, dataclass, fields, replace
from decimal import Decimal

from ..errors import KeyUsageLimitExceeded, KeyUsageWarning, MalformedKeyMaterial

MODES = ("warn", "refuse")
_SIZE = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12, "pb": 10**15,
         "kib": 1 << 10, "mib": 1 << 20, "gib": 1 << 30, "tib": 1 << 40, "pib": 1 << 50}
_TIME = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400, "y": 365 * 86400}


def parse_size(text: str) -> int:
    """``1TB``, ``500GiB``, ``1048576`` -> bytes (decimal and binary units)."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", text)
    if not m or m.group(2).lower() not in _SIZE:
        raise ValueError(f"not a size: {text!r} (e.g. 500GB, 1TiB, 1048576)")
    return int(Decimal(m.group(1)) * _SIZE[m.group(2).lower()])   # exact: no float overflow


def parse_age(text: str) -> int:
    """``90d``, ``12h``, ``2w``, ``1y`` (365 days), ``3600`` (seconds) -> seconds."""
    m = re.fullmatch(r"\s*(\d+)\s*([smhdwy]?)\s*", text)
    if not m:
        raise ValueError(f"not an age: {text!r} (e.g. 90d, 12h, 2w, 1y)")
    return int(m.group(1)) * _TIME[m.group(2) or "s"]


def show_age(seconds: float) -> str:
    """Seconds in the largest unit that divides them (90d, 2w), else to one decimal."""
    units = [u for u in ("y", "w", "d", "h", "m") if seconds >= _TIME[u]]
    for u in units:
        if seconds % _TIME[u] == 0:
            return f"{int(seconds) // _TIME[u]}{u}"
    return f"{seconds / _TIME[units[0]]:.1f}{units[0]}" if units else f"{seconds:.0f}s"


def show_size(n: float) -> str:
    for unit in ("PB", "TB", "GB", "MB", "kB"):
        if n >= _SIZE[unit.lower()]:
            return f"{n / _SIZE[unit.lower()]:.1f}{unit}"
    return f"{int(n)}B"


#: the largest limit: the largest integer every JSON reader keeps exactly (2^53)
LARGEST = 1 << 53


@dataclass(frozen=True)
class Limits:
    """Limits of a key (or the store's default); None: not set (inherited from the default)."""

    max_age: int | None = None       # seconds
    max_wraps: int | None = None     # DEKs
    max_bytes: int | None = None
    mode: str | None = None          # "warn" or "refuse"; None: inherited, else warn

    def over(self, default: "Limits") -> "Limits":
        """These limits, with ``default``'s where these are not set."""
        return Limits(**{f.name: getattr(self, f.name) if getattr(self, f.name) is not None
                         else getattr(default, f.name) for f in fields(self)})

    def changed(self, **values) -> "Limits":
        """A copy with ``values`` set (0 clears a number: no limit). A number above
        :data:`LARGEST` raises ValueError."""
        for k, v in values.items():
            if k != "mode" and v is not None and v > LARGEST:
                raise ValueError(f"{k.replace('_', '-')} {v:,} is beyond the largest limit, 2^53 ({LARGEST:,})")
        return replace(self, **{k: (None if v == 0 else v) for k, v in values.items() if v is not None})

    def as_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v is not None}

    @classmethod
    def from_dict(cls, d) -> "Limits":
        if not isinstance(d, dict) or set(d) - {f.name for f in fields(cls)}:
            raise MalformedKeyMaterial("keystore: malformed usage limits")
        for k, v in d.items():
            if k == "mode" and v not in MODES or k != "mode" and (not isinstance(v, int) or not 0 < v <= LARGEST):
                raise MalformedKeyMaterial(f"keystore: malformed usage limit {k}")
        return cls(**d)

    def text(self) -> str:
        parts = [f"max age {show_age(self.max_age)}" if self.max_age else "",
                 f"max wraps {self.max_wraps:,}" if self.max_wraps else "",
                 f"max bytes {show_size(self.max_bytes)}" if self.max_bytes else ""]
        shown = ", ".join(p for p in parts if p)
        return f"{shown} ({self.mode or 'warn'})" if shown else "none"


@dataclass(frozen=True)
class Reached:
    """A limit one key version has reached: ``limit`` is max-age, max-wraps or max-bytes."""

    key_id: str
    version: int
    limit: str
    value: float
    threshold: float
    mode: str

    def message(self) -> str:
        show = {"max-age": show_age, "max-bytes": show_size}.get(self.limit, lambda n: f"{int(n):,}")
        what = {"max-age": "is older than its max-age", "max-wraps": "has wrapped more DEKs than its max-wraps",
                "max-bytes": "has sealed more bytes than its max-bytes"}[self.limit]
        verb = "refused" if self.mode == "refuse" else "warning"
        return (f"master key {self.key_id!r} version {self.version} {what} ({show(self.value)} > "
                f"{show(self.threshold)}): {verb}; rotate it (pqseal keys rotate {self.key_id})")

    def error(self) -> KeyUsageLimitExceeded:
        return KeyUsageLimitExceeded(self.message(), key_id=self.key_id, version=self.version, limit=self.limit,
                                     value=self.value, threshold=self.threshold)


def age_seconds(created: str | None, now: _dt.datetime | None = None) -> float | None:
    if not created:
        return None
    try:
        t = _dt.datetime.fromisoformat(created)
    except ValueError:
        return None
    return ((now or _dt.datetime.now(_dt.timezone.utc)) - t).total_seconds()


def reached(limits: Limits, key_id: str, version: int, created: str | None, usage: dict, *,
            new_deks: int = 0, unwrap: bool = False) -> list[Reached]:
    """The limits the version is over, counting ``new_deks`` about to be wrapped
    (``new_deks=0``: as it stands, for ``keys status``). An unwrap checks the age only,
    and only warns."""
    mode = "warn" if unwrap else (limits.mode or "warn")
    out = []
    age = age_seconds(created)
    if limits.max_age and age is not None and age > limits.max_age:
        out.append(Reached(key_id, version, "max-age", age, limits.max_age, mode))
    if unwrap:
        return out
    deks = int(usage.get("deks") or 0) + new_deks
    if limits.max_wraps and deks > limits.max_wraps:
        out.append(Reached(key_id, version, "max-wraps", deks, limits.max_wraps, mode))
    nbytes = int(usage.get("bytes") or 0)
    # a seal is refused once the bytes reached the limit (a file's size is known only after it)
    if limits.max_bytes and (nbytes > limits.max_bytes or new_deks and nbytes >= limits.max_bytes):
        out.append(Reached(key_id, version, "max-bytes", nbytes, limits.max_bytes, mode))
    return out


def at_limit(limits: Limits, key_id: str, version: int, created: str | None, usage: dict) -> list[Reached]:
    """For ``keys status``: the limits the version has reached (no more wraps allowed
    without going over)."""
    out = reached(limits, key_id, version, created, usage)
    if limits.max_wraps and int(usage.get("deks") or 0) == limits.max_wraps:
        out.append(Reached(key_id, version, "max-wraps", limits.max_wraps, limits.max_wraps, limits.mode or "warn"))
    if limits.max_bytes and int(usage.get("bytes") or 0) == limits.max_bytes:
        out.append(Reached(key_id, version, "max-bytes", limits.max_bytes, limits.max_bytes, limits.mode or "warn"))
    return out


# (keystore path, key id, version, limit) warned about in this process, and reported in a seal's stats
_warned: set[tuple] = set()
_reported: set[tuple] = set()
_warned_lock = threading.Lock()


def _first(seen: set, keystore, r: Reached) -> bool:
    with _warned_lock:
        k = (keystore.path, r.key_id, r.version, r.limit)
        if k in seen:
            return False
        seen.add(k)
        return True


def enforce(keystore, found: list[Reached], report: bool = False) -> list[str]:
    """Act on the limits ``found`` for a keystore: a ``refuse`` one raises
    :class:`KeyUsageLimitExceeded`; a ``warn`` one, the first time in this process, is
    warned about (:class:`KeyUsageWarning`). Either is recorded in the keystore's audit
    log (op ``usage-limit``, outcome ``refused LIMIT`` or ``warn LIMIT``). With
    ``report``: returns the messages of the warn ones not reported before in this process
    (a seal's stats carry them to the CLI, which ignores Python warnings while sealing)."""
    from ..audit import Event, keystore_log

    if not found:
        return []
    log = keystore_log(keystore)
    refused = [r for r in found if r.mode == "refuse"]
    if refused:
        r = refused[0]
        if log is not None:
            log.append(Event("usage-limit", r.key_id, r.version), f"refused {r.limit}")
        raise r.error()
    for r in found:
        if _first(_warned, keystore, r):
            if log is not None:
                log.append(Event("usage-limit", r.key_id, r.version), f"warn {r.limit}")
            warnings.warn(KeyUsageWarning(r.message()), stacklevel=2)
    return [r.message() for r in found if report and _first(_reported, keystore, r)]
