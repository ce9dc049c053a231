"""Shards: immutable pairs of a FAISS index and a Parquet table of one metadata row per vector."""

from __future__ import annotations

import fnmatch
import re
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from . import faiss_ops, fsio, gpu, layout
from .integrity import check_relpath, damaged, read_verified, verify_file
from .row_columns import RowColumns
from .tables import ID_COLUMN, ROW_GROUP_SIZE, first_line, parse_parquet, read_parquet

# Rows decoded from a shard at a time while encoding its codes in memory (bounds the float32 copy).
_ENCODE_ROWS = 4096


def write_shard(root: Path, number: int, index: Any, metadata: pa.Table) -> tuple[dict, dict[str, str]]:
    """Write shard `number` (index and metadata, each atomically).

    Row i of `metadata` describes vector i of `index`; its `id` column holds the global ids.

    Returns:
        The shard's manifest entry, and the checksums of its two files by relative path.
    """
    index_rel, meta_rel = layout.shard_files(number)
    with fsio.atomic_file(root / index_rel) as f:
        faiss_ops.write(index, f)
    index_sum = f.checksum
    with fsio.atomic_file(root / meta_rel) as f:
        pq.write_table(metadata, f, row_group_size=ROW_GROUP_SIZE, compression="zstd")
    meta_sum = f.checksum
    ids = metadata[ID_COLUMN]
    entry = {
        "number": number,
        "index": index_rel,
        "meta": meta_rel,
        "count": metadata.num_rows,
        "min_id": int(pc.min(ids).as_py()),
        "max_id": int(pc.max(ids).as_py()),
    }
    return entry, {index_rel: index_sum, meta_rel: meta_sum}


def _glob_mask(values: pa.Array, pattern: re.Pattern[str]) -> np.ndarray:
    # Match each distinct path once: a file has many segments, so paths repeat a lot.
    encoded = pc.dictionary_encode(values)
    if isinstance(encoded, pa.ChunkedArray):
        encoded = encoded.combine_chunks()
    hits = np.array([p is not None and bool(pattern.match(p)) for p in encoded.dictionary.to_pylist()])
    hits = np.append(hits, False)  # slot for null entries
    indices = encoded.indices.fill_null(len(hits) - 1).to_numpy(zero_copy_only=False)
    return hits[indices]


def compile_glob(glob: str) -> re.Pattern[str]:
    """An fnmatch-style pattern (`*`, `?`, `[...]`; `*` also matches `/`) as a compiled regex."""
    return re.compile(fnmatch.translate(glob))


