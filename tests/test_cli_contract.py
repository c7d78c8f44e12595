"""The command line's contract (issue 8, defects 3, 4, 5, 6 and 13): every option is
honoured or refused, key encodings are explicit, errors are one line (exit 2 for usage,
1 for failures) and never echo key material, existing outputs are refused without
--force, directories follow pyarrow's dataset discovery. Oracles: pyarrow reads what
the CLI writes; pyarrow.dataset lists what is data."""

from __future__ import annotations

import base64
import errno
import hashlib
import json
import os
import resource
import shutil
import signal
import stat
import subprocess
import sys
from pathlib import Path

import parquet_gen as G
import pqseal
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pyarrow.parquet.encryption as pe
import pytest
from click.testing import CliRunner
from pqseal.arrow import crypto_factory
from pqseal.cli import main
from pqseal.errors import KeyNotFound
from pqseal.format import DecryptionProperties
from pqseal.kms import KeyListKms
from pqseal.kms.keystore import LocalKeystore

B64 = {k: base64.b64encode(v).decode() for k, v in
       {"footer": G.K16, "c1": G.KC1, "c2": G.KC2, "k32": G.K32}.items()}
SECRETS = [G.K16, G.KC1, G.KC2, G.K32]
KL = f"kf: {B64['footer']}, kc: {B64['c1']}"
NO_KEYSTORE = {"PQSEAL_KEYSTORE": "/nonexistent/pqseal/keystore.json", "PQSEAL_KEY_LIST": None}


def run(*args, env=None):
    r = CliRunner().invoke(main, [os.fspath(a) for a in args], env={**NO_KEYSTORE, **(env or {})},
                           catch_exceptions=False)
    for text in (r.stdout, r.stderr):
        for k in SECRETS:    # no key material, whole or in part, in any output
            b = base64.b64encode(k).decode()
            assert b.rstrip("=") not in text and k.hex() not in text, text
    assert "Traceback" not in r.stderr
    return r


