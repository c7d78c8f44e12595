"""Master key id templates (``tenant-{customer_id}``): parsed and checked by
pqseal.keys.template, resolved per file by ParquetWriter(partition_cols=...), zone
policies, dataset jobs and the CLI; an unresolved template never reaches a KMS. The KMS
here accepts any id (as a permissive cloud KMS would), so a literal
``tenant-{customer_id}`` would be wrapped if pqseal let it through; pyarrow reads every
file with its own PME reader."""

from __future__ import annotations

import os

import pyarrow as pa
import pyarrow.parquet as pq
import pyarrow.parquet.encryption as pe
import pytest
from click.testing import CliRunner

import pqseal
from pqseal.cli import main as cli
from pqseal.io import zones
from pqseal.keys import template
from pqseal.keys.template import InvalidPartitionValue, TemplateError, UnknownPlaceholder, UnresolvedTemplate
from pqseal.kms.base import KmsClient
from pqseal.kms.keylist import KeyListKms

TABLE = pa.table({"customer_id": [1, 2, 3, 1, 2, 3, 7], "ssn": [f"{i:09d}" for i in range(7)],
                  "email": [f"u{i}@x" for i in range(7)], "n": list(range(7))})


class AnyKeyKms(KmsClient):
    """A KMS that has every master key id anyone asks for (made on first use) and
    records each call: (op, master key id)."""

    def __init__(self):
        self.master: dict[str, bytes] = {}
        self.calls: list[tuple[str, str]] = []

    def _kms(self, mk: str) -> KeyListKms:
        return KeyListKms({mk: self.master.setdefault(mk, os.urandom(16))})

    def wrap_key(self, key_bytes, master_key_identifier):
        self.calls.append(("wrap", master_key_identifier))
        return self._kms(master_key_identifier).wrap_key(key_bytes, master_key_identifier)

    def unwrap_key(self, wrapped_key, master_key_identifier):
        self.calls.append(("unwrap", master_key_identifier))
        return self._kms(master_key_identifier).unwrap_key(wrapped_key, master_key_identifier)


def _key_ids(path, kms) -> set[str]:
    """The master key ids a file's footer and columns are wrapped under (pqseal.inspect)."""
    r = pqseal.inspect(path, kms=kms)
    ids = {r["footer_key_metadata"]["masterKeyID"]}
    return ids | {c["key_metadata"]["masterKeyID"] for c in r["columns"] if c.get("key_metadata")}


def _pyarrow_reads(path, kms):
    props = pqseal.arrow.crypto_factory(lambda cfg: kms).file_decryption_properties(
        pe.KmsConnectionConfig(), pe.DecryptionConfiguration())
    return pq.read_table(path, decryption_properties=props)


def _files(root) -> list[str]:
    return sorted(os.path.join(d, f) for d, _, fs in os.walk(root) for f in fs if not f.startswith((".", "_")))


def _tenant_of(path) -> str:
    return [s for s in str(path).split(os.sep) if s.startswith("customer_id=")][0].split("=", 1)[1]


# ---- the resolver ----------------------------------------------------------------------------


def test_placeholders_parse_and_malformed_braces_are_refused():
    assert template.placeholders("tenant-{customer_id}-{region}") == ("customer_id", "region")
    assert template.placeholders("footer") == ()
    for bad in ("tenant-{customer_id", "tenant-}", "tenant-{}", "tenant-{1x}", "tenant-{a-b}", "{{x}}"):
        with pytest.raises(TemplateError):
            template.placeholders(bad)


def test_resolve_fills_each_id_and_merges_columns():
    cfg = pqseal.EncryptionConfig(footer_key="footer-{customer_id}",
                                  column_keys={"tenant-{customer_id}": ["ssn"], "tenant-42": ["email"],
                                               "pii": ["n"]})
    out = template.resolve(cfg, {"customer_id": "42", "region": "eu"})
    assert out.footer_key == "footer-42"
    assert out.column_keys == {"tenant-42": ["ssn", "email"], "pii": ["n"]}
    assert cfg.column_keys == {"tenant-{customer_id}": ["ssn"], "tenant-42": ["email"], "pii": ["n"]}   # unchanged
    plain = pqseal.EncryptionConfig(footer_key="f", uniform_encryption=True)
    assert template.resolve(plain, {}) is plain
    assert template.resolved_ids(cfg, [{"customer_id": "1"}, {"customer_id": "2"}, {"customer_id": "1"}]) == \
        ["footer-1", "footer-2", "pii", "tenant-1", "tenant-2", "tenant-42"]


def test_unknown_placeholder_is_named():
    cfg = pqseal.EncryptionConfig(footer_key="tenant-{customer_id}", uniform_encryption=True)
    with pytest.raises(UnknownPlaceholder, match=r"\{customer_id\}") as e:
        template.resolve(cfg, {"region": "eu"})
    assert e.value.name == "customer_id"


