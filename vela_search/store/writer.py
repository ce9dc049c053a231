"""IndexWriter: the single writer of an index; buffers changes and commits them as new generations."""

from __future__ import annotations

import contextlib
import copy
import functools
import os
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pyarrow as pa

from ..errors import IndexNotFoundError, StoreError
from . import background, cleanup, faiss_ops, fsio, layout, manifest
from .activity import ActivityRecorder, shared_recorder
from .background import MODES, BackgroundMaintenance, Snapshot
from .codes import CodesKeeper, resolve_policy
from .index_choice import ChoiceLimits
from .integrity import device_errors, read_verified
from .lock import WriterLock
from .merging import merge_shards
from .shards import ShardReader, write_shard
from .table_log import DeletedLog, FilesLog, contains
from .tables import concat_metadata, metadata_table, read_ids, to_files_table, unify_schemas
from .tiers import TierPolicy, merge_start

DEFAULT_MAX_SHARD_SIZE = 100_000

_F = TypeVar("_F", bound=Callable[..., Any])


def _locked(method: _F) -> _F:
    """Run a writer method under the writer's mutex (its background maintenance publishes under it too)."""

    @functools.wraps(method)
    def run(self: IndexWriter, *args: Any, **kwargs: Any) -> Any:
        with self._mutex:
            return method(self, *args, **kwargs)

    return run  # type: ignore[return-value]


