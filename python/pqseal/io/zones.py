"""Encryption zones: HDFS transparent encryption's model for pqseal.

A zone is a directory prefix with a policy: the footer's master key, the column keys
(``parquet.encryption.column.keys`` grammar, ``"mk1:a,b;mk2:c"``; none: every column
with the footer key), the algorithm (``AES_GCM_V1`` or ``AES_GCM_CTR_V1``), plaintext
footer or not, key material inside the file or beside it, and the data key length.
Parquet files written under the prefix through ``pqseal.ParquetWriter``, the sealing
sink (``pqseal.open(path, "wb")``) or the ``pqseal`` fsspec file system get the zone's
policy; reading needs only keys, the files are standard PME.

- Zones nest and the deepest one holding a path wins. Matching is by whole path
  components: ``/data/ab`` is not in the zone ``/data/a``.
- A zone root is a local directory (stored absolute, symlinks resolved) or the URL of an
  fsspec target (``s3://bucket/prefix``, ``memory://x``); ``file:///data/x`` is the local
  ``/data/x`` and ``pqseal::<url>`` the target it chains to.
- A rename between different zones (or into or out of one) is refused
  (:func:`check_rename`): re-encryption with another policy is an explicit operation.
- A zone is not created over plaintext Parquet files unless they are sealed in place
  with its policy on the way (``encrypt_existing=True``, ``--encrypt-existing``).
- Policies live in one JSON file users can review, ``zones.json`` beside the keystore
  (``$PQSEAL_ZONES`` or the ``zones=`` argument name another), written atomically under
  a lock. Manage it with ``pqseal zone create|list|show|delete``::

      pqseal zone create /data/pii --footer-key footer --column-keys "pii:email,ssn"
      pqseal zone show /data/pii/2026/part-0.parquet

  or from Python::

      from pqseal.io import zones
      zones.create_zone("/data/pii", "footer", column_keys="pii:email,ssn")
      zones.policy_for("/data/pii/2026/part-0.parquet").encryption_config()
      zones.check_rename("/data/pii/a.parquet", "/data/public/a.parquet")   # ZoneError
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import os
import re
import stat
import threading
from dataclasses import dataclass

from ..errors import PqsealError

FORMAT = "pqseal-zones-1"
ZONES_ENV = "PQSEAL_ZONES"
MAX_FILE_SIZE = 16 << 20          # a zones file larger than this is refused, not read

_URL_RE = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://(.*)$", re.S)
_CHAIN_RE = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*::")
#: fsspec protocols that name the same storage as another one
_ALIASES = {"s3a": "s3", "gcs": "gs", "az": "abfs", "abfss": "abfs", "local": "file"}


class ZoneError(PqsealError, ValueError):
    """A zone operation is refused: a rename across zones, a zone over plaintext Parquet,
    a zone that exists (or does not), a bad policy or a bad zones file."""

    def __init__(self, message: str, *, failed: list[tuple[str, str]] | None = None):
        super().__init__(message)
        self.failed = failed or []      # (file, one-line reason) of files encrypt_existing could not seal


class ZonesFileError(ZoneError):
    """The zones file cannot be used (not JSON, unknown format, bad entry, writable by others)."""


@dataclass(frozen=True, kw_only=True)
class ZonePolicy:
    """The policy of one zone."""

    path: str                                  # the zone's root: an absolute path or URL, no trailing slash
    footer_key: str
    column_keys: str | None = None             # parquet.encryption.column.keys grammar; None: uniform
    algorithm: str = "AES_GCM_V1"
    plaintext_footer: bool = False
    internal_key_material: bool = True
    data_key_length_bits: int = 128
    kms: str | None = None                     # the KMS of the master keys, a URI (pqseal.kms.uri); None: the caller's

    def __post_init__(self):
        if not isinstance(self.path, str) or not self.path:
            raise ZoneError("a zone needs a root path")
        for name in ("plaintext_footer", "internal_key_material"):
            if not isinstance(getattr(self, name), bool):
                raise ZoneError(f"zone {self.path}: {name} must be true or false")
        if not isinstance(self.footer_key, str) or (self.column_keys is not None
                                                    and not isinstance(self.column_keys, str)):
            raise ZoneError(f"zone {self.path}: footer_key and column_keys are text")
        if isinstance(self.data_key_length_bits, bool) or not isinstance(self.data_key_length_bits, int):
            raise ZoneError(f"zone {self.path}: data_key_length_bits must be 128, 192 or 256")
        try:
            self.encryption_config()
            if self.kms is not None:
                from ..kms.uri import parse_kms_uri

                if not isinstance(self.kms, str):
                    raise ValueError("kms must be a KMS URI (text)")
                parse_kms_uri(self.kms)
        except ValueError as exc:
            raise ZoneError(f"zone {self.path}: {exc}") from None

    def encryption_config(self):
        """The :class:`~pqseal.config.EncryptionConfig` files written in the zone get (its
        master key id templates unresolved: see :func:`encryption_config_for`)."""
        from ..config import EncryptionConfig, parse_column_keys
        from ..keys import template

        columns = parse_column_keys(self.column_keys) if self.column_keys else None
        cfg = EncryptionConfig(footer_key=self.footer_key, column_keys=columns, uniform_encryption=not columns,
                               encryption_algorithm=self.algorithm, plaintext_footer=self.plaintext_footer,
                               internal_key_material=self.internal_key_material,
                               data_key_length_bits=self.data_key_length_bits)
        template.config_placeholders(cfg)   # a malformed template is refused when the zone is made
        return cfg

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        if d["kms"] is None:    # files of zones without a KMS stay as older pqseal versions read them
            del d["kms"]
        return d


# ---- where a path is ------------------------------------------------------------------------


@dataclass(frozen=True)
class Location:
    """A path normalized for zone matching: the storage (None: the local file system, else
    an fsspec protocol) and the path's components below its root."""

    protocol: str | None
    parts: tuple[str, ...]

    @property
    def text(self) -> str:
        rest = "/".join(self.parts)
        return "/" + rest if self.protocol is None else f"{self.protocol}://{rest}"

    def within(self, root: Location) -> bool:
        return self.protocol == root.protocol and self.parts[:len(root.parts)] == root.parts


