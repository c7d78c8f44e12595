"""OpenBao / HashiCorp Vault transit as a KMS (``pqseal[vault]``, on ``hvac``).

Wrapped keys have the shape of parquet-java's sample ``VaultClient``: a key is wrapped by
transit ``encrypt`` of base64(key) under the transit key named by the master key id, and
the wrapped key is transit's ``vault:vN:...`` ciphertext; unwrap is transit ``decrypt``.
``kms_instance_id`` is the transit mount (``transit`` by default), so parquet-java's
sample (or any client of that shape) reads pqseal's files and the reverse.

URI: ``vault+http://HOST:PORT/MOUNT`` or ``vault+https://HOST:PORT/MOUNT`` with options

====================  ========================================================================
``mount=``            the transit mount (instead of the path; default ``transit``)
``namespace=``        a Vault Enterprise / OpenBao namespace
``ca=PATH``           CA bundle for ``vault+https`` (default: the system's)
``auth=``             ``token`` (default), ``approle`` or ``kubernetes``
``auth_mount=``       mount of the auth method (default ``approle`` / ``kubernetes``)
``role=``             Kubernetes auth role
``jwt_file=``         Kubernetes service-account token file (default: the pod's)
``role_id_file=``     AppRole role id file (else ``$VAULT_ROLE_ID``)
``secret_id_file=``   AppRole secret id file, mode 0600 (else ``$VAULT_SECRET_ID``)
``context=``          ``on`` (or ``derived``): bind each wrapped key to a context (see below); default ``off``
``timeout=``          seconds per HTTP call (default 10)
====================  ========================================================================

Credentials never come from the URI: a URI with user-info or a ``token``, ``secret_id``,
``role_id`` or ``jwt`` option is refused. The token comes from the connection config's
``key_access_token`` (as parquet-java passes it) when set, else ``$VAULT_TOKEN`` or
``$BAO_TOKEN``; AppRole and Kubernetes logins get theirs from the server.

Server and mount are the URI's: a file's recorded ``kmsInstanceURL`` and ``kmsInstanceID``
are not used (parquet-java's sample takes the mount from the instance id), so a crafted
file can neither send the token to another server nor aim it at other API paths; for the
same reason master key ids must be transit key names (no ``/``). pqseal records the
mount as ``kmsInstanceID`` and the server as ``kmsInstanceURL`` when the writer passes
:meth:`VaultTransitFactory.connection_config`, as parquet-java's writers do.

Derived-key context (``context=on``, as for AWS KMS; ``derived`` is the same; off by default): keys created by
:meth:`VaultTransitKms.create_key` are transit *derived* keys, and every wrap and unwrap
must pass the same context: the caller's (``wrap_key(..., context=b"...")``), else the one
pqseal's key layer states (:mod:`pqseal.kms.context`): with single wrapping the file's
name and the column, so a wrapped key copied to another file or column does not unwrap;
with double wrapping the KEK id (a KEK serves many files). Other readers (parquet-java,
pyarrow) send no context, so files written this way are unreadable by them; a call with
no context at all gets :class:`~pqseal.errors.UnsupportedFeature`.

A policy for writers and readers of files under master keys ``kf`` and ``kc``::

    path "transit/encrypt/kf" { capabilities = ["update"] }
    path "transit/decrypt/kf" { capabilities = ["update"] }
    (the same for kc)

``update`` without ``create``: transit's ``encrypt`` creates a missing key when the token
may ``create``, so a mistyped master key id would silently make a new key. Key
administration (``create_key``, ``rotate_key``, ``key_status``, ``rewrap``,
``set_min_decryption_version``) needs ``transit/keys/<id>`` (``create``, ``read``,
``update``), ``transit/keys/<id>/rotate`` and ``transit/rewrap/<id>`` (``update``).

Errors: 401/403 → :class:`KeyAccessDenied`; an unknown key → :class:`KeyNotFound`; a
ciphertext version below the key's ``min_decryption_version`` → :class:`KeyDisabled`;
connection failures, timeouts, 429 and 5xx are retried (:mod:`.resilience`) and end in
:class:`KmsUnavailable`.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import datetime as _dt
import math
import os
import re
from dataclasses import dataclass
from typing import Any, Callable
from urllib.parse import parse_qsl, urlsplit

from ..errors import (InvalidTag, KeyAccessDenied, KeyDisabled, KeyNotFound, KmsError, MalformedKeyMaterial,
                      UnsupportedFeature)
from ..keys.material import KeyMaterial
from ..keys.store import KeyMaterialStore, read_material
from .base import DEFAULT, KmsClient, KmsConnectionConfig
from .context import current_key_context
from .keystore import read_private_file
from .resilience import Resilience, RetryPolicy
from .uri import KmsUri

TOKEN_ENV = ("VAULT_TOKEN", "BAO_TOKEN")
K8S_JWT = "/var/run/secrets/kubernetes.io/serviceaccount/token"
CREDENTIAL_OPTIONS = {"token", "secret_id", "role_id", "jwt", "password"}
OPTIONS = {"mount", "namespace", "ca", "auth", "auth_mount", "role", "jwt_file", "role_id_file",
           "secret_id_file", "context", "timeout"}
WRAP_PREFIX = "vault:v"
# transit's own pattern for key names (\w, then \w, '-' or '.', ending in \w); master key
# ids come from files, and a name with '/' could reach other API paths with the token
KEY_NAME = re.compile(r"\w(?:[\w.-]*\w)?", re.ASCII)
MOUNT = re.compile(r"\w(?:[\w.-]*\w)?(?:/\w(?:[\w.-]*\w)?)*", re.ASCII)


@dataclass(frozen=True)
class VaultSettings:
    """Where the transit engine is and how to log in (no secrets)."""

    url: str                        # http(s)://host:port
    mount: str = "transit"
    namespace: str | None = None
    ca: str | None = None
    auth: str = "token"             # token | approle | kubernetes
    auth_mount: str | None = None
    role: str | None = None         # Kubernetes role
    jwt_file: str = K8S_JWT
    role_id_file: str | None = None
    secret_id_file: str | None = None
    derived: bool = False
    timeout: float = 10.0

    def __post_init__(self):
        if self.auth not in ("token", "approle", "kubernetes"):
            raise ValueError(f"vault: auth={self.auth} (expected token, approle or kubernetes)")
        if self.auth == "kubernetes" and not self.role:
            raise ValueError("vault: auth=kubernetes needs role=NAME")
        if not MOUNT.fullmatch(self.mount):
            raise ValueError(f"vault: bad transit mount {self.mount!r} (path segments of letters, digits, '_', "
                             "'-', '.')")


def settings_from_uri(uri: KmsUri) -> VaultSettings:
    """The settings of a ``vault+http(s)://`` URI; credentials in it are refused."""
    if uri.scheme not in ("vault+http", "vault+https"):
        raise ValueError(f"not a Vault URI: {uri.scheme}")
    body = uri.body if uri.body.startswith("//") else "//" + uri.body
    parts = urlsplit(body)
    options = dict(parse_qsl(parts.query, keep_blank_values=True))
    options.update(uri.options)
    if parts.username is not None or parts.password is not None or "@" in parts.netloc:
        raise ValueError("vault: credentials in the URI are refused (use VAULT_TOKEN / BAO_TOKEN, AppRole or "
                         "Kubernetes auth)")
    bad = CREDENTIAL_OPTIONS & set(options)
    if bad:
        raise ValueError(f"vault: credential option(s) {sorted(bad)} in the URI are refused (use VAULT_TOKEN / "
                         "BAO_TOKEN or files)")
    unknown = set(options) - OPTIONS
    if unknown:
        raise ValueError(f"vault: unknown URI option(s) {sorted(unknown)} (known: {', '.join(sorted(OPTIONS))})")
    if not parts.hostname:
        raise ValueError("vault: the URI names no host (vault+http://HOST:PORT/MOUNT)")
    try:
        port = parts.port
    except ValueError:
        raise ValueError("vault: bad port in the URI") from None
    http = uri.scheme[len("vault+"):]
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    url = f"{http}://{host}" + (f":{port}" if port else "")
    if options.get("ca") and http != "https":
        raise ValueError("vault: ca= applies to vault+https only")
    if options.get("context", "off") not in ("on", "off", "derived", "none"):
        raise ValueError("vault: context= takes 'on' (also 'derived') or 'off' (also 'none')")
    try:
        timeout = float(options.get("timeout", 10.0))
    except ValueError:
        timeout = math.nan
    if not (math.isfinite(timeout) and timeout > 0):
        raise ValueError("vault: timeout= takes a positive number of seconds")
    return VaultSettings(
        url=url, mount=options.get("mount") or parts.path.strip("/") or "transit",
        namespace=options.get("namespace") or None, ca=options.get("ca") or None,
        auth=options.get("auth", "token"), auth_mount=options.get("auth_mount") or None,
        role=options.get("role") or None, jwt_file=options.get("jwt_file") or K8S_JWT,
        role_id_file=options.get("role_id_file") or None, secret_id_file=options.get("secret_id_file") or None,
        derived=options.get("context") in ("on", "derived"), timeout=timeout)


