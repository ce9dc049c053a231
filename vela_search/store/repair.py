"""Finding damaged index files and repairing an index around them, losing nothing silently.

`check_index` reads every data file the manifest names whole, checks its checksum (where the manifest
records one) and parses it (a memory-mapped shard file is mapped and streamed through the checksum).
`repair_index` then commits a generation without the damage: damaged shards are dropped, and the source
files whose segments they held are taken out of the files table (and their remaining segments
tombstoned), so the next `vela-search index` run embeds them again. A damaged files or deleted table is
rebuilt from what the shards still say.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..errors import IndexFormatError, StoreError
from . import faiss_ops, layout, manifest, table_log
from .integrity import IndexDamagedError, read_verified
from .shards import ShardReader
from .tables import files_from_bytes, ids_from_bytes
from .writer import IndexWriter


@dataclass
class Damage:
    """One damaged file: its path relative to the index folder, what it is, and why it is damaged."""

    path: str
    kind: str  # "shard", "files", "deleted", "trained" or "codes"
    reason: str
    shard: int | None = None


@dataclass
class CheckReport:
    """What `check_index` found, and what `repair_index` did about it."""

    index_dir: str
    generation: int
    files_checked: int
    damaged: list[Damage] = field(default_factory=list)
    unverified: int = 0  # files the manifest records no checksum for (written before checksums)
    repaired: bool = False
    repaired_generation: int | None = None
    dropped_shards: list[int] = field(default_factory=list)
    rows_dropped: int = 0
    files_to_reembed: list[str] = field(default_factory=list)
    unrepairable: list[str] = field(default_factory=list)
    codes_rebuilt: bool = False  # compressed codes re-trained and re-encoded from the exact vectors

    @property
    def ok(self) -> bool:
        """Whether no damage was found."""
        return not self.damaged

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict."""
        data = asdict(self)
        data["ok"] = self.ok
        return data


def check_index(root: str | Path) -> CheckReport:
    """Read and verify every data file of the index's current generation.

    Raises:
        IndexNotFoundError: no index there.
        IndexFormatError: the manifest itself is unreadable or names files outside the index folder.
    """
    root = Path(root)
    data = _read_manifest(root)
    report = CheckReport(index_dir=str(root), generation=int(data["generation"]), files_checked=0)
    checksums = data.get("checksums") or {}
    report.unverified = sum(1 for p in manifest.references(data) if p not in checksums)

    def verify(kind: str, relpath: str, load: Any, shard: int | None = None) -> None:
        report.files_checked += 1
        try:
            load()
        except IndexDamagedError as e:
            reason = str(e).split(" is damaged: ", 1)[-1].split(". Run `vela-search check", 1)[0]
            report.damaged.append(Damage(path=relpath, kind=kind, reason=reason, shard=shard))

    for entry in data["shards"]:
        reader = ShardReader(root, entry, int(data["dim"]), checksums)
        verify("shard", entry["meta"], lambda r=reader: r.load(vectors=False).ids, int(entry["number"]))
        verify("shard", entry["index"], lambda r=reader: r.index(verify=True), int(entry["number"]))
        if entry.get("codes"):
            verify("codes", entry["codes"], lambda r=reader: r.codes_index(), int(entry["number"]))
        reader.close()
    # The tables beside the shards: each is read whole, checked against its checksum, then parsed.
    parsers = {"files": files_from_bytes, "deleted": ids_from_bytes, "trained": faiss_ops.read_bytes}

    def read_table(parse: Callable[[Path, str, bytes], object], name: str) -> object:
        return parse(root, name, read_verified(root, name, checksums.get(name)))

    for kind, parse in parsers.items():
        if data[kind]:
            verify(kind, data[kind], functools.partial(read_table, parse, data[kind]))
    if data.get("codes"):
        name = data["codes"]["trained"]
        verify("codes", name, functools.partial(read_table, faiss_ops.read_bytes, name))
    # The tables' deltas (format version 2): a damaged delta is damage of its table.
    read = table_log.verified_reader(root, data)
    for kind in manifest.DELTA_KEYS:
        for delta in manifest.deltas(data, kind):
            verify(
                kind, delta["path"], functools.partial(table_log.read_delta, root, kind, delta["path"], read)
            )
    return report


def _read_manifest(root: Path) -> dict:
    from ..errors import IndexNotFoundError

    data = manifest.read(root / layout.MANIFEST)
    if data is None:
        raise IndexNotFoundError(f"no index at {root} (no {layout.MANIFEST})")
    return data