def assert_error(r, *needles, code=1):
    assert r.exit_code == code, (r.exit_code, r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("pqseal: error: "), lines[0]
    assert ".pqseal-" not in lines[0], lines[0]   # never a temporary file's name
    for n in needles:
        assert n in lines[0], (n, lines[0])


def sha(path) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def pyarrow_reads(path, kms=KL):
    client = KeyListKms(kms) if isinstance(kms, str) else kms
    props = crypto_factory(lambda cfg: client).file_decryption_properties(pe.KmsConnectionConfig(),
                                                                         pe.DecryptionConfiguration(), str(path))
    return pq.read_table(path, decryption_properties=props)


@pytest.fixture(scope="module")
def table():
    return G.make_table(6_000, nested=False)


@pytest.fixture(scope="module")
def plain(tmp_path_factory, table):
    return G.write_pyarrow(tmp_path_factory.mktemp("contract") / "plain.parquet", table, row_group_size=3_000)


def columns(path, kms=KL) -> dict:
    return {c["path"]: c["encryption"] for c in pqseal.inspect(path, kms=KeyListKms(kms))["columns"]}


# --------------------------------------------------------------------------- defect 4: options honoured

def test_envelope_mode_honours_aad_prefix(plain, tmp_path, table):
    sealed, out = tmp_path / "s.parquet", tmp_path / "o.parquet"
    r = run("encrypt", plain, sealed, "--key-list", KL, "--footer-key", "kf", "--column-keys", "kc:id",
            "--aad-prefix", "tenant/7")
    assert r.exit_code == 0, r.stderr
    assert pqseal.inspect(sealed)["aad_prefix"] != "none"
    assert "tenant/7" in run("inspect", sealed).stdout
    assert pyarrow_reads(sealed).equals(table)      # pyarrow computes the AADs from the stored prefix

    r = run("encrypt", plain, tmp_path / "n.parquet", "--key-list", KL, "--footer-key", "kf", "--column-keys",
            "kc:id", "--aad-prefix", "tenant/7", "--no-store-aad-prefix")
    assert r.exit_code == 0, r.stderr
    assert "not stored" in pqseal.inspect(tmp_path / "n.parquet")["aad_prefix"]
    assert run("decrypt", tmp_path / "n.parquet", out, "--key-list", KL).exit_code == 1
    assert not out.exists()
    r = run("decrypt", tmp_path / "n.parquet", out, "--key-list", KL, "--aad-prefix", "tenant/7")
    assert r.exit_code == 0, r.stderr
    assert pq.read_table(out).equals(table)


@pytest.mark.parametrize("framing", ["arrow", "parquet-java"])
def test_envelope_mode_honours_v2_framing(table, tmp_path, framing):
    src = G.write_pyarrow(tmp_path / "v2.parquet", table, data_page_version="2.0")
    sealed = tmp_path / "s.parquet"
    r = run("encrypt", src, sealed, "--key-list", KL, "--uniform-key", "kf", "--v2-framing", framing)
    assert r.exit_code == 0, r.stderr
    assert f"{framing} framing" in r.stderr
    info = pqseal.inspect(sealed, kms=KeyListKms(KL))
    assert {c.get("v2_framing") for c in info["columns"]} == {framing}
    if framing == "arrow":   # pyarrow reads only the spec's/Arrow's framing
        assert pyarrow_reads(sealed).equals(table)
    else:
        with pytest.raises(OSError):
            pyarrow_reads(sealed)


def test_complete_columns_and_footer_key_columns(plain, tmp_path, table):
    sealed = tmp_path / "s.parquet"
    r = run("encrypt", plain, sealed, "--key-list", KL, "--footer-key", "kf", "--column-keys", "kc:id",
            "--complete-columns")
    assert r.exit_code == 0, r.stderr
    enc = columns(sealed)
    assert enc.pop("id") == "column key" and set(enc.values()) == {"footer key"}
    assert pyarrow_reads(sealed).equals(table)
    # parquet-java has no footer-key column besides complete.columns: refused, with the ways to do it
    r = run("encrypt", plain, tmp_path / "x.parquet", "--key-list", KL, "--footer-key", "kf", "--column-keys",
            "kc:id", "--footer-key-column", "cat")
    assert_error(r, "--footer-key-column", "--complete-columns", code=2)
    assert not (tmp_path / "x.parquet").exists()


def test_footer_key_alone_is_uniform(plain, tmp_path, table):
    sealed = tmp_path / "s.parquet"
    r = run("encrypt", plain, sealed, "--key-list", KL, "--footer-key", "kf")
    assert r.exit_code == 0, r.stderr
    assert set(columns(sealed).values()) == {"footer key"}
    assert pyarrow_reads(sealed).equals(table)


@pytest.mark.parametrize("extra", [["--data-key-bits", "256"], ["--single-wrapping"], ["--external-key-material"],
                                   ["--kms", "keylist"], ["--key-list", KL],
                                   ["--property", "parquet.encryption.kms.instance.id=x"]])
def test_explicit_keys_refuse_envelope_options(plain, tmp_path, extra):
    out = tmp_path / "o.parquet"
    assert_error(run("encrypt", plain, out, "--footer-key-value", B64["footer"], *extra), extra[0], code=2)
    assert not out.exists()


@pytest.mark.parametrize("jobs", ["0", "-1"])
def test_jobs_must_be_positive(plain, tmp_path, jobs):
    assert_error(run("encrypt", plain, tmp_path / "o.parquet", "--footer-key-value", B64["footer"], "-j", jobs),
                 "--jobs", code=2)
    assert_error(run("verify", plain, "--footer-key-value", B64["footer"], "-j", jobs), "--jobs", code=2)


@pytest.mark.parametrize("cmd,prop,needle", [
    ("encrypt", "parquet.encryption.footer.kye=kf", "unknown property"),
    ("encrypt", "footer.key=kf", "not a parquet.encryption"),
    ("decrypt", "parquet.encryption.footer.key=kf", "encrypt only"),
    ("encrypt", "parquet.encryption.kms.client.class=com.example.VaultClient", "--kms"),
])
def test_unknown_or_misplaced_properties_are_refused(plain, tmp_path, cmd, prop, needle):
    args = ["--key-list", KL, "--property", prop]
    if cmd == "encrypt":
        args += ["--footer-key", "kf"]
    r = run(cmd, plain, tmp_path / "o.parquet", *args)
    assert_error(r, needle, code=2)
    assert not (tmp_path / "o.parquet").exists()


@pytest.mark.parametrize("prefix", ["parquet.encryption.", "encryption."])
def test_key_list_property_is_the_kms(plain, tmp_path, table, prefix):
    """parquet.encryption.key.list (and the IBM Analytics Engine's encryption.key.list)
    select the key-list KMS: no fallback to a keystore (there is none here)."""
    sealed, out = tmp_path / "s.parquet", tmp_path / "o.parquet"
    r = run("encrypt", plain, sealed, "--property", f"{prefix}key.list={KL}", "--property", f"{prefix}footer.key=kf",
            "--property", f"{prefix}column.keys=kc:id",
            "--property", f"{prefix}kms.client.class=org.apache.parquet.crypto.keytools.mocks.InMemoryKMS")
    assert r.exit_code == 0, r.stderr
    assert pyarrow_reads(sealed).equals(table)
    r = run("decrypt", sealed, out, "--property", f"{prefix}key.list={KL}")
    assert r.exit_code == 0, r.stderr
    assert pq.read_table(out).equals(table)


def test_a_malformed_property_is_not_echoed(plain, tmp_path):
    r = run("encrypt", plain, tmp_path / "o.parquet", "--footer-key", "kf", "--column-keys", "kc:id",
            "--property", f"parquet.encryption.key.list {KL}")      # '=' forgotten: the value is keys
    assert_error(r, "NAME=VALUE", code=2)


def test_option_and_property_for_the_same_thing(plain, tmp_path):
    r = run("encrypt", plain, tmp_path / "o.parquet", "--key-list", KL, "--footer-key", "kf", "--column-keys", "kc:id",
            "--algorithm", "AES_GCM_CTR_V1", "--property", "parquet.encryption.algorithm=AES_GCM_V1")
    assert_error(r, "--algorithm", "algorithm", code=2)


# --------------------------------------------------------------------------- defect 5: key encodings

def test_file_key_is_base64_text_even_without_a_newline(plain, tmp_path, table):
    """A 16-byte key saved as base64 without a newline is 24 bytes long: it is the
    16-byte key, not an AES-192 key made of its characters."""
    keyfile = tmp_path / "k.b64"
    keyfile.write_bytes(base64.b64encode(G.K16))
    keyfile.chmod(0o600)
    assert len(keyfile.read_bytes()) == 24
    sealed = tmp_path / "s.parquet"
    assert run("encrypt", plain, sealed, "--footer-key-value", f"file:{keyfile}").exit_code == 0
    assert pq.read_table(sealed, decryption_properties=pe.create_decryption_properties(G.K16)).equals(table)


def test_raw_key_file_and_no_guessing(plain, tmp_path, table):
    raw = tmp_path / "k.raw"
    raw.write_bytes(G.K16)
    raw.chmod(0o600)
    sealed = tmp_path / "s.parquet"
    assert run("encrypt", plain, sealed, "--footer-key-value", f"raw:{raw}").exit_code == 0
    assert pq.read_table(sealed, decryption_properties=pe.create_decryption_properties(G.K16)).equals(table)
    # raw bytes under file: are not taken for a key; @PATH (which guessed) is refused
    binary = tmp_path / "k.bin"
    binary.write_bytes(bytes(range(200, 216)))
    binary.chmod(0o600)
    assert_error(run("encrypt", plain, tmp_path / "o.parquet", "--footer-key-value", f"file:{binary}"),
                 "not valid base64", "raw:PATH")
    assert_error(run("encrypt", plain, tmp_path / "o.parquet", "--footer-key-value", f"@{raw}"), "raw:PATH",
                 code=2)
    text = tmp_path / "k.b64"
    text.write_text(B64["footer"] + "\n")
    text.chmod(0o600)
    assert_error(run("encrypt", plain, tmp_path / "o.parquet", "--footer-key-value", f"raw:{text}"),
                 "25 bytes")
    assert not (tmp_path / "o.parquet").exists()


# --------------------------------------------------------------------------- defect 13: secrets

@pytest.mark.parametrize("key", [G.KC1, G.K32])
def test_column_key_without_a_path_is_not_echoed(plain, tmp_path, key):
    b = base64.b64encode(key).decode()
    assert "=" in b
    r = CliRunner().invoke(main, ["encrypt", os.fspath(plain), os.fspath(tmp_path / "o.parquet"),
                                  "--footer-key-value", B64["footer"], "--column-key-value", b], env=NO_KEYSTORE)
    assert r.exit_code == 2 and "COLUMN=KEY" in r.stderr
    assert b.rstrip("=") not in r.stderr + r.stdout and b[:8] not in r.stderr + r.stdout
    assert len(r.stderr.strip().splitlines()) == 1


def test_secret_files_must_be_private(plain, tmp_path, table):
    kl = tmp_path / "keys.txt"
    kl.write_text(KL + "\n")
    kl.chmod(0o600)
    sealed = tmp_path / "s.parquet"
    r = run("encrypt", plain, sealed, "--key-list", f"file:{kl}", "--footer-key", "kf", "--column-keys", "kc:id")
    assert r.exit_code == 0, r.stderr
    assert pyarrow_reads(sealed).equals(table)
    kl.chmod(0o644)
    r = run("decrypt", sealed, tmp_path / "o.parquet", "--key-list", f"file:{kl}")
    assert_error(r, str(kl), "chmod 600")
    key = tmp_path / "k.b64"
    key.write_text(B64["footer"])
    key.chmod(0o640)
    assert_error(run("encrypt", plain, tmp_path / "o.parquet", "--footer-key-value", f"file:{key}"),
                 str(key), "chmod 600")
    assert not (tmp_path / "o.parquet").exists()


def test_passphrase_file_must_be_private(tmp_path):
    LocalKeystore.init(tmp_path / "ks.json", b"pw-1234")
    pw = tmp_path / "pass"
    pw.write_text("pw-1234\n")
    pw.chmod(0o644)
    env = {"PQSEAL_KEYSTORE": str(tmp_path / "ks.json"), "PQSEAL_KEYSTORE_PASSPHRASE": None,
           "PQSEAL_KEYSTORE_PASSPHRASE_FILE": str(pw)}
    assert_error(run("keys", "list", env=env), str(pw), "chmod 600")
    pw.chmod(0o600)
    assert run("keys", "list", env=env).exit_code == 0


# --------------------------------------------------------------------------- defect 6: one-line errors

def test_missing_keystore_says_how_to_create_one(plain, tmp_path):
    sealed = tmp_path / "s.parquet"
    assert run("encrypt", plain, sealed, "--key-list", KL, "--footer-key", "kf").exit_code == 0
    env = {"PQSEAL_KEYSTORE": str(tmp_path / "none.json"), "PQSEAL_KEYSTORE_PASSPHRASE": None}
    for cmd in (["decrypt", sealed, tmp_path / "o.parquet"], ["keys", "list"],
                ["encrypt", plain, tmp_path / "o.parquet", "--footer-key", "kf"]):
        assert_error(run(*cmd, env=env), "none.json", "pqseal keys init")


def test_output_path_errors_name_the_users_path(plain, tmp_path):
    (tmp_path / "adir").mkdir()
    for dst, path, needle in ((tmp_path / "no" / "such" / "o.parquet", tmp_path / "no" / "such", "does not exist"),
                              (tmp_path / "adir", tmp_path / "adir", "directory"),
                              (f"{tmp_path}/new/", f"{tmp_path}/new/", "directory")):
        r = run("encrypt", plain, dst, "--footer-key-value", B64["footer"])
        assert_error(r, os.fspath(path), needle)
    assert os.listdir(tmp_path / "adir") == [] and not (tmp_path / "new").exists()


def test_disk_full_names_the_destination(plain, tmp_path):
    """Writing past RLIMIT_FSIZE fails like a full disk (EFBIG): one line naming the
    destination, no temporary file left."""
    out = tmp_path / "o.parquet"

    def limit():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (50_000, 50_000))
    r = subprocess.run([sys.executable, "-m", "pqseal", "encrypt", plain, out, "--footer-key-value", B64["footer"]],
                       capture_output=True, text=True, timeout=120, preexec_fn=limit, check=False,
                       env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert r.returncode == 1, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("pqseal: error: ") and str(out) in lines[0], r.stderr
    assert "File too large" in lines[0]
    assert os.listdir(tmp_path) == []


def test_in_place(plain, tmp_path, table):
    f = tmp_path / "f.parquet"
    f.write_bytes(Path(plain).read_bytes())
    assert_error(run("encrypt", f, f, "--footer-key-value", B64["footer"]), "--in-place")
    assert sha(f) == sha(plain)
    r = run("encrypt", f, f, "--footer-key-value", B64["footer"], "--in-place")
    assert r.exit_code == 0, r.stderr
    assert pq.read_table(f, decryption_properties=pe.create_decryption_properties(G.K16)).equals(table)
    assert sorted(os.listdir(tmp_path)) == ["f.parquet"]


@pytest.mark.parametrize("args,needle", [
    (["encrypt"], "Missing argument"),
    (["encrypt", "a.parquet", "b.parquet"], "--footer-key-value"),
    (["encrypt", "a.parquet", "b.parquet", "--footer-key-value", "x", "--algorithm", "AES"], "--algorithm"),
    (["verify", "a.parquet", "--no-such-option"], "--no-such-option"),
    (["frobnicate"], "frobnicate"),
])
def test_usage_errors_are_one_line_with_exit_2(args, needle):
    assert_error(run(*args), needle, code=2)


def test_help_documents_the_exit_codes():
    r = run("--help")
    assert r.exit_code == 0
    text = " ".join(r.stdout.split())
    assert "Exit codes: 0" in text and "2 usage error" in text and "130/143" in text


# --------------------------------------------------------------------------- defect 3: existing outputs

def test_existing_destination_is_refused_without_force(plain, tmp_path, table):
    sealed, out = tmp_path / "s.parquet", tmp_path / "o.parquet"
    out.write_bytes(b"precious")
    out.chmod(0o640)
    assert run("encrypt", plain, sealed, "--footer-key-value", B64["footer"]).exit_code == 0
    before = sha(sealed)
    assert_error(run("encrypt", plain, sealed, "--footer-key-value", B64["k32"]), str(sealed), "--force")
    assert_error(run("decrypt", sealed, out, "--footer-key-value", B64["footer"]), str(out), "--force")
    assert sha(sealed) == before and out.read_bytes() == b"precious"
    r = run("decrypt", sealed, out, "--footer-key-value", B64["footer"], "--force")
    assert r.exit_code == 0, r.stderr
    assert pq.read_table(out).equals(table)
    assert stat.S_IMODE(os.stat(out).st_mode) == 0o640        # a replaced file keeps its mode


# --------------------------------------------------------------------------- directories

@pytest.fixture
def dataset(tmp_path, table):
    """A directory with every kind of name pyarrow's discovery treats differently."""
    root = tmp_path / "in"
    for rel in ("one.parquet", "X.PARQUET", "y.parq", "a/ok.parquet", "b=1/part-0", "_tmp.parquet",
                ".z.parquet", "a/_t/in.parquet", ".h/q.parquet", "a/x.parquet.crc"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        G.write_pyarrow(root / rel, table.slice(0, 500))
    pq.write_metadata(table.schema, root / "_common_metadata")
    pq.write_metadata(table.schema, root / "_metadata")
    (root / "_SUCCESS").write_bytes(b"")
    return root


def test_directory_follows_pyarrow_dataset_discovery(dataset, tmp_path):
    expected = sorted(os.path.relpath(f, dataset) for f in ds.dataset(dataset, format="parquet").files)
    assert "X.PARQUET" in expected and "_tmp.parquet" not in expected   # the oracle's rules
    out = tmp_path / "out"
    r = run("encrypt", dataset, out, "--footer-key-value", B64["footer"], "-j", "2")
    assert r.exit_code == 0, r.stderr
    done = sorted(os.path.relpath(os.path.join(d, f), out) for d, _, fs in os.walk(out) for f in fs)
    # the job's journal (which readers ignore) and the copied _SUCCESS marker are the only extras
    assert done == sorted(expected + [".pqseal-job/journal.jsonl", "_SUCCESS"])
    skipped = [ln for ln in r.stderr.splitlines() if ln.startswith("skipped ")]
    text = "\n".join(skipped)
    for name in ("_tmp.parquet", ".z.parquet", "_SUCCESS", "_metadata", "_common_metadata", ".h/", "a/_t/"):
        assert name in text, (name, text)
    assert any("summary" in ln and "_metadata" in ln for ln in skipped)
    assert r.stdout.startswith(f"encrypted {len(expected)} files")


def test_directory_data_file_that_is_not_parquet_fails(dataset, tmp_path):
    (dataset / "notes.txt").write_text("not parquet")
    out = tmp_path / "out"
    r = run("encrypt", dataset, out, "--footer-key-value", B64["footer"])
    assert r.exit_code == 1
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("pqseal: error: ")]
    assert "notes.txt" in errors[0] and "MalformedFile" in errors[0] and "1 of 7 files failed" in errors[-1]
    assert (out / "one.parquet").exists()


def test_inspect_directory_reports_every_bad_file_and_goes_on(plain, tmp_path):
    d = tmp_path / "d"
    d.mkdir()
    for name in ("a.parquet", "c.parquet"):
        assert run("encrypt", plain, d / name, "--footer-key-value", B64["footer"]).exit_code == 0
    (d / "b.parquet").write_bytes(b"junk" * 100)
    for cmd in (["inspect", d], ["inspect", d, "--json"], ["verify", d, "--footer-key-value", B64["footer"]]):
        r = run(*cmd)
        assert r.exit_code == 1, (cmd, r.stderr)
        assert str(d / "a.parquet") in r.stdout and str(d / "c.parquet") in r.stdout, cmd
        errors = r.stderr.strip().splitlines()
        assert "b.parquet" in errors[0] and "MalformedFile" in errors[0]
        assert errors[-1] == "pqseal: error: 1 of 3 files failed"


def test_directory_destination_inside_source_and_existing_outputs(plain, tmp_path):
    d = tmp_path / "d"
    d.mkdir()
    (d / "f.parquet").write_bytes(Path(plain).read_bytes())
    assert_error(run("encrypt", d, d / "enc", "--footer-key-value", B64["footer"]), "inside")
    out = tmp_path / "out"
    assert run("encrypt", d, out, "--footer-key-value", B64["footer"]).exit_code == 0
    before = sha(out / "f.parquet")
    r = run("encrypt", d, out, "--footer-key-value", B64["k32"])
    assert r.exit_code == 1 and "--force" in r.stderr and sha(out / "f.parquet") == before
    assert run("encrypt", d, out, "--footer-key-value", B64["k32"], "--force").exit_code == 0
    pqseal.verify(out / "f.parquet", DecryptionProperties(G.K32))
    assert json.loads(run("inspect", out / "f.parquet", "--json").stdout)["encrypted"]


def test_an_oserror_without_a_path_is_given_the_users_path():
    """Errors from the OS that name no file (ENOSPC from a write, fsync) or only a
    temporary file get the user's paths; the message stays one line."""
    from pqseal.cli.group import one_line

    full = OSError(errno.ENOSPC, "No space left on device")
    assert one_line(full, "in.parquet", "out/o.parquet") == "OSError: No space left on device (writing out/o.parquet)"
    tmp = OSError(errno.EIO, "Input/output error", "/d/.o.parquet.pqseal-123-abcd.tmp")
    assert (one_line(tmp, "/s/in.parquet", "/d/o.parquet")
            == "OSError: Input/output error (/s/in.parquet -> /d/o.parquet)")
    assert one_line(ValueError("two\nlines")) == "ValueError: two lines"


def test_explicit_keys_with_complete_columns(plain, tmp_path, table):
    sealed = tmp_path / "s.parquet"
    r = run("encrypt", plain, sealed, "--footer-key-value", B64["footer"], "--column-key-value", f"id={B64['c1']}",
            "--complete-columns")
    assert r.exit_code == 0, r.stderr
    enc = {c["path"]: c["encryption"] for c in
           pqseal.inspect(sealed, DecryptionProperties(G.K16, column_keys={"id": G.KC1}))["columns"]}
    assert enc.pop("id") == "column key" and set(enc.values()) == {"footer key"}
    assert_error(run("encrypt", plain, tmp_path / "o.parquet", "--footer-key-value", B64["footer"],
                     "--complete-columns"), "--complete-columns", code=2)


def test_rotate_command(plain, tmp_path, table):
    sealed = tmp_path / "s.parquet"
    r = run("encrypt", plain, sealed, "--key-list", KL, "--footer-key", "kf", "--column-keys", "kc:id",
            "--external-key-material")
    assert r.exit_code == 0, r.stderr
    material = tmp_path / "_KEY_MATERIAL_FOR_s.parquet.json"
    before = material.read_bytes()
    r = run("rotate", sealed, "--key-list", "env:KL", env={"KL": KL})
    assert r.exit_code == 0, r.stderr
    assert r.stdout.strip() == f"rotated 2 keys of {sealed}" and material.read_bytes() != before
    assert pyarrow_reads(sealed).equals(table)
    # a directory runs as a dataset job: the key material file is not data; a file with
    # internal material has its footer rewritten (data bytes unchanged); a plaintext
    # file is left alone with a warning, and the report lists it
    assert run("encrypt", plain, tmp_path / "i.parquet", "--key-list", KL, "--footer-key", "kf").exit_code == 0
    shutil.copy(plain, tmp_path / "p.parquet")
    from pqseal.format.source import Source

    with Source(str(tmp_path / "i.parquet")) as s, open(tmp_path / "i.parquet", "rb") as f:
        head = f.read(s.tail.footer_offset)   # the data region
    internal, before = sha(tmp_path / "i.parquet"), material.read_bytes()
    r = run("rotate", tmp_path, "--key-list", KL, "--report", tmp_path / "report.json")
    assert r.exit_code == 0, r.stderr
    # one KEK per master key in s's material, one more in i's footer: 3 unwraps, 2 wraps
    assert r.stdout.strip() == "rotated the key material of 2 files (5 KMS calls)"
    assert "warning: 1 files not rotated, no key material" in r.stderr and "p.parquet" in r.stderr
    assert "_KEY_MATERIAL_FOR_s.parquet.json" in r.stderr and "key material" in r.stderr
    rep = json.loads((tmp_path / "report.json").read_text())
    assert rep["counts"]["ok"] == 2 and rep["kms_calls"] == 5
    assert [(x["path"], "no key material" in x["reason"]) for x in rep["skipped"]] == [("p.parquet", True)]
    assert material.read_bytes() != before and sha(tmp_path / "i.parquet") != internal
    with open(tmp_path / "i.parquet", "rb") as f:
        assert f.read(len(head)) == head
    assert pyarrow_reads(sealed).equals(table) and pyarrow_reads(tmp_path / "i.parquet").equals(table)
    assert_error(run("rotate", tmp_path, "--key-list", KL, "--single-wrapping"), "--single-wrapping",
                 "double wrapping", code=2)
    assert_error(run("rotate", sealed, "--key-list", KL, "--report", tmp_path / "r2.json"), "--report", code=2)


def _retire(keystore, key_id: str, version: int) -> None:
    """Disable one version of a master key in the keystore (`pqseal keys disable`)."""
    assert run("keys", "disable", key_id, "--version", str(version),
               env={"PQSEAL_KEYSTORE": str(keystore), "PQSEAL_KEYSTORE_PASSPHRASE": "pw-1234"}).exit_code == 0


def _keks(root) -> set:
    """The distinct (master key, KEK id) pairs of a tree's external key material."""
    out = set()
    for m in Path(root).rglob("_KEY_MATERIAL_FOR_*.json"):
        for text in json.loads(m.read_text()).values():
            doc = json.loads(text)
            if doc.get("keyMaterialType") == "PKMT1" and "masterKeyID" in doc:
                out.add((doc["masterKeyID"], doc["keyEncryptionKeyID"]))
    return out


def test_rotate_a_directory_with_the_keystore(plain, tmp_path, table):
    """`pqseal rotate DIR` after `pqseal keys rotate`: one KMS unwrap per distinct KEK of
    the tree, one wrap per master key (counted by the job's report); with the old master
    key versions disabled pyarrow still reads every file, and the old material does not
    open any more."""
    ks = tmp_path / "ks.json"
    env = {"PQSEAL_KEYSTORE": str(ks), "PQSEAL_KEYSTORE_PASSPHRASE": "pw-1234"}
    assert run("keys", "init", env=env).exit_code == 0
    for k in ("kf", "kc"):
        assert run("keys", "create", k, env=env).exit_code == 0
    src = tmp_path / "src"
    for part in ("a", "b"):
        for i in range(3):
            (src / part).mkdir(parents=True, exist_ok=True)
            (src / part / f"{i}.parquet").write_bytes(Path(plain).read_bytes())
    sealed = tmp_path / "sealed"
    for part in ("a", "b"):     # two jobs: two KEKs per master key
        r = run("encrypt", src / part, sealed / part, "--footer-key", "kf", "--column-keys", "kc:id",
                "--external-key-material", "--executor", "processes", "-j", "2", env=env)
        assert r.exit_code == 0, r.stderr
    keks = _keks(sealed)
    assert len(keks) == 4
    old = tmp_path / "old"
    old.mkdir()
    for f in ("0.parquet", "_KEY_MATERIAL_FOR_0.parquet.json"):
        (old / f).write_bytes((sealed / "a" / f).read_bytes())
    for k in ("kf", "kc"):
        assert run("keys", "rotate", k, env=env).exit_code == 0
    r = run("rotate", sealed, "--executor", "processes", "-j", "2", "--report", tmp_path / "rep.json", env=env)
    assert r.exit_code == 0, r.stderr
    assert r.stdout.strip() == "rotated the key material of 6 files (6 KMS calls)"
    rep = json.loads((tmp_path / "rep.json").read_text())
    assert rep["counts"] == {"ok": 6, "failed": 0, "skipped": 0, "ignored": rep["counts"]["ignored"]}
    assert rep["kms_calls"] == len(keks) + 2
    assert len(_keks(sealed)) == 2 and not _keks(sealed) & keks     # one new KEK per master key
    for k in ("kf", "kc"):
        _retire(ks, k, 1)
    keystore = LocalKeystore(ks, b"pw-1234")
    for f in sorted(sealed.rglob("*.parquet")):
        assert pyarrow_reads(f, keystore).equals(table)
    with pytest.raises(Exception, match="disabled"):
        pyarrow_reads(old / "0.parquet", keystore)


def test_verify_line_separates_authenticated_modules_from_ctr_pages():
    """With the report fields of the CTR integrity change, CTR page bodies are not
    counted as authenticated; without them the line is as before."""
    from pqseal.cli.files import _ok_line

    base = {"file": "f.parquet", "algorithm": "AES_GCM_CTR_V1", "modules": 52, "pages": 40, "row_groups": 2}
    assert _ok_line(base) == "OK f.parquet: AES_GCM_CTR_V1, 52 modules authenticated, 40 pages, 2 row groups"
    new = {**base, "modules_authenticated": 12, "pages_framing_checked": 40}
    assert _ok_line(new) == ("OK f.parquet: AES_GCM_CTR_V1, 12 modules authenticated, 40 CTR pages framing "
                             "checked (not authenticated), 40 pages, 2 row groups")


KL3 = f"{KL}, kn: {B64['c2']}"     # the old master keys and a new one


def footer_key_metadata(path) -> dict:
    """The footer's key metadata as stored in the file (tests/pme_reference.py)."""
    from pme_reference import RefFile

    return json.loads(RefFile(path).crypto_meta["key_metadata"])


def test_rekey_a_file(plain, tmp_path, table):
    """New data keys under new master keys, page by page: pyarrow reads the result with
    the new master keys, not with the old ones nor with the old data keys."""
    sealed, rekeyed = tmp_path / "s.parquet", tmp_path / "r.parquet"
    r = run("encrypt", plain, sealed, "--key-list", KL3, "--footer-key", "kf", "--column-keys", "kc:id",
            "--external-key-material")
    assert r.exit_code == 0, r.stderr
    old = pqseal.api.decryption_properties(sealed, kms=KeyListKms(KL3))
    old_dek = old.key_retriever(json.dumps(footer_key_metadata(sealed)).encode(), None)
    r = run("rekey", sealed, rekeyed, "--key-list", KL3, "--uniform-key", "kn")
    assert r.exit_code == 0, r.stderr
    assert r.stdout.startswith(f"rekeyed {sealed} -> {rekeyed}: ")
    md = footer_key_metadata(rekeyed)
    assert md["masterKeyID"] == "kn" and md["wrappedDEK"] != footer_key_metadata(sealed).get("wrappedDEK")
    assert pyarrow_reads(rekeyed, KL3).equals(table)
    with pytest.raises(KeyNotFound, match="'kn'"):
        pyarrow_reads(rekeyed, KL)          # the old master keys alone do not open it
    new_dek = pqseal.api.decryption_properties(rekeyed, kms=KeyListKms(KL3)).key_retriever(
        json.dumps(md).encode(), None)
    assert pq.read_table(rekeyed, decryption_properties=pe.create_decryption_properties(new_dek)).equals(table)
    with pytest.raises(OSError):
        pq.read_table(rekeyed, decryption_properties=pe.create_decryption_properties(old_dek))
    assert pyarrow_reads(sealed, KL3).equals(table)     # the source is untouched

    # explicit keys on both sides, to a new file and in place (the engine's temporary
    # file and rename: a failing run leaves the file as it was)
    e, e2 = tmp_path / "e.parquet", tmp_path / "e2.parquet"
    assert run("encrypt", plain, e, "--footer-key-value", B64["footer"]).exit_code == 0
    r = run("rekey", e, e2, "--old-footer-key-value", B64["footer"], "--footer-key-value", B64["k32"])
    assert r.exit_code == 0, r.stderr
    assert pq.read_table(e2, decryption_properties=pe.create_decryption_properties(G.K32)).equals(table)
    assert_error(run("rekey", e, e, "--old-footer-key-value", B64["footer"], "--footer-key-value", B64["k32"]),
                 "--in-place")
    before = sha(e)
    assert_error(run("rekey", e, e, "--in-place", "--old-footer-key-value", B64["c1"], "--footer-key-value",
                     B64["k32"]), "e.parquet")
    assert sha(e) == before and not [n for n in os.listdir(tmp_path) if ".pqseal-" in n]
    r = run("rekey", e, e, "--in-place", "--old-footer-key-value", B64["footer"], "--footer-key-value", B64["k32"])
    assert r.exit_code == 0, r.stderr
    assert pq.read_table(e, decryption_properties=pe.create_decryption_properties(G.K32)).equals(table)
    with pytest.raises(OSError):
        pq.read_table(e, decryption_properties=pe.create_decryption_properties(G.K16))
    assert not [n for n in os.listdir(tmp_path) if ".pqseal-" in n]
    # old keys through the KMS, new ones explicit: --key-list serves the old side
    r = run("rekey", sealed, tmp_path / "x.parquet", "--key-list", KL3, "--footer-key-value", B64["k32"])
    assert r.exit_code == 0, r.stderr
    assert pq.read_table(tmp_path / "x.parquet",
                         decryption_properties=pe.create_decryption_properties(G.K32)).equals(table)
    # both sides explicit: a KMS option has nothing to serve
    assert_error(run("rekey", e, tmp_path / "y.parquet", "--old-footer-key-value", B64["k32"],
                     "--footer-key-value", B64["footer"], "--key-list", KL), "--key-list", code=2)


def test_rekey_a_directory(plain, tmp_path, table):
    """A directory runs as a dataset job: one KMS unwrap per KEK of the tree and one wrap
    per new master key; the tree is kept and pyarrow reads every output."""
    src, sealed, out = tmp_path / "src", tmp_path / "sealed", tmp_path / "out"
    rels = [f"part={p}/{i}.parquet" for p in ("a", "b") for i in range(2)]
    for rel in rels:
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_bytes(Path(plain).read_bytes())
    r = run("encrypt", src, sealed, "--key-list", KL3, "--footer-key", "kf", "--column-keys", "kc:id",
            "--external-key-material")
    assert r.exit_code == 0, r.stderr
    r = run("rekey", sealed, out, "--key-list", KL3, "--footer-key", "kn", "--executor", "processes", "-j", "2",
            "--report", tmp_path / "rep.json")
    assert r.exit_code == 0, r.stderr
    assert r.stdout.startswith("rekeyed 4 files")
    rep = json.loads((tmp_path / "rep.json").read_text())
    assert rep["kind"] == "rekey" and rep["counts"]["ok"] == 4 and rep["kms_calls"] == 2 + 1
    for rel in rels:
        assert footer_key_metadata(out / rel)["masterKeyID"] == "kn"
        assert pyarrow_reads(out / rel, KL3).equals(table)
    assert not list(out.rglob("_KEY_MATERIAL_FOR_*"))     # internal key material by default
    r = run("rekey", sealed, out, "--key-list", KL3, "--footer-key", "kn", "--report", tmp_path / "rep.json")
    assert r.exit_code == 0 and json.loads((tmp_path / "rep.json").read_text())["counts"]["skipped"] == 4
    assert_error(run("rekey", sealed, tmp_path / "o2", "--key-list", KL3, "--footer-key", "kn",
                     "--old-aad-prefix", "x"), "--old-aad-prefix", code=2)
