"""Parquet format layer: Thrift codec, footer parsing, page walking, relocation, PAR1/PARE writing."""

from .engine import AlreadyEncrypted, NotEncrypted, Stats, VerificationFailed, transform, verify_file
from .inspect import inspect_file, parse_key_metadata
from .properties import FOOTER_KEY, DecryptionProperties, EncryptionProperties

__all__ = ["AlreadyEncrypted", "NotEncrypted", "VerificationFailed", "Stats", "transform", "verify_file", "inspect_file",
           "parse_key_metadata", "FOOTER_KEY", "DecryptionProperties", "EncryptionProperties"]