def _read_file(path: str, what: str, private: bool) -> str:
    """A credential file's text; ``private``: refused unless only its owner can read it.
    (Kubernetes mounts service-account tokens readable by all users of the pod, so the
    JWT is read as it is; an AppRole role id is an identifier, not a secret.)"""
    try:
        if private:
            return read_private_file(path, what).decode("utf-8").strip()
        with open(path, "rb") as f:
            return f.read().decode("utf-8").strip()
    except (FileNotFoundError, IsADirectoryError, PermissionError, UnicodeDecodeError) as exc:
        raise KeyAccessDenied(f"vault: cannot read the {what} file {path}: {type(exc).__name__}") from None


def _secret(env: str, path: str | None, what: str, private: bool) -> str:
    if path:
        return _read_file(path, what, private)
    value = os.environ.get(env)
    if not value:
        raise KeyAccessDenied(f"vault: no {what}: set ${env} or the URI's {what.replace(' ', '_')}_file=")
    return value


def _is_transient(exc: BaseException) -> bool:
    import hvac.exceptions as hx
    import requests

    if isinstance(exc, requests.exceptions.SSLError):   # a certificate problem does not go away by retrying
        return False
    return isinstance(exc, (requests.ConnectionError, requests.Timeout, hx.InternalServerError, hx.VaultDown,
                            hx.BadGateway, hx.RateLimitExceeded))


