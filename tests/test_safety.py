"""Failure paths of the file API: existing outputs, key material commits, interrupted
runs, plaintext on disk, modes, and what a killed run leaves (issue "Safe by
construction", defects 1, 2, 3, 7 and 14). Oracles: pyarrow reads (with the KMS through
its own CryptoFactory), file bytes and directory listings, never pqseal's reader alone."""

from __future__ import annotations

import base64
import errno
import io
import json
import os
import stat
import subprocess
import sys
import textwrap

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pyarrow.parquet.encryption as pe
import pytest

import pqseal
from pqseal import _cancel
from pqseal._io import is_temp_name
from pqseal.config import DecryptionConfig, EncryptionConfig
from pqseal.errors import KeyNotFound, OutputExists
from pqseal.format import AlreadyEncrypted, DecryptionProperties, EncryptionProperties
from pqseal.keys import clear_caches
from pqseal.kms import KeyListKms

MASTER = {"kf": bytes(range(16)), "kc": bytes(range(16, 32))}
KEY_LIST = ", ".join(f"{k}: {base64.b64encode(v).decode()}" for k, v in MASTER.items())
MARKER = "plaintext-marker-7f3a9c"
K16 = bytes(range(40, 56))


@pytest.fixture(autouse=True)
def fresh():
    clear_caches()
    _cancel.reset()
    yield
    _cancel.reset()


@pytest.fixture
def table():
    n = 20_000
    return pa.table({"id": np.arange(n), "ssn": [f"{MARKER}-{i:06d}" for i in range(n)],
                     "amount": np.arange(n) * 0.5})


@pytest.fixture
def plain(tmp_path, table):
    p = tmp_path / "in" / "plain.parquet"
    p.parent.mkdir()
    pq.write_table(table, p, row_group_size=5_000)
    return p


def kms():
    return KeyListKms(KEY_LIST)


def ext_cfg(**kw):
    return EncryptionConfig("kf", column_keys={"kc": ["ssn"]}, internal_key_material=False, **kw)


def pa_read(path):
    """pyarrow reads a PME file through its own CryptoFactory (an independent reader),
    with the key list's master keys."""
    from pqseal.arrow import crypto_factory

    props = crypto_factory(lambda cfg: kms()).file_decryption_properties(pe.KmsConnectionConfig(),
                                                                        pe.DecryptionConfiguration(), str(path))
    return pq.read_table(path, decryption_properties=props)


def material(path):
    return path.parent / f"_KEY_MATERIAL_FOR_{path.name}.json"


def snapshot(d):
    return {p.name: p.read_bytes() for p in sorted(d.iterdir()) if p.is_file()}


# ---- defect 1: key material is never lost -------------------------------------------------


def test_failed_encrypt_onto_existing_destination_keeps_its_material(tmp_path, plain, table):
    out = tmp_path / "sealed.parquet"
    pqseal.encrypt_file(plain, out, ext_cfg(), kms=kms())
    assert material(out).exists() and pa_read(out).equals(table)
    before = snapshot(tmp_path)
    bad = EncryptionConfig("kf", column_keys={"kc": ["no_such_column"]}, internal_key_material=False)
    with pytest.raises(ValueError, match="no_such_column"):
        pqseal.encrypt_file(plain, out, bad, kms=kms(), overwrite=True)
    with pytest.raises(AlreadyEncrypted):
        pqseal.encrypt_file(out, out, ext_cfg(), kms=kms(), in_place=True)
    assert snapshot(tmp_path) == before
    assert pa_read(out).equals(table)


def test_interrupted_encrypt_keeps_destination_and_material(tmp_path, plain, table, monkeypatch):
    out = tmp_path / "sealed.parquet"
    pqseal.encrypt_file(plain, out, ext_cfg(), kms=kms())
    before = snapshot(tmp_path)
    from pqseal.format import source

    calls = {"n": 0}
    real = source.Source.read_chunk

    def interrupting(self, *a, **kw):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(self, *a, **kw)

    monkeypatch.setattr(source.Source, "read_chunk", interrupting)
    with pytest.raises(KeyboardInterrupt):
        pqseal.encrypt_file(plain, out, ext_cfg(), kms=kms(), overwrite=True)
    assert calls["n"] == 3
    assert snapshot(tmp_path) == before
    assert pa_read(out).equals(table)


