"""The ``pqseal`` fsspec protocol (pqseal.io.fs): chaining, pass-through, sealing writes,
plaintext views, plaintext sizes, zones, and pandas, polars and DuckDB over it.

Every file written through the protocol is checked with an independent reader: pyarrow's
own PME implementation (CryptoFactory over pqseal's KMS client, :mod:`pqseal.arrow`)
reading the bytes the target holds. Each test runs over a local target and over
fsspec's memory file system (the stand-in for object stores: no local paths, files
committed on close).
"""

from __future__ import annotations

import base64
import json
import uuid

import pyarrow as pa
import pyarrow.parquet as pq
import pyarrow.parquet.encryption as pe
import pytest

from pqseal.arrow import crypto_factory
from pqseal.config import EncryptionConfig
from pqseal.errors import InvalidTag
from pqseal.format.source import Source
from pqseal.io.zones import ZoneError, create_zone
from pqseal.kms import KeyListKms

from interop import require

fsspec = require("fsspec")

from pqseal.io.fs import PqsealFileSystem  # noqa: E402  (needs fsspec)

MASTER = {"kf": bytes(range(16)), "kc": bytes(range(16, 32)), "kz": bytes(range(32, 48)),
          "kn": bytes(range(48, 64))}
KEY_LIST = ", ".join(f"{k}: {base64.b64encode(v).decode()}" for k, v in MASTER.items())
CFG = EncryptionConfig("kf", column_keys={"kc": ["a"]}, complete_columns=True)
N = 2_000


def table(n: int = N, seed: int = 0) -> pa.Table:
    return pa.table({
        "a": pa.array([i * 7 + seed for i in range(n)], pa.int64()),
        "b": pa.array([f"s{(i + seed) % 101}" for i in range(n)]),
        "c": pa.array([None if i % 5 == 0 else i * 0.25 for i in range(n)]),
        "d": pa.array([{"x": i, "y": [i, i + 1][: i % 3]} for i in range(n)]),
    })


@pytest.fixture
def kms():
    return KeyListKms(KEY_LIST)


@pytest.fixture(params=["file", "memory"])
def target(request, tmp_path):
    """(protocol, root): a fresh directory of the target, without protocol."""
    if request.param == "file":
        root = str(tmp_path / "data")
    else:
        root = f"/pqseal-test-{uuid.uuid4().hex}"
    fsspec.filesystem(request.param).makedirs(root, exist_ok=True)
    yield request.param, root
    if request.param == "memory":
        fsspec.filesystem("memory").rm(root, recursive=True)


def url(target, name: str = "") -> str:
    protocol, root = target
    return f"pqseal::{protocol}://{root}/{name}"


def raw(target, name: str) -> bytes:
    """The bytes the target itself holds."""
    protocol, root = target
    return fsspec.filesystem(protocol).cat_file(f"{root}/{name}")


def oracle(data: bytes, kms) -> pa.Table:
    """pyarrow's own PME reader, keys unwrapped by ``kms``: independent of pqseal's engine."""
    factory = crypto_factory(lambda cfg: kms)
    props = factory.file_decryption_properties(pe.KmsConnectionConfig(), pe.DecryptionConfiguration())
    return pq.read_table(pa.BufferReader(data), decryption_properties=props)


def footer_key_id(data: bytes) -> str:
    with Source(data) as s:
        return json.loads(s.crypto.footer_key_metadata)["masterKeyID"]


def tag_error(exc: BaseException) -> bool:
    """pqseal's InvalidTag in the exception's chain, or its message carried by a reader's
    own error (pyarrow, polars and DuckDB re-raise with the text)."""
    seen = exc
    while seen is not None:
        if isinstance(seen, InvalidTag):
            return True
        seen = seen.__cause__ or seen.__context__
    return "InvalidTag" in str(exc) or "authentication failed" in str(exc)


def sealed_fs(target, kms, **options) -> tuple[PqsealFileSystem, str]:
    return fsspec.url_to_fs(url(target, "t.parquet"), pqseal={"encryption": CFG, "kms": kms, **options})


def write(fs, path, t=None):
    with fs.open(path, "wb") as f:
        pq.write_table(table() if t is None else t, f, row_group_size=700)


