"""``pqseal keys create|rotate|status|disable|enable|destroy --kms aws-kms://...`` and
:class:`pqseal.kms.admin.KeyAdmin` over AWS KMS, against moto's KMS server
(tests/moto_kms.py), each result checked through boto3 (the server's own view).

moto 5.2.5 implements CreateKey, CreateAlias, DescribeKey, ListKeys, ListAliases,
DisableKey, EnableKey, ScheduleKeyDeletion, CancelKeyDeletion, RotateKeyOnDemand and
ListKeyRotations, but it does not enforce key states (a disabled or pending-deletion key
still encrypts and decrypts), nor AWS's limits (a 3-day deletion window, ``alias/aws/``
names, rotation quotas). Those paths use AWS's documented error codes through botocore's
Stubber instead."""

from __future__ import annotations

import datetime as dt
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from pqseal import EncryptionConfig, decrypt_file, encrypt_file
from pqseal.cli import main as cli
from pqseal.errors import KeyDisabled, KeyNotFound, KmsError, UnsupportedFeature
from pqseal.kms import open_kms
from pqseal.kms.admin import KeyAdmin, ScheduledDeletion
from pqseal.kms.resilience import RetryPolicy

from interop import kms_missing
from moto_kms import REGION, MotoKms, fake_credentials

try:
    import botocore.stub as botocore_stub
    import moto.server  # noqa: F401 - started in a subprocess
except ModuleNotFoundError as exc:
    kms_missing(f"boto3 and moto[server] are needed for the AWS KMS tests ({exc.name} missing)")
from pqseal.kms import aws  # noqa: E402


@pytest.fixture(scope="module")
def moto_kms():
    with fake_credentials():
        server = MotoKms()
        yield server
        server.stop()


def run(*args, code=0):
    r = CliRunner().invoke(cli, [str(a) for a in args])
    assert r.exit_code == code, r.output
    if code:
        assert len(r.output.strip().splitlines()) == 1, r.output      # one line, no traceback
    return r.output


def state(moto_kms, key_id: str) -> str:
    return moto_kms.client().describe_key(KeyId=key_id)["KeyMetadata"]["KeyState"]


def status(moto_kms, key_id=None) -> list[dict]:
    return json.loads(run("keys", "status", *([key_id] if key_id else []), "--kms", moto_kms.uri(), "--json"))


def test_create_status_rotate(moto_kms):
    out = run("keys", "create", "adm-create", "--kms", moto_kms.uri())
    assert "alias/adm-create" in out and "version 1, 256 bits" in out
    md = moto_kms.client().describe_key(KeyId="alias/adm-create")["KeyMetadata"]
    assert (md["KeySpec"], md["KeyUsage"], md["KeyState"]) == ("SYMMETRIC_DEFAULT", "ENCRYPT_DECRYPT", "Enabled")
    [row] = status(moto_kms, "alias/adm-create")
    assert (row["id"], row["version"], row["state"], row["bits"]) == ("alias/adm-create", 1, "active", 256)
    assert dt.datetime.fromisoformat(row["created"]) == md["CreationDate"].replace(microsecond=0)
    assert run("keys", "rotate", "alias/adm-create", "--kms", moto_kms.uri()).startswith(
        "master key alias/adm-create is now at version 2")
    assert len(moto_kms.client().list_key_rotations(KeyId=md["KeyId"])["Rotations"]) == 1
    assert [r["version"] for r in status(moto_kms, md["KeyId"])] == [2]   # any name of the key
    # without an id: every key the caller can list, named by its alias
    listed = {r["id"]: r for r in status(moto_kms)}
    assert listed["alias/adm-create"]["version"] == 2
    keys = moto_kms.client().list_keys()["Keys"]
    assert len(listed) == len(keys)


def test_create_refusals(moto_kms):
    before = len(moto_kms.client().list_keys()["Keys"])
    for bad in ("bad name", "aws/mine", "alias/aws/mine", "x" * 251, "caf\u00e9"):
        assert "not a valid alias name" in run("keys", "create", bad, "--kms", moto_kms.uri(), code=1)
    assert "256-bit" in run("keys", "create", "adm-128", "--bits", "128", "--kms", moto_kms.uri(), code=1)
    assert len(moto_kms.client().list_keys()["Keys"]) == before     # refused before any key was made
    run("keys", "create", "alias/adm-dup", "--kms", moto_kms.uri())  # alias/ID names the same alias
    out = run("keys", "create", "adm-dup", "--kms", moto_kms.uri(), code=1)
    assert "AlreadyExistsException" in out and "scheduled for deletion" in out
    # the key made for the refused alias does not linger: it is pending deletion
    states = [state(moto_kms, k["KeyId"]) for k in moto_kms.client().list_keys()["Keys"]]
    assert len(states) == before + 2 and states.count("PendingDeletion") == 1


