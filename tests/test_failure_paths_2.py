"""Failure paths of today's features, tried the way a user gets them wrong: damaged
side files of the keystore, odd arguments, non-interactive shells. Each test here
failed on the code before its fix."""

from __future__ import annotations

import json
import os

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

import pqseal
from pqseal.cli import main as cli
from pqseal.config import EncryptionConfig
from pqseal.kms.keystore import TEST_KDF_ENV, LocalKeystore
from pqseal.kms.keyusage import usage_path
from pqseal.kms.limits import Limits

PASS = b"failure paths"
TEST_N = 1 << 14


@pytest.fixture(autouse=True)
def environment(monkeypatch, fresh_key_caches):
    monkeypatch.setenv("PQSEAL_AUDIT_LOG", "off")


@pytest.fixture
def ks(make_keystore):
    return make_keystore(PASS, "f", "c")


@pytest.fixture
def env(ks):
    return {"PQSEAL_KEYSTORE": ks.path, "PQSEAL_KEYSTORE_PASSPHRASE": PASS.decode(), TEST_KDF_ENV: str(TEST_N),
            "PQSEAL_AUDIT_LOG": "off"}


@pytest.fixture
def plain(tmp_path):
    p = tmp_path / "plain.parquet"
    pq.write_table(pa.table({"a": list(range(1000)), "b": [str(i % 7) for i in range(1000)]}), p)
    return p


MASTER = {"kf": bytes(range(16))}


def sealed_partition(tmp_path, files: int, internal: bool = True):
    """``tmp_path/t/k=a`` holding ``files`` sealed files of 100 ids each (key-list key
    ``kf``, uniform); returns the tree's root."""
    from pqseal.kms import KeyListKms

    root = tmp_path / "t"
    (root / "k=a").mkdir(parents=True)
    for i in range(files):
        plain = tmp_path / f"p{i}.parquet"
        pq.write_table(pa.table({"id": list(range(100 * i, 100 * i + 100))}), plain)
        pqseal.encrypt_file(plain, root / "k=a" / f"part-{i}.parquet",
                            EncryptionConfig("kf", uniform_encryption=True, internal_key_material=internal),
                            kms=KeyListKms(MASTER))
    return root


@pytest.mark.parametrize("bad", ["abc", 1e300, [1], True, -5, {"n": 1}])
def test_a_damaged_entry_of_the_usage_file_is_dropped_not_a_crash(tmp_path, ks, env, plain, bad):
    """``keystore.json.usage`` is JSON anyone can edit: a count of the wrong type (valid
    JSON) used to crash ``keys status`` (a traceback) and the counts' flush at exit. The
    damaged version's counts start afresh; the other entries are kept."""
    with open(usage_path(ks.path), "w") as f:
        json.dump({"f": {"1": {"wraps": bad, "first_use": 5}}, "c": {"1": {"wraps": 3, "deks": 4}}}, f)
    res = CliRunner().invoke(cli, ["keys", "status", "--json"], env=env)
    assert res.exit_code == 0, res.output
    by = {r["id"]: r for r in json.loads(res.output)}
    assert (by["f"]["wraps"], by["c"]["wraps"], by["c"]["deks"]) == (0, 3, 4)
    pqseal.encrypt_file(plain, tmp_path / "s.parquet", EncryptionConfig("f", uniform_encryption=True), kms=ks)
    ks.list()                                   # flushes this process's counts
    with open(usage_path(ks.path)) as f:
        doc = json.load(f)
    assert doc["f"]["1"]["wraps"] == 1 and doc["c"]["1"]["wraps"] == 3


@pytest.mark.parametrize("args", [["destroy", "k", "--yes"], ["disable", "k", "--version", "1"], ["create", "n"],
                                  ["rotate", "k"]])
def test_an_unwritable_audit_log_fails_a_key_operation_before_it_happens(tmp_path, ks, env, args):
    """With an audit log that cannot be opened, ``keys destroy`` used to erase the key and
    then report an error: an irreversible operation reported as failed, and unrecorded."""
    ks.create("k")
    before = {(r["id"], r["version"]): r["state"] for r in ks.list()}
    res = CliRunner().invoke(cli, ["keys", *args], env={**env, "PQSEAL_AUDIT_LOG": str(tmp_path / "no" / "a.log")})
    assert res.exit_code == 1 and "AuditLogError" in res.output
    again = LocalKeystore(ks.path, PASS)
    assert {(r["id"], r["version"]): r["state"] for r in again.list()} == before


