"""Dataset jobs: seal, unseal, verify, re-key, rotate, compact and inspect whole directory trees
(hive-partitioned or not) on driver threads, local processes or a Dask cluster.

    import pqseal
    r = pqseal.dataset.encrypt("plain/", "sealed/", pqseal.EncryptionConfig(footer_key="kf", ...),
                               kms=client, executor="processes", workers=4)
    r.ok == 3, len(r.failed), r.bytes, r.to_json()

- **Tree**: outputs mirror the source tree (partition directories included); what is
  data follows pyarrow's discovery rules (``plan.py``); ``_SUCCESS`` is copied,
  ``_metadata``/``_common_metadata`` are dropped with a warning on encrypt/rekey and
  regenerated on decrypt, key material follows its data file (``summary.py``).
- **Keys**: with configs, the driver opens a :class:`pqseal.keys.KeySession` through
  ``kms`` (every KMS call happens there; ``Report.kms_calls`` counts them) and workers
  use only the session. Explicit :class:`~pqseal.EncryptionProperties` /
  :class:`~pqseal.DecryptionProperties` work too (no KMS). Files whose keys the session
  could not read fail without being attempted; a file that cannot be decrypted is kept
  intact and listed, never deleted. Master key id templates of a config
  (``tenant-{customer_id}``, :mod:`pqseal.keys.template`) are resolved on the driver from
  each file's path below ``src``; the session gets one KEK per resolved id before it is
  shipped (a key the KMS refuses, e.g. a destroyed tenant key, fails that key's files only).
- **Executors**: ``executor="threads"`` (default), ``"processes"``, a
  ``distributed.Client`` or a scheduler address (``"tls://host:8786"``). Keys reach other
  processes only exported on request; over Dask only through a ``tls://`` scheduler
  unless ``allow_insecure=True`` (``executors.py``, ``dask.py``).
- **Resumable**: a journal in the destination (``<dst>/.pqseal-job/journal.jsonl``; the
  source root for ``rotate``) lets a rerun skip finished files (checked), redo partial
  ones and skip failed ones unless ``retry_failed=True`` (``journal.py``, ``ops.py``).
  ``verify`` and ``inspect`` write nothing and keep no journal.
- **Report**: ``ok``/``failed``/``skipped`` are lists of per-file records that also
  compare equal to their count (``r.ok == 3``); ``bytes``; ``to_json()`` (``report.py``);
  ``report=PATH`` writes it.
- **Progress**: one bar on the driver (bytes, throughput, files done/total), shown on a
  terminal, forced with ``progress=True``, never with ``False``.
- **Memory**: at most ``2 × workers`` (at least 4) files are in flight (Dask: about two
  tasks of up to 64 files or 512 MB per worker thread, queued on the workers, sealed one
  file at a time); the driver holds one small
  record per file. A worker holds what the engine holds for one file: its
  footer and page indexes and about two column chunks' worth of buffers, never the whole
  file. Measured: a worker sealing a 314 MB file (largest column chunk 9.8 MB) peaked at
  88 MB RSS, 19 MB above its 69 MB after imports.

``compact`` merges the small files of each partition directory page by page, each
output sealed with new DEKs; in place it commits under a manifest that the next run
finishes or rolls back (``compaction.py``, ``compact_groups.py``, ``compact_merge.py``).

Options of every operation: ``kms``, ``kms_connection_config``, ``executor``,
``workers``, ``overwrite`` (replace outputs the journal does not know), ``retry_failed``,
``progress``, ``report`` (a JSON path), ``allow_insecure`` (Dask without TLS),
``security`` (``distributed.security.Security`` for an address), ``session_lifetime``
(seconds), ``summaries`` (``"auto"``: the policy above; ``"drop"``: leave summaries out
everywhere, silently), ``on_result`` (called on the driver with each file's record).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .report import Report

# Imported on first use, so the command line starts fast: name -> module.
_LAZY = {"Report": ".report", "FileResult": ".report", "Files": ".report", "JournalMismatch": ".journal",
         "Options": ".ops"}


def __getattr__(name):
    if name not in _LAZY:
        raise AttributeError(f"module 'pqseal.dataset' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(_LAZY[name], __name__), name)
    globals()[name] = value
    return value


def _options(options: dict):
    from .ops import Options

    unknown = set(options) - set(Options.__dataclass_fields__)
    if unknown:
        raise TypeError(f"unknown option(s): {', '.join(sorted(unknown))}")
    return Options(**options)


def _run(kind: str, src, dst, options: dict, **keys) -> "Report":
    from .ops import run

    return run(kind, src, dst, _options(options), **keys)


def encrypt(src, dst, encryption, **options) -> "Report":
    """Seal the plaintext data files of ``src`` into the tree ``dst``. ``encryption``: an
    ``EncryptionConfig`` (or pyarrow's ``EncryptionConfiguration``) whose master keys the
    driver's key session wraps through ``kms``, or explicit ``EncryptionProperties``."""
    return _run("encrypt", src, dst, options, encryption=encryption)


def decrypt(src, dst, decryption=None, **options) -> "Report":
    """Unseal the PME data files of ``src`` into plaintext files in ``dst``. Keys: through
    the files' key material and ``kms`` (``decryption`` None or a config), or explicit
    ``DecryptionProperties``. Sources are never modified or deleted."""
    return _run("decrypt", src, dst, options, decryption=decryption)


def rekey(src, dst, decryption=None, encryption=None, **options) -> "Report":
    """Decrypt with the old keys and seal with new ones in one pass per file, into ``dst``."""
    if encryption is None:
        raise TypeError("dataset.rekey needs the new keys: encryption=EncryptionConfig or EncryptionProperties")
    return _run("rekey", src, dst, options, encryption=encryption, decryption=decryption)


def verify(src, decryption=None, **options) -> "Report":
    """Authenticate every module of every data file; ``FileResult.detail`` is each file's
    verify report (failing modules of a failed file too)."""
    return _run("verify", src, None, options, decryption=decryption)


def inspect(src, decryption=None, **options) -> "Report":
    """Describe every data file's encryption (``FileResult.detail``); with keys (explicit,
    a config, or ``kms=``) encrypted footers are opened."""
    return _run("inspect", src, None, options, decryption=decryption)


def rotate(src, **options) -> "Report":
    """Re-wrap the data keys of every data file of ``src`` under the current master key
    versions: the driver's session unwraps each distinct KEK once and wraps new KEKs once
    per master key. External key material (``_KEY_MATERIAL_FOR_*``) is replaced
    atomically and the Parquet file not touched; internal material is re-wrapped by a
    footer-only rewrite in place, journaled (:mod:`pqseal.keys.rotation`). Files without
    key material (plaintext, explicit keys) are skipped and listed (``skipped``, with the
    reason) with a warning."""
    return _run("rotate", src, None, options)


def compact(src, dst=None, encryption=None, *, decryption=None, target_size: int = 128 << 20,
            **options) -> "Report":
    """Merge the small data files of each partition directory of ``src`` into files of up
    to ``target_size`` bytes, page by page (no decode), each sealed with new DEKs and a
    new ``aad_file_unique``. ``dst=None``: in place, crash-safe (an interrupted run is
    finished or rolled back by the next); else into the new tree ``dst``. ``encryption``:
    the outputs' keys (a config or explicit properties); None: each output sealed like
    its inputs (same master keys, algorithm and footer mode). Files that cannot be
    decrypted are never merged nor deleted: left in place (or copied into ``dst``) and
    listed in ``skipped``. See :mod:`pqseal.dataset.compaction`."""
    from .compaction import run

    if options.get("retry_failed"):
        raise TypeError("compact retries every failed merge on a rerun (its inputs stay as they were): "
                        "retry_failed does not apply")
    return run(src, dst, encryption, decryption, target_size, _options(options))


__all__ = ["encrypt", "decrypt", "rekey", "verify", "inspect", "rotate", "compact", "Report", "FileResult", "Files",
           "JournalMismatch", "Options"]
