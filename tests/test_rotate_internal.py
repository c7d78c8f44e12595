"""Rotation of files with internal key material by rewriting only the footer
(pqseal.keys.rotation, CryptoFactory.rotate_master_keys, `pqseal rotate`).

Oracles: files are written by pyarrow's CryptoFactory and read back by pyarrow with a
versioned KMS whose old master key versions are retired after the rotation; the data
region (every byte before the footer) is hashed before and after."""

from __future__ import annotations

import base64
import hashlib
import json
import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pyarrow.parquet.encryption as pe
import pytest
from click.testing import CliRunner

import pqseal
from pqseal.errors import RotationInProgress
from pqseal.format import footer_journal
from pqseal.format.footer import rewrite_footer
from pqseal.format.source import Source
from pqseal.keys import CryptoFactory
from pqseal.kms import KmsConnectionConfig

from pyarrow_kms import key_list_client
from test_key_session import PqsealVersioned, VersionedKeys, pyarrow_versioned

COLUMN_KEYS = {"kc1": ["a"], "kc2": ["b", "c"]}


@pytest.fixture(scope="module")
def table():
    n = 3000
    return pa.table({"a": np.arange(n), "b": pa.array([f"x{i % 7}" for i in range(n)]), "c": np.linspace(0, 1, n)})


def new_keys() -> VersionedKeys:
    return VersionedKeys({mk: [os.urandom(16)] for mk in ("kf", "kc1", "kc2")})


def write(table, path, keys, **kw):
    kw.setdefault("footer_key", "kf")
    if not kw.get("uniform_encryption"):
        kw.setdefault("column_keys", COLUMN_KEYS)
    factory = pe.CryptoFactory(pyarrow_versioned(keys))
    props = factory.file_encryption_properties(pe.KmsConnectionConfig(), pe.EncryptionConfiguration(**kw), str(path))
    pq.write_table(table, path, encryption_properties=props)


def read(path, keys):
    props = pe.CryptoFactory(pyarrow_versioned(keys)).file_decryption_properties(
        pe.KmsConnectionConfig(), pe.DecryptionConfiguration(), str(path))
    return pq.read_table(path, decryption_properties=props)


def data_region(path) -> tuple[int, str]:
    with Source(os.fspath(path)) as s:
        offset = s.tail.footer_offset
    with open(path, "rb") as f:
        return offset, hashlib.sha256(f.read(offset)).hexdigest()


def retire_old_versions(keys: VersionedKeys) -> None:
    for versions in keys.versions.values():
        versions[:-1] = [None] * (len(versions) - 1)


def footer_materials(path) -> list[dict]:
    """The internal key material of the footer key and of every column key."""
    found = []
    with Source(os.fspath(path)) as s:
        if s.crypto.plaintext_footer:
            found.append(json.loads(s.fmd["footer_signing_key_metadata"]))
        else:
            found.append(json.loads(s.crypto.footer_key_metadata))
    return found


@pytest.mark.parametrize("algorithm", ["AES_GCM_V1", "AES_GCM_CTR_V1"])
@pytest.mark.parametrize("plaintext_footer", [False, True])
@pytest.mark.parametrize("uniform", [True, False])
def test_rotation_rewrites_only_the_footer(tmp_path, table, algorithm, plaintext_footer, uniform):
    keys = new_keys()
    p = tmp_path / "t.parquet"
    write(table, p, keys, encryption_algorithm=algorithm, plaintext_footer=plaintext_footer,
          uniform_encryption=uniform)
    before = data_region(p)
    old = footer_materials(p)[0]
    for versions in keys.versions.values():   # the KMS rotates every master key
        versions.append(os.urandom(16))
    kms = PqsealVersioned(keys)
    n = CryptoFactory(lambda cfg: kms).rotate_master_keys(KmsConnectionConfig(), p)
    assert n == (1 if uniform else 4)   # footer key, a DEK per encrypted column
    assert data_region(p) == before                          # not a byte of data changed
    assert not os.path.exists(footer_journal.journal_path(str(p)))
    new = footer_materials(p)[0]
    assert new["wrappedKEK"].startswith("v2:") and old["wrappedKEK"].startswith("v1:")
    retire_old_versions(keys)
    assert read(p, keys).equals(table)                      # pyarrow, only the new versions
    pqseal.verify(p, kms=PqsealVersioned(keys))            # every module still authenticates


