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
  remaining duplicate of it is re-embedded as its new owner;
- a file whose bytes changed but whose audio payload did not (a tag edit: the payload digest of
  :mod:`vela_search.audio.payload`, recorded on its first segment, is the same): a :class:`RelinkJob` from
  its own path, so its stored segments take the new content digest and its words are read again, nothing
  decoded or embedded.

Segments whose ``(path, content_sha256)`` matches no ``indexed`` row (left by an interrupted or older
writer) are tombstoned too, so the index always equals what an uninterrupted run would have built.
"""

from __future__ import annotations

import os
import stat as stat_mod
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import soundfile

from vela_search.audio import discover_audio_files, plan_windows
from vela_search.audio.hf_dataset import is_dataset_uri
from vela_search.audio.payload import digest_file
from vela_search.audio.sources import native_stderr_captured
from vela_search.errors import AudioDecodeError, VelaError

if TYPE_CHECKING:
    from vela_search.audio import AudioBytes
    from vela_search.audio.hf_dataset import DatasetListing
    from vela_search.store import AudioIndex, IndexWriter

INDEXED, DUPLICATE, FAILED = "indexed", "duplicate", "failed"
# The segment metadata column holding a file's audio payload digest (on its first segment's row).
AUDIO_SHA256_COLUMN = "audio_sha256"


class RootVanishedError(VelaError):
    """A folder of the run vanished while it was planned (an unmounted drive): the run changed nothing."""


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
    # The digest of the audio payload without tags (None: not digested, or a format without one).
    audio_sha256: str | None = None
    # A dataset row: reads its audio bytes (the path is then the row's name, not a file).
    audio: Callable[[], AudioBytes] | None = field(default=None, repr=False)

    @property
    def source(self) -> str | Callable[[], AudioBytes]:
        """What the decoder reads: the file's path, or the dataset row's loader."""
        return self.audio if self.audio is not None else self.path

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
    embedded again, and the originals are tombstoned in the same commit. A file whose tags changed but
    not its audio is relinked from its own path (``source_path`` is its path: only its content digest and
    words change).

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
    # Files written to less than ``settle_s`` ago (still being copied): left as they are for a later run.
    held: list[str] = field(default_factory=list)

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
    """Gone from disk. A file that merely cannot be stat-ed now (permissions) is not.

    A dataset row that the run's listing of its split lacks is gone.
    """
    if is_dataset_uri(path):
        return True
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
        state.sha256, state.audio_sha256 = digest_file(state.path)
    except OSError as exc:
        reason = "permission denied" if isinstance(exc, PermissionError) else (exc.strerror or str(exc))
        state.error = f"cannot read file ({reason})"
        return state
    try:
        # For progress estimates only: a header read where libsndfile can (never a decode or ffprobe run).
        with native_stderr_captured():  # the MP3 decoder's notes on a bad file: decoding records them
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


def same_audio_paths(
    writer: IndexWriter | AudioIndex, candidates: dict[str, tuple[str, np.ndarray]]
) -> set[str]:
    """The candidate paths whose audio payload digest equals the one recorded on their old segments.

    Args:
        writer: the writer (or snapshot) holding the old segments.
        candidates: ``{path: (payload digest now, ids of its old segments)}``.
    """
    if not candidates:
        return set()
    wanted = np.unique(np.concatenate([ids for _, ids in candidates.values()]))
    recorded: dict[int, str] = {}
    for table in writer.shard_metadata(["id", AUDIO_SHA256_COLUMN]):
        table = table.filter(pc.is_valid(table[AUDIO_SHA256_COLUMN]))
        table = table.filter(pc.is_in(table["id"], pa.array(wanted)))
        recorded.update(zip(table["id"].to_pylist(), table[AUDIO_SHA256_COLUMN].to_pylist(), strict=True))
    return {
        path for path, (digest, ids) in candidates.items() if any(recorded.get(int(i)) == digest for i in ids)
    }


def _through_a_link(state: FileState) -> bool:
    """Whether the path reaches its file through a symbolic link (the file itself, or a folder above it)."""
    return state.audio is None and os.path.realpath(state.path) != state.path


def recorded_roots(files: pa.Table, *, folders_only: bool = False) -> list[str]:
    """Distinct roots recorded in a files table, sorted (``folders_only``: without dataset splits)."""
    if files.num_rows == 0:
        return []
    return sorted({r for r in files["root"].to_pylist() if r and not (folders_only and is_dataset_uri(r))})


def _dataset_states(dataset: DatasetListing) -> list[FileState]:
    """Dataset rows as the run sees files: size and digest known, bytes read when decoded."""
    return [
        FileState(path=row.uri, root=dataset.root, size=row.size, sha256=row.sha256, audio=row.load)
        for row in dataset.rows
    ]


def plan_run(
    writer: IndexWriter | AudioIndex,
    paths: Sequence[str | os.PathLike[str]],
    *,
    window_s: float,
    hop_s: float,
    prune: bool,
    hash_workers: int = 4,
    on_progress: Callable[[str, int, int, str | None], None] | None = None,
    dataset: DatasetListing | None = None,
    settle_s: float = 0.0,
    keep_missing_roots: bool = False,
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
        dataset: the rows of a dataset split to index instead of ``paths`` (already digested); rows of
            that split that the listing lacks are removed (``prune``).
        settle_s: files modified less than this many seconds ago are still being written: the run
            leaves them (and their rows) as they are and lists them in ``RunPlan.held``.
        keep_missing_roots: a given folder that is missing (an unmounted drive) is left out, so its files
            are not pruned; one that vanishes while the run plans raises :class:`RootVanishedError`.

    Raises:
        RootVanishedError: with ``keep_missing_roots``, a folder vanished during planning.
    """
    report = on_progress or (lambda *a: None)
    rows: dict[str, dict[str, Any]] = {r["path"]: r for r in writer.files().to_pylist()}
    if dataset is not None:
        roots = [dataset.root]
        plan = RunPlan(files_seen=len(dataset.rows), problems=list(dataset.problems))
        states = _dataset_states(dataset)
    else:
        roots = [os.path.abspath(os.path.expanduser(p)) for p in paths]
        if keep_missing_roots:
            roots = [r for r in roots if os.path.isdir(r)]
        found = discover_audio_files(roots)
        plan = RunPlan(files_seen=len(found.files), problems=[(str(p), r) for p, r in found.problems])
        # 1. stat: unchanged files are settled without reading them; 2. digest the others.
        files = [str(p) for p in found.files]
        if settle_s > 0:
            files, plan.held = _hold_unsettled(files, settle_s)
        states, candidates = _stat_files(files, roots, rows, report)
        _digest(candidates, hash_workers, report)
    # 3. decide.
    decide = _Decisions(plan, rows, segment_groups(writer), window_s=window_s, hop_s=hop_s)
    decide.old_rows(states, roots, prune)
    placements = decide.current_files(states)
    decide.same_audio = same_audio_paths(writer, decide.retag_candidates)
    placements.sort(key=_through_a_link)  # stable: path order otherwise
    for state in placements:  # the first new path with a content owns it
        decide.place(state)
    decide.copies_outside_the_run(states)
    if keep_missing_roots and dataset is None:
        # Its files would all look deleted: decided now, before anything is written.
        gone = [r for r in roots if not os.path.isdir(r)]
        if gone:
            raise RootVanishedError(f"{', '.join(gone)} vanished during the run; nothing of it was removed")
    return decide.finish()


