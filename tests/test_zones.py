"""Encryption zones (issue 9, item 5): policy selection, refused renames, zones over
existing plaintext Parquet, the zones file, and ``pqseal zone``."""

from __future__ import annotations

import base64
import io
import json
import multiprocessing
import os
import stat

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pyarrow.parquet.encryption as pe
import pytest
from click.testing import CliRunner

import interop
from pme_reference import RefFile
from pqseal.arrow import crypto_factory
from pqseal.cli import main
from pqseal.errors import KeyNotFound
from pqseal.io import zones as Z
from pqseal.io.zones import ZoneError, ZonePolicy, ZonesFileError, check_rename, policy_for
from pqseal.keys import clear_caches
from pqseal.kms import KeyListKms
from pqseal.kms.keystore import LocalKeystore

MASTER = {"footer": bytes(range(16)), "pii": bytes(range(16, 32))}
KL = ", ".join(f"{k}: {base64.b64encode(v).decode()}" for k, v in MASTER.items())
KMS = KeyListKms(KL)
TABLE = pa.table({"id": np.arange(300), "email": [f"u{i}@x.org" for i in range(300)]})


@pytest.fixture(autouse=True)
def env(monkeypatch, tmp_path):
    """No zones file, keystore or key list of the user's: every test names its own."""
    for name in ("PQSEAL_ZONES", "PQSEAL_KEY_LIST", "PQSEAL_KEYSTORE_PASSPHRASE_FILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PQSEAL_KEYSTORE", str(tmp_path / "conf" / "keystore.json"))
    clear_caches()
    yield
    clear_caches()


@pytest.fixture
def zf(tmp_path):
    return str(tmp_path / "zones.json")


def pyarrow_reads(path) -> pa.Table:
    """The independent reader: pyarrow's own decryption, keys from the KMS via the file's key material."""
    props = crypto_factory(lambda cfg: KMS).file_decryption_properties(pe.KmsConnectionConfig(),
                                                                      pe.DecryptionConfiguration(), str(path))
    return pq.read_table(path, decryption_properties=props)


def zone(path, **kw) -> ZonePolicy:
    return ZonePolicy(path=Z.location(path).text, footer_key="footer", **kw)


# ---- policy selection ------------------------------------------------------------------------


def test_deepest_zone_wins_and_matching_is_by_component(tmp_path):
    a, ab = tmp_path / "data" / "a", tmp_path / "data" / "a" / "b"
    zones = [zone(a), zone(ab, algorithm="AES_GCM_CTR_V1"), zone(tmp_path / "data" / "x", column_keys="pii:email")]
    assert policy_for(a / "f.parquet", zones=zones).path == str(a)
    assert policy_for(a, zones=zones).path == str(a)                      # the root itself
    assert policy_for(ab / "c" / "f.parquet", zones=zones).path == str(ab)
    assert policy_for(ab, zones=zones).algorithm == "AES_GCM_CTR_V1"
    assert policy_for(a / "bc" / "f.parquet", zones=zones).path == str(a)  # b is a component, bc is not b
    assert policy_for(tmp_path / "data" / "ab", zones=zones) is None
    assert policy_for(tmp_path / "data", zones=zones) is None
    assert policy_for(str(a) + "/", zones=zones).path == str(a)
    assert policy_for(a / "b" / ".." / "f", zones=zones).path == str(a)
    # the order of the zones does not matter
    assert policy_for(ab / "f", zones=list(reversed(zones))).path == str(ab)


