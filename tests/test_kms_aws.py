"""The AWS KMS client (pqseal[aws]) against moto's KMS server, started here in a
subprocess (tests/moto_kms.py). moto checks the KMS API (parameters, errors, key ids,
aliases, the encryption context as authenticated data), not AWS's cryptography, key
states or IAM policies: the disabled-key and throttling paths use AWS's documented
error codes through botocore's Stubber instead."""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
import time
from collections import Counter

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import pqseal
from pqseal import EncryptionConfig, decrypt_file, encrypt_file
from pqseal.errors import InvalidKmsUri, InvalidTag, KeyAccessDenied, KeyDisabled, KeyNotFound, KmsUnavailable
from pqseal.kms import KmsClient, open_kms
from pqseal.kms.context import FOOTER, key_context
from pqseal.kms.resilience import RetryPolicy

from interop import kms_missing
from moto_kms import ACCOUNT, REGION, MotoKms, fake_credentials
from pyarrow_kms import pyarrow_read

try:
    import botocore.stub as botocore_stub
    import moto.server  # noqa: F401 - started in a subprocess
except ModuleNotFoundError as exc:
    kms_missing(f"boto3 and moto[server] are needed for the AWS KMS tests ({exc.name} missing)")
from pqseal.kms import aws  # noqa: E402

TABLE = pa.table({"id": pa.array(range(300), pa.int64()),
                  "ssn": pa.array([f"{i:09d}" for i in range(300)]),
                  "name": pa.array([f"person-{i}" for i in range(300)])})


@pytest.fixture(scope="module")
def aws_env():
    with fake_credentials():
        yield


@pytest.fixture(scope="module")
def moto_kms(aws_env):
    server = MotoKms()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def keys(moto_kms):
    """Master keys named three ways: an alias, a key ARN, a bare key id."""
    footer = moto_kms.create_key("pqseal-footer")
    ssn = moto_kms.create_key()
    name = moto_kms.create_key()
    assert footer.startswith(f"arn:aws:kms:{REGION}:{ACCOUNT}:key/")
    return {"footer": "alias/pqseal-footer", "ssn": ssn, "name": name.rsplit("/", 1)[1]}


@pytest.fixture
def plain(tmp_path):
    p = tmp_path / "plain.parquet"
    pq.write_table(TABLE, p)
    return p


def _config(keys, **kw) -> EncryptionConfig:
    return EncryptionConfig(keys["footer"], column_keys={keys["ssn"]: ["ssn"], keys["name"]: ["name"]}, **kw)


class Counting(KmsClient):
    """Counts the KMS calls of the client it wraps (GenerateDataKey included)."""

    def __init__(self, inner):
        self.inner, self.calls = inner, Counter()

    def wrap_key(self, key_bytes, master_key_identifier):
        self.calls["Encrypt"] += 1
        return self.inner.wrap_key(key_bytes, master_key_identifier)

    def unwrap_key(self, wrapped_key, master_key_identifier):
        self.calls["Decrypt"] += 1
        return self.inner.unwrap_key(wrapped_key, master_key_identifier)

    def generate_key(self, master_key_identifier, nbytes):
        self.calls["GenerateDataKey"] += 1
        return self.inner.generate_key(master_key_identifier, nbytes)


@pytest.mark.parametrize("double", [True, False], ids=["double", "single"])
@pytest.mark.parametrize("internal", [True, False], ids=["internal", "external"])
def test_round_trip(moto_kms, keys, plain, tmp_path, double, internal):
    kms = open_kms(moto_kms.uri())
    sealed, out = tmp_path / "sealed.parquet", tmp_path / "out.parquet"
    encrypt_file(plain, sealed, _config(keys, double_wrapping=double, internal_key_material=internal), kms=kms)
    data = sealed.read_bytes()
    assert data[:4] == b"PARE" and b"person-12" not in data and b"000000012" not in data
    material = (tmp_path / "_KEY_MATERIAL_FOR_sealed.parquet.json")
    assert material.exists() != internal
    decrypt_file(sealed, out, kms=kms)
    assert pq.read_table(out).equals(TABLE)
    # a fresh client (no cached KEKs) unwraps through the server again
    decrypt_file(sealed, tmp_path / "out2.parquet", kms=open_kms(moto_kms.uri()))
    assert pq.read_table(tmp_path / "out2.parquet").equals(TABLE)


