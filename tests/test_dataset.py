"""pqseal.dataset: whole trees on threads and processes, checked with pyarrow's own
readers (``pyarrow.dataset`` over the decrypted tree, pyarrow's PME reader over each
sealed file): round trips of a hive-partitioned tree, the non-data file policy,
resuming (a rerun skips finished files, redoes damaged ones; the driver killed with
SIGKILL), per-file failures in the JSON report, files that cannot be decrypted kept
intact, retry_failed, existing outputs, and the KMS path through the driver's key
session (KMS calls counted: independent of the number of files and workers)."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import signal
import subprocess
import sys
import time

import psutil
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pyarrow.parquet.encryption as pe
import pytest

import pqseal
from pqseal import dataset
from pqseal._io import is_temp_name
from pqseal.config import EncryptionConfig
from pqseal.format import DecryptionProperties, EncryptionProperties
from pqseal.format.source import Source
from pqseal.kms import KeyListKms

from counting_kms import CountingKms

K = bytes(range(16))
K2 = bytes(range(100, 116))
MASTER = {"kf": bytes(range(16)), "kc": bytes(range(16, 32))}
KEY_LIST = ", ".join(f"{k}: {base64.b64encode(v).decode()}" for k, v in MASTER.items())
YEARS, MONTHS = (2023, 2024), (1, 2, 3)
ROWS = 2_000


def part(year: int, month: int) -> pa.Table:
    n = ROWS + year + month
    return pa.table({"id": pa.array(range(n), pa.int64()), "s": [f"{year}-{month}-{i % 7}" for i in range(n)],
                     "v": pa.array([float(i) / 3 for i in range(n)])})


def make_tree(root, *, summaries: bool = True):
    """A hive-partitioned tree (year=/month=) with _SUCCESS and summaries."""
    for y in YEARS:
        for m in MONTHS:
            d = root / f"year={y}" / f"month={m}"
            d.mkdir(parents=True)
            pq.write_table(part(y, m), d / "part-0.parquet", row_group_size=700)
    (root / "_SUCCESS").write_bytes(b"")
    if summaries:
        pq.write_metadata(part(2023, 1).schema, root / "_common_metadata")
    return root


def data_files(root) -> list[str]:
    """pyarrow.dataset's own discovery (a schema given: no file is opened, sealed ones neither)."""
    files = ds.dataset(root, format="parquet", schema=part(2023, 1).schema).files
    return sorted(os.path.relpath(f, root) for f in files)


def sha(path) -> str:
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def all_files(root) -> list[str]:
    return sorted(os.path.relpath(os.path.join(d, f), root) for d, _, fs in os.walk(root) for f in fs)


def expected_table() -> pa.Table:
    return pa.concat_tables([part(y, m) for y in YEARS for m in MONTHS])


def read_hive(root) -> pa.Table:
    """The plaintext tree through pyarrow.dataset (hive partitions), in a fixed order."""
    t = ds.dataset(root, format="parquet", partitioning="hive").to_table()
    return t.sort_by([("year", "ascending"), ("month", "ascending"), ("id", "ascending")])


def pyarrow_reads_sealed(root, key=K) -> None:
    """pyarrow's own PME reader opens every sealed data file with the footer key."""
    for rel in data_files(root):
        with Source(os.path.join(root, rel)) as s:
            assert s.crypto is not None, rel
        t = pq.read_table(os.path.join(root, rel), decryption_properties=pe.create_decryption_properties(key))
        y, m = (int(x.split("=")[1]) for x in rel.split(os.sep)[:2])
        assert t.equals(part(y, m)), rel


def no_temps(root) -> bool:
    return not [f for _, _, fs in os.walk(root) for f in fs if is_temp_name(f) or ".pqseal-" in f and
                f.endswith((".tmp", ".json")) and f.startswith(("_TMP", "."))]


@pytest.fixture
def tree(tmp_path):
    return make_tree(tmp_path / "src")


# ---- round trips -----------------------------------------------------------------------------


