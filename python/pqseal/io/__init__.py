"""Transparent PME for every Parquet writer and reader.

- :class:`~pqseal.io.writer.ParquetWriter`: pyarrow's writer, each row group sealed as
  pyarrow finishes it (``pqseal.ParquetWriter``, ``pqseal.write_to_dataset``);
- :mod:`~pqseal.io.sink`: a binary file any Parquet writer writes into, a PME file on
  disk when it is closed (``pqseal.open(path, "wb", ...)``);
- :mod:`~pqseal.io.view`: a read-only binary file presenting a PME file's plaintext
  Parquet file, decrypting only the ranges a reader asks for (``pqseal.open(path, "rb")``);
- :mod:`~pqseal.io.fs`: the ``pqseal`` fsspec protocol over any fsspec target;
- :mod:`~pqseal.io.zones`: encryption zones, the policy of a directory prefix.

This layer drives ``format/`` and ``keys/``; it never writes plaintext to disk.
"""
