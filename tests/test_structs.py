"""The typed dicts of pqseal.format.structs list exactly the fields of the codec's schema
(a field added to one and not the other would make the type checker blind to it)."""

from __future__ import annotations

import typing

from pqseal.format import structs
from pqseal.format import thrift as T


def test_every_struct_of_the_schema_has_a_typed_dict_with_its_fields():
    for name, fields in T.SCHEMA:
        td = getattr(structs, name)
        hints = typing.get_type_hints(td)
        assert list(hints) == [f[1] for f in fields], name
        assert not td.__required_keys__, name  # a file may leave out any field


def test_no_typed_dict_without_a_schema_struct():
    names = {n for n, _ in T.SCHEMA}
    declared = {n for n, v in vars(structs).items() if isinstance(v, type) and issubclass(v, dict)}
    assert declared == names


def test_a_decoded_footer_is_such_a_dict(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from pqseal.format.source import Source

    p = tmp_path / "t.parquet"
    pq.write_table(pa.table({"a": [1, 2, 3]}), p, write_page_index=True)
    with Source(p) as s:
        fmd = s.file_metadata()
    hints = typing.get_type_hints(structs.FileMetaData)
    assert set(k for k in fmd if isinstance(k, str)) <= set(hints)
    cc = fmd["row_groups"][0]["columns"][0]
    assert set(k for k in cc if isinstance(k, str)) <= set(typing.get_type_hints(structs.ColumnChunk))
    assert set(cc["meta_data"]) <= set(typing.get_type_hints(structs.ColumnMetaData))
