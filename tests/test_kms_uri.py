"""KMS URIs (pqseal.kms.uri): parsing per scheme, TOML config files, every refusal
(credentials, unknown schemes and options, duplicates), and open_kms for the clients
that need no server (keystore, key list) and on the command line."""

from __future__ import annotations

import base64
import os

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from pqseal import EncryptionConfig, decrypt_file, encrypt_file
from pqseal.cli import main
from pqseal.errors import CredentialsInKmsUri, InvalidKmsUri, KeyNotFound, PqsealError, UnsupportedFeature
from pqseal.kms import KeyListKms, KmsConnectionConfig, KmsUri, kms_connection_from_uri, open_kms, parse_kms_uri
from pqseal.kms.keystore import LocalKeystore
from pqseal.kms.uri import SCHEMES, check_options

from pyarrow_kms import pyarrow_read


@pytest.mark.parametrize("text,scheme,body,options", [
    ("keystore", "keystore", "", {}),
    ("keystore:", "keystore", "", {}),
    ("keystore:/srv/keys/ks.json", "keystore", "/srv/keys/ks.json", {}),
    ("keystore:rel/a?b;c.json", "keystore", "rel/a?b;c.json", {}),          # a path, as written
    ("KEYLIST", "keylist", "", {}),
    ("keylist:", "keylist", "", {}),
    ("vault+http://127.0.0.1:8200/transit", "vault+http", "//127.0.0.1:8200/transit", {}),
    ("vault+https://vault.example:8200/transit?namespace=team%2Fa&ca_bundle_file=/etc/ca.pem",
     "vault+https", "//vault.example:8200/transit", {"namespace": "team/a", "ca_bundle_file": "/etc/ca.pem"}),
    ("pkcs11:module=/usr/lib/softhsm/libsofthsm2.so;token=pq%20seal?slot-id=3&pin-source=/run/pin",
     "pkcs11", "module=/usr/lib/softhsm/libsofthsm2.so;token=pq%20seal",
     {"module": "/usr/lib/softhsm/libsofthsm2.so", "token": "pq seal", "slot-id": "3", "pin-source": "/run/pin"}),
    ("aws-kms://eu-central-1", "aws-kms", "//eu-central-1", {}),
    ("aws-kms://us-east-1?endpoint=http://127.0.0.1:5000&context=on", "aws-kms", "//us-east-1",
     {"endpoint": "http://127.0.0.1:5000", "context": "on"}),
    ("  aws-kms://  ", "aws-kms", "//", {}),
])
def test_parse(text, scheme, body, options):
    u = parse_kms_uri(text)
    assert (u.scheme, u.body, u.options) == (scheme, body, options)
    assert u.text == text.strip()


@pytest.mark.parametrize("text,secret", [
    ("vault+https://root:s3cret-pw@vault:8200/transit", "s3cret-pw"),
    ("vault+http://s3cret-tok@vault:8200/transit", "s3cret-tok"),
    ("aws-kms://AKIA:s3cret@us-east-1", "s3cret"),
    ("vault+http://vault:8200/transit?token=hvs.s3cret", "hvs.s3cret"),
    ("vault+http://vault:8200/transit?X-Vault-Token=hvs.s3cret", "hvs.s3cret"),
    ("vault+http://vault:8200/transit?secret_id=s3cret", "s3cret"),
    ("vault+http://vault:8200/transit?password=s3cret", "s3cret"),
    ("pkcs11:module=/lib.so;token=t;pin-value=123456", "123456"),
    ("pkcs11:module=/lib.so;token=t?pin=123456", "123456"),
    ("pkcs11:module=/lib.so;token=t;PIN-VALUE=123456", "123456"),
    ("aws-kms://us-east-1?aws_secret_access_key=s3cret", "s3cret"),
    ("aws-kms://us-east-1?aws_access_key_id=AKIAS3CRET", "AKIAS3CRET"),
    ("aws-kms://us-east-1?aws_session_token=s3cret", "s3cret"),
    ("aws-kms://us-east-1?SecretAccessKey=s3cret", "s3cret"),
    ("aws-kms://us-east-1?session-token=s3cret", "s3cret"),
    ("keylist:kf: AAECAwQFBgcICQoLDA0ODw==", "AAECAwQFBgcICQoLDA0ODw"),
])
def test_credentials_are_refused_without_echoing_them(text, secret):
    with pytest.raises(CredentialsInKmsUri) as e:
        parse_kms_uri(text)
    assert isinstance(e.value, ValueError) and isinstance(e.value, PqsealError)
    message = str(e.value)
    assert secret not in message and ("credential" in message or "never from the URI" in message)


