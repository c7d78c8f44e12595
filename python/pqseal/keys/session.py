"""Two-tier key sessions (Apache Spark's SPARK-33966, never merged there): the driver
alone talks to the KMS; workers seal and open files with the session's key-encryption
keys (KEKs) and never construct a KMS client.

Write side: one KEK per master key per session, each wrapped by one KMS call; workers
draw fresh DEKs per file and column and wrap them under the KEK locally (double
wrapping), writing PKMT1 key material that pyarrow and parquet-java read with their own
KMS clients. Read side: the driver scans the files' key material (footers, decrypted
with the footer DEK where the footer is encrypted, and ``_KEY_MATERIAL_FOR_*`` files;
no page is read), gathers the distinct wrapped KEKs and unwraps each with one KMS call.

A session holds key bytes, so it leaves its process only on request: ``export()`` /
``KeySession.import_()``, or pickling after ``portable()``. Its ``repr`` shows no key
bytes; ``close()`` wipes them; after ``expires_at`` (wall clock) every use is refused.
"""

from __future__ import annotations

from collections.abc import Iterable

from ..format.properties import DecryptionProperties, EncryptionProperties
from .config import DecryptionConfig, EncryptionConfig

DEFAULT_SESSION_LIFETIME = 3600.0


class KeySession:
    """The KEKs of one job. Interface (implemented by the key-session work of issue 10):

    Driver side (makes every KMS call, through ``kms`` only):
    - ``KeySession.open(kms=None, encryption=None, *, decryption=None,
      kms_connection_config=None, lifetime=DEFAULT_SESSION_LIFETIME)``: ``encryption`` an
      :class:`EncryptionConfig` (or a zone policy's config): one KEK per master key it
      names, one KMS wrap each. ``encryption=None``: a read-only session.
    - ``add_files(paths) -> int``: read side; KEKs for every file's key material, one KMS
      unwrap per distinct wrapped KEK (single-wrapped DEKs: one unwrap per DEK). Returns
      the number of KMS calls made.
    - ``add_master_keys(ids) -> int``: write KEKs for more master keys (rotation).
    - ``kms_calls``: KMS calls made so far.

    Worker side (no KMS; raises :class:`~pqseal.errors.KeyNotFound` for a key the
    session lacks, :class:`~pqseal.errors.SessionExpired` after ``expires_at``):
    - ``encryption_properties(dst) -> EncryptionProperties``
    - ``decryption_properties(src) -> DecryptionProperties``
    - ``rewrap_material(material_json: dict[str, str]) -> dict[str, str]``: the entries
      of a ``_KEY_MATERIAL_FOR_*`` file re-wrapped under the session's write KEKs.

    Portability: ``portable() -> KeySession`` (self, now picklable), ``export() -> bytes``,
    ``KeySession.import_(data) -> KeySession``; ``close()`` (also ``with``).
    """

    @classmethod
    def open(cls, kms=None, encryption: EncryptionConfig | None = None, *,
             decryption: DecryptionConfig | None = None, kms_connection_config=None,
             lifetime: float = DEFAULT_SESSION_LIFETIME) -> "KeySession":
        raise NotImplementedError

    def add_files(self, paths: Iterable[str]) -> int:
        raise NotImplementedError

    def add_master_keys(self, master_key_ids: Iterable[str]) -> int:
        raise NotImplementedError

    def encryption_properties(self, dst=None) -> EncryptionProperties:
        raise NotImplementedError

    def decryption_properties(self, src=None) -> DecryptionProperties:
        raise NotImplementedError

    def rewrap_material(self, material: dict[str, str]) -> dict[str, str]:
        raise NotImplementedError

    def portable(self) -> "KeySession":
        raise NotImplementedError

    def export(self) -> bytes:
        raise NotImplementedError

    @classmethod
    def import_(cls, data: bytes) -> "KeySession":
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError
