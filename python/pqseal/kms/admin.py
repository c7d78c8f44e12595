"""Master-key administration through pqseal's ``keys`` commands, for the KMS clients
whose servers allow it: the local keystore, Vault/OpenBao transit, PKCS#11 tokens, AWS
KMS. One shape for all: create a key, rotate it (a new active version; older versions
stay for unwrapping), the status of its versions (never key bytes), and, where the client
offers it, disable / enable / destroy of a version (the local keystore; PKCS#11 tokens for
disable and destroy). AWS KMS acts on whole keys (``per_version`` is False): disable and
enable the key, and destroy schedules its deletion after a waiting period
(:class:`ScheduledDeletion`), which enable cancels."""

from __future__ import annotations

import dataclasses
import inspect
from dataclasses import asdict, dataclass

from ..errors import UnsupportedFeature


@dataclass(frozen=True)
class KeyVersionInfo:
    """One key version as ``pqseal keys status --json`` shows it (these keys are stable)."""

    id: str
    version: int
    state: str                 # "active", "decrypt-only", "disabled", "destroyed"; AWS KMS: "pending-deletion"
                               # (every use refused until deleted or enabled again) and AWS's other states
    bits: int | None = None    # None: the KMS does not say
    created: str | None = None  # ISO 8601 UTC, where the KMS records it
    age_seconds: int | None = None   # since created
    # usage, where pqseal counts it (the local keystore; None elsewhere): see pqseal.kms.keyusage
    wraps: int | None = None    # KMS wrap calls (KEKs when double wrapping, DEKs when single)
    deks: int | None = None     # DEKs wrapped, directly or through a KEK (what max_wraps limits)
    unwraps: int | None = None
    files: int | None = None    # files sealed with a DEK it wrapped
    bytes: int | None = None    # their bytes
    max_dek_modules: int | None = None   # most modules one such DEK encrypted (GCM bound: 2^32 per DEK)
    first_use: str | None = None
    last_use: str | None = None
    limits: dict | None = None  # effective limits: max_age (s), max_wraps, max_bytes, mode (pqseal.kms.limits)
    reached: tuple = ()         # limits reached: {"limit", "mode", "value", "threshold"} each
    flag: str | None = None     # "LIMIT" (a refusing limit reached), "WARN" (a warning one), None

    def as_dict(self) -> dict:
        d = asdict(self)
        d["reached"] = list(d["reached"])
        return d


@dataclass(frozen=True)
class ScheduledDeletion:
    """What ``destroy`` does on a KMS that deletes keys after a waiting period (AWS KMS):
    the key refuses every use from now on and is deleted on ``deletion_date`` unless
    ``enable`` cancels it before."""

    id: str
    deletion_date: str   # ISO 8601 UTC
    pending_days: int