def _data(resp: Any) -> dict:
    """The ``data`` object of a JSON answer ({} for anything else, e.g. 204 No Content)."""
    data = resp.get("data") if isinstance(resp, dict) else None
    return data if isinstance(data, dict) else {}


@dataclass(frozen=True)
class KeyStatus:
    """A transit key's versions: ``versions`` (1..latest: transit keeps every version,
    those below ``min_decryption_version`` archived), ``latest`` (used to wrap),
    ``min_decryption_version`` (older wrapped keys are :class:`KeyDisabled`), creation
    times where the server lists them (not for archived versions)."""

    key_id: str
    versions: tuple[int, ...]
    latest: int
    min_decryption_version: int
    derived: bool
    created: tuple[int | None, ...] = ()      # unix seconds, per version

    def state(self, version: int) -> str:
        """The keystore's lifecycle names: ``active`` (wraps), ``decrypt-only`` (older,
        still unwraps), ``disabled`` (below ``min_decryption_version``)."""
        if version < self.min_decryption_version:
            return "disabled"
        return "active" if version == self.latest else "decrypt-only"

    def rows(self) -> list[dict]:
        """One dict per version, shaped like :meth:`LocalKeystore.list`'s rows."""
        created = self.created or (None,) * len(self.versions)
        return [{"id": self.key_id, "version": v, "bits": None, "state": self.state(v),
                 "created": None if t is None else _dt.datetime.fromtimestamp(t, _dt.timezone.utc)
                 .isoformat(timespec="seconds")} for v, t in zip(self.versions, created)]


