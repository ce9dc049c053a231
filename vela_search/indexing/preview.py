"""What an ``index`` run would do, without loading a model or changing the index (``--dry-run``).

Before a run that may take hours on a large library, a user wants to know how much is new, what moved and
will be relinked rather than embedded, and what is gone. The preview scans and hashes the files exactly as a
run does (:func:`~vela_search.indexing.plan.plan_run`) against the index's files table, and stops there:
nothing is decoded, embedded or committed.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from vela_search.audio.hf_dataset import is_dataset_uri
from vela_search.errors import VelaError
from vela_search.indexing.options import IndexOptions, Segmentation
from vela_search.indexing.plan import RunPlan, plan_run, recorded_roots
from vela_search.indexing.report import ProgressCallback, scan_progress

__all__ = ["IndexPreview", "preview_index"]

# A new index has no files table to compare with: the plan runs against an empty one with this fingerprint.
_EMPTY_FINGERPRINT = {"model": "preview (no embedder)"}


@dataclass
class IndexPreview:
    """The counts a run over the same paths would report, decided from the files alone.

    Attributes:
        index_dir: the index.
        index_exists: False for an index the run would create.
        roots: the folders and files scanned.
        files_seen: audio files found.
        files_to_embed: files whose content would be decoded and embedded (a broken one then fails).
        segments_to_embed: their segments, from the durations in their headers (a file whose header gives
            none counts as one).
        audio_seconds_to_embed: their audio, from the headers.
        files_without_duration: files to embed whose header gives no duration (not counted in the seconds).
        files_to_relink: moved or renamed files whose stored vectors would be reused.
        files_to_reread: files whose tags changed but not their audio: words read again, vectors reused.
        files_duplicates: paths recorded as copies of content held under another path.
        files_unchanged: files the run would skip.
        files_to_remove: rows of files gone from disk that the run would remove (moved files' old rows
            included, as the run counts them).
        failures: files that cannot be read now, with the reason (the run records them as failed).
        problems: paths that could not be searched (broken links, unreadable folders).
    """

    index_dir: str
    index_exists: bool
    roots: list[str]
    files_seen: int
    files_to_embed: int
    segments_to_embed: int
    audio_seconds_to_embed: float
    files_without_duration: int
    files_to_relink: int
    files_duplicates: int
    files_unchanged: int
    files_to_remove: int
    files_to_reread: int = 0
    failures: list[tuple[str, str]] = field(default_factory=list)
    problems: list[tuple[str, str]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form."""
        return asdict(self)


def preview_index(
    paths: Sequence[str | os.PathLike[str]],
    index_dir: str | os.PathLike[str],
    *,
    window_s: float | None = None,
    hop_s: float | None = None,
    prune: bool = True,
    progress: ProgressCallback | None = None,
) -> IndexPreview:
    """What ``index_paths`` would do with these paths, without a model and without writing anything.

    The embedder is not loaded, so whether the index's embedder matches the one a run would use is not
    checked here; a rebuild embeds every file again and is not previewed.

    Args:
        paths: files and folders; none rescans the folders the index records.
        index_dir: the index (need not exist yet).
        window_s: window length for files longer than 30 s (segment counts); None: the index's.
        hop_s: hop between windows; None: the index's.
        prune: whether the run would remove rows of files gone from disk.
        progress: called with ``scan`` and ``hash`` :class:`IndexProgress` events, as a run's.

    Raises:
        VelaError: no paths, and the index records none (or does not exist).
        SegmentationMismatchError: a window or hop other than the index's (a run would be refused).
    """
    from vela_search.store import AudioIndex

    index_dir = Path(index_dir).expanduser()
    roots = [os.path.abspath(os.path.expanduser(str(p))) for p in paths]
    exists = AudioIndex.exists(index_dir)
    with contextlib.ExitStack() as stack:
        if exists:
            # A read-only snapshot: the last committed state, whatever a running writer does meanwhile.
            snapshot = stack.enter_context(AudioIndex.open(index_dir, vectors=False))
            recorded = Segmentation.from_manifest(snapshot.manifest)
            if not roots:
                roots = recorded_roots(snapshot.files(), folders_only=True)
                roots += [r for r in snapshot.manifest.get("roots") or [] if r not in roots]
                roots = [r for r in roots if not is_dataset_uri(r)]
        else:  # compared with an empty files table
            recorded = None
            scratch = stack.enter_context(tempfile.TemporaryDirectory(prefix="vela-preview-"))
            AudioIndex.create(Path(scratch) / "index", fingerprint=_EMPTY_FINGERPRINT, dim=1).close()
            snapshot = stack.enter_context(AudioIndex.open(Path(scratch) / "index"))
        if not roots:
            raise VelaError(
                f"nothing to preview: give audio files or directories (index {index_dir} records none)"
            )
        options = IndexOptions(window_s=window_s, hop_s=hop_s)
        seg = options.segmentation(recorded, index_dir=str(index_dir))
        plan = plan_run(
            snapshot,
            roots,
            window_s=seg.window_s,
            hop_s=seg.hop_s,
            prune=prune,
            on_progress=scan_progress(progress),
        )
    return _preview_of(plan, index_dir, exists, roots)


def _preview_of(plan: RunPlan, index_dir: Path, exists: bool, roots: list[str]) -> IndexPreview:
    durations = [job.file.header_duration_s for job in plan.jobs]
    return IndexPreview(
        index_dir=str(index_dir),
        index_exists=exists,
        roots=roots,
        files_seen=plan.files_seen,
        files_to_embed=len(plan.jobs),
        segments_to_embed=plan.planned_segments,
        audio_seconds_to_embed=float(sum(d for d in durations if d is not None)),
        files_without_duration=sum(d is None for d in durations),
        files_to_relink=sum(job.source_path != job.file.path for job in plan.relinks),
        files_to_reread=sum(job.source_path == job.file.path for job in plan.relinks),
        # As the run counts them: copies decided now, and those recorded when their content lands.
        files_duplicates=plan.duplicates
        + sum(len(job.duplicates) for job in plan.jobs)
        + sum(len(job.duplicates) for job in plan.relinks),
        files_unchanged=plan.skipped,
        files_to_remove=len(plan.remove_paths)
        + sum(job.source_path != job.file.path for job in plan.relinks),
        failures=list(plan.failures),
        problems=list(plan.problems),
    )
