"""Planning an incremental run: which files to embed, skip, record as duplicates, fail or forget.

Content, not paths, is what the index stores: the segments of a content digest (sha256) belong to exactly
one ``indexed`` row of the files table (the *owner*, whose path the segments carry); every other path with
that content gets a ``duplicate`` row. The plan compares the files on disk with the files table of the
generation being written and decides, per file:

- unchanged (same size and mtime, or the same digest after a touch): skipped;
- new or changed content: embedded (it becomes the owner) unless an owner of that content already exists,
  in which case it is a duplicate; among new files, the first in path order owns the content, paths
  reached through a symbolic link coming after the others (hits then name the file itself, not a link);
- vanished (under a given root and gone from disk): its row is removed (``prune``);
- moved or renamed (a vanished owner's content found under a new path, or in a remaining duplicate): that
  path takes over the stored segments (a :class:`RelinkJob`: vectors read back from the store, nothing
  decoded or embedded), and the old row goes when it lands;
- a file whose old content it owned changes or fails: that content's segments are tombstoned, and a
  remaining duplicate of it is re-embedded as its new owner.

Segments whose ``(path, content_sha256)`` matches no ``indexed`` row (left by an interrupted or older
writer) are tombstoned too, so the index always equals what an uninterrupted run would have built.
"""

from __future__ import annotations

import hashlib
import os
import stat as stat_mod
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import soundfile

from vela_search.audio import discover_audio_files, plan_windows
from vela_search.errors import AudioDecodeError

if TYPE_CHECKING:
    from vela_search.store import AudioIndex, IndexWriter

INDEXED, DUPLICATE, FAILED = "indexed", "duplicate", "failed"
_HASH_BLOCK = 1 << 20


@dataclass
class FileState:
    """A file found on disk, as the run sees it."""

    path: str
    root: str
    size: int | None = None
    mtime_ns: int | None = None
    sha256: str | None = None
    header_duration_s: float | None = None
    error: str | None = None

    def row(
        self, status: str, *, error: str | None = None, duration_s: float | None = None, segments: int = 0
    ) -> dict[str, Any]:
        """This file as a files-table row."""
        return {
            "path": self.path,
            "size": self.size,
            "mtime_ns": self.mtime_ns,
            "sha256": self.sha256,
            "duration_s": duration_s,
            "status": status,
            "error": error,
            "segments": segments,
            "root": self.root,
        }


@dataclass
class EmbedJob:
    """A file whose content is embedded in this run.

    Attributes:
        file: the file (it becomes the owner of its content).
        planned_segments: segments expected from its header duration (for progress only).
        duplicates: files with the same content, recorded once this job lands (duplicate or failed).
        replaces: ids of this path's old segments, tombstoned when this job lands.
    """

    file: FileState
    planned_segments: int
    duplicates: list[FileState] = field(default_factory=list)
    replaces: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))


@dataclass
class RelinkJob:
    """Content already embedded under a path that is gone: a moved or renamed file.

    Its segments are copied to the new path (vectors read back from the store) instead of being decoded and
    embedded again, and the originals are tombstoned in the same commit.

    Attributes:
        file: the file at its new path (it becomes the owner of the content).
        source_path: the path the content was indexed under.
        source_ids: the segments to copy, in segment order.
        duration_s: the content's decoded duration, as recorded for the source.
        duplicates: files with the same content, recorded once this job lands.
        replaces: ids tombstoned when this job lands: the source's segments and this path's old ones.
    """

    file: FileState
    source_path: str
    source_ids: np.ndarray
    duration_s: float | None
    duplicates: list[FileState] = field(default_factory=list)
    replaces: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))

    def as_embed_job(self, window_s: float, hop_s: float) -> EmbedJob:
        """The same file embedded from its audio (when its stored segments cannot be read back)."""
        return EmbedJob(
            file=self.file,
            planned_segments=planned_segments(self.duration_s, window_s, hop_s),
            duplicates=self.duplicates,
            replaces=self.replaces,
        )


