"""A shard's metadata as column arrays in memory, from which a search takes its hits' rows.

A search needs a few dozen rows of a table of up to millions. Reading them from the Parquet file costs
milliseconds (a row group is decompressed and decoded for each), and even a `take` from an Arrow table
costs tens of microseconds per column in dispatch. Here the decoded table's columns are kept as NumPy
views (numbers and booleans: zero-copy where there are no nulls) and dictionary indices into each string
column's distinct values (a file's path, root and digest repeat on each of its segments), so fetching
rows is NumPy indexing plus one small `take` per string column. A single row (a query's hits are a few
rows of shards of up to millions) is read through one getter per column, chosen once per table.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

__all__ = ["RowColumns"]


@dataclass(frozen=True)
class _Column:
    name: str
    kind: str  # "numpy": values (+ valid); "strings": offsets into data (+ indices); "arrow": the column
    values: Any
    valid: np.ndarray | None = None  # numpy columns with nulls: which rows have a value
    indices: np.ndarray | None = None  # dictionary columns: index of each row's value, -1 for null
    data: memoryview | None = None  # string columns: the UTF-8 bytes that `values` (offsets) delimit


def _is_number(kind: pa.DataType) -> bool:
    return pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_boolean(kind)


def _is_text(kind: pa.DataType) -> bool:
    return pa.types.is_string(kind) or pa.types.is_large_string(kind)


def _has_offsets(values: pa.Array) -> bool:
    return values.buffers()[1] is not None


def _strings(name: str, values: pa.Array, indices: np.ndarray | None) -> _Column:
    """A string array's offsets and bytes, read in place (Arrow's per-call cost is tens of microseconds,
    slicing its buffers a microsecond per value). `indices`: a dictionary's row → value (-1: null)."""
    _, offsets, data = values.buffers()
    width = np.int64 if pa.types.is_large_string(values.type) else np.int32
    bounds = np.frombuffer(offsets, dtype=width)[values.offset : values.offset + len(values) + 1]
    valid = values.is_valid().to_numpy(zero_copy_only=False) if values.null_count else None
    text = memoryview(data) if data is not None else memoryview(b"")
    return _Column(name, "strings", bounds, valid=valid, indices=indices, data=text)


def _column(name: str, column: pa.Array) -> _Column:
    if _is_number(column.type) and not pa.types.is_float16(column.type):
        if column.null_count:
            valid = column.is_valid().to_numpy(zero_copy_only=False)
            values = column.fill_null(False if pa.types.is_boolean(column.type) else 0)
            return _Column(name, "numpy", values.to_numpy(zero_copy_only=False), valid=valid)
        return _Column(name, "numpy", column.to_numpy(zero_copy_only=False))
    if _is_text(column.type) and _has_offsets(column):
        return _strings(name, column, None)
    if pa.types.is_dictionary(column.type) and _is_text(column.type.value_type):
        if column.dictionary.null_count == 0 and _has_offsets(column.dictionary):
            indices = column.indices
            if indices.null_count:
                indices = pc.fill_null(indices, -1)
            return _strings(name, column.dictionary, indices.to_numpy(zero_copy_only=False))
    return _Column(name, "arrow", column)


class RowColumns:
    """The rows of one decoded metadata table, fetched by position as dicts (`table.to_pylist()` values).

    Args:
        table: one chunk per column (string columns may be dictionary-encoded); its buffers are shared.
    """

    def __init__(self, table: pa.Table) -> None:
        self.num_rows = table.num_rows
        self._columns = [
            _column(name, column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column)
            for name, column in zip(table.column_names, table.columns, strict=True)
        ]
        self._getters = [(column.name, _getter(column)) for column in self._columns]

    def row(self, at: int) -> dict[str, Any]:
        """The row at position `at`, as a dict of Python values (what `rows` gives for one)."""
        return {name: get(at) for name, get in self._getters}

    def rows(self, positions: np.ndarray) -> list[dict[str, Any]]:
        """The rows at `positions` (any order, repeats allowed), as dicts of Python values."""
        positions = np.asarray(positions, dtype=np.int64)
        if len(positions) == 1:  # most shards hold one of a query's hits: no arrays to build
            return [self.row(int(positions[0]))]
        names, columns = [], []
        for column in self._columns:
            names.append(column.name)
            columns.append(_values(column, positions))
        return [dict(zip(names, values, strict=True)) for values in zip(*columns, strict=True)]


def _values(column: _Column, positions: np.ndarray) -> list[Any]:
    if column.kind == "numpy":
        values = column.values[positions].tolist()
        if column.valid is not None:
            valid = column.valid[positions].tolist()
            values = [v if ok else None for v, ok in zip(values, valid, strict=True)]
        return values
    if column.kind == "strings":
        return _texts(column, positions)
    return column.values.take(pa.array(positions, type=pa.int64())).to_pylist()


def _getter(column: _Column) -> Callable[[int], Any]:
    """A function of a row position giving that row's value of `column` (as `_values` gives it)."""
    if column.kind == "numpy":
        values, valid = column.values, column.valid
        if valid is None:
            return values.item  # type: ignore[no-any-return]  # a Python scalar, no NumPy scalar between
        return lambda at: values.item(at) if valid[at] else None
    if column.kind == "strings":
        offsets, indices, valid, data = column.values, column.indices, column.valid, column.data
        assert data is not None
        if len(offsets) < 2:  # no values at all (a dictionary of a column that is all null)
            return lambda at: None

        def text(at: int) -> str | None:
            where = at if indices is None else int(indices[at])
            if where < 0 or (valid is not None and not valid[where]):
                return None
            return str(data[int(offsets[where]) : int(offsets[where + 1])], "utf-8")

        return text
    arrow = column.values
    return lambda at: arrow[at].as_py()


def _texts(column: _Column, positions: np.ndarray) -> list[str | None]:
    assert column.data is not None
    at = positions if column.indices is None else column.indices[positions]
    if len(column.values) < 2:  # no values at all (a dictionary of a column that is all null)
        return [None] * len(at)
    present = at >= 0
    if column.valid is not None:
        present &= column.valid[np.maximum(at, 0)]
    where = np.maximum(at, 0)
    starts, ends = column.values[where].tolist(), column.values[where + 1].tolist()
    data = column.data
    return [
        str(data[a:b], "utf-8") if ok else None
        for a, b, ok in zip(starts, ends, present.tolist(), strict=True)
    ]