def test_keys_policy_bits_without_auto_create_is_refused_not_ignored(ks, env):
    """``keys policy --bits 128`` alone printed the unchanged policy (256 bits) and exited 0."""
    r = CliRunner()
    assert r.invoke(cli, ["keys", "policy", "--auto-create", "tenant-*"], env=env).exit_code == 0
    res = r.invoke(cli, ["keys", "policy", "--bits", "128"], env=env)
    assert res.exit_code == 2 and "--bits" in res.output
    assert r.invoke(cli, ["keys", "policy", "--clear", "--bits", "192"], env=env).exit_code == 2
    assert LocalKeystore(ks.path, PASS).creation_policy().bits == 256
    res = r.invoke(cli, ["keys", "policy", "--auto-create", "tenant-*", "--bits", "128"], env=env)
    assert res.exit_code == 0 and LocalKeystore(ks.path, PASS).creation_policy().bits == 128


def test_keys_policy_warns_of_a_pattern_matching_every_id_and_an_unknown_user(ks, env):
    """``--auto-create '*'`` makes every mistyped master key id a new key; it was set
    without a word, as was a user name this host does not know."""
    res = CliRunner().invoke(cli, ["keys", "policy", "--auto-create", "*", "--users", "no-such-user-xq7"], env=env)
    assert res.exit_code == 0
    assert "warning: pattern '*' matches every master key id" in res.output
    assert "warning: user 'no-such-user-xq7' is not known on this host" in res.output
    res = CliRunner().invoke(cli, ["keys", "policy", "--auto-create", "tenant-*"], env=env)
    assert res.exit_code == 0 and "warning" not in res.output


def test_compact_into_a_new_tree_refuses_a_source_with_an_interrupted_in_place_commit(tmp_path, monkeypatch):
    """An in-place compaction killed after its commit point leaves the merged file beside
    some of its inputs until the next in-place run finishes it. ``compact SRC DST`` does
    not recover SRC, and used to merge both into DST: every such row twice."""
    from pqseal import dataset
    from pqseal.dataset import compact_merge
    from pqseal.errors import PqsealError
    from pqseal.kms import KeyListKms

    master, root = MASTER, sealed_partition(tmp_path, 3)
    with monkeypatch.context() as m:     # killed right after the manifest (the commit point)
        m.setattr(compact_merge, "_finish", lambda *a: "")
        r = dataset.compact(root, kms=KeyListKms(master))
    final = root / r.ok[0].path
    os.replace(final.parent / f".{final.name}.pqseal-compact", final)     # step 3 done, inputs not yet removed
    with pytest.raises(PqsealError, match="interrupted in-place merge"):
        dataset.compact(root, tmp_path / "out", kms=KeyListKms(master))
    assert not (tmp_path / "out").exists()
    with pytest.warns(UserWarning, match="merge committed"):
        dataset.compact(root, kms=KeyListKms(master))         # the in-place run finishes it
    r = dataset.compact(root, tmp_path / "out", kms=KeyListKms(master))
    ids = sorted(i for f in (tmp_path / "out" / "k=a").glob("*.parquet")
                 for i in pqseal.read_table(str(f), kms=KeyListKms(master))["id"].to_pylist())
    assert ids == list(range(300))


def test_compact_with_dst_equal_to_src_names_the_way_to_compact_in_place(tmp_path, env):
    """``pqseal compact SRC SRC`` answered "pass --in-place", an option compact does not
    have (in place is: no destination)."""
    (tmp_path / "t").mkdir()
    pq.write_table(pa.table({"a": [1]}), tmp_path / "t" / "x.parquet")
    res = CliRunner().invoke(cli, ["compact", str(tmp_path / "t"), str(tmp_path / "t" / ".")], env=env)
    assert res.exit_code != 0 and "--in-place" not in res.output
    assert "give no destination" in res.output and "Traceback" not in res.output


def test_compact_with_keys_that_open_no_file_fails(tmp_path, ks, env, plain):
    """A wrong keystore passphrase (or key list, or an unreachable KMS) made every file
    "left as it was" and ``pqseal compact`` exit 0: a compaction that can never happen
    looked like one with nothing to do."""
    root = tmp_path / "t" / "k=a"
    root.mkdir(parents=True)
    for i in range(3):
        pqseal.encrypt_file(plain, root / f"p{i}.parquet", EncryptionConfig("f", uniform_encryption=True), kms=ks)
    before = sorted(p.name for p in root.iterdir())
    res = CliRunner().invoke(cli, ["compact", str(tmp_path / "t")], env={**env, "PQSEAL_KEYSTORE_PASSPHRASE": "wrong"})
    assert res.exit_code == 1, res.output
    assert "none of the 3 files" in res.output and "wrong passphrase" in res.output
    assert sorted(p.name for p in root.iterdir()) == before
    res = CliRunner().invoke(cli, ["compact", str(tmp_path / "t")], env=env)
    assert res.exit_code == 0 and "1 merged files from 3 inputs" in res.output, res.output