@pytest.mark.parametrize("executor", ["threads", "processes"])
def test_hive_tree_round_trip(tree, tmp_path, executor):
    sealed, plain = tmp_path / "sealed", tmp_path / "plain"
    with pytest.warns(UserWarning, match="_common_metadata dropped"):
        r = dataset.encrypt(tree, sealed, EncryptionProperties(K), executor=executor, workers=2)
    assert r.ok == 6 and len(r.ok) == 6 and r.failed == 0 and r.skipped == 0 and not r.failed
    assert r.bytes == sum(os.path.getsize(tree / f) for f in data_files(tree))
    assert r.executor == executor and r.workers == 2
    assert data_files(sealed) == data_files(tree)
    assert (sealed / "_SUCCESS").exists() and not (sealed / "_common_metadata").exists()
    pyarrow_reads_sealed(sealed)

    r = dataset.decrypt(sealed, plain, DecryptionProperties(K), executor=executor, workers=2)
    assert r.ok == 6 and r.failed == 0
    assert data_files(plain) == data_files(tree) and (plain / "_SUCCESS").exists()
    assert read_hive(plain).equals(read_hive(tree))
    assert no_temps(sealed) and no_temps(plain)

    v = dataset.verify(sealed, DecryptionProperties(K), executor=executor, workers=2)
    assert v.ok == 6 and all(x.detail["ok"] for x in v.ok)
    i = dataset.inspect(sealed, executor=executor)
    assert i.ok == 6 and all(x.detail["encrypted"] and not x.detail["footer_readable"] for x in i.ok)
    doc = r.to_json()
    # ignored: the sealed tree's _SUCCESS; the encrypt job's journal (.pqseal-job/) is
    # pqseal's own and passes without a notice
    assert (sealed / ".pqseal-job").is_dir()
    assert doc["counts"] == {"ok": 6, "failed": 0, "skipped": 0, "ignored": 1} and doc["executor"] == executor
    assert [p for p, _ in r.ignored] == ["_SUCCESS"]
    assert doc["kms_calls"] == 0 and doc["bytes"] == r.bytes and doc["seconds"] >= 0


def test_summary_regenerated_on_decrypt(tree, tmp_path):
    """A sealed tree carrying a summary gets one rebuilt from the decrypted files, which
    pyarrow reads as the dataset's _metadata."""
    sealed, plain = tmp_path / "sealed", tmp_path / "plain"
    with pytest.warns(UserWarning):
        dataset.encrypt(tree, sealed, EncryptionProperties(K))
    pq.write_metadata(part(2023, 1).schema, sealed / "_metadata")     # as another tool would leave it
    pq.write_metadata(part(2023, 1).schema, sealed / "_common_metadata")
    r = dataset.decrypt(sealed, plain, DecryptionProperties(K))
    assert r.ok == 6 and not r.warnings
    md = pq.read_metadata(plain / "_metadata")
    assert md.num_rows == expected_table().num_rows and md.num_row_groups == sum(
        pq.read_metadata(plain / f).num_row_groups for f in data_files(plain))
    assert sorted({md.row_group(i).column(0).file_path for i in range(md.num_row_groups)}) == data_files(plain)
    t = ds.parquet_dataset(plain / "_metadata", partitioning="hive").to_table()
    assert t.sort_by([("year", "ascending"), ("month", "ascending"), ("id", "ascending")]).equals(read_hive(plain))
    assert pq.read_schema(plain / "_common_metadata").equals(part(2023, 1).schema)


def test_report_counts_compare_as_ints():
    files = dataset.Files([dataset.FileResult("a", 1), dataset.FileResult("b", 2)])
    assert files == 2 and files != 3 and len(files) == 2 and files == list(files) and files != 2.0


# ---- resuming ----------------------------------------------------------------------------------


