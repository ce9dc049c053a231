"""A shard's metadata as column arrays in memory, from which a search takes its hits' rows.

A search needs a few dozen rows of a table of up to millions. Reading them from the Parquet file costs
milliseconds (a row group is decompressed and decoded for each), and even a `take` from an Arrow table
costs tens of microseconds per column in dispatch. Here the decoded table's columns are kept as NumPy
views (numbers and booleans: zero-copy where there are no nulls) and dictionary indices into each string
column's distinct values (a file's path, root and digest repeat on each of its segments), so fetching
rows is NumPy indexing plus one small `take` per string column.
"""

from __future__ import annotations

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

    def rows(self, positions: np.ndarray) -> list[dict[str, Any]]:
        """The rows at `positions` (any order, repeats allowed), as dicts of Python values."""
        positions = np.asarray(positions, dtype=np.int64)
        if len(positions) == 1:  # most shards hold one of a query's hits: no arrays to build
            at = int(positions[0])
            return [{column.name: _value(column, at) for column in self._columns}]
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


def _value(column: _Column, at: int) -> Any:
    """One row's value of a column (as `_values` gives it)."""
    if column.kind == "numpy":
        return None if column.valid is not None and not column.valid[at] else column.values[at].item()
    if column.kind == "strings":
        assert column.data is not None
        where = at if column.indices is None else int(column.indices[at])
        if where < 0 or len(column.values) < 2 or (column.valid is not None and not column.valid[where]):
            return None
        return str(column.data[int(column.values[where]) : int(column.values[where + 1])], "utf-8")
    return column.values[at].as_py()


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