@pytest.mark.parametrize("value", ["a/b", "..", ".", "", " ", "x y", "ü", "a:b", "t*", "a..b", "x\n", "{x}",
                                   "a\\b", "x" * 65, None, "__HIVE_DEFAULT_PARTITION__"])
def test_unsafe_values_are_refused_not_rewritten(value):
    cfg = pqseal.EncryptionConfig(footer_key="tenant-{customer_id}", uniform_encryption=True)
    with pytest.raises(InvalidPartitionValue) as e:
        template.resolve(cfg, {"customer_id": value})
    assert e.value.name == "customer_id"


@pytest.mark.parametrize("value", ["42", "acme_corp", "2026-11-29", "v1.2", "A-b_C.9", "x" * 64])
def test_safe_values_resolve_verbatim(value):
    cfg = pqseal.EncryptionConfig(footer_key="tenant-{customer_id}", uniform_encryption=True)
    assert template.resolve(cfg, {"customer_id": value}).footer_key == f"tenant-{value}"


def test_partition_values_of_a_relative_path():
    assert template.partition_values("year=2026/customer_id=a%2Fb/part-0.parquet") == \
        {"year": "2026", "customer_id": "a/b"}   # decoded as written by pyarrow, then refused by resolve
    assert template.partition_values("customer_id=4/x=1.parquet") == {"customer_id": "4"}   # not the file name
    with pytest.raises(TemplateError, match="given twice"):
        template.partition_values("customer_id=1/customer_id=2/f.parquet")


# ---- an unresolved template never reaches a KMS ----------------------------------------------


def test_unresolved_template_is_refused_before_any_kms_call(tmp_path):
    kms = AnyKeyKms()
    pq.write_table(TABLE, tmp_path / "plain.parquet")
    cfg = pqseal.EncryptionConfig(footer_key="tenant-{customer_id}", uniform_encryption=True)
    with pytest.raises(UnresolvedTemplate):
        pqseal.encrypt_file(tmp_path / "plain.parquet", tmp_path / "out.parquet", cfg, kms=kms)
    with pytest.raises(UnresolvedTemplate):
        with pqseal.ParquetWriter(tmp_path / "w.parquet", TABLE.schema, cfg, kms=kms) as w:
            w.write_table(TABLE)
    with pytest.raises(UnresolvedTemplate):
        pqseal.KeySession.open(kms, cfg).add_master_keys(["tenant-{customer_id}"])
    assert kms.calls == []
    assert sorted(os.listdir(tmp_path)) == ["plain.parquet"]


def test_pyarrows_own_writer_cannot_wrap_under_a_template(tmp_path):
    kms = AnyKeyKms()
    factory = pqseal.arrow.crypto_factory(lambda cfg: kms)
    cfg = pe.EncryptionConfiguration(footer_key="tenant-{customer_id}", uniform_encryption=True)
    with pytest.raises(UnresolvedTemplate, match="pyarrow's writer does not fill templates"):
        props = factory.file_encryption_properties(pe.KmsConnectionConfig(), cfg)
        pq.write_table(TABLE, tmp_path / "pa.parquet", encryption_properties=props)
    assert kms.calls == [] and not os.path.exists(tmp_path / "pa.parquet")


# ---- ParquetWriter / write_to_dataset ---------------------------------------------------------


def test_partitioned_writer_wraps_each_partition_under_its_tenant_key(tmp_path):
    kms = AnyKeyKms()
    cfg = pqseal.EncryptionConfig(footer_key="footer-{customer_id}",
                                  column_keys={"tenant-{customer_id}": ["ssn", "email"]})
    with pqseal.ParquetWriter(tmp_path / "ds", TABLE.schema, cfg, kms=kms, partition_cols=["customer_id"]) as w:
        w.write_table(TABLE)
    files = _files(tmp_path / "ds")
    assert sorted(_tenant_of(f) for f in files) == ["1", "2", "3", "7"]
    for f in files:
        t = _tenant_of(f)
        assert _key_ids(f, kms) == {f"footer-{t}", f"tenant-{t}"}
        got = _pyarrow_reads(f, kms)                          # pyarrow's reader, keys by tenant
        want = TABLE.filter(pa.compute.equal(TABLE["customer_id"], int(t))).drop_columns(["customer_id"])
        assert got.equals(want)
    assert not any("{" in mk for _, mk in kms.calls)
    assert {mk for op, mk in kms.calls if op == "wrap"} == {f"{p}-{t}" for p in ("footer", "tenant")
                                                            for t in ("1", "2", "3", "7")}


