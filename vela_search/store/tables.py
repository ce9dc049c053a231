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
from .integrity import damaged, read_verified

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
_STATUS_VALUES = pa.array(FILE_STATUSES, type=pa.string())

ID_COLUMN = "id"
# Small row groups let a search read only the metadata rows of its hits.
ROW_GROUP_SIZE = 4096


def write_parquet(path: Path, table: pa.Table) -> str:
    """Write `table` to `path` atomically (temporary name, fsync, rename); returns its checksum."""
    with fsio.atomic_file(path) as f:
        pq.write_table(table, f, row_group_size=ROW_GROUP_SIZE, compression="zstd")
    return f.checksum


def parse_parquet(root: Path, relpath: str, data: bytes) -> pq.ParquetFile:
    """A Parquet file parsed from the bytes of index file `relpath`.

    Raises:
        IndexDamagedError: the bytes are not a readable Parquet file.
    """
    try:
        return pq.ParquetFile(pa.BufferReader(data))
    except (pa.ArrowException, OSError, ValueError) as e:
        raise damaged(root, relpath, f"it is not a readable Parquet file ({first_line(e)})") from None


def read_parquet(root: Path, relpath: str, parquet: pq.ParquetFile, **kwargs: Any) -> pa.Table:
    """`parquet.read(**kwargs)`, with damage inside the file reported as damage of `relpath`.

    Read on the calling thread (``use_threads=False``): a threaded read starts Arrow's global CPU thread
    pool, whose worker threads (``std::thread``) can still be joinable when the process exits; Arrow's pool
    is then destroyed among the static destructors and the C++ runtime aborts the finished command with
    ``terminate called without an active exception`` (SIGABRT, exit -6). Index tables are small; the pool
    gained nothing.
    """
    kwargs.setdefault("use_threads", False)
    try:
        return parquet.read(**kwargs)
    except (pa.ArrowException, OSError, ValueError) as e:
        raise damaged(root, relpath, f"its data cannot be decoded ({first_line(e)})") from None


def first_line(error: Exception) -> str:
    """The first line of an error's message (parsers' messages can run over several lines)."""
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__


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
    bad = pc.invert(pc.is_in(table["status"], value_set=_STATUS_VALUES)).to_numpy(zero_copy_only=False)
    if bad.any():
        status = table["status"][int(np.flatnonzero(bad)[0])].as_py()
        raise ValueError(f"files status must be one of {', '.join(FILE_STATUSES)}, not {status!r}")
    last = {p: i for i, p in enumerate(table["path"].to_pylist())}
    if len(last) < table.num_rows:
        table = table.take(sorted(last.values()))
    return table


def drop_files(current: pa.Table, paths: pa.Array | pa.ChunkedArray | Iterable[str]) -> pa.Table:
    """`current` without the rows of `paths`."""
    if not isinstance(paths, (pa.Array, pa.ChunkedArray)):
        paths = pa.array(list(paths), type=pa.string())
    if isinstance(paths, pa.ChunkedArray):
        paths = paths.combine_chunks()
    return current.filter(pc.invert(pc.is_in(current["path"], value_set=paths)))


def read_files(root: Path, relpath: str | None, checksum: str | None = None) -> pa.Table:
    """Read and check the files table `relpath` of the index at `root` (empty when the manifest names none).

    Raises:
        IndexDamagedError: the file is missing, corrupted or not a files table.
    """
    if relpath is None:
        return empty_files()
    return files_from_bytes(root, relpath, read_verified(root, relpath, checksum))


def files_from_bytes(root: Path, relpath: str, data: bytes) -> pa.Table:
    """Parse a files table from the bytes of index file `relpath` (see `read_files`)."""
    table = read_parquet(root, relpath, parse_parquet(root, relpath, data))
    try:
        return table.cast(FILES_SCHEMA)
    except (pa.ArrowException, ValueError) as e:
        raise damaged(root, relpath, f"it is not a files table ({' '.join(str(e).split())[:200]})") from None