@dataclass
class RunPlan:
    """Everything a run will do, decided before any audio is decoded."""

    files_seen: int = 0
    skipped: int = 0
    existing: dict[str, dict[str, Any]] = field(default_factory=dict)
    jobs: list[EmbedJob] = field(default_factory=list)
    relinks: list[RelinkJob] = field(default_factory=list)
    put_rows: list[dict[str, Any]] = field(default_factory=list)
    remove_paths: list[str] = field(default_factory=list)
    delete_ids: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))
    duplicates: int = 0
    failures: list[tuple[str, str]] = field(default_factory=list)
    problems: list[tuple[str, str]] = field(default_factory=list)

    def unchanged_row(self, row: dict[str, Any]) -> bool:
        """Whether ``row`` equals the files row already stored for its path (no need to write it)."""
        old = self.existing.get(row["path"])
        return old is not None and all(old.get(k) == v for k, v in row.items())

    @property
    def planned_segments(self) -> int:
        return sum(job.planned_segments for job in self.jobs)


def failure_reason(error: BaseException, path: str) -> str:
    """The reason in an error about ``path``, without the "cannot decode audio file '<path>': " prefix."""
    text = str(error)
    prefix = f"cannot decode audio file '{path}': "
    if text.startswith(prefix):
        return text[len(prefix) :]
    if isinstance(error, AudioDecodeError):
        return text
    return f"{type(error).__name__}: {text}"


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file's bytes (read in 1 MiB blocks)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(_HASH_BLOCK):
            digest.update(block)
    return digest.hexdigest()


def _root_of(path: str, roots: Sequence[str]) -> str:
    """The most specific given root holding ``path`` (a file given directly: its directory)."""
    best = None
    for root in roots:
        if path == root or path.startswith(root.rstrip(os.sep) + os.sep):
            if best is None or len(root) > len(best):
                best = root
    if best is None or best == path:
        return os.path.dirname(path)
    return best


def _under_roots(path: str, roots: Sequence[str]) -> bool:
    return any(path == r or path.startswith(r.rstrip(os.sep) + os.sep) for r in roots)


def _vanished(path: str) -> bool:
    """Gone from disk. A file that merely cannot be stat-ed now (permissions) is not."""
    try:
        os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return True
    except OSError:
        return False
    return False


def _probe(state: FileState) -> FileState:
    """Digest the file and read its duration from the header (a failure is recorded, not raised)."""
    try:
        state.sha256 = sha256_file(state.path)
    except OSError as exc:
        reason = "permission denied" if isinstance(exc, PermissionError) else (exc.strerror or str(exc))
        state.error = f"cannot read file ({reason})"
        return state
    try:
        # For progress estimates only: a header read where libsndfile can (never a decode or ffprobe run).
        state.header_duration_s = float(soundfile.info(state.path).duration)
    except (RuntimeError, ValueError, OSError, TypeError):
        pass  # decoding reports the reason if the file is broken
    return state


def planned_segments(duration_s: float | None, window_s: float, hop_s: float) -> int:
    """Segments a file of the given header duration is expected to give (1 when unknown)."""
    if duration_s is None or duration_s <= 0:
        return 1
    return len(plan_windows(duration_s, window_s, hop_s))


def segment_groups(writer: IndexWriter | AudioIndex) -> dict[tuple[str, str], np.ndarray]:
    """Live segment ids of the writer's generation (or of a snapshot), grouped by ``(path, content_sha256)``.

    Segments without those columns (added by other code through the store API) are left out.
    """
    deleted = writer.deleted_ids()
    tables = list(writer.shard_metadata(["id", "path", "content_sha256"]))
    if not tables:
        return {}
    table = pa.concat_tables(tables)
    if len(deleted):
        keep = ~np.isin(table["id"].to_numpy(), deleted)
        table = table.filter(pa.array(keep))
    table = table.filter(pc.and_(pc.is_valid(table["path"]), pc.is_valid(table["content_sha256"])))
    grouped = table.group_by(["path", "content_sha256"]).aggregate([("id", "list")])
    return {
        (p, s): np.asarray(ids, dtype=np.int64)
        for p, s, ids in zip(
            grouped["path"].to_pylist(),
            grouped["content_sha256"].to_pylist(),
            grouped["id_list"].to_pylist(),
            strict=True,
        )
    }


def _through_a_link(state: FileState) -> bool:
    """Whether the path reaches its file through a symbolic link (the file itself, or a folder above it)."""
    return os.path.realpath(state.path) != state.path


