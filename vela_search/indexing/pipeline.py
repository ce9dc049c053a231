"""The indexing pipeline: files → windows → token-sized batches → embeddings → committed shards.

Decoding runs in background threads (:class:`SegmentPrefetcher`) while the embedder works on earlier
windows. A file *lands* (its vectors, its files row, its duplicates' rows and the tombstones of its old
segments go to the writer together) only when all its windows are embedded, and commits happen between
files, so every commit holds whole files: after a crash, a rerun finds each file either fully indexed or
not at all, and continues from the last commit.
"""

from __future__ import annotations

import math
import os
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from vela_search.audio import AudioSegment, plan_windows
from vela_search.audio.hf_dataset import is_dataset_uri
from vela_search.errors import StoreError, VelaError
from vela_search.indexing.plan import (
    DUPLICATE,
    FAILED,
    INDEXED,
    EmbedJob,
    RelinkJob,
    RunPlan,
    failure_reason,
    plan_run,
    recorded_roots,
)
from vela_search.indexing.prefetch import Failed, SegmentPrefetcher
from vela_search.indexing.report import IndexProgress, IndexReport, ProgressCallback, scan_progress
from vela_search.indexing.spec import EmbedderSpec, QueryRoom, record_spec, recorded_room
from vela_search.peaks.builder import PeakBuilder
from vela_search.peaks.indexing import prune_to_files, store_peaks

if TYPE_CHECKING:
    from vela_search.audio.hf_dataset import DatasetListing
    from vela_search.embedding.embedder import VelaEmbedder
    from vela_search.store import IndexWriter

# Decodes, embeds and lands every job of a run (see :func:`run_index`).
EmbedStage = Callable[["_Run", list[EmbedJob]], None]

DEFAULT_WINDOW_S = 10.0
DEFAULT_HOP_S = 5.0
DEFAULT_COMMIT_EVERY = 256
DEFAULT_COMMIT_INTERVAL_S = 60.0
DEFAULT_FACTORY = "auto"  # exact SQfp16 while it fits and is fast, then compressed codes + re-rank
# A file up to this long is one segment (what the audio encoder reads at once).
SINGLE_SEGMENT_MAX_S = 30.0
# Moved files' stored segments are read back this many at a time (bounds memory: 64 MiB at 4096 dims).
RELINK_BATCH_SEGMENTS = 4096
# Auto-compaction: merge when at least this many shards hold fewer than SMALL_SHARD vectors.
COMPACT_MIN_SMALL_SHARDS = 8
SMALL_SHARD = 4096


