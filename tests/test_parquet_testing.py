"""apache/parquet-testing's encrypted files (parquet-mr and Arrow writers) unseal to their
expected contents; see tests/data/parquet-testing/README.md for provenance and keys."""

from __future__ import annotations

import glob
import os

import pyarrow.parquet as pq
import pyarrow.parquet.encryption as pe
import pytest

import pqseal
from pqseal.format import DecryptionProperties

import parquet_gen as G

DATA = os.path.join(os.path.dirname(__file__), "data", "parquet-testing")
K128 = {"footer": b"0123456789012345", "double_field": b"1234567890123450", "float_field": b"1234567890123451"}
K256_COLS = {name: b"123456789012345678901234567890" + suffix for name, suffix in [
    ("double_field", b"12"), ("float_field", b"13"), ("boolean_field", b"14"), ("int32_field", b"15"),
    ("ba_field", b"16"), ("flba_field", b"17"), ("int64_field.list.element", b"18"), ("int96_field", b"19")]}
K256_FOOTER = b"01234567890123456789012345678901"

FILES_128 = sorted(p for p in glob.glob(os.path.join(DATA, "*.parquet.encrypted"))
                   if "external_key_material" not in p and "bloom_filter" not in p)
FILES_256 = sorted(glob.glob(os.path.join(DATA, "aes256", "*.parquet.encrypted")))
EXPECTED = {  # file -> (algorithm, footer mode, aad prefix text as inspect reports it)
    "encrypt_columns_and_footer": ("AES_GCM_V1", "encrypted", "none"),
    "encrypt_columns_and_footer_aad": ("AES_GCM_V1", "encrypted", "stored: tester"),
    "encrypt_columns_and_footer_ctr": ("AES_GCM_CTR_V1", "encrypted", "none"),
    "encrypt_columns_and_footer_disable_aad_storage": ("AES_GCM_V1", "encrypted",
                                                       "not stored: readers must supply it"),
    "encrypt_columns_plaintext_footer": ("AES_GCM_V1", "plaintext (signed)", "none"),
    "uniform_encryption": ("AES_GCM_V1", "encrypted", "none"),
}


def _name(path):
    return os.path.basename(path).replace(".parquet.encrypted", "")


@pytest.fixture(scope="module")
def reference_128():
    return pq.read_table(os.path.join(DATA, "uniform_encryption.parquet.encrypted"),
                         decryption_properties=pe.create_decryption_properties(K128["footer"]))


@pytest.fixture(scope="module")
def reference_256():
    return pq.read_table(os.path.join(DATA, "aes256", "uniform_encryption.parquet.encrypted"),
                         decryption_properties=pe.create_decryption_properties(K256_FOOTER))


def test_files_are_present():
    assert len(FILES_128) == 6 and len(FILES_256) == 5


@pytest.mark.parametrize("path", FILES_128, ids=_name)
def test_aes128_files_unseal_to_reference(path, tmp_path, reference_128):
    aad = b"tester" if "disable_aad_storage" in path else None
    dec = DecryptionProperties(K128["footer"], column_keys={k: v for k, v in K128.items() if k != "footer"},
                               aad_prefix=aad)
    info = pqseal.inspect(path)
    assert (info["algorithm"], info["footer"], info["aad_prefix"]) == EXPECTED[_name(path)]
    out = tmp_path / "plain.parquet"
    pqseal.decrypt_file(path, out, dec)
    assert pq.read_table(out).equals(reference_128)
    assert pqseal.verify(path, dec)["ok"]


@pytest.mark.parametrize("path", FILES_256, ids=_name)
def test_aes256_files_unseal_to_reference(path, tmp_path, reference_256):
    aad = b"tester" if "disable_aad_storage" in path else None
    dec = DecryptionProperties(K256_FOOTER, column_keys=K256_COLS, aad_prefix=aad)
    out = tmp_path / "plain.parquet"
    pqseal.decrypt_file(path, out, dec)
    assert pq.read_table(out).equals(reference_256)
    assert pqseal.verify(path, dec)["ok"]


def test_disable_aad_storage_needs_the_prefix(tmp_path):
    path = os.path.join(DATA, "encrypt_columns_and_footer_disable_aad_storage.parquet.encrypted")
    dec = DecryptionProperties(K128["footer"], column_keys={k: v for k, v in K128.items() if k != "footer"})
    with pytest.raises(pqseal.errors.KeyNotFound, match="AAD prefix"):
        pqseal.decrypt_file(path, tmp_path / "x.parquet", dec)
    assert not (tmp_path / "x.parquet").exists()


def test_wrong_column_key_is_rejected(tmp_path):
    path = os.path.join(DATA, "encrypt_columns_and_footer.parquet.encrypted")
    dec = DecryptionProperties(K128["footer"], column_keys={"double_field": K128["float_field"],
                                                            "float_field": K128["float_field"]})
    with pytest.raises(pqseal.InvalidTag, match="double_field"):
        pqseal.decrypt_file(path, tmp_path / "x.parquet", dec)


def test_bloom_filter_file(tmp_path):
    path = os.path.join(DATA, "encrypt_columns_and_footer_bloom_filter.parquet.encrypted")
    dec = DecryptionProperties(K128["footer"], column_keys={k: v for k, v in K128.items() if k != "footer"})
    out = tmp_path / "plain.parquet"
    pqseal.decrypt_file(path, out, dec)
    t = pq.read_table(out)
    n = t.num_rows
    assert n == 2000
    assert t.column("double_field").to_pylist() == [i + 0.5 for i in range(n)]
    assert t.column("float_field").to_pylist() == [i + 0.25 for i in range(n)]
    assert t.column("int32_field").to_pylist() == list(range(n))
    assert t.column("name").to_pylist() == [f"name_{i}" for i in range(n)]
    # the encrypted bloom filters (header + bitset modules) came out as plaintext ones
    enc_idx, plain_idx = G.indexes(path, dec), G.indexes(out)     # the independent reader
    assert {k: v["bloom"] for k, v in enc_idx.items()} == {k: v["bloom"] for k, v in plain_idx.items()}
    assert sum(v["bloom"] is not None for v in plain_idx.values()) >= 2
