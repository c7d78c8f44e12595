"""The command group behind ``pqseal``: every error becomes one line on stderr and an
exit code of the contract below (also in ``pqseal --help`` and the README)."""

from __future__ import annotations

import errno
import os
import signal
import sys
import warnings

import click

from .._io import is_temp_name
from ..errors import PqsealError
from .interrupt import interruptible

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
EXIT_CODES = """\b
Exit codes: 0 done; 1 failed (bad or missing file or key, tag mismatch, existing output
without --force; in a directory job: at least one file failed, the others were done);
2 usage error; 130/143 interrupted by SIGINT/SIGTERM (finished files stay, no partial
output is left). Every error is one line on stderr starting with "pqseal: error:"."""

#: OSError numbers about the output being written, not the input being read
_WRITE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS}


def one_line(exc: BaseException, src=None, dst=None) -> str:
    """``Type: message`` on one line. An OSError that names no file (or only one of
    pqseal's temporary files) is given the user's path instead."""
    if isinstance(exc, OSError) and exc.strerror:
        msg = exc.strerror
        name = os.fspath(exc.filename) if exc.filename is not None else None
        paths = [os.fspath(p) for p in (src, dst) if p is not None]
        named = any(os.path.basename(p) in msg or os.path.dirname(os.path.abspath(p)) in msg for p in paths)
        if name and not is_temp_name(os.path.basename(name)):
            msg += f": {name}"
        elif named:
            pass
        elif dst is not None and exc.errno in _WRITE_ERRNOS:
            msg += f" (writing {dst})"
        elif src is not None:
            msg += f" ({src}{f' -> {dst}' if dst is not None else ''})"
    else:
        msg = str(exc)
    msg = " ".join(msg.split())
    return f"{type(exc).__name__}: {msg}" if msg else type(exc).__name__


def fail(message: str, code: int = EXIT_FAILED):
    click.echo(f"pqseal: error: {message}", err=True)
    sys.exit(code)


def _one_line_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Python warnings (a key usage limit, say) as one line on stderr."""
    click.echo(f"pqseal: warning: {' '.join(str(message).split())}", err=True)


class Group(click.Group):
    """The exit-code contract: usage errors (click's and ours) print one line and exit 2,
    pqseal errors and failing files/paths one line and exit 1."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        with interruptible() as interruption, warnings.catch_warnings():   # SIGINT/SIGTERM: stop cleanly
            warnings.showwarning = _one_line_warning
            try:
                rv = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
            except click.UsageError as exc:
                where = exc.ctx.command_path if exc.ctx is not None else "pqseal"
                fail(f"{' '.join(exc.format_message().split())} (see '{where} --help')", EXIT_USAGE)
            except click.ClickException as exc:
                fail(" ".join(exc.format_message().split()), exc.exit_code)
            except KeyboardInterrupt:
                fail("interrupted (SIGINT)", 128 + signal.SIGINT)
            except click.Abort as exc:   # click's wrapping of Ctrl-C or end of input at a prompt
                if isinstance(exc.__cause__, KeyboardInterrupt):
                    fail("interrupted (SIGINT)", 128 + signal.SIGINT)
                fail("aborted (end of input)")
        if interruption.requested:   # the signal came when the command had no more work to stop
            fail(f"interrupted ({interruption.name}) after the command had finished its work",
                 interruption.exit_code)
        sys.exit(rv if isinstance(rv, int) else EXIT_OK)

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except BrokenPipeError:
            # the reader went away (`pqseal inspect --json DIR | head`): stop quietly
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            sys.exit(EXIT_OK)
        except (PqsealError, OSError, ValueError) as exc:
            fail(one_line(exc))