def location(path, *, resolve: bool = True) -> Location:
    """Where ``path`` (a local path, ``file://`` URL, fsspec URL or ``pqseal::<url>``) is.
    Local paths are made absolute and, with ``resolve``, their symlinks resolved."""
    text = path if isinstance(path, str) else os.fspath(path)
    if isinstance(text, bytes):
        text = os.fsdecode(text)
    if "::" in text and _CHAIN_RE.match(text):     # a chain: the last link is the storage
        text = text.rsplit("::", 1)[1]
    if not text or "\0" in text:
        raise ZoneError(f"not a path: {text!r}")
    m = _URL_RE.match(text)
    protocol = None
    if m is not None:
        protocol = _ALIASES.get(m.group(1).lower(), m.group(1).lower())
        text = m.group(2)
        if protocol == "file":
            protocol = None
            if text.startswith("localhost/"):
                text = text[len("localhost"):]
    if protocol is None:
        text = os.path.abspath(text)
        if resolve:
            text = os.path.realpath(text)
        return Location(None, tuple(p for p in text.split("/") if p))
    parts = tuple(p for p in text.split("/") if p and p != ".")
    if ".." in parts:
        raise ZoneError(f"{path}: '..' in a URL is ambiguous for zones; give the path without it")
    return Location(protocol, parts)


# ---- the zones file -------------------------------------------------------------------------