def test_disable_enable(moto_kms):
    arn = moto_kms.create_key("adm-toggle")
    run("keys", "rotate", "alias/adm-toggle", "--kms", moto_kms.uri())
    out = run("keys", "disable", "alias/adm-toggle", "--version", 1, "--kms", moto_kms.uri(), code=1)
    assert "whole key" in out and "version 2" in out
    assert state(moto_kms, arn) == "Enabled"                          # refused before any change
    assert run("keys", "disable", "alias/adm-toggle", "--kms", moto_kms.uri()) == \
        "master key alias/adm-toggle is disabled\n"
    assert state(moto_kms, arn) == "Disabled"
    assert [r["state"] for r in status(moto_kms, "alias/adm-toggle")] == ["disabled"]
    assert "is active" in run("keys", "enable", "alias/adm-toggle", "--version", 2, "--kms", moto_kms.uri())
    assert state(moto_kms, arn) == "Enabled"
    assert [r["state"] for r in status(moto_kms, "alias/adm-toggle")] == ["active"]
    assert "adm-nope" in run("keys", "disable", "alias/adm-nope", "--kms", moto_kms.uri(), code=1)


def test_destroy_schedules_and_enable_cancels(moto_kms):
    arn = moto_kms.create_key("adm-destroy")
    assert "--yes" in run("keys", "destroy", "alias/adm-destroy", "--kms", moto_kms.uri(), code=2)
    for days in (3, 31):     # moto accepts 3; AWS does not, and pqseal refuses it first
        run("keys", "destroy", "alias/adm-destroy", "--yes", "--pending-days", days, "--kms", moto_kms.uri(),
            code=2)
    assert state(moto_kms, arn) == "Enabled"
    out = run("keys", "destroy", "alias/adm-destroy", "--yes", "--pending-days", 7, "--kms", moto_kms.uri())
    md = moto_kms.client().describe_key(KeyId=arn)["KeyMetadata"]
    assert md["KeyState"] == "PendingDeletion"
    assert abs(md["DeletionDate"] - dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=7)) < dt.timedelta(hours=1)
    when = md["DeletionDate"].astimezone(dt.timezone.utc).isoformat(timespec="seconds")
    assert f"scheduled for deletion on {when}" in out and "pqseal keys enable alias/adm-destroy" in out
    assert [r["state"] for r in status(moto_kms, "alias/adm-destroy")] == ["pending-deletion"]
    out = run("keys", "enable", "alias/adm-destroy", "--kms", moto_kms.uri())
    assert out.splitlines() == ["cancelled the scheduled deletion of master key alias/adm-destroy",
                                "master key alias/adm-destroy is active"]
    assert state(moto_kms, arn) == "Enabled"


def test_api_destroy_defaults_to_thirty_days_and_cancel_leaves_it_disabled(moto_kms):
    arn = moto_kms.create_key()
    admin = KeyAdmin(open_kms(moto_kms.uri())(None))
    assert not admin.per_version
    got = admin.destroy(arn)
    assert isinstance(got, ScheduledDeletion) and got.pending_days == 30
    assert abs(dt.datetime.fromisoformat(got.deletion_date) - dt.datetime.now(dt.timezone.utc)
               - dt.timedelta(days=30)) < dt.timedelta(hours=1)
    with pytest.raises(UnsupportedFeature, match="7 to 30"):
        admin.destroy(arn, pending_days=6)
    assert admin.cancel_deletion(arn) and state(moto_kms, arn) == "Disabled"   # as AWS: cancelled = disabled
    assert not admin.cancel_deletion(arn)
    assert admin.enable(arn, None) == "active"
    with pytest.raises(KeyNotFound):
        admin.status("alias/adm-missing")