class KeyAdmin:
    """``create(id, bits)``, ``rotate(id)`` (both return the new version),
    ``status(id=None)``, ``disable(id, version)``, ``enable(id, version)`` and
    ``destroy(id, version=None)`` over one KMS client. ``per_version``: False where the
    KMS disables, enables and destroys whole keys (AWS KMS; ``version`` may then be None,
    or the current one)."""

    def __init__(self, client):
        from .keystore import LocalKeystore

        self.client = client
        self.kind = type(client).__name__
        if isinstance(client, LocalKeystore):
            self._flavour = "keystore"
        elif hasattr(client, "create_key") and hasattr(client, "rotate_key") and hasattr(client, "key_status"):
            self._flavour = "server"
        else:
            raise UnsupportedFeature(f"{self.kind} offers no key administration through pqseal; manage its "
                                     "master keys with the KMS's own tools")
        self.per_version = not hasattr(client, "schedule_key_deletion")

    def create(self, key_id: str, bits: int = 256) -> int:
        if self._flavour == "keystore":
            return self.client.create(key_id, bits)
        if "bits" in _parameters(self.client.create_key):
            out = self.client.create_key(key_id, bits)
        elif bits != 256:   # a server that chooses the key length itself (Vault transit: AES-256)
            raise UnsupportedFeature(f"{self.kind} creates 256-bit keys only")
        else:
            out = self.client.create_key(key_id)
        return out if isinstance(out, int) else out.latest

    def rotate(self, key_id: str) -> int:
        if self._flavour == "keystore":
            return self.client.rotate(key_id)
        out = self.client.rotate_key(key_id)
        return out if isinstance(out, int) else out.latest

    def disable(self, key_id: str, version: int | None) -> None:
        """Vault transit disables a prefix of versions only (``min_decryption_version``):
        ``version`` must be the lowest enabled one, and not the latest."""
        if not self.per_version:
            self.client.disable_key(key_id, version)
            return
        version = self._version(version)
        if self._flavour == "keystore":
            self.client.disable(key_id, version)
        elif hasattr(self.client, "set_min_decryption_version"):
            st = self._transit_version(key_id, version)
            if version < st.min_decryption_version:
                return
            if version == st.latest:
                raise UnsupportedFeature(f"{self.kind}: cannot disable {key_id!r} version {version}, the latest "
                                         "(transit wraps with it): rotate the key first")
            if version > st.min_decryption_version:
                raise UnsupportedFeature(
                    f"{self.kind}: transit disables versions only from the lowest up (min_decryption_version): "
                    f"disable versions {st.min_decryption_version} to {version - 1} of {key_id!r} first")
            self.client.set_min_decryption_version(key_id, version + 1)
        else:
            self._server("disable_key")(key_id, version)

    def enable(self, key_id: str, version: int | None) -> str:
        """Returns the version's state afterwards. On Vault transit, enabling a version
        enables every disabled version above it too (it lowers ``min_decryption_version``).
        On AWS KMS it enables the key, cancelling its scheduled deletion first."""
        if not self.per_version:
            return self.client.enable_key(key_id, version)
        version = self._version(version)
        if self._flavour == "keystore":
            return self.client.enable(key_id, version)
        if hasattr(self.client, "set_min_decryption_version"):
            st = self._transit_version(key_id, version)
            if version < st.min_decryption_version:
                st = self.client.set_min_decryption_version(key_id, version)
            return st.state(version)
        raise UnsupportedFeature(f"{self.kind}: pqseal cannot re-enable one version; use the KMS's own tools")

    def _version(self, version: int | None) -> int:
        if version is None:
            raise UnsupportedFeature(f"{self.kind} disables and enables one key version at a time: name it")
        return version

    def _transit_version(self, key_id: str, version: int):
        """The transit key's status, once ``version`` is known to exist."""
        from ..errors import KeyNotFound

        st = self.client.key_status(key_id)
        if version not in st.versions:
            raise KeyNotFound(f"master key {key_id!r} has no version {version} (latest: {st.latest})")
        return st

    def cancel_deletion(self, key_id: str) -> bool:
        """Cancel the scheduled deletion of ``key_id`` (the key stays disabled until
        ``enable``); False if none was scheduled."""
        return bool(self._server("cancel_key_deletion")(key_id))

    def destroy(self, key_id: str, version: int | None = None, pending_days: int | None = None):
        """A :class:`~pqseal.kms.keystore.DestroyReport` (irreversible), or on a KMS that
        deletes after a waiting period (AWS KMS: ``pending_days``, 7 to 30, default 30) a
        :class:`ScheduledDeletion`."""
        from .keystore import DestroyReport

        if not self.per_version:
            return self.client.schedule_key_deletion(key_id, version, pending_days)
        if pending_days is not None:
            raise UnsupportedFeature(f"{self.kind} destroys keys at once: no waiting period (pending days)")
        if self._flavour == "keystore":
            return self.client.destroy(key_id, version)
        fn = self._server("destroy_key")
        versions = [v.version for v in self.status(key_id) if version is None or v.version == version]
        fn(key_id, version)
        return DestroyReport(versions)

    def _server(self, name: str):
        fn = getattr(self.client, name, None)
        if fn is None:
            raise UnsupportedFeature(f"{self.kind} offers no {name.split('_')[0]} through pqseal; use the KMS's own "
                                     "tools")
        return fn

    def status(self, key_id: str | None = None) -> list[KeyVersionInfo]:
        if self._flavour == "keystore":
            rows = [r for r in self.client.list() if key_id is None or r["id"] == key_id]
            if key_id is not None and not rows:
                from ..errors import KeyNotFound

                raise KeyNotFound(f"master key {key_id!r} not in keystore {self.client.path}")
        else:
            param = _parameters(self.client.key_status).get("key_id")
            if key_id is None and param is not None and param.default is inspect.Parameter.empty:
                raise UnsupportedFeature(f"{self.kind} cannot list its keys: name one (pqseal keys status ID)")
            got = self.client.key_status(key_id)
            rows = got.rows() if hasattr(got, "rows") else [v.as_dict() for v in got]
        return [_info(r) for r in rows]


def _parameters(fn) -> dict:
    return dict(inspect.signature(fn).parameters)


def _info(r: dict) -> KeyVersionInfo:
    """A status row of a KMS client (the keystore's with usage and ``limits``)."""
    from .limits import Limits, age_seconds, at_limit

    age = age_seconds(r.get("created"))
    limits, reached = None if r.get("limits") is None else Limits.from_dict(r["limits"]), []
    if limits is not None and r["state"] != "destroyed":
        found = at_limit(limits, r["id"], int(r["version"]), r.get("created"), r)
        # wrap limits concern the active version; the age of an older one warns on unwrap
        reached = [x for x in found if r["state"] == "active" or x.limit == "max-age"]
        if r["state"] != "active":
            reached = [dataclasses.replace(x, mode="warn") for x in reached]
    flag = "LIMIT" if any(x.mode == "refuse" for x in reached) else "WARN" if reached else None
    usage = {k: r.get(k) for k in ("wraps", "deks", "unwraps", "files", "bytes", "max_dek_modules", "first_use",
                                   "last_use")}
    return KeyVersionInfo(
        id=r["id"], version=int(r["version"]), state=r["state"], bits=r.get("bits"), created=r.get("created"),
        age_seconds=None if age is None else int(age), **usage, limits=None if limits is None else limits.as_dict(),
        reached=tuple({"limit": x.limit, "mode": x.mode, "value": x.value, "threshold": x.threshold}
                      for x in reached), flag=flag)
