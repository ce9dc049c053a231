"""Export an index's live vectors and metadata as plain Parquet, for vector databases and data tools.

Two files go into the target folder:

- ``segments.parquet``: one row per live segment (deleted segments are left out): ``id``, ``vector`` (a
  fixed-size list of ``dim`` float16 or float32 values) and the segment's metadata columns (``path``,
  ``start_s``, ``end_s``, ...), in id order of the shards;
- ``files.parquet``: the files table (one row per source file, with its status).

``export.json``, written last, names the generation, the files and their row counts: both files are
written aside and moved into place first, so a failed export leaves the earlier one as it was, and a folder
with an ``export.json`` holds two files of the generation it names.

Both carry, in the Parquet file's key-value metadata, the embedder fingerprint (JSON under
``vela_search.fingerprint``), the vector dimension, the metric and the index generation, so a reader can
tell which embedder must make its query vectors. The schema is plain Arrow: pyarrow, DuckDB, LanceDB,
Polars or pandas read the files as they are.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ..errors import StoreError
from . import fsio
from .index import AudioIndex
from .layout import TMP_PREFIX
from .tables import ID_COLUMN, unify_schemas

__all__ = [
    "EXPORT_FORMAT_VERSION",
    "EXPORT_MANIFEST",
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
# Written last, naming the generation and the files: present only when both files are of that generation.
EXPORT_MANIFEST = "export.json"
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
        out_dir: target folder (created if missing). Both files are written aside first and moved into
            place only when both are complete; ``export.json``, written last, names their generation.
        dtype: ``float16`` (the precision the default index stores, half the size) or ``float32``.

    Returns:
        An `ExportReport` (counts, paths, fingerprint).

    Raises:
        ValueError: an unknown dtype.
        IndexNotFoundError, IndexFormatError: the index cannot be opened.
        StoreError: the index type cannot return its stored vectors, or the export cannot be written
            (the target is a file, a read-only folder, a full disk): an earlier export is left as it was.
    """
    if dtype not in _ARROW_TYPES:
        raise ValueError(f"dtype must be float16 or float32, not {dtype!r}")
    if not isinstance(index, AudioIndex):
        with AudioIndex.open(index) as opened:
            return export_index(opened, out_dir, dtype=dtype)
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise StoreError(f"cannot export to {out}: it is a file, not a folder (give a folder with --to)")
    staging = out / f"{TMP_PREFIX}export-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    created = not out.exists()
    try:
        out.mkdir(parents=True, exist_ok=True)
        staging.mkdir()
        segments = _write_segments(index, staging / SEGMENTS_FILE, dtype)
        files = index.files()
        with fsio.atomic_file(staging / FILES_FILE) as f:
            pq.write_table(files.replace_schema_metadata(_file_metadata(index, dtype)), f, compression="zstd")
        _publish(out, staging, index, dtype, segments, files.num_rows)
    except OSError as e:
        if created:
            shutil.rmtree(out, ignore_errors=True)  # nothing of a failed export stays behind
        reason = (e.strerror or str(e)).lower()
        raise StoreError(
            f"cannot write the export to {out}: {reason}; an earlier export there is left as it was"
        ) from e
    finally:
        shutil.rmtree(staging, ignore_errors=True)
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


def _export_schema(index: AudioIndex, dtype: str) -> pa.Schema:
    """One schema for every shard (shards written at different times may have other metadata columns)."""
    shard_schemas = [s.schema for s in index.shard_readers()]
    vector_field = pa.field(VECTOR_COLUMN, pa.list_(_ARROW_TYPES[dtype], index.dim), nullable=False)
    if shard_schemas:
        columns = unify_schemas(shard_schemas)
        rest = columns.remove(columns.get_field_index(ID_COLUMN))
        schema = pa.schema([columns.field(ID_COLUMN), vector_field, *rest])
    else:
        schema = pa.schema([pa.field(ID_COLUMN, pa.int64()), vector_field])
    return schema.with_metadata(_file_metadata(index, dtype))


def _write_segments(index: AudioIndex, path: Path, dtype: str) -> int:
    """Write ``segments.parquet`` at ``path``; returns its rows."""
    schema = _export_schema(index, dtype)
    segments = 0
    with fsio.atomic_file(path) as f:
        with pq.ParquetWriter(f, schema, compression="zstd") as writer:
            for batch in _segment_batches(index, dtype):
                batch = batch.select([n for n in schema.names if n in batch.column_names])
                missing = [fld for fld in schema if fld.name not in batch.column_names]
                for fld in missing:
                    batch = batch.append_column(fld, pa.nulls(batch.num_rows, fld.type))
                writer.write_table(batch.select(schema.names).cast(schema), row_group_size=_ROW_GROUP_ROWS)
                segments += batch.num_rows
    return segments


def _publish(out: Path, staging: Path, index: AudioIndex, dtype: str, segments: int, files: int) -> None:
    """Move the finished files into place, then write ``export.json`` naming them, last.

    Until the new ``export.json`` is written, the folder has none: a reader that finds it knows both files
    are of the generation it names (a crash between the two renames leaves no ``export.json``).
    """
    with contextlib.suppress(FileNotFoundError):
        os.unlink(out / EXPORT_MANIFEST)
    fsio.fsync_dir(out)
    for name in (SEGMENTS_FILE, FILES_FILE):
        os.replace(staging / name, out / name)
    fsio.fsync_dir(out)
    fsio.write_json(
        out / EXPORT_MANIFEST,
        {
            "export_format": EXPORT_FORMAT_VERSION,
            "generation": index.generation,
            "fingerprint": dict(index.fingerprint),
            "dim": index.dim,
            "dtype": dtype,
            "files": {SEGMENTS_FILE: segments, FILES_FILE: files},
        },
    )
    fsio.fsync_dir(out)


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