def test_pyarrow_reads_through_pqseal_arrow(moto_kms, keys, plain, tmp_path):
    kms = open_kms(moto_kms.uri())
    for double in (True, False):
        sealed = tmp_path / f"sealed-{double}.parquet"
        encrypt_file(plain, sealed, _config(keys, double_wrapping=double), kms=kms)
        assert pyarrow_read(sealed.read_bytes(), kms(None)).equals(TABLE)


def test_key_ids_arns_and_aliases_name_the_same_key(moto_kms, keys):
    client = open_kms(moto_kms.uri())(None)
    arn = moto_kms.create_key("named")
    key_id = arn.rsplit("/", 1)[1]
    dek = os.urandom(16)
    for wrap_as in (arn, key_id, "alias/named", f"arn:aws:kms:{REGION}:{ACCOUNT}:alias/named"):
        wrapped = client.wrap_key(dek, wrap_as)
        assert base64.b64decode(wrapped, validate=True) and dek not in base64.b64decode(wrapped)
        assert client.unwrap_key(wrapped, arn) == dek
    with pytest.raises(KeyAccessDenied):   # a wrapped key only opens under the master key it names
        client.unwrap_key(client.wrap_key(dek, arn), keys["ssn"])


def test_unknown_master_key_is_key_not_found(moto_kms):
    client = open_kms(moto_kms.uri())(None)
    with pytest.raises(KeyNotFound, match="NotFoundException"):
        client.wrap_key(os.urandom(16), "alias/no-such-key")
    with pytest.raises(KeyNotFound):
        client.wrap_key(os.urandom(16), "11111111-2222-3333-4444-555555555555")


# ---- encryption context ------------------------------------------------------------------


def test_context_binds_single_wrapped_keys_to_file_and_column(moto_kms, keys):
    client = open_kms(moto_kms.uri(context="on"))(None)
    dek = os.urandom(16)
    with key_context(file="a.parquet", column="ssn"):
        wrapped = client.wrap_key(dek, keys["ssn"])
        assert client.unwrap_key(wrapped, keys["ssn"]) == dek
    assert wrapped.startswith("pqaws1;column,file;")
    for other in ({"file": "b.parquet", "column": "ssn"}, {"file": "a.parquet", "column": "name"},
                  {"file": "a.parquet", "column": FOOTER}):
        with key_context(**other), pytest.raises(InvalidTag, match="InvalidCiphertextException"):
            client.unwrap_key(wrapped, keys["ssn"])
    with pytest.raises(KeyAccessDenied, match="column, file"):    # no context: pyarrow, parquet-java
        client.unwrap_key(wrapped, keys["ssn"])
    # stripping the binding from the wrapped key does not help: the KMS wants the context
    with key_context(file="a.parquet", column="ssn"), pytest.raises(InvalidTag):
        client.unwrap_key(wrapped.rsplit(";", 1)[1], keys["ssn"])
    # off (the default): the same key unwraps anywhere
    plain_client = open_kms(moto_kms.uri())(None)
    with key_context(file="a.parquet", column="ssn"):
        unbound = plain_client.wrap_key(dek, keys["ssn"])
    assert plain_client.unwrap_key(unbound, keys["ssn"]) == dek


def _material(path) -> dict:
    return json.loads((path.parent / f"_KEY_MATERIAL_FOR_{path.name}.json").read_text())


def test_single_wrapped_key_copied_to_another_file_fails(moto_kms, keys, plain, tmp_path):
    kms = open_kms(moto_kms.uri(context="on"))
    cfg = _config(keys, double_wrapping=False, internal_key_material=False)
    a, b = tmp_path / "a.parquet", tmp_path / "b.parquet"
    encrypt_file(plain, a, cfg, kms=kms)
    encrypt_file(plain, b, cfg, kms=kms)
    decrypt_file(b, tmp_path / "b-out.parquet", kms=kms)    # bound keys open where they belong
    assert pq.read_table(tmp_path / "b-out.parquet").equals(TABLE)
    ma, mb = _material(a), _material(b)
    ssn_ref = next(r for r, t in mb.items() if json.loads(t)["masterKeyID"] == keys["ssn"])
    mb[ssn_ref] = ma[ssn_ref]                                 # a's wrapped ssn DEK into b
    (tmp_path / "_KEY_MATERIAL_FOR_b.parquet.json").write_text(json.dumps(mb))
    with pytest.raises(InvalidTag, match="InvalidCiphertextException"):
        decrypt_file(b, tmp_path / "b-out2.parquet", kms=open_kms(moto_kms.uri(context="on")))
    assert not (tmp_path / "b-out2.parquet").exists()


