"""Loaders for the known-answer vectors (see tests/vectors/README.md).

NIST CAVP AES-GCM response files are read from the installed ``cryptography_vectors``
package; the RFC 3686 AES-CTR vectors are committed in ``tests/vectors``.
"""

from __future__ import annotations

import functools
import json
import os
from dataclasses import dataclass

import cryptography_vectors

HERE = os.path.dirname(os.path.abspath(__file__))
VECTOR_DIR = os.path.join(HERE, "vectors")

GCM_DIR = "ciphers/AES/GCM"
# Cases per file with IVlen = 96 and Taglen = 128: 25 sections (5 PT lengths x 5 AAD
# lengths) x 15 counts. Asserted by the tests so a parser bug cannot shrink the set.
GCM_CASES_PER_FILE = 375


@dataclass(frozen=True)
class GcmVector:
    file: str
    count: int
    key: bytes
    iv: bytes
    aad: bytes
    ct: bytes
    tag: bytes
    pt: bytes | None  # None: a decrypt FAIL case (the tag must not verify)

    @property
    def fail(self) -> bool:
        return self.pt is None

    @property
    def name(self) -> str:
        return f"{self.file} Keylen={len(self.key) * 8} PTlen={len(self.ct) * 8} " \
               f"AADlen={len(self.aad) * 8} Count={self.count}"


def _parse_rsp(fileobj, filename: str) -> list[GcmVector]:
    params: dict[str, int] = {}
    out: list[GcmVector] = []
    rec: dict[str, str] | None = None

    def flush():
        if rec is None:
            return
        if params.get("IVlen") == 96 and params.get("Taglen") == 128:
            fail = "FAIL" in rec
            out.append(GcmVector(
                file=filename, count=int(rec["Count"]), key=bytes.fromhex(rec["Key"]),
                iv=bytes.fromhex(rec["IV"]), aad=bytes.fromhex(rec.get("AAD", "")),
                ct=bytes.fromhex(rec.get("CT", "")), tag=bytes.fromhex(rec["Tag"]),
                pt=None if fail else bytes.fromhex(rec.get("PT", ""))))

    for raw in fileobj:
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("[") and line.endswith("]"):
            flush()
            rec = None
            k, _, v = line[1:-1].partition("=")
            params[k.strip()] = int(v.strip())
            continue
        if line == "FAIL":
            assert rec is not None
            rec["FAIL"] = ""
            continue
        k, sep, v = line.partition("=")
        if not sep:
            raise ValueError(f"{filename}: unexpected line {line!r}")
        k, v = k.strip(), v.strip()
        if k == "Count":
            flush()
            rec = {}
        assert rec is not None, f"{filename}: {k} before Count"
        rec[k] = v
    flush()
    for v in out:  # lengths agree with the section headers (sanity of the parse)
        assert len(v.iv) == 12 and len(v.tag) == 16
        if v.pt is not None:
            assert len(v.pt) == len(v.ct)
    return out


@functools.lru_cache(maxsize=None)
def gcm_cavp(kind: str, key_bits: int) -> tuple[GcmVector, ...]:
    """The IVlen=96/Taglen=128 cases of gcmEncryptExtIV<bits>.rsp or gcmDecrypt<bits>.rsp."""
    name = {"encrypt": f"gcmEncryptExtIV{key_bits}.rsp", "decrypt": f"gcmDecrypt{key_bits}.rsp"}[kind]
    with cryptography_vectors.open_vector_file(f"{GCM_DIR}/{name}", "r") as f:
        return tuple(_parse_rsp(f, name))


@dataclass(frozen=True)
class CtrVector:
    name: str
    key: bytes
    nonce: bytes  # the 12-byte PME nonce: RFC 3686 nonce(4) || IV(8)
    pt: bytes
    ct: bytes

    @property
    def counter_block(self) -> bytes:
        return self.nonce + b"\x00\x00\x00\x01"


@functools.lru_cache(maxsize=None)
def ctr_rfc3686() -> tuple[CtrVector, ...]:
    with open(os.path.join(VECTOR_DIR, "aes_ctr_rfc3686.json"), encoding="utf-8") as f:
        doc = json.load(f)
    return tuple(CtrVector(name=v["name"], key=bytes.fromhex(v["key"]),
                           nonce=bytes.fromhex(v["nonce"]) + bytes.fromhex(v["iv"]),
                           pt=bytes.fromhex(v["plaintext"]), ct=bytes.fromhex(v["ciphertext"]))
                 for v in doc["vectors"])


def cryptography_vectors_rfc3686() -> list[dict[str, bytes]]:
    """The same RFC 3686 vectors as transcribed independently in cryptography_vectors."""
    out = []
    for bits in (128, 192, 256):
        cur: dict[str, bytes] = {}
        with cryptography_vectors.open_vector_file(f"ciphers/AES/CTR/aes-{bits}-ctr.txt", "r") as f:
            for line in f:
                k, sep, v = line.strip().partition(" = ")
                if sep:
                    cur[k] = bytes.fromhex(v) if k != "COUNT" else v.encode()
                    if k == "CIPHERTEXT":
                        out.append(cur)
                        cur = {}
    return out
