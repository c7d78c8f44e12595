"""The file commands of the CLI: ``pqseal encrypt|decrypt|verify|inspect`` on files and
directory trees, keys given as base64, ``env:NAME``, ``file:PATH`` and ``raw:PATH``; error
exits (code 1, one ``pqseal: error: ...`` line on stderr, no key material anywhere in the
output); the DataPageV2 framing warning. The contract itself (every option honoured or
refused, exit codes, directories) is in test_cli_contract.py, signals in
test_cli_signals.py. Most tests use click's CliRunner; a few run the
installed ``pqseal`` executable.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys

import pyarrow.parquet as pq
import pyarrow.parquet.encryption as pe
import pytest

from pqseal._io import is_temp_name
from click.testing import CliRunner

import pqseal
from pqseal.cli import main
from pqseal.format import DecryptionProperties

import parquet_gen as G
from pme_reference import RefFile

B64 = {k: base64.b64encode(v).decode() for k, v in
       {"footer": G.K16, "c1": G.KC1, "c2": G.KC2, "k32": G.K32}.items()}
SECRETS = [G.K16, G.KC1, G.KC2, G.K32]


def run(*args, env=None):
    r = CliRunner().invoke(main, [os.fspath(a) for a in args], env=env, catch_exceptions=False)
    for text in (r.stdout, r.stderr):
        for k in SECRETS:    # no key material in any output
            assert base64.b64encode(k).decode() not in text and k.hex() not in text
            assert k.decode("latin-1") not in text
    return r


def assert_error(r, *needles):
    assert r.exit_code == 1, (r.exit_code, r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("pqseal: error: "), lines[0]
    for n in needles:
        assert n in lines[0], (n, lines[0])


@pytest.fixture(scope="module")
def table():
    return G.make_table(12_000, nested=True)


@pytest.fixture(scope="module")
def plain(tmp_path_factory, table):
    d = tmp_path_factory.mktemp("cli")
    return G.write_pyarrow(d / "plain.parquet", table, row_group_size=5_000, write_page_index=True,
                           write_page_checksum=True)


# --------------------------------------------------------------------------- single files

def test_encrypt_decrypt_verify_inspect_a_file(plain, tmp_path, table):
    sealed, out = tmp_path / "sealed.parquet", tmp_path / "out.parquet"
    r = run("encrypt", plain, sealed, "--footer-key-value", B64["footer"])
    assert r.exit_code == 0, r.stderr
    assert r.stdout.startswith(f"encrypted {plain} -> {sealed}: 3 row groups, 12 columns")
    assert r.stderr == ""
    assert pq.read_table(sealed, decryption_properties=pe.create_decryption_properties(G.K16)).equals(table)

    r = run("verify", sealed, "--footer-key-value", B64["footer"])
    assert r.exit_code == 0 and r.stdout.startswith(f"OK {sealed}: AES_GCM_V1, ")
    r = run("verify", sealed, "--footer-key-value", B64["footer"], "--json")
    rep = json.loads(r.stdout)
    assert rep["ok"] is True and rep["row_groups"] == 3 and rep["modules"] > rep["pages"]

    r = run("inspect", sealed)
    assert r.exit_code == 0
    assert "encryption  AES_GCM_V1, encrypted footer" in r.stdout
    assert "dialect     PME spec" in r.stdout and "footer is encrypted" in r.stdout
    r = run("inspect", sealed, "--footer-key-value", B64["footer"])
    assert "rows        12000 in 3 row groups" in r.stdout
    assert all(line.split()[1] == "footer" for line in r.stdout.splitlines()
               if line.split() and line.split()[0] in G.leaf_paths(plain))

    r = run("decrypt", sealed, out, "--footer-key-value", B64["footer"])
    assert r.exit_code == 0 and r.stdout.startswith(f"decrypted {sealed} -> {out}")
    assert G.raw_chunks(out) == G.raw_chunks(plain)
    r = run("inspect", out, "--json")
    assert json.loads(r.stdout)["encrypted"] is False
    assert "encryption  none" in run("inspect", out).stdout


def test_column_keys_and_options(plain, tmp_path, table):
    sealed, out = tmp_path / "sealed.parquet", tmp_path / "out.parquet"
    r = run("encrypt", plain, sealed, "--footer-key-value", B64["footer"],
            "--column-key-value", f"id={B64['c1']}", "--column-key-value", f"s.b={B64['c2']}",
            "--footer-key-column", "cat", "--algorithm", "AES_GCM_CTR_V1", "--plaintext-footer",
            "--aad-prefix", "tenant/7", "--no-store-aad-prefix")
    assert r.exit_code == 0, r.stderr
    info = json.loads(run("inspect", sealed, "--json").stdout)
    assert info["algorithm"] == "AES_GCM_CTR_V1" and info["footer"] == "plaintext (signed)"
    assert info["aad_prefix"] == "not stored: readers must supply it"
    enc = {c["path"]: c["encryption"] for c in info["columns"]}
    assert enc["id"] == enc["s.b"] == "column key" and enc["cat"] == "footer key" and enc["x"] == "plaintext"
    human = run("inspect", sealed).stdout
    assert "AES_GCM_CTR_V1, plaintext (signed) footer" in human and "not stored" in human

    keys = ["--footer-key-value", B64["footer"], "--column-key-value", f"id={B64['c1']}",
            "--column-key-value", f"s.b={B64['c2']}"]
    assert_error(run("decrypt", sealed, out, *keys), "KeyNotFound", "AAD prefix")
    assert_error(run("decrypt", sealed, out, *keys, "--aad-prefix", "tenant/8"), "InvalidTag")
    assert not out.exists()
    assert_error(run("decrypt", sealed, out, *keys[:4], "--aad-prefix", "tenant/7"), "KeyNotFound", "s.b")
    assert run("verify", sealed, *keys, "--aad-prefix", "tenant/7").exit_code == 0
    r = run("decrypt", sealed, out, *keys, "--aad-prefix", "tenant/7")
    assert r.exit_code == 0, r.stderr
    assert pq.read_table(out).equals(table)


def test_key_sources(plain, tmp_path, monkeypatch):
    raw = tmp_path / "raw.key"
    raw.write_bytes(G.K32)                                 # raw 32 bytes
    text = tmp_path / "b64.key"
    text.write_text(B64["k32"] + "\n")                     # base64 with a newline
    for f in (raw, text):
        f.chmod(0o600)
    env = {"PQ_FOOTER": B64["k32"], "PQ_COL": B64["c1"]}
    specs = [B64["k32"], "env:PQ_FOOTER", f"raw:{raw}", f"file:{text}"]
    for i, spec in enumerate(specs):
        sealed = tmp_path / f"s{i}.parquet"
        r = run("encrypt", plain, sealed, "--footer-key-value", spec, "--column-key-value", "id=env:PQ_COL", env=env)
        assert r.exit_code == 0, (spec, r.stderr)
        pqseal.verify(sealed, DecryptionProperties(G.K32, column_keys={"id": G.KC1}))
        # and every form decrypts what another form sealed
        r = run("decrypt", sealed, tmp_path / f"o{i}.parquet", "--footer-key-value", specs[-1 - i],
                "--column-key-value", f"id={B64['c1']}", env=env)
        assert r.exit_code == 0, (spec, r.stderr)


@pytest.mark.parametrize("spec,needle", [
    ("not-base64!!", "not valid base64"),
    (base64.b64encode(b"x" * 20).decode(), "16, 24 or 32"),
    ("env:PQ_NOT_SET_ANYWHERE", "PQ_NOT_SET_ANYWHERE"),
    ("file:/nonexistent/key.bin", "key.bin"),
])
def test_bad_key_specs(plain, tmp_path, spec, needle):
    r = run("encrypt", plain, tmp_path / "o.parquet", "--footer-key-value", spec)
    assert_error(r, needle)
    assert not (tmp_path / "o.parquet").exists()
    r = run("encrypt", plain, tmp_path / "o.parquet", "--footer-key-value", B64["footer"],
            "--column-key-value", f"id={spec}")
    assert_error(r, needle)


# --------------------------------------------------------------------------- errors

def test_wrong_key(plain, tmp_path):
    sealed = tmp_path / "s.parquet"
    run("encrypt", plain, sealed, "--footer-key-value", B64["footer"])
    for cmd in (["decrypt", sealed, tmp_path / "o.parquet"], ["verify", sealed], ["inspect", sealed]):
        r = run(*cmd, "--footer-key-value", B64["k32"])
        assert_error(r, "InvalidTag", "footer")
    assert not (tmp_path / "o.parquet").exists()
    assert sorted(os.listdir(tmp_path)) == ["s.parquet"]


def test_wrong_column_key(plain, tmp_path):
    sealed = tmp_path / "s.parquet"
    run("encrypt", plain, sealed, "--footer-key-value", B64["footer"], "--column-key-value", f"id={B64['c1']}")
    r = run("decrypt", sealed, tmp_path / "o.parquet", "--footer-key-value", B64["footer"],
            "--column-key-value", f"id={B64['c2']}")
    assert_error(r, "InvalidTag", "id")


def test_already_encrypted_and_not_encrypted(plain, tmp_path):
    sealed = tmp_path / "s.parquet"
    run("encrypt", plain, sealed, "--footer-key-value", B64["footer"])
    assert_error(run("encrypt", sealed, tmp_path / "o.parquet", "--footer-key-value", B64["footer"]),
                 "AlreadyEncrypted", "s.parquet")
    assert_error(run("decrypt", plain, tmp_path / "o.parquet", "--footer-key-value", B64["footer"]),
                 "NotEncrypted")
    assert_error(run("verify", plain, "--footer-key-value", B64["footer"]), "NotEncrypted")
    assert not (tmp_path / "o.parquet").exists()


def test_unknown_column_and_garbage_file(plain, tmp_path):
    r = run("encrypt", plain, tmp_path / "o.parquet", "--footer-key-value", B64["footer"],
            "--column-key-value", f"nope={B64['c1']}")
    assert_error(r, "nope")
    junk = tmp_path / "junk.parquet"
    junk.write_bytes(b"this is not parquet" * 10)
    for cmd in (["encrypt", junk, tmp_path / "o.parquet", "--footer-key-value", B64["footer"]],
                ["decrypt", junk, tmp_path / "o.parquet", "--footer-key-value", B64["footer"]],
                ["verify", junk, "--footer-key-value", B64["footer"]], ["inspect", junk]):
        assert_error(run(*cmd), "MalformedFile", "junk.parquet")
    assert not (tmp_path / "o.parquet").exists()


def test_missing_file(tmp_path):
    r = run("decrypt", tmp_path / "missing.parquet", tmp_path / "o.parquet", "--footer-key-value", B64["footer"])
    assert_error(r, "missing.parquet")


def test_missing_file_is_reported(tmp_path):
    """Whatever the exit code, a missing input fails cleanly and names the path."""
    for cmd in (["decrypt", tmp_path / "missing.parquet", tmp_path / "o.parquet"],
                ["encrypt", tmp_path / "missing.parquet", tmp_path / "o.parquet"],
                ["verify", tmp_path / "missing.parquet"], ["inspect", tmp_path / "missing.parquet"]):
        r = run(*cmd, "--footer-key-value", B64["footer"])
        assert r.exit_code in (1, 2) and "missing.parquet" in r.stderr and r.stdout == ""
    assert not (tmp_path / "o.parquet").exists()


def test_usage_errors(plain, tmp_path):
    r = run("encrypt", plain, tmp_path / "o.parquet")
    assert r.exit_code == 2 and "--footer-key-value" in r.stderr
    r = run("encrypt", plain, tmp_path / "o.parquet", "--footer-key-value", B64["footer"], "--uniform",
            "--column-key-value", f"id={B64['c1']}")
    assert r.exit_code == 2
    r = run("encrypt", plain, tmp_path / "o.parquet", "--footer-key-value", B64["footer"],
            "--column-key-value", f"id={B64['c1']}", "--footer-key-column", "id")
    assert r.exit_code == 2
    r = run("encrypt", plain, tmp_path / "o.parquet", "--footer-key-value", B64["footer"],
            "--column-key-value", "id")
    assert r.exit_code == 2 and "COLUMN=KEY" in r.stderr
    r = run("encrypt", plain, tmp_path / "o.parquet", "--footer-key-value", B64["footer"], "--algorithm", "AES")
    assert r.exit_code == 2
    assert not (tmp_path / "o.parquet").exists()


def test_verify_lists_every_failing_module(plain, tmp_path):
    sealed = tmp_path / "s.parquet"
    run("encrypt", plain, sealed, "--footer-key-value", B64["footer"], "--column-key-value", f"id={B64['c1']}")
    dec = DecryptionProperties(G.K16, column_keys={"id": G.KC1})
    mods = [m for m in G.module_map(sealed, dec) if m.kind == 2 and m.col == 0]
    bad = G.flip_bit(sealed, tmp_path / "bad.parquet", mods[0].ciphertext_offset)
    bad = G.flip_bit(bad, tmp_path / "bad.parquet", mods[-1].ciphertext_offset)
    r = run("verify", bad, "--footer-key-value", B64["footer"], "--column-key-value", f"id={B64['c1']}")
    assert r.exit_code == 1
    lines = r.stderr.strip().splitlines()
    failed = [ln for ln in lines if ln.startswith("FAILED ")]
    assert len(failed) == 2 and all("column id" in ln and "DATA_PAGE" in ln for ln in failed)
    assert lines[-1].startswith("pqseal: error: ") and "2 module(s)" in lines[-1]


# --------------------------------------------------------------------------- V2 framing warning

@pytest.mark.parametrize("framing", ["arrow", "parquet-java"])
def test_v2_pages_print_the_framing_warning(table, tmp_path, framing):
    src = G.write_pyarrow(tmp_path / "v2.parquet", table, data_page_version="2.0")
    sealed = tmp_path / "s.parquet"
    r = run("encrypt", src, sealed, "--footer-key-value", B64["footer"], "--v2-framing", framing)
    assert r.exit_code == 0
    warn = [ln for ln in r.stderr.splitlines() if ln.startswith("warning: ")]
    assert len(warn) == 1 and "DataPageV2" in warn[0] and f"{framing} framing" in warn[0]
    assert ("NOT by parquet-java" in warn[0]) == (framing == "arrow")
    r = run("inspect", sealed, "--footer-key-value", B64["footer"])
    assert f"[DataPageV2: {framing} framing]" in r.stdout
    # V1 pages: no warning
    r = run("encrypt", G.write_pyarrow(tmp_path / "v1.parquet", table), tmp_path / "s1.parquet",
            "--footer-key-value", B64["footer"])
    assert r.exit_code == 0 and "warning" not in r.stderr


# --------------------------------------------------------------------------- directories

@pytest.fixture
def tree(tmp_path, table, plain):
    root = tmp_path / "in"
    (root / "a" / "b").mkdir(parents=True)
    (root / "empty").mkdir()
    shutil.copy(plain, root / "one.parquet")
    G.write_pyarrow(root / "a" / "two.parquet", table.slice(0, 3_000), compression="zstd")
    G.write_pyarrow(root / "a" / "b" / "three.parquet", table.slice(100, 7_000), use_dictionary=False)
    (root / "a" / "_notes.txt").write_text("not parquet")
    shutil.copy(plain, root / "a" / ".hidden.parquet")
    (root / "_SUCCESS").write_bytes(b"")
    return root


def _parquets(root):
    return sorted(os.path.relpath(os.path.join(d, f), root) for d, _, fs in os.walk(root) for f in fs
                  if f.endswith(".parquet") and not f.startswith("."))


def test_directory_tree(tree, tmp_path):
    sealed, out = tmp_path / "sealed", tmp_path / "out"
    r = run("encrypt", tree, sealed, "--footer-key-value", "env:PQ_K", "--algorithm", "AES_GCM_CTR_V1", "-j", "2",
            env={"PQ_K": B64["footer"]})
    assert r.exit_code == 0, r.stderr
    assert r.stdout.strip().startswith("encrypted 3 files")
    assert _parquets(sealed) == _parquets(tree) == ["a/b/three.parquet", "a/two.parquet", "one.parquet"]
    assert not (sealed / "a" / "_notes.txt").exists() and not (sealed / "a" / ".hidden.parquet").exists()
    assert (sealed / "_SUCCESS").exists()   # the dataset policy: _SUCCESS markers are copied
    for rel in _parquets(sealed):
        assert RefFile(sealed / rel).algorithm == "AES_GCM_CTR_V1"

    r = run("verify", sealed, "--footer-key-value", B64["footer"], "--json")
    assert r.exit_code == 0
    reps = [json.loads(ln) for ln in r.stdout.splitlines()]
    assert sorted(os.path.relpath(x["file"], sealed) for x in reps) == _parquets(tree)
    assert all(x["ok"] for x in reps)
    r = run("verify", sealed, "--footer-key-value", B64["footer"])
    assert len([ln for ln in r.stdout.splitlines() if ln.startswith("OK ")]) == 3

    r = run("inspect", sealed, "--json")
    assert len([json.loads(ln) for ln in r.stdout.splitlines()]) == 3
    r = run("inspect", sealed)
    assert r.stdout.count("encryption  AES_GCM_CTR_V1") == 3

    r = run("decrypt", sealed, out, "--footer-key-value", B64["footer"], "-j", "1")
    assert r.exit_code == 0, r.stderr
    assert r.stdout.strip().startswith("decrypted 3 files")
    for rel in _parquets(tree):
        assert G.raw_chunks(out / rel) == G.raw_chunks(tree / rel), rel


def test_directory_with_a_failing_file(tree, tmp_path):
    """One bad file fails (exit 1, named on stderr); the others are still processed."""
    shutil.copy(tree / "one.parquet", tmp_path / "x.parquet")
    pqseal.encrypt_file(tmp_path / "x.parquet", tree / "a" / "already.parquet",
                        pqseal.EncryptionProperties(G.K16))
    out = tmp_path / "out"
    r = run("encrypt", tree, out, "--footer-key-value", B64["footer"], "-j", "2")
    assert r.exit_code == 1
    err = r.stderr.strip().splitlines()
    assert any(ln.startswith("pqseal: error: ") and "already.parquet" in ln and "AlreadyEncrypted" in ln
               for ln in err), err
    assert "1 of 4 files failed" in err[-1]
    assert sorted(_parquets(out)) == ["a/b/three.parquet", "a/two.parquet", "one.parquet"]
    assert not [f for _, _, fs in os.walk(out) for f in fs if is_temp_name(f)]


def test_empty_directory(tmp_path):
    (tmp_path / "nothing").mkdir()
    r = run("encrypt", tmp_path / "nothing", tmp_path / "out", "--footer-key-value", B64["footer"])
    assert_error(r, "no data files", "nothing")


# --------------------------------------------------------------------------- the real executable

def _exe():
    exe = shutil.which("pqseal", path=os.path.dirname(sys.executable))
    if exe is None:
        pytest.skip("pqseal console script not installed next to this Python")
    return exe


def test_executable_round_trip_and_errors(plain, tmp_path):
    exe = _exe()
    env = dict(os.environ, PQ_KEY=B64["footer"])
    sealed, out = tmp_path / "s.parquet", tmp_path / "o.parquet"
    r = subprocess.run([exe, "encrypt", plain, sealed, "--footer-key-value", "env:PQ_KEY"], env=env,
                       capture_output=True, text=True, timeout=120, check=False)
    assert r.returncode == 0, r.stderr
    r = subprocess.run([exe, "decrypt", sealed, out, "--footer-key-value", B64["k32"]], capture_output=True,
                       text=True, timeout=120, check=False)
    assert r.returncode == 1
    assert r.stderr.count("\n") == 1 and r.stderr.startswith("pqseal: error: InvalidTag")
    assert "Traceback" not in r.stderr and not out.exists()
    r = subprocess.run([exe, "encrypt", sealed, out, "--footer-key-value", "env:PQ_KEY"], env=env,
                       capture_output=True, text=True, timeout=120, check=False)
    assert r.returncode == 1 and r.stderr.startswith("pqseal: error: AlreadyEncrypted")
    r = subprocess.run([sys.executable, "-m", "pqseal", "decrypt", sealed, out, "--footer-key-value",
                        "env:PQ_KEY"], env=env, capture_output=True, text=True, timeout=120, check=False)
    assert r.returncode == 0, r.stderr
    assert G.raw_chunks(out) == G.raw_chunks(plain)