def test_rerun_skips_done_files_and_redoes_damaged_ones(tree, tmp_path):
    sealed = tmp_path / "sealed"
    with pytest.warns(UserWarning):
        assert dataset.encrypt(tree, sealed, EncryptionProperties(K)).ok == 6
    hashes = {f: sha(sealed / f) for f in data_files(sealed)}
    with pytest.warns(UserWarning):
        r = dataset.encrypt(tree, sealed, EncryptionProperties(K))
    assert r.ok == 0 and r.skipped == 6 and {x.reason for x in r.skipped} == {"done in an earlier run"}
    assert {f: sha(sealed / f) for f in hashes} == hashes           # nothing was rewritten

    gone, cut = "year=2023/month=2/part-0.parquet", "year=2024/month=3/part-0.parquet"
    os.unlink(sealed / gone)
    with open(sealed / cut, "r+b") as f:                            # same inode, damaged in place
        f.truncate(os.path.getsize(sealed / cut) - 100)
    with pytest.warns(UserWarning):
        r = dataset.encrypt(tree, sealed, EncryptionProperties(K))
    assert sorted(x.path for x in r.ok) == sorted([gone, cut]) and r.skipped == 4
    assert any("output missing" in w for w in r.warnings) and any("output changed" in w for w in r.warnings)
    pyarrow_reads_sealed(sealed)

    # a source changed since: that file is done again
    y = tree / "year=2024/month=1/part-0.parquet"
    pq.write_table(part(2024, 1), y, row_group_size=300)
    with pytest.warns(UserWarning):
        r = dataset.encrypt(tree, sealed, EncryptionProperties(K))
    assert [x.path for x in r.ok] == ["year=2024/month=1/part-0.parquet"] and r.skipped == 5


def test_a_decrypted_file_replaced_by_a_sealed_one_is_redone(tree, tmp_path):
    """The footer check: a finished plaintext output that is no longer plaintext (but
    kept its size, mtime and inode) is redone; a sealed output must be sealed."""
    sealed, plain = tmp_path / "sealed", tmp_path / "plain"
    with pytest.warns(UserWarning):
        dataset.encrypt(tree, sealed, EncryptionProperties(K))
    dataset.decrypt(sealed, plain, DecryptionProperties(K))
    f = plain / "year=2023/month=1/part-0.parquet"
    st = os.stat(f)
    data = bytearray(f.read_bytes())
    data[-4:] = b"PARE"                       # no longer plaintext Parquet
    with open(f, "r+b") as out:
        out.write(data)
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))
    with pytest.warns(UserWarning, match="done again .output footer not as expected"):
        r = dataset.decrypt(sealed, plain, DecryptionProperties(K))
    assert [x.path for x in r.ok] == ["year=2023/month=1/part-0.parquet"] and r.skipped == 5
    assert read_hive(plain).equals(read_hive(tree))


def test_a_journal_of_another_job_is_refused(tree, tmp_path):
    sealed = tmp_path / "sealed"
    with pytest.warns(UserWarning):
        dataset.encrypt(tree, sealed, EncryptionProperties(K))
    with pytest.raises(dataset.JournalMismatch, match="another kind of job"):
        dataset.decrypt(tree, sealed, DecryptionProperties(K))
    with pytest.raises(dataset.JournalMismatch, match="other keys"):
        dataset.encrypt(tree, sealed, EncryptionProperties(K2))      # same options, another key
    with pytest.warns(UserWarning):
        r = dataset.encrypt(tree, sealed, EncryptionProperties(K2), overwrite=True)   # start over
    assert r.ok == 6
    pyarrow_reads_sealed(sealed, K2)


KILL = """
import sys
from pqseal import dataset
from pqseal.format import EncryptionProperties
dataset.encrypt(sys.argv[1], sys.argv[2], EncryptionProperties(bytes(range(16))), executor=sys.argv[3], workers=1)
"""


def journal_records(root) -> list[dict]:
    out = []
    for line in open(root / ".pqseal-job" / "journal.jsonl", "rb").read().split(b"\n"):
        try:
            out.append(json.loads(line))
        except ValueError:
            pass
    return out