class VaultTransitKms(KmsClient):
    """A transit engine of one server as a KMS client (one HTTP session, one circuit)."""

    def __init__(self, settings: VaultSettings, *, token: str | None = None, resilience: Resilience | None = None):
        """``token``: the Vault token for ``auth=token`` (default ``$VAULT_TOKEN`` or
        ``$BAO_TOKEN``)."""
        import hvac  # the pqseal[vault] extra

        self.settings = settings
        self.mount = settings.mount
        self.resilience = resilience or Resilience(RetryPolicy(timeout=settings.timeout))
        verify: Any = settings.ca or True
        self._client = hvac.Client(url=settings.url, namespace=settings.namespace, verify=verify,
                                   timeout=self.resilience.policy.timeout)
        if settings.auth == "token":
            token = token or next((os.environ[e] for e in TOKEN_ENV if os.environ.get(e)), None)
            if not token:
                raise KeyAccessDenied("vault: no token: set VAULT_TOKEN or BAO_TOKEN (or the connection's "
                                      "key access token)")
            self._client.token = token
        else:
            self._login()

    def _login(self) -> None:
        s = self.settings
        if s.auth == "approle":
            role_id = _secret("VAULT_ROLE_ID", s.role_id_file, "role id", private=False)
            secret_id = _secret("VAULT_SECRET_ID", s.secret_id_file, "secret id", private=True)
            self._call_once(lambda: self._client.auth.approle.login(role_id, secret_id,
                                                                    mount_point=s.auth_mount or "approle"),
                            "AppRole login", s.auth_mount or "approle")
        else:
            jwt = _read_file(s.jwt_file, "Kubernetes service-account token", private=False)
            self._call_once(lambda: self._client.auth.kubernetes.login(s.role, jwt,
                                                                       mount_point=s.auth_mount or "kubernetes"),
                            "Kubernetes login", s.auth_mount or "kubernetes")

    # ---- server calls --------------------------------------------------------------------

    def _call(self, fn: Callable[[], Any], what: str, key_id: str) -> Any:
        """:meth:`_call_once` for the transit key ``key_id`` (a transit key name, else
        :class:`KeyNotFound` without a call); a call denied to a token of an AppRole or
        Kubernetes login (which expires) logs in again and is tried once more."""
        if not isinstance(key_id, str) or not KEY_NAME.fullmatch(key_id):
            raise KeyNotFound(f"vault: {key_id!r} is not a transit key name (letters, digits, '_', '-', '.')")
        try:
            return self._call_once(fn, what, key_id)
        except KeyAccessDenied as exc:
            if self.settings.auth == "token" or what.endswith("login") or isinstance(exc, KeyDisabled):
                raise
        self._login()
        return self._call_once(fn, what, key_id)

    def _call_once(self, fn: Callable[[], Any], what: str, key_id: str) -> Any:
        """``fn()`` through the retries and circuit, hvac's errors mapped to pqseal's.
        Messages name the operation, key id and mount, never key bytes or tokens."""
        import hvac.exceptions as hx
        import requests

        where = (f"vault {what} (auth mount {key_id!r})" if what.endswith("login")
                 else f"vault {what} of {key_id!r} (mount {self.mount!r})")

        def attempt():
            try:
                return fn()
            except (hx.Forbidden, hx.Unauthorized):
                raise KeyAccessDenied(f"{where}: permission denied") from None
            except hx.InvalidPath:
                raise KeyNotFound(f"{where}: not found") from None
            except hx.InvalidRequest as exc:
                msg = "; ".join(getattr(exc, "errors", None) or []) or "invalid request"
                if "not found" in msg:
                    raise KeyNotFound(f"{where}: {msg}") from None
                if what.endswith("login"):
                    raise KeyAccessDenied(f"{where}: {msg}") from None
                if "disallowed by policy" in msg:
                    raise KeyDisabled(f"{where}: the wrapped key's version is below the key's "
                                      f"min_decryption_version ({msg})") from None
                if "message authentication failed" in msg:
                    raise InvalidTag(f"{where}: the wrapped key does not decrypt ({msg})") from None
                raise KmsError(f"{where}: {msg}") from None
            except requests.exceptions.SSLError as exc:
                raise KmsError(f"{where}: TLS failed (CA bundle: ca=PATH): {exc}") from None
            except hx.VaultError as exc:
                if _is_transient(exc):
                    raise
                raise KmsError(f"{where}: {type(exc).__name__}") from None
        return self.resilience.call(attempt, where, _is_transient)

    @staticmethod
    def _context(context: bytes | None) -> str | None:
        return None if context is None else base64.b64encode(context).decode("ascii")

    def _need_context(self, context: bytes | None) -> bytes | None:
        """The derived-key context: the caller's, else what pqseal's key layer states
        around the call (file and column with single wrapping, the KEK id with double;
        see :mod:`pqseal.kms.context`), as sorted ``name=value`` lines."""
        if not self.settings.derived:
            return context
        if context is None:
            stated = current_key_context()
            if stated:
                context = "\n".join(f"{k}={v}" for k, v in sorted(stated.items())).encode()
        if not context:
            raise UnsupportedFeature("vault: context=derived binds every wrapped key to a context, and this "
                                     "caller passed none (parquet-java and pyarrow readers do not)")
        return context

    def wrap_key(self, key_bytes: bytes, master_key_identifier: str, context: bytes | None = None) -> str:
        context = self._need_context(context)
        plaintext = base64.b64encode(bytes(key_bytes)).decode("ascii")
        resp = self._call(lambda: self._client.secrets.transit.encrypt_data(
            master_key_identifier, plaintext=plaintext, context=self._context(context), mount_point=self.mount),
            "encrypt", master_key_identifier)
        wrapped = _data(resp).get("ciphertext")
        if not isinstance(wrapped, str) or not wrapped.startswith(WRAP_PREFIX):
            raise KmsError(f"vault encrypt of {master_key_identifier!r}: no vault:vN: ciphertext in the answer")
        return wrapped

    def unwrap_key(self, wrapped_key: str, master_key_identifier: str, context: bytes | None = None) -> bytes:
        context = self._need_context(context)
        if not isinstance(wrapped_key, str) or not wrapped_key.startswith(WRAP_PREFIX):
            raise MalformedKeyMaterial("not a Vault transit wrapped key (vault:vN:...)")
        resp = self._call(lambda: self._client.secrets.transit.decrypt_data(
            master_key_identifier, ciphertext=wrapped_key, context=self._context(context), mount_point=self.mount),
            "decrypt", master_key_identifier)
        try:
            return base64.b64decode(_data(resp).get("plaintext") or "", validate=True)
        except (binascii.Error, ValueError, TypeError):
            raise KmsError(f"vault decrypt of {master_key_identifier!r}: the answer is not base64") from None

    # ---- key administration (where the token's policy allows it) -------------------------

    def create_key(self, key_id: str) -> KeyStatus:
        """A new transit key (aes256-gcm96; derived with ``context=derived``); refuses an
        existing one."""
        if not key_id or "/" in key_id or "\n" in key_id:
            raise ValueError("key id must be a non-empty single-line string without '/'")
        try:
            self.key_status(key_id)
        except KeyNotFound:
            pass
        else:
            raise ValueError(f"master key {key_id!r} already exists (rotate it instead)")
        self._call(lambda: self._client.secrets.transit.create_key(
            key_id, derived=self.settings.derived or None, mount_point=self.mount), "create", key_id)
        return self.key_status(key_id)

    def rotate_key(self, key_id: str) -> KeyStatus:
        """A new key version; new wraps use it, older wrapped keys keep unwrapping."""
        self._call(lambda: self._client.secrets.transit.rotate_key(key_id, mount_point=self.mount), "rotate", key_id)
        return self.key_status(key_id)

    def key_status(self, key_id: str) -> KeyStatus:
        resp = self._call(lambda: self._client.secrets.transit.read_key(key_id, mount_point=self.mount),
                          "read", key_id)
        d = _data(resp)
        try:
            times = {int(v): int(t) for v, t in d.get("keys", {}).items()}
            latest = int(d["latest_version"])
            return KeyStatus(key_id, tuple(range(1, latest + 1)), latest, int(d["min_decryption_version"]),
                             bool(d.get("derived")), tuple(times.get(v) for v in range(1, latest + 1)))
        except (KeyError, TypeError, ValueError):
            raise KmsError(f"vault read of {key_id!r}: unexpected answer") from None

    def set_min_decryption_version(self, key_id: str, version: int) -> KeyStatus:
        """Disable unwrapping of key versions below ``version`` (reversible)."""
        self._call(lambda: self._client.secrets.transit.update_key_configuration(
            key_id, min_decryption_version=int(version), mount_point=self.mount), "configure", key_id)
        return self.key_status(key_id)

    def rewrap(self, wrapped_key: str, key_id: str, context: bytes | None = None) -> str:
        """``wrapped_key`` wrapped again under the key's latest version by the server
        (transit ``rewrap``): the key never reaches pqseal."""
        context = self._need_context(context)
        if not isinstance(wrapped_key, str) or not wrapped_key.startswith(WRAP_PREFIX):
            raise MalformedKeyMaterial("not a Vault transit wrapped key (vault:vN:...)")
        resp = self._call(lambda: self._client.secrets.transit.rewrap_data(
            key_id, ciphertext=wrapped_key, context=self._context(context), mount_point=self.mount),
            "rewrap", key_id)
        wrapped = _data(resp).get("ciphertext")
        if not isinstance(wrapped, str) or not wrapped.startswith(WRAP_PREFIX):
            raise KmsError(f"vault rewrap of {key_id!r}: no vault:vN: ciphertext in the answer")
        return wrapped

    def __repr__(self) -> str:
        return f"<VaultTransitKms {self.settings.url} mount {self.mount!r} auth {self.settings.auth}>"

    def __reduce__(self):
        raise TypeError("VaultTransitKms holds a Vault token and cannot be pickled")