def test_old_wrapping_no_longer_needed_and_unrotated_file_fails(tmp_path, table):
    """The oracle can fail: an unrotated file does not open once the old versions retire."""
    keys = new_keys()
    a, b = tmp_path / "a.parquet", tmp_path / "b.parquet"
    write(table, a, keys)
    write(table, b, keys)
    for versions in keys.versions.values():
        versions.append(os.urandom(16))
    CryptoFactory(lambda cfg: PqsealVersioned(keys)).rotate_master_keys(KmsConnectionConfig(), a)
    retire_old_versions(keys)
    assert read(a, keys).equals(table)
    with pytest.raises((OSError, ValueError, PermissionError)):
        read(b, keys)


def test_external_material_still_rotates(tmp_path, table):
    keys = new_keys()
    p = tmp_path / "t.parquet"
    write(table, p, keys, internal_key_material=False)
    whole = hashlib.sha256(p.read_bytes()).hexdigest()
    for versions in keys.versions.values():
        versions.append(os.urandom(16))
    assert CryptoFactory(lambda cfg: PqsealVersioned(keys)).rotate_master_keys(KmsConnectionConfig(), p) == 4
    assert hashlib.sha256(p.read_bytes()).hexdigest() == whole   # the Parquet file is not touched
    retire_old_versions(keys)
    assert read(p, keys).equals(table)


def test_kms_calls_one_unwrap_per_kek_and_one_wrap_per_master_key(tmp_path, table):
    keys = new_keys()
    paths = [tmp_path / f"p{i}.parquet" for i in range(4)]
    factory = pe.CryptoFactory(pyarrow_versioned(keys))   # one writer: one KEK per master key
    for p in paths:
        props = factory.file_encryption_properties(pe.KmsConnectionConfig(), pe.EncryptionConfiguration(
            footer_key="kf", column_keys=COLUMN_KEYS), str(p))
        pq.write_table(table, p, encryption_properties=props)
    for versions in keys.versions.values():
        versions.append(os.urandom(16))
    kms = PqsealVersioned(keys)
    cf = CryptoFactory(lambda cfg: kms)
    for p in paths:
        cf.rotate_master_keys(KmsConnectionConfig(), p)
    assert (kms.unwraps, kms.wraps) == (3, 3)
    retire_old_versions(keys)
    for p in paths:
        assert read(p, keys).equals(table)


def _left_journal(tmp_path, table, keys):
    """A file whose footer rewrite was cut after the journal and half the new tail."""
    p = tmp_path / "t.parquet"
    write(table, p, keys)
    good = p.read_bytes()
    offset, _ = data_region(p)
    with footer_journal.locked(str(p), wait=False) as fd:
        footer_journal.write_journal(str(p), fd, offset)
        os.pwrite(fd, b"\0" * 40, offset + 10)   # a torn new tail
        os.ftruncate(fd, offset + 30)
    return p, good


def test_journal_left_by_a_crash_is_restored_by_verify(tmp_path, table):
    keys = new_keys()
    p, good = _left_journal(tmp_path, table, keys)
    with pytest.raises((OSError, ValueError)):
        read(p, keys)                              # pyarrow: the file is broken until pqseal opens it
    pqseal.verify(p, kms=PqsealVersioned(keys))
    assert p.read_bytes() == good and not os.path.exists(footer_journal.journal_path(str(p)))
    assert read(p, keys).equals(table)


def test_journal_left_by_a_crash_is_restored_by_decrypt_and_recover(tmp_path, table):
    keys = new_keys()
    p, good = _left_journal(tmp_path, table, keys)
    out = tmp_path / "out" / "plain.parquet"
    out.parent.mkdir()
    pqseal.decrypt_file(p, out, kms=PqsealVersioned(keys))
    assert pq.read_table(out).equals(table) and p.read_bytes() == good
    d = tmp_path / "d"
    d.mkdir()
    q, good = _left_journal(d, table, keys)
    actions = pqseal.recover(d)
    assert any("restored the footer" in a for a in actions)
    assert q.read_bytes() == good


def test_torn_journal_is_dropped_and_file_untouched(tmp_path, table):
    keys = new_keys()
    p = tmp_path / "t.parquet"
    write(table, p, keys)
    good = p.read_bytes()
    jp = footer_journal.journal_path(str(p))
    with open(jp, "wb") as f:
        f.write(b"PQSEAL-FOOTER-JOURNAL-1\n\1\2")   # cut while written: before the file was touched
    pqseal.verify(p, kms=PqsealVersioned(keys))
    assert not os.path.exists(jp) and p.read_bytes() == good


def test_concurrent_rotation_is_refused(tmp_path, table):
    keys = new_keys()
    p = tmp_path / "t.parquet"
    write(table, p, keys)
    good = p.read_bytes()
    with footer_journal.locked(str(p), wait=False):   # another rotation holds the lock
        with pytest.raises(RotationInProgress):
            CryptoFactory(lambda cfg: PqsealVersioned(keys)).rotate_master_keys(KmsConnectionConfig(), p)
    assert p.read_bytes() == good