def test_compact_refuses_an_unknown_summaries_policy(tmp_path):
    """``dataset.compact(..., summaries="copy")`` ran, the option silently ignored (the
    other dataset operations refuse it)."""
    from pqseal import dataset

    (tmp_path / "t").mkdir()
    with pytest.raises(ValueError, match="summaries must be one of auto, drop"):
        dataset.compact(tmp_path / "t", summaries="copy")


def test_compact_in_place_refuses_force(tmp_path, env):
    """``pqseal compact SRC --force`` (no DST_DIR) ran with --force silently ignored."""
    (tmp_path / "t").mkdir()
    pq.write_table(pa.table({"a": [1]}), tmp_path / "t" / "x.parquet")
    res = CliRunner().invoke(cli, ["compact", str(tmp_path / "t"), "--force"], env=env)
    assert res.exit_code == 1 and "--force" in res.output and "Traceback" not in res.output
    assert sorted(os.listdir(tmp_path / "t")) == ["x.parquet"]


def test_an_unreadable_usage_file_fails_neither_a_seal_nor_keys_status(tmp_path, ks, env, plain):
    """``keystore.json.usage`` that cannot be read (here: a directory) failed every seal
    with a master key under a usage limit (KmsError: IsADirectoryError), even in warn
    mode, and ``keys status``; the module promises that counting never fails a wrap or a
    listing. Now the counts start from zero with a warning."""
    ks.set_limits("f", Limits(max_wraps=1000, mode="warn"))
    os.mkdir(usage_path(ks.path))
    with pytest.warns(UserWarning, match="unreadable"):
        pqseal.encrypt_file(plain, tmp_path / "s.parquet", EncryptionConfig("f", uniform_encryption=True), kms=ks)
    res = CliRunner().invoke(cli, ["keys", "status", "--json"], env=env)
    assert res.exit_code == 0, res.output
    assert "warning: key usage counts" in res.output and "unreadable" in res.output


def test_an_audit_log_ending_with_a_malformed_record_fails_destroy_before_it_happens(tmp_path, ks, env):
    """An audit log whose last line is malformed refuses appends; ``keys destroy`` erased
    the key first and then reported AuditLogError."""
    ks.create("k")
    log = tmp_path / "audit.log"
    CliRunner().invoke(cli, ["keys", "rotate", "k"], env={**env, "PQSEAL_AUDIT_LOG": str(log)})
    with open(log, "ab") as f:
        f.write(b'{"seq": 9, "trunc')
    res = CliRunner().invoke(cli, ["keys", "destroy", "k", "--yes"], env={**env, "PQSEAL_AUDIT_LOG": str(log)})
    assert res.exit_code == 1 and "malformed record" in res.output
    assert [r["state"] for r in LocalKeystore(ks.path, PASS).list() if r["id"] == "k"] == ["decrypt-only", "active"]


def test_a_manifest_that_cannot_be_written_leaves_no_staging_file(tmp_path, monkeypatch):
    """An in-place merge whose manifest (its commit point) cannot be written (a full
    disk) failed with its hidden staging file left beside the inputs."""
    from pqseal import dataset
    from pqseal.dataset import compact_merge
    from pqseal.kms import KeyListKms

    master, root = MASTER, sealed_partition(tmp_path, 3, internal=False)
    before = sorted(os.listdir(root / "k=a"))

    def full(*a, **k):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(compact_merge, "atomic_write", full)
    r = dataset.compact(root, kms=KeyListKms(master))
    assert len(r.failed) == 1 and "No space left" in r.failed[0].error
    assert sorted(os.listdir(root / "k=a")) == before


def test_compact_with_new_keys_never_writes_an_encrypted_column_as_plaintext(tmp_path):
    """New master keys that name fewer columns than the inputs encrypt (``--footer-key kf
    --column-keys 'kc:id'`` over files whose column s is encrypted) made the merged files
    hold s as plaintext: decrypted and written to disk without being asked."""
    from pqseal import dataset
    from pqseal.kms import KeyListKms

    master = {"kf": bytes(range(16)), "kc": bytes(range(16, 32))}
    root = tmp_path / "t"
    (root / "k=a").mkdir(parents=True)
    for i in range(2):
        plain = tmp_path / f"p{i}.parquet"
        pq.write_table(pa.table({"id": [i], "s": ["secret-value"]}), plain)
        pqseal.encrypt_file(plain, root / "k=a" / f"part-{i}.parquet",
                            EncryptionConfig("kf", column_keys={"kc": ["s"]}), kms=KeyListKms(master))
    r = dataset.compact(root, tmp_path / "out", EncryptionConfig("kf", column_keys={"kc": ["id"]}),
                        kms=KeyListKms(master))
    assert len(r.failed) == 1 and "WouldExposeColumn" in r.failed[0].error and not r.ok
    for d, _, files in os.walk(tmp_path / "out"):
        for n in files:
            with open(os.path.join(d, n), "rb") as f:
                assert b"secret-value" not in f.read(), n
    r = dataset.compact(root, tmp_path / "out2", EncryptionConfig("kf", column_keys={"kc": ["id", "s"]}),
                        kms=KeyListKms(master))
    assert len(r.ok) == 1 and not r.failed


