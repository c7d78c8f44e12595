"""The local keystore: pqseal's embedded default KMS (no server).

One JSON file holds master keys with versions; each key version is sealed with AES-GCM
under a key derived from a passphrase (scrypt, from ``cryptography``), AAD = key id and
version. The file is created 0600, refused when group or others may read it, and written
atomically (temporary file, fsync, rename) under an exclusive lock. Wrapped keys name
the master key version (``pqks1:<version>:<base64>``), so files wrapped before a
rotation keep unwrapping.

The passphrase comes from ``PQSEAL_KEYSTORE_PASSPHRASE``, a file named by
``PQSEAL_KEYSTORE_PASSPHRASE_FILE``, or a prompt; never from a command-line argument.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import datetime as _dt
import fcntl
import json
import os
import stat
import threading

from .._io import atomic_write
from ..audit import audited
from ..crypto import ModuleKey, random_bytes, unwrap_key_locally, wrap_key_locally
from ..errors import InvalidTag, KeyAccessDenied, KeyNotFound, MalformedKeyMaterial
from .base import KmsClient

FORMAT = "pqseal-keystore-1"
WRAP_PREFIX = "pqks1"
SCRYPT_N, SCRYPT_R, SCRYPT_P = 1 << 15, 8, 1
_CHECK = b"pqseal keystore passphrase check"


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


def passphrase_from_environment(prompt: bool = True, confirm: bool = False) -> bytes:
    if "PQSEAL_KEYSTORE_PASSPHRASE" in os.environ:
        return os.environ["PQSEAL_KEYSTORE_PASSPHRASE"].encode("utf-8")
    if os.environ.get("PQSEAL_KEYSTORE_PASSPHRASE_FILE"):
        return read_private_file(os.environ["PQSEAL_KEYSTORE_PASSPHRASE_FILE"],
                                 "passphrase file (PQSEAL_KEYSTORE_PASSPHRASE_FILE)").rstrip(b"\r\n")
    if prompt:
        import getpass
        import sys

        if not sys.stdin.isatty():
            raise KeyAccessDenied("no keystore passphrase: set PQSEAL_KEYSTORE_PASSPHRASE or "
                                  "PQSEAL_KEYSTORE_PASSPHRASE_FILE (no terminal to prompt on)")
        p = getpass.getpass("keystore passphrase: ")
        if confirm and getpass.getpass("again: ") != p:
            raise KeyAccessDenied("passphrases differ")
        return p.encode("utf-8")
    raise KeyAccessDenied("no keystore passphrase: set PQSEAL_KEYSTORE_PASSPHRASE or PQSEAL_KEYSTORE_PASSPHRASE_FILE")


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


class LocalKeystore(KmsClient):
    """A passphrase-protected file of versioned master keys, usable as a KMS client."""

    def __init__(self, path: str | None = None, passphrase: bytes | None = None):
        self.path = os.fspath(path or default_path())
        self._read()  # a missing or exposed keystore is reported before a passphrase is asked for
        self._passphrase = passphrase if passphrase is not None else passphrase_from_environment()
        self._cache: dict = {}
        self._load()

    # ---- file handling -------------------------------------------------------------------

    @classmethod
    def init(cls, path: str | None = None, passphrase: bytes | None = None) -> "LocalKeystore":
        """Create a new, empty keystore (refuses to overwrite an existing one)."""
        path = os.fspath(path or default_path())
        if passphrase is None:
            passphrase = passphrase_from_environment(confirm=True)
        if not passphrase:
            raise KeyAccessDenied("the keystore passphrase must not be empty")
        os.makedirs(os.path.dirname(os.path.abspath(path)), mode=0o700, exist_ok=True)
        salt = random_bytes(16)
        kdf = {"name": "scrypt", "salt": _b64(salt), "n": SCRYPT_N, "r": SCRYPT_R, "p": SCRYPT_P}
        kek = _derive(passphrase, kdf)
        doc = {"format": FORMAT, "kdf": kdf, "check": wrap_key_locally(_CHECK, kek, b"check"), "keys": {}}
        data = json.dumps(doc, indent=1).encode()
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)  # FileExistsError if present
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        return cls(path, passphrase)

    def _read(self) -> dict:
        try:
            doc = json.loads(read_private_file(self.path, "keystore").decode("utf-8"))
        except FileNotFoundError:
            raise KeyNotFound(f"no keystore at {self.path}: create one with `pqseal keys init`") from None
        except (ValueError, UnicodeDecodeError):
            raise MalformedKeyMaterial(f"keystore {self.path} is corrupted (not JSON)") from None
        if not isinstance(doc, dict) or doc.get("format") != FORMAT or not isinstance(doc.get("keys"), dict):
            raise MalformedKeyMaterial(f"keystore {self.path} is corrupted or of an unknown format")
        return doc

    def _load(self) -> None:
        doc = self._read()
        kek = _derive(self._passphrase, doc.get("kdf") or {})
        try:
            ok = unwrap_key_locally(doc.get("check", ""), kek, b"check") == _CHECK
        except InvalidTag:
            ok = False
        if not ok:
            raise KeyAccessDenied(f"wrong passphrase for keystore {self.path}")
        self._kek = kek
        self._doc = doc
        self._stamp = self._file_stamp()
        self._cache.clear()

    def _file_stamp(self):
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return st.st_mtime_ns, st.st_size, st.st_ino

    def _refresh(self) -> None:
        """Re-read the file if another process (``pqseal keys rotate``) changed it since it
        was loaded; the passphrase-derived key is reused when the KDF is unchanged."""
        if self._file_stamp() == self._stamp:
            return
        doc = self._read()
        if doc.get("kdf") != self._doc.get("kdf") or doc.get("check") != self._doc.get("check"):
            self._load()
            return
        self._doc = doc
        self._stamp = self._file_stamp()

    @contextlib.contextmanager
    def _locked(self):
        """Exclusive lock, re-read the file, let the caller change it, write it atomically."""
        lock_path = self.path + ".lock"
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            self._load()
            yield self._doc
            atomic_write(self.path, json.dumps(self._doc, indent=1).encode(), mode=0o600)
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    # ---- key lifecycle -------------------------------------------------------------------

    def _new_version(self, key_id: str, version: int, bits: int) -> dict:
        raw = random_bytes(bits // 8)
        sealed = wrap_key_locally(raw, self._kek, f"{key_id}:{version}".encode())
        return {"version": version, "bits": bits, "state": "active",
                "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"), "sealed": sealed}

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
            entry = doc["keys"].get(key_id)
            if entry is None:
                raise KeyNotFound(f"master key {key_id!r} not in keystore {self.path}")
            versions = entry["versions"]
            for v in versions:
                if v.get("state") == "active":
                    v["state"] = "decrypt-only"
            new = max(int(v["version"]) for v in versions) + 1
            versions.append(self._new_version(key_id, new, int(versions[-1].get("bits", 256))))
        return new

    def list(self) -> list[dict]:
        out = []
        for kid, entry in sorted(self._doc["keys"].items()):
            for v in entry.get("versions", []):
                out.append({"id": kid, "version": v.get("version"), "bits": v.get("bits"), "state": v.get("state"),
                            "created": v.get("created")})
        return out

    def _master(self, key_id: str, version: int | None) -> tuple[int, ModuleKey]:
        if version is None:  # wrapping: the newest active version, also after a rotation elsewhere
            self._refresh()
        entry = self._doc["keys"].get(key_id)
        if entry is None:
            # another process may have created it since we loaded
            self._refresh()
            entry = self._doc["keys"].get(key_id)
        if entry is None:
            raise KeyNotFound(f"master key {key_id!r} not in keystore {self.path}")
        versions = entry.get("versions") or []
        if version is None:
            active = [v for v in versions if v.get("state") == "active"]
            if not active:
                raise KeyAccessDenied(f"master key {key_id!r} has no active version")
            v = max(active, key=lambda v: int(v["version"]))
        else:
            match = [v for v in versions if int(v.get("version", -1)) == version]
            if not match:
                raise KeyNotFound(f"master key {key_id!r} has no version {version}")
            v = match[0]
            if v.get("state") in ("disabled", "destroyed"):
                raise KeyAccessDenied(f"master key {key_id!r} version {version} is {v.get('state')}")
        ver = int(v["version"])
        ck = (key_id, ver)
        if ck not in self._cache:
            try:
                raw = unwrap_key_locally(v["sealed"], self._kek, f"{key_id}:{ver}".encode())
            except InvalidTag:
                raise MalformedKeyMaterial(f"keystore entry {key_id!r} version {ver} is corrupted") from None
            self._cache[ck] = ModuleKey(raw)
        return ver, self._cache[ck]

    # ---- KMS client ----------------------------------------------------------------------

    @audited("wrap", "master_key_identifier", lambda args, result: _wrapped_version(result))
    def wrap_key(self, key_bytes: bytes, master_key_identifier: str) -> str:
        ver, mk = self._master(master_key_identifier, None)
        wrapped = wrap_key_locally(key_bytes, mk, f"{master_key_identifier}:{ver}".encode())
        return f"{WRAP_PREFIX}:{ver}:{wrapped}"

    @audited("unwrap", "master_key_identifier", lambda args, result: _wrapped_version(args["wrapped_key"]))
    def unwrap_key(self, wrapped_key: str, master_key_identifier: str) -> bytes:
        parts = str(wrapped_key).split(":", 2)
        if len(parts) != 3 or parts[0] != WRAP_PREFIX or not parts[1].isdigit():
            raise MalformedKeyMaterial("not a pqseal keystore wrapped key")
        ver, mk = self._master(master_key_identifier, int(parts[1]))
        return unwrap_key_locally(parts[2], mk, f"{master_key_identifier}:{ver}".encode())

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