def zones_file(zones=None) -> str:
    """The zones file: ``zones`` if given, else ``$PQSEAL_ZONES``, else ``zones.json``
    in the keystore's directory."""
    if zones is not None:
        if not isinstance(zones, (str, os.PathLike)):
            raise TypeError(f"zones must be the path of a zones file (or a list of ZonePolicy), not "
                            f"{type(zones).__name__}")
        return os.path.abspath(os.fspath(zones))
    if os.environ.get(ZONES_ENV):
        return os.path.abspath(os.environ[ZONES_ENV])
    from ..kms.keystore import default_path

    return os.path.join(os.path.dirname(os.path.abspath(default_path())), "zones.json")


_cache: dict[str, tuple[tuple, tuple[ZonePolicy, ...]]] = {}
_cache_lock = threading.Lock()


def _parse(path: str, data: bytes) -> tuple[ZonePolicy, ...]:
    try:
        doc = json.loads(data.decode("utf-8"))
    except (ValueError, UnicodeDecodeError):
        raise ZonesFileError(f"zones file {path} is not valid JSON; fix or remove it") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT or not isinstance(doc.get("zones"), list):
        raise ZonesFileError(f"zones file {path} is not a {FORMAT} file (expected "
                             f'{{"format": "{FORMAT}", "zones": [...]}})')
    fields = {f.name for f in dataclasses.fields(ZonePolicy)}
    out: dict[str, ZonePolicy] = {}
    for i, entry in enumerate(doc["zones"]):
        if not isinstance(entry, dict):
            raise ZonesFileError(f"zones file {path}: entry {i} is not an object")
        unknown = sorted(set(entry) - fields)
        if unknown:
            raise ZonesFileError(f"zones file {path}: entry {i} has unknown field(s) {', '.join(unknown)}")
        try:
            policy = ZonePolicy(**entry)
            root = location(policy.path, resolve=False)
        except (TypeError, ZoneError) as exc:
            raise ZonesFileError(f"zones file {path}: entry {i}: {' '.join(str(exc).split())}") from None
        if root.text != policy.path:
            raise ZonesFileError(f"zones file {path}: entry {i}: root {policy.path!r} is not normalized "
                                 f"(expected {root.text!r})")
        if policy.path in out:
            raise ZonesFileError(f"zones file {path}: zone {policy.path} is listed twice")
        out[policy.path] = policy
    return tuple(sorted(out.values(), key=lambda p: p.path))


def _stamp(st: os.stat_result) -> tuple:
    return st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns


def _read(path: str) -> tuple[ZonePolicy, ...]:
    """The zones of the file ``path`` (none when it does not exist)."""
    try:
        f = open(path, "rb")
    except FileNotFoundError:
        return ()
    except OSError as exc:
        raise ZonesFileError(f"zones file {path} cannot be read: {exc.strerror}") from None
    with f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise ZonesFileError(f"zones file {path} is not a regular file")
        if st.st_uid not in (os.getuid(), 0):
            raise ZonesFileError(f"zones file {path} belongs to another user (uid {st.st_uid}); only its "
                                 "owner or root may set the zones of this user")
        if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            raise ZonesFileError(f"zones file {path} is writable by group or others (mode "
                                 f"{stat.S_IMODE(st.st_mode):o}); run: chmod go-w {path}")
        stamp = _stamp(st)
        with _cache_lock:
            hit = _cache.get(path)
        if hit is not None and hit[0] == stamp:
            return hit[1]
        data = f.read(MAX_FILE_SIZE + 1)
    if len(data) > MAX_FILE_SIZE:
        raise ZonesFileError(f"zones file {path} is larger than {MAX_FILE_SIZE >> 20} MiB")
    zones = _parse(path, data)
    with _cache_lock:
        _cache[path] = (stamp, zones)
    return zones


