"""Build glue: the cffi extensions ``pqseal._native`` (cipher) and ``pqseal._nativeio``
(file I/O helpers), and the CPython extension ``pqseal._thrift``. Metadata lives in pyproject.toml.

``PQSEAL_SANITIZE=1`` builds ``pqseal._thrift`` with AddressSanitizer + UBSan
(``csrc/build_ffi.py`` honours the same variable for ``pqseal._native``).
"""

import os

from setuptools import Extension, setup

_thrift_cflags = ["-O2", "-std=gnu11", "-Wall", "-Wextra", "-Wno-unused-parameter"]
_thrift_ldflags = []
if os.environ.get("PQSEAL_SANITIZE") == "1":
    _san = ["-fsanitize=address,undefined", "-fno-sanitize-recover=all", "-fno-omit-frame-pointer", "-g"]
    _thrift_cflags += _san
    _thrift_ldflags += _san

setup(
    package_dir={"": "python"},
    cffi_modules=["csrc/build_ffi.py:ffibuilder", "csrc/build_ffi.py:iobuilder"],
    ext_modules=[
        Extension(
            "pqseal._thrift",
            ["csrc/thrift.c"],
            extra_compile_args=_thrift_cflags,
            extra_link_args=_thrift_ldflags,
        )
    ],
)