@pytest.mark.parametrize("executor", ["threads", "processes"])
def test_driver_killed_mid_job_then_rerun_completes_without_duplicate_work(tmp_path, executor):
    src, sealed = tmp_path / "src", tmp_path / "sealed"
    src.mkdir()
    big = pa.table({"id": pa.array(range(150_000), pa.int64()), "v": pa.array([i * 0.5 for i in range(150_000)])})
    n = 24
    for i in range(n):
        d = src / f"k={i % 4}"
        d.mkdir(exist_ok=True)
        pq.write_table(big, d / f"f{i:02d}.parquet", row_group_size=10_000, compression="none")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    p = subprocess.Popen([sys.executable, "-c", KILL, src, sealed, executor], env=env, stderr=subprocess.PIPE)
    journal = sealed / ".pqseal-job" / "journal.jsonl"
    end = time.monotonic() + 120
    while time.monotonic() < end:
        if journal.exists() and sum(r.get("t") == "done" for r in journal_records(sealed)) >= 3:
            break
        assert p.poll() is None, p.stderr.read()
        time.sleep(0.01)
    helpers = psutil.Process(p.pid).children(recursive=True)   # pool workers, forkserver, resource tracker
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    # the driver's worker processes end with it (they held its keys, waiting for work for ever)
    _, alive = psutil.wait_procs(helpers, timeout=30)
    assert not alive, [" ".join(x.cmdline())[:120] for x in alive]
    state: dict[str, str] = {}
    for rec in journal_records(sealed):
        if "f" in rec:
            state[rec["f"]] = rec["t"]
    done = {f for f, t in state.items() if t == "done"}
    assert 3 <= len(done) < n, state

    r = dataset.encrypt(src, sealed, EncryptionProperties(K), executor=executor, workers=2)
    assert r.failed == 0, [x.error for x in r.failed]
    assert {x.path for x in r.skipped} == done                     # finished files are not done again
    assert {x.path for x in r.ok} == set(data_files(src)) - done   # the others exactly once
    assert data_files(sealed) == data_files(src) and no_temps(sealed)
    for rel in data_files(sealed):
        t = pq.read_table(sealed / rel, decryption_properties=pe.create_decryption_properties(K))
        assert t.equals(big), rel
    assert dataset.verify(sealed, DecryptionProperties(K)).ok == n


# ---- failures ----------------------------------------------------------------------------------


def test_a_bad_file_fails_alone_and_is_in_the_json_report(tree, tmp_path):
    (tree / "year=2023" / "notes.txt").write_text("not parquet")
    sealed, report = tmp_path / "sealed", tmp_path / "report.json"
    with pytest.warns(UserWarning):
        r = dataset.encrypt(tree, sealed, EncryptionProperties(K), executor="processes", workers=2, report=report)
    assert r.ok == 6 and r.failed == 1
    assert r.failed[0].path == "year=2023/notes.txt" and "MalformedFile" in r.failed[0].error
    doc = json.loads(report.read_text())
    assert doc["counts"] == {"ok": 6, "failed": 1, "skipped": 0, "ignored": 2}
    assert doc["failed"][0]["path"] == "year=2023/notes.txt" and "MalformedFile" in doc["failed"][0]["error"]
    assert doc["bytes"] == r.bytes and len(doc["ok"]) == 6
    assert not (sealed / "year=2023" / "notes.txt").exists()
    pyarrow_reads_sealed(sealed)

    # a rerun skips the failed file; retry_failed tries it again
    with pytest.warns(UserWarning):
        r = dataset.encrypt(tree, sealed, EncryptionProperties(K))
    assert r.ok == 0 and r.failed == 0 and r.skipped == 7
    failed = [x for x in r.skipped if x.error]
    assert [x.path for x in failed] == ["year=2023/notes.txt"] and "MalformedFile" in failed[0].error
    pq.write_table(part(2023, 1), tree / "year=2023" / "notes.txt")   # fixed
    with pytest.warns(UserWarning):
        r = dataset.encrypt(tree, sealed, EncryptionProperties(K), retry_failed=True)
    assert [x.path for x in r.ok] == ["year=2023/notes.txt"] and r.skipped == 6 and r.failed == 0
    t = pq.read_table(sealed / "year=2023" / "notes.txt", decryption_properties=pe.create_decryption_properties(K))
    assert t.equals(part(2023, 1))


