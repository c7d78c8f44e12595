#!/usr/bin/env python3
"""Thin wrapper: ``python benchmarks/bench_seal.py [options]`` is ``python -m pqseal.bench.seal``
(see ``--help`` and benchmarks/README.md)."""

import sys
from pathlib import Path

try:
    from pqseal.bench.seal import main
except ImportError:  # pqseal not installed: use the source tree (needs the built _native module)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "python"))
    from pqseal.bench.seal import main

if __name__ == "__main__":
    sys.exit(main())