def _hold_unsettled(paths: list[str], settle_s: float) -> tuple[list[str], list[str]]:
    """Split ``paths`` into files last written at least ``settle_s`` ago and files still being written."""
    cutoff = time.time_ns() - int(settle_s * 1e9)
    settled: list[str] = []
    held: list[str] = []
    for path in paths:
        try:
            recent = os.stat(path).st_mtime_ns > cutoff
        except OSError:
            recent = False  # gone or unreadable: the stat below records it
        (held if recent else settled).append(path)
    return settled, held


def _stat_files(
    paths: list[str], roots: list[str], rows: dict[str, dict[str, Any]], report: Callable[..., None]
) -> tuple[list[FileState], list[FileState]]:
    """Every file as a :class:`FileState`, and those whose digest is needed (new, changed, unknown)."""
    states: list[FileState] = []
    candidates: list[FileState] = []
    for done, key in enumerate(paths, start=1):
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
        if done % 256 == 0 or done == len(paths):
            report("scan", done, len(paths), key)
    return states, candidates


def _digest(candidates: list[FileState], hash_workers: int, report: Callable[..., None]) -> None:
    """Digest new and changed files (and read their header durations) in parallel."""
    if not candidates:
        return
    with ThreadPoolExecutor(max_workers=max(1, hash_workers), thread_name_prefix="vela-hash") as pool:
        for done, state in enumerate(pool.map(_probe, candidates), start=1):
            report("hash", done, len(candidates), state.path)