def test_double_wrapped_kek_is_bound_to_its_id(moto_kms, keys, plain, tmp_path):
    kms = open_kms(moto_kms.uri(context="on"))
    sealed = tmp_path / "sealed.parquet"
    encrypt_file(plain, sealed, _config(keys, internal_key_material=False), kms=kms)
    decrypt_file(sealed, tmp_path / "out.parquet", kms=kms)
    assert pq.read_table(tmp_path / "out.parquet").equals(TABLE)
    entry = json.loads(next(iter(_material(sealed).values())))
    assert entry["wrappedKEK"].startswith("pqaws1;kek_id;")
    client = kms(None)
    with key_context(kek_id=entry["keyEncryptionKeyID"]):
        assert len(client.unwrap_key(entry["wrappedKEK"], entry["masterKeyID"])) == 16
    with key_context(kek_id=base64.b64encode(os.urandom(16)).decode()), pytest.raises(InvalidTag):
        client.unwrap_key(entry["wrappedKEK"], entry["masterKeyID"])


def test_pyarrow_cannot_supply_the_context(moto_kms, keys, plain, tmp_path):
    kms = open_kms(moto_kms.uri(context="on"))
    sealed = tmp_path / "sealed.parquet"
    encrypt_file(plain, sealed, _config(keys), kms=kms)
    with pytest.raises(Exception, match="encryption context"):
        pyarrow_read(sealed.read_bytes(), kms(None))


# ---- typed errors, retries, outage -------------------------------------------------------


def _stubbed(*errors, retries=3):
    import boto3

    client = boto3.client("kms", region_name=REGION, aws_access_key_id="testing", aws_secret_access_key="testing")
    stub = botocore_stub.Stubber(client)
    for code, status in errors:
        stub.add_client_error("decrypt", service_error_code=code, service_message="as AWS says it",
                              http_status_code=status)
    stub.activate()
    kms = aws.AwsKms(client=client, policy=RetryPolicy(retries=retries, base_delay=0, failure_threshold=100))
    return kms, stub


@pytest.mark.parametrize("code,status,exc", [
    ("DisabledException", 400, KeyDisabled), ("KMSInvalidStateException", 400, KeyDisabled),
    ("AccessDeniedException", 400, KeyAccessDenied), ("NotFoundException", 400, KeyNotFound),
    ("InvalidCiphertextException", 400, InvalidTag), ("IncorrectKeyException", 400, InvalidTag),
])
def test_aws_errors_are_typed_and_not_retried(code, status, exc):
    kms, stub = _stubbed((code, status))
    with pytest.raises(exc, match=code):
        kms.unwrap_key(base64.b64encode(b"blob").decode(), "alias/k")
    stub.assert_no_pending_responses()     # one call: no retry of a permanent error


def test_throttling_is_retried_within_bounds():
    kms, stub = _stubbed(("ThrottlingException", 400), ("ThrottlingException", 400))
    stub.add_response("decrypt", {"Plaintext": b"k" * 16, "KeyId": "arn:aws:kms:x"})
    assert kms.unwrap_key(base64.b64encode(b"blob").decode(), "alias/k") == b"k" * 16
    stub.assert_no_pending_responses()
    kms, stub = _stubbed(*[("ThrottlingException", 400)] * 3, retries=2)
    with pytest.raises(KmsUnavailable, match="3 attempt"):
        kms.unwrap_key(base64.b64encode(b"blob").decode(), "alias/k")


def test_botocore_retries_are_off():
    kms = aws.AwsKms(REGION, endpoint_url="http://127.0.0.1:9")
    assert kms._kms.meta.config.retries["total_max_attempts"] == 1


def test_server_down_is_unavailable_fast_and_opens_the_circuit(aws_env, keys):
    server = MotoKms()
    try:
        arn = server.create_key()
        kms = aws.AwsKms(REGION, endpoint_url=server.endpoint,
                         policy=RetryPolicy(retries=2, base_delay=0.05, timeout=2, failure_threshold=3))
        wrapped = kms.wrap_key(os.urandom(16), arn)
    finally:
        server.stop()
    t = time.monotonic()
    with pytest.raises(KmsUnavailable, match="3 attempt"):
        kms.unwrap_key(wrapped, arn)
    assert time.monotonic() - t < 5
    t = time.monotonic()
    with pytest.raises(KmsUnavailable, match="circuit open"):
        kms.unwrap_key(wrapped, arn)
    assert time.monotonic() - t < 0.1