def test_url_and_chained_forms(tmp_path):
    a = tmp_path / "a"
    zones = [zone(a), ZonePolicy(path="memory://bucket/p", footer_key="footer"),
             ZonePolicy(path="s3://bucket/p/q", footer_key="footer")]
    for form in (f"file://{a}/f.parquet", f"pqseal::file://{a}/f.parquet", f"FILE://{a}/d/f.parquet",
                 f"file://localhost{a}/f.parquet", f"pqseal::simplecache::file://{a}/f.parquet"):
        assert policy_for(form, zones=zones).path == str(a), form
    assert policy_for(f"pqseal::file://{tmp_path}/ab/f.parquet", zones=zones) is None
    for form in ("memory://bucket/p/f.parquet", "memory:///bucket/p/f.parquet", "pqseal::memory://bucket/p/x/y",
                 "memory://bucket//p/f"):
        assert policy_for(form, zones=zones).path == "memory://bucket/p", form
    assert policy_for("memory://bucket/pq/f", zones=zones) is None
    assert policy_for("s3a://bucket/p/q/f.parquet", zones=zones).path == "s3://bucket/p/q"   # s3a is s3
    assert policy_for("s3://bucket/p/f.parquet", zones=zones) is None
    assert policy_for("gs://bucket/p/q/f.parquet", zones=zones) is None    # another store
    assert policy_for(f"memory://{a}/f", zones=zones) is None              # a local root is not a memory path
    with pytest.raises(ZoneError, match=r"'\.\.'"):
        policy_for("memory://bucket/p/../q/f", zones=zones)


def test_symlinks_are_resolved(tmp_path):
    real = tmp_path / "real"
    real.mkdir()
    os.symlink(real, tmp_path / "link")
    zones = [zone(tmp_path / "link")]                   # stored resolved
    assert zones[0].path == str(real)
    assert policy_for(tmp_path / "link" / "f.parquet", zones=zones).path == str(real)
    assert policy_for(real / "f.parquet", zones=zones).path == str(real)


def test_policy_encryption_config():
    cfg = ZonePolicy(path="/z", footer_key="footer").encryption_config()
    assert cfg.uniform_encryption and cfg.column_keys is None and cfg.footer_key == "footer"
    cfg = ZonePolicy(path="/z", footer_key="f", column_keys="pii:email,ssn; k2:x", algorithm="AES_GCM_CTR_V1",
                     plaintext_footer=True, internal_key_material=False, data_key_length_bits=256).encryption_config()
    assert not cfg.uniform_encryption and cfg.column_keys == {"pii": ["email", "ssn"], "k2": ["x"]}
    assert (cfg.encryption_algorithm, cfg.plaintext_footer, cfg.internal_key_material,
            cfg.data_key_length_bits) == ("AES_GCM_CTR_V1", True, False, 256)
    for bad, match in (({"algorithm": "AES_CBC"}, "encryption_algorithm"), ({"column_keys": "pii"}, "mapping"),
                       ({"column_keys": "a:x;b:x"}, "multiple keys"), ({"data_key_length_bits": 100}, "128, 192"),
                       ({"footer_key": ""}, "footer_key"), ({"plaintext_footer": "yes"}, "true or false")):
        with pytest.raises(ZoneError, match=match):
            ZonePolicy(**{"path": "/z", "footer_key": "f", **bad})


# ---- renames ---------------------------------------------------------------------------------


def test_check_rename(tmp_path):
    a, ab, c = tmp_path / "a", tmp_path / "a" / "b", tmp_path / "c"
    zones = [zone(a), zone(ab), zone(c)]
    check_rename(a / "x.parquet", a / "d" / "y.parquet", zones=zones)           # within a zone
    check_rename(ab / "x", ab / "y", zones=zones)
    check_rename(tmp_path / "n1", tmp_path / "n2", zones=zones)                # outside every zone
    check_rename("memory://m/x", "memory://m/y", zones=zones)
    for src, dst in ((ab / "x", a / "x"), (a / "x", ab / "x"), (a / "x", c / "x"), (a / "x", tmp_path / "x"),
                     (tmp_path / "x", a / "x"), (a, tmp_path / "a2"), (f"file://{a}/x", f"pqseal::file://{c}/x"),
                     (a / "x", f"memory://{a}/x")):
        with pytest.raises(ZoneError, match="refusing to rename"):
            check_rename(src, dst, zones=zones)
    # a directory holding a zone's root: the zone would not move with it
    with pytest.raises(ZoneError, match=f"holds zone {ab}"):
        check_rename(a, a / "elsewhere", zones=zones)
    with pytest.raises(ZoneError, match="holds zone"):
        check_rename(tmp_path / "n", tmp_path / "m", zones=[zone(tmp_path / "n" / "z")])