class IndexWriter:
    """The one writer of an index, holding its lock until `close()` (or the end of a `with` block).

    Changes (`add`, `delete`, `put_files`, `remove_files`) are buffered and become visible to readers
    only at `commit()`, atomically, as a new generation. Leaving a `with` block does not commit.

    A staged writer (`staged=True`) builds a separate generation in `manifest.staging.json`, for
    re-embedding a collection with a new embedder: readers keep using the current generation until
    `promote()`. Reopening a staged writer with the same fingerprint resumes the staged generation;
    with another fingerprint it starts a fresh one.

    With ``maintenance="background"`` a commit only lands its data: tier merges and codes re-training
    run on a thread of the writer and publish generations of their own (see
    `vela_search.store.background`); `finish_maintenance()` waits for them, `close()` waits for the one
    running. All methods may be called from one thread at a time besides that background thread.
    """

    def __init__(
        self,
        root: str | Path,
        *,
        fingerprint: dict,
        staged: bool = False,
        dim: int | None = None,
        factory: str | None = None,
        max_shard_size: int = DEFAULT_MAX_SHARD_SIZE,
        max_index_memory: int | None = None,
        choice_limits: ChoiceLimits | None = None,
        merge_policy: TierPolicy | None = TierPolicy(),
        maintenance: str = "inline",
        activity: ActivityRecorder | None = None,
    ) -> None:
        """Open the writer of the index at `root`.

        Args:
            root: index directory.
            fingerprint: the embedder's fingerprint; must equal the index's unless `staged`.
            staged: build a new generation beside the current one (see class docs).
            dim: dimension of a fresh staged generation (default: the fingerprint's int `dim` key, else
                the current index's).
            factory: FAISS factory of a fresh staged generation (default: the current index's);
                "auto" chooses exact or compressed search from the size (see `index_choice`), and
                turns an existing exact SQfp16 index automatic at the next commit.
            max_shard_size: a commit splits its vectors into shards of at most this many.
            max_index_memory: memory budget (bytes) of an automatic index's search index.
            choice_limits: thresholds of the automatic choice (tests shrink them).
            merge_policy: how commits merge the newest shards by size tiers so that their number stays
                logarithmic (see `vela_search.store.tiers`); None leaves every commit's shards as written.
            maintenance: "inline" merges and re-trains inside the commit that makes them due;
                "background" does both off the commit path (see class docs).
            activity: records pending and running background maintenance (default: this process's
                shared recorder of the index, in background mode).

        Raises:
            IndexNotFoundError: no index at `root`.
            IndexLockedError: another writer is active.
            FingerprintMismatchError: a non-staged writer with another embedder's fingerprint.
        """
        self.root = Path(root)
        if maintenance not in MODES:
            raise ValueError(f"maintenance must be one of {', '.join(MODES)}, not {maintenance!r}")
        if max_shard_size < 1:
            raise ValueError(f"max_shard_size must be at least 1, not {max_shard_size}")
        self.max_shard_size = int(max_shard_size)
        self.merge_policy = merge_policy
        if not (self.root / layout.MANIFEST).is_file():
            raise IndexNotFoundError(f"no index at {self.root} (no {layout.MANIFEST})")
        self._lock = WriterLock(self.root)
        # The shard last read by read_segments, kept loaded: callers read in id order, shard after shard.
        self._segment_reader: ShardReader | None = None
        self._lock.acquire()
        try:
            main = manifest.read(self.root / layout.MANIFEST) or {}
            factory, policy = resolve_policy(self.root, factory, main, max_index_memory, staged=staged)
            self._load(manifest.normalize_fingerprint(fingerprint), staged, dim, factory)
            self._codes = CodesKeeper(self.root, self.dim, self._reader, choice_limits, policy=policy)
            self._dirty = self._dirty or policy is not None
        except BaseException:
            self._lock.release()
            raise
        self.maintenance = maintenance
        self._mutex = threading.RLock()
        self._generation_floor = 0  # generation numbers reserved by background jobs for their files
        self._closing = False
        self._background: BackgroundMaintenance | None = None
        if maintenance == "background":
            self._codes.defer_training = True
            recorder = activity if activity is not None else shared_recorder(self.root)
            self._background = BackgroundMaintenance(self._publish_background, recorder)

    def _load(self, fingerprint: dict, staged: bool, dim: int | None, factory: str | None) -> None:
        main = manifest.read(self.root / layout.MANIFEST)
        if main is None:
            raise IndexNotFoundError(f"no index at {self.root} (no {layout.MANIFEST})")
        staging = manifest.read(self.root / layout.STAGING_MANIFEST)
        self.staged = staged
        self.resumed = False
        self._dirty = False
        if not staged:
            manifest.check_fingerprint(self.root, main["fingerprint"], fingerprint)
            for name, value in (("dim", dim), ("factory", factory)):
                if value is not None and value != main[name]:
                    raise StoreError(
                        f"index {self.root} has {name} {main[name]!r}, not {value!r}; changing it needs "
                        "a rebuild (`vela-search index PATH --rebuild`)"
                    )
            base = main
        else:
            if dim is None:
                dim = fingerprint["dim"] if isinstance(fingerprint.get("dim"), int) else main["dim"]
            factory = factory or main["factory"]
            if (
                staging is not None
                and staging["fingerprint"] == fingerprint
                and staging["dim"] == dim
                and staging["factory"] == factory
            ):
                base, self.resumed = staging, True
            else:
                faiss_ops.build(factory, dim)
                base = manifest.new_manifest(fingerprint=fingerprint, dim=dim, factory=factory, staged=True)
                self._dirty = True  # even an empty staged generation gets written at commit
        self._base = base
        others = [m for m in (main, staging, base) if m is not None]
        self._next_id = max(int(m["next_id"]) for m in others)
        self._next_shard = max(
            max(int(m["next_shard"]) for m in others), layout.highest_shard_number(self.root) + 1
        )
        self._vectors: list[np.ndarray] = []
        self._tables: list[pa.Table] = []
        self._schema: pa.Schema | None = None
        # The files and deleted tables: committed base and deltas, and this commit's changes.
        self._files = FilesLog(self.root, base)
        self._deleted = DeletedLog(self.root, base)
        self._pending_start = self._next_id
        self._ids_cache: dict[str, np.ndarray] = {}
        self._verified: set[str] = set()  # shard files whose checksum read_segments has checked
        self._template: tuple[str, Any] | None = None
        # Checksums of the data files written since the last commit, by relative path.
        self._written: dict[str, str] = {}
        self._dropped: set[int] = set()  # shard numbers drop_shards removes at the next commit
        self._records: dict[str, Any] = {}  # manifest entries record() sets at the next commit

    # ----- state -----

    @property
    def generation(self) -> int:
        """Generation of the last commit this writer builds on."""
        return int(self._base["generation"])

    @property
    def fingerprint(self) -> dict:
        """Fingerprint of the generation being written."""
        return self._base["fingerprint"]

    @property
    def dim(self) -> int:
        """Vector dimension."""
        return int(self._base["dim"])

    @property
    def factory(self) -> str:
        """FAISS index-factory string."""
        return self._base["factory"]

    @property
    def manifest(self) -> dict:
        """The last committed manifest of the generation being written."""
        return self._base

    @property
    def num_pending(self) -> int:
        """Vectors added and not yet committed."""
        return sum(len(v) for v in self._vectors)

    @property
    def training_vectors_needed(self) -> int:
        """Vectors the next commit must carry to train the FAISS factory (0 when none are needed)."""
        if self._base["trained"]:
            return 0
        return faiss_ops.training_vectors_needed(faiss_ops.build(self.factory, self.dim))

    @property
    def training_vectors_wanted(self) -> int:
        """Vectors worth buffering before the first commit of a factory that needs training: 39 per
        centroid (FAISS's minimum for good centroids), at most 1 GiB of buffered vectors, at least
        `training_vectors_needed`. Training then draws a uniform sample from more of the collection."""
        need = self.training_vectors_needed
        return max(need, min(need * faiss_ops.MIN_POINTS_PER_CENTROID, (1 << 30) // (4 * self.dim)))

    def _check_open(self) -> None:
        if not self._lock.held:
            raise StoreError(f"the writer of index {self.root} is closed")

    @_locked
    def files(self) -> pa.Table:
        """The files table including uncommitted changes."""
        return self._files.table()

    @_locked
    def deleted_ids(self) -> np.ndarray:
        """Sorted tombstoned ids including uncommitted deletions."""
        return self._deleted.ids()

    def _shard_ids(self, entry: dict) -> np.ndarray:
        # Shard files are immutable, so their path is a safe cache key.
        ids = self._ids_cache.get(entry["meta"])
        if ids is None:
            ids = read_ids(self.root, entry["meta"], manifest.checksum(self._base, entry["meta"]))
            self._ids_cache[entry["meta"]] = ids
        return ids

    @_locked
    def read_segments(self, ids: np.ndarray) -> tuple[np.ndarray, list[dict[str, Any]]]:
        """Decoded vectors and metadata rows of committed segments, in the order of ``ids``.

        Tombstoned segments are still readable until a compaction drops them, so a writer can move a
        segment (add a copy, tombstone the original) within one commit.

        Raises:
            KeyError: an id is not in a committed shard of this writer's generation.
        """
        self._check_open()
        wanted, inverse = np.unique(np.asarray(ids, dtype=np.int64), return_inverse=True)
        vectors = np.empty((len(wanted), self.dim), dtype=np.float32)
        rows: list[dict[str, Any]] = [{} for _ in wanted]
        found = np.zeros(len(wanted), dtype=bool)
        for entry in self._base["shards"]:
            inside = np.flatnonzero((wanted >= entry["min_id"]) & (wanted <= entry["max_id"]))
            if inside.size == 0:
                continue
            shard_ids = self._shard_ids(entry)  # sorted: ids increase within a shard
            at = np.minimum(np.searchsorted(shard_ids, wanted[inside]), len(shard_ids) - 1)
            hit = shard_ids[at] == wanted[inside]
            inside, at = inside[hit], at[hit]
            if inside.size == 0:
                continue
            reader = self._shard_for_reading(entry)
            # Checked whole first (once per writer): these vectors go into new files with fresh checksums.
            verify = entry["index"] not in self._verified
            vectors[inside] = faiss_ops.reconstruct_rows(reader.index(verify=verify), at)
            self._verified.add(entry["index"])
            for where, row in zip(inside.tolist(), reader.rows(at), strict=True):
                rows[where] = row
            found[inside] = True
        if not found.all():
            raise KeyError(f"no committed segments with ids {wanted[~found][:10].tolist()}")
        return vectors[inverse], [rows[i] for i in inverse.tolist()]

    def _shard_for_reading(self, entry: dict) -> ShardReader:
        reader = self._segment_reader
        if reader is None or reader.entry["meta"] != entry["meta"]:
            self._close_segment_reader()
            reader = self._segment_reader = self._reader(entry)
        return reader

    def _reader(self, entry: dict) -> ShardReader:
        return ShardReader(self.root, entry, self.dim, self._base.get("checksums"))

    def shard_metadata(self, columns: list[str]) -> Iterator[pa.Table]:
        """For each committed shard that has all of `columns`, those columns of its metadata table."""
        self._check_open()
        for entry in self._base["shards"]:
            table = self._reader(entry).columns(columns)
            if table is not None:
                yield table

    def _close_segment_reader(self) -> None:
        if self._segment_reader is not None:
            self._segment_reader.close()
            self._segment_reader = None

    # ----- changes -----

    @_locked
    def add(self, vectors: np.ndarray, rows: list[Mapping[str, Any]]) -> np.ndarray:
        """Buffer vectors with one metadata row each and assign their global ids.

        Args:
            vectors: (n, dim) float32, normally unit-norm (scores are inner products).
            rows: n dicts of JSON-able values (str, float, int, bool, None, lists); the column `id`
                is reserved.

        Returns:
            The new ids (int64), increasing, never reused within the index.

        Raises:
            ValueError: wrong shape, non-finite values, or rows that cannot form columns.
        """
        self._check_open()
        v = np.asarray(vectors, dtype=np.float32)
        rows = list(rows)
        if v.ndim != 2 or v.shape[1] != self.dim:
            raise ValueError(f"vectors must have shape (n, {self.dim}), not {np.shape(vectors)}")
        if len(rows) != len(v):
            raise ValueError(f"{len(v)} vectors but {len(rows)} metadata rows")
        if len(v) == 0:
            return np.empty(0, dtype=np.int64)
        if not np.isfinite(v).all():
            raise ValueError("vectors contain NaN or infinity")
        ids = np.arange(self._next_id, self._next_id + len(v), dtype=np.int64)
        table = metadata_table(rows, ids, like=self._schema)
        schema = table.schema if self._schema is None else unify_schemas([self._schema, table.schema])
        self._schema = schema
        self._vectors.append(np.ascontiguousarray(v).copy())
        self._tables.append(table)
        self._next_id += len(v)
        self._dirty = True
        return ids.copy()

    @_locked
    def delete(self, ids: Iterable[int]) -> None:
        """Tombstone segments by id; searches skip them. Unknown or already deleted ids are ignored."""
        self._check_open()
        ids = np.unique(np.asarray(ids if isinstance(ids, np.ndarray) else list(ids), dtype=np.int64))
        if ids.size == 0:
            return
        known = np.zeros(len(ids), dtype=bool)
        for entry in self._base["shards"]:  # in id order; a shard's ids are sorted
            lo, hi = np.searchsorted(ids, [int(entry["min_id"]), int(entry["max_id"]) + 1])
            if hi > lo and int(entry["number"]) not in self._dropped:
                known[lo:hi] = contains(self._shard_ids(entry), ids[lo:hi])
        # Pending ids are exactly the range issued since the last commit.
        known |= (ids >= self._pending_start) & (ids < self._next_id)
        if known.any():
            self._deleted.add(ids[known])
            self._dirty = True

    @_locked
    def put_files(self, table_or_rows: pa.Table | Iterable[Mapping[str, Any]]) -> None:
        """Insert or replace files rows (FILES_SCHEMA columns; missing optional ones are null) by path."""
        self._check_open()
        new = to_files_table(table_or_rows)
        if new.num_rows:
            self._files.put(new)
            self._dirty = True

    @_locked
    def remove_files(self, paths: Iterable[str]) -> None:
        """Remove files rows by path (their segments are deleted separately, with `delete`)."""
        self._check_open()
        if self._files.remove(map(str, paths)):
            self._dirty = True

    @_locked
    def drop_shards(self, numbers: Iterable[int]) -> None:
        """Remove whole shards from the generation at the next commit (for repairing damage).

        Their rows vanish from the index, and their tombstones go with them. The caller decides what
        their loss means for the files table (see `vela_search.store.repair`).
        """
        self._check_open()
        numbers = {int(n) for n in numbers}
        if numbers:
            self._dropped |= numbers
            self._dirty = True

    @_locked
    def rebuild_codes(self) -> None:
        """Re-train and rewrite the compressed codes from the exact vectors at the next commit (repair)."""
        self._check_open()
        self._codes.force_retrain = self._dirty = True

    @_locked
    def record(self, **entries: Any) -> None:
        """Set index-level entries of the manifest (JSON values) at the next commit; later commits keep them.

        The indexing layer records there what must outlive a repair of any one table (the roots, the
        segmentation); the store only carries them.
        """
        self._check_open()
        changed = {k: v for k, v in entries.items() if self._base.get(k) != v}
        if changed:
            self._records.update(changed)
            self._dirty = True

    @_locked
    def reset_tables(self, *, files: bool = False, deleted: bool = False) -> None:
        """Start the files and/or deleted table afresh (empty) at the next commit, unread (for repair)."""
        self._check_open()
        if files:
            self._files.reset()
            self._dirty = True
        if deleted:
            self._deleted.reset()
            self._dirty = True

    # ----- commits -----

    def _next_generation(self) -> int:
        gens = [self.generation, self._generation_floor]
        for name in (layout.MANIFEST, layout.STAGING_MANIFEST):
            m = manifest.read(self.root / name)
            if m is not None:
                gens.append(int(m["generation"]))
        # Unique across the main and staged lineages, so generation-suffixed names never collide.
        return max(gens) + 1

    def _trained_template(self, new: dict, vectors: np.ndarray, generation: int) -> Any | None:
        """The trained, empty index shards start from; trains and writes it on first need."""
        name = new["trained"]
        if name:
            if self._template is None or self._template[0] != name:
                data = read_verified(self.root, name, manifest.checksum(new, name))
                self._template = (name, faiss_ops.read_bytes(self.root, name, data))
            return self._template[1]
        index = faiss_ops.build(self.factory, self.dim)
        if index.is_trained:
            return None
        faiss_ops.train(index, vectors, self.factory)
        name = layout.trained_index(generation)
        with fsio.atomic_file(self.root / name) as f:
            faiss_ops.write(index, f)
        self._written[name] = f.checksum
        new["trained"] = name
        self._template = (name, index)
        return index

    def _write_shards(
        self, new: dict, vectors: np.ndarray, metadata: pa.Table, generation: int, size: int
    ) -> list[dict]:
        template = self._trained_template(new, vectors, generation)
        ids = metadata["id"].to_numpy().astype(np.int64, copy=False)
        entries = []
        for start in range(0, len(vectors), size):
            stop = min(start + size, len(vectors))
            index = (
                faiss_ops.clone(template) if template is not None else faiss_ops.build(self.factory, self.dim)
            )
            index.add(vectors[start:stop])
            entry, checksums = write_shard(
                self.root, self._next_shard, index, metadata.slice(start, stop - start)
            )
            self._written.update(checksums)
            self._written.update(
                self._codes.encode_new_shard(new, entry, vectors[start:stop], ids[start:stop], generation)
            )
            self._next_shard += 1
            self._ids_cache[entry["meta"]] = ids[start:stop]
            entries.append(entry)
        return entries

    def _publish(self, new: dict, generation: int) -> int:
        """Write the changed tables, then the manifest (the commit point), then collect garbage."""
        # Codes first: (re-)training may add files and set new["codes"] and the shards' "codes" entries.
        self._written.update(self._codes.refresh(new, generation, self._deleted.ids()))
        self._written.update(self._files.commit(new, generation))
        self._written.update(self._deleted.commit(new, generation))
        # Every file the manifest names must be durable before the manifest is.
        fsio.fsync_dir(self.root / layout.SHARD_DIR)
        fsio.fsync_dir(self.root)
        num_deleted = int(self._deleted.ids().size)
        new.update(
            format_version=layout.FORMAT_VERSION,  # a version-1 index becomes version 2 here, unrewritten
            generation=generation,
            staged=self.staged,
            next_id=self._next_id,
            next_shard=self._next_shard,
            num_deleted=num_deleted,
            num_vectors=sum(int(s["count"]) for s in new["shards"]) - num_deleted,
        )
        manifest.keep_checksums(new, self._written)
        self._written = {}
        if self.staged:
            new["retained"] = []
            manifest.write(self.root / layout.STAGING_MANIFEST, new)
        else:
            previous = manifest.read(self.root / layout.MANIFEST)
            new["retained"] = sorted(manifest.references(previous) - manifest.references(new))
            manifest.write(self.root / layout.MANIFEST, new)
        if new["shards"] != self._base["shards"]:
            live = {e["meta"] for e in new["shards"]}
            self._ids_cache = {k: v for k, v in self._ids_cache.items() if k in live}
        self._base = new
        self._files.committed(new)
        self._deleted.committed(new)
        self._pending_start = self._next_id
        self._dirty = False
        if self._background is None or not self._background.busy:
            cleanup.collect(self.root)  # not while a background job's files wait unnamed by any manifest
        return generation

    @_locked
    def commit(self) -> int:
        """Make all buffered changes visible as a new generation (a no-op when nothing changed).

        Buffered vectors become one new shard, or several of at most `max_shard_size`. With a FAISS
        factory that needs training, the first commit trains it on its vectors. When the newest shards
        then fill a size tier, they are merged (see `merge_policy`), dropping their deleted rows.

        Returns:
            The generation now current for this writer.

        Raises:
            IndexTrainingError: the factory needs more vectors to train (nothing is lost: add more
                and commit again).
        """
        self._check_open()
        if not self._dirty:
            return self.generation
        with self._device_errors("committing"):
            return self._commit()

    def _commit(self) -> int:
        generation = self._next_generation()
        new = copy.deepcopy(self._base)
        new.update(copy.deepcopy(self._records))
        self._records = {}
        if self._dropped:
            deleted = self.deleted_ids()
            for entry in new["shards"]:
                if int(entry["number"]) in self._dropped:  # their rows go, and their tombstones with them
                    self._deleted.drop(deleted[(deleted >= entry["min_id"]) & (deleted <= entry["max_id"])])
            new["shards"] = [e for e in new["shards"] if int(e["number"]) not in self._dropped]
            self._dropped = set()
        if self._vectors:
            self._land(new, np.concatenate(self._vectors), concat_metadata(self._tables), generation)
        # A finished merge or re-training goes out with this commit (after the landing, which can fail
        # with nothing changed, e.g. a factory short of training vectors).
        done = self._apply_background(new)
        try:
            self._publish(new, generation)
        finally:
            for kind in done:
                self._background.done(kind)  # type: ignore[union-attr]
        self._vectors, self._tables, self._schema = [], [], None
        self._schedule_maintenance()
        return generation

    def _land(self, new: dict, vectors: np.ndarray, metadata: pa.Table, generation: int) -> None:
        """Add the commit's vectors to `new` as shards, merging the newest shards when a tier fills."""
        shards, size = new["shards"], self.max_shard_size
        pieces = [min(size, len(vectors) - at) for at in range(0, len(vectors), size)]
        start = None
        if self.merge_policy is not None and self._background is None:  # else merged in the background
            counts = [int(e["count"]) for e in shards] + pieces
            start = merge_start(counts, max_size=size, policy=self.merge_policy)
        if start is None:
            new["shards"] = shards + self._write_shards(new, vectors, metadata, generation, size)
            return
        # The tail from `start` is merged: older shards there are rewritten with the commit's vectors;
        # pieces of the commit before `start` (full ones) are written as they are.
        self._close_segment_reader()
        split = max(0, start - len(shards)) * size
        as_is = self._write_shards(new, vectors[:split], metadata.slice(0, split), generation, size)
        merged = self._merge(new, shards[start:], generation, size, (vectors[split:], metadata.slice(split)))
        new["shards"] = shards[:start] + as_is + merged

    def _merge(
        self,
        new: dict,
        entries: list[dict],
        generation: int,
        size: int,
        extra: tuple[np.ndarray, pa.Table] | None = None,
    ) -> list[dict]:
        """Rewrite adjacent shards `entries` (then the `extra` rows) as shards of at most `size` rows.

        Their deleted rows are left out, and those rows' tombstones dropped.
        """
        out, dropped = merge_shards(
            entries,
            dim=self.dim,
            size=size,
            deleted=self.deleted_ids(),
            open_reader=self._reader,
            shard_ids=self._shard_ids,
            write=lambda vectors, table: self._write_shards(new, vectors, table, generation, size),
            extra=extra,
        )
        self._deleted.drop(dropped)
        return out

    # ----- background maintenance -----

    def _apply_background(self, new: dict) -> list[str]:
        """Put the finished background results into `new` (re-based on it); returns their kinds."""
        if self._background is None:
            return []
        kinds = []
        for result in self._background.take():
            dropped = result.apply(new)
            if dropped is None:  # stale: its files are garbage for the next collection
                self._background.done(result.kind)
                continue
            self._deleted.drop(dropped[contains(self._deleted.ids(), dropped)])
            self._written.update(result.written)
            self._close_segment_reader()  # shards may have been replaced
            kinds.append(result.kind)
        return kinds

    def _publish_background(self) -> None:
        """On the job's thread: publish its result as a generation now, unless changes are buffered
        (then the next commit carries it), and start what is due next."""
        with self._mutex:
            if self._dirty or not self._lock.held:
                return
            self._publish_background_now()
            self._schedule_maintenance()

    def _reserve_shard(self) -> int:
        with self._mutex:
            number = self._next_shard
            self._next_shard += 1
            return number

    def _snapshot(self) -> Snapshot:
        generation = self._next_generation()
        self._generation_floor = generation  # no commit takes this number: the job's files carry it
        return Snapshot(
            self.root,
            copy.deepcopy(self._base),
            generation,
            self._reserve_shard,
            self._codes.limits,
            self._committed_manifest,
            self._background.cancel,  # type: ignore[union-attr]
        )

    def _committed_manifest(self) -> dict:
        with self._mutex:
            return copy.deepcopy(self._base)

    def _schedule_maintenance(self) -> None:
        """Start the merge and the re-training that are due, each unless one of its kind is in flight."""
        bg = self._background
        if bg is None or bg.error is not None or self._closing:
            return
        if self.merge_policy is not None and not bg.lane_busy(background.MERGE):
            counts = [int(e["count"]) for e in self._base["shards"]]
            start = merge_start(counts, max_size=self.max_shard_size, policy=self.merge_policy)
            if start is not None:
                snap, size = self._snapshot(), self.max_shard_size
                bg.start(background.MERGE, lambda: background.run_merge(snap, start, size))
        deleted = int(self._base.get("num_deleted") or 0)
        if not bg.lane_busy(background.RETRAIN) and self._codes.training_wanted(self._base, deleted):
            snap = self._snapshot()
            bg.start(background.RETRAIN, lambda: background.run_retrain(snap))

    @property
    def maintenance_running(self) -> list[str]:
        """The background jobs running now ("merge", "retrain")."""
        return [] if self._background is None else self._background.running

    def finish_maintenance(self) -> int:
        """Commit buffered changes, then run every merge and re-training that is due, waiting for each;
        the end of a run (indexing calls it last).

        A graph index then also folds the rows committed since its main graph once they are past
        `graph.SETTLE_FRACTION` of it (commits wait for `graph.FOLD_FRACTION`), so that a finished run
        leaves no small graph that every query walks besides the main one. A background job that failed
        is raised here (its result was never published: the index is as its last commit left it).

        Returns:
            The generation now current for this writer.
        """
        self._check_open()
        self.commit()
        bg = self._background
        while bg is not None:
            bg.wait()
            with self._mutex:
                if bg.error is not None:
                    error, bg.error = bg.error, None
                    raise error
                if bg.ready:  # a result left for the next commit: publish it now
                    if self._dirty:
                        self.commit()
                    else:
                        self._publish_background_now()
                self._schedule_maintenance()
                if not bg.busy:
                    break
        if self._codes.settle_due(self._base):
            with self._mutex:
                self._codes.settle_graph = self._dirty = True
                self.commit()
        return self.generation

    def _publish_background_now(self) -> None:
        with self._device_errors("publishing background maintenance"):
            generation = self._next_generation()
            new = copy.deepcopy(self._base)
            done = self._apply_background(new)
            if done:
                try:
                    self._publish(new, generation)
                finally:
                    for kind in done:
                        self._background.done(kind)  # type: ignore[union-attr]

    def compact(self, *, target_shard_size: int = 100_000) -> int:
        """Merge runs of small shards into shards of up to `target_shard_size` live vectors.

        Merged shards also drop their deleted rows (and those tombstones). Pending changes are
        committed first. Search results are unchanged.

        Returns:
            The generation now current for this writer.
        """
        self._check_open()
        if target_shard_size < 1:
            raise ValueError(f"target_shard_size must be at least 1, not {target_shard_size}")
        self.finish_maintenance()  # commits, and no background job replaces shards meanwhile
        with self._mutex:
            self._close_segment_reader()  # compaction replaces shards
            with self._device_errors("compacting"):
                return self._compact(target_shard_size)

    def _compact(self, target_shard_size: int) -> int:
        deleted = self.deleted_ids()
        groups: list[list[tuple[dict, bool]]] = []
        size = target_shard_size + 1
        for entry in self._base["shards"]:
            dead = int(contains(deleted, self._shard_ids(entry)).sum())
            live = int(entry["count"]) - dead
            if not groups or size + live > target_shard_size:
                groups.append([])
                size = 0
            groups[-1].append((entry, dead > 0))
            size += live
        if all(len(g) == 1 and not g[0][1] for g in groups):
            return self.generation
        generation = self._next_generation()
        new = copy.deepcopy(self._base)
        shards = []
        for group in groups:
            if len(group) == 1 and not group[0][1]:
                shards.append(group[0][0])
            else:
                shards.extend(self._merge(new, [e for e, _ in group], generation, target_shard_size))
        new["shards"] = shards
        return self._publish(new, generation)

    def promote(self) -> int:
        """Commit the staged generation and make it the current one, atomically.

        Readers that open the index afterwards see the staged generation; readers already open keep
        their snapshot. The writer then continues as an ordinary writer of the promoted generation.

        Returns:
            The generation number of the promoted generation.

        Raises:
            StoreError: the writer is not staged.
        """
        self._check_open()
        if not self.staged:
            raise StoreError("promote() applies only to a staged writer (writer(..., staged=True))")
        self.finish_maintenance()  # commits; the promoted generation is a maintained one
        with self._mutex, self._device_errors("promoting the rebuilt generation"):
            return self._promote()

    def _promote(self) -> int:
        previous = manifest.read(self.root / layout.MANIFEST)
        generation = self._next_generation()
        promoted = copy.deepcopy(self._base)
        promoted.update(
            format_version=layout.FORMAT_VERSION,
            generation=generation,
            staged=False,
            retained=sorted(manifest.references(previous) - manifest.references(promoted)),
        )
        # Rewrite the staging manifest as the final one, then swap it in with one rename: a crash
        # before the rename leaves a valid staged generation, after it the promoted one.
        manifest.write(self.root / layout.STAGING_MANIFEST, promoted)
        os.replace(self.root / layout.STAGING_MANIFEST, self.root / layout.MANIFEST)
        fsio.fsync_dir(self.root)
        self._base = promoted
        self.staged = False
        cleanup.collect(self.root)
        return generation

    def _device_errors(self, doing: str) -> contextlib.AbstractContextManager[None]:
        self._written = {}  # a failed commit's files are collected as garbage; their checksums go too
        return device_errors(self.root, doing=doing, generation=self.generation)

    # ----- lifetime -----

    def close(self) -> None:
        """Release the lock, discarding uncommitted changes.

        In background mode a running job is stopped at its next read of vectors and waited for (never
        abandoned: its thread writes into the index); a finished result is published. What was not
        finished is left to the next writer, which finds it due again (`finish_maintenance()` first to
        have it done now).
        """
        bg = self._background
        if bg is not None and self._lock.held:
            self._closing = True
            bg.cancel.set()
            bg.wait()  # without the mutex: the job takes it to reserve shards and to publish
        with self._mutex:
            self._vectors, self._tables, self._schema = [], [], None
            if bg is not None and bg.busy and self._lock.held:
                self._discard_buffers()
                with contextlib.suppress(Exception):  # a failure leaves the last commit: nothing is lost
                    self._publish_background_now()
            self._close_segment_reader()
            self._lock.release()

    def _discard_buffers(self) -> None:
        """Forget every uncommitted change (so that a publication carries none of them)."""
        self._files = FilesLog(self.root, self._base)
        self._deleted = DeletedLog(self.root, self._base)
        self._records, self._dropped = {}, set()
        self._next_id = self._pending_start
        self._dirty = False

    def __enter__(self) -> IndexWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        lock = getattr(self, "_lock", None)
        if lock is not None:
            lock.release()
