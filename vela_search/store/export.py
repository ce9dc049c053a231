"""Export an index's live vectors and metadata as plain Parquet, for vector databases and data tools.

Two files go into the target folder:

- ``segments.parquet``: one row per live segment (deleted segments are left out): ``id``, ``vector`` (a
  fixed-size list of ``dim`` float16 or float32 values) and the segment's metadata columns (``path``,
  ``start_s``, ``end_s``, ...), in id order of the shards;
- ``files.parquet``: the files table (one row per source file, with its status).

Both carry, in the Parquet file's key-value metadata, the embedder fingerprint (JSON under
``vela_search.fingerprint``), the vector dimension, the metric and the index generation, so a reader can
tell which embedder must make its query vectors. The schema is plain Arrow: pyarrow, DuckDB, LanceDB,
Polars or pandas read the files as they are.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from . import fsio
from .index import AudioIndex
from .tables import ID_COLUMN, unify_schemas

__all__ = [
    "EXPORT_FORMAT_VERSION",
    "FILES_FILE",
    "SEGMENTS_FILE",
    "VECTOR_COLUMN",
    "ExportReport",
    "export_index",
    "read_export_metadata",
]

EXPORT_FORMAT_VERSION = 1
SEGMENTS_FILE = "segments.parquet"
FILES_FILE = "files.parquet"
VECTOR_COLUMN = "vector"
_META_PREFIX = "vela_search."
# Rows per Parquet row group: a few MB of vectors at 4096 dims in fp16, readable in pieces.
_ROW_GROUP_ROWS = 1024

VectorDtype = Literal["float16", "float32"]
_ARROW_TYPES = {"float16": pa.float16(), "float32": pa.float32()}


@dataclass
class ExportReport:
    """What `export_index` wrote."""

    index_dir: str
    out_dir: str
    segments_file: str
    files_file: str
    segments: int
    files: int
    dim: int
    dtype: str
    generation: int
    fingerprint: dict

    def to_dict(self) -> dict:
        """The report as JSON-able data."""
        return asdict(self)


def _file_metadata(index: AudioIndex, dtype: str) -> dict[bytes, bytes]:
    facts = {
        "export_format": EXPORT_FORMAT_VERSION,
        "fingerprint": json.dumps(index.fingerprint, sort_keys=True),
        "dim": index.dim,
        "dtype": dtype,
        "metric": "inner_product",  # unit vectors: cosine similarity
        "generation": index.generation,
        "faiss_factory": index.factory,
    }
    return {f"{_META_PREFIX}{k}".encode(): str(v).encode() for k, v in facts.items()}


def _vector_array(vectors: np.ndarray, dim: int, dtype: str) -> pa.FixedSizeListArray:
    values = np.ascontiguousarray(vectors, dtype=np.dtype(dtype)).reshape(-1)
    return pa.FixedSizeListArray.from_arrays(pa.array(values, type=_ARROW_TYPES[dtype]), dim)


def _segment_batches(index: AudioIndex, dtype: str) -> Iterator[pa.Table]:
    """Per shard: its live rows with their vectors in the second column."""
    for rows, vectors in index.live_shards():
        if rows.num_rows == 0:
            continue
        yield rows.add_column(1, VECTOR_COLUMN, _vector_array(vectors, index.dim, dtype))


def export_index(
    index: AudioIndex | str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    dtype: VectorDtype = "float16",
) -> ExportReport:
    """Write the live vectors and the segment and file metadata of an index as Parquet files.

    Example:
        >>> report = export_index("indexes/default", "export/")  # doctest: +SKIP
        >>> import pyarrow.parquet as pq  # doctest: +SKIP
        >>> pq.read_table("export/segments.parquet").column("vector")  # doctest: +SKIP

    Args:
        index: an open snapshot, or the index directory (opened and closed here).
        out_dir: target folder (created if missing); ``segments.parquet`` and ``files.parquet`` in it are
            replaced, each atomically.
        dtype: ``float16`` (the precision the default index stores, half the size) or ``float32``.

    Returns:
        An `ExportReport` (counts, paths, fingerprint).

    Raises:
        ValueError: an unknown dtype.
        IndexNotFoundError, IndexFormatError: the index cannot be opened.
        StoreError: the index type cannot return its stored vectors.
    """
    if dtype not in _ARROW_TYPES:
        raise ValueError(f"dtype must be float16 or float32, not {dtype!r}")
    if not isinstance(index, AudioIndex):
        with AudioIndex.open(index) as opened:
            return export_index(opened, out_dir, dtype=dtype)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    metadata = _file_metadata(index, dtype)

    # Shards written at different times may have different metadata columns: one schema for all.
    shard_schemas = [s.parquet.schema_arrow for s in index.shard_readers()]
    vector_field = pa.field(VECTOR_COLUMN, pa.list_(_ARROW_TYPES[dtype], index.dim), nullable=False)
    if shard_schemas:
        columns = unify_schemas(shard_schemas)
        rest = columns.remove(columns.get_field_index(ID_COLUMN))
        schema = pa.schema([columns.field(ID_COLUMN), vector_field, *rest])
    else:
        schema = pa.schema([pa.field(ID_COLUMN, pa.int64()), vector_field])
    schema = schema.with_metadata(metadata)

    segments = 0
    with fsio.atomic_file(out / SEGMENTS_FILE) as f:
        with pq.ParquetWriter(f, schema, compression="zstd") as writer:
            for batch in _segment_batches(index, dtype):
                batch = batch.select([n for n in schema.names if n in batch.column_names])
                missing = [fld for fld in schema if fld.name not in batch.column_names]
                for fld in missing:
                    batch = batch.append_column(fld, pa.nulls(batch.num_rows, fld.type))
                writer.write_table(batch.select(schema.names).cast(schema), row_group_size=_ROW_GROUP_ROWS)
                segments += batch.num_rows

    files = index.files()
    with fsio.atomic_file(out / FILES_FILE) as f:
        pq.write_table(files.replace_schema_metadata(metadata), f, compression="zstd")

    return ExportReport(
        index_dir=str(index.root),
        out_dir=str(out),
        segments_file=str(out / SEGMENTS_FILE),
        files_file=str(out / FILES_FILE),
        segments=segments,
        files=files.num_rows,
        dim=index.dim,
        dtype=dtype,
        generation=index.generation,
        fingerprint=dict(index.fingerprint),
    )


def read_export_metadata(path: str | os.PathLike[str]) -> dict:
    """The vela-search facts stored in an exported Parquet file (fingerprint decoded from JSON).

    Returns:
        ``{"export_format": int, "fingerprint": dict, "dim": int, "dtype": str, "metric": str,
        "generation": int, "faiss_factory": str}``; empty when the file has none.
    """
    raw = pq.read_schema(path).metadata or {}
    prefix = _META_PREFIX.encode()
    facts = {k[len(prefix) :].decode(): v.decode() for k, v in raw.items() if k.startswith(prefix)}
    for key in ("export_format", "dim", "generation"):
        if key in facts:
            facts[key] = int(facts[key])
    if "fingerprint" in facts:
        facts["fingerprint"] = json.loads(facts["fingerprint"])
    return facts
