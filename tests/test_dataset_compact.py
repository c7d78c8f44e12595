"""pqseal.dataset.compact: small PME files of a partition merged page by page.

Oracles: pyarrow's own PME reader (its CryptoFactory and a KMS written with
`cryptography`, tests/pyarrow_kms.py) reads every merged file and its statistics, and
the independent reference reader (tests/pme_reference.py) decrypts every page, page
index and bloom filter module of the output with the spec's AADs: the pages must be the
inputs' pages, in the inputs' order. Also: new DEKs and a new aad_file_unique per
output, files that cannot be decrypted carried forward byte for byte, mixed schemas
never merged, an existing destination refused, the row-group ordinal limit, KMS calls
made by the driver only, the CLI, and SIGKILL at random instants of an in-place run
(every row exactly once after recovery).

PQSEAL_COMPACT_KILL_TRIALS sets the number of kill trials (default 30)."""

from __future__ import annotations

import base64
import hashlib
import os
import random
import shutil
import signal
import sys
import threading
import time

import pyarrow as pa
import pyarrow.parquet as pq
import pyarrow.parquet.encryption as pe
import pytest

import pqseal
from pqseal import dataset
from pqseal.config import EncryptionConfig
from pqseal.errors import InvalidOrdinal, OutputExists
from pqseal.format import engine
from pqseal.format.layout import dotted
from pqseal.format.source import Source
from pqseal.kms import KeyListKms
from pqseal.kms.base import KmsClient

import parquet_gen as G
from pyarrow_kms import key_list_client

MASTER = {"kf": bytes(range(16)), "kc": bytes(range(16, 32)), "k2": bytes(range(32, 48))}
KILL_TRIALS = int(os.environ.get("PQSEAL_COMPACT_KILL_TRIALS", "30"))


class CountingKms(KmsClient):
    """A key-list KMS that counts its calls and the processes they were made in."""

    def __init__(self, master=MASTER):
        self.inner, self.wraps, self.unwraps, self.pids = KeyListKms(master), 0, 0, set()

    def wrap_key(self, key_bytes, master_key_identifier):
        self.wraps += 1
        self.pids.add(os.getpid())
        return self.inner.wrap_key(key_bytes, master_key_identifier)

    def unwrap_key(self, wrapped_key, master_key_identifier):
        self.unwraps += 1
        self.pids.add(os.getpid())
        return self.inner.unwrap_key(wrapped_key, master_key_identifier)


def table(start: int, n: int = 300) -> pa.Table:
    return pa.table({"id": pa.array(range(start, start + n), pa.int64()),
                     "s": [f"s{i % 13}" for i in range(start, start + n)]})


def seal(path, t: pa.Table, cfg: EncryptionConfig, kms=None, **write) -> None:
    plain = str(path) + ".plain"
    pq.write_table(t, plain, row_group_size=120, data_page_size=512, write_page_index=True,
                   bloom_filter_options={"id": True}, **write)
    pqseal.encrypt_file(plain, path, cfg, kms=kms or KeyListKms(MASTER))
    os.unlink(plain)


def make_tree(root, cfg, *, parts=("k=a", "k=b"), files=4, schema2_at=()) -> dict[str, list[pa.Table]]:
    """Partitions of ``files`` sealed files each; the ones at ``schema2_at`` get another
    schema. Returns {partition: [tables in file order]}."""
    out = {}
    for pi, p in enumerate(parts):
        d = root / p
        d.mkdir(parents=True)
        out[p] = []
        for i in range(files):
            t = table(10_000 * pi + 1000 * i)
            if i in schema2_at:
                t = t.append_column("extra", pa.array([1.5] * t.num_rows))
            seal(d / f"part-{i:03d}.parquet", t, cfg)
            out[p].append(t)
    return out


def pa_props(path):
    return pe.CryptoFactory(key_list_client(MASTER)).file_decryption_properties(
        pe.KmsConnectionConfig(), pe.DecryptionConfiguration(), parquet_file_path=str(path))


def pa_read(path) -> pa.Table:
    return pq.read_table(path, decryption_properties=pa_props(path))


