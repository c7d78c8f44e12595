"""Fuzz target: the C Thrift codec against the pure-Python oracle.

Input layout: byte 0 picks the struct, byte 1 the buffer type and start offset, the rest
is the compact-protocol input. For every input both codecs must agree exactly:

* ``decode`` and ``skip``: the same object and end offset, or ``DecodeError`` with the
  same message; ``skip`` ends where ``decode`` ends;
* a decoded object re-encodes to the same bytes in both codecs, and those bytes decode
  back to the same object;
* the decoded object with some values replaced (out-of-range ints, wrong types, unknown
  field ids) encodes to the same bytes or fails with the same ``EncodeError``.

Any other exception type, or any disagreement, is a finding. Run through ``run.py``
(``.ci/fuzz``); ``python fuzz_thrift.py replay FILE...`` replays inputs;
``python fuzz_thrift.py blind CORPUS SECONDS`` mutates a corpus without coverage feedback.
"""

from __future__ import annotations

import random
import sys

import harness


class Mismatch(Exception):
    """The C codec and the oracle disagree."""


def _outcome(fn, *args):
    from oracle import runtime
    try:
        return ("ok", fn(*args))
    except (runtime.DecodeError, runtime.EncodeError) as e:
        return ("err", type(e).__name__, str(e))


_WEIRD = [-1, 1 << 31, -(1 << 31) - 1, 1 << 63, -(1 << 64), 0, 127, 128, 32768, True, 1.5, "s", b"\xff" * 3, None,
          [], [1, 2], {}, {"x": 1}, (3, b""), (8, b"\x00"), (12, b"\x00"), (13, b""), bytearray(b"ab")]


def _mutate(obj, rng: random.Random, depth: int = 0):
    """A copy of a decoded struct with a few values replaced by odd ones."""
    out = dict(obj)
    keys = list(out)
    for _ in range(rng.randint(0, 2)):
        choice = rng.random()
        if choice < 0.2:
            out[rng.choice([-40000, -1, 0, 99, 32767, 40000, "nope"])] = rng.choice(_WEIRD)
        elif keys:
            k = rng.choice(keys)
            v = out[k]
            if isinstance(v, dict) and depth < 8 and rng.random() < 0.6:
                out[k] = _mutate(v, rng, depth + 1)
            elif isinstance(v, list) and v and rng.random() < 0.6:
                i = rng.randrange(len(v))
                lst = list(v)
                lst[i] = _mutate(v[i], rng, depth + 1) if isinstance(v[i], dict) else rng.choice(_WEIRD)
                out[k] = lst
            else:
                out[k] = rng.choice(_WEIRD)
    return out


def check(data: bytes) -> None:
    """Raise :class:`Mismatch` if the two codecs disagree on ``data``."""
    import oracle

    c, py = oracle.native, oracle.codec
    if c is None or len(data) < 2:
        return
    name = oracle.STRUCTS[data[0] % len(oracle.STRUCTS)]
    mode = data[1]
    body = data[2:]
    offset = min(mode & 3, len(body)) if mode & 4 else 0
    buf = (bytes, bytearray, memoryview)[(mode >> 3) % 3](body)

    for op in ("decode", "skip"):
        rc = _outcome(getattr(c, op), name, buf, offset)
        rp = _outcome(getattr(py, op), name, buf, offset)
        if rc != rp:
            raise Mismatch(f"{op} {name} at {offset}: C {rc!r:.300} != oracle {rp!r:.300}")
        if op == "decode":
            decoded = rc
        elif rc[0] == "ok" and decoded[0] == "ok" and rc[1] != decoded[1][1]:
            raise Mismatch(f"skip {name} ends at {rc[1]}, decode at {decoded[1][1]}")
    if decoded[0] != "ok":
        return
    obj, _ = decoded[1]
    ec, ep = _outcome(c.encode, name, obj), _outcome(py.encode, name, obj)
    if ec != ep:
        raise Mismatch(f"encode {name}: C {ec!r:.300} != oracle {ep!r:.300}")
    if ec[0] != "ok":
        raise Mismatch(f"encode of a decoded {name} failed: {ec!r:.300}")
    again = _outcome(c.decode, name, ec[1], 0)
    if again != ("ok", (obj, len(ec[1]))):
        raise Mismatch(f"{name}: decode(encode(obj)) != obj: {again!r:.300}")
    rng = random.Random(data)
    for _ in range(2):
        bent = _mutate(obj, rng)
        ec, ep = _outcome(c.encode, name, bent), _outcome(py.encode, name, bent)
        if ec != ep:
            raise Mismatch(f"encode of an edited {name}: C {ec!r:.300} != oracle {ep!r:.300}")


def finding_key(exc: BaseException) -> str:
    if isinstance(exc, Mismatch):
        return "thrift:mismatch:" + str(exc).split(":")[0]
    return f"thrift:{type(exc).__name__}:{harness.where(exc)}"


def main(argv: list[str]) -> None:
    import atheris

    with atheris.instrument_imports(include=["pqseal", "oracle", "thrift_oracle"]):
        import oracle  # noqa: F401
    rec = harness.Recorder("thrift")

    def one_input(data: bytes) -> None:
        rec.tick()
        try:
            check(data)
        except Exception as e:  # every other type, and every mismatch, is a finding
            rec.finding(finding_key(e), data, harness.describe(e))

    atheris.Setup(argv, one_input)
    atheris.Fuzz()


def blind(corpus: str, seconds: float) -> int:
    """Mutate the inputs of ``corpus`` at random without coverage feedback (for builds
    where atheris gets none, e.g. under a preloaded AddressSanitizer); returns execs."""
    import os
    import time

    inputs = []
    for name in sorted(os.listdir(corpus)):
        with open(os.path.join(corpus, name), "rb") as f:
            inputs.append(f.read())
    rng = random.Random(0)
    rec = harness.Recorder("thrift-blind")
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        data = bytearray(rng.choice(inputs))
        for _ in range(rng.randint(1, 4)):
            pos = rng.randrange(len(data) + 1)
            op = rng.randrange(5)
            if op == 0 and pos < len(data):
                data[pos] ^= 1 << rng.randrange(8)
            elif op == 1 and pos < len(data):
                data[pos] = rng.choice((0, 0x0F, 0x19, 0x1C, 0x7F, 0x80, 0xF8, 0xFF))
            elif op == 2:
                del data[pos:]
            elif op == 3:
                data[pos:pos] = rng.randbytes(rng.randint(1, 8))
            else:
                other = rng.choice(inputs)
                i = rng.randrange(len(other) + 1)
                data[pos:] = other[i:i + rng.randint(1, 64)] + data[pos:]
        rec.tick()
        try:
            check(bytes(data))
        except Exception as e:
            rec.finding(finding_key(e), bytes(data), harness.describe(e))
    rec.flush()
    return rec.execs


if __name__ == "__main__":
    if sys.argv[1:2] == ["replay"]:
        for p in sys.argv[2:]:
            with open(p, "rb") as f:
                check(f.read())
            print(p, "ok")
    elif sys.argv[1:2] == ["blind"]:
        print("blind:", blind(sys.argv[2], float(sys.argv[3])), "execs")
    else:
        main(sys.argv)