def test_explicit_key_file_is_refused(tmp_path, table):
    from pqseal.errors import UnsupportedFeature
    from pqseal.format.properties import DecryptionProperties
    from pqseal.keys.rotation import rotate_internal

    from pqseal.format.properties import EncryptionProperties

    fk = os.urandom(16)
    p, plain = tmp_path / "x.parquet", tmp_path / "plain.parquet"
    pq.write_table(table, plain)
    pqseal.encrypt_file(plain, p, EncryptionProperties(fk))
    good = p.read_bytes()
    with pytest.raises(UnsupportedFeature):
        rotate_internal(p, DecryptionProperties(fk), lambda m: m)
    assert p.read_bytes() == good
    rewrite_footer(p, DecryptionProperties(fk), lambda f: None, journal=True)   # the journaled path itself
    assert not os.path.exists(footer_journal.journal_path(str(p)))


def test_cli_rotate_file_with_internal_material(tmp_path, table):
    from pqseal.cli import main as cli

    kl = "kf: " + base64.b64encode(os.urandom(16)).decode() + ", kc1: " + base64.b64encode(os.urandom(16)).decode()
    plain, p = tmp_path / "plain.parquet", tmp_path / "s.parquet"
    pq.write_table(table, plain)
    runner = CliRunner()
    r = runner.invoke(cli, ["encrypt", str(plain), str(p), "--key-list", kl, "--footer-key", "kf",
                            "--column-keys", "kc1:a"])
    assert r.exit_code == 0, r.output
    before, md = data_region(p), footer_materials(p)[0]
    r = runner.invoke(cli, ["rotate", str(p), "--key-list", kl])
    assert r.exit_code == 0, r.output
    assert r.output.strip() == f"rotated 2 keys of {p}"
    assert data_region(p) == before and footer_materials(p)[0]["wrappedDEK"] != md["wrappedDEK"]
    client = key_list_client({k: base64.b64decode(v) for k, v in (e.split(": ") for e in kl.split(", "))})
    props = pe.CryptoFactory(client).file_decryption_properties(pe.KmsConnectionConfig(),
                                                                pe.DecryptionConfiguration(), str(p))
    assert pq.read_table(p, decryption_properties=props).equals(table)


@pytest.mark.parametrize("executor", ["threads", "processes"])
def test_dataset_rotation_of_internal_material(tmp_path, table, executor):
    """`pqseal.dataset.rotate` (the DIR form of `pqseal rotate`): footers rewritten by the
    workers with the session's keys; KMS calls on the driver only: one unwrap per KEK,
    one wrap per master key."""
    keys = new_keys()
    factory = pe.CryptoFactory(pyarrow_versioned(keys))   # one writer: one KEK per master key
    paths = []
    for i in range(6):
        p = tmp_path / f"part={i % 2}" / f"f{i}.parquet"
        p.parent.mkdir(exist_ok=True)
        props = factory.file_encryption_properties(pe.KmsConnectionConfig(), pe.EncryptionConfiguration(
            footer_key="kf", column_keys=COLUMN_KEYS, plaintext_footer=i == 3), str(p))
        pq.write_table(table, p, encryption_properties=props)
        paths.append(p)
    before = {p: data_region(p) for p in paths}
    for versions in keys.versions.values():
        versions.append(os.urandom(16))
    kms = PqsealVersioned(keys)
    rep = pqseal.dataset.rotate(tmp_path, kms=kms, executor=executor, workers=2)
    assert len(rep.ok) == 6 and not rep.failed, rep
    assert (kms.unwraps, kms.wraps) == (3, 3)
    retire_old_versions(keys)
    for p in paths:
        assert data_region(p) == before[p]
        assert read(p, keys).equals(table)


def test_pqseal_rotate_api(tmp_path, table):
    keys = new_keys()
    p = tmp_path / "t.parquet"
    write(table, p, keys, plaintext_footer=True)
    before = data_region(p)
    for versions in keys.versions.values():
        versions.append(os.urandom(16))
    kms = PqsealVersioned(keys)   # one client: the process shares one factory for it
    assert pqseal.rotate(p, kms=kms) == 4
    keys.versions["kf"].append(os.urandom(16))   # rotated again: the next rotation wraps under v3
    assert pqseal.rotate(p, kms=kms) == 4
    assert footer_materials(p)[0]["wrappedKEK"].startswith("v3:")
    retire_old_versions(keys)
    assert data_region(p) == before and read(p, keys).equals(table)
