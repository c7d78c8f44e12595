"""pqseal: Parquet Modular Encryption for Python with a native AES-GCM/CTR core."""

from ._version import __version__
from ._backend import available_backends, backend_info
from ._fips import enable_fips
from . import errors
from .errors import PqsealError, InvalidTag


def __getattr__(name):
    # the file engine is imported on first use, so `import pqseal` stays light
    if name in ("encrypt_file", "decrypt_file", "rekey_file", "verify", "inspect", "write_table", "read_table"):
        from . import api
        return getattr(api, name)
    if name in ("EncryptionProperties", "DecryptionProperties", "FOOTER_KEY"):
        from . import format as _format
        return getattr(_format, name)
    raise AttributeError(f"module 'pqseal' has no attribute {name!r}")


__all__ = ["__version__", "available_backends", "backend_info", "enable_fips", "errors", "PqsealError", "InvalidTag",
           "encrypt_file", "decrypt_file", "rekey_file", "verify", "inspect", "write_table", "read_table",
           "EncryptionProperties", "DecryptionProperties", "FOOTER_KEY"]
