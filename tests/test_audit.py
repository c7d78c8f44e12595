"""The audit log (pqseal.audit): records of keystore and CLI file operations, the HMAC
chain against edits/deletions/reordering/insertions, concurrent writers, the CLI."""

from __future__ import annotations

import base64
import json
import multiprocessing
import os
import stat

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from pqseal import audit
from pqseal.cli import main as cli
from pqseal.crypto import unwrap_key_locally
from pqseal.errors import AuditLogError, KeyNotFound
from pqseal.keys import clear_caches
from pqseal.kms.keystore import LocalKeystore

PASS = b"audit test passphrase"


@pytest.fixture(autouse=True)
def environment(monkeypatch):
    monkeypatch.delenv(audit.ENV, raising=False)
    clear_caches()
    audit.forget_logs()
    yield
    clear_caches()
    audit.forget_logs()


@pytest.fixture
def ks(tmp_path):
    k = LocalKeystore.init(tmp_path / "ks.json", PASS)
    k.create("footer")
    return k


def records(path) -> list[dict]:
    return [json.loads(line) for line in open(path, encoding="ascii")]


def log_of(ks) -> str:
    return os.path.join(os.path.dirname(ks.path), "audit.log")


def test_keystore_operations_are_recorded(ks):
    wrapped = ks.wrap_key(b"k" * 16, "footer")
    assert ks.rotate("footer") == 2
    ks.unwrap_key(wrapped, "footer")
    with pytest.raises(KeyNotFound):
        ks.wrap_key(b"k" * 16, "nope")
    path = log_of(ks)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    got = [(r["seq"], r["op"], r["key"], r["version"], r["outcome"]) for r in records(path)]
    assert got == [(1, "create", "footer", 1, "ok"), (2, "wrap", "footer", 1, "ok"),
                   (3, "rotate", "footer", 2, "ok"), (4, "unwrap", "footer", 1, "ok"),
                   (5, "wrap", "nope", None, "KeyNotFound")]
    r = records(path)[0]
    assert r["pid"] == os.getpid() and r["host"] and r["user"] and r["time"].endswith("+00:00")
    assert audit.verify(path, ks.audit_key()).count == 5
    text = open(path, encoding="ascii").read()
    for secret in (wrapped.split(":")[2], (b"k" * 16).hex(), base64.b64encode(b"k" * 16).decode()):
        assert secret not in text


def test_lifecycle_operations_are_recorded(ks, tmp_path):
    """disable, enable, destroy, backup and passwd change what the store can do: each is
    in the chain, a refused one with its outcome."""
    ks.rotate("footer")
    ks.disable("footer", 1)
    ks.enable("footer", 1)
    with pytest.raises(KeyNotFound):
        ks.disable("footer", 9)
    ks.destroy("footer", 1)
    ks.backup(str(tmp_path / "b.json"))
    ks.passwd(b"another passphrase")
    got = [(r["op"], r["key"], r["version"], r["outcome"]) for r in records(log_of(ks))][2:]
    assert got == [("disable", "footer", 1, "ok"), ("enable", "footer", 1, "ok"),
                   ("disable", "footer", 9, "KeyNotFound"), ("destroy", "footer", 1, "ok"),
                   ("backup", None, None, "ok"), ("passwd", None, None, "ok")]
    assert audit.verify(log_of(ks), ks.audit_key()).count == 8


def test_audit_key_survives_reopening_and_reading_writes_nothing(ks):
    ks.wrap_key(b"k" * 16, "footer")
    before = open(ks.path, "rb").read()
    again = LocalKeystore(ks.path, PASS)
    assert again.audit_key() == ks.audit_key()
    assert open(ks.path, "rb").read() == before
    again.create("other")   # a second keystore object appends to the same chain
    assert audit.verify(log_of(ks), again.audit_key()).count == 3


@pytest.mark.skipif(not hasattr(LocalKeystore, "passwd"), reason="LocalKeystore.passwd arrives with the key "
                    "lifecycle branch")
def test_audit_key_survives_passwd(ks):
    """The chain written before a passphrase change still verifies after it: the audit
    key entry is re-sealed with the keystore, not lost."""
    ks.wrap_key(b"k" * 16, "footer")
    before = ks.audit_key()
    ks.passwd(b"a new passphrase")
    again = LocalKeystore(ks.path, b"a new passphrase")
    assert again.audit_key() == before
    again.rotate("footer")
    assert audit.verify(log_of(ks), again.audit_key()).ok


