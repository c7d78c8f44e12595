"""AWS KMS as a pqseal KMS client (``pqseal[aws]``, on ``boto3``).

``aws-kms://REGION?endpoint=URL&profile=NAME&context=on&retries=N&timeout=S&ca_bundle=PATH``

- Wrapping is KMS ``Encrypt`` of the key under the master key, unwrapping is ``Decrypt``
  with the master key named (so a wrapped key only opens under the key the file names).
  Master key ids are whatever AWS accepts: key ids, key ARNs, ``alias/NAME``, alias ARNs.
  The region is the URI's host (empty: boto3's configured region); credentials come
  from boto3's usual chain (environment, profile, instance role), never from the URI.
- A wrapped key is the base64 ``CiphertextBlob``. With ``context=on`` it is bound by an
  AWS *encryption context* (authenticated data that ``Decrypt`` must repeat exactly) to
  what pqseal's key layer says it belongs to (:mod:`pqseal.kms.context`):
  single wrapping binds each DEK to ``pqseal:file`` (the file's base name) and
  ``pqseal:column`` (its column path, or ``(footer)``); double wrapping binds each KEK
  to ``pqseal:kek_id`` (a KEK serves many files, so not to a file). Such a wrapped key
  is ``pqaws1;NAMES;BASE64`` (NAMES: the bound names, comma-separated; their values are
  not stored, the reader supplies them), so a wrapped DEK copied into another file or
  column, or a wrapped KEK put under another KEK id, does not unwrap, and IAM policies
  can grant ``kms:Decrypt`` per column through ``kms:EncryptionContext:pqseal:column``.
  None of parquet-java, pyarrow or Spark has such a binding, and their readers cannot
  supply the context: ``context=on`` files are read by pqseal only (``pqseal.arrow``'s
  bridge included, as pyarrow calls the client without it), and renaming a file whose
  DEKs are bound to it (single wrapping) makes them unreadable. Hence off by default.
  Rotation (``pqseal rotate``) of bound single-wrapped external material is refused:
  the material does not name its columns.
- Throttling, KMS internal errors, timeouts and connection failures are retried by
  :class:`~pqseal.kms.resilience.Resilience` (bounded, full jitter, circuit breaker);
  botocore's own retries are switched off (``total_max_attempts=1``) so the bound is pqseal's.
  AWS errors become typed: AccessDenied -> :class:`KeyAccessDenied`, NotFound ->
  :class:`KeyNotFound`, Disabled / KMSInvalidState -> :class:`KeyDisabled`,
  InvalidCiphertext / IncorrectKey -> :class:`InvalidTag`, unreachable ->
  :class:`KmsUnavailable`.
- :meth:`AwsKms.generate_key` is ``GenerateDataKey`` (key and wrapped key in one call,
  the key from AWS's RNG), used for KEKs with double wrapping: one call, as random KEK +
  ``Encrypt`` would be; it saves the local RNG draw, not a round trip.
- Key administration (``pqseal keys ... --kms aws-kms://...``, :class:`~pqseal.kms.admin.KeyAdmin`):
  ``create`` is ``CreateKey`` (SYMMETRIC_DEFAULT, 256 bits) plus ``CreateAlias alias/ID``;
  ``rotate`` is ``RotateKeyOnDemand``; ``disable``/``enable`` are ``DisableKey``/``EnableKey``
  of the whole key (AWS has no per-version states); ``destroy`` is ``ScheduleKeyDeletion``
  after 7 to 30 days (never an immediate delete), cancelled by ``enable``
  (``CancelKeyDeletion``, then ``EnableKey``). A key's version is its number of
  rotations (``ListKeyRotations``) + 1, or 1 when the caller may not list them; its state:
  active (Enabled), disabled, pending-deletion, or AWS's other states in kebab case.

The tests run against moto's KMS server: it checks the API (parameters, errors, key ids,
aliases, encryption context), not AWS's cryptography, key states or IAM policies.
"""

from __future__ import annotations