def data_files(root) -> list[str]:
    out = []
    for d, dirs, fs in os.walk(root):
        dirs[:] = [x for x in dirs if not x.startswith((".", "_"))]
        out += [os.path.relpath(os.path.join(d, f), root) for f in fs if not f.startswith((".", "_"))]
    return sorted(out)


def sha(path) -> str:
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def dec_of(path, master=MASTER):
    return pqseal.api.decryption_properties(str(path), kms=KeyListKms(master))


def deks(path) -> set[bytes]:
    dec = dec_of(path)
    with Source(str(path), dec) as s:
        out = {dec.get_footer_key(s.crypto.footer_key_metadata)}
        for col, p in enumerate(s.paths):
            cc = s.column_crypto(0, col)
            if cc.encrypted and not cc.footer_key:
                out.add(dec.get_column_key(dotted(p), cc.key_metadata))
    return out


def master_keys(path, master=MASTER) -> dict:
    """{"footer" or column: master key id} from the file's key material."""
    from pqseal.keys.scan import KeyMaterialReader

    reader = KeyMaterialReader(str(path))
    with Source(str(path), dec_of(path, master)) as s:
        out = {"footer": reader.material(s.crypto.footer_key_metadata).master_key_id}
        for col, p in enumerate(s.paths):
            cc = s.column_crypto(0, col)
            out[dotted(p)] = None if not cc.encrypted else "footer" if cc.footer_key else \
                reader.material(cc.key_metadata).master_key_id
    return out


def file_unique(path) -> bytes:
    with Source(str(path)) as s:
        return s.crypto.aad_file_unique


def ref_pages(path) -> list:
    """Every page of the file in row-group order, decrypted by the reference reader."""
    pages = G.pages(path, dec_of(path))
    return [pages[k] for k in sorted(pages)]


def ref_indexes(path) -> list:
    idx = G.indexes(path, dec_of(path))
    return [idx[k] for k in sorted(idx)]


# ---- the merge itself ------------------------------------------------------------------------


@pytest.mark.parametrize("algorithm,plaintext_footer", [("AES_GCM_V1", False), ("AES_GCM_CTR_V1", False),
                                                        ("AES_GCM_V1", True), ("AES_GCM_CTR_V1", True)])
