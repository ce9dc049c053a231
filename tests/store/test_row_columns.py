"""Rows taken from column arrays equal Arrow's own conversion, for every column kind a shard can hold."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from vela_search.store.row_columns import RowColumns


def _table() -> pa.Table:
    n = 50
    rng = np.random.default_rng(0)
    paths = [f"/a/é{i // 7}.wav" for i in range(n)]  # repeats, and non-ASCII bytes
    return pa.table(
        {
            "id": pa.array(np.arange(100, 100 + n), type=pa.int64()),
            "path": pc.dictionary_encode(pa.array(paths)),
            "root": pa.array([None if i % 3 else "/a" for i in range(n)], type=pa.string()),
            "words": pc.dictionary_encode(pa.array([None if i % 7 else f"w{i}" for i in range(n)])),
            "nothing": pc.dictionary_encode(pa.array([None] * n, type=pa.string())),
            "big": pa.array([f"x{i}" for i in range(n)], type=pa.large_string()),
            "start_s": pa.array(rng.random(n)),
            "duration_s": pa.array([None if i % 4 == 0 else float(i) for i in range(n)]),
            "segment": pa.array([None if i % 5 == 0 else i for i in range(n)], type=pa.int32()),
            "flag": pa.array([None if i % 6 == 0 else bool(i % 2) for i in range(n)]),
            "paths": pa.array([[p, p + ".copy"] if i % 2 else None for i, p in enumerate(paths)]),
        }
    )


@pytest.mark.parametrize("positions", [[0], [49, 3, 3, 17], list(range(50)), []])
def test_rows_equal_arrow_to_pylist(positions: list[int]) -> None:
    table = _table()
    expected = table.take(pa.array(positions, type=pa.int64())).to_pylist()
    got = RowColumns(table).rows(np.array(positions, dtype=np.int64))
    assert got == expected
    for row, want in zip(got, expected, strict=True):  # Python types too (int stays int, bool stays bool)
        assert [type(v) for v in row.values()] == [type(v) for v in want.values()]


def test_a_sliced_chunked_table_is_read_at_its_own_offsets() -> None:
    table = _table()
    chunked = pa.concat_tables([table.slice(10, 20), table.slice(0, 10)])
    positions = np.array([0, 19, 20, 29])
    assert RowColumns(chunked).rows(positions) == chunked.take(pa.array(positions)).to_pylist()


def test_one_row_at_a_time_equals_arrow_at_every_position() -> None:
    table = _table()
    columns = RowColumns(table)
    for at, want in enumerate(table.to_pylist()):  # nulls of every kind sit at different positions
        got = columns.rows(np.array([at]))
        assert got == [want] and columns.row(at) == want
        assert [type(v) for v in got[0].values()] == [type(v) for v in want.values()]