@contextlib.contextmanager
def _editing(path: str):
    """Exclusive lock on the zones file, its zones (a dict root -> policy the caller
    edits), then the file rewritten atomically (temporary file + rename)."""
    from .._io import atomic_write

    try:
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        fd = os.open(path + ".lock", os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o600)
    except OSError as exc:      # named: the zones file, not its lock file
        raise type(exc)(exc.errno, f"zones file {path} cannot be written: {exc.strerror}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        zones = {z.path: z for z in _read(path)}
        yield zones
        doc = {"format": FORMAT, "zones": [zones[k].to_dict() for k in sorted(zones)]}
        atomic_write(path, (json.dumps(doc, indent=2) + "\n").encode(), mode=0o644)
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def _zones(zones) -> tuple[ZonePolicy, ...]:
    """The zones: of a file (``zones``: its path; None: :func:`zones_file`), or ``zones``
    itself when it is a sequence of :class:`ZonePolicy` (tests, in-memory setups)."""
    if isinstance(zones, (list, tuple)) and all(isinstance(z, ZonePolicy) for z in zones):
        return tuple(zones)
    return _read(zones_file(zones))


# ---- queries --------------------------------------------------------------------------------


def list_zones(*, zones=None) -> list[ZonePolicy]:
    """Every zone, sorted by root."""
    return list(_zones(zones))


def _holding(where: Location, zones) -> ZonePolicy | None:
    best, depth = None, -1
    for z in zones:
        root = location(z.path, resolve=False)
        if where.within(root) and len(root.parts) > depth:
            best, depth = z, len(root.parts)
    return best


def policy_for(path, *, zones=None) -> ZonePolicy | None:
    """The policy of the deepest zone holding ``path`` (a local path or URL), or None.
    ``zones``: the zones file (default: beside the default keystore)."""
    return _holding(location(path), _zones(zones))


def check_rename(src, dst, *, zones=None) -> None:
    """Raise :class:`ZoneError` when ``src`` and ``dst`` lie in different zones (or one
    in a zone and the other in none), or when ``src`` holds a zone's root (the zone
    would not move with it)."""
    all_zones = _zones(zones)
    a, b = location(src), location(dst)
    za, zb = _holding(a, all_zones), _holding(b, all_zones)
    if za != zb:
        def name(z):
            return f"zone {z.path}" if z is not None else "no zone"
        raise ZoneError(f"refusing to rename {src} ({name(za)}) to {dst} ({name(zb)}): a rename across "
                        "zones would keep the old encryption; re-encrypt into the new place instead")
    for z in all_zones:
        root = location(z.path, resolve=False)
        if root.within(a) and root != a:
            raise ZoneError(f"refusing to rename {src}: it holds zone {z.path}, which would not move with it")


# ---- creating and deleting zones ------------------------------------------------------------


@dataclass(frozen=True)
class ZoneCreated:
    """What :func:`create_zone` did: the zone's policy and the plaintext Parquet files it
    sealed in place (``encrypt_existing``)."""

    policy: ZonePolicy
    sealed: list[str]


def create_zone(path, footer_key: str, *, column_keys: str | None = None, algorithm: str = "AES_GCM_V1",
                plaintext_footer: bool = False, internal_key_material: bool = True,
                data_key_length_bits: int = 128, encrypt_existing: bool = False, replace: bool = False,
                kms=None, zones=None, kms_uri: str | None = None) -> ZoneCreated:
    """Make the directory ``path`` (local, or an fsspec URL) a zone with this policy.

    The master keys are checked first: fresh data keys are wrapped with them through
    ``kms`` (a client, a factory, or None for the local keystore, or the zone's
    ``kms_uri``: a KMS URI stored in the policy, so writes into the zone that name no KMS
    use it). Refused when the zone
    exists (unless ``replace``) or when the directory holds plaintext Parquet files
    (outside zones nested in it), unless ``encrypt_existing``: then each is sealed in
    place with the policy (files already encrypted are left alone). If any cannot be
    sealed, the zone is not created and the :class:`ZoneError` lists them (``.failed``);
    the files sealed stay sealed, so running again finishes the job."""
    root = location(path)
    policy = ZonePolicy(path=root.text, footer_key=footer_key, column_keys=column_keys or None,
                        algorithm=str(algorithm).upper(), plaintext_footer=plaintext_footer,
                        internal_key_material=internal_key_material, data_key_length_bits=data_key_length_bits,
                        kms=kms_uri)
    if kms is None:
        kms = kms_uri
    file = zones_file(zones)
    if root.protocol is None and os.path.exists(root.text) and not os.path.isdir(root.text):
        raise ZoneError(f"{root.text} is not a directory; a zone is a directory")
    if root.protocol is not None and not internal_key_material:
        raise ZoneError(f"zone {root.text}: external key material is written beside local files only; "
                        "keep it in the files (internal key material) in a zone of an fsspec target")
    if not replace and any(z.path == policy.path for z in _read(file)):
        raise ZoneError(f"zone {policy.path} exists; pass replace=True (CLI: --force) to replace its policy")
    _check_keys(policy, kms)
    inner = [r for z in _read(file) if (r := location(z.path, resolve=False)).within(root) and r != root]
    found = _plaintext_parquet(root, inner)
    if found and not encrypt_existing:
        shown = ", ".join(found[:3]) + (f" and {len(found) - 3} more" if len(found) > 3 else "")
        raise ZoneError(f"{root.text} holds {len(found)} plaintext Parquet file(s) ({shown}); pass "
                        "encrypt_existing=True (CLI: --encrypt-existing) to seal them with the zone's policy")
    sealed, failed = _seal_in_place(found, root, policy, kms)
    if failed:
        raise ZoneError(f"zone {policy.path} not created: {len(failed)} of {len(found)} plaintext Parquet file(s) "
                        f"could not be sealed (first: {failed[0][0]}: {failed[0][1]}); {len(sealed)} were",
                        failed=failed)
    with _editing(file) as current:
        if policy.path in current and not replace:
            raise ZoneError(f"zone {policy.path} exists; pass replace=True (CLI: --force) to replace its policy")
        current[policy.path] = policy
    return ZoneCreated(policy, sealed)


def encryption_config_for(policy: ZonePolicy, path):
    """The config of the file ``path`` in the zone of ``policy``: the policy's, with its
    master key id templates (``tenant-{customer_id}``) resolved from the hive segments of
    the path below the zone's root (:mod:`pqseal.keys.template`; a path without the
    partition raises :class:`~pqseal.keys.template.UnknownPlaceholder`)."""
    from ..keys import template

    cfg = policy.encryption_config()
    if path is None or not template.has_templates(cfg):
        return cfg
    where, root = location(path), location(policy.path, resolve=False)
    if not where.within(root):
        raise ZoneError(f"{path} is not in zone {policy.path}")
    rel = "/".join(where.parts[len(root.parts):])
    return template.resolve(cfg, template.partition_values(rel), f" in {rel} (zone {policy.path})")


def _check_keys(policy: ZonePolicy, kms) -> None:
    """Wrap fresh data keys with the policy's master keys (KeyNotFound, KeyAccessDenied or
    KmsError when a key is missing or refused). Templates (tenant keys) are checked when
    a file is written: their ids depend on its path."""
    from ..api import encryption_properties
    from ..keys import template

    cfg = policy.encryption_config()
    if template.has_templates(cfg):
        return
    encryption_properties(dataclasses.replace(cfg, internal_key_material=True), kms=kms)


def delete_zone(path, *, zones=None) -> ZonePolicy:
    """Remove the zone rooted at ``path`` (its files are not touched); returns its policy."""
    root = location(path).text
    with _editing(zones_file(zones)) as current:
        if root not in current:      # a root whose directory became a symlink: as stored
            root = location(path, resolve=False).text
        if root not in current:
            raise ZoneError(f"no zone is rooted at {root}" + (f" (it lies in zone {z.path})"
                                                                 if (z := _holding(location(path), current.values()))
                                                                 else ""))
        return current.pop(root)


# ---- plaintext Parquet files already in a new zone ------------------------------------------


def _one_line(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {' '.join(str(exc).split())}"


def _plaintext(open_file, name: str) -> bool:
    """True for a plaintext Parquet file, and for a file that starts like one (``PAR1``:
    plaintext, or PME with a plaintext footer) but cannot be read: it may hold plaintext."""
    from ..format.source import FileRanges, Source

    with open_file() as f:
        if f.read(4) != b"PAR1":
            return False
        try:
            with Source(FileRanges(f, name=name)) as s:
                return s.crypto is None
        except (PqsealError, OSError, ValueError):
            return True


def _plaintext_parquet(root: Location, inner: list[Location]) -> list[str]:
    """The plaintext Parquet files under ``root`` (local paths, or URLs), outside the
    zones ``inner``. Symbolic links are not followed."""
    from .._io import is_temp_name

    skip = {z.text for z in inner}
    found: list[str] = []
    if root.protocol is None:
        if not os.path.isdir(root.text):
            return found

        def unreadable(exc: OSError):
            raise ZoneError(f"cannot check {exc.filename or root.text} for plaintext Parquet: {exc.strerror}")
        for top, dirs, files in os.walk(root.text, onerror=unreadable):
            dirs[:] = sorted(d for d in dirs if os.path.join(top, d) not in skip)
            for name in sorted(files):
                p = os.path.join(top, name)
                if is_temp_name(name) or not stat.S_ISREG(os.lstat(p).st_mode):
                    continue
                if _plaintext(lambda p=p: open(p, "rb"), p):
                    found.append(p)
        return found
    fs, base = _fsspec(root.text)
    for p in sorted(fs.find(base)):
        url = f"{root.protocol}://{p.lstrip('/')}"
        if is_temp_name(p.rsplit("/", 1)[-1]) or any(location(url).within(z) for z in inner):
            continue
        if _plaintext(lambda p=p: fs.open(p, "rb"), url):
            found.append(url)
    return found


def _fsspec(url: str):
    """(file system, path) of an fsspec URL."""
    try:
        import fsspec
    except ImportError:
        raise ZoneError(f"{url}: zones of fsspec targets need fsspec") from None
    try:
        return fsspec.core.url_to_fs(url)
    except (ImportError, ValueError) as exc:
        raise ZoneError(f"{url}: no fsspec file system for it ({_one_line(exc)})") from None


def _seal_in_place(found: list[str], root: Location, policy: ZonePolicy,
                   kms) -> tuple[list[str], list[tuple[str, str]]]:
    """Seal each file of ``found`` in place with ``policy``: (sealed, [(file, reason)])."""
    from ..api import encrypt_file

    sealed: list[str] = []
    failed: list[tuple[str, str]] = []
    for p in found:
        try:
            config = encryption_config_for(policy, p)
            if root.protocol is None:
                encrypt_file(p, p, config, kms=kms, in_place=True)
            else:
                _seal_fsspec(p, config, kms)
            sealed.append(p)
        except (PqsealError, OSError, ValueError) as exc:
            failed.append((p, _one_line(exc)))
    return sealed, failed


def _seal_fsspec(url: str, config, kms) -> None:
    """Seal the file ``url`` of an fsspec file system: written sealed to a temporary name
    beside it, then moved over it."""
    import posixpath

    from .._io import temp_name
    from ..api import encryption_properties
    from ..format.engine import transform_into
    from ..format.source import FileRanges

    fs, p = _fsspec(url)
    props = encryption_properties(config, kms=kms)
    tmp = posixpath.join(posixpath.dirname(p), temp_name(posixpath.basename(p)))
    try:
        with fs.open(p, "rb") as src, fs.open(tmp, "wb") as out:
            transform_into(FileRanges(src, name=url), out, encryption=props, expect="plaintext", name=url)
        fs.mv(tmp, p)
    except BaseException:
        with contextlib.suppress(Exception):
            if fs.exists(tmp):
                fs.rm(tmp)
        raise
