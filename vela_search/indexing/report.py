"""What an indexing run tells its caller: progress events while it runs and a report at the end."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

Phase = Literal["scan", "hash", "relink", "load", "embed", "commit", "promote", "compact", "done"]


@dataclass(frozen=True)
class IndexProgress:
    """A progress event passed to the ``progress`` callback of :func:`index_paths`.

    Attributes:
        phase: ``scan`` (finding and stat-ing files), ``hash`` (digesting new or changed files), ``relink``
            (moved files taking over their stored vectors), ``load`` (loading the model, only when there is
            something to embed), ``embed`` (decoding and embedding), ``commit``,
            ``promote`` (a rebuild replacing the old generation), ``compact`` (merging small shards) or
            ``done``.
        files_done: files finished in this phase.
        files_total: files this phase will handle.
        segments_done: segments embedded so far (``embed`` phase).
        segments_total: segments planned, estimated from the files' header durations.
        path: the file being worked on, when there is one.
    """

    phase: Phase
    files_done: int = 0
    files_total: int = 0
    segments_done: int = 0
    segments_total: int = 0
    path: str | None = None


ProgressCallback = Callable[[IndexProgress], None]


def scan_progress(progress: ProgressCallback | None) -> Callable[[str, int, int, str | None], None]:
    """The planner's ``(phase, done, total, path)`` callback, as :class:`IndexProgress` events."""

    def on_scan(phase: str, done: int, total: int, path: str | None) -> None:
        if progress is not None:
            progress(IndexProgress(phase=phase, files_done=done, files_total=total, path=path))  # type: ignore[arg-type]

    return on_scan


@dataclass
class IndexReport:
    """The outcome of :func:`index_paths`.

    Attributes:
        index_dir: the index directory.
        files_seen: audio files found under the given paths.
        files_indexed: files whose audio was embedded in this run.
        files_skipped: files left as they were (unchanged, or only their timestamp changed).
        files_failed: files that could not be indexed in this run (see ``failures``).
        files_duplicates: files recorded in this run as holding the same content as an indexed file.
        files_removed: files that vanished from disk and were removed from the index (``prune``).
        files_relinked: files that took over the stored segments of a vanished file with the same content
            (moved or renamed files, or a copy of a deleted file): nothing decoded or embedded.
        files_retagged: files whose tags changed but not their audio: words read again, vectors kept.
        segments_added: segments embedded and stored.
        segments_relinked: stored segments copied to a moved file's new path.
        segments_deleted: segments tombstoned (changed, vanished or replaced files).
        shards: shards of the generation left current by the run.
        vectors: live vectors of that generation.
        generation: that generation's number.
        rebuilt: a staged rebuild was completed and promoted.
        compacted: small shards were merged at the end of the run.
        seconds: wall time of the run.
        failures: ``(path, reason)`` of every file that failed.
        problems: ``(path, reason)`` of paths that could not be searched (missing, unreadable, loops).
        fingerprint: the embedder fingerprint of the index.
        workers: per embedding worker of a Ray run (``worker``, ``segments``, ``busy_s``, ``load_s``,
            ``segments_per_s``); empty for a single-process run.
        model_loaded: the run loaded (or was given) the embedder; a rescan with nothing to embed loads none.
        held: files left for a later run because they were still being written (``settle_s``).
    """

    index_dir: str
    files_seen: int = 0
    files_indexed: int = 0
    files_skipped: int = 0
    files_failed: int = 0
    files_duplicates: int = 0
    files_removed: int = 0
    files_relinked: int = 0
    files_retagged: int = 0
    segments_added: int = 0
    segments_relinked: int = 0
    segments_deleted: int = 0
    shards: int = 0
    vectors: int = 0
    generation: int = 0
    rebuilt: bool = False
    compacted: bool = False
    seconds: float = 0.0
    failures: list[tuple[str, str]] = field(default_factory=list)
    problems: list[tuple[str, str]] = field(default_factory=list)
    fingerprint: dict[str, Any] = field(default_factory=dict)
    workers: list[dict[str, Any]] = field(default_factory=list)
    model_loaded: bool = False
    held: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when no file failed and every path could be searched."""
        return not self.failures and not self.problems

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict (failures and problems as lists of ``{"path", "reason"}``)."""
        data = asdict(self)
        data["failures"] = [{"path": p, "reason": r} for p, r in self.failures]
        data["problems"] = [{"path": p, "reason": r} for p, r in self.problems]
        return data