@pytest.mark.parametrize("name", ["pin-source", "token_file", "secret_id_file", "role_id", "token"])
def test_where_a_secret_lives_is_not_a_secret(name):
    # pkcs11's 'token' is the token label; *_file / pin-source name files
    assert parse_kms_uri(f"pkcs11:module=/lib.so;{name}=x").options[name] == "x"


@pytest.mark.parametrize("text,match", [
    ("", "empty"),
    ("   ", "empty"),
    ("s3://bucket/key",
     "unknown KMS scheme 's3'.*aws-kms, file, keylist, keystore, pkcs11, vault\\+http, vault\\+https"),
    ("vault://h:8200/transit", "unknown KMS scheme 'vault'"),
    ("/etc/kms.toml", "not a KMS URI"),
    ("aws-kms:us-east-1", "expected aws-kms://"),
    ("vault+http:/h/transit", "expected vault\\+http://"),
    ("aws-kms://r?endpoint=a&endpoint=b", "given twice"),
    ("pkcs11:module=/a.so;module=/b.so", "given twice"),
    ("pkcs11:module=/a.so?module=/b.so", "given twice"),
    ("pkcs11:module", "NAME=VALUE"),
    ("aws-kms://r?context", "NAME=VALUE"),
    ("aws-kms://r?=on", "without a name"),
    ("aws-kms://r?a%20b=1", "option names"),
])
def test_malformed_uris_are_refused(text, match):
    with pytest.raises(InvalidKmsUri, match=match):
        parse_kms_uri(text)


def test_not_a_string():
    with pytest.raises(InvalidKmsUri):
        parse_kms_uri(None)


def test_schemes_table():
    assert set(SCHEMES) == {"keystore", "keylist", "vault+http", "vault+https", "pkcs11", "aws-kms"}


# ---- TOML files --------------------------------------------------------------------------


def test_toml_file(tmp_path):
    f = tmp_path / "kms.toml"
    f.write_text('uri = "aws-kms://us-east-1?context=on"\nendpoint = "http://127.0.0.1:4566"\nretries = 5\n'
                 'profile = "prod"\n')
    u = parse_kms_uri(f"file:{f}")
    assert (u.scheme, u.body) == ("aws-kms", "//us-east-1")
    assert u.options == {"context": "on", "endpoint": "http://127.0.0.1:4566", "retries": "5", "profile": "prod"}
    assert parse_kms_uri(f"file://{f}") == u


@pytest.mark.parametrize("content,error,match", [
    ('endpoint = "x"\n', InvalidKmsUri, "needs uri"),
    ('uri = 5\n', InvalidKmsUri, "needs uri"),
    ('uri = "file:/other.toml"\n', InvalidKmsUri, "not another file"),
    ('uri = "ftp://x"\n', InvalidKmsUri, "unknown KMS scheme 'ftp'"),
    ('uri = "aws-kms://r?context=on"\ncontext = "off"\n', InvalidKmsUri, "given twice"),
    ('uri = "aws-kms://r"\n[endpoint]\nx = 1\n', InvalidKmsUri, "string, number or boolean"),
    ('uri = "aws-kms://r"\naws_secret_access_key = "s3cret"\n', CredentialsInKmsUri, "credential"),
    ('uri = "vault+https://h/transit"\ntoken = "hvs.s3cret"\n', CredentialsInKmsUri, "credential"),
    ('uri = "pkcs11:module=/l.so;token=t"\npin = "1234"\n', CredentialsInKmsUri, "credential"),
    ('uri = "aws-kms://r"\nendpoint = \n', InvalidKmsUri, "not valid TOML"),
])
def test_toml_file_refusals(tmp_path, content, error, match):
    f = tmp_path / "kms.toml"
    f.write_text(content)
    with pytest.raises(error, match=match) as e:
        parse_kms_uri(f"file:{f}")
    assert "s3cret" not in str(e.value) and "1234" not in str(e.value)