def test_undecryptable_files_stay_intact_and_are_listed(tree, tmp_path):
    sealed, plain = tmp_path / "sealed", tmp_path / "plain"
    with pytest.warns(UserWarning):
        dataset.encrypt(tree, sealed, EncryptionProperties(K))
    other = "year=2024/month=2/part-0.parquet"
    pqseal.encrypt_file(tree / other, sealed / other, EncryptionProperties(K2), overwrite=True)
    before = {f: sha(sealed / f) for f in data_files(sealed)}
    r = dataset.decrypt(sealed, plain, DecryptionProperties(K), executor="processes", workers=2)
    assert r.ok == 5 and [x.path for x in r.failed] == [other] and "InvalidTag" in r.failed[0].error
    assert {f: sha(sealed / f) for f in data_files(sealed)} == before      # sources untouched
    assert not (plain / other).exists() and no_temps(plain)
    assert len(data_files(plain)) == 5


def test_an_existing_destination_file_is_not_overwritten(tree, tmp_path):
    sealed = tmp_path / "sealed"
    mine = sealed / "year=2023" / "month=1" / "part-0.parquet"
    mine.parent.mkdir(parents=True)
    mine.write_bytes(b"the user's own file")
    with pytest.warns(UserWarning):
        r = dataset.encrypt(tree, sealed, EncryptionProperties(K))
    assert r.ok == 5 and [x.path for x in r.failed] == ["year=2023/month=1/part-0.parquet"]
    assert "OutputExists" in r.failed[0].error and mine.read_bytes() == b"the user's own file"
    with pytest.warns(UserWarning):
        r = dataset.encrypt(tree, sealed, EncryptionProperties(K))       # still refused on a rerun
    assert r.failed == 1 and r.skipped == 5 and mine.read_bytes() == b"the user's own file"
    with pytest.warns(UserWarning):
        r = dataset.encrypt(tree, sealed, EncryptionProperties(K), overwrite=True)
    assert r.ok == 1 and r.skipped == 5
    pyarrow_reads_sealed(sealed)


def test_bad_arguments(tree, tmp_path):
    with pytest.raises(NotADirectoryError):
        dataset.encrypt(tree / "_SUCCESS", tmp_path / "o", EncryptionProperties(K))
    with pytest.raises(ValueError, match="inside the input"):
        dataset.encrypt(tree, tree / "sub", EncryptionProperties(K))
    with pytest.raises(ValueError, match="executor"):
        dataset.encrypt(tree, tmp_path / "o", EncryptionProperties(K), executor="gpu")
    with pytest.raises(ValueError, match="security"):
        dataset.encrypt(tree, tmp_path / "o", EncryptionProperties(K), security=object())
    with pytest.raises(TypeError, match="unknown option"):
        dataset.encrypt(tree, tmp_path / "o", EncryptionProperties(K), worker=2)
    assert not (tmp_path / "o").exists()        # a refused job writes nothing
    with pytest.raises(ValueError, match="key_retriever"):
        dataset.decrypt(tree, tmp_path / "p", DecryptionProperties(key_retriever=lambda md, c: K),
                        executor="processes")


# ---- a key session (the KMS path) --------------------------------------------------------------




def pyarrow_kms_reads(path, table) -> None:
    """pyarrow's PME reader with its own CryptoFactory and a KMS written with
    `cryptography` (tests/pyarrow_kms.py), reading the key material pqseal wrote."""
    from pyarrow_kms import key_list_client

    factory = pe.CryptoFactory(key_list_client(MASTER))
    props = factory.file_decryption_properties(pe.KmsConnectionConfig(), pe.DecryptionConfiguration(),
                                               parquet_file_path=str(path))
    assert pq.read_table(path, decryption_properties=props).equals(table)


def material_of(root, rel):
    return root / os.path.dirname(rel) / f"_KEY_MATERIAL_FOR_{os.path.basename(rel)}.json"


