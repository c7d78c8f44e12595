"""Benchmarks shipped with pqseal.

:mod:`pqseal.bench.cipher` measures the batch module ciphers (GCM and CTR on every
available backend) side by side with ``cryptography`` called per module from Python,
and with two out-of-process anchors when present (a raw intel-ipsec-mb C loop and
``openssl speed``), then prints the throughput table and the target ratios.
Run it with ``python -m pqseal.bench.cipher`` or ``python benchmarks/bench_cipher.py``.
"""
