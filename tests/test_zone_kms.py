"""A zone names its KMS by URI (issue 12: one way to name a KMS everywhere): writes into
the zone that pass no ``kms`` use the zone's KMS, not the default keystore. Checked
with pyarrow's own PME reader over the zone's keystore, and by the default keystore
(which lacks the keys) failing to open the files."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pyarrow as pa
import pyarrow.parquet as pq
import pyarrow.parquet.encryption as pe
import pytest

import pqseal
from pqseal.errors import KeyNotFound
from pqseal.io import zones
from pqseal.kms.keystore import LocalKeystore

TABLE = pa.table({"id": list(range(500)), "ssn": [f"{i:09d}" for i in range(500)]})


@pytest.fixture
def setup(tmp_path, monkeypatch):
    monkeypatch.setenv(zones.ZONES_ENV, str(tmp_path / "zones.json"))
    monkeypatch.setenv("PQSEAL_KEYSTORE_PASSPHRASE", "zone kms test")
    monkeypatch.setenv("PQSEAL_KEYSTORE", str(tmp_path / "default.json"))
    LocalKeystore.init(str(tmp_path / "default.json"))          # the default: no master keys
    zone_ks = LocalKeystore.init(str(tmp_path / "zone-ks.json"))
    zone_ks.create("kf")
    zone_ks.create("kc")
    root = tmp_path / "lake"
    root.mkdir()
    return root, f"keystore:{tmp_path / 'zone-ks.json'}", str(tmp_path / "zone-ks.json")


def _pyarrow_reads(path, keystore_path):
    props = pqseal.arrow.crypto_factory(lambda cfg: LocalKeystore(keystore_path)).file_decryption_properties(
        pe.KmsConnectionConfig(), pe.DecryptionConfiguration())
    return pq.read_table(path, decryption_properties=props)


def test_writes_use_the_zones_kms(setup):
    root, uri, ks = setup
    z = zones.create_zone(root, "kf", column_keys="kc:ssn", kms_uri=uri)
    assert z.policy.kms == uri
    with pqseal.ParquetWriter(root / "w.parquet", TABLE.schema) as w:      # neither encryption= nor kms=
        w.write_table(TABLE)
    with pqseal.open(root / "s.parquet", "wb") as f:
        pq.write_table(TABLE, f)
    for name in ("w.parquet", "s.parquet"):
        assert _pyarrow_reads(root / name, ks).equals(TABLE)
        with pytest.raises(KeyNotFound):                                   # not the default keystore's keys
            pqseal.read_table(root / name)
        assert pqseal.read_table(root / name, kms=uri).equals(TABLE)      # a URI as kms= of the API
    s = pqseal.KeySession.open(encryption=zones.policy_for(str(root / "x.parquet")))
    assert s.kms_calls == 2 and s.write_master_key_ids == {"kf", "kc"}
    s.close()


def test_zone_kms_must_be_a_uri(setup):
    root, _, _ = setup
    with pytest.raises(zones.ZoneError, match="kms"):
        zones.create_zone(root, "kf", kms_uri="nonsense://x")


def test_cli_zone_create_stores_the_kms(setup, tmp_path):
    root, uri, ks = setup
    env = dict(os.environ)
    p = subprocess.run([sys.executable, "-m", "pqseal", "zone", "create", str(root), "--footer-key", "kf",
                        "--kms", uri], capture_output=True, text=True, env=env, timeout=60)
    assert p.returncode == 0, p.stderr
    shown = json.loads(subprocess.run([sys.executable, "-m", "pqseal", "zone", "list", "--json"], capture_output=True,
                                      text=True, env=env, timeout=60).stdout)
    assert shown[0]["kms"] == uri
    pq.write_table(TABLE, tmp_path / "plain.parquet")
    p = subprocess.run([sys.executable, "-c", "import sys, pyarrow.parquet as pq, pqseal\n"
                        "with pqseal.open(sys.argv[2], 'wb') as f: pq.write_table(pq.read_table(sys.argv[1]), f)",
                        str(tmp_path / "plain.parquet"), str(root / "c.parquet")], env=env, capture_output=True,
                       text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    assert _pyarrow_reads(root / "c.parquet", ks).equals(TABLE)