def test_key_session_encrypt_decrypt_rotate(tree, tmp_path):
    """The driver's key session makes every KMS call: one wrap per master key to seal the
    tree on worker processes, one unwrap per distinct KEK to open it, and for rotation
    one unwrap per distinct KEK plus one wrap per master key, whatever the file count."""
    sealed, plain = tmp_path / "sealed", tmp_path / "plain"
    cfg = EncryptionConfig(footer_key="kf", column_keys={"kc": ["s"]}, internal_key_material=False)
    kms = CountingKms(KeyListKms(MASTER))
    with pytest.warns(UserWarning):
        r = dataset.encrypt(tree, sealed, cfg, kms=kms, executor="processes", workers=2)
    assert r.ok == 6 and (kms.wraps, kms.unwraps) == (2, 0) and r.kms_calls == 2 and kms.pids == {os.getpid()}
    for rel in data_files(sealed):
        assert material_of(sealed, rel).exists()
        y, m = (int(x.split("=")[1]) for x in rel.split(os.sep)[:2])
        pyarrow_kms_reads(sealed / rel, part(y, m))

    kms = CountingKms(KeyListKms(MASTER))
    with pytest.warns(UserWarning):
        r = dataset.encrypt(tree, sealed, cfg, kms=kms)     # nothing left to do: no KMS call
    assert r.skipped == 6 and r.ok == 0 and r.kms_calls == kms.wraps == 0

    # a finished file whose key material went missing is done again
    lost = material_of(sealed, "year=2024/month=2/part-0.parquet")
    os.unlink(lost)
    with pytest.warns(UserWarning):
        r = dataset.encrypt(tree, sealed, cfg, kms=CountingKms(KeyListKms(MASTER)))
    assert [x.path for x in r.ok] == ["year=2024/month=2/part-0.parquet"] and r.skipped == 5 and lost.exists()
    pyarrow_kms_reads(sealed / "year=2024" / "month=2" / "part-0.parquet", part(2024, 2))

    # a file whose keys the session cannot read fails without being attempted
    broken = "year=2023/month=3/part-0.parquet"
    os.unlink(material_of(sealed, broken))
    kms = CountingKms(KeyListKms(MASTER))
    r = dataset.decrypt(sealed, plain, kms=kms, executor="processes", workers=2)
    assert r.ok == 5 and [x.path for x in r.failed] == [broken] and "keys not readable" in r.failed[0].error
    # two jobs wrote the tree: two KEKs per master key, each unwrapped once
    assert kms.unwraps == r.kms_calls == 4 and kms.wraps == 0
    assert not (plain / broken).exists()
    assert read_hive(plain).num_rows == expected_table().num_rows - part(2023, 3).num_rows

    # rotation rewrites every material file in place; a file without material is listed
    internal = "year=2024/month=1/part-0.parquet"
    pqseal.encrypt_file(tree / internal, sealed / internal, EncryptionProperties(K), overwrite=True)
    os.unlink(material_of(sealed, internal))
    pq.write_table(part(2023, 3), tmp_path / "p.parquet")
    pqseal.encrypt_file(tmp_path / "p.parquet", sealed / broken, cfg, kms=KeyListKms(MASTER), overwrite=True)
    mats = {rel: material_of(sealed, rel) for rel in data_files(sealed) if rel != internal}
    before = {rel: m.read_bytes() for rel, m in mats.items()}
    data_before = {f: sha(sealed / f) for f in data_files(sealed)}
    kms = CountingKms(KeyListKms(MASTER))
    with pytest.warns(UserWarning, match="not rotat"):
        r = dataset.rotate(sealed, kms=kms, executor="processes", workers=2)
    assert r.ok == 5 and [x.path for x in r.skipped] == [internal]
    # 3 writes of the tree (2 KEKs each) unwrapped once each; one new KEK per master key
    assert (kms.unwraps, kms.wraps) == (6, 2) and r.kms_calls == 8 and kms.pids == {os.getpid()}
    assert all(mats[rel].read_bytes() != before[rel] for rel in mats)
    assert {f: sha(sealed / f) for f in data_files(sealed)} == data_before     # Parquet files untouched
    for rel in mats:
        y, m = (int(x.split("=")[1]) for x in rel.split(os.sep)[:2])
        pyarrow_kms_reads(sealed / rel, part(y, m))
    # a finished rotation leaves no journal: the next one is a new job; the encrypt
    # job's journal is untouched
    assert not (sealed / ".pqseal-job" / "rotate.jsonl").exists()
    assert (sealed / ".pqseal-job" / "journal.jsonl").exists()
    kms = CountingKms(KeyListKms(MASTER))
    with pytest.warns(UserWarning, match="not rotat"):
        r = dataset.rotate(sealed, kms=kms)
    # the first rotation left every file under its 2 KEKs
    assert r.ok == 5 and r.skipped == 1 and (kms.unwraps, kms.wraps) == (2, 2)