def test_off_and_elsewhere(tmp_path, monkeypatch):
    monkeypatch.setenv(audit.ENV, "off")
    k = LocalKeystore.init(tmp_path / "a" / "ks.json", PASS)
    k.create("x")
    k.wrap_key(b"k" * 16, "x")
    assert not os.path.exists(tmp_path / "a" / "audit.log")
    monkeypatch.setenv(audit.ENV, str(tmp_path / "elsewhere.log"))
    k = LocalKeystore.init(tmp_path / "b" / "ks.json", PASS)
    k.create("x")
    assert [r["op"] for r in records(tmp_path / "elsewhere.log")] == ["create"]
    assert not os.path.exists(tmp_path / "b" / "audit.log")


def test_unwritable_log_fails_the_operation(tmp_path, monkeypatch):
    os.mkdir(tmp_path / "log-is-a-dir")
    monkeypatch.setenv(audit.ENV, str(tmp_path / "log-is-a-dir"))
    k = LocalKeystore.init(tmp_path / "ks.json", PASS)
    with pytest.raises(AuditLogError, match="audit log"):
        k.create("x")


def test_torn_last_line_refuses_appends_and_verify_names_it(ks):
    path = log_of(ks)
    with open(path, "ab") as f:
        f.write(b'{"seq": 2, "ti')
    with pytest.raises(AuditLogError, match="malformed"):
        ks.wrap_key(b"k" * 16, "footer")
    v = audit.verify(path, ks.audit_key())
    assert (v.ok, v.bad_line, v.error, v.count) == (False, 2, "malformed record", 1)


# ---- the CLI ------------------------------------------------------------------------------------


@pytest.fixture
def env(ks, monkeypatch):
    monkeypatch.setenv("PQSEAL_KEYSTORE", ks.path)
    monkeypatch.setenv("PQSEAL_KEYSTORE_PASSPHRASE", PASS.decode())
    return ks


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def test_cli_encrypt_decrypt_recorded_without_key_bytes(env, tmp_path):
    pq.write_table(pa.table({"a": list(range(100)), "s": ["x"] * 100}), tmp_path / "p.parquet")
    r = run("encrypt", "--kms", "keystore", "--footer-key", "footer", tmp_path / "p.parquet", tmp_path / "e.parquet")
    assert r.exit_code == 0, r.output
    r = run("decrypt", "--kms", "keystore", tmp_path / "e.parquet", tmp_path / "d.parquet")
    assert r.exit_code == 0, r.output
    r = run("decrypt", "--kms", "keystore", tmp_path / "e.parquet", tmp_path / "d.parquet")   # exists: refused
    assert r.exit_code == 1
    ops = [(x["op"], x["file"], x["outcome"]) for x in records(log_of(env)) if x["op"] in ("seal", "unseal")]
    assert ops == [("seal", str(tmp_path / "e.parquet"), "ok"), ("unseal", str(tmp_path / "e.parquet"), "ok"),
                   ("unseal", str(tmp_path / "e.parquet"), "OutputExists")]
    assert {x["op"] for x in records(log_of(env))} >= {"create", "wrap", "unwrap", "seal", "unseal"}

    # no key bytes: neither the master key, nor the audit key, nor any wrapped key in the file
    text = open(log_of(env), encoding="ascii").read()
    doc = json.load(open(env.path))
    secrets = [env.audit_key(), env._kek]
    for v in doc["keys"]["footer"]["versions"]:
        secrets.append(unwrap_key_locally(v["sealed"], env._kek, f"footer:{v['version']}".encode()))
    for s in secrets:
        for form in (s.hex(), s.hex().upper(), base64.b64encode(s).decode(), base64.urlsafe_b64encode(s).decode()):
            assert form not in text
    for sealed in [v["sealed"] for v in doc["keys"]["footer"]["versions"]]:
        assert sealed not in text


def test_cli_rotate_file_recorded(env, tmp_path):
    pq.write_table(pa.table({"a": list(range(10))}), tmp_path / "p.parquet")
    r = run("encrypt", "--kms", "keystore", "--footer-key", "footer", tmp_path / "p.parquet", tmp_path / "e.parquet")
    assert r.exit_code == 0, r.output
    env.rotate("footer")
    r = run("rotate", "--kms", "keystore", tmp_path / "e.parquet")
    assert r.exit_code == 0, r.output
    ops = [(x["op"], x["file"], x["outcome"]) for x in records(log_of(env)) if x["op"] == "rotate-file"]
    assert ops == [("rotate-file", str(tmp_path / "e.parquet"), "ok")]
    assert audit.verify(log_of(env), env.audit_key()).ok


