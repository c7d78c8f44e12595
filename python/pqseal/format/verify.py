"""verify: authenticate every module (and page CRC) of a PME file, writing nothing.

The report names each failing module (type, row group, column path, page). Its size is
bounded whatever the damage: a column chunk whose module framing is broken (a length
prefix that cannot be right) is one failure with the byte range left unchecked, and only
the first :data:`MAX_LISTED` failures are listed (``failures_total`` counts them all).
Time and memory are proportional to the file, not to the damage.

AES_GCM_CTR_V1 page bodies carry no tag: their framing (and page CRC, if any) is checked
but they are not authenticated, and the report counts them apart
(``pages_framing_checked``); ``modules`` and ``modules_authenticated`` count only modules
whose tag verified. CRCs catch accidental damage, not deliberate tampering: use
AES_GCM_V1 when integrity matters.
"""

from __future__ import annotations

import time

from ..errors import InvalidTag, MalformedFile, MalformedModule
from .engine import NotEncrypted
from .layout import dotted
from .properties import DecryptionProperties
from .source import Source

MAX_LISTED = 100   # failures listed in a report; the rest are counted


class VerificationFailed(InvalidTag):
    """Some modules of a file failed authentication; ``report["failures"]`` lists the
    first ones (module type, row group, column path, page), ``report["failures_total"]``
    counts them all."""

    def __init__(self, message: str, report: dict):
        super().__init__(message)
        self.report = report


class Failures:
    """Failures as they are found: the first ``limit`` kept, the rest only counted."""

    def __init__(self, limit: int = MAX_LISTED):
        self.limit = limit
        self.listed: list[dict] = []
        self.total = 0

    def append(self, failure: dict) -> None:
        self.total += 1
        if len(self.listed) < self.limit:
            self.listed.append(failure)

    def at(self, rg: int, column: str) -> "_At":
        return _At(self, rg, column)


class _At:
    """Adds the row group and column to each failure of one column chunk."""

    def __init__(self, failures: Failures, rg: int, column: str):
        self.failures, self.rg, self.column = failures, rg, column

    def append(self, failure: dict) -> None:
        self.failures.append({"row_group": self.rg, "column": self.column, **failure})


def verify_file(path, decryption: DecryptionProperties, *, backend: str | None = None,
                max_listed: int = MAX_LISTED) -> dict:
    """Authenticate every module (and page CRC) of a PME file without writing anything.

    Returns a report when everything verifies; otherwise raises :class:`VerificationFailed`
    whose ``report["failures"]`` names the failing modules by type, row group, column path
    and page (the first ``max_listed``; ``report["failures_total"]`` counts all). A footer
    that fails to authenticate raises :class:`InvalidTag` at once (nothing else can be
    trusted then)."""
    t0 = time.perf_counter()
    with Source(path, decryption, backend=backend, reuse_buffers=True) as s:
        if s.crypto is None:
            raise NotEncrypted(f"{s.name} is not an encrypted Parquet file")
        modules = 1          # authenticated: the footer, then every module whose tag verified
        framing_only = 0     # CTR page bodies: no tag
        pages = 0
        # DuckDB encrypts page bodies with GCM whatever the algorithm field says
        tagged_bodies = s.crypto.algorithm == "AES_GCM_V1" or s.crypto.dialect == "duckdb"
        failures = Failures(max_listed)

        for rg in range(s.num_row_groups):
            for col in range(len(s.paths)):
                at = failures.at(rg, dotted(s.paths[col]))

                def check(what, fn):
                    try:
                        return fn(), True
                    except (InvalidTag, MalformedFile, MalformedModule) as exc:
                        at.append({"module": what, "page": getattr(exc, "page", None),
                                   "error": f"{type(exc).__name__}: {exc}"})
                        return None, False

                meta, ok = check("COLUMN_META_DATA", lambda: s.column_meta(rg, col))
                if not ok:
                    continue
                enc = s.column_crypto(rg, col).encrypted
                if enc and "encrypted_column_metadata" in s.column_chunk(rg, col):
                    modules += 1
                try:
                    ch = s.read_chunk(rg, col, verify_only=True)
                    pages += len(ch.headers)
                    if enc:
                        modules += 2 * len(ch.headers) if tagged_bodies else len(ch.headers)
                        framing_only += 0 if tagged_bodies else len(ch.headers)
                    del ch
                except (InvalidTag, MalformedFile, MalformedModule) as exc:
                    # name every failing page module of the chunk, not just the first
                    before = failures.total
                    s.page_failures(rg, col, at)
                    if failures.total == before:
                        at.append({"module": "PAGES", "page": getattr(exc, "page", None),
                                   "error": f"{type(exc).__name__}: {exc}"})
                head, ok = check("BLOOM_FILTER_HEADER", lambda: s.bloom_filter_header(rg, col, meta))
                if ok and head is not None:
                    _, ok = check("BLOOM_FILTER_BITSET", lambda: s.bloom_filter_bitset(rg, col, *head))
                    modules += (2 if ok else 1) if enc else 0
                ci, ok = check("COLUMN_INDEX", lambda: s.column_index(rg, col))
                modules += 1 if (ok and ci is not None and enc) else 0
                oi, ok = check("OFFSET_INDEX", lambda: s.offset_index(rg, col))
                modules += 1 if (ok and oi is not None and enc) else 0
        report = {"file": s.path, "algorithm": s.crypto.algorithm, "modules": modules,
                  "modules_authenticated": modules, "pages_framing_checked": framing_only, "pages": pages,
                  "row_groups": s.num_row_groups, "columns": len(s.paths), "ok": not failures.total,
                  "failures": failures.listed, "failures_total": failures.total,
                  "seconds": time.perf_counter() - t0}
        if failures.total:
            first = failures.listed[0] if failures.listed else {"error": "?"}
            where = ", ".join(f"{k} {first[k]}" for k in ("module", "row_group", "column", "page")
                              if first.get(k) is not None)
            raise VerificationFailed(f"{s.name}: {failures.total} module(s) failed verification; first: {where}: "
                                     f"{first['error']}", report)
        return report