# ---- creating zones over existing files ------------------------------------------------------


def write_plain(path):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    pq.write_table(TABLE, path)


def test_create_refuses_plaintext_parquet_and_encrypt_existing_seals_it(tmp_path, zf):
    d = tmp_path / "d"
    write_plain(d / "p1.parquet")
    write_plain(d / "sub" / "no-suffix")              # found by content, not by name
    (d / "notes.txt").write_bytes(b"PAR is not enough")
    (d / "sub" / "other.bin").write_bytes(b"PAR2" + b"x" * 20)
    write_plain(tmp_path / "outside.parquet")
    os.symlink(tmp_path / "outside.parquet", d / "link.parquet")     # links are not followed
    with pytest.raises(ZoneError, match=r"holds 2 plaintext Parquet file\(s\).*--encrypt-existing"):
        Z.create_zone(d, "footer", column_keys="pii:email", kms=KMS, zones=zf)
    assert not os.path.exists(zf) and Z.list_zones(zones=zf) == []
    assert pq.read_table(d / "p1.parquet").equals(TABLE)       # untouched

    before = {p: (d / p).read_bytes() for p in ("notes.txt", "sub/other.bin")}
    done = Z.create_zone(d, "footer", column_keys="pii:email", algorithm="AES_GCM_CTR_V1", encrypt_existing=True,
                         kms=KMS, zones=zf)
    assert sorted(done.sealed) == sorted([str(d / "p1.parquet"), str(d / "sub" / "no-suffix")])
    assert [z.path for z in Z.list_zones(zones=zf)] == [str(d)]
    for p in done.sealed:
        with pytest.raises(OSError):          # pyarrow without keys cannot read it
            pq.read_table(p)
        assert pyarrow_reads(p).equals(TABLE)
        ref = RefFile(p)
        assert ref.magic == b"PARE" and "AES_GCM_CTR_V1" in ref.algorithm_union
    for p, b in before.items():
        assert (d / p).read_bytes() == b
    assert sorted(os.listdir(d)) == ["link.parquet", "notes.txt", "p1.parquet", "sub"]   # nothing else written
    assert os.path.islink(d / "link.parquet") and pq.read_table(tmp_path / "outside.parquet").equals(TABLE)


def test_encrypt_existing_leaves_encrypted_files_and_inner_zones_alone(tmp_path, zf):
    d = tmp_path / "d"
    write_plain(d / "inner" / "p.parquet")
    Z.create_zone(d / "inner", "footer", encrypt_existing=True, kms=KMS, zones=zf)
    sealed_inner = (d / "inner" / "p.parquet").read_bytes()
    write_plain(d / "q.parquet")
    Z.create_zone(d / "q2", "footer", kms=KMS, zones=zf)       # a zone whose directory does not exist yet
    done = Z.create_zone(d, "footer", column_keys="pii:email", encrypt_existing=True, kms=KMS, zones=zf)
    assert done.sealed == [str(d / "q.parquet")]
    assert (d / "inner" / "p.parquet").read_bytes() == sealed_inner
    # a plaintext file inside a nested zone is that zone's business, not the new outer one's
    d2 = tmp_path / "d2"
    write_plain(d2 / "in" / "p.parquet")
    Z.create_zone(d2 / "in", "footer", encrypt_existing=True, kms=KMS, zones=zf)
    write_plain(d2 / "in" / "late.parquet")
    assert Z.create_zone(d2, "footer", kms=KMS, zones=zf).sealed == []


def test_encrypt_existing_with_external_key_material(tmp_path, zf):
    d = tmp_path / "d"
    write_plain(d / "p.parquet")
    Z.create_zone(d, "footer", column_keys="pii:email", internal_key_material=False, plaintext_footer=True,
                  encrypt_existing=True, kms=KMS, zones=zf)
    assert sorted(os.listdir(d)) == ["_KEY_MATERIAL_FOR_p.parquet.json", "p.parquet"]
    assert RefFile(d / "p.parquet").magic == b"PAR1"        # signed plaintext footer
    assert pyarrow_reads(d / "p.parquet").equals(TABLE)