def write_ids(path: Path, ids: np.ndarray) -> str:
    """Write sorted int64 ids as a one-column Parquet table; returns its checksum."""
    return write_parquet(path, pa.table({ID_COLUMN: pa.array(ids, type=pa.int64())}))


def read_ids(root: Path, relpath: str | None, checksum: str | None = None) -> np.ndarray:
    """Read and check a one-column id table (empty when the manifest names none).

    Raises:
        IndexDamagedError: the file is missing, corrupted or has no `id` column.
    """
    if relpath is None:
        return np.empty(0, dtype=np.int64)
    return ids_from_bytes(root, relpath, read_verified(root, relpath, checksum))


def ids_from_bytes(root: Path, relpath: str, data: bytes) -> np.ndarray:
    """Parse a one-column id table from the bytes of index file `relpath` (see `read_ids`)."""
    parquet = parse_parquet(root, relpath, data)
    if ID_COLUMN not in parquet.schema_arrow.names:
        raise damaged(root, relpath, f"it has no {ID_COLUMN!r} column")
    column = read_parquet(root, relpath, parquet, columns=[ID_COLUMN])[ID_COLUMN]
    try:
        return column.to_numpy().astype(np.int64, copy=False)
    except (pa.ArrowException, ValueError, TypeError) as e:
        raise damaged(root, relpath, f"its ids are not integers ({e})") from None


def metadata_table(
    rows: list[Mapping[str, Any]], ids: np.ndarray, *, like: pa.Schema | None = None
) -> pa.Table:
    """Build a shard's metadata table: the `id` column followed by the caller's columns.

    Args:
        rows: one dict per vector.
        ids: their ids.
        like: the schema of earlier rows (with `id`), tried first when the rows have exactly its columns:
            inferring types from Python values costs ~10x more, once per file when indexing.

    Raises:
        ValueError: a row uses the reserved `id` column or values that cannot form a column.
    """
    if any(ID_COLUMN in r for r in rows):
        raise ValueError(f"metadata rows may not contain the reserved column {ID_COLUMN!r}")
    user = None
    if like is not None and like.names and like.names[0] == ID_COLUMN:
        known = like.remove(0)
        if _rows_fit(rows, known):
            try:
                user = pa.Table.from_pylist([dict(r) for r in rows], schema=known)
            except (pa.ArrowException, TypeError, ValueError):
                user = None
    if user is None:  # new columns or other types than before: infer them, and let the caller unify
        try:
            user = pa.Table.from_pylist([dict(r) for r in rows])
        except (pa.ArrowException, TypeError, ValueError) as e:
            raise ValueError(f"metadata rows cannot be stored as Parquet columns: {e}") from e
    id_array = pa.array(ids, type=pa.int64())
    if user.num_columns == 0:
        return pa.table({ID_COLUMN: id_array})
    return user.add_column(0, ID_COLUMN, id_array)


def _python_types(field_type: pa.DataType) -> tuple[type, ...]:
    """Python value types that inference would give a type which unifies into `field_type` unchanged."""
    if pa.types.is_string(field_type):
        return (str,)
    if pa.types.is_boolean(field_type):
        return (bool,)
    if pa.types.is_int64(field_type):
        return (int,)
    if pa.types.is_float64(field_type):
        return (float, int)  # an int column widens to float64 anyway
    return ()


def _rows_fit(rows: list[Mapping[str, Any]], schema: pa.Schema) -> bool:
    """Whether every row has exactly `schema`'s columns, with values of exactly its types (or None).

    Checked by exact Python type because Arrow's conversion is lenient (it would store 2.5 in an int64
    column as 2, and True in a float64 column as 1.0).
    """
    accepted = {field.name: _python_types(field.type) for field in schema}
    for row in rows:
        if row.keys() != accepted.keys():
            return False
        for name, value in row.items():
            if value is not None and type(value) not in accepted[name]:
                return False
    return True


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