import base64
import binascii
import datetime as _dt
import re
import threading
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field

from ..errors import (InvalidKmsUri, InvalidTag, KeyAccessDenied, KeyDisabled, KeyNotFound, KmsError,
                      MalformedKeyMaterial, PqsealError, UnsupportedFeature)
from .admin import KeyVersionInfo, ScheduledDeletion
from .base import KmsClient, KmsConnectionConfig
from .context import current_key_context
from .resilience import Resilience, RetryPolicy
from .uri import KmsUri, check_options

OPTIONS = ("endpoint", "profile", "context", "retries", "timeout", "ca_bundle")
BOUND_PREFIX = "pqaws1"
CONTEXT_PREFIX = "pqseal:"

_TRANSIENT_CODES = {"ThrottlingException", "Throttling", "TooManyRequestsException", "RequestLimitExceeded",
                    "KMSInternalException", "InternalFailure", "ServiceUnavailable", "ServiceUnavailableException",
                    "DependencyTimeoutException", "KeyUnavailableException", "RequestTimeout",
                    "RequestTimeoutException"}
_ERRORS = {"AccessDeniedException": KeyAccessDenied, "AccessDenied": KeyAccessDenied,
           "NotAuthorizedException": KeyAccessDenied, "UnrecognizedClientException": KeyAccessDenied,
           "InvalidSignatureException": KeyAccessDenied, "ExpiredTokenException": KeyAccessDenied,
           "NotFoundException": KeyNotFound, "UnsupportedOperationException": UnsupportedFeature,
           "DisabledException": KeyDisabled, "KMSInvalidStateException": KeyDisabled,
           "InvalidCiphertextException": InvalidTag, "IncorrectKeyException": InvalidTag}


def _is_transient(exc: BaseException) -> bool:
    from botocore.exceptions import ClientError, ConnectionError, HTTPClientError

    if isinstance(exc, ClientError):
        err = exc.response.get("Error", {})
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
        return err.get("Code") in _TRANSIENT_CODES or status >= 500 or status == 429
    return isinstance(exc, (ConnectionError, HTTPClientError))  # refused, reset, timeouts


def _typed(exc: Exception, what: str) -> PqsealError:
    from botocore.exceptions import ClientError, NoCredentialsError, NoRegionError

    if isinstance(exc, ClientError):
        err = exc.response.get("Error", {})
        code = err.get("Code", "")
        cls = _ERRORS.get(code, KmsError)
        if cls is InvalidTag:
            return InvalidTag(f"AWS KMS {what}: {code}: the wrapped key is altered, belongs to another master key, "
                              "or was bound to another file, column or KEK (encryption context)")
        return cls(f"AWS KMS {what}: {code}: {err.get('Message', '')}".rstrip(": "))
    if isinstance(exc, NoCredentialsError):
        return KeyAccessDenied(f"AWS KMS {what}: no AWS credentials (boto3's chain: environment, profile, role)")
    if isinstance(exc, NoRegionError):
        return InvalidKmsUri("aws-kms: no region: name it (aws-kms://REGION) or configure one for boto3")
    return KmsError(f"AWS KMS {what}: {type(exc).__name__}: {exc}")


def _b64(blob: bytes) -> str:
    return base64.b64encode(blob).decode("ascii")


def _parse_wrapped(wrapped: str) -> tuple[list[str], bytes]:
    """(bound context names, ciphertext blob) of a wrapped key."""
    text = str(wrapped)
    names: list[str] = []
    if text.startswith(BOUND_PREFIX + ";"):
        parts = text.split(";")
        if len(parts) != 3 or not parts[1]:
            raise MalformedKeyMaterial("AWS KMS wrapped key: expected pqaws1;NAMES;BASE64")
        names, text = parts[1].split(","), parts[2]
    try:
        blob = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise MalformedKeyMaterial("AWS KMS wrapped key is not base64") from None
    if not blob:
        raise MalformedKeyMaterial("AWS KMS wrapped key is empty")
    return names, blob