# ---- the journal, rekey, progress, the CLI -----------------------------------------------------


def test_a_torn_last_journal_line_is_ignored(tree, tmp_path):
    sealed = tmp_path / "sealed"
    with pytest.warns(UserWarning):
        dataset.encrypt(tree, sealed, EncryptionProperties(K))
    journal = sealed / ".pqseal-job" / "journal.jsonl"
    with open(journal, "ab") as f:
        f.write(b'{"t":"failed","f":"year=2023/month=1/part-0.parquet","err')     # cut by a crash
    with pytest.warns(UserWarning):
        r = dataset.encrypt(tree, sealed, EncryptionProperties(K))
    assert r.skipped == 6 and r.ok == 0 and r.failed == 0
    lines = journal.read_bytes().split(b"\n")
    assert lines[-1] == b"" and sum(1 for ln in lines if ln.startswith(b'{"t":"failed"')) == 1
    assert all(json.loads(ln) for ln in lines if ln and not ln.startswith(b'{"t":"failed"'))


def test_rekey_tree(tree, tmp_path):
    sealed, rekeyed = tmp_path / "sealed", tmp_path / "rekeyed"
    with pytest.warns(UserWarning):
        dataset.encrypt(tree, sealed, EncryptionProperties(K))
    r = dataset.rekey(sealed, rekeyed, DecryptionProperties(K), EncryptionProperties(K2, algorithm="AES_GCM_CTR_V1"),
                      executor="processes", workers=2)
    assert r.ok == 6 and r.failed == 0
    pyarrow_reads_sealed(rekeyed, K2)
    assert dataset.inspect(rekeyed, DecryptionProperties(K2)).ok[0].detail["algorithm"] == "AES_GCM_CTR_V1"
    with pytest.raises(TypeError, match="new keys"):
        dataset.rekey(sealed, tmp_path / "x", DecryptionProperties(K))


def test_progress_bar_when_forced(tree, tmp_path, capsys):
    with pytest.warns(UserWarning):
        dataset.encrypt(tree, tmp_path / "sealed", EncryptionProperties(K), progress=True)
    err = capsys.readouterr().err
    assert "encrypted" in err and "6/6 files" in err and "B/s" in err
    dataset.verify(tmp_path / "sealed", DecryptionProperties(K), progress=False)
    assert capsys.readouterr().err == ""


def cli(*args, env=None):
    e = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path), **(env or {}))
    return subprocess.run([sys.executable, "-m", "pqseal", *map(str, args)], env=e, capture_output=True, text=True,
                          timeout=300)


def test_cli_directory_job_report_and_retry_failed(tree, tmp_path):
    (tree / "year=2024" / "notes.txt").write_text("not parquet")
    sealed, report = tmp_path / "sealed", tmp_path / "r.json"
    key = base64.b64encode(K).decode()
    p = cli("encrypt", tree, sealed, "--footer-key-value", key, "--executor", "processes", "--workers", "2",
            "--report", report)
    assert p.returncode == 1 and "notes.txt" in p.stderr and "MalformedFile" in p.stderr
    assert p.stderr.strip().splitlines()[-1] == "pqseal: error: 1 of 7 files failed"
    assert "warning: _common_metadata dropped" in p.stderr
    doc = json.loads(report.read_text())
    assert doc["executor"] == "processes" and doc["workers"] == 2 and doc["counts"]["ok"] == 6
    assert doc["failed"][0]["path"] == "year=2024/notes.txt"
    pyarrow_reads_sealed(sealed)

    p = cli("encrypt", tree, sealed, "--footer-key-value", key)                 # resumed: nothing to do
    assert p.returncode == 0, p.stderr
    assert "skipped 6 data files (done in an earlier run)" in p.stderr and "skipped 1 data file (failed" in p.stderr
    pq.write_table(part(2024, 1), tree / "year=2024" / "notes.txt")
    p = cli("encrypt", tree, sealed, "--footer-key-value", key, "--retry-failed")
    assert p.returncode == 0, p.stderr
    assert p.stdout.startswith("encrypted 1 files")
    p = cli("encrypt", tree, sealed, "--footer-key-value", base64.b64encode(K2).decode())
    assert p.returncode == 1 and "journal" in p.stderr and "--force" in p.stderr
    p = cli("decrypt", sealed, tmp_path / "plain", "--footer-key-value", key, "-j", "2")
    assert p.returncode == 0, p.stderr
    assert read_hive(tmp_path / "plain").num_rows == expected_table().num_rows + part(2024, 1).num_rows


