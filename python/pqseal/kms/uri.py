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
Each scheme's client module provides ``from_uri(uri: KmsUri) -> KmsClientFactory`` and
refuses options it does not know (:func:`check_options`), never ignores them.

Parsing, per scheme: ``body`` is what follows ``SCHEME:`` up to the query (``?``), as
written (``//127.0.0.1:8200/transit`` for Vault, ``module=...;token=...`` for PKCS#11,
``//us-east-1`` for AWS, the path for the keystore). ``options`` are the query parameters
(percent-decoded), for ``pkcs11:`` also the ``;``-separated path attributes (RFC 7512),
and for a TOML file its other top-level keys. A name given twice is refused. Options
named like credentials (``token`` except PKCS#11's token label, ``pin``, ``pin-value``,
``password``, ``secret...``, ``aws_secret_access_key``, ``aws_session_token``,
``aws_access_key_id``) and URIs with user-info (``user:pass@host``) raise
:class:`~pqseal.errors.CredentialsInKmsUri`; names ending in ``_file``, ``-file``,
``_env`` or ``pin-source`` name where a secret lives and are allowed. Error messages never
repeat option values.
"""

from __future__ import annotations

import importlib
import os
import re
import urllib.parse
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Callable

from ..errors import CredentialsInKmsUri, InvalidKmsUri, UnsupportedFeature
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
FILE_SCHEME = "file"

# credential option names (normalised: lower case, '-' -> '_'), refused in every scheme
_CREDENTIALS = {"pin", "pin_value", "password", "passwd", "pwd", "secret", "secret_id", "secret_key",
                "secret_access_key", "aws_secret_access_key", "session_token", "aws_session_token",
                "access_key", "access_key_id", "aws_access_key_id", "api_key", "apikey", "key_list",
                "credentials", "jwt"}
_CREDENTIAL_WORDS = ("secret", "password", "passwd", "token")
# where a secret lives, not the secret itself
_LOCATION_SUFFIXES = ("_file", "_env", "_path", "pin_source")


@dataclass(frozen=True)
class KmsUri:
    """A parsed KMS name: ``scheme``, the rest of the URI as written (``body``), and
    options (query parameters, PKCS#11 attributes, TOML keys) as strings."""

    scheme: str
    body: str
    options: dict[str, str] = field(default_factory=dict)
    text: str = ""

    def __repr__(self) -> str:
        return f"KmsUri({self.text!r})"


def _is_credential(scheme: str, name: str) -> bool:
    n = name.lower().replace("-", "_")
    if n.endswith(_LOCATION_SUFFIXES):
        return False
    if scheme == "pkcs11" and n in ("token", "token_label", "token_serial", "token_manufacturer", "token_model"):
        return False  # the token's label and identity, not an access token
    return n in _CREDENTIALS or any(w in n for w in _CREDENTIAL_WORDS)


def _add(scheme: str, options: dict[str, str], name: str, value: str, where: str) -> None:
    if not name:
        raise InvalidKmsUri(f"{scheme}: an option without a name in {where}")
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
        raise InvalidKmsUri(f"{scheme}: option names are letters, digits, '_', '-' and '.' ({where})")
    if _is_credential(scheme, name):
        raise CredentialsInKmsUri(f"{scheme}: {name!r} is a credential and is refused in a KMS URI or config file; "
                                  "give it through the environment or a file (see the client's documentation)")
    if name in options:
        raise InvalidKmsUri(f"{scheme}: option {name!r} given twice")
    options[name] = value


def _pairs(scheme: str, text: str, sep: str, options: dict[str, str], where: str) -> None:
    for item in text.split(sep):
        if not item:
            continue
        name, eq, value = item.partition("=")
        if not eq:
            raise InvalidKmsUri(f"{scheme}: {where} entries are NAME=VALUE (got {urllib.parse.unquote(name)!r})")
        _add(scheme, options, urllib.parse.unquote(name), urllib.parse.unquote(value), where)


def _split_scheme(text: str) -> tuple[str, str]:
    m = re.match(r"([A-Za-z][A-Za-z0-9+.-]*):", text)
    if m:
        return m.group(1).lower(), text[m.end():]
    if re.fullmatch(r"[A-Za-z][A-Za-z0-9+.-]*", text):
        return text.lower(), ""  # a bare "keystore" or "keylist"
    raise InvalidKmsUri(f"not a KMS URI (expected SCHEME:..., schemes: {_known()})")


def _known() -> str:
    return ", ".join(sorted([*SCHEMES, FILE_SCHEME]))


def _parse(text: str, extra: Mapping[str, str] | None = None) -> KmsUri:
    scheme, rest = _split_scheme(text)
    if scheme not in SCHEMES:
        raise InvalidKmsUri(f"unknown KMS scheme {scheme!r} (known: {_known()})")
    options: dict[str, str] = {}
    if scheme == "keystore":
        body = rest  # a path, taken as written ('?' and ';' may be part of it)
    elif scheme == "keylist":
        if rest:
            raise CredentialsInKmsUri("keylist: takes no argument; its master keys come from $PQSEAL_KEY_LIST "
                                      "or --key-list (env:NAME, file:PATH), never from the URI")
        body = ""
    else:
        body, _, query = rest.partition("?")
        if scheme == "pkcs11":
            _pairs(scheme, body, ";", options, "path attributes")
            _pairs(scheme, query, "&", options, "query attributes")
        else:
            if not body.startswith("//"):
                raise InvalidKmsUri(f"{scheme}: expected {scheme}://HOST... ")
            if "@" in body.split("/", 3)[2]:
                raise CredentialsInKmsUri(f"{scheme}: user-info (user:password@) is refused in a KMS URI; give "
                                          "credentials through the environment or a file")
            _pairs(scheme, query, "&", options, "query")
    for name, value in (extra or {}).items():
        _add(scheme, options, name, value, "the config file")
    return KmsUri(scheme, body, options, text)


def _toml_value(name: str, value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (str, int, float)):
        return str(value)
    raise InvalidKmsUri(f"KMS config file: option {name!r} must be a string, number or boolean")


def _from_toml(path: str) -> KmsUri:
    import tomllib

    try:
        with open(os.path.expanduser(path), "rb") as f:
            doc = tomllib.load(f)
    except FileNotFoundError:
        raise InvalidKmsUri(f"KMS config file {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        detail = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise InvalidKmsUri(f"KMS config file {path}: {type(exc).__name__}: {detail}") from None
    except tomllib.TOMLDecodeError as exc:
        raise InvalidKmsUri(f"KMS config file {path} is not valid TOML: {exc}") from None
    uri = doc.pop("uri", None)
    if not isinstance(uri, str):
        raise InvalidKmsUri(f"KMS config file {path} needs uri = \"SCHEME:...\" (a string)")
    if _split_scheme(uri.strip())[0] == FILE_SCHEME:
        raise InvalidKmsUri(f"KMS config file {path}: uri must name a KMS, not another file")
    return _parse(uri.strip(), {k: _toml_value(k, v) for k, v in doc.items()})


def parse_kms_uri(text: str) -> KmsUri:
    """Parse a KMS URI (or ``file:X.toml``); unknown schemes and credentials in the URI
    raise ``ValueError`` (a :class:`~pqseal.errors.PqsealError`)."""
    if not isinstance(text, str):
        raise InvalidKmsUri(f"a KMS URI is a string, not {type(text).__name__}")
    text = text.strip()
    if not text:
        raise InvalidKmsUri(f"empty KMS URI (schemes: {_known()})")
    scheme, rest = _split_scheme(text)
    if scheme == FILE_SCHEME:
        if rest.startswith("//"):
            rest = urllib.parse.unquote(rest[2:])
        if not rest:
            raise InvalidKmsUri("file: needs the path of a TOML file (file:PATH.toml)")
        return _from_toml(rest)
    return _parse(text)


def check_options(uri: KmsUri, known: Iterable[str]) -> None:
    """Refuse options a client does not know (a typo must not be ignored)."""
    known = set(known)
    unknown = sorted(set(uri.options) - known)
    if unknown:
        raise InvalidKmsUri(f"{uri.scheme}: unknown option(s) {', '.join(unknown)} (known: "
                            f"{', '.join(sorted(known)) or 'none'})")


def open_kms(uri: str | KmsUri) -> KmsClientFactory:
    """A KMS client factory ``(KmsConnectionConfig) -> KmsClient`` for a KMS URI."""
    parsed = uri if isinstance(uri, KmsUri) else parse_kms_uri(uri)
    try:
        module = importlib.import_module(SCHEMES[parsed.scheme], __package__)
    except ModuleNotFoundError as exc:
        raise UnsupportedFeature(f"{parsed.scheme}: the client is not installed ({exc.name} missing); install "
                            f"pqseal[{_EXTRAS.get(parsed.scheme, parsed.scheme)}]") from None
    return module.from_uri(parsed)


_EXTRAS = {"vault+http": "vault", "vault+https": "vault", "pkcs11": "pkcs11", "aws-kms": "aws"}


def kms_connection_from_uri(uri: str | KmsUri, **fields) -> KmsConnectionConfig:
    """A :class:`KmsConnectionConfig` naming the KMS by its URI (``kms_instance_url``,
    recorded in key material), other fields as given. The URI holds no credentials."""
    parsed = uri if isinstance(uri, KmsUri) else parse_kms_uri(uri)
    return KmsConnectionConfig(kms_instance_url=parsed.text, **fields)