def test_write_to_dataset_resolves_templates_and_pyarrow_reads_the_dataset(tmp_path):
    kms = AnyKeyKms()
    cfg = pqseal.EncryptionConfig(footer_key="tenant-{customer_id}", uniform_encryption=True)
    files = pqseal.write_to_dataset(TABLE, tmp_path / "ds", cfg, kms=kms, partition_cols=["customer_id"])
    assert {next(iter(_key_ids(f, kms))) for f in files} == {"tenant-1", "tenant-2", "tenant-3", "tenant-7"}
    props = pqseal.arrow.crypto_factory(lambda cfg: kms).file_decryption_properties(
        pe.KmsConnectionConfig(), pe.DecryptionConfiguration())
    got = pq.read_table(tmp_path / "ds", decryption_properties=props).sort_by("n")
    assert got["ssn"].equals(TABLE["ssn"]) and got["customer_id"].to_pylist() == TABLE["customer_id"].to_pylist()


def test_placeholder_not_a_partition_column_is_refused_before_writing(tmp_path):
    kms = AnyKeyKms()
    cfg = pqseal.EncryptionConfig(footer_key="tenant-{tenant}", uniform_encryption=True)
    with pytest.raises(UnknownPlaceholder, match=r"\{tenant\}") as e:
        pqseal.ParquetWriter(tmp_path / "ds", TABLE.schema, cfg, kms=kms, partition_cols=["customer_id"])
    assert e.value.name == "tenant"
    assert kms.calls == [] and not os.path.exists(tmp_path / "ds")


@pytest.mark.parametrize("bad", [None, "a/b", ".."])
def test_a_partition_value_that_makes_no_safe_key_id_fails_the_write(tmp_path, bad):
    kms = AnyKeyKms()
    table = pa.table({"customer_id": ["ok", bad], "n": [1, 2]})
    cfg = pqseal.EncryptionConfig(footer_key="tenant-{customer_id}", uniform_encryption=True)
    with pytest.raises(InvalidPartitionValue):
        with pqseal.ParquetWriter(tmp_path / "ds", table.schema, cfg, kms=kms, partition_cols=["customer_id"]) as w:
            w.write_table(table)
    assert _files(tmp_path) == []
    assert not any("{" in mk or mk.startswith("tenant-_") for _, mk in kms.calls)


# ---- zones -------------------------------------------------------------------------------------


def test_zone_policy_with_templates_resolves_from_the_path_below_the_zone(tmp_path, monkeypatch):
    monkeypatch.setenv(zones.ZONES_ENV, str(tmp_path / "zones.json"))
    kms = AnyKeyKms()
    root = tmp_path / "lake"
    root.mkdir()
    zones.create_zone(root, "tenant-{customer_id}", column_keys="pii-{customer_id}:ssn", kms=kms)
    assert kms.calls == []      # template keys are checked when a file is written
    plain = TABLE.drop_columns(["customer_id"])
    target = root / "customer_id=42" / "part-0.parquet"
    target.parent.mkdir()
    with pqseal.ParquetWriter(target, plain.schema, kms=kms) as w:    # no encryption=: the zone's
        w.write_table(plain)
    assert _key_ids(target, kms) == {"tenant-42", "pii-42"}
    assert _pyarrow_reads(target, kms).equals(plain)
    files = pqseal.write_to_dataset(TABLE, root / "sub", kms=kms, partition_cols=["customer_id"])
    assert {frozenset(_key_ids(f, kms)) for f in files} == {frozenset({f"tenant-{t}", f"pii-{t}"})
                                                            for t in ("1", "2", "3", "7")}
    (root / "customer_id=5").mkdir()
    with pqseal.open(root / "customer_id=5" / "s.parquet", "wb", kms=kms) as f:     # the sealing sink
        pq.write_table(plain, f)
    assert _key_ids(root / "customer_id=5" / "s.parquet", kms) == {"tenant-5", "pii-5"}
    (root / "customer_id=6").mkdir()                                                # the fsspec file system
    plain.to_pandas().to_parquet("pqseal::file://" + str(root / "customer_id=6" / "p.parquet"),
                                 storage_options={"pqseal": {"kms": kms}})
    assert _key_ids(root / "customer_id=6" / "p.parquet", kms) == {"tenant-6", "pii-6"}

    with pytest.raises(UnknownPlaceholder, match=r"\{customer_id\}") as e:   # the path lacks the partition
        with pqseal.ParquetWriter(root / "flat.parquet", plain.schema, kms=kms) as w:
            w.write_table(plain)
    assert e.value.name == "customer_id"
    assert not os.path.exists(root / "flat.parquet")
    assert not any("{" in mk for _, mk in kms.calls)


def test_zone_with_a_malformed_template_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv(zones.ZONES_ENV, str(tmp_path / "zones.json"))
    (tmp_path / "z").mkdir()
    with pytest.raises(zones.ZoneError, match="brace"):
        zones.create_zone(tmp_path / "z", "tenant-{customer_id", kms=AnyKeyKms())


