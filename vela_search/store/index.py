"""AudioIndex: a read-only snapshot of one generation of the on-disk index."""

from __future__ import annotations

import itertools
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from ..errors import EmptyIndexError, IndexNotFoundError, StoreError
from . import codes, faiss_ops, graph, layout, manifest, table_log
from .integrity import IndexDamagedError, device_errors, read_verified
from .lock import WriterLock
from .rerank import CodesSearcher, RowLocator, exact_top_k, merge_codes, merge_top_k
from .shards import ShardReader, compile_glob

if TYPE_CHECKING:
    from collections.abc import Collection, Iterable, Iterator, Mapping

    from .writer import IndexWriter

# A snapshot also checks its memory-mapped shard files against their checksums when it opens, while
# they total at most this many bytes (one streaming CRC pass: about 0.1 s). Beyond it, their structure is
# checked at open, and their checksums by `vela-search check` and by the writer before it copies
# vectors out of them (docs/format.md, "Checksums and paths").
VERIFY_AT_OPEN_BYTES = 256 << 20

# A filter that leaves at most this fraction of a compressed index's coded rows is answered by an exact
# scan of the matching rows only (cheaper than probing the codes, and exact); see docs/benchmarks.md,
# "Filtered search", for the measured cross-over.
FILTER_SCAN_FRACTION = 0.005

# Up to this many ids, `segment_rows` takes each row by itself from the decoded tables (a query's hits
# lie in different shards; grouping them by shard cost more NumPy calls than the rows themselves).
_FEW_ROWS = 64

# How many times open() re-reads the manifest when a commit removes files between reading it and
# opening the files it names.
_OPEN_ATTEMPTS = 50


@dataclass(frozen=True)
class RowFilter:
    """Which rows a search may return: a path pattern, numeric ranges, and files left out."""

    pattern: re.Pattern[str] | None = None
    ranges: Mapping[str, tuple[float | None, float | None]] | None = None
    exclude: frozenset[str] = frozenset()

    @property
    def empty(self) -> bool:
        """Whether it lets every (undeleted) row through."""
        return self.pattern is None and not self.ranges and not self.exclude


@dataclass(frozen=True)
class SearchHit:
    """One search result.

    Attributes:
        id: global segment id.
        score: inner product of query and stored vector (cosine for unit vectors).
        row: the segment's metadata row (its `id` plus the columns given to `IndexWriter.add`).
    """

    id: int
    score: float
    row: dict


def _refuse_orphaned_data(root: Path) -> None:
    """Refuse to start a new index in a folder that holds another index's data files but no manifest.

    The first commit of a new index garbage-collects every data file its manifest does not name, so
    starting one there would delete an index whose manifest.json was lost.

    Raises:
        StoreError: such files exist (the message says what to do).
    """
    found = layout.owned_files(root)
    if found:
        raise StoreError(
            f"{root} holds {len(found)} data file(s) of an index (e.g. {found[0]}) but no "
            f"{layout.MANIFEST}: its manifest was deleted or lost. Refusing to start a new index there, "
            f"which would delete them. Restore {layout.MANIFEST} (e.g. from a backup), or move the folder "
            "away (or choose another --index) to start afresh"
        )


def _pad(scores: np.ndarray, ids: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(q, k) arrays: results padded with -inf scores and -1 ids."""
    if ids.shape[1] >= k:
        return scores, ids
    extra = k - ids.shape[1]
    return (
        np.hstack([scores, np.full((len(ids), extra), -np.inf, np.float32)]),
        np.hstack([ids, np.full((len(ids), extra), -1, np.int64)]),
    )


def _codes_name(reader: ShardReader) -> str:
    """What a shard's codes are called in a merged codes index: its codes file, or (codes encoded in
    memory at open) its metadata file, which no other shard's ever has."""
    return str(reader.entry.get("codes") or f"{reader.entry['meta']}#memory")


def _reuse_or_read(
    root: Path, previous: AudioIndex | None, data: dict, kind: str, read: table_log.ReadBytes
) -> Any:
    """Table `kind` (files, deleted) of generation `data`: the previous snapshot's table with only the
    deltas committed since applied, when `data` extends that generation's table; else read whole."""
    if previous is not None:
        table = previous._files if kind == "files" else previous._deleted
        extended = table_log.extend(root, previous.manifest, table, data, kind, read)
        if extended is not None:
            return extended
    if kind == "files":
        return table_log.read_files(root, data, read)
    return table_log.read_deleted(root, data, read)


