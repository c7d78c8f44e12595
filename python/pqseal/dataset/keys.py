"""The keys a dataset job's workers use, and how they travel to worker processes.

Workers ask one object for ``encryption_properties(dst, partition)`` (``partition``: the
file's partition values, for master key id templates; None when the config has none) and/or
``decryption_properties(src)``: a :class:`~pqseal.keys.KeySession` opened by the driver
(configs and a KMS), or :class:`FixedKeys` (explicit properties given by the caller). A
rekey pairs two of them (:class:`Paired`). Neither makes a KMS call in a worker. To reach
another process each side is exported once (``export()``, key bytes) and imported there
(``import_``); :class:`Shipped` carries the exports and is what executors send.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from typing import Any

from ..format.properties import FOOTER_KEY, DecryptionProperties, EncryptionProperties


class FixedKeys:
    """Explicit properties given by the caller, the same for every file."""

    kms_calls = 0

    def __init__(self, encryption: EncryptionProperties | None = None,
                 decryption: DecryptionProperties | None = None):
        self._enc = encryption
        self._dec = decryption
        self.unreadable: dict[str, str] = {}

    def encryption_properties(self, dst=None, partition=None) -> EncryptionProperties:
        if self._enc is None:
            raise ValueError("no encryption properties in this job")
        return self._enc   # explicit keys: no master key ids, so nothing to resolve

    def decryption_properties(self, src=None) -> DecryptionProperties:
        if self._dec is None:
            raise ValueError("no decryption properties in this job")
        return self._dec

    def export(self) -> bytes:
        """Key bytes for another process of this job (see the module docstring)."""
        enc = dec = None
        if self._enc is not None:
            e = self._enc
            enc = dict(footer_key=e.footer_key, algorithm=e.algorithm, plaintext_footer=e.plaintext_footer,
                       aad_prefix=e.aad_prefix, store_aad_prefix=e.store_aad_prefix,
                       footer_key_metadata=e.footer_key_metadata, v2_framing=e.v2_framing,
                       complete_columns=e.complete_columns, external_key_material=e.external_key_material,
                       column_keys=None if e.uniform else
                       {p: ("footer" if c.key is None else (c.key, c.key_metadata)) for p, c in e.column_keys.items()})
        if self._dec is not None:
            d = self._dec
            if d.key_retriever is not None:
                raise ValueError("DecryptionProperties with a key_retriever cannot leave this process: use "
                                 "executor='threads', or a KMS (decryption=None or a DecryptionConfig)")
            dec = dict(footer_key=d.footer_key, column_keys=d.column_keys, aad_prefix=d.aad_prefix)
        return pickle.dumps((enc, dec))

    @classmethod
    def import_(cls, data: bytes) -> "FixedKeys":
        enc, dec = pickle.loads(data)
        e = d = None
        if enc is not None:
            cols = enc.pop("column_keys")
            if cols is not None:
                cols = {p: (FOOTER_KEY if v == "footer" else tuple(v)) for p, v in cols.items()}
            e = EncryptionProperties(column_keys=cols, **enc)
        if dec is not None:
            d = DecryptionProperties(**dec)
        return cls(e, d)

    def close(self) -> None:
        pass

    def __repr__(self) -> str:
        return f"<FixedKeys encryption={self._enc!r} decryption={self._dec!r}>"

    def __reduce__(self):
        raise TypeError("FixedKeys holds keys: ship it with export()/import_()")


class Paired:
    """Reading keys from one object and writing keys from another (rekey); either may be None."""

    def __init__(self, read: Any = None, write: Any = None):
        self.read = read
        self.write = write

    def encryption_properties(self, dst=None, partition=None) -> EncryptionProperties:
        if self.write is None:
            raise ValueError("no encryption keys in this job")
        return self.write.encryption_properties(dst, partition)

    def decryption_properties(self, src=None) -> DecryptionProperties:
        if self.read is None:
            raise ValueError("no decryption keys in this job")
        return self.read.decryption_properties(src)

    def rewrap_material(self, material: dict[str, str]) -> dict[str, str]:
        return self.read.rewrap_material(material)

    def sides(self) -> list:
        out = [s for s in (self.read, self.write) if s is not None]
        return out[:1] if len(out) == 2 and out[0] is out[1] else out

    @property
    def kms_calls(self) -> int:
        return sum(getattr(s, "kms_calls", 0) for s in self.sides())

    @property
    def unreadable(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for s in self.sides():
            out.update(getattr(s, "unreadable", None) or {})
        return out

    def ship(self, token: str) -> "Shipped":
        """The exports of both sides (one when the same object serves both)."""
        def one(side):
            return None if side is None else (type(side), side.export())
        same = self.read is not None and self.read is self.write
        return Shipped(token, one(self.read), None if same else one(self.write), same)

    def close(self) -> None:
        for s in self.sides():
            s.close()


@dataclass(frozen=True, repr=False)
class Shipped:
    """What a worker process receives once: the exported sides of a :class:`Paired`.
    ``token`` names the job, so a worker imports it once however many tasks it runs."""

    token: str
    read: tuple | None
    write: tuple | None
    same: bool

    def open(self) -> Paired:
        def one(side):
            if side is None:
                return None
            cls, data = side
            return cls.import_(data)
        read = one(self.read)
        return Paired(read, read if self.same else one(self.write))

    def __repr__(self) -> str:
        return f"<Shipped keys of job {self.token}>"