def repair_index(root: str | Path) -> CheckReport:
    """Check the index and commit a generation without its damaged files (a no-op when all is intact).

    Damaged shards are dropped; every source file with a segment in one is removed from the files table
    and its other segments tombstoned, so the next `vela-search index` run embeds it again. A damaged
    deleted table is rebuilt by tombstoning the segments whose content no longer matches the files
    table; a damaged files table is emptied, so the next run rescans every file (reusing the stored
    vectors of unchanged content). Damaged compressed codes (or their template) are re-trained and
    re-encoded from the exact vectors, which lose nothing. A damaged trained index of a fixed factory
    cannot be rebuilt here: it is reported.

    Raises:
        IndexLockedError: another process is writing the index.
        IndexFormatError: the manifest itself is unreadable.
    """
    root = Path(root)
    report = check_index(root)
    if report.ok:
        return report
    data = _read_manifest(root)
    kinds = {d.kind for d in report.damaged}
    if "trained" in kinds:
        report.unrepairable.append(
            f"{data['trained']} (the trained FAISS index new shards start from): rebuild the index with "
            "`vela-search index PATH --rebuild`"
        )
    bad_shards = sorted({d.shard for d in report.damaged if d.kind == "shard" and d.shard is not None})
    with IndexWriter(root, fingerprint=data["fingerprint"]) as writer:
        if writer.generation != report.generation:
            raise StoreError(f"index {root} changed while being checked; run the check again")
        entries = {int(e["number"]): e for e in data["shards"]}
        intact = [e for n, e in entries.items() if n not in bad_shards]
        files = None if "files" in kinds else writer.files()
        lost_paths = _paths_of_lost_rows(root, data, [entries[n] for n in bad_shards], intact, files)
        writer.drop_shards(bad_shards)
        report.dropped_shards = bad_shards
        report.rows_dropped = sum(int(entries[n]["count"]) for n in bad_shards)
        if "files" in kinds:
            writer.reset_tables(files=True)
        if "deleted" in kinds:
            writer.reset_tables(deleted=True)
            # Rows whose content matches their file's indexed content stay live; every other row is
            # tombstoned (an old version, or of unknown state), and its file is embedded again.
            stale, unknown = _stale_segments(root, data, intact, files)
            writer.delete(stale)
            lost_paths |= unknown
        if lost_paths:
            writer.remove_files(lost_paths)
            writer.delete(_ids_with_paths(root, data, intact, lost_paths))
        if "codes" in kinds:
            writer.rebuild_codes()
            report.codes_rebuilt = True
        report.files_to_reembed = sorted(lost_paths)
        report.repaired_generation = writer.commit()
        report.repaired = True
    return report


def _metadata(root: Path, data: dict, entry: dict, columns: list[str]) -> pa.Table | None:
    reader = ShardReader(root, entry, int(data["dim"]), data.get("checksums"))
    try:
        wanted = [c for c in columns if c in reader.schema.names]
        return reader.columns(wanted)
    except IndexFormatError:
        return None
    finally:
        reader.close()


def _paths_of(table: pa.Table | None) -> set[str]:
    paths: set[str] = set()
    if table is None:
        return paths
    if "path" in table.column_names:
        paths |= {p for p in table["path"].to_pylist() if p}
    if "paths" in table.column_names:
        for values in table["paths"].to_pylist():
            paths |= {p for p in values or [] if p}
    return paths


def _paths_of_lost_rows(
    root: Path, data: dict, lost: list[dict], intact: list[dict], files: pa.Table | None
) -> set[str]:
    """Source files that had a segment in a lost shard.

    Read from the lost shard's metadata where it is intact; otherwise, the files whose recorded segment
    count exceeds the segments the intact shards still hold of them.
    """
    paths: set[str] = set()
    unreadable = False
    for entry in lost:
        table = _metadata(root, data, entry, ["path", "paths"])
        if table is None:
            unreadable = True
        paths |= _paths_of(table)
    if unreadable and files is not None and files.num_rows:
        held: dict[str, int] = {}
        for entry in intact:
            table = _metadata(root, data, entry, ["path"])
            if table is not None and "path" in table.column_names:
                for p in table["path"].to_pylist():
                    held[p] = held.get(p, 0) + 1
        for row in files.to_pylist():
            if row["status"] == "indexed" and (row["segments"] or 0) > held.get(row["path"], 0):
                paths.add(row["path"])
    return paths


def _ids_where(root: Path, data: dict, intact: list[dict], columns: list[str], keep: Any) -> np.ndarray:
    found = [np.empty(0, np.int64)]
    for entry in intact:
        table = _metadata(root, data, entry, ["id", *columns])
        if table is not None and "id" in table.column_names:
            mask = keep(table)
            found.append(table["id"].to_numpy()[mask])
    return np.concatenate(found)


def _ids_with_paths(root: Path, data: dict, intact: list[dict], paths: set[str]) -> np.ndarray:
    wanted = pa.array(sorted(paths), type=pa.string())

    def keep(table: pa.Table) -> np.ndarray:
        mask = np.zeros(table.num_rows, dtype=bool)
        if "path" in table.column_names:
            mask |= pc.fill_null(pc.is_in(table["path"], value_set=wanted), False).to_numpy()
        return mask

    return _ids_where(root, data, intact, ["path"], keep)


def _stale_segments(
    root: Path, data: dict, intact: list[dict], files: pa.Table | None
) -> tuple[np.ndarray, set[str]]:
    """The lost tombstones: ids of rows that are not an indexed file's current content.

    Returns:
        (ids to tombstone, paths of files whose rows had no content digest to compare: re-embed them).
    """
    current = set()
    if files is not None:
        current = {(r["path"], r["sha256"]) for r in files.to_pylist() if r["status"] == "indexed"}
    stale = [np.empty(0, np.int64)]
    unknown: set[str] = set()
    for entry in intact:
        table = _metadata(root, data, entry, ["id", "path", "content_sha256"])
        if table is None:
            continue
        if not {"path", "content_sha256"} <= set(table.column_names):
            stale.append(table["id"].to_numpy())
            unknown |= _paths_of(table)
            continue
        pairs = zip(table["path"].to_pylist(), table["content_sha256"].to_pylist(), strict=True)
        mask = np.array([pair not in current for pair in pairs], dtype=bool)
        stale.append(table["id"].to_numpy()[mask])
    return np.concatenate(stale), unknown