def test_cli_directory_job_with_a_kms(tree, tmp_path):
    """Master key ids on the command line: the driver's key session wraps one KEK per
    master key; workers (processes) seal; pyarrow reads with its own KMS client."""
    sealed, plain, report = tmp_path / "sealed", tmp_path / "plain", tmp_path / "r.json"
    env = {"KL": KEY_LIST}
    p = cli("encrypt", tree, sealed, "--key-list", "env:KL", "--footer-key", "kf", "--column-keys", "kc:s",
            "--external-key-material", "--executor", "processes", "-j", "2", "--report", report, env=env)
    assert p.returncode == 0, p.stderr
    assert json.loads(report.read_text())["kms_calls"] == 2
    for rel in data_files(sealed):
        y, m = (int(x.split("=")[1]) for x in rel.split(os.sep)[:2])
        pyarrow_kms_reads(sealed / rel, part(y, m))
    p = cli("decrypt", sealed, plain, "--key-list", "env:KL", "--report", report, env=env)
    assert p.returncode == 0, p.stderr
    assert json.loads(report.read_text())["kms_calls"] == 2
    assert read_hive(plain).equals(read_hive(tree))
    p = cli("verify", sealed, "--key-list", "env:KL", "--aad-prefix", "x", env=env)
    assert p.returncode == 2 and "--aad-prefix" in p.stderr


def test_summaries_drop_policy(tree, tmp_path):
    import warnings

    sealed, plain = tmp_path / "sealed", tmp_path / "plain"
    with warnings.catch_warnings():
        warnings.simplefilter("error")            # asked for: no warning
        r = dataset.encrypt(tree, sealed, EncryptionProperties(K), summaries="drop")
    assert r.ok == 6 and not r.warnings and not (sealed / "_common_metadata").exists()
    pq.write_metadata(part(2023, 1).schema, sealed / "_common_metadata")
    dataset.decrypt(sealed, plain, DecryptionProperties(K), summaries="drop")
    assert not (plain / "_common_metadata").exists() and (plain / "_SUCCESS").exists()
    with pytest.raises(ValueError, match="summaries"):
        dataset.decrypt(sealed, tmp_path / "x", DecryptionProperties(K), summaries="copy")


def test_no_key_bytes_in_the_journal_report_or_reprs(tree, tmp_path):
    from pqseal.dataset.keys import FixedKeys, Paired

    key = os.urandom(16)
    sealed, report = tmp_path / "sealed", tmp_path / "r.json"
    with pytest.warns(UserWarning):
        r = dataset.encrypt(tree, sealed, EncryptionProperties(key), report=report)
    forms = [key, key.hex().encode(), base64.b64encode(key)]
    for blob in ((sealed / ".pqseal-job" / "journal.jsonl").read_bytes(), report.read_bytes(),
                 repr(r).encode(), json.dumps(r.to_json()).encode()):
        assert not any(f in blob for f in forms)
    keys = Paired(FixedKeys(decryption=DecryptionProperties(key)), FixedKeys(EncryptionProperties(key)))
    shipped = keys.ship("t")
    assert not any(f in repr(shipped).encode() or f in repr(keys.read).encode() for f in forms)
    with pytest.raises(TypeError, match="export"):
        import pickle

        pickle.dumps(keys.read)
    opened = shipped.open()      # what a worker process imports
    assert opened.decryption_properties().footer_key == key and opened.encryption_properties().footer_key == key