def test_failed_rekey_leaves_no_material(tmp_path, plain):
    sealed = tmp_path / "a.parquet"
    pqseal.encrypt_file(plain, sealed, EncryptionProperties(K16))
    from pqseal.keys import CryptoFactory
    from pqseal.kms import KmsConnectionConfig

    b = tmp_path / "b.parquet"
    cfg = EncryptionConfig("kf", column_keys={"kc": ["nope"]}, complete_columns=True, internal_key_material=False)
    new = CryptoFactory(lambda c: kms()).file_encryption_properties(KmsConnectionConfig(), cfg, b)
    with pytest.raises(ValueError, match="nope"):  # found once the data is being written
        pqseal.rekey_file(sealed, b, DecryptionProperties(K16), new)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.parquet", "in"]


def test_rekey_with_configs_both_sides(tmp_path, plain, table):
    a, b = tmp_path / "a.parquet", tmp_path / "b.parquet"
    pqseal.encrypt_file(plain, a, EncryptionConfig("kf", column_keys={"kc": ["ssn"]}), kms=kms())
    pqseal.rekey_file(a, b, DecryptionConfig(), ext_cfg(encryption_algorithm="AES_GCM_CTR_V1"), kms=kms())
    assert pa_read(b).equals(table)
    assert json.loads(material(b).read_text())["footerKey"]


_DIE = textwrap.dedent("""
    import os, sys, base64
    import pqseal
    from pqseal.config import EncryptionConfig
    from pqseal.kms import KeyListKms
    from pqseal.keys import store
    where = sys.argv[3]
    if where == "before-data-commit":
        real = os.replace
        def dying_replace(a, b):
            if b.endswith("sealed.parquet"):
                os._exit(9)
            return real(a, b)
        import pqseal.format.engine as engine
        engine.os.replace = dying_replace
    else:
        store.KeyMaterialStore.commit = lambda self: os._exit(9)
    cfg = EncryptionConfig("kf", column_keys={"kc": ["ssn"]}, internal_key_material=False,
                           encryption_algorithm="AES_GCM_CTR_V1")
    pqseal.encrypt_file(sys.argv[1], sys.argv[2], cfg, kms=KeyListKms(os.environ["KL"]), overwrite=True)
""")


@pytest.mark.parametrize("where", ["before-data-commit", "between-commits"])
def test_death_during_commit_is_repaired_by_the_next_run(tmp_path, plain, table, where):
    """A process dies (i) after staging the material but before renaming the data file:
    the destination and its material are the old ones, the staged files are debris; or
    (ii) between the data file's rename and the material's: the new data file sits
    beside the old material and cannot be read until the next pqseal run (or verify) in
    that directory completes the commit."""
    out = tmp_path / "sealed.parquet"
    pqseal.encrypt_file(plain, out, ext_cfg(), kms=kms())
    old = snapshot(tmp_path)
    r = subprocess.run([sys.executable, "-c", _DIE, str(plain), str(out), where],
                       env=dict(os.environ, KL=KEY_LIST), capture_output=True, text=True, timeout=120)
    assert r.returncode == 9, r.stderr
    left = sorted(n for n in os.listdir(tmp_path) if n not in old)
    assert any(n.startswith("_TMP_KEY_MATERIAL_FOR_sealed.parquet.pqseal-") for n in left), left
    if where == "before-data-commit":
        assert {n: old[n] for n in old} == {n: (tmp_path / n).read_bytes() for n in old}
        assert any(is_temp_name(n) for n in left)
    else:
        assert out.read_bytes() != old["sealed.parquet"]
        assert material(out).read_bytes() == old[material(out).name]
        with pytest.raises(OSError):  # pyarrow: the new file's keys are not in the old material
            pa_read(out)
    clear_caches()
    actions = pqseal.recover(tmp_path)
    assert actions, "nothing was repaired"
    assert sorted(os.listdir(tmp_path)) == sorted([*old, "in"])  # no debris left
    assert pa_read(out).equals(table)
    assert pqseal.verify(out, kms=kms())["ok"]


