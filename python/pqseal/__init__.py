"""pqseal: Parquet Modular Encryption for Python with a native AES-GCM/CTR core."""

from ._version import __version__
from ._backend import available_backends, backend_info
from . import errors
from .errors import PqsealError, InvalidTag

__all__ = ["__version__", "available_backends", "backend_info", "errors", "PqsealError", "InvalidTag"]