def test_files_that_cannot_be_sealed_stop_the_zone(tmp_path, zf):
    d = tmp_path / "d"
    write_plain(d / "good.parquet")
    (d / "broken.parquet").write_bytes(b"PAR1" + b"\0" * 64)   # starts like Parquet: may hold plaintext
    with pytest.raises(ZoneError, match="1 of 2 plaintext Parquet file.*could not be sealed") as e:
        Z.create_zone(d, "footer", encrypt_existing=True, kms=KMS, zones=zf)
    assert [f for f, _ in e.value.failed] == [str(d / "broken.parquet")]
    assert Z.list_zones(zones=zf) == []
    assert pyarrow_reads(d / "good.parquet").equals(TABLE)          # sealed, and stays so
    os.unlink(d / "broken.parquet")
    assert Z.create_zone(d, "footer", encrypt_existing=True, kms=KMS, zones=zf).sealed == []


def test_create_checks_keys_and_refuses_existing_zone(tmp_path, zf):
    d = tmp_path / "d"
    with pytest.raises(KeyNotFound, match="nokey"):
        Z.create_zone(d, "footer", column_keys="nokey:email", kms=KMS, zones=zf)
    assert not os.path.exists(zf)
    Z.create_zone(d, "footer", kms=KMS, zones=zf)
    with pytest.raises(ZoneError, match="exists; pass replace=True"):
        Z.create_zone(str(d) + "/", "pii", kms=KMS, zones=zf)
    Z.create_zone(d, "pii", replace=True, kms=KMS, zones=zf)
    assert policy_for(d / "f", zones=zf).footer_key == "pii"
    (tmp_path / "file").write_bytes(b"")
    with pytest.raises(ZoneError, match="not a directory"):
        Z.create_zone(tmp_path / "file", "footer", kms=KMS, zones=zf)
    assert Z.delete_zone(d, zones=zf).footer_key == "pii"
    with pytest.raises(ZoneError, match="no zone is rooted"):
        Z.delete_zone(d, zones=zf)
    Z.create_zone(d, "footer", kms=KMS, zones=zf)
    with pytest.raises(ZoneError, match=f"no zone is rooted at {d}/sub .it lies in zone {d}"):
        Z.delete_zone(d / "sub", zones=zf)


def test_fsspec_zone_over_existing_files(zf):
    fsspec = interop.require("fsspec")
    fs = fsspec.filesystem("memory")
    buf = io.BytesIO()
    pq.write_table(TABLE, buf)
    fs.pipe("/zt/p/f.parquet", buf.getvalue())
    fs.pipe("/zt/p/readme", b"text")
    try:
        with pytest.raises(ZoneError, match="plaintext Parquet"):
            Z.create_zone("memory://zt/p", "footer", kms=KMS, zones=zf)
        with pytest.raises(ZoneError, match="external key material is written beside local files only"):
            Z.create_zone("memory://zt/p", "footer", internal_key_material=False, encrypt_existing=True, kms=KMS,
                          zones=zf)
        done = Z.create_zone("pqseal::memory://zt/p/", "footer", encrypt_existing=True, kms=KMS,
                             zones=zf)
        assert done.sealed == ["memory://zt/p/f.parquet"]
        zones = Z.list_zones(zones=zf)
        assert done.policy.path == "memory://zt/p" and [z.path for z in zones] == ["memory://zt/p"]
        assert sorted(fs.ls("/zt/p", detail=False)) == ["/zt/p/f.parquet", "/zt/p/readme"]
        data = fs.cat("/zt/p/f.parquet")
        assert data[-4:] == b"PARE" and fs.cat("/zt/p/readme") == b"text"
        props = crypto_factory(lambda cfg: KMS).file_decryption_properties(pe.KmsConnectionConfig(),
                                                                          pe.DecryptionConfiguration())
        assert pq.read_table(pa.BufferReader(data), decryption_properties=props).equals(TABLE)
    finally:
        fs.rm("/zt", recursive=True)