def test_cli_directory_job_recorded_per_file(env, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for i in range(3):
        pq.write_table(pa.table({"a": [i] * 10}), src / f"f{i}.parquet")
    r = run("encrypt", "--kms", "keystore", "--footer-key", "footer", src, tmp_path / "dst")
    assert r.exit_code == 0, r.output
    (tmp_path / "dst" / "f1.parquet").write_bytes(b"PAR1 not really PAR1")
    r = run("decrypt", "--kms", "keystore", tmp_path / "dst", tmp_path / "plain")
    assert r.exit_code == 1
    recs = records(log_of(env))
    seals = sorted((x["file"], x["outcome"]) for x in recs if x["op"] == "seal")
    assert seals == [(str(tmp_path / "dst" / f"f{i}.parquet"), "ok") for i in range(3)]
    unseals = sorted((x["file"], x["outcome"]) for x in recs if x["op"] == "unseal")
    assert [u[0] for u in unseals] == [str(tmp_path / "dst" / f"f{i}.parquet") for i in range(3)]
    assert unseals[1][1] not in ("ok", "") and unseals[0][1] == unseals[2][1] == "ok"
    assert audit.verify(log_of(env), env.audit_key()).ok


def test_cli_show_and_verify(env, tmp_path):
    env.wrap_key(b"k" * 16, "footer")
    LocalKeystore(env.path, PASS).create("other")
    r = run("audit", "show")
    assert r.exit_code == 0 and len(r.output.splitlines()) == 3 and "wrap" in r.output
    r = run("audit", "show", "--json", "--key", "other")
    assert r.exit_code == 0 and [json.loads(x)["op"] for x in r.output.splitlines()] == ["create"]
    r = run("audit", "show", "--since", "2999-01-01")
    assert r.exit_code == 0 and r.output == ""
    assert run("audit", "show", "--since", "yesterday").exit_code == 2
    r = run("audit", "verify")
    assert r.exit_code == 0 and "intact, 3 records" in r.output
    head = r.output.split()[-1]
    assert run("audit", "verify", "--expect-count", 3, "--expect-head", head).exit_code == 0

    # a tail cut is invisible to the chain alone, visible against the anchor
    lines = open(log_of(env), "rb").readlines()
    open(log_of(env), "wb").writelines(lines[:2])
    assert run("audit", "verify").exit_code == 0
    r = run("audit", "verify", "--expect-count", 3)
    assert r.exit_code == 1 and "expected at least 3" in r.output and len(r.output.splitlines()) == 1
    r = run("audit", "verify", "--expect-head", head)
    assert r.exit_code == 1 and "anchored head" in r.output

    r = run("audit", "verify", "--log", tmp_path / "missing.log")
    assert r.exit_code == 1 and r.output.startswith("pqseal: error:") and len(r.output.splitlines()) == 1


# ---- tampering ----------------------------------------------------------------------------------


@pytest.fixture
def six(ks):
    w = ks.wrap_key(b"k" * 16, "footer")
    for _ in range(4):
        ks.unwrap_key(w, "footer")
    path = log_of(ks)
    assert audit.verify(path, ks.audit_key()).count == 6
    return ks, path, open(path, "rb").read().splitlines(keepends=True)


def _tampered(six, lines):
    ks, path, _ = six
    with open(path, "wb") as f:
        f.writelines(lines)
    return audit.verify(path, ks.audit_key())


@pytest.mark.parametrize("field,value", [("op", "wrap"), ("key", "other"), ("version", 7), ("outcome", "ok2"),
                                         ("user", "mallory"), ("time", "2020-01-01T00:00:00+00:00"), ("pid", 1),
                                         ("file", "/x")])
def test_edited_field_detected(six, field, value):
    lines = list(six[2])
    rec = json.loads(lines[3])
    rec[field] = value
    lines[3] = (json.dumps(rec) + "\n").encode()
    v = _tampered(six, lines)
    assert (v.ok, v.bad_line, v.count) == (False, 4, 3) and "MAC mismatch" in v.error


def test_deleted_line_detected(six):
    v = _tampered(six, six[2][:2] + six[2][3:])
    assert (v.ok, v.bad_line) == (False, 3)


def test_deleted_first_line_detected(six):
    v = _tampered(six, six[2][1:])
    assert (v.ok, v.bad_line) == (False, 1)


def test_swapped_lines_detected(six):
    lines = list(six[2])
    lines[2], lines[3] = lines[3], lines[2]
    v = _tampered(six, lines)
    assert (v.ok, v.bad_line) == (False, 3)


def test_swapped_lines_with_renumbered_seq_detected(six):
    lines = [json.loads(x) for x in six[2]]
    lines[2], lines[3] = lines[3], lines[2]
    lines[2]["seq"], lines[3]["seq"] = 3, 4
    v = _tampered(six, [(json.dumps(x) + "\n").encode() for x in lines])
    assert (v.ok, v.bad_line) == (False, 3) and "MAC mismatch" in v.error


def test_forged_line_detected(six):
    """An inserted record, MACed under a key that is not the keystore's, with the seq
    numbers after it renumbered: the forged line itself fails."""
    lines = [json.loads(x) for x in six[2]]
    forged = dict(lines[1], op="destroy", outcome="ok")
    forged["mac"] = audit._mac(b"\0" * 32, lines[1]["mac"], forged)
    lines.insert(2, forged)
    for n, x in enumerate(lines, 1):
        x["seq"] = n
    v = _tampered(six, [(json.dumps(x) + "\n").encode() for x in lines])
    assert (v.ok, v.bad_line) == (False, 3)


def test_malformed_line_reported(six):
    lines = list(six[2])
    lines[4] = b"not json\n"
    v = _tampered(six, lines)
    assert (v.ok, v.bad_line, v.error) == (False, 5, "malformed record")


def test_overlong_line_is_malformed_not_loaded_whole(six, monkeypatch):
    monkeypatch.setattr(audit, "MAX_LINE", 1000)
    ks, path, lines = six
    v = _tampered(six, lines[:2] + [b"x" * 5000 + b"\n"] + lines[2:])
    assert (v.ok, v.bad_line, v.error) == (False, 3, "malformed record")
    assert [n for n, rec in audit.read(path) if rec is None] == [3]
    assert len(list(audit.read(path))) == 7
    with open(path, "ab") as f:
        f.write(b"y" * 5000 + b"\n")
    with pytest.raises(AuditLogError, match="malformed"):
        ks.wrap_key(b"k" * 16, "footer")


@pytest.mark.parametrize("field,value", [("mac", "\u00e9" * 64), ("mac", "\ud800"), ("mac", 5), ("seq", "3"),
                                         ("time", "\ud800"), ("time", "2020-01-01T00:00:00")])
def test_hostile_field_types_are_reported_not_crashing(six, field, value):
    lines = list(six[2])
    rec = json.loads(lines[2])
    rec[field] = value
    lines[2] = (json.dumps(rec) + "\n").encode()
    v = _tampered(six, lines)
    assert (v.ok, v.bad_line) == (False, 3)
    r = run("audit", "show", "--log", six[1], "--since", "2000-01-01")
    assert r.exit_code == 0 and len(r.output.splitlines()) == 6


def test_wrong_audit_key_fails(six, tmp_path, monkeypatch):
    monkeypatch.setenv(audit.ENV, "off")
    other = LocalKeystore.init(tmp_path / "other" / "ks.json", PASS)   # same passphrase, another store
    v = audit.verify(six[1], other.audit_key())
    assert (v.ok, v.bad_line) == (False, 1)
    monkeypatch.delenv(audit.ENV)
    r = CliRunner().invoke(cli, ["audit", "verify", "--keystore", other.path, "--log", six[1]],
                           env={"PQSEAL_KEYSTORE_PASSPHRASE": PASS.decode()})
    assert r.exit_code == 1 and "line 1: MAC mismatch" in r.output


# ---- concurrent writers -------------------------------------------------------------------------

WRITERS, PER_WRITER = 4, 60


def _writer(path: str, n: int, barrier) -> None:
    k = LocalKeystore(path, PASS)
    barrier.wait()
    w = k.wrap_key(b"k" * 16, "footer")
    for _ in range(n - 1):
        k.unwrap_key(w, "footer")


def test_concurrent_writers_form_one_chain(ks):
    ks.audit_key()   # made once, before the writers start
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(WRITERS)
    procs = [ctx.Process(target=_writer, args=(ks.path, PER_WRITER, barrier)) for _ in range(WRITERS)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    v = audit.verify(log_of(ks), ks.audit_key())
    assert v.ok, v
    recs = records(log_of(ks))
    assert v.count == len(recs) == 1 + WRITERS * PER_WRITER
    by_pid: dict = {}
    for r in recs[1:]:
        by_pid[r["pid"]] = by_pid.get(r["pid"], 0) + 1
    assert sorted(by_pid.values()) == [PER_WRITER] * WRITERS
    # the writers really interleaved (otherwise the lock was not exercised)
    pids = [r["pid"] for r in recs[1:]]
    assert sum(a != b for a, b in zip(pids, pids[1:])) > WRITERS


def test_concurrent_threads_one_keystore(ks):
    import threading

    w = ks.wrap_key(b"k" * 16, "footer")
    errors: list = []

    def unwraps():
        try:
            for _ in range(30):
                ks.unwrap_key(w, "footer")
        except BaseException as exc:  # reported by the assertion below
            errors.append(exc)
    threads = [threading.Thread(target=unwraps) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    v = audit.verify(log_of(ks), ks.audit_key())
    assert v.ok and v.count == 2 + 4 * 30