def test_toml_file_missing_or_unreadable(tmp_path):
    with pytest.raises(InvalidKmsUri, match="does not exist"):
        parse_kms_uri(f"file:{tmp_path / 'none.toml'}")
    with pytest.raises(InvalidKmsUri, match="needs the path"):
        parse_kms_uri("file:")
    with pytest.raises(InvalidKmsUri, match="IsADirectoryError"):
        parse_kms_uri(f"file:{tmp_path}")
    (tmp_path / "bin.toml").write_bytes(b"\xff\xfe uri")
    with pytest.raises(InvalidKmsUri):
        parse_kms_uri(f"file:{tmp_path / 'bin.toml'}")


# ---- options checked by clients ----------------------------------------------------------


def test_check_options():
    u = KmsUri("aws-kms", "//r", {"endpoint": "x", "endpont": "y"}, "aws-kms://r?...")
    with pytest.raises(InvalidKmsUri, match="unknown option\\(s\\) endpont \\(known: endpoint\\)"):
        check_options(u, ["endpoint"])
    check_options(KmsUri("aws-kms", "//r", {"endpoint": "x"}), ["endpoint"])


@pytest.mark.parametrize("uri", ["keystore:/x.json?create=1", "keylist:"])
def test_keystore_and_keylist_take_no_options(tmp_path, uri, monkeypatch):
    monkeypatch.setenv("PQSEAL_KEY_LIST", "kf: " + base64.b64encode(os.urandom(16)).decode())
    f = tmp_path / "k.toml"
    f.write_text(f'uri = "{uri}"\nextra = 1\n')
    with pytest.raises(InvalidKmsUri, match="unknown option\\(s\\) extra"):
        open_kms(f"file:{f}")


def test_a_missing_client_is_unsupported(monkeypatch):
    import pqseal.kms.uri as uri_mod

    monkeypatch.setitem(uri_mod.SCHEMES, "aws-kms", ".no_such_client_module")
    with pytest.raises(UnsupportedFeature, match="install pqseal\\[aws\\]"):
        open_kms("aws-kms://us-east-1")


# ---- open_kms without a server -----------------------------------------------------------

TABLE = pa.table({"id": list(range(100)), "ssn": [f"{i:09d}" for i in range(100)]})


def test_open_kms_keylist(tmp_path, monkeypatch):
    master = {"kf": os.urandom(16), "kc": os.urandom(16)}
    monkeypatch.setenv("PQSEAL_KEY_LIST", ", ".join(f"{k}: {base64.b64encode(v).decode()}" for k, v in master.items()))
    kms = open_kms("keylist:")
    assert isinstance(kms(KmsConnectionConfig()), KeyListKms)
    pq.write_table(TABLE, tmp_path / "p.parquet")
    encrypt_file(tmp_path / "p.parquet", tmp_path / "s.parquet", EncryptionConfig("kf", column_keys={"kc": ["ssn"]}),
                 kms=kms)
    assert pyarrow_read((tmp_path / "s.parquet").read_bytes(), KeyListKms(master)).equals(TABLE)
    monkeypatch.delenv("PQSEAL_KEY_LIST")
    with pytest.raises(KeyNotFound, match="PQSEAL_KEY_LIST"):
        open_kms("keylist")


