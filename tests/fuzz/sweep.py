"""A deterministic sweep beside the fuzzer: every integer field of every kind of
metadata module of every seed, set to each of a few boundary values, resealed with the
real keys (``pme_model``), then the PME target's check (``fuzz_pme.check``).

Kinds of module: the page headers, column and offset indexes and bloom filter headers
(one of each kind per seed, for a column with its own key, one with the footer key and
a plaintext one), the ColumnMetaData and the ColumnChunk of each column of the first
row group (in the footer, re-encrypted or re-signed, or in its encrypted column
metadata); the optional offsets and lengths are also added where they are absent.
About 20,000 files, a few minutes; findings as the fuzz targets record them
(``OUT/findings/sweep-*.parquet``). Exit 1 on any finding.

    python tests/fuzz/sweep.py --out build-fuzz
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
import time
import warnings

import harness

VALUES = [0, -1, 1, 3, 4, 27, 28, 29, 100, 10**6, (1 << 31) - 1, -(1 << 31), 1 << 40, -(1 << 40)]
#: optional offsets and lengths, also set where a chunk does not have them
META_OPTIONAL = ("dictionary_page_offset", "index_page_offset", "bloom_filter_offset", "bloom_filter_length")
CHUNK_OPTIONAL = ("offset_index_offset", "offset_index_length", "column_index_offset", "column_index_length")


def _int_paths(obj, path=()):
    for k, v in obj.items():
        if isinstance(v, dict):
            yield from _int_paths(v, path + (k,))
        elif isinstance(v, int) and not isinstance(v, bool):
            yield path + (k,)


def _field_paths(obj: dict, optional: dict) -> list:
    """The int fields of ``obj`` and the optional ones it lacks ({sub-struct: names})."""
    paths = list(_int_paths(obj))
    for sub, names in optional.items():
        inner = obj.get(sub) if sub else obj
        if isinstance(inner, dict):
            paths += [((sub,) if sub else ()) + (n,) for n in names if n not in inner]
    return paths


def _with(obj: dict, path: tuple, value: int) -> dict:
    out = copy.deepcopy(obj)
    d = out
    for k in path[:-1]:
        d = d[k]
    d[path[-1]] = value
    return out


def variants(model):
    """(label, file bytes) of every edit of one seed."""
    import pme_model as M

    size = len(model.data)
    seen = set()
    for m in model.modules:
        cls = (m.kind, m.key is None, m.key == model.footer_key)
        if not m.struct or m.kind == M.FOOTER or cls in seen:
            continue
        seen.add(cls)
        obj = M.oracle.codec.decode(m.struct, model.open(m))[0]
        for path in _int_paths(obj):
            for v in VALUES + [size]:
                try:
                    plain = M.encode(m.struct, _with(obj, path, v))
                except ValueError:
                    continue
                data = bytearray(model.data)
                data[m.offset:m.offset + m.length] = model.seal(m, plain)
                yield f"module {m.kind} rg {m.rg} col {m.col} {'.'.join(map(str, path))}={v}", bytes(data)
    body = model.data[:model.footer_offset]
    for c, cc in enumerate(model.fmd["row_groups"][0]["columns"]):
        enc = model.column_meta.get((0, c))
        for path in _field_paths(cc, {"": CHUNK_OPTIONAL, "meta_data": META_OPTIONAL}):
            if path[0] == "encrypted_column_metadata":
                continue
            for v in VALUES + [size]:
                fmd = copy.deepcopy(model.fmd)
                fmd["row_groups"][0]["columns"][c] = _with(cc, path, v)
                try:
                    yield f"chunk col {c} {'.'.join(path)}={v}", M.build_footer(model, body, fmd)
                except ValueError:
                    continue
        if enc is None:
            continue
        for path in _field_paths(enc[1], {"": META_OPTIONAL}):
            for v in VALUES + [size]:
                fmd = copy.deepcopy(model.fmd)
                try:
                    fmd["row_groups"][0]["columns"][c]["encrypted_column_metadata"] = \
                        M.seal_column_meta(model, 0, c, _with(enc[1], path, v))
                except ValueError:
                    continue
                yield f"encrypted meta col {c} {'.'.join(path)}={v}", M.build_footer(model, body, fmd)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=os.path.join(harness.REPO, "build-fuzz"))
    args = ap.parse_args()
    os.environ["PQSEAL_FUZZ_OUT"] = os.path.abspath(args.out)
    import fuzz_pme
    import pme_model
    import pme_seeds

    out = harness.out_dir()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        seeds = pme_seeds.build(os.path.join(out, "seeds"))
    work = os.path.join(out, "work-sweep")
    os.makedirs(work, exist_ok=True)
    current = os.path.join(work, "current.parquet")
    rec = harness.Recorder("sweep")
    found = 0
    t0 = time.monotonic()
    for path in seeds:
        with open(path, "rb") as f:
            model = pme_model.parse(f.read(), pme_seeds.FOOTER_KEY, pme_seeds.COLUMN_KEYS)
        for label, data in variants(model):
            with open(current, "wb") as f:
                f.write(data)
            rec.tick()
            try:
                fuzz_pme.check(current, work)
            except Exception as e:
                if rec.finding(fuzz_pme.finding_key(e), data, f"{os.path.basename(path)}: {label}\n"
                               + harness.describe(e), ".parquet"):
                    found += 1
    rec.flush()
    took = time.monotonic() - t0
    print(f"sweep: {rec.execs} files in {took:.0f} s ({rec.execs / max(took, 1e-9):.1f}/s), {found} finding(s)")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