_NONE = np.empty(0, np.int64)


class _Decisions:
    """What the planner has decided so far, per content digest and per path (see the module docstring)."""

    def __init__(
        self,
        plan: RunPlan,
        rows: dict[str, dict[str, Any]],
        groups: dict[tuple[str, str], np.ndarray],
        *,
        window_s: float,
        hop_s: float,
    ) -> None:
        self.plan, self.rows, self.groups = plan, rows, groups
        self.window_s, self.hop_s = window_s, hop_s
        self.current: set[str] = set()
        self.stable_owner: dict[str, str] = {}  # sha -> path of an indexed row that stays as it is
        self.new_rows: dict[str, dict[str, Any]] = {}
        self.delete: list[np.ndarray] = []
        self.changed_owner: dict[str, np.ndarray] = {}  # path -> ids of the old content it owned
        self.vanished_owner: dict[str, tuple[str, dict[str, Any], np.ndarray]] = {}  # sha -> (path, row, ids)
        self.jobs_by_sha: dict[str, EmbedJob | RelinkJob] = {}
        # path -> (its new audio payload digest, its old segments): changed files that may be tag edits.
        self.retag_candidates: dict[str, tuple[str, np.ndarray]] = {}
        self.same_audio: set[str] = set()  # those whose payload digest is the recorded one

    def old_segments(self, path: str) -> np.ndarray:
        row = self.rows.get(path)
        if row is None or row["status"] != INDEXED:
            return _NONE
        return self.groups.get((path, row["sha256"]), _NONE)

    def old_rows(self, states: list[FileState], roots: list[str], prune: bool) -> None:
        """Rows of paths not found in this run: vanished (removed, their content kept for a move) or not."""
        self.current = {s.path for s in states}
        for path, row in self.rows.items():
            if path in self.current:
                continue
            if prune and _under_roots(path, roots) and _vanished(path):
                self.plan.remove_paths.append(path)
                ids = self.old_segments(path)
                if row["status"] == INDEXED and len(ids):
                    # Kept for a new path with the same content (a move); tombstoned if none claims it.
                    self.vanished_owner[row["sha256"]] = (path, row, np.sort(ids))
                else:
                    self.delete.append(ids)
            elif row["status"] == INDEXED:
                self.stable_owner.setdefault(row["sha256"], path)

    def current_files(self, states: list[FileState]) -> list[FileState]:
        """Settle failed and unchanged files; return those whose content needs a place (an owner)."""
        placements: list[FileState] = []
        for state in states:
            row = self.rows.get(state.path)
            if state.error is not None:
                self.plan.failures.append((state.path, state.error))
                self.new_rows[state.path] = state.row(FAILED, error=state.error)
                self.delete.append(self.old_segments(state.path))
                continue
            same = row is not None and row["status"] in (INDEXED, DUPLICATE) and row["sha256"] == state.sha256
            if same:
                self.plan.skipped += 1
                if (row["size"], row["mtime_ns"]) != (state.size, state.mtime_ns):
                    self.new_rows[state.path] = {**row, "size": state.size, "mtime_ns": state.mtime_ns}
                if row["status"] == INDEXED:
                    self.stable_owner.setdefault(row["sha256"], state.path)
                else:
                    placements.append(state)  # a duplicate: its owner may be gone
            else:
                placements.append(state)
                old = self.changed_owner[state.path] = self.old_segments(state.path)
                if row is not None and row["status"] == INDEXED and state.audio_sha256 and len(old):
                    self.retag_candidates[state.path] = (state.audio_sha256, old)
        return placements

    def place(self, state: FileState) -> None:
        """A duplicate of a live owner, of this run's job, a move of a vanished owner, or a new job."""
        sha = state.sha256
        assert sha is not None
        row = self.rows.get(state.path)
        was_duplicate = row is not None and row["status"] == DUPLICATE and row["sha256"] == sha
        replaced = self.changed_owner.pop(state.path, _NONE)
        if sha in self.stable_owner:
            if was_duplicate:
                return  # still a duplicate of a live owner: nothing changes
            self.plan.duplicates += 1
            owner_row = self.rows.get(self.stable_owner[sha]) or {}
            self.new_rows[state.path] = state.row(DUPLICATE, duration_s=owner_row.get("duration_s"))
            self.delete.append(replaced)
            return
        if was_duplicate:
            # Recorded again once its new owner lands / it takes over the owner's segments / it is
            # re-embedded as the new owner.
            self.plan.skipped -= 1
        if sha in self.jobs_by_sha:
            job = self.jobs_by_sha[sha]
            job.duplicates.append(state)
            job.replaces = _concat([job.replaces, replaced])
        elif sha in self.vanished_owner:
            source_path, source_row, source_ids = self.vanished_owner.pop(sha)
            relink = RelinkJob(
                file=state,
                source_path=source_path,
                source_ids=source_ids,
                duration_s=source_row["duration_s"],
                replaces=_concat([source_ids, replaced]),
            )
            self.jobs_by_sha[sha] = relink
            self.plan.relinks.append(relink)
        elif state.path in self.same_audio and len(replaced):
            # Only the tags changed: the file keeps its segments under its new content digest.
            retag = RelinkJob(
                file=state,
                source_path=state.path,
                source_ids=np.sort(replaced),
                duration_s=row["duration_s"],  # type: ignore[index]
                replaces=replaced,
            )
            self.jobs_by_sha[sha] = retag
            self.plan.relinks.append(retag)
        else:
            duration = state.header_duration_s
            if duration is None and was_duplicate:
                duration = row["duration_s"]  # type: ignore[index]
            job = EmbedJob(
                file=state,
                planned_segments=planned_segments(duration, self.window_s, self.hop_s),
                replaces=replaced,
            )
            self.jobs_by_sha[sha] = job
            self.plan.jobs.append(job)

    def copies_outside_the_run(self, states: list[FileState]) -> None:
        """A vanished owner whose content lives on in a copy outside this run's paths: the copy takes over."""
        for path, row in self.rows.items() if self.vanished_owner else ():
            sha = row["sha256"]
            if row["status"] != DUPLICATE or sha not in self.vanished_owner:
                continue
            if path not in self.current and not _vanished(path):  # stat only the few candidates
                source_path, source_row, source_ids = self.vanished_owner.pop(sha)
                copy = FileState(path, row["root"], size=row["size"], mtime_ns=row["mtime_ns"], sha256=sha)
                self.plan.relinks.append(
                    RelinkJob(copy, source_path, source_ids, source_row["duration_s"], replaces=source_ids)
                )

    def finish(self) -> RunPlan:
        """Tombstones of vanished (not moved) and unaccounted segments; the rows to write."""
        plan = self.plan
        self.delete.extend(ids for _path, _row, ids in self.vanished_owner.values())  # vanished, not moved
        # A moved file's old row goes when its new path lands, in the same commit: a run interrupted
        # before then finds the move again.
        moved = {job.source_path for job in plan.relinks}
        plan.remove_paths = [path for path in plan.remove_paths if path not in moved]
        # Segments no indexed row accounts for: left by an interrupted writer (or an older version).
        owned = {(p, r["sha256"]) for p, r in self.rows.items() if r["status"] == INDEXED}
        for key, ids in self.groups.items():
            if key not in owned:
                self.delete.append(ids)
        plan.existing = self.rows
        plan.put_rows = [row for row in self.new_rows.values() if not plan.unchanged_row(row)]
        plan.delete_ids = _concat(self.delete)
        return plan


def _concat(parts: Iterable[np.ndarray]) -> np.ndarray:
    parts = [p for p in parts if len(p)]
    return np.unique(np.concatenate(parts)) if parts else np.empty(0, np.int64)