def tamper(target, name: str, kms) -> None:
    """Flip one byte inside the first data page of column ``a``, in the target."""
    from pqseal.api import decryption_properties

    protocol, root = target
    data = bytearray(raw(target, name))
    with Source(bytes(data), decryption_properties(None, kms=kms)) as s:
        offset = s.column_meta(0, 0)["data_page_offset"]
    data[offset + 40] ^= 0x01
    fsspec.filesystem(protocol).pipe_file(f"{root}/{name}", bytes(data))


# ---- the protocol --------------------------------------------------------------------------


def test_protocol_is_registered_and_chains(tmp_path):
    assert fsspec.get_filesystem_class("pqseal") is PqsealFileSystem
    fs, path = fsspec.url_to_fs(f"pqseal::file://{tmp_path}/x.parquet")
    assert isinstance(fs, PqsealFileSystem) and fs.target.protocol[0] == "file"
    assert path == f"{tmp_path}/x.parquet"
    fs, path = fsspec.url_to_fs("pqseal::memory://bucket/x.parquet", pqseal={"zones": str(tmp_path / "z.json")})
    assert fs.target.protocol == "memory" and path == "/bucket/x.parquet"
    assert fs.zones == str(tmp_path / "z.json")
    # built directly (DuckDB's way): pqseal://<path in the target>
    direct = fsspec.filesystem("pqseal", target_protocol="memory")
    assert direct._path("pqseal://bucket/x.parquet") == "/bucket/x.parquet"
    assert PqsealFileSystem(target_protocol="file")._path(f"pqseal://{tmp_path}/y") == f"{tmp_path}/y"
    with pytest.raises(ValueError, match="seal twice"):
        PqsealFileSystem(fs=direct)


@pytest.mark.parametrize("name", ["_SUCCESS", "meta.json", "rows.csv", "notes.txt"])
def test_other_files_pass_through(target, name):
    payload = b"a,b\n1,2\n" * 10
    with fsspec.open(url(target, name), "wb") as f:
        f.write(payload)
    assert raw(target, name) == payload
    with fsspec.open(url(target, name), "rb") as f:
        assert f.read() == payload
    fs, path = fsspec.url_to_fs(url(target, name))
    assert fs.info(path) == fs.target.info(path)
    assert fs.exists(path) and fs.isfile(path) and not fs.isdir(path)


def test_plaintext_parquet_reads_pass_through(target):
    protocol, root = target
    buf = pa.BufferOutputStream()
    pq.write_table(table(), buf)
    fsspec.filesystem(protocol).pipe_file(f"{root}/plain.parquet", buf.getvalue().to_pybytes())
    fs, path = fsspec.url_to_fs(url(target, "plain.parquet"))
    with fs.open(path, "rb") as f:
        assert f.read() == buf.getvalue().to_pybytes()
    assert fs.info(path) == fs.target.info(path)
    assert pq.read_table(path, filesystem=fs).equals(table())


@pytest.mark.parametrize("name", ["t.parquet", "t.parq", "t.PQ", "part.0.parquet"])
def test_plaintext_parquet_writes_are_refused_outside_zones(target, tmp_path, name):
    fs, _ = fsspec.url_to_fs(url(target), pqseal={"zones": str(tmp_path / "none.json")})
    path = f"{target[1]}/{name}"
    with pytest.raises(ZoneError, match="no encryption zone"):
        fs.open(path, "wb")
    assert not fs.exists(path)
    pd = require("pandas")
    with pytest.raises(ZoneError):
        pd.DataFrame({"a": [1]}).to_parquet(url(target, name), storage_options={"pqseal": {
            "zones": str(tmp_path / "none.json")}})
    assert not fs.exists(path)


def test_summary_files_and_other_modes_are_refused(target, kms):
    fs, _ = sealed_fs(target, kms)
    root = target[1]
    for name in ("_metadata", "_common_metadata"):
        with pytest.raises(ValueError, match="statistics of every column in plaintext"):
            fs.open(f"{root}/{name}", "wb")
        assert not fs.exists(f"{root}/{name}")
    for mode in ("ab", "r+b"):
        with pytest.raises(ValueError, match="opens with 'rb', 'wb' or 'xb'"):
            fs.open(f"{root}/t.parquet", mode)
    write(fs, f"{root}/t.parquet")
    with pytest.raises(FileExistsError):
        fs.open(f"{root}/t.parquet", "xb")