# ---- the zones file --------------------------------------------------------------------------


def test_default_zones_file_beside_keystore_and_env(tmp_path, monkeypatch):
    assert Z.zones_file() == str(tmp_path / "conf" / "zones.json")
    Z.create_zone(tmp_path / "d", "footer", kms=KMS)
    assert policy_for(tmp_path / "d" / "f").path == str(tmp_path / "d")
    doc = json.loads((tmp_path / "conf" / "zones.json").read_text())
    assert doc == {"format": "pqseal-zones-1", "zones": [{
        "path": str(tmp_path / "d"), "footer_key": "footer", "column_keys": None, "algorithm": "AES_GCM_V1",
        "plaintext_footer": False, "internal_key_material": True, "data_key_length_bits": 128}]}
    monkeypatch.setenv("PQSEAL_ZONES", str(tmp_path / "other.json"))
    assert Z.zones_file() == str(tmp_path / "other.json")
    assert policy_for(tmp_path / "d" / "f") is None


def test_zones_file_written_atomically(tmp_path, zf, monkeypatch):
    Z.create_zone(tmp_path / "a", "footer", kms=KMS, zones=zf)
    assert stat.S_IMODE(os.stat(zf).st_mode) & 0o022 == 0
    before = open(zf, "rb").read()

    def boom(*a, **k):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError, match="No space"):
        Z.create_zone(tmp_path / "b", "footer", kms=KMS, zones=zf)
    monkeypatch.undo()
    assert open(zf, "rb").read() == before                     # the old file, whole
    assert sorted(os.listdir(tmp_path)) == ["zones.json", "zones.json.lock"]   # no temporary file left
    assert [z.path for z in Z.list_zones(zones=zf)] == [str(tmp_path / "a")]


def _create_many(zf, base, worker):
    for i in range(5):
        Z.create_zone(os.path.join(base, f"w{worker}-{i}"), "footer", kms=KMS, zones=zf)


def test_concurrent_writers_lose_no_zone(tmp_path, zf):
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_create_many, args=(zf, str(tmp_path), w)) for w in range(6)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    assert len(Z.list_zones(zones=zf)) == 30


def test_changes_by_others_are_seen(tmp_path, zf):
    Z.create_zone(tmp_path / "a", "footer", kms=KMS, zones=zf)
    assert policy_for(tmp_path / "a" / "f", zones=zf).footer_key == "footer"
    doc = json.loads(open(zf).read())
    doc["zones"][0]["footer_key"] = "pii"          # edited by hand, in place
    with open(zf, "w") as f:
        json.dump(doc, f)
    assert policy_for(tmp_path / "a" / "f", zones=zf).footer_key == "pii"


@pytest.mark.parametrize("content,match", [
    (b"{not json", "not valid JSON"),
    (b"\xff\xfe", "not valid JSON"),
    (b"[]", "not a pqseal-zones-1 file"),
    (b'{"format": "pqseal-zones-9", "zones": []}', "not a pqseal-zones-1 file"),
    (b'{"format": "pqseal-zones-1", "zones": {}}', "not a pqseal-zones-1 file"),
    (b'{"format": "pqseal-zones-1", "zones": [1]}', "entry 0 is not an object"),
    (b'{"format": "pqseal-zones-1", "zones": [{"path": "/z", "footer_key": "f", "colour": 1}]}', "unknown field"),
    (b'{"format": "pqseal-zones-1", "zones": [{"path": "/z"}]}', "entry 0"),
    (b'{"format": "pqseal-zones-1", "zones": [{"path": "/z", "footer_key": "f", "algorithm": "X"}]}', "entry 0"),
    (b'{"format": "pqseal-zones-1", "zones": [{"path": "/z", "footer_key": 7}]}', "entry 0"),
    (b'{"format": "pqseal-zones-1", "zones": [{"path": "z/", "footer_key": "f"}]}', "not normalized"),
    (b'{"format": "pqseal-zones-1", "zones": [{"path": "/z", "footer_key": "f"}, '
     b'{"path": "/z", "footer_key": "g"}]}', "listed twice"),
])
def test_malformed_zones_file(zf, content, match):
    with open(zf, "wb") as f:
        f.write(content)
    os.chmod(zf, 0o644)
    for call in (lambda: policy_for("/z/f", zones=zf), lambda: Z.list_zones(zones=zf),
                 lambda: Z.create_zone("/nonexistent/zz", "footer", kms=KMS, zones=zf)):
        with pytest.raises(ZonesFileError, match=match) as e:
            call()
        assert zf in str(e.value)
    r = CliRunner().invoke(main, ["zone", "--zones", zf, "show", "/z/f"])
    assert_one_line_error(r, 1, "ZonesFileError", zf)
    assert open(zf, "rb").read() == content      # never rewritten


