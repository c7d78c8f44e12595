"""Parquet format layer: Thrift codec, footer parsing, page walking, relocation, PAR1/PARE writing."""

from .engine import AlreadyEncrypted, NotEncrypted, Stats, transform
from .inspect import describe_key_metadata, inspect_file
from .properties import FOOTER_KEY, DecryptionProperties, EncryptionProperties
from .verify import VerificationFailed, verify_file

__all__ = ["AlreadyEncrypted", "NotEncrypted", "VerificationFailed", "Stats", "transform", "verify_file",
           "inspect_file", "describe_key_metadata", "FOOTER_KEY", "DecryptionProperties", "EncryptionProperties"]
