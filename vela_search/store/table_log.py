"""The files and deleted tables as a base file plus deltas, so a commit writes only what it changed.

A generation names a *base* table (``files`` / ``deleted`` in the manifest, as in format version 1) and,
in order, the *deltas* committed since (``files_deltas`` / ``deleted_deltas``: ``[{"path", "rows"}]``).
A commit appends one delta holding its changes; readers apply the deltas to the base, last change
winning. Deltas are merged with each other by size tiers (`vela_search.store.tiers`), so a generation
names only a few, and into a new base once their rows exceed a fraction of the base's (or at a reset):
rewriting the base then costs a constant amount per changed row, amortized, however large the library.

- A files delta has the `FILES_SCHEMA` columns (``status`` may be null) and ``removed`` (bool): a row
  with ``removed`` false puts that row (replacing the path's earlier one); true removes the path.
- A deleted delta has ``id`` (int64) and ``removed`` (bool): false tombstones the id, true drops its
  tombstone (its row was purged by a merge). Ids are never reused, so a dropped tombstone never returns.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from . import layout, manifest
from .integrity import damaged, read_verified
from .manifest import DELTA_KEYS, deltas
from .tables import (
    FILES_SCHEMA,
    ID_COLUMN,
    drop_files,
    empty_files,
    files_from_bytes,
    parse_parquet,
    read_parquet,
    to_files_table,
    write_ids,
    write_parquet,
)
from .tiers import TierPolicy, merge_start

REMOVED = "removed"
FILES_DELTA_SCHEMA = pa.schema(
    [f.with_nullable(True) if f.name == "status" else f for f in FILES_SCHEMA]
    + [pa.field(REMOVED, pa.bool_(), nullable=False)]
)
DELETED_DELTA_SCHEMA = pa.schema(
    [pa.field(ID_COLUMN, pa.int64(), nullable=False), pa.field(REMOVED, pa.bool_(), nullable=False)]
)
# A new base is written once the deltas hold more rows than this fraction of the base: the base's rewrite
# then costs at most 1 / fraction row writes per changed row, however large the table.
REBASE_FRACTION = 0.25
# A table of at most this many rows (base and deltas) is simply rewritten whole at each commit.
SMALL_TABLE_ROWS = 4096
# Deltas are merged by size tiers like shards, with no size limit of their own.
DELTA_POLICY = TierPolicy(fanout=4, min_items=4)

ReadBytes = Callable[[str], bytes]


def rebase_due(base_rows: int, delta_rows: int, *, reset: bool = False) -> bool:
    """Whether a commit writes its table whole (a new base) rather than a delta.

    Args:
        base_rows: rows of the current base (an estimate is enough).
        delta_rows: rows of its deltas, the commit's included.
        reset: the table starts afresh.
    """
    return reset or base_rows + delta_rows <= SMALL_TABLE_ROWS or delta_rows > REBASE_FRACTION * base_rows


def verified_reader(root: Path, data: dict) -> ReadBytes:
    """A function reading an index file named by `data` whole, checked against its recorded checksum."""
    return lambda relpath: read_verified(root, relpath, manifest.checksum(data, relpath))


# ----- files -----


def _files_delta_from_bytes(root: Path, relpath: str, raw: bytes) -> pa.Table:
    table = read_parquet(root, relpath, parse_parquet(root, relpath, raw))
    try:
        return table.select(FILES_DELTA_SCHEMA.names).cast(FILES_DELTA_SCHEMA)
    except (pa.ArrowException, ValueError, KeyError) as e:
        why = " ".join(str(e).split())[:200]
        raise damaged(root, relpath, f"it is not a files delta ({why})") from None


def _last_per_path(changes: pa.Table) -> pa.Table:
    """The last row of each path in `changes` (in file order), sorted by path."""
    seq = pa.array(np.arange(changes.num_rows, dtype=np.int64))
    last = changes.append_column("_seq", seq).group_by("path", use_threads=False).aggregate([("_seq", "max")])
    return changes.take(last["_seq_max"]).sort_by("path")


def apply_files_deltas(base: pa.Table, changes: list[pa.Table]) -> pa.Table:
    """`base` (FILES_SCHEMA) with the files deltas `changes` applied in order, sorted by path."""
    changes = [c for c in changes if c.num_rows]
    if not changes:
        return base
    last = _last_per_path(pa.concat_tables(changes))
    puts = last.filter(pc.invert(last[REMOVED])).drop_columns([REMOVED]).cast(FILES_SCHEMA)
    return pa.concat_tables([drop_files(base, last["path"]), puts]).sort_by("path").combine_chunks()


def read_files(root: Path, data: dict, read: ReadBytes | None = None) -> pa.Table:
    """The files table of generation `data`: its base with its deltas applied.

    Raises:
        IndexDamagedError: the base or a delta is missing, corrupted or of the wrong shape.
    """
    read = read or verified_reader(root, data)
    base = files_from_bytes(root, data["files"], read(data["files"])) if data["files"] else empty_files()
    changes = [_files_delta_from_bytes(root, d["path"], read(d["path"])) for d in deltas(data, "files")]
    return apply_files_deltas(base, changes)


def files_delta(changes: dict[str, dict[str, Any] | None]) -> pa.Table:
    """A files delta from changes by path (a row put, or None for a removed path), sorted by path."""
    puts = to_files_table(row for row in changes.values() if row is not None)
    puts = puts.append_column(REMOVED, pa.array(np.zeros(puts.num_rows, bool)))
    gone = sorted(p for p, row in changes.items() if row is None)
    removals = pa.table(
        {
            name: pa.array(gone, pa.string())
            if name == "path"
            else pa.array(np.ones(len(gone), bool))
            if name == REMOVED
            else pa.nulls(len(gone), FILES_DELTA_SCHEMA.field(name).type)
            for name in FILES_DELTA_SCHEMA.names
        }
    )
    return pa.concat_tables([puts.cast(FILES_DELTA_SCHEMA), removals.cast(FILES_DELTA_SCHEMA)]).sort_by(
        "path"
    )


class FilesLog:
    """The files table of a writer: the committed base and deltas, and the changes since the last commit."""

    def __init__(self, root: Path, data: dict) -> None:
        self.root = root
        self._data = data  # the last committed manifest
        self._table: pa.Table | None = None  # committed table plus the changes merged so far
        self._unmerged: dict[str, dict[str, Any] | None] = {}  # changes not yet merged into _table
        self._changes: dict[str, dict[str, Any] | None] = {}  # changes since the last commit
        self._paths: set[str] | None = None
        self._base_rows: int | None = None  # rows of the committed base, once needed
        self._reset = False

    @property
    def dirty(self) -> bool:
        """Whether there is anything to commit."""
        return bool(self._changes) or self._reset

    def table(self) -> pa.Table:
        """The files table including uncommitted changes."""
        if self._table is None:
            self._table = read_files(self.root, self._data)
        if self._unmerged:
            # Merged lazily: indexing puts one file's rows at a time, and filtering the whole table for
            # each of them made every landed file cost milliseconds in a large collection.
            changes, self._unmerged = self._unmerged, {}
            kept = drop_files(self._table, changes.keys())
            put = to_files_table(row for row in changes.values() if row is not None)
            self._table = pa.concat_tables([kept, put]).combine_chunks()
        return self._table

    def put(self, table: pa.Table) -> None:
        """Insert or replace rows (validated FILES_SCHEMA rows) by path."""
        for row in table.to_pylist():
            self._unmerged[row["path"]] = self._changes[row["path"]] = row
            if self._paths is not None:
                self._paths.add(row["path"])

    def remove(self, paths: Iterable[str]) -> bool:
        """Remove rows by path; returns whether any existed."""
        if self._paths is None:
            self._paths = set(self.table()["path"].to_pylist())
        changed = False
        for path in paths:
            if path in self._paths:  # removing an unknown path changes nothing (and commits nothing)
                self._paths.discard(path)
                self._unmerged[path] = self._changes[path] = None
                changed = True
        return changed

    def reset(self) -> None:
        """Start afresh (empty) at the next commit, without reading the committed table."""
        self._table, self._unmerged, self._changes, self._paths = empty_files(), {}, {}, None
        self._reset = True

    def commit(self, new: dict, generation: int) -> dict[str, str]:
        """Write this commit's delta (or a new base) into the manifest `new`; returns the files' checksums."""
        if not self.dirty:
            return {}
        written: dict[str, str] = {}
        delta = files_delta(self._changes)
        log = deltas(new, "files")
        if self._base_rows is None:
            self._base_rows = _footer_rows(self.root, new["files"]) if new["files"] else 0
        base_rows = 0 if self._reset else self._base_rows
        if rebase_due(base_rows, sum(d["rows"] for d in log) + delta.num_rows, reset=self._reset):
            table = self.table().sort_by("path")
            self._table = table
            new["files"] = layout.files_table(generation) if table.num_rows else None
            if new["files"]:
                written[new["files"]] = write_parquet(self.root / new["files"], table)
            self._base_rows, log = table.num_rows, []
        else:
            read = verified_reader(self.root, new)
            start = merge_start(
                [d["rows"] for d in log] + [delta.num_rows], max_size=2**62, policy=DELTA_POLICY
            )
            if start is not None:
                older = [_files_delta_from_bytes(self.root, d["path"], read(d["path"])) for d in log[start:]]
                delta = _last_per_path(pa.concat_tables([*older, delta]))
                log = log[:start]
            path = layout.files_delta(generation)
            written[path] = write_parquet(self.root / path, delta)
            log.append({"path": path, "rows": delta.num_rows})
        new[DELTA_KEYS["files"]] = log
        self._changes, self._reset = {}, False
        if self._table is None:
            self._unmerged = {}  # the committed table now holds them; it is read when first needed
        return written

    def committed(self, data: dict) -> None:
        """Follow the manifest just committed."""
        self._data = data


def _footer_rows(root: Path, relpath: str) -> int:
    """Rows of a Parquet file from its footer alone (a size estimate: damage is reported by real reads)."""
    try:
        return int(pq.read_metadata(root / relpath).num_rows)
    except (OSError, pa.ArrowException, ValueError):
        return 0


# ----- deleted -----


def _deleted_delta_from_bytes(root: Path, relpath: str, raw: bytes) -> tuple[np.ndarray, np.ndarray]:
    table = read_parquet(root, relpath, parse_parquet(root, relpath, raw))
    try:
        ids = table[ID_COLUMN].to_numpy().astype(np.int64, copy=False)
        removed = table[REMOVED].to_numpy(zero_copy_only=False).astype(bool)
    except (pa.ArrowException, KeyError, ValueError, TypeError) as e:
        raise damaged(root, relpath, f"it is not a deleted delta ({e})") from None
    return ids[~removed], ids[removed]


def read_delta(root: Path, kind: str, relpath: str, read: ReadBytes) -> object:
    """Read, check and parse one delta of table `kind` (``files`` or ``deleted``).

    Raises:
        IndexDamagedError: it is missing, corrupted or of the wrong shape.
    """
    parse = _files_delta_from_bytes if kind == "files" else _deleted_delta_from_bytes
    return parse(root, relpath, read(relpath))


def read_deleted(root: Path, data: dict, read: ReadBytes | None = None) -> np.ndarray:
    """The sorted tombstoned ids of generation `data`: its base with its deltas applied.

    Raises:
        IndexDamagedError: the base or a delta is missing, corrupted or of the wrong shape.
    """
    from .tables import ids_from_bytes

    read = read or verified_reader(root, data)
    ids = ids_from_bytes(root, data["deleted"], read(data["deleted"])) if data["deleted"] else None
    ids = np.empty(0, np.int64) if ids is None else ids
    added, removed = [ids], [np.empty(0, np.int64)]
    for d in deltas(data, "deleted"):
        a, r = _deleted_delta_from_bytes(root, d["path"], read(d["path"]))
        added.append(a)
        removed.append(r)
    if len(added) == 1:
        return ids
    return np.setdiff1d(np.unique(np.concatenate(added)), np.concatenate(removed))


def contains(ids: np.ndarray, values: np.ndarray) -> np.ndarray:
    """For each of `values`, whether the sorted array `ids` holds it (by binary search)."""
    at = np.minimum(np.searchsorted(ids, values), max(len(ids) - 1, 0))
    return ids[at] == values if len(ids) else np.zeros(len(values), bool)


def insert_sorted(ids: np.ndarray, new: np.ndarray) -> np.ndarray:
    """Sorted unique `ids` with the sorted unique `new` ones that it lacks inserted (O(len(ids)))."""
    fresh = new[~contains(ids, new)]
    return np.insert(ids, np.searchsorted(ids, fresh), fresh)


class DeletedLog:
    """The tombstones of a writer: the committed set, and what this commit adds and drops."""

    def __init__(self, root: Path, data: dict) -> None:
        self.root = root
        self._data = data
        self._ids: np.ndarray | None = None  # sorted; includes _pending once merged
        self._at_commit: np.ndarray | None = None  # the ids as the last commit left them
        self._pending: list[np.ndarray] = []
        self._added: list[np.ndarray] = []  # tombstoned since the last commit
        self._dropped: list[np.ndarray] = []  # tombstones dropped since the last commit (rows purged)
        self._reset = False

    @property
    def dirty(self) -> bool:
        """Whether there is anything to commit."""
        return bool(self._added or self._dropped) or self._reset

    def ids(self) -> np.ndarray:
        """Sorted tombstoned ids, including uncommitted changes."""
        if self._ids is None:
            self._ids = self._at_commit = read_deleted(self.root, self._data)
        if self._pending:
            # Merged lazily: indexing calls delete() once per changed file.
            self._ids = insert_sorted(self._ids, np.unique(np.concatenate(self._pending)))
            self._pending = []
        return self._ids

    def add(self, ids: np.ndarray) -> None:
        """Tombstone sorted unique `ids` (each an existing row)."""
        self._pending.append(ids)
        self._added.append(ids)

    def drop(self, ids: np.ndarray) -> None:
        """Drop the tombstones of `ids` (their rows are gone)."""
        if len(ids):
            current = self.ids()
            self._ids = np.setdiff1d(current, ids, assume_unique=True)
            self._dropped.append(np.asarray(ids, np.int64))

    def reset(self) -> None:
        """Start afresh (no tombstones) at the next commit."""
        self._ids, self._pending, self._added, self._dropped = np.empty(0, np.int64), [], [], []
        self._reset = True

    def commit(self, new: dict, generation: int) -> dict[str, str]:
        """Write this commit's delta (or a new base) into the manifest `new`; returns the files' checksums."""
        if not self.dirty:
            return {}
        written: dict[str, str] = {}
        ids = self.ids()
        before = self._at_commit if self._at_commit is not None and not self._reset else np.empty(0, np.int64)
        dropped = np.unique(np.concatenate(self._dropped)) if self._dropped else np.empty(0, np.int64)
        added = np.unique(np.concatenate(self._added)) if self._added else np.empty(0, np.int64)
        # Not already tombstoned, and not purged in the same commit.
        added = added[~contains(before, added) & contains(ids, added)]
        if not (len(added) or len(dropped) or self._reset):  # only ids that were tombstoned already
            self._added, self._at_commit = [], ids
            return written
        log = deltas(new, "deleted")
        base_rows = int(new.get("num_deleted") or 0)  # an upper bound of the base's rows is enough here
        if rebase_due(base_rows, sum(d["rows"] for d in log) + len(added) + len(dropped), reset=self._reset):
            new["deleted"] = layout.deleted_table(generation) if ids.size else None
            if new["deleted"]:
                written[new["deleted"]] = write_ids(self.root / new["deleted"], ids)
            log = []
        else:
            start = merge_start(
                [d["rows"] for d in log] + [len(added) + len(dropped)], max_size=2**62, policy=DELTA_POLICY
            )
            if start is not None:
                read = verified_reader(self.root, new)
                older = [
                    _deleted_delta_from_bytes(self.root, d["path"], read(d["path"])) for d in log[start:]
                ]
                dropped = np.unique(np.concatenate([dropped, *(r for _, r in older)]))
                added = np.setdiff1d(np.concatenate([added, *(a for a, _ in older)]), dropped)
                log = log[:start]
            path = layout.deleted_delta(generation)
            table = pa.table(
                {
                    ID_COLUMN: pa.array(np.concatenate([added, dropped]), pa.int64()),
                    REMOVED: pa.array(
                        np.concatenate([np.zeros(len(added), bool), np.ones(len(dropped), bool)])
                    ),
                },
                schema=DELETED_DELTA_SCHEMA,
            )
            written[path] = write_parquet(self.root / path, table)
            log.append({"path": path, "rows": table.num_rows})
        new[DELTA_KEYS["deleted"]] = log
        self._added, self._dropped, self._reset, self._at_commit = [], [], False, ids
        return written

    def committed(self, data: dict) -> None:
        """Follow the manifest just committed."""
        self._data = data


def extend(root: Path, old: dict, table: Any, new: dict, kind: str, read: ReadBytes) -> Any:
    """Table `kind` (``files`` or ``deleted``) of generation `new`, from `table`, the same table of the
    older generation `old`, when `new` has the same base and `old`'s deltas followed by more: only those
    are read and applied (files and deltas never change once written). None when `new` does not extend
    `old` (a new base, or deltas replaced), and the table must be read whole.

    Raises:
        IndexDamagedError: a new delta is missing, corrupted or of the wrong shape.
    """
    before, after = deltas(old, kind), deltas(new, kind)
    if old[kind] != new[kind] or after[: len(before)] != before:
        return None
    added = [read_delta(root, kind, d["path"], read) for d in after[len(before) :]]
    if kind == "files":
        return apply_files_deltas(table, added)  # type: ignore[arg-type]
    if not added:
        return table
    puts = np.concatenate([table, *(a for a, _ in added)])  # type: ignore[misc]
    return np.setdiff1d(np.unique(puts), np.concatenate([r for _, r in added]))  # type: ignore[misc]