def test_verify_completes_an_interrupted_material_commit(tmp_path, plain, table):
    out = tmp_path / "sealed.parquet"
    pqseal.encrypt_file(plain, out, ext_cfg(), kms=kms())
    r = subprocess.run([sys.executable, "-c", _DIE, str(plain), str(out), "between-commits"],
                       env=dict(os.environ, KL=KEY_LIST), capture_output=True, text=True, timeout=120)
    assert r.returncode == 9, r.stderr
    # a fresh process: `pqseal verify` is the next run in that directory
    code = ("import os, pqseal; from pqseal.kms import KeyListKms; "
            "print(pqseal.verify(os.environ['F'], kms=KeyListKms(os.environ['KL']))['ok'])")
    r = subprocess.run([sys.executable, "-c", code], env=dict(os.environ, KL=KEY_LIST, F=str(out)),
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == "True", r.stderr
    assert pa_read(out).equals(table)
    assert not [n for n in os.listdir(tmp_path) if "pqseal-" in n]


def test_rotation_replaces_material_atomically(tmp_path, plain, table, monkeypatch):
    out = tmp_path / "sealed.parquet"
    pqseal.encrypt_file(plain, out, ext_cfg(), kms=kms())
    before = snapshot(tmp_path)
    from pqseal.keys import CryptoFactory
    from pqseal.keys import store
    from pqseal.kms import KmsConnectionConfig

    def boom(a, b):
        raise OSError(errno.EIO, "simulated I/O error")

    monkeypatch.setattr(store.os, "replace", boom)
    with pytest.raises(OSError, match="simulated"):
        CryptoFactory(lambda c: kms()).rotate_master_keys(KmsConnectionConfig(), out)
    assert snapshot(tmp_path) == before
    monkeypatch.undo()
    assert CryptoFactory(lambda c: kms()).rotate_master_keys(KmsConnectionConfig(), out) == 2
    assert material(out).read_bytes() != before[material(out).name]
    assert pa_read(out).equals(table)


# ---- defect 3: no silent overwrite; modes ----------------------------------------------------


@pytest.mark.parametrize("op", ["encrypt", "decrypt", "write_table"])
def test_existing_output_is_refused_unless_overwrite(tmp_path, plain, table, op):
    sealed = tmp_path / "sealed.parquet"
    pqseal.encrypt_file(plain, sealed, EncryptionProperties(K16))
    dst = tmp_path / "dst.parquet"
    dst.write_bytes(b"precious")

    def run(**kw):
        if op == "encrypt":
            return pqseal.encrypt_file(plain, dst, EncryptionProperties(K16), **kw)
        if op == "decrypt":
            return pqseal.decrypt_file(sealed, dst, DecryptionProperties(K16), **kw)
        return pqseal.write_table(table, dst, EncryptionProperties(K16), **kw)

    with pytest.raises(OutputExists, match="dst.parquet exists"):
        run()
    with pytest.raises(FileExistsError):  # OutputExists is a FileExistsError too
        run()
    assert dst.read_bytes() == b"precious"
    run(overwrite=True)
    assert dst.read_bytes() != b"precious"


def test_modes(tmp_path, plain):
    old = os.umask(0o022)
    try:
        sealed, plain_out = tmp_path / "s.parquet", tmp_path / "p.parquet"
        pqseal.encrypt_file(plain, sealed, EncryptionProperties(K16))
        assert stat.S_IMODE(os.stat(sealed).st_mode) == 0o644          # new encrypted: the umask
        pqseal.decrypt_file(sealed, plain_out, DecryptionProperties(K16))
        assert stat.S_IMODE(os.stat(plain_out).st_mode) == 0o600       # new plaintext: 0600
        os.chmod(sealed, 0o640)
        pqseal.encrypt_file(plain, sealed, EncryptionProperties(K16), overwrite=True)
        assert stat.S_IMODE(os.stat(sealed).st_mode) == 0o640          # replaced: keeps its mode
        os.chmod(plain_out, 0o604)
        pqseal.decrypt_file(sealed, plain_out, DecryptionProperties(K16), overwrite=True)
        assert stat.S_IMODE(os.stat(plain_out).st_mode) == 0o604
    finally:
        os.umask(old)


def test_output_path_errors_name_the_users_path(tmp_path, plain):
    enc = EncryptionProperties(K16)
    with pytest.raises(FileNotFoundError, match="no-such-dir"):
        pqseal.encrypt_file(plain, tmp_path / "no-such-dir" / "x.parquet", enc)
    with pytest.raises(IsADirectoryError, match="names a directory"):
        pqseal.encrypt_file(plain, str(tmp_path) + "/", enc)
    with pytest.raises(IsADirectoryError, match="is a directory"):
        pqseal.encrypt_file(plain, tmp_path, enc, overwrite=True)
    with pytest.raises(ValueError, match="in_place"):
        pqseal.encrypt_file(plain, plain, enc, overwrite=True)
    assert not [n for n in os.listdir(tmp_path) if "pqseal-" in n]


def test_disk_errors_name_the_output_not_a_temporary(tmp_path, plain, monkeypatch):
    from pqseal.format import sink

    def full(fd, bufs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(sink.os, "writev", full)
    with pytest.raises(OSError) as ei:
        pqseal.encrypt_file(plain, tmp_path / "out.parquet", EncryptionProperties(K16))
    assert ei.value.errno == errno.ENOSPC
    assert "out.parquet" in str(ei.value) and "pqseal-" not in str(ei.value)
    assert os.listdir(tmp_path) == ["in"]


def test_in_place_replaces_the_source(tmp_path, plain, table):
    p = tmp_path / "t.parquet"
    p.write_bytes(plain.read_bytes())
    pqseal.encrypt_file(p, p, EncryptionProperties(K16), in_place=True)
    assert pq.read_table(p, decryption_properties=pe.create_decryption_properties(K16)).equals(table)


# ---- defect 2 (API side): no plaintext on disk ---------------------------------------------


class _Writes:
    """Every path opened for writing while active (Python's audit hooks see os.open and
    open; pyarrow's C++ file writes go through its own code, so pyarrow paths are checked
    by listing the directory too)."""

    def __init__(self):
        self.paths = []
        self.on = False
        sys.addaudithook(self._hook)

    def _hook(self, event, args):
        if not self.on or event != "open":
            return
        path, mode, flags = (list(args) + [None, None])[:3]
        writing = (isinstance(mode, str) and any(c in mode for c in "wax+")) or \
            (isinstance(flags, int) and flags & (os.O_WRONLY | os.O_RDWR))
        if writing and isinstance(path, (str, bytes, os.PathLike)):
            self.paths.append(os.fsdecode(path))


_WRITES = _Writes()


def test_write_table_writes_no_plaintext(tmp_path, table):
    out = tmp_path / "t.parquet"
    _WRITES.paths.clear()
    _WRITES.on = True
    try:
        st = pqseal.write_table(table, out, ext_cfg(), kms())
    finally:
        _WRITES.on = False
    written = {os.path.basename(p) for p in _WRITES.paths}
    assert all(is_temp_name(n) or n.startswith("_TMP_KEY_MATERIAL_FOR_t.parquet.pqseal-") for n in written), written
    assert sorted(os.listdir(tmp_path)) == ["_KEY_MATERIAL_FOR_t.parquet.json", "t.parquet"]
    assert MARKER.encode() not in out.read_bytes()
    assert st.src == "<table>"
    assert pa_read(out).equals(table)


def test_read_table_fallback_is_in_memory(tmp_path, table):
    out = tmp_path / "t.parquet"
    pqseal.write_table(table, out, EncryptionProperties(K16, algorithm="AES_GCM_CTR_V1"))
    listing = sorted(os.listdir(tmp_path))
    _WRITES.paths.clear()
    _WRITES.on = True
    try:
        got = pqseal.read_table(out, decryption=DecryptionProperties(K16), columns=["id", "ssn"])
    finally:
        _WRITES.on = False
    assert _WRITES.paths == []
    assert sorted(os.listdir(tmp_path)) == listing
    assert got.equals(table.select(["id", "ssn"]))


def test_cancellation_removes_the_temporary_file(tmp_path, plain, monkeypatch):
    from pqseal.format import source

    real = source.Source.read_chunk
    seen = {"n": 0}

    def cancel_midway(self, *a, **kw):
        seen["n"] += 1
        if seen["n"] == 2:
            _cancel.request(15)
        return real(self, *a, **kw)

    monkeypatch.setattr(source.Source, "read_chunk", cancel_midway)
    with pytest.raises(_cancel.Cancelled) as ei:
        pqseal.encrypt_file(plain, tmp_path / "o.parquet", EncryptionProperties(K16))
    assert ei.value.signum == 15
    assert os.listdir(tmp_path) == ["in"]


# ---- defect 14: leftovers of killed runs -----------------------------------------------------


def test_leftovers_of_dead_processes_are_removed_by_the_next_run(tmp_path, plain):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()
    stale = tmp_path / f".x.parquet.pqseal-{dead}-0badc0de.tmp"
    stale.write_bytes(b"\0" * 4096)
    alive = tmp_path / f".y.parquet.pqseal-{os.getppid()}-0badc0de.tmp"   # a live process's
    alive.write_bytes(b"1")
    mine = tmp_path / ".z.parquet.pqseal-x-1.tmp"                          # not our pattern
    mine.write_bytes(b"2")
    pqseal.encrypt_file(plain, tmp_path / "o.parquet", EncryptionProperties(K16))
    assert not stale.exists() and alive.exists() and mine.exists()


# ---- defect 7: API edges ---------------------------------------------------------------------


def test_top_level_names():
    for name in ("EncryptionConfig", "DecryptionConfig", "LocalKeystore", "KeyListKms", "KmsConnectionConfig",
                 "CryptoFactory", "recover", "AlreadyEncrypted", "VerificationFailed"):
        assert getattr(pqseal, name) is not None
    code = "import pqseal; print(pqseal.arrow.crypto_factory.__name__)"   # no explicit import of pqseal.arrow
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.stdout.strip() == "crypto_factory", r.stderr


def test_default_kms_is_the_local_keystore(tmp_path, table, monkeypatch):
    monkeypatch.setenv("PQSEAL_KEYSTORE", str(tmp_path / "ks.json"))
    monkeypatch.setenv("PQSEAL_KEYSTORE_PASSPHRASE", "correct horse")
    ks = pqseal.LocalKeystore.init()
    ks.create("fk")
    ks.create("ck")
    out = tmp_path / "t.parquet"
    pqseal.write_table(table, out, EncryptionConfig("fk", column_keys={"ck": ["ssn"]}))   # kms=None
    assert pqseal.read_table(out, columns=["ssn"]).equals(table.select(["ssn"]))           # kms=None
    info = pqseal.inspect(out, DecryptionConfig())                                          # opens the footer
    assert info["footer_readable"] and {c["path"] for c in info["columns"]} == {"id", "ssn", "amount"}


def test_pyarrow_configurations_are_accepted(tmp_path, plain, table):
    out, back = tmp_path / "s.parquet", tmp_path / "p.parquet"
    cfg = pe.EncryptionConfiguration(footer_key="kf", column_keys={"kc": ["ssn"]},
                                     encryption_algorithm="AES_GCM_CTR_V1", plaintext_footer=True)
    pqseal.encrypt_file(plain, out, cfg, kms=kms())
    assert pa_read(out).equals(table)
    info = pqseal.inspect(out)
    assert info["algorithm"] == "AES_GCM_CTR_V1" and info["footer"] == "plaintext (signed)"
    pqseal.decrypt_file(out, back, pe.DecryptionConfiguration(), kms=kms())
    assert pq.read_table(back).equals(table)
    with pytest.raises(TypeError, match="EncryptionConfiguration"):
        pqseal.encrypt_file(plain, tmp_path / "x.parquet", {"footer_key": "kf"}, kms=kms())


def test_write_table_with_explicit_properties_and_in_memory_inputs(tmp_path, plain, table):
    out = tmp_path / "t.parquet"
    pqseal.write_table(table, out, EncryptionProperties(K16), row_group_size=7_000)
    dec = DecryptionProperties(K16)
    assert pqseal.read_table(out, decryption=dec).equals(table)
    data = out.read_bytes()
    for src in (data, bytearray(data), memoryview(data), io.BytesIO(data), pa.BufferReader(data), pa.py_buffer(data)):
        assert pqseal.verify(src, dec)["ok"]
        assert pqseal.inspect(src)["encrypted"]
    back = tmp_path / "back.parquet"
    pqseal.decrypt_file(pa.BufferReader(data), back, dec)
    assert pq.read_table(back).equals(table)
    with pytest.raises(TypeError, match="binary"):
        pqseal.inspect(io.StringIO("x"))


def test_kms_argument_errors(tmp_path, plain):
    with pytest.raises(TypeError, match="kms must be"):
        pqseal.encrypt_file(plain, tmp_path / "o.parquet", ext_cfg(), kms=123)
    with pytest.raises(ValueError, match="unknown KMS scheme"):     # text is a KMS URI
        pqseal.encrypt_file(plain, tmp_path / "o.parquet", ext_cfg(), kms="no-such-kms:x")
    assert not (tmp_path / "o.parquet").exists()
    with pytest.raises(TypeError, match="new keys"):
        pqseal.rekey_file(plain, tmp_path / "o.parquet", DecryptionProperties(K16))


def test_missing_material_is_a_key_error_not_a_crash(tmp_path, plain):
    out = tmp_path / "s.parquet"
    pqseal.encrypt_file(plain, out, ext_cfg(), kms=kms())
    material(out).unlink()
    with pytest.raises(KeyNotFound, match="_KEY_MATERIAL_FOR_s.parquet.json"):
        pqseal.decrypt_file(out, tmp_path / "p.parquet", kms=kms())
    assert sorted(os.listdir(tmp_path)) == ["in", "s.parquet"]