def test_in_place_merge_pyarrow_and_reference(tmp_path, algorithm, plaintext_footer):
    cfg = EncryptionConfig("kf", column_keys={"kc": ["id"]}, encryption_algorithm=algorithm,
                           plaintext_footer=plaintext_footer)
    root = tmp_path / "t"
    tables = make_tree(root, cfg)
    before = {rel: (deks(root / rel), file_unique(root / rel), ref_pages(root / rel), ref_indexes(root / rel))
              for rel in data_files(root)}
    kms = CountingKms()
    r = dataset.compact(root, kms=kms)
    assert r.ok == 2 and r.failed == 0 and r.skipped == 0, r.to_json()
    # one unwrap per distinct KEK read (each input was sealed on its own: 2 KEKs each),
    # one wrap per master key written
    assert (kms.unwraps, kms.wraps) == (2 * len(before), 2) and r.kms_calls == kms.unwraps + kms.wraps
    outs = data_files(root)
    assert len(outs) == 2 and all(o.startswith(("k=a/part-000-m", "k=b/part-000-m")) for o in outs)
    for out in outs:
        part = os.path.dirname(out)
        ins = sorted(rel for rel in before if rel.startswith(part + "/"))
        path = root / out
        got = pa_read(path)
        assert got.equals(pa.concat_tables(tables[part])), "pyarrow: rows and their order"
        md = pq.ParquetFile(path, decryption_properties=pa_props(path)).metadata
        assert md.num_row_groups == sum(len(before[i][2]) // 2 for i in ins)
        assert md.created_by.startswith("pqseal") and "merged" in md.created_by
        stats = md.row_group(0).column(0).statistics
        assert stats.has_min_max and stats.min == tables[part][0]["id"][0].as_py()
        for rg in range(md.num_row_groups):    # pyarrow sees every page index and "id"'s bloom filters
            cols = [md.row_group(rg).column(c) for c in range(2)]
            assert all(c.has_column_index and c.has_offset_index for c in cols)
            assert cols[0].bloom_filter_offset > 0 and cols[1].bloom_filter_offset is None
        # the reference decrypts every page and index module of the output: the inputs' own
        assert ref_pages(path) == [pg for i in ins for pg in before[i][2]]
        assert ref_indexes(path) == [ix for i in ins for ix in before[i][3]]
        assert all(ix["bloom"] is not None for ix in ref_indexes(path)[0::2])   # column "id"
        with Source(str(path)) as s:
            assert (s.crypto.algorithm, s.crypto.plaintext_footer) == (algorithm, plaintext_footer)
        assert master_keys(path) == {"footer": "kf", "id": "kc", "s": None}, "the inputs' master keys"
        assert not deks(path) & set().union(*(before[i][0] for i in ins)), "new DEKs"
        assert file_unique(path) not in {before[i][1] for i in ins}, "new aad_file_unique"
        assert r.ok[outs.index(out)].detail["inputs"] == ins
    assert os.listdir(root / ".pqseal-job") == ["compact.lock"]   # no manifest left


def test_new_tree_with_new_master_keys(tmp_path):
    root, dst = tmp_path / "t", tmp_path / "out"
    tables = make_tree(root, EncryptionConfig("kf", uniform_encryption=True), parts=("k=a",), files=5)
    hashes = {rel: sha(root / rel) for rel in data_files(root)}
    new = EncryptionConfig("k2", column_keys={"kc": ["s"], "k2": ["id"]})   # every column encrypted in the inputs
    r = dataset.compact(root, dst, new, kms=KeyListKms(MASTER), target_size=1 << 30, summaries="drop")
    assert r.ok == 1 and r.bytes == sum(os.path.getsize(root / rel) for rel in hashes)
    assert {rel: sha(root / rel) for rel in data_files(root)} == hashes, "the source is untouched"
    (out,) = data_files(dst)
    assert pa_read(dst / out).equals(pa.concat_tables(tables["k=a"]))
    assert master_keys(dst / out) == {"footer": "k2", "id": "k2", "s": "kc"}
    again = dataset.compact(root, dst, new, kms=KeyListKms(MASTER), target_size=1 << 30, summaries="drop")
    assert again.ok == 0 and [x.reason for x in again.skipped] == ["done in an earlier run"]


def test_external_key_material(tmp_path):
    """Inputs with their key material beside them: the merged file gets its own, renamed
    with it at the commit; the inputs' material goes with them."""
    root = tmp_path / "t"
    tables = make_tree(root, EncryptionConfig("kf", column_keys={"kc": ["id"]}, internal_key_material=False),
                       parts=("k=a",), files=3)
    assert len(os.listdir(root / "k=a")) == 6
    r = dataset.compact(root, kms=KeyListKms(MASTER))
    (out,) = data_files(root)
    assert r.ok == 1 and sorted(os.listdir(root / "k=a")) == [f"_KEY_MATERIAL_FOR_{os.path.basename(out)}.json",
                                                             os.path.basename(out)]
    assert pa_read(root / out).equals(pa.concat_tables(tables["k=a"]))


def test_existing_destination_refused(tmp_path):
    root, dst = tmp_path / "t", tmp_path / "out"
    make_tree(root, EncryptionConfig("kf", uniform_encryption=True), parts=("k=a",), files=2)
    dst.mkdir()
    (dst / "keep.txt").write_text("mine")
    with pytest.raises(OutputExists, match="not empty"):
        dataset.compact(root, dst, kms=KeyListKms(MASTER))
    assert os.listdir(dst) == ["keep.txt"]
    r = dataset.compact(root, dst, kms=KeyListKms(MASTER), overwrite=True)
    assert r.ok == 1 and (dst / "keep.txt").read_text() == "mine"


def test_undecryptable_files_carried_forward(tmp_path):
    """A file under a master key the KMS does not know, and one with a damaged page: never
    merged, never changed, never deleted; listed in skipped; the others merged."""
    cfg = EncryptionConfig("kf", column_keys={"kc": ["id"]})
    root = tmp_path / "t"
    tables = make_tree(root, cfg, parts=("k=a",), files=5)
    gone = {**MASTER, "kgone": os.urandom(16)}
    os.unlink(root / "k=a" / "part-002.parquet")
    seal(root / "k=a" / "part-002.parquet", tables["k=a"][2], EncryptionConfig("kgone", uniform_encryption=True),
         kms=KeyListKms(gone))
    damaged = root / "k=a" / "part-003.parquet"
    with Source(str(damaged), dec_of(damaged)) as s:
        meta = s.column_meta(1, 0)
    data = bytearray(damaged.read_bytes())
    data[meta["data_page_offset"] + meta["total_compressed_size"] // 2] ^= 1    # inside a page module
    damaged.write_bytes(bytes(data))
    kept = {r: sha(root / "k=a" / r) for r in ("part-002.parquet", "part-003.parquet")}
    dst = tmp_path / "copy"
    for target in (dst, None):
        r = dataset.compact(root, target, kms=KeyListKms(MASTER))
        assert r.ok == 1 and r.failed == 0 and r.success
        skipped = {x.path: x.reason for x in r.skipped}
        assert set(skipped) == {"k=a/part-002.parquet", "k=a/part-003.parquet"}
        assert all(why.startswith("undecryptable: ") for why in skipped.values())
        assert "kgone" in skipped["k=a/part-002.parquet"]
        assert r.ok[0].detail["inputs"] == ["k=a/part-000.parquet", "k=a/part-001.parquet", "k=a/part-004.parquet"]
        where = dst if target is not None else root
        assert {n: sha(where / "k=a" / n) for n in kept} == kept, "carried forward byte for byte"
        merged = [f for f in data_files(where) if "-m" in f]
        assert pa_read(where / merged[0]).equals(pa.concat_tables([tables["k=a"][i] for i in (0, 1, 4)]))


def test_mixed_schemas_never_merged(tmp_path):
    root = tmp_path / "t"
    tables = make_tree(root, EncryptionConfig("kf", uniform_encryption=True), parts=("k=a",), files=6,
                       schema2_at=(1, 3, 4))
    r = dataset.compact(root, kms=KeyListKms(MASTER))
    assert r.ok == 2
    got = {}
    for rec in r.ok:
        t = pa_read(root / rec.path)
        got[tuple(t.column_names)] = (t, rec.detail["inputs"])
    narrow, wide = got[("id", "s")], got[("id", "s", "extra")]
    assert narrow[1] == [f"k=a/part-{i:03d}.parquet" for i in (0, 2, 5)]
    assert wide[1] == [f"k=a/part-{i:03d}.parquet" for i in (1, 3, 4)]
    assert narrow[0].equals(pa.concat_tables([tables["k=a"][i] for i in (0, 2, 5)]))
    assert wide[0].equals(pa.concat_tables([tables["k=a"][i] for i in (1, 3, 4)]))


def test_files_under_other_master_keys_never_merged(tmp_path):
    """Tenant keys stay per tenant: with encryption=None files sealed under other master
    keys (or another footer mode) go to other outputs, each sealed like its inputs."""
    d = tmp_path / "t" / "k=a"
    d.mkdir(parents=True)
    cfgs = [EncryptionConfig("kf", uniform_encryption=True), EncryptionConfig("k2", uniform_encryption=True),
            EncryptionConfig("kf", uniform_encryption=True, plaintext_footer=True)]
    for i in range(6):
        seal(d / f"part-{i:03d}.parquet", table(1000 * i), cfgs[i % 3])
    r = dataset.compact(tmp_path / "t", kms=KeyListKms(MASTER))
    assert sorted(x.detail["inputs"] for x in r.ok) == [[f"k=a/part-{i:03d}.parquet" for i in (j, j + 3)]
                                                        for j in range(3)]
    for x in r.ok:
        first = int(x.detail["inputs"][0][-11:-8])
        path = tmp_path / "t" / x.path
        assert master_keys(path)["footer"] == cfgs[first].footer_key
        with Source(str(path)) as s:
            assert s.crypto.plaintext_footer == cfgs[first].plaintext_footer
        assert pa_read(path).equals(pa.concat_tables([table(1000 * first), table(1000 * (first + 3))]))


def test_tenant_keys_and_a_shredded_tenant(tmp_path):
    """Hive partitions customer_id=1..3, each under its tenant key. A template config
    (``tenant-{customer_id}``) seals each merged file under its partition's key; with
    encryption=None each keeps its inputs' key, and a shredded tenant's files (its key
    gone from the KMS) are carried forward byte for byte while the others merge."""
    keys = {f"tenant-{i}": os.urandom(16) for i in (1, 2, 3)}
    root = tmp_path / "t"
    tables = {}
    for c in (1, 2, 3):
        d = root / f"customer_id={c}"
        d.mkdir(parents=True)
        tables[c] = [table(1000 * (10 * c + i)) for i in range(2)]
        for i, t in enumerate(tables[c]):
            seal(d / f"part-{i}.parquet", t, EncryptionConfig("kf", uniform_encryption=True))
    r = dataset.compact(root, tmp_path / "out", EncryptionConfig("tenant-{customer_id}", uniform_encryption=True),
                        kms=KeyListKms({**MASTER, **keys}))
    assert r.ok == 3 and r.kms_calls == 6 + 3      # one unwrap per input's KEK, one wrap per tenant key
    for rec in r.ok:
        c = int(rec.path.split("=")[1].split("/")[0])
        assert master_keys(tmp_path / "out" / rec.path, {**MASTER, **keys})["footer"] == f"tenant-{c}"
    # the tree under tenant keys, then tenant 2 shredded
    shutil.rmtree(root)
    shutil.copytree(tmp_path / "out", root, ignore=shutil.ignore_patterns(".pqseal-job"))
    for c in (1, 2, 3):       # a second small file per tenant, under its key
        seal(root / f"customer_id={c}" / "zz.parquet", table(900_000 + c), EncryptionConfig(f"tenant-{c}",
             uniform_encryption=True), kms=KeyListKms(keys))
    shredded = {k: v for k, v in keys.items() if k != "tenant-2"}
    before = {f: sha(root / f) for f in data_files(root) if f.startswith("customer_id=2/")}
    r = dataset.compact(root, kms=KeyListKms(shredded))
    assert sorted(x.path.split("/")[0] for x in r.ok) == ["customer_id=1", "customer_id=3"]
    assert {x.path for x in r.skipped} == set(before) and all("undecryptable" in x.reason for x in r.skipped)
    assert {f: sha(root / f) for f in before} == before
    for rec in r.ok:
        c = int(rec.path.split("=")[1].split("/")[0])
        path = root / rec.path
        assert master_keys(path, keys)["footer"] == f"tenant-{c}"
        assert pq.read_table(path, decryption_properties=pe.CryptoFactory(key_list_client(keys))
                             .file_decryption_properties(pe.KmsConnectionConfig(), pe.DecryptionConfiguration(),
                                                         parquet_file_path=str(path))).equals(
            pa.concat_tables(tables[c] + [table(900_000 + c)]))


def test_key_usage_counted_with_the_local_keystore(tmp_path, monkeypatch):
    """The merged files' DEKs, files and bytes count in the keystore's usage, by the
    driver (workers make no KMS call)."""
    from pqseal.keys import clear_caches
    from pqseal.kms.keystore import TEST_KDF_ENV, LocalKeystore

    monkeypatch.setenv(TEST_KDF_ENV, str(1 << 14))
    monkeypatch.delenv("PQSEAL_AUDIT_LOG", raising=False)
    clear_caches()
    ks = LocalKeystore.init(tmp_path / "ks.json", b"compact usage")
    ks.create("kf")
    ks.create("kc")
    root = tmp_path / "t"
    for p in ("k=a", "k=b"):
        for i in range(3):
            (root / p).mkdir(parents=True, exist_ok=True)
            seal(root / p / f"part-{i}.parquet", table(100 * i), EncryptionConfig("kf", column_keys={"kc": ["id"]}),
                 kms=ks)

    def usage():
        return {k["id"]: k for k in ks.list()}

    before = usage()
    r = dataset.compact(root, kms=ks, executor="processes", workers=2)
    assert r.ok == 2 and r.kms_calls == 2 + 2 and not r.warnings   # the inputs share 2 KEKs (one KEK cache)
    after = usage()
    out_bytes = sum(os.path.getsize(root / x.path) for x in r.ok)
    for kid in ("kf", "kc"):
        delta = {f: after[kid][f] - before[kid][f] for f in ("deks", "files", "bytes")}
        assert delta == {"deks": 2, "files": 2, "bytes": out_bytes}, (kid, delta)
    clear_caches()


def test_target_size_and_row_group_limit(tmp_path, monkeypatch):
    root = tmp_path / "t"
    make_tree(root, EncryptionConfig("kf", uniform_encryption=True), parts=("k=a",), files=7)
    size = os.path.getsize(root / "k=a" / "part-000.parquet")
    from pqseal.dataset import compact_groups

    monkeypatch.setattr(compact_groups, "MAX_ROW_GROUPS", 9)      # 3 files of 3 row groups
    r = dataset.compact(root, kms=KeyListKms(MASTER), target_size=size * 10)
    assert [len(x.detail["inputs"]) for x in r.ok] == [3, 3] and [x.path for x in r.skipped] == \
        ["k=a/part-006.parquet"]
    assert engine.MAX_ROW_GROUPS == 32768          # PME row-group ordinals are int16


def test_engine_merge_refuses_past_the_ordinal_limit(tmp_path, monkeypatch):
    root = tmp_path / "t"
    make_tree(root, EncryptionConfig("kf", uniform_encryption=True), parts=("k=a",), files=2)
    ins = [str(root / "k=a" / f"part-00{i}.parquet") for i in range(2)]
    monkeypatch.setattr(engine, "MAX_ROW_GROUPS", 5)
    enc = pqseal.api.encryption_properties(EncryptionConfig("kf", uniform_encryption=True), kms=KeyListKms(MASTER))
    with pytest.raises(InvalidOrdinal, match="more than 5 row groups"):
        engine.merge(ins, tmp_path / "m.parquet", [dec_of(p) for p in ins], encryption=enc)
    assert not os.path.exists(tmp_path / "m.parquet") and os.listdir(tmp_path) == ["t"]


def test_engine_merge_refuses_other_schemas(tmp_path):
    root = tmp_path / "t"
    make_tree(root, EncryptionConfig("kf", uniform_encryption=True), parts=("k=a",), files=2, schema2_at=(1,))
    ins = [str(root / "k=a" / f"part-00{i}.parquet") for i in range(2)]
    enc = pqseal.api.encryption_properties(EncryptionConfig("kf", uniform_encryption=True), kms=KeyListKms(MASTER))
    with pytest.raises(engine.SchemaMismatch):
        engine.merge(ins, tmp_path / "m.parquet", [dec_of(p) for p in ins], encryption=enc)
    assert os.listdir(tmp_path) == ["t"]


def test_worker_processes_make_no_kms_call(tmp_path):
    root = tmp_path / "t"
    tables = make_tree(root, EncryptionConfig("kf", column_keys={"kc": ["s"]}), parts=("k=a", "k=b", "k=c"))
    kms = CountingKms()
    r = dataset.compact(root, kms=kms, executor="processes", workers=2)
    assert r.ok == 3 and kms.pids == {os.getpid()}
    for rec in r.ok:
        assert pa_read(root / rec.path).equals(pa.concat_tables(tables[os.path.dirname(rec.path)]))


def test_dask(tmp_path):
    """On a dask.distributed cluster: keys travel only where allowed, checked before
    anything is written; the workers merge with the driver's key session."""
    from distributed import Client, LocalCluster

    from pqseal.errors import InsecureTransport

    root = tmp_path / "t"
    tables = make_tree(root, EncryptionConfig("kf", column_keys={"kc": ["s"]}), parts=("k=a", "k=b"), files=3)
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, protocol="tcp://",
                      dashboard_address=":0", silence_logs=40) as cluster, Client(cluster) as client:
        with pytest.raises(InsecureTransport, match="allow_insecure"):
            dataset.compact(root, tmp_path / "out", kms=KeyListKms(MASTER), executor=client)
        assert not (tmp_path / "out").exists() and not (root / ".pqseal-job").exists()
        r = dataset.compact(root, kms=KeyListKms(MASTER), executor=client, allow_insecure=True)
    assert r.ok == 2 and r.executor != "threads"
    for rec in r.ok:
        assert pa_read(root / rec.path).equals(pa.concat_tables(tables[os.path.dirname(rec.path)]))


def test_cli(tmp_path):
    from click.testing import CliRunner

    from pqseal.cli import main

    root, dst = tmp_path / "t", tmp_path / "out"
    tables = make_tree(root, EncryptionConfig("kf", uniform_encryption=True), parts=("k=a",), files=3)
    keys = ", ".join(f"{k}: {base64.b64encode(v).decode()}" for k, v in MASTER.items())
    res = CliRunner().invoke(main, ["compact", str(root), str(dst), "--target-size", "10MB", "--workers", "1",
                                    "--kms", "keylist", "--key-list", keys])
    assert res.exit_code == 0, res.output
    assert "1 merged" in res.output
    (out,) = data_files(dst)
    assert pa_read(dst / out).equals(pa.concat_tables(tables["k=a"]))
    res = CliRunner().invoke(main, ["compact", str(root), str(tmp_path / "x"), "--target-size", "lots"])
    assert res.exit_code != 0 and "target-size" in res.output and "Traceback" not in res.output
    # every failed merge is retried on a rerun, so the option that would change it is not offered
    res = CliRunner().invoke(main, ["compact", str(root), str(tmp_path / "y"), "--retry-failed"])
    assert res.exit_code == 2 and "--retry-failed" in res.output and not (tmp_path / "y").exists()
    with pytest.raises(TypeError, match="retry_failed does not apply"):
        dataset.compact(root, tmp_path / "z", retry_failed=True)
    assert not (tmp_path / "z").exists()


# ---- crash safety ------------------------------------------------------------------------------


def _rows(root) -> list[int]:
    ids: list[int] = []
    for rel in data_files(root):
        ids += pa_read(root / rel)["id"].to_pylist()
    return sorted(ids)


@pytest.mark.parametrize("state", ["staged", "committed", "linked", "half-removed", "output-lost", "moved"])
def test_recovery_of_each_commit_step(tmp_path, monkeypatch, state):
    """The in-place commit stopped after each of its steps (``compact_merge``'s docstring),
    made by hand: recovery rolls back (before the manifest) or forward (after it)."""
    from pqseal.dataset import compact_merge

    root = tmp_path / "t"
    tables = make_tree(root, EncryptionConfig("kf", column_keys={"kc": ["id"]}, internal_key_material=False),
                       parts=("k=a",), files=3)
    inputs = data_files(root)
    expected = sorted(pa.concat_tables(tables["k=a"])["id"].to_pylist())
    with monkeypatch.context() as m:     # stop after the staging file (and its manifest)
        m.setattr(compact_merge, "_commit" if state == "staged" else "_finish", lambda *a: "")
        r = dataset.compact(root, kms=KeyListKms(MASTER))
    final = root / r.ok[0].path
    staging = final.parent / f".{final.name}.pqseal-compact"
    assert staging.exists() and not final.exists() and data_files(root) == inputs
    if state == "linked":                # the exclusive rename: linked, staging name not yet removed
        os.replace(staging.parent / f"_KEY_MATERIAL_FOR_{staging.name}.json",
                   final.parent / f"_KEY_MATERIAL_FOR_{final.name}.json")
        os.link(staging, final)
    elif state == "half-removed":        # renamed; one input removed, the next one's data file only
        os.replace(staging.parent / f"_KEY_MATERIAL_FOR_{staging.name}.json",
                   final.parent / f"_KEY_MATERIAL_FOR_{final.name}.json")
        os.replace(staging, final)
        os.unlink(root / inputs[0])
        os.unlink(root / "k=a" / f"_KEY_MATERIAL_FOR_{os.path.basename(inputs[0])}.json")
        os.unlink(root / inputs[1])
    elif state == "output-lost":
        os.unlink(staging)
    elif state == "moved":               # the tree renamed after the crash: manifests name relative paths
        os.rename(root, tmp_path / "moved")
        root = tmp_path / "moved"
        final = root / r.ok[0].path
    actions = compact_merge.recover(str(root), str(root / ".pqseal-job" / "compact"))
    assert len(actions) == 1, actions
    names = sorted(os.listdir(root / "k=a"))
    if state in ("staged", "output-lost"):
        assert data_files(root) == inputs and all(not n.startswith(".") for n in names)
    else:
        assert names == [f"_KEY_MATERIAL_FOR_{final.name}.json", final.name]
    assert _rows(root) == expected
    manifests = root / ".pqseal-job" / "compact"
    assert not manifests.exists() or os.listdir(manifests) == []


def test_an_input_changed_during_the_merge(tmp_path, monkeypatch):
    """An input rewritten while it was merged: the merge is dropped, nothing removed."""
    from pqseal.dataset import compact_merge

    root = tmp_path / "t"
    tables = make_tree(root, EncryptionConfig("kf", uniform_encryption=True), parts=("k=a",), files=3)
    inputs = data_files(root)
    verify = compact_merge.verify_file

    def verify_and_touch(path, dec):
        os.unlink(root / inputs[1])       # another file under the same name
        seal(root / inputs[1], tables["k=a"][0], EncryptionConfig("kf", uniform_encryption=True))
        return verify(path, dec)

    monkeypatch.setattr(compact_merge, "verify_file", verify_and_touch)
    r = dataset.compact(root, kms=KeyListKms(MASTER))
    assert r.ok == 0 and r.failed == 1 and "changed while it was merged" in r.failed[0].error
    assert data_files(root) == inputs and sorted(os.listdir(root / "k=a")) == [os.path.basename(i) for i in inputs]
    assert pa_read(root / inputs[1]).equals(tables["k=a"][0])


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")
def test_sigkill_in_place(tmp_path):
    """A child compacts a tree in place and is killed at a random instant; the next
    compaction's recovery leaves every row in exactly one data file, and finishes."""
    template = tmp_path / "template"
    make_tree(template, EncryptionConfig("kf", column_keys={"kc": ["id"]}), parts=("k=a", "k=b"), files=3)
    expected = _rows(template)
    kms = KeyListKms(MASTER)
    runs = []
    for i in range(3):      # the first run imports and warms up; the kills spread over a warm one
        shutil.copytree(template, tmp_path / f"warm{i}")
        t0 = time.perf_counter()
        dataset.compact(tmp_path / f"warm{i}", kms=kms, workers=1)
        runs.append(time.perf_counter() - t0)
    run = min(runs[1:])
    rng = random.Random(int.from_bytes(os.urandom(4), "little"))
    outcomes = {"untouched": 0, "partial": 0, "done": 0}
    from pqseal.dataset.compact_merge import recover

    for trial in range(KILL_TRIALS):
        root = tmp_path / f"r{trial}"
        shutil.copytree(template, root)
        sys.stdout.flush()
        sys.stderr.flush()
        ready_r, ready_w = os.pipe()
        pid = os.fork()
        if pid == 0:   # child: compact until killed
            try:
                # tqdm's write lock is a semaphore shared with the forked parent: a child
                # killed while holding it would block the parent's next progress bar
                from tqdm import tqdm

                tqdm.set_lock(threading.RLock())
                os.close(ready_r)
                os.write(ready_w, b"x")
                dataset.compact(root, kms=kms, workers=1)
            finally:
                os._exit(0)
        os.close(ready_w)
        os.read(ready_r, 1)
        os.close(ready_r)
        time.sleep(rng.uniform(0, run))
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        recover(str(root), str(root / ".pqseal-job" / "compact"))
        assert _rows(root) == expected, f"trial {trial}: after recovery"
        merged = sum("-m" in f for f in data_files(root))
        outcomes["untouched" if merged == 0 else "done" if merged == 2 else "partial"] += 1
        r = dataset.compact(root, kms=kms, workers=1)
        assert r.failed == 0 and _rows(root) == expected, f"trial {trial}: after the rerun"
        assert sum("-m" in f for f in data_files(root)) == 2 and len(data_files(root)) == 2
        assert not any(n.endswith(".pqseal-compact") for _, _, fs in os.walk(root) for n in fs)
        shutil.rmtree(root)
    assert outcomes["untouched"] + outcomes["partial"] > 0, outcomes   # some kills landed mid-run