def test_zones_file_others_may_change_is_refused(tmp_path, zf, monkeypatch):
    Z.create_zone(tmp_path / "a", "footer", kms=KMS, zones=zf)
    os.chmod(zf, 0o666)
    with pytest.raises(ZonesFileError, match="writable by group or others"):
        policy_for(tmp_path / "a" / "f", zones=zf)
    os.chmod(zf, 0o644)
    if os.getuid() == 0:
        os.chown(zf, 12345, -1)          # root's own files are trusted: give it to someone else
    else:
        monkeypatch.setattr(os, "getuid", lambda: os.stat(zf).st_uid + 1)     # look as another user
    owner = os.stat(zf).st_uid
    with pytest.raises(ZonesFileError, match=f"belongs to another user .uid {owner}"):
        policy_for(tmp_path / "a" / "f", zones=zf)


# ---- the command line ------------------------------------------------------------------------


def assert_one_line_error(r, code, *needles):
    assert r.exit_code == code, (r.exit_code, r.output)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("pqseal: error: "), r.stderr
    assert "Traceback" not in r.output
    for n in needles:
        assert n in lines[0], (n, lines[0])


@pytest.fixture
def keystore(tmp_path, monkeypatch):
    path = tmp_path / "conf" / "keystore.json"
    os.makedirs(path.parent)
    ks = LocalKeystore.init(path, b"pw-zones")
    ks.create("footer")
    ks.create("pii", 128)
    monkeypatch.setenv("PQSEAL_KEYSTORE_PASSPHRASE", "pw-zones")
    return ks


def test_cli_round_trip(tmp_path, keystore):
    r = CliRunner()
    d = tmp_path / "data"
    res = r.invoke(main, ["zone", "create", str(d), "--footer-key", "footer", "--column-keys", "pii:email",
                          "--algorithm", "AES_GCM_CTR_V1", "--plaintext-footer", "--external-key-material",
                          "--data-key-length", "256"])
    assert res.exit_code == 0 and res.stdout == f"created zone {d}\n", res.output
    res = r.invoke(main, ["zone", "create", str(d / "inner"), "--footer-key", "pii"])
    assert res.exit_code == 0, res.output
    res = r.invoke(main, ["zone", "list", "--json"])
    assert res.exit_code == 0
    assert json.loads(res.stdout) == [
        {"path": str(d), "footer_key": "footer", "column_keys": "pii:email", "algorithm": "AES_GCM_CTR_V1",
         "plaintext_footer": True, "internal_key_material": False, "data_key_length_bits": 256},
        {"path": str(d / "inner"), "footer_key": "pii", "column_keys": None, "algorithm": "AES_GCM_V1",
         "plaintext_footer": False, "internal_key_material": True, "data_key_length_bits": 128}]
    res = r.invoke(main, ["zone", "list"])
    assert res.exit_code == 0 and f"{d}\n  footer key     footer\n" in res.stdout and "AES_GCM_CTR_V1" in res.stdout
    res = r.invoke(main, ["zone", "show", str(d / "inner" / "x" / "f.parquet"), "--json"])
    out = json.loads(res.stdout)
    assert out["zone"] == str(d / "inner") and out["policy"]["footer_key"] == "pii"
    assert out["path"] == str(d / "inner" / "x" / "f.parquet")
    res = r.invoke(main, ["zone", "show", f"pqseal::file://{d}/y.parquet"])
    assert res.exit_code == 0 and res.stdout.startswith(f"{d}/y.parquet is in zone {d}\n")
    assert "external (beside each file)" in res.stdout
    res = r.invoke(main, ["zone", "show", str(tmp_path / "dat"), "--json"])
    assert json.loads(res.stdout) == {"path": str(tmp_path / "dat"), "zone": None, "policy": None}
    res = r.invoke(main, ["zone", "delete", str(d / "inner")])
    assert res.exit_code == 0 and res.stdout == f"deleted zone {d / 'inner'} (its files are unchanged)\n"
    assert [z.path for z in Z.list_zones()] == [str(d)]            # the default file: beside the keystore
    res = r.invoke(main, ["zone", "delete", str(d)])
    assert res.exit_code == 0
    assert r.invoke(main, ["zone", "list"]).stdout == "no zones\n"