# ---- sealing writes, plaintext reads ---------------------------------------------------------


def test_write_seals_and_read_presents_plaintext(target, kms):
    fs, path = sealed_fs(target, kms)
    write(fs, path)
    data = raw(target, "t.parquet")
    assert data[:4] == b"PARE" and data[-4:] == b"PARE"
    assert oracle(data, kms).equals(table())
    assert footer_key_id(data) == "kf"
    with fs.open(path, "rb") as f:
        plain = f.read()
    assert plain[:4] == b"PAR1" and plain[-4:] == b"PAR1"
    assert pq.read_table(pa.BufferReader(plain)).equals(table())
    assert pq.read_table(path, filesystem=fs).equals(table())
    info = fs.info(path)
    assert info["size"] == len(plain) == fs.size(path) and info["stored_size"] == len(data) != len(plain)
    assert [e["size"] for e in fs.ls(target[1], detail=True)] == [len(plain)]
    assert list(fs.find(target[1], detail=True).values())[0]["size"] == len(plain)
    assert list(fs.glob(f"{target[1]}/*.parquet", detail=True).values())[0]["size"] == len(plain)
    assert fs.du(target[1]) == len(plain)


def test_failed_write_leaves_nothing(target, kms):
    fs, path = sealed_fs(target, kms)
    with pytest.raises(RuntimeError, match="writer died"):
        with fs.open(path, "wb") as f:
            f.write(b"PAR1" + b"\0" * 100_000)
            raise RuntimeError("writer died")
    assert fs.ls(target[1], detail=False) == []
    # bytes that are no Parquet file are refused on close, and nothing reaches the target
    f = fs.open(path, "wb")
    f.write(b"not parquet")
    with pytest.raises(ValueError):
        f.close()
    assert fs.ls(target[1], detail=False) == []


