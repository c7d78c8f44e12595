"""cffi builders (API mode, out of line) for the two native modules:

- ``pqseal._native``, the cipher library (``csrc/pqseal.h``): OpenSSL and intel-ipsec-mb;
- ``pqseal._nativeio``, file I/O helpers of the format layer (``csrc/pqio.h``): no
  crypto library, no keys.

Declarations come from the headers so C and Python agree by construction.
intel-ipsec-mb is used when its header and library are found (Debian:
``libipsec-mb-dev``); otherwise the extension is built with OpenSSL alone.

Environment:
  PQSEAL_IPSECMB=0|1|auto   force the intel-ipsec-mb backend off/on (default auto)
  PQSEAL_SANITIZE=1         build with AddressSanitizer + UndefinedBehaviorSanitizer
  PQSEAL_EXTRA_CFLAGS       appended to the compiler flags
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile

from cffi import FFI

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCES = ["core.c", "pool.c", "random.c", "fips.c", "keyreg.c", "backend_openssl.c", "backend_ipsecmb.c"]
IO_SOURCES = ["fileio.c", "walk.c"]


def _cdef_text(header: str) -> str:
    with open(os.path.join(HERE, header), encoding="utf-8") as f:
        text = f.read()
    # drop the include guard and comments; cffi's cdef only needs the declarations
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    lines = [ln for ln in text.splitlines() if not ln.startswith(("#ifndef", "#endif"))]
    lines = [ln for ln in lines if not re.match(r"#define (PQSEAL|PQIO)_H\b", ln)]
    return "\n".join(lines)


def _compiles(code: str, libraries: list[str]) -> bool:
    """Can this machine compile and link `code` against `libraries`?"""
    cc = os.environ.get("CC", "cc")
    if shutil.which(cc.split()[0]) is None:
        return False
    with tempfile.TemporaryDirectory() as d:
        src = os.path.join(d, "probe.c")
        with open(src, "w") as f:
            f.write(code)
        cmd = cc.split() + [src, "-o", os.path.join(d, "probe")] + ["-l" + lib for lib in libraries]
        return subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode == 0


def have_ipsecmb() -> bool:
    choice = os.environ.get("PQSEAL_IPSECMB", "auto").lower()
    if choice in ("0", "no", "off", "false"):
        return False
    found = _compiles(
        "#include <intel-ipsec-mb.h>\nint main(void){IMB_MGR *m = alloc_mb_mgr(0); free_mb_mgr(m); return 0;}\n",
        ["IPSec_MB"],
    )
    if choice in ("1", "yes", "on", "true") and not found:
        raise RuntimeError("PQSEAL_IPSECMB=1 but intel-ipsec-mb (header + libIPSec_MB) was not found")
    return found


def _flags() -> tuple[list[str], list[str]]:
    cflags = ["-O3", "-std=gnu11", "-fvisibility=hidden", "-Wall", "-Wextra", "-Wno-unused-parameter"]
    ldflags: list[str] = []
    if os.environ.get("PQSEAL_SANITIZE") == "1":
        san = ["-fsanitize=address,undefined", "-fno-sanitize-recover=all", "-fno-omit-frame-pointer", "-O1", "-g"]
        cflags += san
        ldflags += san
    return cflags + os.environ.get("PQSEAL_EXTRA_CFLAGS", "").split(), ldflags


def _builder(module: str, header: str, sources: list[str], absolute: bool, **kw) -> FFI:
    root = os.path.dirname(HERE) if absolute else ""
    builder = FFI()
    builder.cdef(_cdef_text(header))
    cflags, ldflags = _flags()
    builder.set_source(
        module,
        f'#include <stdint.h>\n#include "{header}"\n',
        sources=[os.path.join(root, "csrc", s) for s in sources],
        include_dirs=[os.path.join(root, "csrc")],
        extra_compile_args=cflags,
        extra_link_args=kw.pop("extra_link_args", []) + ldflags,
        **kw,
    )
    return builder


def make_ffi(absolute: bool = False) -> FFI:
    """pqseal._native: the cipher library, over libcrypto (and intel-ipsec-mb when found)."""
    libraries = ["crypto"]
    macros: list[tuple[str, str | None]] = []
    if have_ipsecmb():
        libraries.append("IPSec_MB")
        macros.append(("PQ_HAVE_IPSECMB", "1"))
    return _builder("pqseal._native", "pqseal.h", SOURCES, absolute, libraries=libraries, define_macros=macros,
                    extra_link_args=["-lpthread"])


def make_io_ffi(absolute: bool = False) -> FFI:
    """pqseal._nativeio: file I/O helpers of the format layer, no crypto library."""
    return _builder("pqseal._nativeio", "pqio.h", IO_SOURCES, absolute)


ffibuilder = make_ffi()
iobuilder = make_io_ffi()

if __name__ == "__main__":
    # Build in place into a directory (used for the sanitizer build):
    #   python csrc/build_ffi.py OUTDIR   -> OUTDIR/pqseal/_native*.so, OUTDIR/pqseal/_nativeio*.so
    out = sys.argv[1] if len(sys.argv) > 1 else "build"
    os.makedirs(os.path.join(out, "pqseal"), exist_ok=True)
    make_ffi(absolute=True).compile(tmpdir=out, verbose=True)
    make_io_ffi(absolute=True).compile(tmpdir=out, verbose=True)