def default_decode_workers() -> int:
    """Decoding threads: a quarter of the cores, 1 to 4 (the embedder needs the rest on a CPU)."""
    return max(1, min(4, (os.cpu_count() or 2) // 4))


@dataclass
class _Landing:
    """A job whose windows are being embedded."""

    job: EmbedJob
    segments: list[AudioSegment] = field(default_factory=list)
    vectors: list[np.ndarray] = field(default_factory=list)
    embedded: int = 0
    decoded: bool = False
    error: str | None = None
    peaks: PeakBuilder = field(default_factory=PeakBuilder)

    @property
    def ready(self) -> bool:
        return self.decoded and (self.error is not None or self.embedded == len(self.segments))


class _Run:
    """State of one run: the writer, counters and the commit policy."""

    def __init__(
        self,
        writer: IndexWriter,
        embedder: VelaEmbedder,
        report: IndexReport,
        plan: RunPlan,
        *,
        commit_every: int,
        commit_interval_s: float,
        progress: ProgressCallback | None,
        segments_total: int,
        files_total: int,
    ) -> None:
        self.writer = writer
        self.plan = plan
        self.embedder = embedder
        self.report = report
        self.commit_every = commit_every
        self.commit_interval_s = commit_interval_s
        self.progress = progress
        self.segments_total = segments_total
        self.files_total = files_total
        self.files_done = 0
        self.segments_done = 0
        self.uncommitted = 0
        self.last_commit = time.monotonic()
        self.dirty = False

    def emit(self, phase: str, path: str | None = None) -> None:
        if self.progress is not None:
            self.progress(
                IndexProgress(
                    phase=phase,  # type: ignore[arg-type]
                    files_done=self.files_done,
                    files_total=self.files_total,
                    segments_done=self.segments_done,
                    segments_total=max(self.segments_total, self.segments_done),
                    path=path,
                )
            )

    # ----------------------------------------------------------------------------- embedding
    def embed(self, chunk: list[tuple[_Landing, int]]) -> None:
        """Embed a chunk of windows (of possibly several files) and hand each vector to its file."""
        live = [(landing, i) for landing, i in chunk if landing.error is None]
        if not live:
            return
        from vela_search.embedding.embedder import EmbedItem

        items = [EmbedItem("audio", wave=landing.segments[i].samples) for landing, i in live]
        vectors = self.embedder.embed_items(items)
        for (landing, i), vector in zip(live, vectors, strict=True):
            landing.vectors.append(vector)
            landing.embedded += 1
            # Release the samples: only the vector is kept until the file lands.
            seg = landing.segments[i]
            landing.segments[i] = AudioSegment(seg.start_s, seg.end_s, np.empty(0, np.float32))
        self.segments_done += len(live)
        self.emit("embed", live[-1][0].job.file.path)

    # ------------------------------------------------------------------------------- landing
    def land(self, landing: _Landing) -> None:
        """Give a finished file to the writer: vectors + rows, tombstones and files rows together."""
        job, writer = landing.job, self.writer
        state = job.file
        error = landing.error
        vectors = np.stack(landing.vectors) if landing.vectors else np.empty((0, writer.dim), np.float32)
        if error is None and not np.isfinite(vectors).all():
            error = "the embedder returned NaN or infinite values for this file"
        if error is None and len(vectors) == 0:
            error = "contains no audio samples"
        if len(job.replaces):
            writer.delete(job.replaces)
            self.report.segments_deleted += len(job.replaces)
            self.dirty = True
        if error is not None:
            rows = [state.row(FAILED, error=error)]
            rows += [dup.row(FAILED, error=error) for dup in job.duplicates]
            self.report.files_failed += len(rows)
            self.report.failures.extend((row["path"], error) for row in rows)
            # A file that fails the same way as last time leaves the index as it is.
            rows = [row for row in rows if not self.plan.unchanged_row(row)]
            if rows:
                writer.put_files(rows)
                self.dirty = True
        else:
            duration = float(landing.segments[-1].end_s)
            meta = [
                {
                    "path": state.path,
                    "root": state.root,
                    "content_sha256": state.sha256,
                    "segment": i,
                    "start_s": float(seg.start_s),
                    "end_s": float(seg.end_s),
                    "duration_s": duration,
                }
                for i, seg in enumerate(landing.segments)
            ]
            writer.add(vectors, meta)
            store_peaks(writer.root, state.sha256, landing.peaks, duration, state.path)
            rows = [state.row(INDEXED, duration_s=duration, segments=len(meta))]
            rows += [dup.row(DUPLICATE, duration_s=duration) for dup in job.duplicates]
            writer.put_files(rows)
            self.report.files_indexed += 1
            self.report.files_duplicates += len(job.duplicates)
            self.report.segments_added += len(meta)
            self.uncommitted += len(meta)
            self.dirty = True
        self.files_done += 1

    def relink(self, job: RelinkJob, vectors: np.ndarray, rows: list[dict[str, Any]]) -> None:
        """Give a moved file to the writer: its stored segments under the new path, the originals
        tombstoned, the old row removed and the new rows written, all in the same commit."""
        writer, state = self.writer, job.file
        meta = [
            {**{k: v for k, v in row.items() if k != "id"}, "path": state.path, "root": state.root}
            for row in rows
        ]
        writer.add(vectors, meta)
        writer.delete(job.replaces)
        writer.remove_files([job.source_path])
        files = [state.row(INDEXED, duration_s=job.duration_s, segments=len(meta))]
        files += [dup.row(DUPLICATE, duration_s=job.duration_s) for dup in job.duplicates]
        writer.put_files(files)
        self.report.files_removed += 1
        self.report.files_relinked += 1
        self.report.files_duplicates += len(job.duplicates)
        self.report.segments_relinked += len(meta)
        self.report.segments_deleted += len(job.replaces)
        self.uncommitted += len(meta)
        self.dirty = True

    def maybe_commit(self) -> None:
        """Commit when enough segments, or enough time, have gone by since the last commit."""
        if not self.dirty:
            return
        due = self.uncommitted >= self.commit_every or (
            time.monotonic() - self.last_commit >= self.commit_interval_s
        )
        if due:
            self.commit()

    def commit(self) -> None:
        writer = self.writer
        # A factory that needs training (IVF, PQ) trains on its first commit: wait for enough vectors
        # (39 per centroid, or the whole run when smaller: the final commit trains on what there is).
        need = writer.training_vectors_wanted
        if need and writer.num_pending < need:
            return
        self.emit("commit")
        writer.commit()
        self.uncommitted = 0
        self.dirty = False
        self.last_commit = time.monotonic()


def validate_options(window_s: float, hop_s: float, commit_every: int) -> None:
    """Check window, hop and commit interval before anything slow happens.

    Raises:
        VelaError: naming the bad option.
    """
    if not (math.isfinite(window_s) and 0 < window_s <= SINGLE_SEGMENT_MAX_S):
        raise VelaError(f"--window must be between 0 and {SINGLE_SEGMENT_MAX_S:g} seconds, got {window_s:g}")
    if not (math.isfinite(hop_s) and 0 < hop_s):
        raise VelaError(f"--hop must be a positive number of seconds, got {hop_s:g}")
    if hop_s > window_s:
        raise VelaError(
            f"--hop ({hop_s:g} s) must not exceed --window ({window_s:g} s): audio would be skipped"
        )
    if commit_every < 1:
        raise VelaError(f"--commit-every must be at least 1 segment, got {commit_every}")
    plan_windows(60.0, window_s, hop_s, SINGLE_SEGMENT_MAX_S)


def _open_writer(
    index_dir: Path,
    embedder: VelaEmbedder,
    *,
    rebuild: bool,
    factory: str | None,
    max_index_memory: int | None = None,
) -> IndexWriter:
    from vela_search.embedding.fingerprint import fingerprint_for_index
    from vela_search.store import AudioIndex, IndexWriter, manifest
    from vela_search.store.layout import MANIFEST

    stored = manifest.read(index_dir / MANIFEST) if AudioIndex.exists(index_dir) else None
    # An index from before the dtype was recorded stays writable (docs/format.md, embedder fingerprint).
    fingerprint = fingerprint_for_index(
        embedder.fingerprint.to_dict(), stored["fingerprint"] if stored and not rebuild else None
    )
    if not AudioIndex.exists(index_dir):
        try:
            AudioIndex.create(
                index_dir,
                fingerprint=fingerprint,
                dim=embedder.dim,
                factory=factory or DEFAULT_FACTORY,
                max_index_memory=max_index_memory,
            ).close()
        except StoreError:
            if not AudioIndex.exists(index_dir):
                raise  # not the race with another creator: a real error (e.g. a bad factory string)
        rebuild = False  # nothing to rebuild in a new index
    memory = {"max_index_memory": max_index_memory}
    if rebuild:
        return IndexWriter(index_dir, fingerprint=fingerprint, staged=True, factory=factory, **memory)
    return IndexWriter(index_dir, fingerprint=fingerprint, factory=factory, **memory)


def index_paths(
    paths: Sequence[str | os.PathLike[str]],
    index_dir: str | os.PathLike[str],
    embedder: VelaEmbedder,
    *,
    window_s: float = DEFAULT_WINDOW_S,
    hop_s: float = DEFAULT_HOP_S,
    commit_every: int = DEFAULT_COMMIT_EVERY,
    commit_interval_s: float = DEFAULT_COMMIT_INTERVAL_S,
    prune: bool = True,
    rebuild: bool = False,
    factory: str | None = None,
    max_index_memory: int | None = None,
    decode_workers: int | None = None,
    compact: bool = True,
    progress: ProgressCallback | None = None,
    dataset: DatasetListing | None = None,
) -> IndexReport:
    """Index the audio files under ``paths`` into the index at ``index_dir`` (created if missing).

    Incremental: unchanged files are skipped, changed files re-embedded (their old segments tombstoned),
    vanished files removed (``prune``), moved or renamed files given their stored vectors under the new
    path, and content already in the index under another path recorded as a duplicate instead of embedded
    again. Resumable: commits hold whole files, so after a crash a rerun
    continues from the last commit and ends with the index an uninterrupted run would have built. Files
    that cannot be decoded are recorded as failed with the reason and never stop the run.

    Example:
        >>> emb = VelaEmbedder.from_pretrained("tiny", demos="none")  # doctest: +SKIP
        >>> report = index_paths(["audio/"], "indexes/default", emb)  # doctest: +SKIP
        >>> report.files_indexed, report.failures  # doctest: +SKIP

    Args:
        paths: audio files and directories (searched recursively). Empty: the roots the index records.
        index_dir: the index directory.
        embedder: the embedder; its fingerprint must match the index's unless ``rebuild``.
        window_s: window length for files longer than 30 s (a shorter file is one segment).
        hop_s: hop between windows.
        commit_every: commit after at least this many new segments (at the next file boundary).
        commit_interval_s: also commit when this much time has passed since the last commit.
        prune: remove files that are gone from disk (only under ``paths``).
        rebuild: re-embed every file (those under ``paths`` and the index's recorded roots) into a staged
            generation that replaces the current one only when complete; rerun after a crash to resume.
        factory: "auto" (the default for a new index: exact SQfp16 while it fits and is fast, then
            compressed codes with exact re-ranking) or a FAISS index-factory string, for a new index or
            a rebuild; "auto" also turns an existing exact SQfp16 index automatic.
        max_index_memory: memory budget in bytes of an automatic index's search index (default 4 GiB).
        decode_workers: decoding threads (default :func:`default_decode_workers`).
        compact: merge small shards at the end when there are many.
        progress: called with an :class:`IndexProgress` as the run advances.
        dataset: index the rows of a dataset split instead of ``paths`` (see
            :func:`vela_search.audio.hf_dataset.list_dataset_audio`); incremental in the same way, with
            rows for files.

    Returns:
        The :class:`IndexReport`.

    Raises:
        FingerprintMismatchError: the index was built with another embedder (use ``rebuild=True``).
        IndexLockedError: another process is writing the index.
        VelaError: invalid options (window, hop, factory) or no paths for an index that records none.
    """
    return run_index(
        paths,
        index_dir,
        embedder,
        lambda run, jobs: _embed_jobs(
            run, jobs, window_s=window_s, hop_s=hop_s, workers=decode_workers or default_decode_workers()
        ),
        window_s=window_s,
        hop_s=hop_s,
        commit_every=commit_every,
        commit_interval_s=commit_interval_s,
        prune=prune,
        rebuild=rebuild,
        factory=factory,
        max_index_memory=max_index_memory,
        compact=compact,
        progress=progress,
        dataset=dataset,
    )


def run_index(
    paths: Sequence[str | os.PathLike[str]],
    index_dir: str | os.PathLike[str],
    embedder: VelaEmbedder,
    embed_stage: EmbedStage,
    *,
    window_s: float,
    hop_s: float,
    commit_every: int,
    commit_interval_s: float,
    prune: bool,
    rebuild: bool,
    factory: str | None,
    compact: bool,
    progress: ProgressCallback | None,
    dataset: DatasetListing | None = None,
    max_index_memory: int | None = None,
) -> IndexReport:
    """One run with a given embedding stage: the planning, writing and commit rules of every run.

    :func:`index_paths` embeds in this process; :mod:`vela_search.indexing.cluster` embeds on a Ray
    cluster. ``embed_stage(run, jobs)`` must decode, embed and land (``run.land``) every job, calling
    ``run.maybe_commit()`` between files. Arguments as in :func:`index_paths`.
    """
    started = time.monotonic()
    validate_options(window_s, hop_s, commit_every)
    index_dir = Path(index_dir).expanduser()
    from vela_search.store import AudioIndex

    if dataset is not None and (paths or rebuild):
        raise VelaError("a dataset is indexed on its own: give no paths (and no --rebuild) with it")
    if dataset is None and not paths and not AudioIndex.exists(index_dir):
        raise VelaError(f"nothing to index: give audio files or directories (no index at {index_dir} yet)")
    missing = [str(p) for p in paths if not os.path.lexists(os.path.expanduser(str(p)))]
    if dataset is None and paths and len(missing) == len(paths) and not AudioIndex.exists(index_dir):
        # A typo should not leave an empty index behind; for an existing index a vanished root is pruned.
        raise VelaError(f"no such file or directory: {', '.join(missing)}")
    report = IndexReport(index_dir=str(index_dir))
    writer = _open_writer(
        index_dir, embedder, rebuild=rebuild, factory=factory, max_index_memory=max_index_memory
    )
    try:
        # The prefix is rendered once per embedder: a rerun that embeds nothing keeps the recorded room.
        room = recorded_room(index_dir, writer.fingerprint) or QueryRoom.from_embedder(embedder)
        record_spec(index_dir, writer.fingerprint, EmbedderSpec.from_embedder(embedder), room)
        roots = [os.path.abspath(os.path.expanduser(str(p))) for p in paths]
        if dataset is None and (rebuild or not roots):
            with AudioIndex.open(index_dir, shards=False) as current:
                recorded = recorded_roots(current.files())
            if rebuild and any(is_dataset_uri(r) for r in recorded):
                # A rebuild starts a new generation from the folders; dataset rows would be left out.
                raise VelaError(
                    "--rebuild re-embeds folders, and this index also holds dataset rows: rebuild into a "
                    "new index (--index NEW) from the folders and each dataset (--dataset)"
                )
            # Rescans cover folders; a dataset is indexed again only when it is given (--dataset).
            roots += [r for r in recorded if r not in roots and not is_dataset_uri(r)]
            roots += [r for r in recorded_roots(writer.files(), folders_only=True) if r not in roots]
        if dataset is None and not roots:
            raise VelaError(
                f"nothing to index: give audio files or directories (index {index_dir} records none)"
            )
        plan = plan_run(
            writer,
            roots,
            window_s=window_s,
            hop_s=hop_s,
            prune=prune,
            on_progress=scan_progress(progress),
            dataset=dataset,
        )
        _apply_plan(writer, plan, report)
        run = _Run(
            writer,
            embedder,
            report,
            plan,
            commit_every=commit_every,
            commit_interval_s=commit_interval_s,
            progress=progress,
            segments_total=plan.planned_segments,
            files_total=len(plan.jobs),
        )
        run.dirty = bool(plan.put_rows or plan.remove_paths or len(plan.delete_ids))
        try:
            unreadable = _relink_jobs(run, plan.relinks, window_s=window_s, hop_s=hop_s)
            run.files_total += len(unreadable)
            run.segments_total += sum(job.planned_segments for job in unreadable)
            jobs = [*plan.jobs, *unreadable]
            if jobs:
                embed_stage(run, jobs)
        except BaseException:
            # Keep the files that already landed (each is whole); the rest is redone by a rerun.
            if run.dirty:
                try:
                    run.commit()
                except Exception:  # noqa: BLE001 - the original error is the one to report
                    pass
            raise
        run.commit()
        if writer.num_pending:
            writer.commit()  # a factory that needs training gets its error here, with the counts
        if writer.staged:
            run.emit("promote")
            writer.promote()
            report.rebuilt = True
        if compact and _worth_compacting(writer.manifest):
            run.emit("compact")
            writer.compact()
            report.compacted = True
        prune_to_files(index_dir, writer.files())
        data = writer.manifest
        report.shards = len(data["shards"])
        report.vectors = int(data["num_vectors"])
        report.generation = int(data["generation"])
        report.fingerprint = dict(writer.fingerprint)
        run.emit("done")
    finally:
        writer.close()
    report.seconds = time.monotonic() - started
    return report


def _apply_plan(writer: IndexWriter, plan: RunPlan, report: IndexReport) -> None:
    """The changes decided up front: removals, tombstones, updated and duplicate rows, early failures."""
    if plan.remove_paths:
        writer.remove_files(plan.remove_paths)
    if len(plan.delete_ids):
        writer.delete(plan.delete_ids)
    if plan.put_rows:
        writer.put_files(plan.put_rows)
    report.files_seen = plan.files_seen
    report.files_skipped = plan.skipped
    report.files_removed = len(plan.remove_paths)
    report.files_duplicates = plan.duplicates
    report.segments_deleted = len(plan.delete_ids)
    report.files_failed = len(plan.failures)
    report.failures = list(plan.failures)
    report.problems = list(plan.problems)


def _relink_jobs(run: _Run, jobs: list[RelinkJob], *, window_s: float, hop_s: float) -> list[EmbedJob]:
    """Land moved files from their stored segments, read back in batches.

    Returns:
        Embedding jobs for the files whose segments could not be read back (an index type that cannot
        return its vectors): they are embedded from their audio instead.
    """
    unreadable: list[EmbedJob] = []
    batch: list[RelinkJob] = []
    done = 0  # files handled so far (for progress)

    def flush() -> None:
        nonlocal done
        try:
            vectors, rows = run.writer.read_segments(np.concatenate([job.source_ids for job in batch]))
        except (KeyError, StoreError):
            for job in batch:
                run.writer.remove_files([job.source_path])
                run.report.files_removed += 1
                unreadable.append(job.as_embed_job(window_s, hop_s))
        else:
            start = 0
            for job in batch:
                end = start + len(job.source_ids)
                run.relink(job, vectors[start:end], rows[start:end])
                start = end
            run.maybe_commit()
        done += len(batch)
        if run.progress is not None:
            path = batch[-1].file.path
            run.progress(IndexProgress(phase="relink", files_done=done, files_total=len(jobs), path=path))
        batch.clear()

    # In id order, so that a batch reads few shards (a file's segments were stored together).
    segments = 0
    for job in sorted(jobs, key=lambda job: int(job.source_ids[0])):
        batch.append(job)
        segments += len(job.source_ids)
        if segments >= RELINK_BATCH_SEGMENTS:
            flush()
            segments = 0
    if batch:
        flush()
    return unreadable


def _embed_jobs(run: _Run, jobs: list[EmbedJob], *, window_s: float, hop_s: float, workers: int) -> None:
    """Decode (in the background), embed and land every job, committing between files."""
    if not jobs:
        return
    emb = run.embedder
    # Windows per embedding call at most: enough to fill the embedder's batches, and no more than a commit
    # holds. Fewer are embedded when the decoder has nothing more ready.
    chunk_limit = max(1, min(2 * emb.max_batch_items, run.commit_every))
    chunk: list[tuple[_Landing, int]] = []
    pending: deque[_Landing] = deque()

    def flush() -> None:
        run.embed(chunk)
        chunk.clear()
        while pending and pending[0].ready:
            run.land(pending.popleft())
        run.maybe_commit()

    prefetcher = SegmentPrefetcher(
        [job.file.source for job in jobs],
        window_s=window_s,
        hop_s=hop_s,
        workers=workers,
        budget=max(2 * chunk_limit, 16),
        head_allowance=max(chunk_limit, 8),
    )
    try:
        for index, job in enumerate(jobs):
            landing = _Landing(job)
            pending.append(landing)
            run.emit("embed", job.file.path)
            messages = prefetcher.messages(index)
            while True:
                if chunk and not prefetcher.ready(index):
                    # The decoder is behind: embed what there is rather than leave the embedder idle.
                    flush()
                message = next(messages, None)
                if message is None:
                    break
                if isinstance(message, Failed):  # always the file's last message
                    landing.error = failure_reason(message.error, job.file.path)
                    continue
                landing.segments.append(message.segment)
                landing.peaks.add(message.segment.start_s, message.segment.samples)
                chunk.append((landing, len(landing.segments) - 1))
                if len(chunk) >= chunk_limit:
                    flush()
            landing.decoded = True
            if landing.error is not None or not chunk:
                flush()
        flush()
    finally:
        prefetcher.close()
    if pending:  # cannot happen: every job is decoded and embedded above
        raise RuntimeError(f"{len(pending)} files were not landed")


def _worth_compacting(data: dict[str, Any]) -> bool:
    small = sum(1 for s in data["shards"] if int(s["count"]) < SMALL_SHARD)
    return len(data["shards"]) > 1 and small >= COMPACT_MIN_SMALL_SHARDS
