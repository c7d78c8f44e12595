"""Fuzz target: ``pqseal.inspect``, ``pqseal.verify`` and ``pqseal.decrypt_file`` of
mutated PME files (see ``pme_mutate.py`` for the mutations, ``pme_seeds.py`` for the
seeds, all sealed with the same explicit keys).

Invariant: each call succeeds or raises a ``pqseal.errors.PqsealError`` subclass, and a
failed ``decrypt_file`` leaves nothing in its output directory. Another exception type
is a finding (saved with the mutated file as reproducer); a crash, a hang (libFuzzer's
``-timeout``) or exhausted memory (the worker's ``RLIMIT_AS``, set by ``run.py``) ends
the worker, and ``run.py`` saves the input it was working on.

``python fuzz_pme.py replay FILE...`` runs the calls on saved files.
"""

from __future__ import annotations

import os
import shutil
import sys
import warnings

import harness

CURRENT = "current.parquet"   # the input being run, in the work directory (kept by run.py after a crash)


class LeftBehind(Exception):
    """A failed decrypt_file left files in its output directory."""


def check(path: str, workdir: str) -> None:
    """Run the three calls on ``path``; raise whatever is not a PqsealError."""
    import pme_seeds
    import pqseal
    from pqseal.errors import PqsealError

    dec = pme_seeds.decryption()
    outdir = os.path.join(workdir, "out")
    os.makedirs(outdir, exist_ok=True)
    out = os.path.join(outdir, "plain.parquet")
    calls = [("inspect", lambda: pqseal.inspect(path)),
             ("inspect-keys", lambda: pqseal.inspect(path, dec)),
             ("verify", lambda: pqseal.verify(path, dec)),
             ("decrypt", lambda: pqseal.decrypt_file(path, out, dec, fsync=False))]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name, call in calls:
            try:
                call()
            except PqsealError:
                if name == "decrypt" and os.listdir(outdir):
                    left = os.listdir(outdir)
                    shutil.rmtree(outdir)
                    raise LeftBehind(f"decrypt_file failed and left {left}") from None
            except Exception as e:
                e.add_note(f"pqseal.{name}")
                raise
            finally:
                if name == "decrypt" and os.path.exists(out):
                    os.unlink(out)


def finding_key(exc: BaseException) -> str:
    call = (getattr(exc, "__notes__", None) or ["?"])[-1]
    if isinstance(exc, LeftBehind):
        return "pme:decrypt:left-behind"
    return f"pme:{call}:{type(exc).__name__}:{harness.where(exc)}"


def _instrumented_import() -> None:
    import importlib
    import pkgutil

    import atheris

    with atheris.instrument_imports(include=["pqseal"]):
        import pqseal
        for mod in pkgutil.walk_packages(pqseal.__path__, "pqseal."):
            if not mod.name.startswith(("pqseal.bench", "pqseal.cli", "pqseal.__main__")):
                importlib.import_module(mod.name)


def main(argv: list[str]) -> None:
    import atheris

    _instrumented_import()
    import pme_model
    import pme_mutate
    import pme_seeds

    out = harness.out_dir()
    workdir = os.path.join(out, "work-pme")
    os.makedirs(workdir, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        seeds = pme_seeds.build(os.path.join(out, "seeds"))
    models = []
    for p in seeds:
        with open(p, "rb") as f:
            models.append(pme_model.parse(f.read(), pme_seeds.FOOTER_KEY, pme_seeds.COLUMN_KEYS))
    current = os.path.join(workdir, CURRENT)
    rec = harness.Recorder("pme")

    def one_input(data: bytes) -> None:
        rec.tick()
        try:
            blob = pme_mutate.mutate(atheris.FuzzedDataProvider(data), models)
        except ValueError:  # an edit the oracle codec cannot encode: no file, nothing to run
            return
        with open(current, "wb") as f:
            f.write(blob)
        try:
            check(current, workdir)
        except Exception as e:
            rec.finding(finding_key(e), blob, harness.describe(e), ".parquet")

    atheris.Setup(argv, one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    if sys.argv[1:2] == ["replay"]:
        import tempfile
        with tempfile.TemporaryDirectory() as work:
            for p in sys.argv[2:]:
                check(p, work)
                print(p, "ok")
    else:
        main(sys.argv)
