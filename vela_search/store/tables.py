"""Arrow tables of the index: the files table, tombstones and per-segment metadata rows."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from . import fsio

FILES_SCHEMA = pa.schema(
    [
        pa.field("path", pa.string(), nullable=False),
        pa.field("size", pa.int64()),
        pa.field("mtime_ns", pa.int64()),
        pa.field("sha256", pa.string()),
        pa.field("duration_s", pa.float64()),
        pa.field("status", pa.string(), nullable=False),
        pa.field("error", pa.string()),
        pa.field("segments", pa.int32()),
        pa.field("root", pa.string()),
    ]
)
FILE_STATUSES = ("indexed", "failed", "duplicate")

ID_COLUMN = "id"
# Small row groups let a search read only the metadata rows of its hits.
ROW_GROUP_SIZE = 4096


def write_parquet(path: Path, table: pa.Table) -> None:
    """Write `table` to `path` atomically (temporary name, fsync, rename)."""
    with fsio.atomic_file(path) as f:
        pq.write_table(table, f, row_group_size=ROW_GROUP_SIZE, compression="zstd")


def empty_files() -> pa.Table:
    """A files table with no rows."""
    return FILES_SCHEMA.empty_table()


def to_files_table(data: pa.Table | Iterable[Mapping[str, Any]]) -> pa.Table:
    """Validate files rows (an Arrow table or dicts) into FILES_SCHEMA; the last row of a path wins.

    Raises:
        ValueError: unknown columns, a missing path or an unknown status.
    """
    known = set(FILES_SCHEMA.names)
    if isinstance(data, pa.Table):
        extra = set(data.column_names) - known
        if extra:
            raise ValueError(f"unknown files columns: {', '.join(sorted(extra))}")
        n = data.num_rows
        columns = [
            data[f.name].cast(f.type) if f.name in data.column_names else pa.nulls(n, f.type)
            for f in FILES_SCHEMA
        ]
        table = pa.Table.from_arrays(columns, schema=FILES_SCHEMA)
    else:
        rows = [dict(r) for r in data]
        extra = set().union(*(r.keys() for r in rows)) - known if rows else set()
        if extra:
            raise ValueError(f"unknown files columns: {', '.join(sorted(extra))}")
        table = pa.Table.from_pylist(rows, schema=FILES_SCHEMA)
    if table["path"].null_count:
        raise ValueError("every files row needs a path")
    bad = pc.invert(pc.is_in(table["status"], value_set=pa.array(FILE_STATUSES))).to_numpy(
        zero_copy_only=False
    )
    if bad.any():
        status = table["status"][int(np.flatnonzero(bad)[0])].as_py()
        raise ValueError(f"files status must be one of {', '.join(FILE_STATUSES)}, not {status!r}")
    last = {p: i for i, p in enumerate(table["path"].to_pylist())}
    if len(last) < table.num_rows:
        table = table.take(sorted(last.values()))
    return table


def upsert_files(current: pa.Table, new: pa.Table) -> pa.Table:
    """Rows of `current` whose path is not in `new`, followed by `new`."""
    return pa.concat_tables([drop_files(current, new["path"]), new])


def drop_files(current: pa.Table, paths: pa.Array | pa.ChunkedArray | Iterable[str]) -> pa.Table:
    """`current` without the rows of `paths`."""
    if not isinstance(paths, (pa.Array, pa.ChunkedArray)):
        paths = pa.array(list(paths), type=pa.string())
    if isinstance(paths, pa.ChunkedArray):
        paths = paths.combine_chunks()
    return current.filter(pc.invert(pc.is_in(current["path"], value_set=paths)))


def read_files(path: Path | None) -> pa.Table:
    """Read a files table (empty when the manifest names none)."""
    if path is None:
        return empty_files()
    return pq.read_table(path).cast(FILES_SCHEMA)


def write_ids(path: Path, ids: np.ndarray) -> None:
    """Write sorted int64 ids as a one-column Parquet table."""
    write_parquet(path, pa.table({ID_COLUMN: pa.array(ids, type=pa.int64())}))


def read_ids(source: Path | pa.NativeFile | None) -> np.ndarray:
    """Read a one-column id table (empty when the manifest names none)."""
    if source is None:
        return np.empty(0, dtype=np.int64)
    column = pq.ParquetFile(source).read(columns=[ID_COLUMN])[ID_COLUMN]
    return column.to_numpy().astype(np.int64, copy=False)


def metadata_table(rows: list[Mapping[str, Any]], ids: np.ndarray) -> pa.Table:
    """Build a shard's metadata table: the `id` column followed by the caller's columns.

    Raises:
        ValueError: a row uses the reserved `id` column or values that cannot form a column.
    """
    if any(ID_COLUMN in r for r in rows):
        raise ValueError(f"metadata rows may not contain the reserved column {ID_COLUMN!r}")
    try:
        user = pa.Table.from_pylist([dict(r) for r in rows])
    except (pa.ArrowException, TypeError, ValueError) as e:
        raise ValueError(f"metadata rows cannot be stored as Parquet columns: {e}") from e
    id_array = pa.array(ids, type=pa.int64())
    if user.num_columns == 0:
        return pa.table({ID_COLUMN: id_array})
    return user.add_column(0, ID_COLUMN, id_array)


def unify_schemas(schemas: list[pa.Schema]) -> pa.Schema:
    """Merge metadata schemas of batches (missing columns become null, int widens to float).

    Raises:
        ValueError: a column has incompatible types in two batches.
    """
    try:
        return pa.unify_schemas(schemas, promote_options="permissive")
    except (pa.ArrowException, TypeError) as e:
        raise ValueError(f"metadata rows do not match earlier rows: {e}") from e


def concat_metadata(tables: list[pa.Table]) -> pa.Table:
    """Concatenate metadata tables of possibly different (compatible) schemas."""
    if len(tables) == 1:
        return tables[0]
    return pa.concat_tables(tables, promote_options="permissive")