class AwsKms(KmsClient):
    """Master keys in AWS KMS. ``client``: a ready boto3 KMS client (tests, custom
    sessions); otherwise one is made for ``region``/``endpoint_url``/``profile``."""

    def __init__(self, region: str | None = None, *, endpoint_url: str | None = None, profile: str | None = None,
                 bind_context: bool = False, policy: RetryPolicy | None = None, ca_bundle: str | None = None,
                 client=None):
        self.bind_context = bind_context
        self.resilience = Resilience(policy)
        if client is None:
            import boto3
            from botocore.config import Config

            p = self.resilience.policy
            session = boto3.session.Session(profile_name=profile) if profile else boto3.session.Session()
            config = Config(retries={"total_max_attempts": 1, "mode": "standard"},  # retries are pqseal's
                            connect_timeout=p.timeout, read_timeout=p.timeout)
            try:
                client = session.client("kms", region_name=region or None, endpoint_url=endpoint_url,
                                        verify=ca_bundle if ca_bundle else None, config=config)
            except Exception as exc:  # noqa: BLE001 - no region, unknown profile
                raise _typed(exc, "client") from None
        self._kms = client
        self.region = client.meta.region_name

    def _call(self, what: str, fn):
        try:
            return self.resilience.call(fn, what, _is_transient)
        except PqsealError:
            raise
        except Exception as exc:  # noqa: BLE001 - typed below
            raise _typed(exc, what) from None

    # ---- encryption context --------------------------------------------------------------

    def _wrap_context(self) -> dict[str, str]:
        return dict(current_key_context()) if self.bind_context else {}

    @staticmethod
    def _unwrap_context(names: list[str], master_key_identifier: str) -> dict[str, str]:
        given = current_key_context()
        missing = [n for n in names if n not in given]
        if missing:
            raise KeyAccessDenied(f"AWS KMS unwrap with {master_key_identifier!r}: the wrapped key is bound to its "
                                  f"{', '.join(missing)} (encryption context), which only pqseal's key layer "
                                  "supplies (not pyarrow or parquet-java readers, nor a stream without a path)")
        return {n: given[n] for n in names}

    @staticmethod
    def _aws_context(ctx: Mapping[str, str]) -> dict:
        return {"EncryptionContext": {CONTEXT_PREFIX + k: v for k, v in ctx.items()}} if ctx else {}

    @staticmethod
    def _wrapped(blob: bytes, ctx: Mapping[str, str]) -> str:
        return f"{BOUND_PREFIX};{','.join(sorted(ctx))};{_b64(blob)}" if ctx else _b64(blob)

    # ---- KMS client ----------------------------------------------------------------------

    def wrap_key(self, key_bytes: bytes, master_key_identifier: str) -> str:
        ctx = self._wrap_context()
        resp = self._call(f"Encrypt with {master_key_identifier!r}",
                          lambda: self._kms.encrypt(KeyId=master_key_identifier, Plaintext=bytes(key_bytes),
                                                    **self._aws_context(ctx)))
        return self._wrapped(resp["CiphertextBlob"], ctx)

    def unwrap_key(self, wrapped_key: str, master_key_identifier: str) -> bytes:
        names, blob = _parse_wrapped(wrapped_key)
        ctx = self._unwrap_context(names, master_key_identifier)
        resp = self._call(f"Decrypt with {master_key_identifier!r}",
                          lambda: self._kms.decrypt(KeyId=master_key_identifier, CiphertextBlob=blob,
                                                    **self._aws_context(ctx)))
        return bytes(resp["Plaintext"])

    def generate_key(self, master_key_identifier: str, nbytes: int) -> tuple[bytes, str]:
        """A fresh key of ``nbytes`` and its wrapped form, in one ``GenerateDataKey`` call."""
        ctx = self._wrap_context()
        resp = self._call(f"GenerateDataKey with {master_key_identifier!r}",
                          lambda: self._kms.generate_data_key(KeyId=master_key_identifier, NumberOfBytes=nbytes,
                                                              **self._aws_context(ctx)))
        return bytes(resp["Plaintext"]), self._wrapped(resp["CiphertextBlob"], ctx)

    # ---- key administration (pqseal.kms.admin.KeyAdmin) ---------------------------------

    def create_key(self, key_id: str) -> int:
        """A new symmetric key named ``alias/ID`` (version 1)."""
        alias = _alias(key_id)
        md = self._call("CreateKey", lambda: self._kms.create_key(
            KeyUsage="ENCRYPT_DECRYPT", KeySpec="SYMMETRIC_DEFAULT", Description=f"pqseal master key {alias}"))
        made = md["KeyMetadata"]["KeyId"]
        try:
            self._call(f"CreateAlias {alias!r}", lambda: self._kms.create_alias(AliasName=alias, TargetKeyId=made))
        except PqsealError as exc:   # the alias is taken or refused: the new key must not linger unnamed
            try:
                self._call("ScheduleKeyDeletion", lambda: self._kms.schedule_key_deletion(
                    KeyId=made, PendingWindowInDays=MIN_PENDING_DAYS))
                fate = "is scheduled for deletion"
            except PqsealError as again:
                fate = f"remains: delete it with AWS's tools ({again})"
            raise type(exc)(f"{exc} (the key made for it, {made}, {fate})") from None
        return 1

    def rotate_key(self, key_id: str) -> int:
        """``RotateKeyOnDemand``: new key material inside AWS; returns the version afterwards."""
        kid = self._key_id(key_id)
        self._call(f"RotateKeyOnDemand of {key_id!r}", lambda: self._kms.rotate_key_on_demand(KeyId=kid))
        return self._version(kid)

    def key_status(self, key_id: str | None = None) -> list[KeyVersionInfo]:
        """One row per key: ``key_id``'s, or those of the first :data:`LIST_LIMIT` keys
        ``ListKeys`` returns (named by their first alias, else their key id; a warning
        says when there are more)."""
        if key_id is not None:
            return [self._row(key_id, key_id)]
        page = self._call("ListKeys", lambda: self._kms.list_keys(Limit=LIST_LIMIT))
        if page.get("Truncated"):
            warnings.warn(f"AWS KMS lists more than {LIST_LIMIT} keys: showing the first {LIST_LIMIT}; name a key "
                          "to see it (pqseal keys status ID)", stacklevel=2)
        names = self._aliases()
        return [self._row(k["KeyId"], names.get(k["KeyId"], k["KeyId"])) for k in page["Keys"]]

    def disable_key(self, key_id: str, version: int | None = None) -> None:
        kid = self._whole_key(key_id, version, "disables")
        self._call(f"DisableKey {key_id!r}", lambda: self._kms.disable_key(KeyId=kid))

    def cancel_key_deletion(self, key_id: str) -> bool:
        """``CancelKeyDeletion`` if the key is pending deletion (it is then disabled);
        False if it was not."""
        md = self._describe(key_id)
        if md["KeyState"] != "PendingDeletion":
            return False
        self._call(f"CancelKeyDeletion {key_id!r}", lambda: self._kms.cancel_key_deletion(KeyId=md["KeyId"]))
        return True

    def enable_key(self, key_id: str, version: int | None = None) -> str:
        """``EnableKey``, after ``CancelKeyDeletion`` for a key pending deletion; returns its state."""
        kid = self._whole_key(key_id, version, "enables")
        self.cancel_key_deletion(kid)
        self._call(f"EnableKey {key_id!r}", lambda: self._kms.enable_key(KeyId=kid))
        return _aws_state(self._describe(kid)["KeyState"])

    def schedule_key_deletion(self, key_id: str, version: int | None = None,
                              pending_days: int | None = None) -> ScheduledDeletion:
        """``ScheduleKeyDeletion`` after ``pending_days`` (7 to 30; default AWS's 30).
        Until then the key refuses every use and ``enable_key`` cancels the deletion."""
        days = DEFAULT_PENDING_DAYS if pending_days is None else pending_days
        if not MIN_PENDING_DAYS <= days <= MAX_PENDING_DAYS:
            raise UnsupportedFeature(f"AWS KMS deletes a key after {MIN_PENDING_DAYS} to {MAX_PENDING_DAYS} days of "
                                     f"waiting, not {days}")
        kid = self._whole_key(key_id, version, "deletes")
        resp = self._call(f"ScheduleKeyDeletion {key_id!r}", lambda: self._kms.schedule_key_deletion(
            KeyId=kid, PendingWindowInDays=days))
        return ScheduledDeletion(key_id, _iso(resp["DeletionDate"]), days)

    def _describe(self, key_id: str) -> dict:
        return self._call(f"DescribeKey {key_id!r}", lambda: self._kms.describe_key(KeyId=key_id))["KeyMetadata"]

    def _key_id(self, key_id: str) -> str:
        """The key id of any name of it (aliases included: the administrative calls take key
        ids and ARNs only)."""
        return self._describe(key_id)["KeyId"]

    def _version(self, key_id: str) -> int:
        """``key_id`` (a key id or ARN): rotations + 1; 1 when the caller may not list
        rotations or the key's state forbids it."""
        count, marker = 0, None
        for _ in range(LIST_PAGES):
            extra: dict[str, str] = {"Marker": marker} if marker else {}
            try:
                page = self._call(f"ListKeyRotations of {key_id!r}",
                                  lambda: self._kms.list_key_rotations(KeyId=key_id, **extra))
            except (KeyAccessDenied, UnsupportedFeature):   # KeyDisabled included (KMSInvalidStateException)
                return 1
            count += len(page.get("Rotations", ()))
            marker = page.get("NextMarker") if page.get("Truncated") else None
            if not marker:
                break
        return count + 1

    def _aliases(self) -> dict[str, str]:
        """key id -> its first alias (sorted), from the first :data:`LIST_PAGES` pages of ``ListAliases``."""
        names: dict[str, list[str]] = {}
        marker = None
        for _ in range(LIST_PAGES):
            extra: dict[str, str] = {"Marker": marker} if marker else {}
            page = self._call("ListAliases", lambda: self._kms.list_aliases(Limit=LIST_LIMIT, **extra))
            for a in page.get("Aliases", ()):
                if a.get("TargetKeyId"):
                    names.setdefault(a["TargetKeyId"], []).append(a["AliasName"])
            marker = page.get("NextMarker") if page.get("Truncated") else None
            if not marker:
                break
        return {k: sorted(v)[0] for k, v in names.items()}

    def _row(self, key_id: str, name: str) -> KeyVersionInfo:
        md = self._describe(key_id)
        bits = 256 if md.get("KeySpec", md.get("CustomerMasterKeySpec")) == "SYMMETRIC_DEFAULT" else None
        created = _iso(md["CreationDate"]) if md.get("CreationDate") else None
        return KeyVersionInfo(id=name, version=self._version(md["KeyId"]), state=_aws_state(md["KeyState"]),
                              bits=bits, created=created)

    def _whole_key(self, key_id: str, version: int | None, verb: str) -> str:
        """The key id of ``key_id``, once ``version`` is None or its current version (AWS
        acts on whole keys)."""
        kid = self._key_id(key_id)
        if version is not None and version != (current := self._version(kid)):
            raise UnsupportedFeature(f"AWS KMS {verb} a whole key, not one version: omit --version ({key_id!r} is at "
                                     f"version {current})")
        return kid

    def __repr__(self) -> str:
        return f"<AwsKms region={self.region!r} context={'on' if self.bind_context else 'off'}>"

    def __reduce__(self):
        raise TypeError("AwsKms holds a network client and cannot be pickled; open it in each process")


