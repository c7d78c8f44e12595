"""Every ```python and ```bash block of README.md runs as written (```text blocks, for
sample output, are not run; no other label is allowed).

Each block runs on its own, in a fresh temporary directory, in a fresh process with the
code under test (the ``pqseal`` package this test imports), and with:

* a throw-away local keystore: ``PQSEAL_KEYSTORE`` / ``PQSEAL_KEYSTORE_PASSPHRASE`` point
  into the directory and ``HOME`` is the directory, so nothing outside it is touched.
  Python blocks find it initialised with the master keys ``footer-key`` and ``pii-key``
  (what the README's CLI block sets up with ``pqseal keys``); bash blocks start without
  it, as a new user does;
* the input files the blocks name: ``users.parquet`` (columns ``id``, ``ssn``, ``email``
  and ``address.zip`` / ``address.street``) and ``in-dir/`` holding two such files.

Bash blocks run under ``bash -euo pipefail`` with the ``pqseal`` console script of this
Python's environment first on PATH (and as ``.venv/bin/pqseal``, what ``.ci/setup``
makes). The only commands not run are the quick start's ``bash .ci/setup`` and
``bash .ci/run`` (:data:`NOT_RUN_IN_CI`): CI itself is what runs them, and the setup
recreates the venv the test runs in. The test fails if they are no longer in the README,
so the exemption cannot outlive them.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import pqseal
from pqseal.kms.keystore import LocalKeystore

README = Path(__file__).resolve().parents[1] / "README.md"
NOT_RUN_IN_CI = ("bash .ci/setup", "bash .ci/run")
PASSPHRASE = "readme-test-passphrase"
TIMEOUT = 600


@dataclass(frozen=True)
class Block:
    lang: str
    line: int        # line of the opening fence
    section: str
    code: str

    @property
    def id(self) -> str:
        slug = re.sub(r"[^a-z0-9]+", "-", self.section.lower()).strip("-")
        return f"{self.lang}-L{self.line}-{slug}"


def readme_blocks(text: str) -> list[Block]:
    blocks, section, lang, start, body = [], "", None, 0, []
    for n, line in enumerate(text.splitlines(), 1):
        if lang is None:
            if line.startswith("#"):
                section = line.lstrip("#").strip()
            m = re.match(r"^```(\w*)\s*$", line)
            if m:
                lang, start, body = m.group(1), n, []
        elif line.strip() == "```":
            blocks.append(Block(lang, start, section, "\n".join(body) + "\n"))
            lang = None
        else:
            body.append(line)
    assert lang is None, f"README.md: unclosed code block at line {start}"
    return blocks


BLOCKS = readme_blocks(README.read_text(encoding="utf-8"))


def _command(line: str) -> str:
    return line.split("#", 1)[0].strip()


def _parts(line: str) -> list[str]:
    """The commands of one line joined by ``&&``."""
    return [p.strip() for p in _command(line).split("&&")]


def without_ci_commands(code: str) -> str:
    """The block minus the commands (whole lines, or parts joined by ``&&``) that are
    exactly one of :data:`NOT_RUN_IN_CI`."""
    out = []
    for line in code.splitlines():
        kept = [p for p in _parts(line) if p not in NOT_RUN_IN_CI]
        if kept:
            out.append(" && ".join(kept))
    return "\n".join(out) + "\n"


def test_readme_has_runnable_blocks():
    """Code goes in ```python or ```bash blocks (run here); ```text is for sample output.
    Anything else (```sh, ```py, an unlabelled fence) would silently escape this test."""
    langs = [b.lang for b in BLOCKS]
    assert langs.count("python") >= 3 and langs.count("bash") >= 2, langs
    assert set(langs) <= {"python", "bash", "text"}, f"README blocks this test would not run: {langs}"


def test_exempt_commands_are_still_in_the_readme():
    commands = {p for b in BLOCKS if b.lang == "bash" for line in b.code.splitlines() for p in _parts(line)}
    assert set(NOT_RUN_IN_CI) <= commands


def _users(n: int = 200) -> pa.Table:
    return pa.table({
        "id": pa.array(range(n), pa.int64()),
        "ssn": [f"{i:03d}-{i % 89:02d}-{i:04d}" for i in range(n)],
        "email": [f"user{i}@example.com" for i in range(n)],
        "address": pa.array([{"zip": f"{10000 + i}", "street": f"{i} Main St"} for i in range(n)]),
    })


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    pq.write_table(_users(), tmp_path / "users.parquet")
    (tmp_path / "in-dir").mkdir()
    for i in range(2):
        pq.write_table(_users(50 + i), tmp_path / "in-dir" / f"part-{i}.parquet")
    code_root = os.path.dirname(os.path.dirname(os.path.abspath(pqseal.__file__)))
    path = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p and p != code_root]
    env = dict(os.environ, HOME=str(tmp_path), PQSEAL_KEYSTORE=str(tmp_path / "keystore.json"),
               PQSEAL_KEYSTORE_PASSPHRASE=PASSPHRASE, PYTHONPATH=os.pathsep.join([code_root] + path))
    env.pop("PQSEAL_KEYSTORE_PASSPHRASE_FILE", None)
    return tmp_path, env


def _run(argv, cwd, env):
    r = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=TIMEOUT)
    assert r.returncode == 0, f"exit {r.returncode}\n--- stdout\n{r.stdout[-3000:]}\n--- stderr\n{r.stderr[-3000:]}"
    return r


@pytest.mark.parametrize("block", [b for b in BLOCKS if b.lang == "python"], ids=lambda b: b.id)
def test_python_block(block, workdir):
    d, env = workdir
    ks = LocalKeystore.init(env["PQSEAL_KEYSTORE"], PASSPHRASE.encode())
    ks.create("footer-key")
    ks.create("pii-key")
    (d / "block.py").write_text(block.code)
    _run([sys.executable, "block.py"], d, env)


@pytest.mark.parametrize("block", [b for b in BLOCKS if b.lang == "bash"], ids=lambda b: b.id)
def test_bash_block(block, workdir):
    d, env = workdir
    exe = Path(sys.executable).parent / "pqseal"
    if not exe.exists():
        pytest.fail(f"no pqseal console script next to {sys.executable}: install pqseal into this environment")
    (d / ".venv" / "bin").mkdir(parents=True)
    (d / ".venv" / "bin" / "pqseal").symlink_to(exe)
    env["PATH"] = os.pathsep.join((str(exe.parent), env.get("PATH", "")))
    (d / "block.sh").write_text(without_ci_commands(block.code))
    _run(["bash", "-euo", "pipefail", "block.sh"], d, env)
