"""Measuring tools shipped with pqseal (``pqseal bench ...``).

:mod:`pqseal.bench.cipher` measures the batch module ciphers (GCM and CTR on every
available backend) side by side with ``cryptography`` called per module from Python;
:mod:`pqseal.bench.seal` times seal / unseal / verify of a generated ~1 GiB file against
the pyarrow route. They only measure and report: the repository's ``benchmarks/``
directory holds the anchors (raw intel-ipsec-mb loop, ``openssl speed``), the project's
targets and the pytest-benchmark cases.
"""
