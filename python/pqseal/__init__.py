"""pqseal: Parquet Modular Encryption for Python with a native AES-GCM/CTR core."""

from ._version import __version__
from ._backend import available_backends, backend_info
from . import errors
from .errors import PqsealError, InvalidTag
from ._fips import enable_fips  # eager: PQSEAL_FIPS=1 is applied at import

# Imported on first use, so `import pqseal` stays light: name -> (module, attribute).
_LAZY = {
    **{n: (".api", n) for n in ("encrypt_file", "decrypt_file", "rekey_file", "verify", "inspect", "write_table",
                                "read_table", "recover", "rotate")},
    **{n: (".format", n) for n in ("EncryptionProperties", "DecryptionProperties", "FOOTER_KEY", "Stats",
                                   "AlreadyEncrypted", "NotEncrypted", "VerificationFailed")},
    "EncryptionConfig": (".config", "EncryptionConfig"),
    "DecryptionConfig": (".config", "DecryptionConfig"),
    "CryptoFactory": (".keys", "CryptoFactory"),
    "KeySession": (".keys", "KeySession"),
    "KmsClient": (".kms", "KmsClient"),
    "KmsConnectionConfig": (".kms", "KmsConnectionConfig"),
    "KeyListKms": (".kms", "KeyListKms"),
    "LocalKeystore": (".kms.keystore", "LocalKeystore"),
    "arrow": (".arrow", None),
    "open": (".io.open", "open"),
    "ParquetWriter": (".io.writer", "ParquetWriter"),
    "write_to_dataset": (".io.writer", "write_to_dataset"),
    "polars": (".polars", None),
    "io": (".io", None),
    "dataset": (".dataset", None),
}


def __getattr__(name):
    if name not in _LAZY:
        raise AttributeError(f"module 'pqseal' has no attribute {name!r}")
    import importlib

    module, attr = _LAZY[name]
    mod = importlib.import_module(module, __name__)
    value = mod if attr is None else getattr(mod, attr)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_LAZY))


__all__ = ["__version__", "available_backends", "backend_info", "enable_fips", "errors", "PqsealError", "InvalidTag",
           *_LAZY]
