"""Read-ahead of the next column chunk (``Source.prefetch``) in the file engine: the
next chunk's bytes are read on a thread while the current one is encrypted and
written. The output is the same, the read-ahead really happens off the main thread,
and a failure on that thread (the input truncated meanwhile) surfaces as the same
typed error, with no output left behind."""

from __future__ import annotations

import os
import threading

import pyarrow as pa
import pyarrow.parquet as pq
import pyarrow.parquet.encryption as pe
import pytest

import pqseal
from pqseal.errors import MalformedFile
from pqseal.format import DecryptionProperties, EncryptionProperties, source

from parquet_gen import make_table

KEY = bytes(range(16))


@pytest.fixture
def plain(tmp_path, monkeypatch):
    monkeypatch.setattr(source, "PREFETCH_MIN", 0)   # read every chunk ahead, however small
    p = tmp_path / "plain.parquet"
    table = make_table(30_000, nested=False)
    pq.write_table(table, p, row_group_size=10_000, data_page_size=1 << 13)
    return p, table


def _reads_by_thread(monkeypatch) -> list[str]:
    names: list[str] = []
    real = source.Source.read

    def read(self, offset, length, out=None):
        names.append(threading.current_thread().name)
        return real(self, offset, length, out)

    monkeypatch.setattr(source.Source, "read", read)
    return names


@pytest.mark.parametrize("algorithm", ["AES_GCM_V1", "AES_GCM_CTR_V1"])
def test_read_ahead_round_trip(tmp_path, plain, monkeypatch, algorithm):
    src, table = plain
    names = _reads_by_thread(monkeypatch)
    sealed, resealed, unsealed = (tmp_path / n for n in ("sealed.parquet", "resealed.parquet", "unsealed.parquet"))
    pqseal.encrypt_file(src, sealed, EncryptionProperties(KEY, algorithm=algorithm))
    assert names.count("pqseal-prefetch") >= pq.ParquetFile(src).metadata.num_row_groups * len(table.columns) - 1
    pqseal.rekey_file(sealed, resealed, DecryptionProperties(KEY), EncryptionProperties(KEY[::-1]))
    pqseal.decrypt_file(resealed, unsealed, DecryptionProperties(KEY[::-1]))
    assert pq.read_table(sealed, decryption_properties=pe.create_decryption_properties(KEY)).equals(table)
    assert pq.read_table(unsealed).equals(table)
    assert pq.read_table(resealed, decryption_properties=pe.create_decryption_properties(KEY[::-1])).equals(table)


def test_truncated_during_read_ahead(tmp_path, plain, monkeypatch):
    src, _ = plain
    real = source.Source.read
    cut = []

    def read(self, offset, length, out=None):
        if threading.current_thread().name == "pqseal-prefetch" and not cut:
            cut.append(offset)
            os.truncate(src, offset + 10)   # the file shrinks under the reader
        return real(self, offset, length, out)

    monkeypatch.setattr(source.Source, "read", read)
    dst = tmp_path / "out" / "sealed.parquet"
    dst.parent.mkdir()
    with pytest.raises(MalformedFile, match="plain.parquet: the file ends at offset"):
        pqseal.encrypt_file(src, dst, EncryptionProperties(KEY))
    assert cut and os.listdir(dst.parent) == []


def test_no_read_ahead_without_buffer_reuse(tmp_path, plain, monkeypatch):
    """A Source that hands out chunks valid beyond the next read (no reuse_buffers) and an
    in-memory input read nothing ahead."""
    src, _ = plain
    names = _reads_by_thread(monkeypatch)
    with source.Source(str(src)) as s:
        s.read_chunk(0, 0)
        s.prefetch(0, 1)
        s.read_chunk(0, 1)
    with source.Source(pa.py_buffer(src.read_bytes()), reuse_buffers=True) as s:
        s.read_chunk(0, 0)
        s.prefetch(0, 1)
        s.read_chunk(0, 1)
    assert "pqseal-prefetch" not in names