def test_kek_cache_keeps_a_job_alive_through_an_outage(aws_env, plain, tmp_path):
    server = MotoKms()
    try:
        arn = server.create_key()
        kms = open_kms(server.uri(retries=0))
        encrypt_file(plain, tmp_path / "1.parquet", EncryptionConfig(arn, uniform_encryption=True), kms=kms)
        decrypt_file(tmp_path / "1.parquet", tmp_path / "1-out.parquet", kms=kms)
    finally:
        server.stop()
    # the KEK of this master key is cached (written and unwrapped once): more files of the
    # job are written and read without the KMS
    encrypt_file(plain, tmp_path / "2.parquet", EncryptionConfig(arn, uniform_encryption=True), kms=kms)
    decrypt_file(tmp_path / "2.parquet", tmp_path / "2-out.parquet", kms=kms)
    assert pq.read_table(tmp_path / "2-out.parquet").equals(TABLE)
    with pytest.raises(KmsUnavailable):   # single wrapping needs the KMS for every key
        encrypt_file(plain, tmp_path / "3.parquet", EncryptionConfig(arn, uniform_encryption=True,
                                                                     double_wrapping=False), kms=kms)
    assert not (tmp_path / "3.parquet").exists()


# ---- call counts -------------------------------------------------------------------------


@pytest.mark.parametrize("double,writes,reads", [
    (True, {"GenerateDataKey": 3}, {"Decrypt": 3}),
    (False, {"Encrypt": 3 * 200}, {"Decrypt": 3 * 200}),
], ids=["double", "single"])
def test_200_files_call_counts(moto_kms, keys, tmp_path, double, writes, reads):
    """A 200-file job, 3 master keys: double wrapping asks the KMS once per master key
    (a KEK from GenerateDataKey when writing, one Decrypt per KEK when reading), single
    wrapping once per key of every file."""
    src = tmp_path / "plain.parquet"
    pq.write_table(TABLE.slice(0, 10), src)
    inner = open_kms(moto_kms.uri())(None)
    counting = Counting(inner)
    factory = lambda cfg: counting   # noqa: E731 - one object: one key session for the job
    cfg = _config(keys, double_wrapping=double)
    for i in range(200):
        encrypt_file(src, tmp_path / f"f{i}.parquet", cfg, kms=factory)
    assert counting.calls == writes
    counting.calls.clear()
    reader = lambda cfg: counting    # noqa: E731 - a new job: its own caches
    for i in range(200):
        decrypt_file(tmp_path / f"f{i}.parquet", tmp_path / f"o{i}.parquet", kms=reader)
    assert counting.calls == reads
    assert pq.read_table(tmp_path / "o199.parquet").equals(TABLE.slice(0, 10))


# ---- URI and command line ----------------------------------------------------------------


def test_uri_options_are_checked():
    with pytest.raises(InvalidKmsUri, match="unknown option"):
        open_kms(f"aws-kms://{REGION}?endpont=http://x")
    with pytest.raises(InvalidKmsUri, match="on or off"):
        open_kms(f"aws-kms://{REGION}?context=maybe")
    with pytest.raises(InvalidKmsUri, match="retries must be a int"):
        open_kms(f"aws-kms://{REGION}?retries=many")
    with pytest.raises(InvalidKmsUri, match="no path"):
        open_kms(f"aws-kms://{REGION}/keys")


def test_region_comes_from_the_uri(aws_env):
    assert open_kms("aws-kms://eu-west-3")(None).region == "eu-west-3"
    assert open_kms("aws-kms://")(None).region == REGION     # boto3's configured region


def _cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "pqseal", *map(str, args)], capture_output=True, text=True,
                          timeout=120, env={**os.environ, **(env or {})})


