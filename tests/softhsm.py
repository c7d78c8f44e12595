"""Throw-away SoftHSM2 tokens for the PKCS#11 tests, under a private ``SOFTHSM2_CONF``.

SoftHSM reads its configuration and token directory when the module is initialized
(once per process, and python-pkcs11 keeps the module loaded), and does not see tokens
created afterwards: :func:`start` creates every token a test run needs up front and
points this process at them. A missing ``softhsm2`` or python-pkcs11 skips the tests,
or fails them under ``PQSEAL_REQUIRE_KMS=1`` (:func:`interop.kms_missing`).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from interop import kms_missing

MODULES = ("/usr/lib/softhsm/libsofthsm2.so", "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
           "/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so", "/usr/local/lib/softhsm/libsofthsm2.so")
SO_PIN = "so-pin-4711"


@dataclass(frozen=True)
class SoftHsm:
    conf: Path
    module: str
    pins: dict            # token label -> user PIN

    def uri(self, label: str) -> str:
        return f"pkcs11:module={self.module};token={label}"


def module_path() -> str:
    for m in (os.environ.get("PQSEAL_SOFTHSM2_MODULE"), *MODULES):
        if m and os.path.exists(m):
            return m
    kms_missing("the SoftHSM2 PKCS#11 module (libsofthsm2.so) is not installed (Debian: softhsm2)")


def start(directory: Path, pins: dict) -> SoftHsm:
    """Tokens ``{label: user PIN}`` in ``directory``; sets ``SOFTHSM2_CONF`` for this process."""
    try:
        import pkcs11
    except ModuleNotFoundError:
        kms_missing("python-pkcs11 is not installed (pip install 'pqseal[pkcs11]')")
    util = shutil.which("softhsm2-util")
    if util is None:
        kms_missing("softhsm2-util not found (Debian: softhsm2)")
    module = module_path()
    if module in pkcs11._loaded:
        raise RuntimeError("SoftHSM was initialized before its test tokens were made; start() must come first")
    tokens = directory / "tokens"
    tokens.mkdir(mode=0o700, parents=True)
    conf = directory / "softhsm2.conf"
    conf.write_text(f"directories.tokendir = {tokens}\nobjectstore.backend = file\nlog.level = ERROR\n")
    os.environ["SOFTHSM2_CONF"] = str(conf)
    for label, pin in pins.items():
        subprocess.run([util, "--init-token", "--free", "--label", label, "--so-pin", SO_PIN, "--pin", pin],
                       check=True, capture_output=True, timeout=60, env=dict(os.environ, SOFTHSM2_CONF=str(conf)))
    return SoftHsm(conf, module, dict(pins))