LIST_LIMIT = 100        # keys shown by ``keys status`` without an id (one ListKeys page)
LIST_PAGES = 100        # pages of ListAliases / ListKeyRotations read at most
MIN_PENDING_DAYS, MAX_PENDING_DAYS, DEFAULT_PENDING_DAYS = 7, 30, 30   # ScheduleKeyDeletion's window (AWS's)
_STATES = {"Enabled": "active", "Disabled": "disabled", "PendingDeletion": "pending-deletion"}
_ALIAS = re.compile(r"[A-Za-z0-9/_-]{1,250}")


def _aws_state(state: str) -> str:
    """AWS's KeyState as pqseal names states: PendingImport -> pending-import."""
    return _STATES.get(state) or re.sub(r"(?<!^)(?=[A-Z])", "-", state).lower()


def _alias(key_id: str) -> str:
    """``alias/ID`` for ``keys create ID`` (``ID`` or ``alias/ID``), checked as AWS checks alias names."""
    name = key_id.removeprefix("alias/")
    if not _ALIAS.fullmatch(name) or name.startswith("aws/"):
        raise UnsupportedFeature(f"AWS KMS: {key_id!r} is not a valid alias name for a new key (letters, digits, "
                                 "'/', '_', '-'; up to 250; not aws/...)")
    return "alias/" + name