def test_versions_are_required_where_they_have_states(tmp_path, monkeypatch):
    monkeypatch.setenv("PQSEAL_KEYSTORE_PASSPHRASE", "admin test")
    store = tmp_path / "ks.json"
    run("keys", "init", "--keystore", store)
    run("keys", "create", "k", "--keystore", store)
    for verb in ("disable", "enable"):
        assert "name the key version" in run("keys", verb, "k", "--keystore", store, code=2)
    assert "pending" in run("keys", "destroy", "k", "--yes", "--pending-days", 7, "--keystore", store, code=1)
    assert [r["state"] for r in json.loads(run("keys", "status", "--keystore", store, "--json"))] == ["active"]


# ---- what moto does not enforce: AWS's documented answers through botocore's Stubber ----

def _stubbed():
    import boto3

    client = boto3.client("kms", region_name=REGION, aws_access_key_id="testing", aws_secret_access_key="testing")
    stub = botocore_stub.Stubber(client)
    kms = aws.AwsKms(client=client, policy=RetryPolicy(retries=2, base_delay=0, failure_threshold=100))
    return kms, stub


KEY_ID = "1234abcd-12ab-34cd-56ef-1234567890ab"
METADATA = {"KeyMetadata": {"KeyId": KEY_ID, "Arn": f"arn:aws:kms:{REGION}:111122223333:key/{KEY_ID}",
                            "KeyState": "Disabled", "KeySpec": "SYMMETRIC_DEFAULT",
                            "CreationDate": dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.timezone.utc)}}


@pytest.mark.parametrize("code,aws_state", [("DisabledException", "disabled"),
                                            ("KMSInvalidStateException", "pending-deletion")])
def test_a_disabled_or_pending_deletion_key_fails_unwraps(moto_kms, tmp_path, code, aws_state):
    """A file sealed through moto; AWS refuses Decrypt with a disabled key
    (DisabledException) or one pending deletion (KMSInvalidStateException)."""
    moto_kms.create_key(f"adm-{code}")
    plain, sealed = tmp_path / "p.parquet", tmp_path / "s.parquet"
    pq.write_table(pa.table({"a": [1, 2, 3]}), plain)
    encrypt_file(plain, sealed, EncryptionConfig(f"alias/adm-{code}", uniform_encryption=True),
                 kms=open_kms(moto_kms.uri()))
    kms, stub = _stubbed()
    stub.add_client_error("decrypt", service_error_code=code, service_message="as AWS says it")
    with stub:
        with pytest.raises(KeyDisabled, match=code):
            decrypt_file(sealed, tmp_path / "out.parquet", kms=lambda cfg: kms)
    assert not (tmp_path / "out.parquet").exists()
    assert aws._aws_state({"disabled": "Disabled", "pending-deletion": "PendingDeletion"}[aws_state]) == aws_state


def test_rotation_refused_by_aws_is_one_typed_line():
    kms, stub = _stubbed()
    stub.add_response("describe_key", METADATA, {"KeyId": "alias/k"})
    stub.add_client_error("rotate_key_on_demand", service_error_code="LimitExceededException",
                          service_message="on-demand rotations of this key are exhausted",
                          expected_params={"KeyId": KEY_ID})
    with stub, pytest.raises(KmsError, match="LimitExceededException"):
        KeyAdmin(kms).rotate("alias/k")
    stub.assert_no_pending_responses()


def test_other_states_and_listing_bound():
    kms, stub = _stubbed()
    stub.add_response("list_keys", {"Keys": [{"KeyId": KEY_ID}], "Truncated": True, "NextMarker": "m"},
                      {"Limit": 100})
    stub.add_response("list_aliases", {"Aliases": [{"AliasName": "alias/z", "TargetKeyId": KEY_ID},
                                                   {"AliasName": "alias/a", "TargetKeyId": KEY_ID}],
                                       "Truncated": False}, {"Limit": 100})
    stub.add_response("describe_key", {"KeyMetadata": {**METADATA["KeyMetadata"], "KeyState": "PendingImport"}},
                      {"KeyId": KEY_ID})
    stub.add_client_error("list_key_rotations", service_error_code="AccessDeniedException",
                          service_message="not allowed")
    with stub, pytest.warns(UserWarning, match="first 100"):
        [row] = KeyAdmin(kms).status()
    assert (row.id, row.version, row.state, row.bits, row.created) == (
        "alias/a", 1, "pending-import", 256, "2026-01-02T03:04:05+00:00")
    stub.assert_no_pending_responses()