def test_zone_encrypt_existing_resolves_per_file(tmp_path, monkeypatch):
    monkeypatch.setenv(zones.ZONES_ENV, str(tmp_path / "zones.json"))
    kms = AnyKeyKms()
    root = tmp_path / "z"
    pq.write_to_dataset(TABLE, root, partition_cols=["customer_id"])
    pq.write_table(TABLE, root / "flat.parquet")       # no partition: cannot be sealed under the template
    with pytest.raises(zones.ZoneError) as e:
        zones.create_zone(root, "tenant-{customer_id}", kms=kms, encrypt_existing=True)
    assert [os.path.basename(p) for p, _ in e.value.failed] == ["flat.parquet"]
    assert "UnknownPlaceholder" in e.value.failed[0][1]
    for f in _files(root):
        if f.endswith("flat.parquet"):
            assert pq.read_table(f).equals(TABLE)       # left as it was
        else:
            assert _key_ids(f, kms) == {f"tenant-{_tenant_of(f)}"}


# ---- dataset jobs -------------------------------------------------------------------------------


def _plain_tree(root):
    pq.write_to_dataset(TABLE, root, partition_cols=["customer_id"])
    return {os.path.relpath(f, root): _tenant_of(f) for f in _files(root)}


@pytest.mark.parametrize("executor", ["threads", "processes"])
def test_dataset_encrypt_makes_one_kms_call_per_resolved_key_and_none_in_workers(tmp_path, executor):
    kms = AnyKeyKms()
    tree = _plain_tree(tmp_path / "plain")
    pq.write_table(TABLE, tmp_path / "plain" / "flat.parquet")      # no partition: fails, the others go on
    cfg = pqseal.EncryptionConfig(footer_key="footer", column_keys={"tenant-{customer_id}": ["ssn", "email"]})
    rep = pqseal.dataset.encrypt(tmp_path / "plain", tmp_path / "enc", cfg, kms=kms, executor=executor, workers=2)
    assert rep.ok == len(tree)
    assert [r.path for r in rep.failed] == ["flat.parquet"] and "UnknownPlaceholder" in rep.failed[0].error
    assert not os.path.exists(tmp_path / "enc" / "flat.parquet")
    # one wrap per distinct resolved master key, all on the driver (threads: workers share this
    # KMS object, so a worker's call would be counted too)
    assert sorted(mk for _, mk in kms.calls) == ["footer", "tenant-1", "tenant-2", "tenant-3", "tenant-7"]
    assert rep.kms_calls == 5
    for rel, t in tree.items():
        out = tmp_path / "enc" / rel
        assert _key_ids(out, kms) == {"footer", f"tenant-{t}"}
        assert _pyarrow_reads(out, kms).equals(pq.read_table(tmp_path / "plain" / rel))


def test_dataset_rekey_resolves_the_new_templates(tmp_path):
    kms = AnyKeyKms()
    tree = _plain_tree(tmp_path / "plain")
    old = pqseal.EncryptionConfig(footer_key="old", uniform_encryption=True)
    assert pqseal.dataset.encrypt(tmp_path / "plain", tmp_path / "enc", old, kms=kms).ok == len(tree)
    new = pqseal.EncryptionConfig(footer_key="tenant-{customer_id}", uniform_encryption=True)
    rep = pqseal.dataset.rekey(tmp_path / "enc", tmp_path / "rekeyed", encryption=new, kms=kms)
    assert rep.ok == len(tree) and not rep.failed
    for rel, t in tree.items():
        assert _key_ids(tmp_path / "rekeyed" / rel, kms) == {f"tenant-{t}"}


def test_cli_encrypt_directory_with_a_template(tmp_path, monkeypatch):
    from pqseal.kms.keystore import LocalKeystore

    monkeypatch.setenv("PQSEAL_KEYSTORE", str(tmp_path / "ks.json"))
    monkeypatch.setenv("PQSEAL_KEYSTORE_PASSPHRASE", "pw")
    ks = LocalKeystore.init(tmp_path / "ks.json", b"pw")
    for k in ("footer", "tenant-1", "tenant-2", "tenant-3", "tenant-7"):
        ks.create(k)
    tree = _plain_tree(tmp_path / "plain")
    res = CliRunner().invoke(cli, ["encrypt", str(tmp_path / "plain"), str(tmp_path / "enc"), "--footer-key",
                                   "footer", "--column-keys", "tenant-{customer_id}:ssn,email"])
    assert res.exit_code == 0, res.output
    for rel, t in tree.items():
        assert _key_ids(tmp_path / "enc" / rel, ks) == {"footer", f"tenant-{t}"}
        assert _pyarrow_reads(tmp_path / "enc" / rel, ks).equals(pq.read_table(tmp_path / "plain" / rel))