def test_compact_starting_over_with_force_does_not_keep_the_replaced_outputs(tmp_path):
    """A second ``compact SRC DST`` with another --target-size is refused (the journal is
    of other options) and says "pass --force to start over, replacing its outputs". With
    --force the earlier merged files stayed beside the new ones (their names depend on
    the grouping): every row twice in DST."""
    from pqseal import dataset
    from pqseal.kms import KeyListKms

    master, root = MASTER, sealed_partition(tmp_path, 4, internal=False)
    small = os.path.getsize(root / "k=a" / "part-0.parquet") * 2 + 100
    out = tmp_path / "out"
    assert len(dataset.compact(root, out, kms=KeyListKms(master), target_size=small).ok) == 2
    r = dataset.compact(root, out, kms=KeyListKms(master), target_size=1 << 30, overwrite=True)
    assert len(r.ok) == 1
    names = sorted(n for n in os.listdir(out / "k=a"))
    assert names == [f"_KEY_MATERIAL_FOR_{r.ok[0].path.split('/')[-1]}.json", r.ok[0].path.split("/")[-1]]
    ids = pqseal.read_table(str(out / r.ok[0].path), kms=KeyListKms(master))["id"].to_pylist()
    assert sorted(ids) == list(range(400))


def test_rekey_with_fewer_column_keys_never_writes_an_encrypted_column_as_plaintext(tmp_path, ks, env, plain):
    """`pqseal rekey` promises that plaintext never reaches the disk: new keys that leave
    out a column encrypted in the input are refused (before, that column came out in the
    clear), by the API and by the CLI, and nothing is written."""
    from pqseal.format.engine import WouldExposeColumn

    sealed, out = tmp_path / "sealed.parquet", tmp_path / "rekeyed.parquet"
    pqseal.encrypt_file(plain, sealed, EncryptionConfig("f", column_keys={"c": ["a", "b"]}), kms=ks)
    with pytest.raises(WouldExposeColumn, match="b"):
        pqseal.rekey_file(sealed, out, None, EncryptionConfig("f", column_keys={"c": ["a"]}), kms=ks)
    assert not out.exists() and not [n for n in os.listdir(tmp_path) if n.startswith(".")]   # no temp file
    res = CliRunner().invoke(cli, ["rekey", str(sealed), str(out), "--footer-key", "f", "--column-keys", "c:a"],
                             env=env)
    assert res.exit_code != 0 and "WouldExposeColumn" in res.output and "Traceback" not in res.output
    assert not out.exists()
    # a key for every encrypted column (or a uniform key) is a re-key as before
    import pyarrow.parquet.encryption as pe

    pqseal.rekey_file(sealed, out, None, EncryptionConfig("f", uniform_encryption=True), kms=ks)
    props = pqseal.arrow.crypto_factory(lambda cfg: ks).file_decryption_properties(
        pe.KmsConnectionConfig(), pe.DecryptionConfiguration())
    assert pq.read_table(out, decryption_properties=props).equals(pq.read_table(plain))
    with pytest.raises(OSError):     # pyarrow: column b is encrypted in the output too
        pq.read_table(out)


@pytest.mark.parametrize("args", [["--max-bytes", "1" + "0" * 400 + "PB"], ["--max-bytes", "10000000000000000000TB"],
                                  ["--max-wraps", str(1 << 64)], ["--max-age", "9999999999999999y"]])
def test_keys_limits_beyond_2_53_are_refused_in_one_line(ks, env, args):
    """A limit past 2^53 was stored (JSON readers round it) and a size too large for a
    float ended in a traceback (OverflowError); both are a usage error now, and nothing
    is stored."""
    res = CliRunner().invoke(cli, ["keys", "limits", "f", *args], env=env)
    assert res.exit_code == 2 and "beyond the largest limit" in res.output and "Traceback" not in res.output
    assert LocalKeystore(ks.path, PASS).limits("f") == Limits()
