"""A moto KMS server in a subprocess for the AWS KMS client's tests.

moto checks the KMS API (parameters, error codes, key ids, ARNs, aliases, encryption
context as authenticated data): not AWS's cryptography, key states (a disabled key still
encrypts in moto 5) or IAM policies. Credentials are fake and come from the environment,
as boto3's chain reads them; ids look like a real account's (123456789012).
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time

from interop import kms_missing
from servers import free_port, stop_process

ACCOUNT = "123456789012"
REGION = "us-east-1"
FAKE_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_SESSION_TOKEN": "testing",
            "AWS_DEFAULT_REGION": REGION, "AWS_EC2_METADATA_DISABLED": "true",
            "AWS_CONFIG_FILE": os.devnull, "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
            "MOTO_ACCOUNT_ID": ACCOUNT}


class MotoKms:
    """``python -m moto.server`` on a free port of 127.0.0.1."""

    def __init__(self):
        try:
            import boto3  # noqa: F401
            import moto.server  # noqa: F401
        except ImportError as exc:
            kms_missing(f"moto[server] and boto3 are needed for the AWS KMS tests ({exc.name} missing)")
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     env={**os.environ, **FAKE_ENV})
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                break
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    kms_missing("moto's server did not start")
                time.sleep(0.1)

    def uri(self, **options) -> str:
        query = "&".join(f"{k}={v}" for k, v in {"endpoint": self.endpoint, **options}.items())
        return f"aws-kms://{REGION}?{query}"

    def client(self):
        import boto3

        return boto3.client("kms", region_name=REGION, endpoint_url=self.endpoint)

    def create_key(self, alias: str | None = None) -> str:
        """A symmetric key's ARN (and an alias ``alias/NAME`` for it)."""
        kms = self.client()
        arn = kms.create_key(KeyUsage="ENCRYPT_DECRYPT", KeySpec="SYMMETRIC_DEFAULT")["KeyMetadata"]["Arn"]
        if alias:
            kms.create_alias(AliasName=f"alias/{alias}", TargetKeyId=arn)
        return arn

    def stop(self) -> None:
        stop_process(self.proc)


@contextlib.contextmanager
def fake_credentials():
    """Fake AWS credentials in the environment (restored afterwards)."""
    saved = {k: os.environ.get(k) for k in FAKE_ENV}
    os.environ.update(FAKE_ENV)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
