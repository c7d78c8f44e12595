"""Build glue: the cffi extension ``pqseal._native``. Metadata lives in pyproject.toml."""

from setuptools import setup

setup(
    package_dir={"": "python"},
    cffi_modules=["csrc/build_ffi.py:ffibuilder"],
)