class AudioIndex:
    """A consistent, read-only snapshot of an index: one manifest and only the files it names.

    Later commits do not change an open snapshot (its files are opened when it opens: tables read into
    memory, shard vectors memory-mapped, every file closed; a mapping keeps a deleted file's data);
    reopen to see them.
    Use `AudioIndex.open`, `create` or `open_or_create` rather than the constructor.
    """

    def __init__(
        self,
        root: Path,
        data: dict,
        *,
        shards: bool = True,
        vectors: bool = True,
        previous: AudioIndex | None = None,
    ) -> None:
        self.root = Path(root)
        self.manifest = data
        self._lock = threading.Lock()
        self._opened = "vectors" if shards and vectors else "metadata" if shards else "none"
        self._closed = False
        if previous is not None and (
            previous._closed or previous.root != self.root or previous._opened != self._opened
        ):
            previous = None  # a closed snapshot has released its data: nothing to reuse
        # Every file is opened (read into memory or mapped, and checked) now and closed: the snapshot then
        # survives the commits that delete its files, and holds no open files however many shards there are.
        # Files the previous snapshot opened are immutable: its readers are shared, not read again.
        self._shards: list[ShardReader] = []
        try:
            if shards:
                self._open_shards(data, vectors, previous)
            # Each table is its base file with the deltas committed since applied (format version 2).
            self._files = _reuse_or_read(self.root, previous, data, "files", self._read_table)
            self._deleted = _reuse_or_read(self.root, previous, data, "deleted", self._read_table)
            self._deleted_masks: dict[int, np.ndarray | None] = {}
            self._locator: RowLocator | None = None
            self._live_ids: tuple[np.ndarray | None] | None = None  # cached mask of undeleted coded ids
            # Shards without codes (small ones) are searched exactly beside the merged codes, unless the
            # codes search them too: then each is encoded in memory with the trained template at open.
            self._uncoded = [i for i, e in enumerate(data["shards"]) if not e.get("codes")]
            self._codes: CodesSearcher | None = None
            self._template: tuple[str, Any] | None = None  # the trained codes template, read when needed
            self._graph: graph.GraphSearcher | None = None
            if shards and vectors and graph.is_graph(data):
                self._graph = self._open_graph(data, previous)
            elif shards and vectors and data.get("codes") and len(self._uncoded) < len(data["shards"]):
                self._codes = self._open_codes(data, previous)
                self._uncoded = []
        except BaseException:
            self.close()
            raise

    def _open_shards(self, data: dict, vectors: bool, previous: AudioIndex | None) -> None:
        checksums = data.get("checksums") or {}
        known = {reader.key: reader for reader in (previous._shards if previous is not None else [])}
        for entry in data["shards"]:
            reader = ShardReader(self.root, entry, int(data["dim"]), checksums)
            reused = known.get(reader.key)
            self._shards.append(reused.share() if reused is not None else reader.load(vectors=vectors))
        if vectors and sum(r.mapped_bytes for r in self._shards) <= VERIFY_AT_OPEN_BYTES:
            for reader in self._shards:
                reader.index(verify=True)

    def _open_codes(self, data: dict, previous: AudioIndex | None) -> CodesSearcher:
        """Every shard's codes merged into one candidate index: the codes files of the shards that have
        one, and the in-memory codes of those too small for one (see `ShardReader.memory_codes`), so no
        shard is scanned exactly. Built from the previous snapshot's index when it holds the same
        training: a copy with the codes of vanished shards removed and only the new shards' added."""
        parts = {_codes_name(s): s for s in self._shards}
        old = previous._codes if previous is not None else None
        # Re-tuning changes the probes and re-rank depth, not the codes: those are shared all the same.
        trained = (data["codes"]["trained"], data["codes"]["factory"])
        before = (previous.manifest.get("codes") or {}) if previous is not None else {}
        if (
            old is not None
            and previous is not None
            and (before.get("trained"), before.get("factory")) == trained
        ):
            if old.names == list(parts):
                return CodesSearcher(
                    old.index,
                    nprobe=int(data["codes"]["nprobe"]),
                    rerank_depth=int(data["codes"]["rerank"]),
                    names=old.names,
                )
            gone = [previous._shards_by_codes()[name] for name in old.names if name not in parts]
            kept = [name for name in old.names if name in parts]
            merged = faiss_ops.faiss().clone_index(old.index)
            if gone:
                merged.remove_ids(np.concatenate([reader.ids for reader in gone]))
            fresh = [name for name in parts if name not in set(kept)]
            index = merge_codes([merged, *(self._shard_codes(parts[name], data, previous) for name in fresh)])
            order = kept + fresh
        else:
            index = merge_codes([self._shard_codes(reader, data, previous) for reader in parts.values()])
            order = list(parts)
        return CodesSearcher(
            index,
            nprobe=int(data["codes"]["nprobe"]),
            rerank_depth=int(data["codes"]["rerank"]),
            names=order,
        )

    def _open_graph(self, data: dict, previous: AudioIndex | None) -> graph.GraphSearcher:
        """The main graph and the shards' graphs of uncovered rows (those a previous snapshot holds are
        shared, not read again). Shards past the main graph without a graph of their own are searched
        exactly, and the graphs never return their rows (nor rows that left the index)."""
        old = previous._graph if previous is not None else None
        known = dict(zip(old.names, old.graphs, strict=True)) if old is not None else {}
        covers = int(data["codes"]["covers_below"])
        main = data["codes"]["trained"]
        names, graphs = [main], [known.get(main) or graph.read_graph(self.root, data)]
        self._uncoded = []
        for i, shard in enumerate(self._shards):
            if shard.entry.get("codes"):
                name = shard.entry["codes"]
                names.append(name)
                graphs.append(known.get(name) or shard.codes_index())
            elif shard.count and int(shard.ids.max()) >= covers:
                self._uncoded.append(i)
        coded = [s for i, s in enumerate(self._shards) if i not in self._uncoded]
        base_mask = None
        if sum(int(g.ntotal) for g in graphs) != sum(s.count for s in coded):
            base_mask = np.zeros(int(data["next_id"]), dtype=bool)
            for shard in coded:
                base_mask[shard.ids] = True
        ef = int(data["codes"]["ef_search"])
        return graph.GraphSearcher(graphs, ef_search=ef, base_mask=base_mask, names=names)

    def _shards_by_codes(self) -> dict[str, ShardReader]:
        return {_codes_name(s): s for s in self._shards}

    def _shard_codes(self, reader: ShardReader, data: dict, previous: AudioIndex | None) -> Any:
        """A shard's codes, ready to merge: its codes file, or its vectors encoded in memory now."""
        if reader.entry.get("codes"):
            return reader.codes_index()
        trained = str(data["codes"]["trained"])
        if self._template is None and previous is not None and previous._template is not None:
            self._template = previous._template if previous._template[0] == trained else None
        if self._template is None:
            raw = self._read_table(trained)
            self._template = (trained, faiss_ops.read_bytes(self.root, trained, raw))
        return reader.memory_codes(self._template[1])

    def _readers(self, *, vectors: bool = False) -> list[ShardReader]:
        """The shard readers, refusing what this snapshot did not open."""
        if self._opened == "none" or (vectors and self._opened != "vectors"):
            need = "shards" if self._opened == "none" else "vectors"
            raise StoreError(f"this snapshot of {self.root} was opened without its {need}")
        return self._shards

    def _read_table(self, relpath: str) -> bytes:
        return read_verified(self.root, relpath, manifest.checksum(self.manifest, relpath))

    # ----- opening -----

    @classmethod
    def exists(cls, root: str | Path) -> bool:
        """Whether an index (a committed manifest) exists at `root`."""
        return (Path(root) / layout.MANIFEST).is_file()

    @classmethod
    def open(
        cls,
        root: str | Path,
        *,
        shards: bool = True,
        vectors: bool = True,
        previous: AudioIndex | None = None,
    ) -> AudioIndex:
        """Open the current generation of the index at `root`.

        Every file the snapshot needs is opened now and closed: tables are read and checked against the
        checksums the manifest records; shard vectors are memory-mapped where FAISS can map them (their
        structure checked, and their checksums while they total at most `VERIFY_AT_OPEN_BYTES`).

        Args:
            root: the index directory.
            shards: False opens only the manifest and the files and deleted tables (for a description of
                the index or the planning of a run); shard methods then raise `StoreError`.
            vectors: False leaves out the shards' FAISS files (metadata only); searches and vector
                methods then raise `StoreError`.
            previous: an open snapshot of the same index: the files of its generation that the new
                manifest still names (shards, codes, tables: immutable once written) are taken from it
                instead of read again, so opening costs what changed (see `refreshed`). It stays usable
                and is closed by its owner as usual.

        Raises:
            IndexNotFoundError: no index there.
            IndexFormatError: the manifest is unreadable.
            IndexDamagedError: a file it names is missing or damaged (the message names it).
        """
        root = Path(root)
        for _ in range(_OPEN_ATTEMPTS):
            data = manifest.read(root / layout.MANIFEST)
            if data is None:
                raise IndexNotFoundError(
                    f"no index at {root} (no {layout.MANIFEST}); build one with `vela-search index PATH`"
                )
            try:
                return cls(root, data, shards=shards, vectors=vectors, previous=previous)
            except IndexDamagedError:
                # A commit between reading the manifest and reading its files may have collected
                # them; a newer manifest then exists and is the snapshot to use.
                again = manifest.read(root / layout.MANIFEST)
                if again is not None and again["generation"] != data["generation"]:
                    continue
                raise
        raise StoreError(f"index {root} changed {_OPEN_ATTEMPTS} times while being opened; retry")

    def refreshed(self) -> AudioIndex:
        """The index's latest committed generation: this snapshot itself when none is newer, else a new
        snapshot that reads only what changed (`open` with ``previous=self``).

        Both snapshots stay usable; the caller closes this one when it has switched. Safe to call from a
        background thread while other threads search this snapshot.

        Raises:
            IndexNotFoundError, IndexFormatError, IndexDamagedError: as `open`.
        """
        data = manifest.read(self.root / layout.MANIFEST)
        if data is not None and int(data["generation"]) == self.generation:
            return self
        shards, vectors = self._opened != "none", self._opened == "vectors"
        return AudioIndex.open(self.root, shards=shards, vectors=vectors, previous=self)

    @classmethod
    def check_creatable(cls, root: str | Path) -> None:
        """Fail now if `create` would refuse `root` for holding a lost index's data (before slow work).

        Raises:
            StoreError: the folder holds index data files but no manifest.
        """
        if not cls.exists(root):
            _refuse_orphaned_data(Path(root))

    @classmethod
    def create(
        cls,
        root: str | Path,
        *,
        fingerprint: dict,
        dim: int,
        factory: str = codes.AUTO,
        max_index_memory: int | None = None,
    ) -> AudioIndex:
        """Create an empty index (generation 0) at `root`.

        Args:
            root: the index directory (created if missing).
            fingerprint: JSON-able description of the embedder whose vectors the index holds.
            dim: vector dimension.
            factory: "auto" (the default): exact fp16 shards, searched exactly while that fits
                `max_index_memory` and is fast, else through compressed codes with exact re-ranking
                (see `index_choice`); or a FAISS index-factory string used for every shard
                ("SQfp16": always exact).
            max_index_memory: memory budget in bytes of the searched index ("auto" only; default 4 GiB).

        Raises:
            StoreError: an index already exists there, or the factory string is invalid.
        """
        root = Path(root)
        if not isinstance(dim, (int, np.integer)) or dim < 1:
            raise ValueError(f"dim must be a positive integer, not {dim!r}")
        concrete, policy = codes.resolve_policy(root, factory, {}, max_index_memory, staged=True)
        concrete = concrete or factory
        faiss_ops.build(concrete, dim)  # fail now, not at the first commit
        data = manifest.new_manifest(fingerprint=fingerprint, dim=int(dim), factory=concrete)
        if policy is not None:
            data.update(policy=policy, codes=None)
        with device_errors(root, doing="creating the index", generation=None):
            (root / layout.SHARD_DIR).mkdir(parents=True, exist_ok=True)
            with WriterLock(root):
                if cls.exists(root):
                    raise StoreError(f"an index already exists at {root}")
                _refuse_orphaned_data(root)
                manifest.write(root / layout.MANIFEST, data)
        return cls.open(root)

    @classmethod
    def open_or_create(
        cls,
        root: str | Path,
        *,
        fingerprint: dict,
        dim: int,
        factory: str = codes.AUTO,
        max_index_memory: int | None = None,
    ) -> AudioIndex:
        """Open the index at `root`, creating it first if there is none (writers check the fingerprint)."""
        if not cls.exists(root):
            try:
                return cls.create(
                    root, fingerprint=fingerprint, dim=dim, factory=factory, max_index_memory=max_index_memory
                )
            except StoreError:
                if not cls.exists(root):  # a real failure, not a concurrent creation
                    raise
        return cls.open(root)

    def writer(self, *, fingerprint: dict, staged: bool = False, **options: Any) -> IndexWriter:
        """Open the index's single writer (see `IndexWriter`); it re-reads the latest manifest.

        Raises:
            IndexLockedError: another writer is active.
            FingerprintMismatchError: `fingerprint` differs from the index's and `staged` is False.
        """
        from .writer import IndexWriter

        return IndexWriter(self.root, fingerprint=fingerprint, staged=staged, **options)

    def close(self) -> None:
        """Release the snapshot's loaded data and mappings (it holds no open files); shard readers that a
        newer snapshot shares stay loaded for it. Closing twice does nothing more."""
        if self._closed:
            return
        self._closed = True
        for shard in self._shards:
            shard.close()

    def __enter__(self) -> AudioIndex:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"AudioIndex({str(self.root)!r}, generation={self.generation}, vectors={self.num_vectors}, "
            f"shards={self.num_shards}, factory={self.factory!r})"
        )

    # ----- manifest facts -----

    @property
    def generation(self) -> int:
        """Generation number of this snapshot."""
        return int(self.manifest["generation"])

    @property
    def fingerprint(self) -> dict:
        """Fingerprint of the embedder that produced the vectors."""
        return self.manifest["fingerprint"]

    @property
    def dim(self) -> int:
        """Vector dimension."""
        return int(self.manifest["dim"])

    @property
    def factory(self) -> str:
        """FAISS index-factory string of the shards."""
        return self.manifest["factory"]

    @property
    def num_vectors(self) -> int:
        """Live (searchable, not deleted) vectors."""
        return int(self.manifest["num_vectors"])

    @property
    def num_shards(self) -> int:
        """Number of shards."""
        return len(self.manifest["shards"])

    @property
    def staging(self) -> dict | None:
        """The manifest of an unfinished staged rebuild, read now, or None."""
        return manifest.read(self.root / layout.STAGING_MANIFEST)

    # ----- tables -----

    def files(self) -> pa.Table:
        """The files table (FILES_SCHEMA), one row per source file."""
        return self._files

    def deleted_ids(self) -> np.ndarray:
        """Sorted ids of deleted (tombstoned) segments."""
        return self._deleted

    def shard_metadata(self, columns: list[str]) -> Iterator[pa.Table]:
        """For each shard that has all of `columns`, those columns of its metadata table."""
        for shard in self._readers():
            table = shard.columns(columns)
            if table is not None:
                yield table

    def _deleted_mask(self, i: int) -> np.ndarray | None:
        if i not in self._deleted_masks:
            deleted = self.deleted_ids()
            shard = self._readers()[i]
            # Only tombstones inside the shard's id range can hit it.
            lo = np.searchsorted(deleted, shard.entry["min_id"], side="left")
            hi = np.searchsorted(deleted, shard.entry["max_id"], side="right")
            mask = np.isin(shard.ids, deleted[lo:hi]) if hi > lo else None
            self._deleted_masks[i] = mask if mask is not None and mask.any() else None
        return self._deleted_masks[i]

    def _locate(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        with self._lock:
            if self._locator is None:
                self._locator = RowLocator(self._readers())
            locator = self._locator
        shard_of, row_of, found = locator.locate(ids)
        if not found.all():
            missing = ids[~found][:10].tolist()
            raise KeyError(f"no segments with ids {missing} in generation {self.generation}")
        return shard_of, row_of

    def _exact_among(self, q: np.ndarray, ids: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The exact top-k of the queries among the stored rows of `ids` (sorted, unique): the
        compressed search's re-rank (`rerank.ScoreAmong`)."""
        return exact_top_k(self._readers(vectors=True), *self._locate(ids), q, k)

    def segment_rows(self, ids: Iterable[int]) -> list[dict]:
        """Metadata rows of the given global segment ids, in the same order.

        Only the Parquet row groups holding them are read. Deleted ids still resolve while their
        shard keeps the row (until compaction).

        Raises:
            KeyError: an id is not in this generation.
        """
        ids = np.asarray(list(ids) if not isinstance(ids, np.ndarray) else ids, dtype=np.int64)
        if ids.size == 0:
            return []
        shard_of, row_of = self._locate(ids)
        readers = self._readers()
        if len(ids) <= _FEW_ROWS:  # a query's hits: one row each from the decoded tables, no grouping
            tables = [readers[s].loaded_rows for s in shard_of.tolist()]
            if all(t is not None for t in tables):
                rows = zip(tables, row_of.tolist(), strict=True)
                return [t.row(r) for t, r in rows]  # type: ignore[union-attr]
        # One sort groups the ids by shard, rows ascending within each (what `ShardReader.rows` takes):
        # a query's hits span a few shards, and per-shard NumPy calls were most of a hit's cost.
        order = np.lexsort((row_of, shard_of))
        shards, rows_sorted = shard_of[order], row_of[order]
        bounds = [0, *(np.flatnonzero(shards[1:] != shards[:-1]) + 1).tolist(), len(ids)]
        slots = order.tolist()
        out: list[dict | None] = [None] * len(ids)
        for start, stop in itertools.pairwise(bounds):
            positions = rows_sorted[start:stop]
            if positions.size > 1 and bool((positions[1:] == positions[:-1]).any()):  # repeated ids
                positions, inverse = np.unique(positions, return_inverse=True)
                rows = readers[int(shards[start])].rows(positions)
                for slot, r in zip(slots[start:stop], inverse.tolist(), strict=True):
                    out[slot] = dict(rows[r])
            else:
                rows = readers[int(shards[start])].rows(positions)
                for slot, row in zip(slots[start:stop], rows, strict=True):
                    out[slot] = row
        return out  # type: ignore[return-value]

    def ids_with_path(self, path: str) -> np.ndarray:
        """Sorted ids of the live segments whose `path` is exactly `path` (or whose `paths` list holds it)."""
        pattern = re.compile(re.escape(path) + r"\Z")
        found = [np.empty(0, np.int64)]
        for i, shard in enumerate(self._readers()):
            mask = shard.path_mask(pattern)
            deleted = self._deleted_mask(i)
            if deleted is not None:
                mask &= ~deleted
            found.append(shard.ids[mask])
        return np.sort(np.concatenate(found))

    def vectors(self, ids: Iterable[int]) -> np.ndarray:
        """The stored vectors of the given ids, in the same order, as the index holds them (fp16-rounded
        for the default SQfp16).

        Raises:
            KeyError: an id is not in this generation.
            StoreError: the index type cannot return its stored vectors.
        """
        ids = np.asarray(list(ids) if not isinstance(ids, np.ndarray) else ids, dtype=np.int64)
        out = np.empty((len(ids), self.dim), dtype=np.float32)
        if ids.size == 0:
            return out
        shard_of, row_of = self._locate(ids)
        for s in np.unique(shard_of).tolist():
            which = np.flatnonzero(shard_of == s)
            out[which] = faiss_ops.reconstruct_rows(self._readers(vectors=True)[s].index(), row_of[which])
        return out

    def all_vectors(self) -> tuple[np.ndarray, np.ndarray]:
        """Ids and decoded vectors of every live segment, in id order of the shards.

        Returns:
            (ids int64 (n,), vectors float32 (n, dim)).
        """
        ids, vectors = [np.empty(0, np.int64)], [np.empty((0, self.dim), np.float32)]
        for i, shard in enumerate(self._readers(vectors=True)):
            mask = self._deleted_mask(i)
            keep = slice(None) if mask is None else ~mask
            ids.append(shard.ids[keep])
            vectors.append(shard.vectors()[keep])
        return np.concatenate(ids), np.ascontiguousarray(np.concatenate(vectors), dtype=np.float32)

    def shard_readers(self) -> list[ShardReader]:
        """The snapshot's shards, in manifest order."""
        return list(self._readers())

    def live_shards(self) -> Iterator[tuple[pa.Table, np.ndarray]]:
        """Per shard, in manifest order: the metadata rows of its live segments and their decoded vectors.

        Deleted segments are left out; the decoded vectors of one shard at a time are held.

        Yields:
            (metadata table with the `id` column, vectors float32 (rows, dim)) in the same row order.
        """
        for i, shard in enumerate(self._readers(vectors=True)):
            rows, vectors = shard.metadata(), shard.vectors()
            mask = self._deleted_mask(i)
            if mask is not None:
                rows, vectors = rows.filter(pa.array(~mask)), vectors[~mask]
            yield rows, np.ascontiguousarray(vectors, dtype=np.float32)

    # ----- search -----

    def search(
        self,
        queries: np.ndarray,
        k: int,
        *,
        path_glob: str | None = None,
        ranges: Mapping[str, tuple[float | None, float | None]] | None = None,
        exact: bool = False,
        nprobe: int | None = None,
        refine: int | None = None,
        exclude_paths: Collection[str] | None = None,
    ) -> list[list[SearchHit]]:
        """Global top-k of each query over all shards, best first, with each hit's metadata row.

        See `search_ids` for the search itself (kinds, filters, accuracy knobs and errors).
        """
        options = {"path_glob": path_glob, "ranges": ranges, "exact": exact, "nprobe": nprobe}
        options.update(refine=refine, exclude_paths=exclude_paths)
        return self._search_hits(*self.search_ids(queries, k, **options))

    def search_ids(
        self,
        queries: np.ndarray,
        k: int,
        *,
        path_glob: str | None = None,
        ranges: Mapping[str, tuple[float | None, float | None]] | None = None,
        exact: bool = False,
        nprobe: int | None = None,
        refine: int | None = None,
        exclude_paths: Collection[str] | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Global top-k of each query over all shards, best first, as (scores, ids) arrays (q, <= k),
        -1 ids for no hit; `search` is the same with each hit's metadata row.

        An automatic index that outgrew exact search searches its HNSW graph over the fp16 vectors
        (while vectors and graph fit its memory budget), or takes candidates from its compressed codes
        and re-ranks them with exact inner products from the stored fp16 vectors (scores are exact
        either way; the measured recall@10 and the tuned settings are in `index_info()`);
        `exact=True` scans the exact shards instead.

        Deleted segments and, with `path_glob`, segments whose `path` (or any of `paths`) does not
        match the fnmatch-style pattern, with `ranges`, segments whose numeric metadata lies outside
        a range, and with `exclude_paths`, segments of those files, are excluded before top-k, so each
        query gets up to k hits. Filters are exact on compressed indexes too: a filter that leaves at
        most `FILTER_SCAN_FRACTION` of the coded rows (or no more than the re-rank depth) is answered by
        an exact scan of the matching rows only; a wider one by the codes, whose probes widen until
        every query has its full re-rank depth of candidates (or every list is probed). Whenever fewer
        rows than the re-rank depth match, the answer is the exact one.

        Args:
            queries: (q, dim) float32 (a single (dim,) vector is taken as one query).
            k: hits per query (at least 1).
            path_glob: optional pattern such as "*/birds/*.flac".
            ranges: optional ``{column: (low, high)}``, inclusive, None for an open end, e.g.
                ``{"duration_s": (None, 2.0)}``.
            exact: scan every stored vector even where compressed codes exist.
            nprobe: compressed indexes: lists probed first (default: the trained value; at most the
                list count).
            refine: compressed indexes: candidates re-scored exactly (default: the tuned re-rank
                depth and at least 10 x k; never fewer than k). Graph indexes: the efSearch, i.e.
                the candidate list each query walks (default: the tuned value, widened under a
                filter; never fewer than k). `nprobe` does not apply to a graph.
            exclude_paths: stored `path` values whose segments are left out (grouped search's
                continuation: files it has already).

        Raises:
            EmptyIndexError: the index holds no live vectors.
            ValueError: bad query shape, k, nprobe or refine.
        """
        q = self._check_queries(queries, k)
        k = int(k)
        for name, value in (("nprobe", nprobe), ("refine", refine)):
            if value is not None and int(value) < 1:
                raise ValueError(f"{name} must be at least 1, not {value}")
        pattern = compile_glob(path_glob) if path_glob else None
        where = RowFilter(pattern, ranges, frozenset(exclude_paths or ()))
        if self._graph is not None and not exact:
            top_scores, top_ids = self._graph_search(q, k, where, refine)
            if self._uncoded:  # exact scores on both sides: one merged top-k
                more_scores, more_ids = self._exact_search(q, k, where, self._uncoded)
                top_scores, top_ids = merge_top_k(
                    np.hstack([top_scores, more_scores]), np.hstack([top_ids, more_ids]), k
                )
            return top_scores, top_ids
        if self._codes is not None and not exact:
            allowed = self._allowed_ids(where)
            if self._scan_is_cheaper(allowed, k, refine):
                top_scores, top_ids = self._scan_matching(q, k, allowed)  # type: ignore[arg-type]
            else:
                top_scores, top_ids = self._codes.search(
                    q, k, allowed, self._exact_among, nprobe=nprobe, refine=refine
                )
            if self._uncoded:  # exact scores on both sides: one merged top-k
                more_scores, more_ids = self._exact_search(q, k, where, self._uncoded)
                top_scores, top_ids = merge_top_k(
                    np.hstack([top_scores, more_scores]), np.hstack([top_ids, more_ids]), k
                )
            return top_scores, top_ids
        return self._exact_search(q, k, where)

    def _graph_search(
        self, q: np.ndarray, k: int, where: RowFilter, ef: int | None
    ) -> tuple[np.ndarray, np.ndarray]:
        """(scores, ids) of the top-k over the graphs' rows: the graphs at efSearch `ef` (default: tuned),
        or an exact scan of the matching rows when a filter leaves few; a query that a filter left
        short of hits in the graphs is answered by that scan too (filters stay exact)."""
        assert self._graph is not None
        allowed = self._allowed_ids(where)
        if self._scan_is_cheaper(allowed, k, ef):
            return self._scan_matching(q, k, allowed)  # type: ignore[arg-type]
        if ef is None and allowed is not None:
            # A filter hides part of each neighbourhood: widen the candidate list in proportion (at most 8x).
            coded = sum(s.count for i, s in enumerate(self._shards) if i not in self._uncoded)
            share = max(int(np.count_nonzero(allowed)), 1) / max(coded, 1)
            ef = int(self._graph.ef_search * min(8.0, max(1.0, 1.0 / share)))
        scores, ids = merge_top_k(*self._graph.search(q, k, allowed, ef=ef), k)
        if allowed is not None:
            want = min(k, int(np.count_nonzero(allowed)))
            short = np.flatnonzero((ids >= 0).sum(axis=1) < want)
            if short.size:
                again = self._scan_matching(q[short], k, allowed)
                scores, ids = _pad(scores, ids, k)
                scores[short], ids[short] = _pad(*again, k)
        return scores, ids

    def _scan_matching(self, q: np.ndarray, k: int, allowed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(scores, ids) of the exact top-k among the coded rows `allowed` names: only the shards holding
        them are searched, each under a selector of those rows."""
        return self._exact_among(q, np.flatnonzero(allowed).astype(np.int64), k)

    def _check_queries(self, queries: np.ndarray, k: int) -> np.ndarray:
        q = np.asarray(queries, dtype=np.float32)
        if q.ndim == 1:
            q = q[None, :]
        if q.ndim != 2 or q.shape[1] != self.dim:
            raise ValueError(f"queries must have shape (n, {self.dim}), not {np.shape(queries)}")
        if int(k) < 1:
            raise ValueError(f"k must be at least 1, not {k}")
        if self.num_vectors == 0:
            raise EmptyIndexError(
                f"index {self.root} holds no vectors; add audio with `vela-search index PATH`"
            )
        return np.ascontiguousarray(q)

    def _scan_is_cheaper(self, allowed: np.ndarray | None, k: int, refine: int | None) -> bool:
        """Whether a filter leaves so few coded rows that scanning them exactly beats the codes (and
        always when they are no more than the re-rank depth: the codes would have to be probed whole)."""
        searcher = self._codes if self._codes is not None else self._graph
        if allowed is None or searcher is None:
            return False
        matching = int(np.count_nonzero(allowed))
        depth = max(int(refine), k) if refine is not None else max(searcher.rerank_depth, 10 * k)
        coded = sum(s.count for i, s in enumerate(self._shards) if i not in self._uncoded)
        return matching <= max(depth, FILTER_SCAN_FRACTION * coded)

    def _search_hits(self, top_scores: np.ndarray, top_ids: np.ndarray) -> list[list[SearchHit]]:
        if top_ids.size == 0:
            return [[] for _ in range(len(top_ids))]
        # Each hit gets a row of its own (a dict per hit, also where queries share an id), in hit order.
        rows = iter(self.segment_rows(top_ids[top_ids >= 0]))
        return [
            [
                SearchHit(id=i, score=s, row=next(rows))
                for i, s in zip(row_ids, row_scores, strict=True)
                if i >= 0
            ]
            for row_ids, row_scores in zip(top_ids.tolist(), top_scores.tolist(), strict=True)
        ]

    def _allowed_rows(self, i: int, where: RowFilter) -> np.ndarray | None:
        """Shard i's rows that deletions and filters leave searchable (None: all of them)."""
        shard = self._readers()[i]
        deleted = self._deleted_mask(i)
        allowed = None if deleted is None else ~deleted
        masks = [shard.path_mask(where.pattern)] if where.pattern is not None else []
        masks += [shard.range_mask(column, low, high) for column, (low, high) in (where.ranges or {}).items()]
        if where.exclude:
            masks.append(~shard.path_in(where.exclude))
        for mask in masks:
            allowed = mask if allowed is None else allowed & mask
        return allowed

    def _exact_search(
        self, q: np.ndarray, k: int, where: RowFilter, only: list[int] | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """(scores, ids) of the exact top-k over every shard, or over the shards listed in `only`."""
        scores, ids = [], []
        for i, shard in enumerate(self._readers(vectors=True)):
            if only is not None and i not in only:
                continue
            allowed = self._allowed_rows(i, where)
            if allowed is not None:
                if not allowed.any():
                    continue
                if allowed.all():
                    allowed = None
            s, d = shard.search(q, k, allowed)
            scores.append(s)
            ids.append(d)
        if not scores:
            return np.empty((len(q), 0), np.float32), np.empty((len(q), 0), np.int64)
        return merge_top_k(np.hstack(scores), np.hstack(ids), k)

    def _allowed_ids(self, where: RowFilter) -> np.ndarray | None:
        """Searchable ids of the coded shards as a mask indexed by id (None: every coded id)."""
        if where.empty and self._live_ids is not None:
            return self._live_ids[0]  # deletions only: the same mask for every query
        coded = [i for i in range(len(self._shards)) if i not in self._uncoded]
        masks = [self._allowed_rows(i, where) for i in coded]
        allowed = None
        if any(m is not None for m in masks):
            allowed = np.zeros(int(self.manifest["next_id"]), dtype=bool)
            for i, mask in zip(coded, masks, strict=True):
                shard = self._shards[i]
                allowed[shard.ids if mask is None else shard.ids[mask]] = True
        if where.empty:
            self._live_ids = (allowed,)
        return allowed

    def codes_memory_bytes(self) -> int | None:
        """Bytes of the merged codes index this snapshot searches (None when it searches none). Each
        codes file also carries the trained template's fixed parts; in memory they are held once."""
        return None if self._codes is None else self._codes.memory_bytes()

    def index_info(self) -> dict[str, Any]:
        """How this snapshot is searched: the choice (exact, compressed with its factory, or a fixed
        factory), its memory, design size, and the recall@10 measured when the codes were trained."""
        return codes.describe(self.manifest)