def test_open_kms_keystore_is_lazy(tmp_path, monkeypatch):
    monkeypatch.setenv("PQSEAL_KEYSTORE_PASSPHRASE", "pass phrase")
    path = tmp_path / "ks.json"
    kms = open_kms(f"keystore:{path}")           # nothing is opened yet
    ks = LocalKeystore.init(str(path))
    ks.create("kf")
    client = kms(KmsConnectionConfig())
    assert isinstance(client, LocalKeystore) and client.path == str(path) and kms(None) is client
    pq.write_table(TABLE, tmp_path / "p.parquet")
    encrypt_file(tmp_path / "p.parquet", tmp_path / "s.parquet", EncryptionConfig("kf", uniform_encryption=True),
                 kms=kms)
    decrypt_file(tmp_path / "s.parquet", tmp_path / "o.parquet", kms=open_kms(f"keystore:{path}"))
    assert pq.read_table(tmp_path / "o.parquet").equals(TABLE)
    with pytest.raises(KeyNotFound, match="no keystore"):
        open_kms(f"keystore:{tmp_path / 'none.json'}")(None)


def test_kms_connection_from_uri():
    c = kms_connection_from_uri("aws-kms://us-east-1?context=on", key_access_token="tok")
    assert c.kms_instance_url == "aws-kms://us-east-1?context=on" and c.key_access_token == "tok"
    with pytest.raises(CredentialsInKmsUri):
        kms_connection_from_uri("vault+http://h/t?token=x")


# ---- the command line --------------------------------------------------------------------


def _run(*args, env=None):
    return CliRunner().invoke(main, [os.fspath(a) for a in args], env=env, catch_exceptions=False)


def test_cli_keystore_through_a_toml_file(tmp_path, monkeypatch):
    monkeypatch.setenv("PQSEAL_KEYSTORE_PASSPHRASE", "pass phrase")
    path = tmp_path / "ks.json"
    LocalKeystore.init(str(path)).create("kf")
    conf = tmp_path / "kms.toml"
    conf.write_text(f'uri = "keystore:{path}"\n')
    pq.write_table(TABLE, tmp_path / "p.parquet")
    r = _run("encrypt", tmp_path / "p.parquet", tmp_path / "s.parquet", "--kms", f"file:{conf}", "--uniform-key", "kf")
    assert r.exit_code == 0, r.output
    r = _run("decrypt", tmp_path / "s.parquet", tmp_path / "o.parquet", "--kms", f"keystore:{path}")
    assert r.exit_code == 0, r.output
    assert pq.read_table(tmp_path / "o.parquet").equals(TABLE)


@pytest.mark.parametrize("kms,match", [
    ("s3://b/k", "unknown KMS scheme 's3'"),
    ("vault+http://h:8200/transit?token=hvs.s3cret", "credential"),
    ("aws-kms://r?endpont=x", "unknown option"),
    ("keylist:kf: AAECAwQFBgcICQoLDA0ODw==", "never from the URI"),
])
def test_cli_refusals_are_one_line(tmp_path, kms, match):
    pq.write_table(TABLE, tmp_path / "p.parquet")
    for args in (("encrypt", tmp_path / "p.parquet", tmp_path / "s.parquet", "--uniform-key", "kf"),
                 ("decrypt", tmp_path / "p.parquet", tmp_path / "o.parquet"),
                 ("verify", tmp_path / "p.parquet"), ("inspect", tmp_path / "p.parquet"),
                 ("rotate", tmp_path / "p.parquet")):
        r = CliRunner().invoke(main, [os.fspath(a) for a in args] + ["--kms", kms])
        assert r.exit_code != 0, (args, r.output)
        assert match in r.output and "Traceback" not in r.output and "s3cret" not in r.output, r.output
        assert "AAECAwQFBgcICQoLDA0ODw" not in r.output
    assert not (tmp_path / "s.parquet").exists() and not (tmp_path / "o.parquet").exists()