def test_cli_errors(tmp_path, keystore):
    r = CliRunner()
    zf = str(tmp_path / "z.json")
    d = tmp_path / "data"
    write_plain(d / "p.parquet")
    args = ["zone", "--zones", zf, "create", str(d), "--footer-key", "footer"]
    assert_one_line_error(r.invoke(main, args), 1, "ZoneError", "plaintext Parquet", "--encrypt-existing")
    res = r.invoke(main, args + ["--encrypt-existing"])
    assert res.exit_code == 0
    assert res.stdout == f"sealed {d / 'p.parquet'}\ncreated zone {d} (1 existing files sealed)\n"
    assert_one_line_error(r.invoke(main, args), 1, "ZoneError", "exists", "--force")
    assert r.invoke(main, args + ["--force", "--algorithm", "AES_GCM_CTR_V1"]).exit_code == 0
    assert Z.policy_for(d, zones=zf).algorithm == "AES_GCM_CTR_V1"
    assert_one_line_error(r.invoke(main, ["zone", "--zones", zf, "create", str(tmp_path / "e")]), 2, "--footer-key")
    assert_one_line_error(r.invoke(main, ["zone", "--zones", zf, "create", str(tmp_path / "e"), "--footer-key", "f",
                                          "--algorithm", "AES"]), 2, "--algorithm")
    assert_one_line_error(r.invoke(main, ["zone", "--zones", zf, "create", str(tmp_path / "e"), "--footer-key",
                                          "footer", "--column-keys", "pii"]), 1, "ZoneError", "mapping")
    assert_one_line_error(r.invoke(main, ["zone", "--zones", zf, "create", str(tmp_path / "e"), "--footer-key",
                                          "nokey"]), 1, "KeyNotFound", "nokey")
    assert_one_line_error(r.invoke(main, ["zone", "--zones", zf, "delete", str(tmp_path / "e")]), 1,
                          "no zone is rooted")
    assert_one_line_error(r.invoke(main, ["zone", "--zones", zf, "create", str(tmp_path / "e"), "--footer-key",
                                          "footer"], env={"PQSEAL_KEYSTORE_PASSPHRASE": "wrong"}), 1,
                          "wrong passphrase")
    res = r.invoke(main, ["zone", "--zones", zf, "create", str(tmp_path / "k"), "--footer-key", "footer",
                          "--key-list", KL])
    assert res.exit_code == 0, res.output
    # files that cannot be sealed: one line each, then the summary
    (tmp_path / "f").mkdir()
    (tmp_path / "f" / "bad.parquet").write_bytes(b"PAR1" + b"\0" * 32)
    res = r.invoke(main, ["zone", "--zones", zf, "create", str(tmp_path / "f"), "--footer-key", "footer",
                          "--encrypt-existing"])
    lines = res.stderr.strip().splitlines()
    assert res.exit_code == 1 and len(lines) == 2, res.stderr
    assert lines[0].startswith(f"pqseal: error: {tmp_path / 'f' / 'bad.parquet'}: ")
    assert lines[1].startswith("pqseal: error: ZoneError: zone ") and "could not be sealed" in lines[1]