def test_cli_kms_uri_end_to_end(moto_kms, keys, plain, tmp_path):
    uri = moto_kms.uri()
    sealed, out = tmp_path / "sealed.parquet", tmp_path / "out.parquet"
    r = _cli("encrypt", plain, sealed, "--kms", uri, "--footer-key", keys["footer"],
             "--column-keys", f"{keys['name']}:ssn,name")   # parquet-java's grammar: no ARNs (':')
    assert r.returncode == 0, r.stderr
    assert pyarrow_read(sealed.read_bytes(), open_kms(uri)(None)).equals(TABLE)
    r = _cli("verify", sealed, "--kms", uri)
    assert r.returncode == 0, r.stderr
    r = _cli("decrypt", sealed, out, "--kms", uri)
    assert r.returncode == 0, r.stderr
    assert pq.read_table(out).equals(TABLE)
    # one-line errors: an unknown key, a credential in the URI, a server that is down
    r = _cli("encrypt", plain, tmp_path / "x.parquet", "--kms", uri, "--footer-key", "alias/nope")
    assert r.returncode != 0 and "NotFoundException" in r.stderr and "Traceback" not in r.stderr
    r = _cli("decrypt", sealed, tmp_path / "y.parquet", "--kms", uri + "&aws_secret_access_key=hunter2")
    assert r.returncode != 0 and "credential" in r.stderr and "hunter2" not in r.stderr + r.stdout
    assert len(r.stderr.strip().splitlines()) <= 3 and "Traceback" not in r.stderr
    r = _cli("decrypt", sealed, tmp_path / "z.parquet", "--kms", f"aws-kms://{REGION}?endpoint=http://127.0.0.1:9&retries=1")
    assert r.returncode != 0 and "failed after 2 attempt(s)" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr
    for p in ("x.parquet", "y.parquet", "z.parquet"):
        assert not (tmp_path / p).exists()


def test_cli_kms_toml_file(moto_kms, keys, plain, tmp_path):
    conf = tmp_path / "kms.toml"
    conf.write_text(f'uri = "aws-kms://{REGION}"\nendpoint = "{moto_kms.endpoint}"\ncontext = "on"\n')
    sealed = tmp_path / "sealed.parquet"
    r = _cli("encrypt", plain, sealed, "--kms", f"file:{conf}", "--uniform-key", keys["footer"])
    assert r.returncode == 0, r.stderr
    r = _cli("decrypt", sealed, tmp_path / "out.parquet", "--kms", f"file:{conf}")
    assert r.returncode == 0, r.stderr
    assert pq.read_table(tmp_path / "out.parquet").equals(TABLE)
    shutil.copy(sealed, tmp_path / "copy.parquet")  # double wrapping: KEKs bound to their ids, not the file
    r = _cli("verify", tmp_path / "copy.parquet", "--kms", f"file:{conf}")
    assert r.returncode == 0, r.stderr


def test_rotation_refuses_bound_single_wrapped_keys_and_rewraps_bound_keks(moto_kms, keys, plain, tmp_path):
    from pqseal.keys import CryptoFactory
    from pqseal.kms import KmsConnectionConfig

    kms = open_kms(moto_kms.uri(context="on"))
    single, double = tmp_path / "single.parquet", tmp_path / "double.parquet"
    encrypt_file(plain, single, _config(keys, double_wrapping=False, internal_key_material=False), kms=kms)
    encrypt_file(plain, double, _config(keys, internal_key_material=False), kms=kms)
    before = _material(single)
    with pytest.raises(KeyAccessDenied, match="bound to its column, file"):   # the material names no columns
        CryptoFactory(kms).rotate_master_keys(KmsConnectionConfig(), single, double_wrapping=False)
    assert _material(single) == before
    old = _material(double)
    assert CryptoFactory(kms).rotate_master_keys(KmsConnectionConfig(), double) == 3
    assert _material(double) != old
    decrypt_file(double, tmp_path / "out.parquet", kms=open_kms(moto_kms.uri(context="on")))
    assert pq.read_table(tmp_path / "out.parquet").equals(TABLE)