def recorded_roots(files: pa.Table) -> list[str]:
    """Distinct roots recorded in a files table, sorted."""
    if files.num_rows == 0:
        return []
    return sorted({r for r in files["root"].to_pylist() if r})


def plan_run(
    writer: IndexWriter | AudioIndex,
    paths: Sequence[str | os.PathLike[str]],
    *,
    window_s: float,
    hop_s: float,
    prune: bool,
    hash_workers: int = 4,
    on_progress: Callable[[str, int, int, str | None], None] | None = None,
) -> RunPlan:
    """Compare the files under ``paths`` with the writer's files table and decide what the run does.

    Args:
        writer: the open writer (its files table and shards describe the current state), or a read-only
            snapshot of the index for a preview (nothing is written either way).
        paths: files and directories to index.
        window_s: window length for files longer than 30 s (for planned segment counts).
        hop_s: hop between windows.
        prune: remove rows of files under ``paths`` that are gone from disk.
        hash_workers: threads digesting files.
        on_progress: called as ``(phase, done, total, path)`` while scanning and hashing.
    """
    report = on_progress or (lambda *a: None)
    roots = [os.path.abspath(os.path.expanduser(p)) for p in paths]
    found = discover_audio_files(roots)
    plan = RunPlan(files_seen=len(found.files), problems=[(str(p), r) for p, r in found.problems])

    rows: dict[str, dict[str, Any]] = {r["path"]: r for r in writer.files().to_pylist()}
    groups = segment_groups(writer)

    # 1. stat: unchanged files are settled without reading them.
    states: list[FileState] = []
    candidates: list[FileState] = []
    for done, path in enumerate(found.files, start=1):
        key = str(path)
        state = FileState(path=key, root=_root_of(key, roots))
        try:
            st = os.stat(key)
            state.size, state.mtime_ns = int(st.st_size), int(st.st_mtime_ns)
            if not stat_mod.S_ISREG(st.st_mode):
                state.error = "not a regular file"
        except OSError as exc:
            state.error = f"cannot access file ({exc.strerror or exc})"
        states.append(state)
        row = rows.get(key)
        if (
            state.error is None
            and row is not None
            and row["status"] in (INDEXED, DUPLICATE)
            and row["size"] == state.size
            and row["mtime_ns"] == state.mtime_ns
        ):
            state.sha256 = row["sha256"]
        elif state.error is None:
            candidates.append(state)
        if done % 256 == 0 or done == len(found.files):
            report("scan", done, len(found.files), key)

    # 2. digest new and changed files (and read their header durations) in parallel.
    if candidates:
        with ThreadPoolExecutor(max_workers=max(1, hash_workers), thread_name_prefix="vela-hash") as pool:
            for done, state in enumerate(pool.map(_probe, candidates), start=1):
                report("hash", done, len(candidates), state.path)

    # 3. decide.
    current = {s.path for s in states}
    stable_owner: dict[str, str] = {}  # sha -> path of an indexed row that stays as it is
    new_rows: dict[str, dict[str, Any]] = {}
    delete: list[np.ndarray] = []
    changed_owner: dict[str, np.ndarray] = {}  # path -> ids of the old content it owned
    vanished_owner: dict[str, tuple[str, dict[str, Any], np.ndarray]] = {}  # sha -> (path, row, ids)

    def old_segments(path: str) -> np.ndarray:
        row = rows.get(path)
        if row is None or row["status"] != INDEXED:
            return np.empty(0, np.int64)
        return groups.get((path, row["sha256"]), np.empty(0, np.int64))

    for path, row in rows.items():
        if path in current:
            continue
        if prune and _under_roots(path, roots) and _vanished(path):
            plan.remove_paths.append(path)
            ids = old_segments(path)
            if row["status"] == INDEXED and len(ids):
                # Kept for a new path with the same content (a move); tombstoned below if none claims it.
                vanished_owner[row["sha256"]] = (path, row, np.sort(ids))
            else:
                delete.append(ids)
        elif row["status"] == INDEXED:
            stable_owner.setdefault(row["sha256"], path)

    placements: list[FileState] = []
    for state in states:
        row = rows.get(state.path)
        if state.error is not None:
            plan.failures.append((state.path, state.error))
            new_rows[state.path] = state.row(FAILED, error=state.error)
            delete.append(old_segments(state.path))
            continue
        same = row is not None and row["status"] in (INDEXED, DUPLICATE) and row["sha256"] == state.sha256
        if same:
            plan.skipped += 1
            if (row["size"], row["mtime_ns"]) != (state.size, state.mtime_ns):
                new_rows[state.path] = {**row, "size": state.size, "mtime_ns": state.mtime_ns}
            if row["status"] == INDEXED:
                stable_owner.setdefault(row["sha256"], state.path)
            else:
                placements.append(state)  # a duplicate: its owner may be gone
        else:
            placements.append(state)
            changed_owner[state.path] = old_segments(state.path)

    jobs_by_sha: dict[str, EmbedJob | RelinkJob] = {}
    placements.sort(key=_through_a_link)  # stable: path order otherwise
    for state in placements:  # the first new path with a content owns it
        sha = state.sha256
        assert sha is not None
        row = rows.get(state.path)
        was_duplicate = row is not None and row["status"] == DUPLICATE and row["sha256"] == sha
        if sha in stable_owner:
            if was_duplicate:
                continue  # still a duplicate of a live owner: nothing changes
            plan.duplicates += 1
            owner_row = rows.get(stable_owner[sha]) or {}
            new_rows[state.path] = state.row(DUPLICATE, duration_s=owner_row.get("duration_s"))
            delete.append(changed_owner.pop(state.path, np.empty(0, np.int64)))
        elif sha in jobs_by_sha:
            job = jobs_by_sha[sha]
            job.duplicates.append(state)
            job.replaces = _concat([job.replaces, changed_owner.pop(state.path, np.empty(0, np.int64))])
            if was_duplicate:
                plan.skipped -= 1  # recorded again once its new owner lands
        elif sha in vanished_owner:
            if was_duplicate:
                plan.skipped -= 1  # its owner is gone: it takes over the owner's segments
            source_path, source_row, source_ids = vanished_owner.pop(sha)
            relink = RelinkJob(
                file=state,
                source_path=source_path,
                source_ids=source_ids,
                duration_s=source_row["duration_s"],
                replaces=_concat([source_ids, changed_owner.pop(state.path, np.empty(0, np.int64))]),
            )
            jobs_by_sha[sha] = relink
            plan.relinks.append(relink)
        else:
            if was_duplicate:
                plan.skipped -= 1  # its owner is gone: it is re-embedded as the new owner
            duration = state.header_duration_s
            if duration is None and was_duplicate:
                duration = row["duration_s"]
            job = EmbedJob(
                file=state,
                planned_segments=planned_segments(duration, window_s, hop_s),
                replaces=changed_owner.pop(state.path, np.empty(0, np.int64)),
            )
            jobs_by_sha[sha] = job
            plan.jobs.append(job)

    # A vanished owner whose content lives on in a copy outside this run's paths: the copy takes over.
    for path, row in rows.items() if vanished_owner else ():
        sha = row["sha256"]
        if row["status"] != DUPLICATE or sha not in vanished_owner:
            continue
        if path not in current and not _vanished(path):  # stat only the few candidates
            source_path, source_row, source_ids = vanished_owner.pop(sha)
            copy = FileState(path, row["root"], size=row["size"], mtime_ns=row["mtime_ns"], sha256=sha)
            plan.relinks.append(
                RelinkJob(copy, source_path, source_ids, source_row["duration_s"], replaces=source_ids)
            )
    delete.extend(ids for _path, _row, ids in vanished_owner.values())  # vanished, not moved
    # A moved file's old row goes when its new path lands, in the same commit: a run interrupted before
    # then finds the move again.
    moved = {job.source_path for job in plan.relinks}
    plan.remove_paths = [path for path in plan.remove_paths if path not in moved]
    # Segments no indexed row accounts for: left by an interrupted writer (or one of an older version).
    owned = {(p, r["sha256"]) for p, r in rows.items() if r["status"] == INDEXED}
    for key, ids in groups.items():
        if key not in owned:
            delete.append(ids)
    plan.existing = rows
    plan.put_rows = [row for row in new_rows.values() if not plan.unchanged_row(row)]
    plan.delete_ids = _concat(delete)
    return plan


def _concat(parts: Iterable[np.ndarray]) -> np.ndarray:
    parts = [p for p in parts if len(p)]
    return np.unique(np.concatenate(parts)) if parts else np.empty(0, np.int64)
