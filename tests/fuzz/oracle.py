"""The pure-Python Thrift codec used as the oracle of the C codec.

It lives in ``tests/thrift_oracle.py`` once the runtime schema is trimmed; until then
it is ``pqseal.format.thrift.PyCodec``. Import it from here so the fuzz targets work
on either side of that move.
"""

from __future__ import annotations

from pqseal.format import thrift as runtime

try:
    import thrift_oracle as _mod
except ImportError:
    _mod = runtime

SCHEMA = getattr(_mod, "SCHEMA", runtime.SCHEMA)
codec = getattr(_mod, "python_codec", None) or _mod.PyCodec(SCHEMA)
try:  # the C codec under test, built from the same schema as the oracle
    from pqseal import _thrift
    native = _thrift.Codec(SCHEMA)
except ImportError:
    native = None
STRUCTS = tuple(name for name, _ in SCHEMA)