@pytest.mark.parametrize("double", [True, False], ids=["double", "single"])
def test_rotation_after_aws_key_rotation(moto_kms, plain, tmp_path, double):
    """AWS rotates a key's material in place (automatic or ``RotateKeyOnDemand``: same key
    id, old ciphertexts keep decrypting); pqseal then re-wraps the external material under
    the current material, the Parquet file untouched, and both the rotated and a file not
    yet rotated open. ``pqseal.dataset.rotate(kms=URI)`` does the same for a tree."""
    from pqseal.keys import CryptoFactory, clear_caches
    from pqseal.kms import KmsConnectionConfig

    footer, ssn = moto_kms.create_key(f"rot-footer-{double}"), moto_kms.create_key()
    cfg = EncryptionConfig(f"alias/rot-footer-{double}", column_keys={ssn: ["ssn"]}, double_wrapping=double,
                           internal_key_material=False)
    (tmp_path / "tree").mkdir()
    rotated, untouched = tmp_path / "tree" / "a.parquet", tmp_path / "b.parquet"
    for f in (rotated, untouched):
        encrypt_file(plain, f, cfg, kms=open_kms(moto_kms.uri()))
    before, data = _material(rotated), rotated.read_bytes()
    admin = moto_kms.client()
    for k in (footer, ssn):
        admin.rotate_key_on_demand(KeyId=k)
        assert admin.list_key_rotations(KeyId=k)["Rotations"]
    clear_caches()
    n = CryptoFactory(open_kms(moto_kms.uri())).rotate_master_keys(KmsConnectionConfig(), rotated,
                                                                   double_wrapping=double)
    assert n == 2 and rotated.read_bytes() == data
    after = _material(rotated)
    assert after.keys() == before.keys() and all(after[k] != before[k] for k in before)
    for f in (rotated, untouched):
        clear_caches()
        decrypt_file(f, tmp_path / f"out-{f.name}", kms=open_kms(moto_kms.uri()))
        assert pq.read_table(tmp_path / f"out-{f.name}").equals(TABLE)
    if double:   # the dataset job's session: one Decrypt per KEK, one GenerateDataKey per master key
        report = pqseal.dataset.rotate(tmp_path / "tree", kms=moto_kms.uri(), progress=False)
        assert report.ok == 1 and not report.failed and report.kms_calls == 2 + 2
        assert _material(rotated) != after
        decrypt_file(rotated, tmp_path / "out-again.parquet", kms=open_kms(moto_kms.uri()))
        assert pq.read_table(tmp_path / "out-again.parquet").equals(TABLE)


def test_repointed_alias_does_not_open_files_that_name_it(moto_kms, plain, tmp_path):
    """Re-pointing an alias at a new key is not a rotation pqseal can follow: Decrypt is
    pinned to the master key the file names (so a swapped wrapped key under some other key
    the reader may use is refused), and the alias now names a key that did not wrap the
    file's keys. Such files fail closed with a typed error, and so does their rotation:
    rotate AWS keys in place (automatic or on-demand rotation), as above."""
    from pqseal.keys import CryptoFactory, clear_caches
    from pqseal.kms import KmsConnectionConfig

    old = moto_kms.create_key("repointed")
    sealed = tmp_path / "s.parquet"
    cfg = EncryptionConfig("alias/repointed", uniform_encryption=True, internal_key_material=False)
    encrypt_file(plain, sealed, cfg, kms=open_kms(moto_kms.uri()))
    before = _material(sealed)
    new = moto_kms.create_key()
    moto_kms.client().update_alias(AliasName="alias/repointed", TargetKeyId=new)
    clear_caches()
    with pytest.raises(KeyAccessDenied, match="alias/repointed"):
        decrypt_file(sealed, tmp_path / "out.parquet", kms=open_kms(moto_kms.uri()))
    assert not (tmp_path / "out.parquet").exists()
    with pytest.raises(KeyAccessDenied):
        CryptoFactory(open_kms(moto_kms.uri())).rotate_master_keys(KmsConnectionConfig(), sealed)
    assert _material(sealed) == before
    # pointed back, the alias opens the file again: the key material was left as it was
    moto_kms.client().update_alias(AliasName="alias/repointed", TargetKeyId=old)
    clear_caches()
    decrypt_file(sealed, tmp_path / "out.parquet", kms=open_kms(moto_kms.uri()))
    assert pq.read_table(tmp_path / "out.parquet").equals(TABLE)


def test_the_factory_travels_to_processes_without_its_client(moto_kms, keys):
    import pickle

    factory = open_kms(moto_kms.uri(context="on", retries=1))
    client = factory(None)
    assert factory(None) is client            # one client per factory
    copy = pickle.loads(pickle.dumps(factory))
    assert copy.policy.retries == 1 and copy.bind_context and copy.endpoint_url == moto_kms.endpoint
    other = copy(None)
    assert other is not client
    with key_context(kek_id="k1"):
        assert other.unwrap_key(client.wrap_key(b"d" * 16, keys["ssn"]), keys["ssn"]) == b"d" * 16
    with pytest.raises(TypeError, match="cannot be pickled"):
        pickle.dumps(client)