class ShardReader:
    """Read access to one shard of a snapshot.

    The metadata file is read whole into memory, checked against the manifest's checksum and parsed.
    The FAISS file is memory-mapped where FAISS can map its type (flat and scalar-quantizer shards such
    as the default SQfp16, on Linux): its vectors stay on disk and only the pages a search touches are
    read, into the operating system's cache. Other types are read whole, checked and parsed. Either way
    every file is closed at once (a mapping needs no open file): a reader holds no open files, however
    many shards there are. `load()` opens both files now (a snapshot does so when it opens: a mapping,
    like a copy in memory, keeps a file's data after a later commit deletes it); otherwise each file
    is opened on first use (a writer's own generation, which nobody else removes).

    A mapped file's structure is checked when it opens; its checksum when `index(verify=True)` asks for
    it, streaming the file without keeping it (see docs/format.md, "Checksums and paths").
    """

    def __init__(self, root: Path, entry: dict, dim: int, checksums: dict[str, str] | None = None) -> None:
        self.entry = entry
        self.count = int(entry["count"])
        self._root = Path(root)
        self._dim = dim
        self._checksums = checksums or {}
        self._lock = threading.RLock()
        self._parquet: pq.ParquetFile | None = None
        self._table: pa.Table | None = None  # the decoded metadata, once `load` has read it
        self._row_columns: RowColumns | None = None  # the same, as arrays that rows are taken from
        self._schema: pa.Schema | None = None  # the stored schema of `_table` (strings, not dictionaries)
        self._ids: np.ndarray | None = None
        self._index: Any = None
        self._verified = False  # the FAISS file's checksum has been checked
        self._search_index: Any = None
        self._rows_searchable = False  # the search index is the CPU one and flat: see `search_rows`
        self._flat_rows: faiss_ops.FlatRows | None = None  # see `flat_rows`
        self._paths: tuple[pa.Array | None, pa.ListArray | None] | None = None
        self._numbers: dict[str, np.ndarray | None] = {}
        self._users = 1  # snapshots sharing this reader (see `share`)

    @property
    def key(self) -> tuple:
        """What identifies the shard's immutable files: readers with equal keys hold the same data."""
        files = [self.entry.get(name) for name in ("index", "meta", "codes")]
        return (*files, self.count, *(self._checksums.get(f) for f in files if f))

    def share(self) -> ShardReader:
        """This reader, for one more snapshot (each user calls `close` once; the last releases it)."""
        with self._lock:
            self._users += 1
        return self

    def load(self, *, vectors: bool = True) -> ShardReader:
        """Read, check and decode the metadata file into memory (and, with `vectors`, open the FAISS file)
        now: searches then take hits' rows from memory, never from the file (see `metadata_table`).

        Raises:
            IndexDamagedError: a file is missing, corrupted or unreadable (the message names it).
        """
        self.metadata_table()
        _ = self.ids  # checks the ids against the manifest's range
        if vectors:
            self.index()
        return self

    def close(self) -> None:
        """Release the loaded data (and a FAISS file's mapping) once no snapshot shares the reader."""
        with self._lock:
            self._users -= 1
            if self._users > 0:
                return
            self._index = self._search_index = self._parquet = self._table = None
            self._flat_rows = None
            self._row_columns = None
            self._paths, self._numbers = None, {}
            self._verified = False

    @property
    def mapped_bytes(self) -> int:
        """Size of the FAISS file when it is open memory-mapped and not yet checksummed, else 0."""
        with self._lock:
            if self._index is None or self._verified:
                return 0
            try:
                return (self._root / self.entry["index"]).stat().st_size
            except OSError:
                return 0

    def _read(self, relpath: str) -> bytes:
        return read_verified(self._root, relpath, self._checksums.get(relpath))

    @property
    def parquet(self) -> pq.ParquetFile:
        """The metadata Parquet file."""
        with self._lock:
            if self._parquet is None:
                rel = self.entry["meta"]
                parquet = parse_parquet(self._root, rel, self._read(rel))
                if parquet.metadata.num_rows != self.count:
                    raise damaged(
                        self._root,
                        rel,
                        f"it has {parquet.metadata.num_rows} rows, the manifest says {self.count}",
                    )
                self._parquet = parquet
            return self._parquet

    @property
    def schema(self) -> pa.Schema:
        """The metadata table's schema, as stored."""
        with self._lock:
            if self._schema is not None:
                return self._schema
            return self.parquet.schema_arrow

    def metadata_table(self) -> pa.Table:
        """The whole metadata table decoded in memory, read once per reader (and shared, like the reader,
        by the snapshots that keep the shard): one chunk, string columns dictionary-encoded (a file's
        path, root and digest repeat on each of its segments); hits' rows are taken from its column arrays
        (`RowColumns`), not read from the file.

        Raises:
            IndexDamagedError: the file is missing, corrupted or unreadable.
        """
        with self._lock:
            if self._table is None:
                parquet = self.parquet
                table = read_parquet(self._root, self.entry["meta"], parquet).combine_chunks()
                for i, field in enumerate(table.schema):
                    if pa.types.is_string(field.type) or pa.types.is_large_string(field.type):
                        table = table.set_column(i, field.name, pc.dictionary_encode(table.column(i)))
                self._table, self._row_columns = table, RowColumns(table)
                self._schema = parquet.schema_arrow
                self._parquet = None  # the decoded table holds everything: drop the file's bytes
            return self._table

    def _read_columns(self, columns: list[str] | None = None) -> pa.Table:
        with self._lock:
            table = self._table
        if table is None:  # not loaded (a writer's reader): read only the columns asked for
            return read_parquet(self._root, self.entry["meta"], self.parquet, columns=columns)
        schema = self.schema if columns is None else pa.schema([self.schema.field(c) for c in columns])
        return (table if columns is None else table.select(columns)).cast(schema)

    @property
    def ids(self) -> np.ndarray:
        """Global ids of the shard's rows, in row order."""
        with self._lock:
            if self._ids is None:
                column = self._read_columns(columns=[ID_COLUMN])[ID_COLUMN]
                ids = column.to_numpy().astype(np.int64, copy=False)
                self._check_id_range(ids)
                self._ids = ids
            return self._ids

    def _check_id_range(self, ids: np.ndarray) -> None:
        """Refuse a shard whose ids disagree with the manifest's `min_id`/`max_id`: deletions are looked
        up by that range, so a wrong one would bring deleted rows back."""
        if len(ids) == 0:
            return
        lo, hi = int(ids.min()), int(ids.max())
        if (lo, hi) != (int(self.entry["min_id"]), int(self.entry["max_id"])):
            raise damaged(
                self._root,
                self.entry["meta"],
                f"its ids run from {lo} to {hi}, the manifest says {self.entry['min_id']} to "
                f"{self.entry['max_id']}",
            )

    def index(self, *, verify: bool = False) -> Any:
        """The shard's FAISS index on the CPU, memory-mapped where FAISS can map its type.

        Args:
            verify: also check the file against its checksum (once per reader), reading it from disk a
                chunk at a time. Files read whole are always checked; a mapped file only with `verify`,
                and not once a later commit has deleted it (its mapping passed the structure check).
                Use it before copying vectors into new files, so damage is never re-checksummed.

        Raises:
            IndexDamagedError: the file is missing, truncated, not a FAISS index, holds another number
                of vectors or dimension than the manifest says, or (reading it whole, or with `verify`)
                does not match its checksum.
        """
        with self._lock:
            rel = self.entry["index"]
            if self._index is None:
                check_relpath(rel, where=layout.MANIFEST)
                if faiss_ops.mappable(self._root / rel):
                    index = faiss_ops.read_mapped(self._root, rel)
                else:
                    index = faiss_ops.read_bytes(self._root, rel, self._read(rel))
                    self._verified = True
                if int(index.ntotal) != self.count or int(index.d) != self._dim:
                    raise damaged(
                        self._root,
                        rel,
                        f"it holds {index.ntotal} vectors of dim {index.d}, the manifest says "
                        f"{self.count} of dim {self._dim}",
                    )
                self._index = index
            if verify and not self._verified:
                verify_file(self._root, rel, self._checksums.get(rel), missing_ok=True)
                self._verified = True
            return self._index

    def codes_index(self) -> Any:
        """The shard's compressed candidate codes (automatic indexes that outgrew exact search), read now.

        Raises:
            IndexDamagedError: the codes file is missing, corrupted, or holds another row count.
        """
        rel = self.entry["codes"]
        index = faiss_ops.read_bytes(self._root, rel, self._read(rel))
        rows = int(self.entry.get("codes_rows", self.count))  # a graph of uncovered rows holds only those
        if int(index.ntotal) != rows or int(index.d) != self._dim:
            raise damaged(
                self._root,
                rel,
                f"it holds {index.ntotal} codes of dim {index.d}, the manifest says {rows} of "
                f"dim {self._dim}",
            )
        return index

    def memory_codes(self, template: Any) -> Any:
        """The shard's vectors encoded in memory into a clone of the trained, empty codes `template`, for
        a shard too small to have a codes file: a snapshot then searches it through the codes like the
        others instead of scanning it exactly. Not kept: the snapshot merges it into its codes index,
        which a refreshed snapshot copies (each clone would also hold a copy of the template's coarse
        quantizer, 16 MB for 1,024 lists of 4,096 dims behind RaBitQ codes).

        Raises:
            IndexDamagedError: the shard's FAISS file is missing or damaged.
        """
        index, ids = faiss_ops.clone(template), self.ids
        for start in range(0, self.count, _ENCODE_ROWS):
            rows = np.arange(start, min(start + _ENCODE_ROWS, self.count))
            index.add_with_ids(faiss_ops.reconstruct_rows(self.index(), rows), ids[rows])
        return index

    def search_index(self) -> Any:
        """The index searches use: a GPU copy, made once, where FAISS has GPUs, else the CPU index."""
        with self._lock:
            if self._search_index is None:
                cpu = self.index()
                self._search_index = gpu.to_gpu(cpu)
                self._rows_searchable = self._search_index is cpu and faiss_ops.is_flat(cpu)
            return self._search_index

    def search(
        self, queries: np.ndarray, k: int, allowed: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-k over the allowed rows: (scores, global ids), id -1 where there are fewer results."""
        index, cpu = self.search_index(), self.index()
        if index is cpu:
            scores, positions = faiss_ops.search(cpu, queries, k, allowed)
        else:  # a GPU copy, which may ignore selectors: see `gpu.search`
            scores, positions = gpu.search(index, cpu, queries, k, allowed)
        return scores, self._global_ids(positions)

    def search_rows(self, queries: np.ndarray, k: int, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Top-k among the rows at positions `rows` (unique): (scores, global ids), as `search` with
        those rows allowed, on the short path of a flat CPU index (a re-rank's per-shard step)."""
        index = self.search_index()
        if not self._rows_searchable:
            allowed = np.zeros(self.count, dtype=bool)
            allowed[rows] = True
            return self.search(queries, k, allowed)
        scores, positions = faiss_ops.search_rows(index, queries, k, rows)
        return scores, self._global_ids(positions)

    def flat_rows(self) -> faiss_ops.FlatRows | None:
        """The stored rows as a view that a re-rank gathers from and scores in one FAISS call with other
        shards' rows (`faiss_ops.flat_rows`), where searches run on the CPU index and its kind allows;
        else None. The view lives as long as the reader stays open."""
        with self._lock:
            index = self.search_index()
            if self._flat_rows is None and self._rows_searchable:
                self._flat_rows = faiss_ops.flat_rows(index)
            return self._flat_rows

    def _global_ids(self, positions: np.ndarray) -> np.ndarray:
        """The global ids of row positions (-1 stays -1: no result)."""
        return np.where(positions >= 0, self.ids[np.maximum(positions, 0)], -1)

    def vectors(self) -> np.ndarray:
        """All stored vectors, decoded, in row order (the file's checksum is checked first)."""
        return faiss_ops.reconstruct_all(self.index(verify=True))

    def metadata(self) -> pa.Table:
        """The whole metadata table."""
        return self._read_columns()

    def columns(self, names: list[str]) -> pa.Table | None:
        """The given metadata columns, or None when the shard lacks one of them."""
        if not set(names) <= set(self.schema.names):
            return None
        return self._read_columns(columns=names)

    def path_mask(self, pattern: re.Pattern[str]) -> np.ndarray:
        """Rows whose `path` (or any entry of a `paths` list) matches `pattern`."""
        with self._lock:
            if self._paths is None:
                names = set(self.schema.names)
                wanted = [c for c in ("path", "paths") if c in names]
                table = self._read_columns(columns=wanted) if wanted else None
                path = table["path"].combine_chunks() if "path" in wanted else None
                paths = table["paths"].combine_chunks() if "paths" in wanted else None
                self._paths = (path, paths)
            path, paths = self._paths
        mask = np.zeros(self.count, dtype=bool)
        if path is not None:
            mask |= _glob_mask(path, pattern)
        if paths is not None and pa.types.is_list(paths.type) and len(paths.values):
            parents = pc.list_parent_indices(paths).to_numpy()
            mask[parents[_glob_mask(pc.list_flatten(paths), pattern)]] = True
        return mask

    def path_in(self, paths: frozenset[str]) -> np.ndarray:
        """Rows whose stored `path` is one of `paths` (exactly)."""
        self.path_mask(re.compile(r"(?!)"))  # loads the path columns once
        path = self._paths[0] if self._paths is not None else None
        if path is None or not paths:
            return np.zeros(self.count, dtype=bool)
        if pa.types.is_dictionary(path.type):
            path = path.cast(path.type.value_type)
        found = pc.is_in(path, value_set=pa.array(sorted(paths), type=path.type))
        return found.fill_null(False).to_numpy(zero_copy_only=False)

    def range_mask(self, column: str, low: float | None, high: float | None) -> np.ndarray:
        """Rows whose numeric `column` lies in [low, high] (an open end where None); rows without a value,
        and every row of a shard without that column, are outside."""
        with self._lock:
            if column not in self._numbers:
                values = None
                if column in self.schema.names:
                    read = self._read_columns(columns=[column])[column]
                    if pa.types.is_integer(read.type) or pa.types.is_floating(read.type):
                        values = read.to_numpy(zero_copy_only=False).astype(np.float64)  # nulls become NaN
                self._numbers[column] = values
            values = self._numbers[column]
        if values is None:
            return np.zeros(self.count, dtype=bool)
        mask = ~np.isnan(values)
        if low is not None:
            mask &= values >= low
        if high is not None:
            mask &= values <= high
        return mask

    @property
    def loaded_rows(self) -> RowColumns | None:
        """The decoded table's rows once `metadata_table` has read it (None before: `rows` reads the
        file's row groups)."""
        return self._row_columns

    def rows(self, positions: np.ndarray) -> list[dict]:
        """Metadata rows at sorted, unique `positions`: from the decoded table once `load` has read it,
        else reading only the Parquet row groups that hold them."""
        with self._lock:
            table = self._table
        if table is not None:
            return self._row_columns.rows(positions)  # type: ignore[union-attr]
        parquet = self.parquet
        sizes = [parquet.metadata.row_group(i).num_rows for i in range(parquet.num_row_groups)]
        ends = np.cumsum(sizes)
        groups = np.searchsorted(ends, positions, side="right")
        wanted = np.unique(groups)
        try:
            table = parquet.read_row_groups(wanted.tolist(), use_threads=False)  # see tables.read_parquet
        except (pa.ArrowException, OSError, ValueError) as e:
            raise damaged(
                self._root, self.entry["meta"], f"its data cannot be decoded ({first_line(e)})"
            ) from None
        # Offset of each wanted group inside the concatenated table.
        starts = ends - np.asarray(sizes)
        local_base = np.cumsum(np.concatenate([[0], np.asarray(sizes)[wanted][:-1]]))
        base = dict(zip(wanted.tolist(), local_base.tolist(), strict=True))
        local = [
            base[g] + int(p - starts[g]) for g, p in zip(groups.tolist(), positions.tolist(), strict=True)
        ]
        return table.take(pa.array(local, type=pa.int64())).to_pylist()
