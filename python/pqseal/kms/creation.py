"""The local keystore's creation policy: tenant keys created on first use.

A store may hold a policy (the document's entry ``creation``, covered by its MAC, so
only a holder of the passphrase can change it; ``pqseal keys policy``): glob patterns of
master key ids (``tenant-*``) that a wrap may create when they are missing, the OS users
allowed to trigger that (none listed: every user who can open the store), and the key
length. Without a policy (the default) a missing key stays :class:`KeyNotFound`.

Only a wrap creates (a new file needs the key); an unwrap of a missing key never does.
An id created this way must also be in the safe set ``AUTO_ID`` (ASCII letters, digits,
``_ - . :``, at most 128 characters), so an unresolved template (``tenant-{customer_id}``)
or an id with a path separator or whitespace is never created, whatever the patterns.

This guards against mistakes (a typo creating a key, a job run by the wrong account),
not against someone who holds the passphrase: they can change the policy, or create
keys, themselves.
"""

from __future__ import annotations

import fnmatch
import os
import re
from dataclasses import dataclass

from ..errors import MalformedKeyMaterial

AUTO_ID = re.compile(r"[A-Za-z0-9_.:-]{1,128}", re.ASCII)
PATTERN = re.compile(r"[A-Za-z0-9_.:*?-]{1,128}", re.ASCII)
USER = re.compile(r"[A-Za-z0-9_.@-][A-Za-z0-9_.@$-]{0,63}", re.ASCII)


def current_user() -> str:
    """The OS user of this process (its effective uid's name; ``uid:N`` without one)."""
    import pwd

    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        return f"uid:{os.geteuid()}"


@dataclass(frozen=True)
class CreationPolicy:
    """Which missing master keys a wrap creates: ids matching one of ``patterns`` (globs:
    ``*``, ``?``), when the OS user is one of ``users`` (empty: any), ``bits`` long."""

    patterns: tuple[str, ...] = ()
    users: tuple[str, ...] = ()
    bits: int = 256

    def __post_init__(self):
        for p in self.patterns:
            if not isinstance(p, str) or not PATTERN.fullmatch(p):
                raise ValueError(f"creation pattern {p!r}: use ASCII letters, digits, '_ - . :' and the globs '*', '?' "
                                 "(at most 128 characters)")
        for u in self.users:
            if not isinstance(u, str) or not USER.fullmatch(u):
                raise ValueError(f"user {u!r} is not an OS user name")
        if self.bits not in (128, 192, 256):
            raise ValueError("master key length must be 128, 192 or 256 bits")

    @classmethod
    def from_doc(cls, doc: dict) -> CreationPolicy:
        """The policy stored in a keystore document (none: nothing is created)."""
        entry = doc.get("creation")
        if entry is None:
            return cls()
        try:
            if not isinstance(entry, dict) or set(entry) != {"patterns", "users", "bits"}:
                raise ValueError("unexpected fields")
            if not all(isinstance(entry[k], list) for k in ("patterns", "users")) or type(entry["bits"]) is not int:
                raise ValueError("bad field types")
            return cls(tuple(entry["patterns"]), tuple(entry["users"]), entry["bits"])
        except ValueError as exc:
            raise MalformedKeyMaterial(f"keystore: the creation policy is malformed ({exc})") from None

    def cautions(self) -> list[str]:
        """Lines worth a warning when the policy is set: a pattern matching every id
        (then a typo in a master key id creates a key instead of failing), a user this
        host does not know (valid on another host sharing the store, or a typo)."""
        import pwd

        out = [f"pattern {p!r} matches every master key id: a mistyped key id will create a new key instead of "
               "failing; prefer a prefix such as 'tenant-*'" for p in self.patterns if set(p) <= {"*", "?"}]
        for u in self.users:
            try:
                pwd.getpwnam(u)
            except KeyError:
                out.append(f"user {u!r} is not known on this host")
        return out

    def to_doc(self) -> dict | None:
        if not self.patterns:
            return None
        return {"patterns": list(self.patterns), "users": list(self.users), "bits": self.bits}

    def refusal(self, key_id: str, user: str) -> str | None:
        """None when a wrap by ``user`` may create ``key_id``, else why not (one line)."""
        if not self.patterns:
            return "the keystore creates no keys on first use (see `pqseal keys policy`)"
        if not any(fnmatch.fnmatchcase(key_id, p) for p in self.patterns):
            return f"it matches no creation pattern ({', '.join(self.patterns)})"
        if not AUTO_ID.fullmatch(key_id):
            return "ids created on first use are ASCII letters, digits and '_ - . :' only"
        if self.users and user not in self.users:
            return f"user {user!r} may not create keys on first use (allowed: {', '.join(self.users)})"
        return None
