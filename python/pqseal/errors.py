"""The pqseal exception vocabulary.

Messages name modules, ordinals and key *ids*; they never contain key bytes.
Errors about bad arguments are also ``ValueError``/``TypeError`` so generic
callers can catch them the usual way.
"""

from __future__ import annotations


class PqsealError(Exception):
    """Base class of every pqseal error."""


class InvalidTag(PqsealError):
    """An authentication tag did not verify: the data was tampered with, truncated,
    moved, or decrypted with the wrong key or AAD. Names the failing module."""

    def __init__(self, message: str, *, index: int | None = None, module_type=None,
                 row_group: int | None = None, column: int | None = None, page: int | None = None):
        super().__init__(message)
        self.index = index
        self.module_type = module_type
        self.row_group = row_group
        self.column = column
        self.page = page


class MalformedModule(PqsealError, ValueError):
    """A module is too short, too long or its length prefix disagrees with its size."""

    def __init__(self, message: str, *, index: int | None = None):
        super().__init__(message)
        self.index = index


class MalformedFile(PqsealError, ValueError):
    """A file is not a well-formed (encrypted) Parquet file."""


class ShortBuffer(PqsealError, ValueError):
    """A caller-provided output buffer is too small."""


class InvalidOrdinal(PqsealError, ValueError):
    """A row-group, column or page ordinal lies outside 0..32767 (int16)."""


class InvalidKey(PqsealError, ValueError):
    """A key has the wrong length or type (AES keys are 16, 24 or 32 bytes)."""


class InvocationLimitExceeded(PqsealError):
    """A key has been used for 2^32 encryptions; NIST SP 800-38D forbids more with random nonces."""


class BackendUnavailable(PqsealError):
    """The requested cipher backend is not built in, not supported by the CPU, or not allowed (FIPS)."""


class CryptoLibraryError(PqsealError):
    """The underlying crypto library failed (CSPRNG, out of memory, internal error)."""


class KeyNotFound(PqsealError, KeyError):
    """A key id is unknown to the key store or KMS."""

    def __str__(self) -> str:  # KeyError quotes its argument; keep messages plain
        return str(self.args[0]) if self.args else ""


class KeyAccessDenied(PqsealError):
    """The KMS refused access to a key."""


class KmsError(PqsealError):
    """The KMS failed or answered with something unusable."""


class KeyDisabled(KeyAccessDenied):
    """The master key (or the key version a wrapped key names) exists but is disabled,
    or below the KMS's minimum decryption version; reversible by a key administrator."""


class KeyDestroyed(KeyAccessDenied):
    """The master key version a wrapped key names was destroyed: its bytes are gone and
    what it wrapped cannot be opened any more (irreversible)."""


class KmsUnavailable(KmsError):
    """The KMS cannot be reached or keeps failing transiently (after the bounded
    retries), or its circuit is open after repeated failures."""


class InvalidKmsUri(PqsealError, ValueError):
    """A KMS URI (or KMS TOML file) is malformed, names an unknown scheme, or has an
    option its client does not know."""


class CredentialsInKmsUri(InvalidKmsUri):
    """A KMS URI holds a credential (user-info, token, PIN, secret key): credentials come
    from the environment, files or the client's own chain, never from a URI."""


class MalformedKeyMaterial(PqsealError, ValueError):
    """Key material (PKMT1 JSON or a wrapped key) cannot be parsed."""


class OutputExists(PqsealError, FileExistsError):
    """The output path exists and the caller did not ask to overwrite it
    (``overwrite=True`` in the API, ``--force`` on the command line)."""


class UnsupportedFeature(PqsealError):
    """The input uses a feature pqseal does not (yet) support."""


class RotationInProgress(PqsealError):
    """Another process is rewriting this file's footer (a key rotation holds its lock)."""


class SessionExpired(PqsealError):
    """A key session (:class:`pqseal.keys.KeySession`) was used after its lifetime ended
    or after it was closed; its keys are no longer available."""


class InsecureTransport(PqsealError):
    """Key bytes would travel over a channel that is not encrypted (e.g. a key session
    sent to a plain-TCP Dask scheduler) and the caller did not explicitly allow it."""


class KeyUsageLimitExceeded(PqsealError):
    """A master key version reached a usage limit set to refuse (``pqseal keys limits``:
    maximum age, DEKs wrapped or bytes sealed): new wraps and seals with it are refused
    (rotate the key). Unwraps are never refused for a usage limit. Names the key id,
    version and limit; ``key_id``, ``version``, ``limit``, ``value`` and ``threshold``."""

    def __init__(self, message: str, *, key_id: str, version: int, limit: str, value: float, threshold: float):
        super().__init__(message)
        self.key_id, self.version, self.limit = key_id, version, limit
        self.value, self.threshold = value, threshold


class KeyUsageWarning(UserWarning):
    """A master key version reached a usage limit set to warn (``pqseal keys limits``)."""


__all__ = [name for name in dir() if name[0].isupper()]


class AuditLogError(PqsealError):
    """The audit log cannot be written (the audited operation then fails: no record is
    dropped silently) or its last record is malformed."""