@dataclass(frozen=True, eq=False)   # one factory, one key session (pqseal.api caches per factory object)
class VaultTransitFactory:
    """``(KmsConnectionConfig) -> VaultTransitKms`` for one URI's settings. The config's
    ``key_access_token`` (when not DEFAULT) is the token. Server and mount are the URI's:
    the config's ``kms_instance_url`` and ``kms_instance_id`` (which a reader takes from
    the file's key material) are not used, so a crafted file can neither send the token
    to another server nor point the calls at another API path of this one."""

    settings: VaultSettings
    policy: RetryPolicy | None = None

    def __call__(self, config: KmsConnectionConfig) -> VaultTransitKms:
        token = config.key_access_token if config.key_access_token != DEFAULT else None
        policy = self.policy or RetryPolicy(timeout=self.settings.timeout)
        return VaultTransitKms(self.settings, token=token, resilience=Resilience(policy))

    def connection_config(self) -> KmsConnectionConfig:
        """The coordinates to record in key material (``kmsInstanceID`` = the mount,
        ``kmsInstanceURL`` = the server), as parquet-java's writers do."""
        return KmsConnectionConfig(self.settings.mount, self.settings.url)


def rewrap_key_material(kms: VaultTransitKms, parquet_file_path) -> int:
    """Re-wrap the external key material of a file under the latest versions of its
    transit keys with transit ``rewrap``: the server decrypts and encrypts, so neither
    DEKs nor KEKs reach pqseal (unlike :meth:`CryptoFactory.rotate_master_keys`, which
    unwraps and wraps). The Parquet file is not touched. Returns the number of keys."""
    doc = read_material(parquet_file_path)
    out = {}
    for ref, text in doc.items():
        m = KeyMaterial.parse(text)
        if m.double_wrapping:
            if m.wrapped_kek is None:
                raise MalformedKeyMaterial("double-wrapped key material without wrappedKEK")
            m = dataclasses.replace(m, wrapped_kek=kms.rewrap(m.wrapped_kek, m.master_key_id))
        else:
            m = dataclasses.replace(m, wrapped_dek=kms.rewrap(m.wrapped_dek, m.master_key_id))
        out[ref] = m.to_json(None)
    KeyMaterialStore(parquet_file_path, out).write()
    return len(out)


def from_uri(uri: KmsUri) -> VaultTransitFactory:
    """The KMS client factory of a ``vault+http(s)://`` URI (:mod:`pqseal.kms.uri`)."""
    return VaultTransitFactory(settings_from_uri(uri))
