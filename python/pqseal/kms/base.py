"""The KMS client contract shared with parquet-java and pyarrow.

A client wraps and unwraps keys with master keys that never leave the KMS:
``wrap_key(key_bytes, master_key_identifier) -> str`` and
``unwrap_key(wrapped_key, master_key_identifier) -> bytes``. Wrapped keys are text
(pyarrow passes them through UTF-8).
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field

DEFAULT = "DEFAULT"


@dataclass
class KmsConnectionConfig:
    """Where and how to reach a KMS (pyarrow's field names; unset values are "DEFAULT")."""

    kms_instance_id: str = DEFAULT
    kms_instance_url: str = DEFAULT
    key_access_token: str = DEFAULT
    custom_kms_conf: dict = field(default_factory=dict)

    def __post_init__(self):
        self.kms_instance_id = self.kms_instance_id or DEFAULT
        self.kms_instance_url = self.kms_instance_url or DEFAULT
        self.key_access_token = self.key_access_token or DEFAULT

    def refresh_key_access_token(self, value: str) -> None:
        self.key_access_token = value or DEFAULT

    def __repr__(self) -> str:  # the access token is a secret
        return (f"KmsConnectionConfig(kms_instance_id={self.kms_instance_id!r}, "
                f"kms_instance_url={self.kms_instance_url!r}, key_access_token='***', "
                f"custom_kms_conf={sorted(self.custom_kms_conf)})")


class KmsClient(abc.ABC):
    """Base class of KMS clients (same methods as ``pyarrow.parquet.encryption.KmsClient``)."""

    @abc.abstractmethod
    def wrap_key(self, key_bytes: bytes, master_key_identifier: str) -> str:
        """Encrypt ``key_bytes`` with the master key; return printable text."""

    @abc.abstractmethod
    def unwrap_key(self, wrapped_key: str, master_key_identifier: str) -> bytes:
        """Inverse of :meth:`wrap_key`."""
