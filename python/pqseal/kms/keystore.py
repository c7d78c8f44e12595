"""The local keystore: pqseal's embedded default KMS (no server).

One JSON file holds master keys with versions; each key version is sealed with AES-GCM
under a key derived from a passphrase (scrypt, from ``cryptography``), AAD = key id and
version. The file is created 0600, refused when group or others may read it, and written
atomically (temporary file, fsync, rename) under an exclusive lock. Wrapped keys name
the master key version (``pqks1:<version>:<base64>``), so files wrapped before a
rotation keep unwrapping.

Format ``pqseal-keystore-2`` records the KDF and its parameters per store (scrypt,
N = 2^17, r = 8, p = 1 by default: OWASP's minimum; ``passwd`` can raise N later), a
store id, a generation (bumped on every write) and an HMAC-SHA256 over the whole
document under a key derived from the passphrase key, so key states cannot be edited
without the passphrase. Stores of format ``pqseal-keystore-1`` (scrypt N = 2^15, no MAC)
are read and upgraded on the next write (or by ``passwd``). ``$PQSEAL_KEYSTORE_TEST_KDF_N``
(a power of two from 2^14 to 2^16) lowers N for new and re-sealed stores: for test suites
only, never set it elsewhere; an explicit ``kdf_n`` below 2^17 is refused.

Key version states: ``active`` (new wraps use the newest active version),
``decrypt-only`` (older versions after a rotation), ``disabled`` (unwraps raise
:class:`~pqseal.errors.KeyDisabled`; reversible) and ``destroyed`` (the sealed bytes
are removed from the store and from every backup pqseal wrote that is still where it was
written and sealed under the current passphrase; unwraps raise
:class:`~pqseal.errors.KeyDestroyed`; ``restore`` refuses a backup that would bring the
version back). What pqseal cannot reach: copies it did not write (``cp``, file-system
snapshots, backups of the disk), backups sealed under an earlier passphrase or moved, and
the blocks a replaced file leaves on the device. All of those still hold the version
sealed under the passphrase that was current when they were written, so change the
passphrase (``pqseal keys passwd``) after a destroy: the old copies then need the old
passphrase as well.

The passphrase comes from ``PQSEAL_KEYSTORE_PASSPHRASE``, a file named by
``PQSEAL_KEYSTORE_PASSPHRASE_FILE``, or a prompt; never from a command-line argument.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import copy
import datetime as _dt
import fcntl
import hashlib
import hmac
import json
import os
import stat
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from .._io import atomic_write
from ..audit import audited
from ..crypto import ModuleKey, random_bytes, unwrap_key_locally, wrap_key_locally
from ..errors import (InvalidTag, KeyAccessDenied, KeyDestroyed, KeyDisabled, KeyNotFound, MalformedKeyMaterial,
                      OutputExists)
from .base import KmsClient
from .creation import CreationPolicy, current_user
from .keyusage import SealUsage, UsageCounters, merged, read_usage
from .limits import Limits, Reached, enforce, reached

FORMAT = "pqseal-keystore-2"
FORMAT_1 = "pqseal-keystore-1"       # read; upgraded to FORMAT on the next write
WRAP_PREFIX = "pqks1"
SCRYPT_N, SCRYPT_R, SCRYPT_P = 1 << 17, 8, 1   # OWASP's minimum for scrypt: ~128 MiB, ~0.3-0.6 s
MAX_SCRYPT_N = 1 << 20
TEST_KDF_ENV = "PQSEAL_KEYSTORE_TEST_KDF_N"
_CHECK = b"pqseal keystore passphrase check"


def kdf_cost(n: int | None = None) -> int:
    """The scrypt N for a new or re-sealed store: ``n`` (a power of two from 2^17 to
    2^20) if given, else 2^17, or for test suites only ``$PQSEAL_KEYSTORE_TEST_KDF_N``
    (a power of two from 2^14 to 2^16)."""
    if n is not None:
        if not (SCRYPT_N <= n <= MAX_SCRYPT_N) or n & (n - 1):
            raise ValueError("the keystore's scrypt N must be a power of two from 2^17 to 2^20")
        return n
    test = os.environ.get(TEST_KDF_ENV)
    if test:
        t = int(test) if test.isdigit() else 0
        if not (1 << 14 <= t < SCRYPT_N) or t & (t - 1):
            raise ValueError(f"${TEST_KDF_ENV} must be a power of two from 2^14 to 2^16 (a test-only cost)")
        return t
    return SCRYPT_N


def default_path() -> str:
    if os.environ.get("PQSEAL_KEYSTORE"):
        return os.environ["PQSEAL_KEYSTORE"]
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return os.path.join(base, "pqseal", "keystore.json")


def read_private_file(path, what: str) -> bytes:
    """The bytes of a file holding a secret (keystore, passphrase, key), refused with
    :class:`KeyAccessDenied` when group or others may read or write it. The mode is
    checked on the opened file, so a missing file raises ``FileNotFoundError`` first."""
    path = os.fspath(path)
    with open(path, "rb") as f:
        mode = stat.S_IMODE(os.fstat(f.fileno()).st_mode)
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise KeyAccessDenied(f"{what} {path} is accessible by group or others (mode {mode:o}); "
                                  f"run: chmod 600 {path}")
        return f.read()


def passphrase_from_environment(prompt: bool = True, confirm: bool = False,
                                variable: str = "PQSEAL_KEYSTORE_PASSPHRASE") -> bytes:
    """The passphrase from ``$variable``, a file named by ``$variable_FILE``, or a prompt
    (``variable`` is PQSEAL_KEYSTORE_NEW_PASSPHRASE for ``pqseal keys passwd``)."""
    what = "new keystore passphrase" if "NEW" in variable else "keystore passphrase"
    if variable in os.environ:
        return os.environ[variable].encode("utf-8")
    if os.environ.get(variable + "_FILE"):
        return read_private_file(os.environ[variable + "_FILE"],
                                 f"passphrase file ({variable}_FILE)").rstrip(b"\r\n")
    if prompt:
        import getpass
        import sys

        if not sys.stdin.isatty():
            raise KeyAccessDenied(f"no {what}: set {variable} or {variable}_FILE (no terminal to prompt on)")
        p = getpass.getpass(f"{what}: ")
        if confirm and getpass.getpass("again: ") != p:
            raise KeyAccessDenied("passphrases differ")
        return p.encode("utf-8")
    raise KeyAccessDenied(f"no {what}: set {variable} or {variable}_FILE")


def _b64(b: bytes) -> str:
    return base64.b64encode(b).decode("ascii")


def _unb64(s, what):
    try:
        return base64.b64decode(s, validate=True)
    except (binascii.Error, ValueError, TypeError):
        raise MalformedKeyMaterial(f"keystore: {what} is not base64") from None


def _derive(passphrase: bytes, kdf: dict) -> bytes:
    salt = _unb64(kdf.get("salt"), "salt")
    n, r, p = int(kdf.get("n", 0)), int(kdf.get("r", 0)), int(kdf.get("p", 0))
    if kdf.get("name") != "scrypt" or not (1 << 14 <= n <= 1 << 20) or not (1 <= r <= 32) or not (1 <= p <= 16):
        raise MalformedKeyMaterial("keystore: unsupported or unsafe KDF parameters")
    # imported here: cryptography costs every CLI process ~5-15 ms of start-up otherwise
    from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

    return Scrypt(salt=salt, length=32, n=n, r=r, p=p).derive(passphrase)


def _check_aad(fmt: str) -> bytes:
    """The AAD of the passphrase check: it names the format, so a format-2 store relabelled
    as format 1 (which has no MAC) fails its check instead of escaping the MAC."""
    return b"check" if fmt == FORMAT_1 else f"check:{fmt}".encode()


def _new_kdf(n: int) -> dict:
    return {"name": "scrypt", "salt": _b64(random_bytes(16)), "n": n, "r": SCRYPT_R, "p": SCRYPT_P}


def _mac_key(kek: bytes) -> bytes:
    return hmac.new(kek, b"pqseal keystore document mac", hashlib.sha256).digest()


def _mac(mac_key: bytes, doc: dict) -> str:
    body = json.dumps({k: v for k, v in doc.items() if k != "mac"}, sort_keys=True, separators=(",", ":"))
    return _b64(hmac.new(mac_key, body.encode(), hashlib.sha256).digest())


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _parse(data: bytes, path: str, what: str = "keystore") -> dict:
    try:
        doc = json.loads(data.decode("utf-8"))
    except (ValueError, UnicodeDecodeError):
        raise MalformedKeyMaterial(f"{what} {path} is corrupted (not JSON)") from None
    if not isinstance(doc, dict) or doc.get("format") not in (FORMAT, FORMAT_1) \
            or not isinstance(doc.get("keys"), dict):
        raise MalformedKeyMaterial(f"{what} {path} is corrupted or of an unknown format")
    return doc


def _open(doc: dict, passphrase: bytes, path: str, what: str = "keystore") -> bytes:
    """The passphrase key of ``doc``, after checking the passphrase and (format 2) the MAC."""
    kek = _derive(passphrase, doc.get("kdf") or {})
    try:
        ok = unwrap_key_locally(doc.get("check", ""), kek, _check_aad(doc["format"])) == _CHECK
    except InvalidTag:
        ok = False
    if not ok:
        raise KeyAccessDenied(f"wrong passphrase for {what} {path}")
    _verify_mac(doc, _mac_key(kek), path, what)
    return kek


def _verify_mac(doc: dict, mac_key: bytes, path: str, what: str = "keystore") -> None:
    if doc.get("format") == FORMAT and not hmac.compare_digest(str(doc.get("mac", "")), _mac(mac_key, doc)):
        raise MalformedKeyMaterial(f"{what} {path} was modified outside pqseal (its MAC does not match)")


def _versions(doc: dict):
    """(key id, version entry) of every version in ``doc``."""
    for kid, entry in doc["keys"].items():
        for v in entry.get("versions", []):
            yield kid, v


@contextlib.contextmanager
def _exclusive(path: str):
    """The keystore's exclusive lock (``PATH.lock``), shared by every pqseal process."""
    fd = os.open(path + ".lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


@dataclass
class DestroyReport:
    """What ``destroy`` did: the versions destroyed, the backups rewritten without them,
    and the backups it could not rewrite (path, reason)."""

    versions: list[int]
    backups_rewritten: list[str] = field(default_factory=list)
    backups_skipped: list[tuple[str, str]] = field(default_factory=list)


def _write_new(path: str, data: bytes, overwrite: bool) -> None:
    """``data`` to ``path`` (0600, fsynced): created exclusively, or replaced atomically
    when ``overwrite``."""
    if overwrite:
        atomic_write(path, data, mode=0o600)
        return
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise OutputExists(f"{path} exists (use --force to overwrite it)") from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        os.unlink(path)
        raise


def _merge_for_restore(cur: dict, bdoc: dict, source: str, path: str, force: bool) -> None:
    """Check that restoring ``bdoc`` over ``cur`` is allowed; carry the store's tombstones
    (destroyed versions the backup does not know) and backup list into ``bdoc``."""
    gone = {(kid, int(v["version"])): v for kid, v in _versions(cur) if v.get("state") == "destroyed"}
    back = [(kid, int(v["version"])) for kid, v in _versions(bdoc) if "sealed" in v]
    resurrected = sorted(k for k in back if k in gone)
    if resurrected:
        names = ", ".join(f"{kid} version {ver}" for kid, ver in resurrected)
        raise KeyDestroyed(f"refusing to restore {source}: it holds destroyed key versions ({names})")
    if cur.get("store_id") != bdoc.get("store_id") and not force:
        raise OutputExists(f"{source} is a backup of another keystore than {path} (use --force to replace it)")
    if int(cur.get("generation", 0)) > int(bdoc.get("generation", 0)) and not force:
        raise OutputExists(f"keystore {path} is newer than the backup {source} (generation "
                           f"{cur.get('generation')} > {bdoc.get('generation')}; use --force to replace it)")
    known = {(kid, int(v["version"])) for kid, v in _versions(bdoc)}
    for (kid, ver), v in sorted(gone.items()):
        if (kid, ver) not in known:
            versions = bdoc["keys"].setdefault(kid, {"versions": []})["versions"]
            versions.append({k: v[k] for k in ("version", "bits", "state", "created", "destroyed") if k in v})
            versions.sort(key=lambda x: int(x["version"]))
    bdoc["backups"] = sorted(set(bdoc.get("backups", [])) | set(cur.get("backups", [])))


class LocalKeystore(KmsClient):
    """A passphrase-protected file of versioned master keys, usable as a KMS client."""

    def __init__(self, path: str | None = None, passphrase: bytes | None = None):
        self.path = os.fspath(path or default_path())
        self._read()  # a missing or exposed keystore is reported before a passphrase is asked for
        self._passphrase = passphrase if passphrase is not None else passphrase_from_environment()
        self._cache: dict = {}
        self._load()
        self._usage = UsageCounters(self.path, lambda: _exclusive(self.path))

    # ---- file handling -------------------------------------------------------------------

    @classmethod
    def init(cls, path: str | None = None, passphrase: bytes | None = None,
             kdf_n: int | None = None) -> "LocalKeystore":
        """Create a new, empty keystore (refuses to overwrite an existing one)."""
        path = os.fspath(path or default_path())
        n = kdf_cost(kdf_n)
        if passphrase is None:
            passphrase = passphrase_from_environment(confirm=True)
        if not passphrase:
            raise KeyAccessDenied("the keystore passphrase must not be empty")
        os.makedirs(os.path.dirname(os.path.abspath(path)), mode=0o700, exist_ok=True)
        kdf = _new_kdf(n)
        kek = _derive(passphrase, kdf)
        doc = {"format": FORMAT, "kdf": kdf, "check": wrap_key_locally(_CHECK, kek, _check_aad(FORMAT)),
               "store_id": random_bytes(16).hex(), "generation": 1, "backups": [], "keys": {}}
        doc["mac"] = _mac(_mac_key(kek), doc)
        data = json.dumps(doc, indent=1).encode()
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)  # FileExistsError if present
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        return cls(path, passphrase)

    def _read(self) -> dict:
        try:
            data = read_private_file(self.path, "keystore")
        except FileNotFoundError:
            raise KeyNotFound(f"no keystore at {self.path}: create one with `pqseal keys init`") from None
        return _parse(data, self.path)

    def _load(self) -> None:
        doc = self._read()
        self._kek = _open(doc, self._passphrase, self.path)
        self._mac_key = _mac_key(self._kek)
        self._doc = doc
        self._stamp = self._file_stamp()
        self._cache.clear()

    def _file_stamp(self):
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return st.st_mtime_ns, st.st_size, st.st_ino

    def _refresh(self, force: bool = False) -> None:
        """Re-read the file if another process (``pqseal keys rotate|disable|...``) changed
        it since it was loaded (always if ``force``); the passphrase-derived key is reused
        when the KDF is unchanged."""
        if not force and self._file_stamp() == self._stamp:
            return
        doc = self._read()
        if doc.get("kdf") != self._doc.get("kdf") or doc.get("check") != self._doc.get("check"):
            self._load()
            return
        _verify_mac(doc, self._mac_key, self.path)
        self._doc = doc
        self._stamp = self._file_stamp()

    @contextlib.contextmanager
    def _locked(self, upgrade: bool = True, copy_to: str | None = None, overwrite: bool = False):
        """Exclusive lock, re-read the file, let the caller change it, write it atomically
        (a new generation, MAC'd). A store of format 1 or with a KDF cheaper than today's
        is re-sealed on the way (``upgrade``). ``copy_to``: also write the result there
        (a backup: 0600, refused if present unless ``overwrite``) before the store. If the
        caller fails, nothing is written and the in-memory state is as before."""
        with _exclusive(self.path):
            self._refresh(force=True)
            saved = (self._doc, self._kek, self._mac_key, self._passphrase)
            self._doc = copy.deepcopy(self._doc)
            try:
                n = int((self._doc.get("kdf") or {}).get("n", 0))
                if upgrade and (self._doc["format"] != FORMAT or n < kdf_cost()):
                    self._reseal(self._passphrase, max(n, kdf_cost()))
                yield self._doc
                self._doc["generation"] = int(self._doc.get("generation", 0)) + 1
                self._doc["mac"] = _mac(self._mac_key, self._doc)
                data = json.dumps(self._doc, indent=1).encode()
                if copy_to is not None:
                    _write_new(copy_to, data, overwrite)
                atomic_write(self.path, data, mode=0o600)
            except BaseException:
                self._doc, self._kek, self._mac_key, self._passphrase = saved
                raise
            self._stamp = self._file_stamp()

    def _reseal(self, passphrase: bytes, n: int) -> None:
        """Seal every key version of the document being written under ``passphrase`` with a
        fresh salt and scrypt cost ``n`` (format 2 from now on)."""
        doc = self._doc
        audit = self.audit_key()   # kept across the re-seal: the audit log's chain stays verifiable
        kdf = _new_kdf(n)
        kek = _derive(passphrase, kdf)
        doc["audit"] = wrap_key_locally(audit, kek, b"audit")
        for kid, v in _versions(doc):
            if "sealed" in v:
                aad = f"{kid}:{int(v['version'])}".encode()
                try:
                    raw = unwrap_key_locally(v["sealed"], self._kek, aad)
                except InvalidTag:
                    raise MalformedKeyMaterial(f"keystore entry {kid!r} version {v['version']} is corrupted") from None
                v["sealed"] = wrap_key_locally(raw, kek, aad)
        doc.update(format=FORMAT, kdf=kdf, check=wrap_key_locally(_CHECK, kek, _check_aad(FORMAT)))
        doc.setdefault("store_id", random_bytes(16).hex())
        doc.setdefault("backups", [])
        self._kek, self._mac_key, self._passphrase = kek, _mac_key(kek), passphrase

    @audited("passwd")
    def passwd(self, new_passphrase: bytes, kdf_n: int | None = None) -> dict:
        """Re-seal the whole store under ``new_passphrase`` (and scrypt N ``kdf_n``, default
        2^17) in one atomic replacement under the lock; the old passphrase then fails.
        Returns the new KDF parameters (without the salt)."""
        if not new_passphrase:
            raise KeyAccessDenied("the keystore passphrase must not be empty")
        n = kdf_cost(kdf_n)
        with self._locked(upgrade=False):
            self._reseal(new_passphrase, n)
        return {k: v for k, v in self._doc["kdf"].items() if k != "salt"}

    def kdf(self) -> dict:
        """The store's format and KDF parameters (without the salt)."""
        return {"format": self._doc["format"], **{k: v for k, v in self._doc["kdf"].items() if k != "salt"}}

    @audited("backup")
    def backup(self, target: str, overwrite: bool = False) -> str:
        """Write a sealed copy of the store to ``target`` (0600; refuses an existing file
        unless ``overwrite``) and remember it, so that ``destroy`` rewrites it."""
        target = os.path.abspath(os.fspath(target))
        if target == os.path.abspath(self.path):
            raise ValueError("a backup cannot replace the keystore itself")
        if not overwrite and os.path.lexists(target):
            raise OutputExists(f"{target} exists (use --force to overwrite it)")
        with self._locked(copy_to=target, overwrite=overwrite) as doc:
            if target not in doc["backups"]:
                doc["backups"].append(target)
        return target

    @classmethod
    def restore(cls, source: str, path: str | None = None, passphrase: bytes | None = None,
                force: bool = False) -> "LocalKeystore":
        """Replace the store at ``path`` by the backup ``source`` (atomically, under the
        lock). Refused when the backup holds a version the store has destroyed (always),
        or when the store is newer than the backup or another store (unless ``force``)."""
        source, path = os.fspath(source), os.fspath(path or default_path())
        bdoc = _parse(read_private_file(source, "keystore backup"), source, "keystore backup")
        if bdoc["format"] != FORMAT:
            raise MalformedKeyMaterial(f"{source} is a keystore of format {bdoc['format']}, not a pqseal backup: "
                                       "copy it in place and run `pqseal keys passwd` to upgrade it")
        if passphrase is None:
            passphrase = passphrase_from_environment()
        mac_key = _mac_key(_open(bdoc, passphrase, source, "keystore backup"))
        os.makedirs(os.path.dirname(os.path.abspath(path)), mode=0o700, exist_ok=True)
        with _exclusive(path):
            try:
                cur = _parse(read_private_file(path, "keystore"), path)
            except FileNotFoundError:
                cur = None
            if cur is not None:
                _merge_for_restore(cur, bdoc, source, path, force)
            bdoc["generation"] = max(int(bdoc.get("generation", 0)), int((cur or {}).get("generation", 0))) + 1
            bdoc["mac"] = _mac(mac_key, bdoc)
            atomic_write(path, json.dumps(bdoc, indent=1).encode(), mode=0o600)
        return cls(path, passphrase)

    # ---- key lifecycle -------------------------------------------------------------------

    def _new_version(self, key_id: str, version: int, bits: int) -> dict:
        raw = random_bytes(bits // 8)
        sealed = wrap_key_locally(raw, self._kek, f"{key_id}:{version}".encode())
        return {"version": version, "bits": bits, "state": "active", "created": _now(), "sealed": sealed}

    @audited("create", "key_id", lambda args, result: result)
    def create(self, key_id: str, bits: int = 256) -> int:
        if not key_id or any(c in key_id for c in "\n\r"):
            raise ValueError("key id must be a non-empty single-line string")
        if bits not in (128, 192, 256):
            raise ValueError("master key length must be 128, 192 or 256 bits")
        with self._locked() as doc:
            if key_id in doc["keys"]:
                raise ValueError(f"master key {key_id!r} already exists (rotate it instead)")
            doc["keys"][key_id] = {"versions": [self._new_version(key_id, 1, bits)]}
        return 1

    @audited("rotate", "key_id", lambda args, result: result)
    def rotate(self, key_id: str) -> int:
        """A new active version; older versions stay for unwrapping (state decrypt-only)."""
        with self._locked() as doc:
            versions = self._entry(doc, key_id)
            for v in versions:
                if v.get("state") == "active":
                    v["state"] = "decrypt-only"
            new = max(int(v["version"]) for v in versions) + 1
            versions.append(self._new_version(key_id, new, int(versions[-1].get("bits", 256))))
        return new

    def creation_policy(self) -> CreationPolicy:
        """Which missing keys a wrap creates (:mod:`pqseal.kms.creation`)."""
        self._refresh()
        return CreationPolicy.from_doc(self._doc)

    @audited("policy")
    def set_creation_policy(self, policy: CreationPolicy) -> None:
        """Store ``policy`` (no patterns: nothing is created on first use)."""
        with self._locked() as doc:
            entry = policy.to_doc()
            if entry is None:
                doc.pop("creation", None)
            else:
                doc["creation"] = entry

    def _create_on_first_use(self, key_id: str) -> None:
        """Create the missing master key ``key_id`` (version 1) if the store's creation
        policy lets this user do it, under the lock: of concurrent first writers one
        creates it and the others find it. Audited as ``auto-create``. Raises
        :class:`KeyNotFound` naming the reason when the policy does not allow it."""
        from ..audit import Event, keystore_log

        def allowed(doc: dict) -> CreationPolicy:
            policy = CreationPolicy.from_doc(doc)
            why = policy.refusal(key_id, current_user())
            if why is not None:
                raise KeyNotFound(f"master key {key_id!r} not in keystore {self.path}; not created on first use: "
                                  f"{why}")
            return policy

        def create() -> None:
            with self._locked() as doc:
                if key_id in doc["keys"]:
                    raise _AlreadyThere   # nothing written: the store is left as it is
                bits = allowed(doc).bits   # the policy as locked (a concurrent `keys policy`)
                doc["keys"][key_id] = {"versions": [self._new_version(key_id, 1, bits)]}

        allowed(self._doc)    # refused without taking the lock
        log = keystore_log(self)
        event = Event("auto-create", key_id, 1)
        try:
            create()
        except _AlreadyThere:
            return   # another writer created it first: nothing to record
        except BaseException as exc:
            if log is not None:
                log.append(event, type(exc).__name__)
            raise
        if log is not None:
            log.append(event)

    def _entry(self, doc: dict, key_id: str) -> list:
        entry = doc["keys"].get(key_id)
        if entry is None:
            raise KeyNotFound(f"master key {key_id!r} not in keystore {self.path}")
        return entry["versions"]

    def _version(self, doc: dict, key_id: str, version: int) -> dict:
        match = [v for v in self._entry(doc, key_id) if int(v.get("version", -1)) == version]
        if not match:
            raise KeyNotFound(f"master key {key_id!r} has no version {version}")
        if match[0].get("state") == "destroyed":
            raise KeyDestroyed(f"master key {key_id!r} version {version} was destroyed "
                               f"({match[0].get('destroyed', 'time unknown')})")
        return match[0]

    @audited("disable", "key_id", lambda args, result: args.get("version"))
    def disable(self, key_id: str, version: int) -> None:
        """Unwraps (and wraps) with this version are refused with :class:`KeyDisabled`
        until :meth:`enable`."""
        with self._locked() as doc:
            self._version(doc, key_id, version)["state"] = "disabled"

    @audited("enable", "key_id", lambda args, result: args.get("version"))
    def enable(self, key_id: str, version: int) -> str:
        """Undo :meth:`disable`: active if it is the key's newest version, else
        decrypt-only. Returns the state."""
        with self._locked() as doc:
            v = self._version(doc, key_id, version)
            newest = max(int(x["version"]) for x in self._entry(doc, key_id))
            v["state"] = "active" if version == newest else "decrypt-only"
        return v["state"]

    @audited("destroy", "key_id", lambda args, result: args.get("version"))
    def destroy(self, key_id: str, version: int | None = None) -> DestroyReport:
        """Erase the sealed bytes of one version (or of all) from the store and from the
        backups pqseal wrote; a tombstone remains. Irreversible."""
        with self._locked() as doc:
            versions = self._entry(doc, key_id)
            targets = [v for v in versions if version is None or int(v["version"]) == version]
            if not targets:
                raise KeyNotFound(f"master key {key_id!r} has no version {version}")
            for v in targets:
                if v.get("state") != "destroyed":
                    v.pop("sealed", None)
                    v.update(state="destroyed", destroyed=_now())
            report = DestroyReport([int(v["version"]) for v in targets])
            for b in doc.get("backups", []):
                reason = self._scrub_backup(b, doc)
                if reason is None:
                    report.backups_rewritten.append(b)
                else:
                    report.backups_skipped.append((b, reason))
        for ver in report.versions:
            self._cache.pop((key_id, ver), None)
        return report

    def _scrub_backup(self, path: str, doc: dict) -> str | None:
        """Remove from the backup at ``path`` every version ``doc`` has destroyed; None,
        or why the backup was not rewritten."""
        try:
            bdoc = _parse(read_private_file(path, "keystore backup"), path, "keystore backup")
        except FileNotFoundError:
            return "no longer there"
        except (OSError, KeyAccessDenied, MalformedKeyMaterial) as exc:
            return str(exc)
        if bdoc.get("store_id") != doc.get("store_id"):
            return "not a backup of this keystore any more"
        if bdoc.get("kdf") != doc.get("kdf") or bdoc.get("check") != doc.get("check"):
            return "sealed under an earlier passphrase (pqseal cannot re-seal it)"
        try:
            _verify_mac(bdoc, self._mac_key, path, "keystore backup")
        except MalformedKeyMaterial as exc:
            return str(exc)
        gone = {(kid, int(v["version"])): v for kid, v in _versions(doc) if v.get("state") == "destroyed"}
        for kid, v in _versions(bdoc):
            tomb = gone.get((kid, int(v["version"])))
            if tomb is not None:
                v.pop("sealed", None)
                v.update(state="destroyed", destroyed=tomb.get("destroyed"))
        bdoc["mac"] = _mac(self._mac_key, bdoc)
        atomic_write(path, json.dumps(bdoc, indent=1).encode(), mode=0o600)
        return None

    def list(self) -> list[dict]:
        """One row per key version: id, version, bits, state, created, its usage (from
        ``PATH.usage``, this process's counts flushed first: see
        :mod:`~pqseal.kms.keyusage`) and its effective usage ``limits`` (a dict, as
        :meth:`~pqseal.kms.limits.Limits.as_dict`): plain JSON values."""
        self._usage.flush()
        self._refresh()
        usage = read_usage(self.path)
        out = []
        for kid, entry in sorted(self._doc["keys"].items()):
            limits = self.effective_limits(kid)
            counts = usage.get(kid)
            counts = counts if isinstance(counts, dict) else {}
            for v in entry.get("versions", []):
                u = counts.get(str(v.get("version")))
                out.append({"id": kid, "version": v.get("version"), "bits": v.get("bits"), "state": v.get("state"),
                            "created": v.get("created"), **merged(u if isinstance(u, dict) else None, {}),
                            "limits": limits.as_dict()})
        return out

    # ---- usage limits (pqseal.kms.limits) --------------------------------------------------

    def limits(self, key_id: str | None = None) -> Limits:
        """The limits set for ``key_id`` (None: the store's default), as stored."""
        if key_id is not None:
            self._entry(self._doc, key_id)
        stored = self._doc.get("limits") or {}
        return Limits.from_dict((stored.get("default") if key_id is None else stored.get("keys", {}).get(key_id))
                                or {})

    def effective_limits(self, key_id: str) -> Limits:
        """The limits of ``key_id``: its own, and the store's default where it sets none."""
        return self.limits(key_id).over(self.limits())

    @audited("limits", "key_id")
    def set_limits(self, key_id: str | None, limits: Limits) -> None:
        """Store ``limits`` for ``key_id`` (None: the store's default), MAC-protected."""
        with self._locked() as doc:
            if key_id is not None:
                self._entry(doc, key_id)
            stored = doc.setdefault("limits", {"default": {}, "keys": {}})
            if key_id is None:
                stored["default"] = limits.as_dict()
            else:
                stored["keys"][key_id] = limits.as_dict()

    def _reached(self, key_id: str, version: dict, new_deks: int = 0, unwrap: bool = False,
                 reserved_bytes: int = 0) -> Sequence[Reached]:
        limits = self.effective_limits(key_id)
        if limits == Limits(mode=limits.mode):
            return ()
        ver = int(version["version"])
        usage = self._usage.totals(key_id, ver)
        usage["bytes"] += reserved_bytes
        return reached(limits, key_id, ver, version.get("created"), usage, new_deks=new_deks, unwrap=unwrap)

    def _check_limits(self, key_id: str, version: dict, new_deks: int = 0, unwrap: bool = False) -> None:
        enforce(self, list(self._reached(key_id, version, new_deks, unwrap)))

    def seal_usage(self, materials, reserved: Mapping[tuple[str, int], int] | None = None) -> SealUsage:
        """Before a file is sealed: check the limits of the master key versions that
        wrapped its DEKs (``materials``: their :class:`~pqseal.keys.material.KeyMaterial`)
        and count the DEKs; the returned :class:`SealUsage` counts the file once sealed.
        ``reserved``: bytes of files being sealed meanwhile and not counted yet, per (key
        id, version) (a dataset job's files in flight), counted as sealed for max-bytes."""
        per: dict[tuple[str, int], int] = {}
        for m in materials:
            ver = _wrapped_version(m.wrapped_kek if m.double_wrapping else m.wrapped_dek)
            if ver is not None:
                per[(m.master_key_id, ver)] = per.get((m.master_key_id, ver), 0) + 1
        self._refresh()
        found: list[Reached] = []
        for (kid, ver), n in per.items():
            found += self._reached(kid, self._version(self._doc, kid, ver), new_deks=n,
                                   reserved_bytes=(reserved or {}).get((kid, ver), 0))
        messages = enforce(self, found, report=True)
        for (kid, ver), n in per.items():
            self._usage.count(kid, ver, "deks", n)
        return SealUsage(self._usage, list(per), messages, found)

    def _master(self, key_id: str, version: int | None) -> tuple[int, ModuleKey]:
        # a rotation, disable or destroy by another process takes effect at once (one stat)
        self._refresh()
        entry = self._doc["keys"].get(key_id)
        if entry is None:
            raise KeyNotFound(f"master key {key_id!r} not in keystore {self.path}")
        versions = entry.get("versions") or []
        if version is None:  # wrapping: the newest active version
            active = [v for v in versions if v.get("state") == "active"]
            if not active:
                raise KeyDisabled(f"master key {key_id!r} has no active version in keystore {self.path} "
                                  "(rotate it or enable its newest version)")
            v = max(active, key=lambda v: int(v["version"]))
        else:
            match = [v for v in versions if int(v.get("version", -1)) == version]
            if not match:
                raise KeyNotFound(f"master key {key_id!r} has no version {version}")
            v = match[0]
            state = v.get("state")
            if state == "destroyed":
                raise KeyDestroyed(f"master key {key_id!r} version {version} was destroyed "
                                   f"({v.get('destroyed', 'time unknown')}): what it wrapped cannot be opened")
            if state == "disabled":
                raise KeyDisabled(f"master key {key_id!r} version {version} is disabled "
                                  f"(pqseal keys enable {key_id} --version {version})")
            if state not in ("active", "decrypt-only"):
                raise MalformedKeyMaterial(f"keystore entry {key_id!r} version {version} has an unknown state")
        ver = int(v["version"])
        ck = (key_id, ver)
        if ck not in self._cache:
            try:
                raw = unwrap_key_locally(v["sealed"], self._kek, f"{key_id}:{ver}".encode())
            except (InvalidTag, KeyError):
                raise MalformedKeyMaterial(f"keystore entry {key_id!r} version {ver} is corrupted") from None
            self._cache[ck] = ModuleKey(raw)
        return ver, self._cache[ck]

    # ---- KMS client ----------------------------------------------------------------------

    @audited("wrap", "master_key_identifier", lambda args, result: _wrapped_version(result))
    def wrap_key(self, key_bytes: bytes, master_key_identifier: str) -> str:
        try:
            ver, mk = self._master(master_key_identifier, None)
        except KeyNotFound:
            self._create_on_first_use(master_key_identifier)   # or KeyNotFound saying why not
            ver, mk = self._master(master_key_identifier, None)
        self._check_limits(master_key_identifier, self._version(self._doc, master_key_identifier, ver), new_deks=1)
        wrapped = wrap_key_locally(key_bytes, mk, f"{master_key_identifier}:{ver}".encode())
        self._usage.count(master_key_identifier, ver, "wraps")
        return f"{WRAP_PREFIX}:{ver}:{wrapped}"

    @audited("unwrap", "master_key_identifier", lambda args, result: _wrapped_version(args["wrapped_key"]))
    def unwrap_key(self, wrapped_key: str, master_key_identifier: str) -> bytes:
        parts = str(wrapped_key).split(":", 2)
        if len(parts) != 3 or parts[0] != WRAP_PREFIX or not parts[1].isdigit():
            raise MalformedKeyMaterial("not a pqseal keystore wrapped key")
        ver, mk = self._master(master_key_identifier, int(parts[1]))
        key = unwrap_key_locally(parts[2], mk, f"{master_key_identifier}:{ver}".encode())
        self._check_limits(master_key_identifier, self._version(self._doc, master_key_identifier, ver), unwrap=True)
        self._usage.count(master_key_identifier, ver, "unwraps")
        return key

    def audit_key(self) -> bytes:
        """The key of the audit log's MAC chain (``pqseal.audit``). Derived from the
        passphrase key (HKDF) until the store is re-sealed under a new passphrase, which
        must keep it: re-sealing stores this key, sealed, as the entry ``audit``. So no
        read ever writes the store, and a chain stays verifiable across passphrase changes."""
        if "audit" in self._doc:
            try:
                return unwrap_key_locally(self._doc["audit"], self._kek, b"audit")
            except InvalidTag:
                raise MalformedKeyMaterial(f"keystore {self.path}: the audit key entry is corrupted") from None
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.kdf.hkdf import HKDF

        return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"pqseal audit log key").derive(self._kek)

    def __repr__(self) -> str:
        return f"<LocalKeystore {self.path} ({len(self._doc['keys'])} master keys)>"

    def __reduce__(self):
        raise TypeError("LocalKeystore cannot be pickled")


class _AlreadyThere(Exception):
    """A key to create on first use was created by another writer meanwhile."""


def _wrapped_version(wrapped) -> int | None:
    """The master key version a wrapped key names (for the audit log), None if unparsable."""
    parts = str(wrapped).split(":", 2)
    if len(parts) != 3 or parts[0] != WRAP_PREFIX or not (parts[1].isascii() and parts[1].isdigit()):
        return None
    try:
        return int(parts[1])
    except ValueError:  # more digits than int() accepts
        return None


def from_uri(uri):
    """``keystore:`` (the default keystore) or ``keystore:PATH``: a factory of one
    :class:`LocalKeystore`, opened (and its passphrase read) on first use."""
    from .uri import check_options

    check_options(uri, ())
    path = os.path.expanduser(uri.body) if uri.body else None
    lock = threading.Lock()
    holder: list[LocalKeystore] = []

    def factory(cfg) -> LocalKeystore:
        with lock:
            if not holder:
                holder.append(LocalKeystore(path))
            return holder[0]
    return factory