def _iso(t) -> str:
    """A botocore timestamp as ISO 8601 UTC."""
    return t.astimezone(_dt.timezone.utc).isoformat(timespec="seconds")


def _flag(uri: KmsUri, name: str) -> bool:
    value = uri.options.get(name, "off").lower()
    if value not in ("on", "off", "true", "false", "1", "0"):
        raise InvalidKmsUri(f"aws-kms: {name} must be on or off")
    return value in ("on", "true", "1")


def _number(uri: KmsUri, name: str, kind):
    try:
        return kind(uri.options[name])
    except ValueError:
        raise InvalidKmsUri(f"aws-kms: {name} must be a {kind.__name__}") from None


@dataclass(eq=False)   # compared and hashed by identity: pqseal.api keeps one key session per factory object
class AwsKmsFactory:
    """``(KmsConnectionConfig) -> AwsKms`` for one ``aws-kms://`` URI: one client, made on
    first use and shared by every connection config (the URI names the KMS). Pickles
    without its client, so it can travel to worker processes, each making its own."""

    region: str | None = None
    endpoint_url: str | None = None
    profile: str | None = None
    bind_context: bool = False
    policy: RetryPolicy = field(default_factory=RetryPolicy)
    ca_bundle: str | None = None

    def __post_init__(self):
        self._lock = threading.Lock()
        self._client: AwsKms | None = None

    def __call__(self, cfg: KmsConnectionConfig | None = None) -> AwsKms:
        with self._lock:
            if self._client is None:
                self._client = AwsKms(self.region, endpoint_url=self.endpoint_url, profile=self.profile,
                                      bind_context=self.bind_context, policy=self.policy, ca_bundle=self.ca_bundle)
            return self._client

    def __getstate__(self):
        return {k: v for k, v in self.__dict__.items() if k not in ("_lock", "_client")}

    def __setstate__(self, state):
        self.__dict__.update(state)
        self.__post_init__()


def from_uri(uri: KmsUri) -> AwsKmsFactory:
    """The factory of ``aws-kms://REGION?options`` (options: see the module docstring)."""
    check_options(uri, OPTIONS)
    host = uri.body[2:].split("/", 1)
    if len(host) > 1 and host[1]:
        raise InvalidKmsUri("aws-kms: the URI is aws-kms://REGION?options (no path)")
    policy = {}
    if "retries" in uri.options:
        policy["retries"] = _number(uri, "retries", int)
    if "timeout" in uri.options:
        policy["timeout"] = _number(uri, "timeout", float)
    try:
        retry = RetryPolicy(**policy)
    except ValueError as exc:
        raise InvalidKmsUri(f"aws-kms: {exc}") from None
    o = uri.options
    return AwsKmsFactory(host[0] or None, endpoint_url=o.get("endpoint"), profile=o.get("profile"),
                         bind_context=_flag(uri, "context"), policy=retry, ca_bundle=o.get("ca_bundle"))