def test_sizes_are_cached_per_file_version(target, kms, monkeypatch):
    from pqseal.io import view

    calls = []
    real = view.view_size

    def counting(src, **kw):
        calls.append(src)
        return real(src, **kw)

    monkeypatch.setattr(view, "view_size", counting)
    fs, _ = sealed_fs(target, kms)
    for i in range(3):
        write(fs, f"{target[1]}/part.{i}.parquet", table(seed=i))
    for _ in range(3):
        sizes = [e["size"] for e in sorted(fs.ls(target[1], detail=True), key=lambda e: e["name"])]
        fs.find(target[1], detail=True)
        fs.info(f"{target[1]}/part.1.parquet")
    assert len(calls) == 3
    assert sizes == [len(fs.cat_file(f"{target[1]}/part.{i}.parquet")) for i in range(3)]
    write(fs, f"{target[1]}/part.1.parquet", table(n=N // 2, seed=9))     # a new version: measured again
    assert fs.info(f"{target[1]}/part.1.parquet")["size"] == len(fs.cat_file(f"{target[1]}/part.1.parquet"))
    assert len(calls) == 4


def test_tampering_surfaces_in_reads(target, kms):
    fs, path = sealed_fs(target, kms)
    write(fs, path)
    tamper(target, "t.parquet", kms)
    with pytest.raises(Exception) as e:
        pq.read_table(path, filesystem=fs)
    assert tag_error(e.value), e.value
    with pytest.raises(Exception) as e:
        with fs.open(path, "rb") as f:
            f.read()
    assert tag_error(e.value), e.value


@pytest.mark.parametrize("sealed", [True, False])
def test_threads_sharing_a_file_read_where_they_seeked(target, kms, sealed):
    """DuckDB's pattern: two threads seek the one handle, then each reads. Every read
    returns the bytes at its own thread's seek (the view releases the GIL while it
    decrypts, so the second seek lands before the first read)."""
    import threading

    fs, path = sealed_fs(target, kms)
    if sealed:
        write(fs, path)
    else:
        buf = pa.BufferOutputStream()
        pq.write_table(table(), buf, row_group_size=700)
        fsspec.filesystem(target[0]).pipe_file(path, buf.getvalue().to_pybytes())
    with fs.open(path, "rb") as f:
        plain = f.read()
    f = fs.open(path, "rb")
    a_seeked, b_seeked = threading.Event(), threading.Event()
    got = {}

    def a():
        f.seek(100)
        a_seeked.set()
        b_seeked.wait(10)
        got["a"] = (f.tell(), f.read(50))

    def b():
        a_seeked.wait(10)
        f.seek(len(plain) // 2)
        b_seeked.set()
        got["b"] = f.read(50)

    threads = [threading.Thread(target=a), threading.Thread(target=b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert got["a"] == (100, plain[100:150]) and got["b"] == plain[len(plain) // 2:][:50]
    # a read without a seek of its own continues at the file's position, in any thread
    f.seek(10)
    t = threading.Thread(target=lambda: got.update(c=f.read(5)))
    t.start()
    t.join()
    assert got["c"] == plain[10:15] and f.read(5) == plain[15:20] and f.tell() == 20
    f.seek(-4, 2)
    assert f.read() == b"PAR1" and f.read(10) == b""
    f.close()


def test_duckdb_threads_read_a_sealed_file_reliably(tmp_path, kms):
    """The end-to-end check of the above: before pqseal kept seeks per thread, DuckDB's
    reads of a multi-row-group PME file failed ('TProtocolException: Invalid data')
    in most of these runs."""
    duckdb = require("duckdb")
    fs = PqsealFileSystem(target_protocol="file", encryption=CFG, kms=kms)
    t = pa.table({"a": pa.array(range(20_000), pa.int64()), "b": [str(i) for i in range(20_000)]})
    with fs.open(f"{tmp_path}/t.parquet", "wb") as f:
        pq.write_table(t, f, row_group_size=700)
    con = duckdb.connect()
    try:
        con.register_filesystem(fs)
        con.execute("SET threads=4")
        for _ in range(15):
            got = con.sql(f"SELECT count(*), sum(a), count(DISTINCT b) "
                          f"FROM read_parquet('pqseal://{tmp_path}/t.parquet')").fetchall()
            assert got == [(20_000, sum(range(20_000)), 20_000)]
    finally:
        con.close()


# ---- zones -----------------------------------------------------------------------------------


def zone_root(target) -> str:
    """A zone root as the zones file names it: a local path or the target's URL."""
    protocol, root = target
    return root if protocol == "file" else f"{protocol}://{root}"


def test_zones_pick_the_policy_and_nest(target, kms, tmp_path):
    zones = str(tmp_path / "zones.json")
    root = zone_root(target)
    create_zone(f"{root}/pii", "kz", column_keys="kc:a", kms=kms, zones=zones)
    create_zone(f"{root}/pii/inner", "kn", kms=kms, zones=zones)
    fs, _ = fsspec.url_to_fs(url(target), pqseal={"kms": kms, "zones": zones})
    fs.makedirs(f"{target[1]}/pii/x", exist_ok=True)
    fs.makedirs(f"{target[1]}/pii/inner", exist_ok=True)
    write(fs, f"{target[1]}/pii/x/t.parquet")
    write(fs, f"{target[1]}/pii/inner/t.parquet")
    outer, inner = raw(target, "pii/x/t.parquet"), raw(target, "pii/inner/t.parquet")
    assert footer_key_id(outer) == "kz" and footer_key_id(inner) == "kn"
    assert oracle(outer, kms).equals(table()) and oracle(inner, kms).equals(table())
    # the encryption option overrides the zone
    fs2, _ = fsspec.url_to_fs(url(target), pqseal={"kms": kms, "zones": zones, "encryption": CFG})
    write(fs2, f"{target[1]}/pii/x/u.parquet")
    assert footer_key_id(raw(target, "pii/x/u.parquet")) == "kf"
    # renames: within a zone allowed; across zones, into or out of one refused
    fs.mv(f"{target[1]}/pii/x/t.parquet", f"{target[1]}/pii/x/t2.parquet")
    assert fs.exists(f"{target[1]}/pii/x/t2.parquet")
    for dst in (f"{target[1]}/pii/inner/t3.parquet", f"{target[1]}/t3.parquet"):
        for move in (fs.mv, fs.rename, fs.copy):
            with pytest.raises(ZoneError, match="across"):
                move(f"{target[1]}/pii/x/t2.parquet", dst)
            assert not fs.exists(dst)
    with pytest.raises(ZoneError, match="across"):
        fs.mv(f"{target[1]}/pii", f"{target[1]}/elsewhere", recursive=True)
    with pytest.raises(ZoneError, match="holds zone"):       # the zone would not move with its files
        fs.mv(target[1], f"{target[1]}-moved", recursive=True)
    assert fs.exists(f"{target[1]}/pii/x/t2.parquet")


def test_pass_through_operations(target, kms):
    fs, _ = sealed_fs(target, kms)
    root = target[1]
    fs.mkdir(f"{root}/d")
    fs.makedirs(f"{root}/d/e", exist_ok=True)
    assert fs.isdir(f"{root}/d/e") and fs.exists(f"{root}/d")
    write(fs, f"{root}/d/e/t.parquet")
    fs.pipe_file(f"{root}/d/e/_SUCCESS", b"")
    assert fs.glob(f"{root}/d/**/*.parquet") == [f"{root}/d/e/t.parquet"]
    assert fs.find(f"{root}/d") == [f"{root}/d/e/_SUCCESS", f"{root}/d/e/t.parquet"]
    fs.rm(f"{root}/d", recursive=True)
    assert not fs.exists(f"{root}/d")


# ---- readers and writers, no other code ------------------------------------------------------


@pytest.mark.parametrize("engine", ["pyarrow", "fastparquet"])
def test_pandas(target, kms, engine):
    pd = require("pandas")
    if engine == "fastparquet":
        require("fastparquet")
    df = table().drop(["d"]).to_pandas()
    so = {"pqseal": {"encryption": CFG, "kms": kms}}
    df.to_parquet(url(target, "p.parquet"), engine=engine, storage_options=so)
    data = raw(target, "p.parquet")
    assert data[-4:] == b"PARE"
    pd.testing.assert_frame_equal(oracle(data, kms).to_pandas(), df)
    got = pd.read_parquet(url(target, "p.parquet"), engine=engine, storage_options={"pqseal": {"kms": kms}})
    pd.testing.assert_frame_equal(got, df)
    tamper(target, "p.parquet", kms)
    with pytest.raises(Exception) as e:
        pd.read_parquet(url(target, "p.parquet"), engine=engine, storage_options={"pqseal": {"kms": kms}})
    assert tag_error(e.value), e.value


def test_pandas_partitioned_datasets(target, kms):
    """pyarrow writes hive partitions (every file sealed); both engines read the
    directory back. fastparquet's own partitioned writer always writes ``_metadata``,
    which is refused in encrypted storage (it would hold every column's statistics)."""
    pd = require("pandas")
    require("fastparquet")
    df = pd.DataFrame({"a": range(3000), "b": [f"s{i % 3}" for i in range(3000)]})
    so = {"pqseal": {"encryption": CFG, "kms": kms}}
    df.to_parquet(url(target, "ds"), partition_cols=["b"], engine="pyarrow", storage_options=so)
    fs, path = fsspec.url_to_fs(url(target, "ds"), **so)
    files = fs.find(path)
    assert len(files) == 3 and all(fs.target.cat_file(f)[-4:] == b"PARE" for f in files)
    for engine in ("pyarrow", "fastparquet"):
        got = pd.read_parquet(url(target, "ds"), engine=engine, storage_options=so)
        got = got.astype({"b": str}).sort_values("a").reset_index(drop=True)
        pd.testing.assert_frame_equal(got[["a", "b"]], df, check_dtype=False)
    with pytest.raises(ValueError, match="_metadata"):
        df.to_parquet(url(target, "fp"), partition_cols=["b"], engine="fastparquet", storage_options=so)
    assert not any(fs.target.cat_file(f)[-4:] == b"PAR1" for f in fs.find(f"{target[1]}/fp"))


def test_polars(target, kms):
    """polars routes no custom protocol through fsspec (its native reader takes a
    ``pqseal::`` URL for a local path and refuses nested storage options), so it reads
    and writes the file system's file objects, or reads through pyarrow
    (``use_pyarrow=True``), which opens ``pqseal://`` URLs with fsspec. Tampering: a
    Python exception inside a file object's ``read`` becomes a Rust panic in polars
    (``PanicException``, a BaseException) that carries pqseal's InvalidTag; through
    pyarrow it is the InvalidTag itself."""
    pl = require("polars")
    protocol, root = target
    df = pl.from_arrow(table())
    fs, path = fsspec.url_to_fs(url(target, "pl.parquet"), pqseal={"encryption": CFG, "kms": kms})
    with fs.open(path, "wb") as f:
        df.write_parquet(f)
    data = raw(target, "pl.parquet")
    assert data[-4:] == b"PARE"
    assert pl.from_arrow(oracle(data, kms)).equals(df)
    with fs.open(path, "rb") as f:
        assert pl.read_parquet(f).equals(df)
    with fsspec.open(url(target, "pl.parquet"), "rb", pqseal={"kms": kms}) as f:
        assert pl.scan_parquet(f).select("b").collect().equals(df.select("b"))
    direct = f"pqseal://{root}/pl.parquet"
    options = {"target_protocol": protocol, "kms": kms}
    assert pl.read_parquet(direct, use_pyarrow=True, storage_options=options).equals(df)
    tamper(target, "pl.parquet", kms)
    with pytest.raises(BaseException) as e:
        with fs.open(path, "rb") as f:
            pl.read_parquet(f)
    assert tag_error(e.value), e.value
    with pytest.raises(InvalidTag):
        pl.read_parquet(direct, use_pyarrow=True, storage_options=options)


def test_duckdb(target, kms):
    duckdb = require("duckdb")
    protocol, root = target
    fs = PqsealFileSystem(target_protocol=protocol, encryption=CFG, kms=kms)
    con = duckdb.connect()
    try:
        con.register_filesystem(fs)
        con.execute(f"COPY (SELECT range AS a, 'v' || (range % 13) AS b FROM range({N})) "
                    f"TO 'pqseal://{root}/duck.parquet' (FORMAT parquet)")
        data = raw(target, "duck.parquet")
        assert data[-4:] == b"PARE"
        expect = pa.table({"a": pa.array(range(N), pa.int64()), "b": [f"v{i % 13}" for i in range(N)]})
        assert oracle(data, kms).equals(expect)
        write(fs, f"{root}/t.parquet")
        got = con.sql(f"SELECT * FROM read_parquet('pqseal://{root}/t.parquet') ORDER BY a").arrow().read_all()
        assert got.equals(table().cast(got.schema)) and got.column_names == table().column_names
        [n] = con.sql(f"SELECT count(*), sum(a) FROM read_parquet('pqseal://{root}/*.parquet')").fetchall()
        assert n == (2 * N, sum(range(N)) + sum(table().column("a").to_pylist()))
        tamper(target, "t.parquet", kms)
        with pytest.raises(Exception) as e:
            con.sql(f"SELECT sum(a) FROM read_parquet('pqseal://{root}/t.parquet')").fetchall()
        assert tag_error(e.value), e.value
    finally:
        con.close()


def test_large_read_of_a_view_is_not_copied(target, kms):
    """``read()`` of a PME file opened through the protocol (how polars reads a file
    object) returns the bytes 4 KiB reads return, decrypted straight into the ``bytes``
    returned: the read holds the file once, not twice."""
    import tracemalloc

    fs, path = sealed_fs(target, kms)
    with fs.open(path, "wb") as f:
        pq.write_table(table(30_000), f)
    with fs.open(path, "rb") as f:
        parts = []
        while piece := f.read(4096):
            parts.append(piece)
        want = b"".join(parts)
        f.seek(0)
        f.read(1)
        f.seek(0)
        tracemalloc.start()
        try:
            got = f.read()
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert type(got) is bytes and got == want and len(got) > 256 << 10
    assert peak <= 1.25 * len(got), (peak, len(got))
