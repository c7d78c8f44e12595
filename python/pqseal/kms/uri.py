"""One way to name a KMS everywhere (CLI ``--kms``, ``KmsConnectionConfig``, zone
policies, dataset jobs): a URI, or a TOML file holding the same fields.

====================================================  =====================================
``keystore:`` / ``keystore:PATH``                     the local keystore (default)
``keylist:``                                          parquet-java's InMemoryKMS key list
                                                      (keys from ``$PQSEAL_KEY_LIST``)
``vault+http://HOST:PORT/MOUNT`` (``vault+https``)    OpenBao / Vault transit (``pqseal[vault]``)
``pkcs11:module=/path/lib.so;token=NAME``             a PKCS#11 token (``pqseal[pkcs11]``)
``aws-kms://REGION[?endpoint=URL]``                   AWS KMS (``pqseal[aws]``)
``file:PATH.toml``                                    a TOML file: ``uri = "..."`` plus options
====================================================  =====================================

Credentials never come from the URI's user-info or from command-line arguments: tokens,
PINs and AWS credentials come from the environment, files or the client's usual chain.
Each scheme's client module provides ``from_uri(uri: KmsUri) -> KmsClientFactory``.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Callable

from .base import KmsClient, KmsConnectionConfig

KmsClientFactory = Callable[[KmsConnectionConfig], KmsClient]

#: scheme -> module (relative to pqseal.kms) providing ``from_uri``
SCHEMES = {
    "keystore": ".keystore",
    "keylist": ".keylist",
    "vault+http": ".vault",
    "vault+https": ".vault",
    "pkcs11": ".pkcs11",
    "aws-kms": ".aws",
}


@dataclass(frozen=True)
class KmsUri:
    """A parsed KMS name: ``scheme``, the rest of the URI as written (``body``), and
    options (query parameters, PKCS#11 attributes, TOML keys) as strings."""

    scheme: str
    body: str
    options: dict[str, str] = field(default_factory=dict)
    text: str = ""


def parse_kms_uri(text: str) -> KmsUri:
    """Parse a KMS URI (or ``file:X.toml``); unknown schemes and credentials in the URI
    raise ``ValueError`` (a :class:`~pqseal.errors.PqsealError`)."""
    raise NotImplementedError


def open_kms(uri: str) -> KmsClientFactory:
    """A KMS client factory ``(KmsConnectionConfig) -> KmsClient`` for a KMS URI."""
    parsed = parse_kms_uri(uri)
    module = importlib.import_module(SCHEMES[parsed.scheme], __package__)
    return module.from_uri(parsed)
