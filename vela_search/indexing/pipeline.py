"""The indexing pipeline: files → windows → token-sized batches → embeddings → committed shards.

Decoding runs in background threads (:class:`SegmentPrefetcher`) while the embedder works on earlier
windows. A file *lands* (its vectors, its files row, its duplicates' rows and the tombstones of its old
segments go to the writer together) only when all its windows are embedded, and commits happen between
files, so every commit holds whole files: after a crash, a rerun finds each file either fully indexed or
not at all, and continues from the last commit.
"""

from __future__ import annotations

import os
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Union

import numpy as np

from vela_search.audio.hf_dataset import is_dataset_uri
from vela_search.errors import StoreError, VelaError
from vela_search.indexing.options import (
    DEFAULT_COMMIT_EVERY,
    DEFAULT_COMMIT_INTERVAL_S,
    DEFAULT_FACTORY,
    DEFAULT_HOP_S,
    DEFAULT_WINDOW_S,
    SINGLE_SEGMENT_MAX_S,
    IndexOptions,
    Segmentation,
    validate_options,
)
from vela_search.indexing.plan import EmbedJob, RelinkJob, RunPlan, failure_reason, plan_run, recorded_roots
from vela_search.indexing.prefetch import Failed, SegmentPrefetcher
from vela_search.indexing.report import IndexProgress, IndexReport, scan_progress
from vela_search.indexing.run import IndexRun, Landing
from vela_search.indexing.spec import EmbedderSpec, QueryRoom, record_spec, recorded_room
from vela_search.peaks.indexing import prune_to_files

__all__ = [
    "DEFAULT_COMMIT_EVERY",
    "DEFAULT_COMMIT_INTERVAL_S",
    "DEFAULT_FACTORY",
    "DEFAULT_HOP_S",
    "DEFAULT_WINDOW_S",
    "SINGLE_SEGMENT_MAX_S",
    "EmbedStage",
    "EmbedderSource",
    "IndexOptions",
    "default_decode_workers",
    "index_paths",
    "run_index",
    "validate_options",
]

if TYPE_CHECKING:
    from vela_search.audio.hf_dataset import DatasetListing
    from vela_search.embedding.embedder import VelaEmbedder
    from vela_search.store import IndexWriter
    from vela_search.store.index_choice import ChoiceLimits

# Decodes, embeds and lands every job of a run (see :func:`run_index`).
EmbedStage = Callable[[IndexRun, list[EmbedJob]], None]
# The embedder of a run, or a loader called only when there is something to embed.
EmbedderSource = Union["VelaEmbedder", Callable[[], "VelaEmbedder"]]

# Moved files' stored segments are read back this many at a time (bounds memory: 64 MiB at 4096 dims).
RELINK_BATCH_SEGMENTS = 4096
# Auto-compaction: merge when at least this many shards hold fewer than SMALL_SHARD vectors.
COMPACT_MIN_SMALL_SHARDS = 8
SMALL_SHARD = 4096


def default_decode_workers() -> int:
    """Decoding threads: a quarter of the cores, 1 to 4 (the embedder needs the rest on a CPU)."""
    return max(1, min(4, (os.cpu_count() or 2) // 4))


def _open_writer(
    index_dir: Path,
    embedder: VelaEmbedder,
    *,
    rebuild: bool,
    factory: str | None,
    max_index_memory: int | None = None,
    maintenance: str = "background",
    choice_limits: ChoiceLimits | None = None,
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
    memory = {
        "max_index_memory": max_index_memory,
        "maintenance": maintenance,
        "choice_limits": choice_limits,
    }
    if rebuild:
        return IndexWriter(index_dir, fingerprint=fingerprint, staged=True, factory=factory, **memory)
    return IndexWriter(index_dir, fingerprint=fingerprint, factory=factory, **memory)


def index_paths(
    paths: Sequence[str | os.PathLike[str]],
    index_dir: str | os.PathLike[str],
    embedder: EmbedderSource,
    options: IndexOptions | None = None,
    *,
    decode_workers: int | None = None,
    dataset: DatasetListing | None = None,
    writer: IndexWriter | None = None,
    **settings: Any,
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
        >>> report = index_paths(["audio/"], "indexes/default", emb, window_s=8, hop_s=4)  # doctest: +SKIP
        >>> report.files_indexed, report.failures  # doctest: +SKIP

    Args:
        paths: audio files and directories (searched recursively). Empty: the roots the index records.
        index_dir: the index directory.
        embedder: the embedder (its fingerprint must match the index's unless rebuilding), or a function
            that loads it, called only when the run has something to embed (a rescan that only skips,
            relinks or removes files loads no model).
        options: the run's settings (:class:`IndexOptions`); ``settings`` (its field names, e.g.
            ``window_s=8``) override single fields.
        decode_workers: decoding threads (default :func:`default_decode_workers`).
        dataset: index the rows of a dataset split instead of ``paths`` (see
            :func:`vela_search.audio.hf_dataset.list_dataset_audio`); incremental in the same way, with
            rows for files.
        writer: an open writer of ``index_dir`` to run with, kept open afterwards (a watcher holds the
            lock between runs); None: the run opens one and closes it at the end.

    Returns:
        The :class:`IndexReport`.

    Raises:
        FingerprintMismatchError: the index was built with another embedder (use ``rebuild=True``).
        SegmentationMismatchError: the index cuts files with another window or hop (use ``rebuild=True``).
        IndexLockedError: another process is writing the index.
        VelaError: invalid options (window, hop, factory) or no paths for an index that records none.
    """
    options = replace(options or IndexOptions(), **settings)
    workers = decode_workers or default_decode_workers()

    def stage(run: IndexRun, jobs: list[EmbedJob]) -> None:
        _embed_jobs(run, jobs, run.segmentation, workers=workers)

    return run_index(paths, index_dir, embedder, stage, options, dataset=dataset, writer=writer)


def run_index(
    paths: Sequence[str | os.PathLike[str]],
    index_dir: str | os.PathLike[str],
    embedder: EmbedderSource,
    embed_stage: EmbedStage,
    options: IndexOptions,
    *,
    dataset: DatasetListing | None = None,
    writer: IndexWriter | None = None,
) -> IndexReport:
    """One run with a given embedding stage: the planning, writing and commit rules of every run.

    :func:`index_paths` embeds in this process; :mod:`vela_search.indexing.cluster` embeds on a Ray
    cluster. ``embed_stage(run, jobs)`` must decode, embed and land (``run.land``) every job, calling
    ``run.maybe_commit()`` between files. Arguments as in :func:`index_paths`.
    """
    started = time.monotonic()
    options.validate()
    index_dir = Path(index_dir).expanduser()
    _check_inputs(paths, index_dir, dataset, options.rebuild)
    report = IndexReport(index_dir=str(index_dir))
    owned = writer is None
    if writer is None:
        writer, embedder = _open_run_writer(index_dir, embedder, options)
    elif options.rebuild:
        raise VelaError("a rebuild opens its own staged writer: give no writer with rebuild=True")
    try:
        run = _start(writer, embedder, paths, index_dir, options, report, dataset)
        try:
            unreadable = _relink_jobs(run, run.plan.relinks)
            run.files_total += len(unreadable)
            run.segments_total += sum(job.planned_segments for job in unreadable)
            jobs = [*run.plan.jobs, *unreadable]
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
        # A run that owns its writer waits for the maintenance due; a watcher's long-lived writer keeps it
        # running in the background between runs.
        _finish(run, options, report, wait_maintenance=owned)
    finally:
        if owned:
            writer.close()
    report.seconds = time.monotonic() - started
    return report


def _check_inputs(
    paths: Sequence[str | os.PathLike[str]], index_dir: Path, dataset: DatasetListing | None, rebuild: bool
) -> None:
    """Refuse a run that has nothing to index before the index is opened (or created)."""
    from vela_search.store import AudioIndex

    if dataset is not None and (paths or rebuild):
        raise VelaError("a dataset is indexed on its own: give no paths (and no --rebuild) with it")
    if dataset is None and not paths and not AudioIndex.exists(index_dir):
        raise VelaError(f"nothing to index: give audio files or directories (no index at {index_dir} yet)")
    missing = [str(p) for p in paths if not os.path.lexists(os.path.expanduser(str(p)))]
    if dataset is None and paths and len(missing) == len(paths) and not AudioIndex.exists(index_dir):
        # A typo should not leave an empty index behind; for an existing index a vanished root is pruned.
        raise VelaError(f"no such file or directory: {', '.join(missing)}")


def _loaded(embedder: EmbedderSource) -> bool:
    return hasattr(embedder, "embed_items")


def _open_run_writer(
    index_dir: Path, embedder: EmbedderSource, options: IndexOptions
) -> tuple[IndexWriter, EmbedderSource]:
    """The run's writer, and its embedder (loaded here when a new generation needs its fingerprint).

    An incremental run into an existing index writes under the index's own fingerprint: a loader is kept
    for later (checked against that fingerprint once it loads, see :func:`_on_load`).
    """
    from vela_search.store import AudioIndex, IndexWriter

    memory = {
        "max_index_memory": options.max_index_memory,
        "maintenance": options.maintenance,
        "choice_limits": options.choice_limits,
    }
    if not _loaded(embedder) and not options.rebuild and AudioIndex.exists(index_dir):
        from vela_search.store import manifest
        from vela_search.store.layout import MANIFEST

        stored = manifest.read(index_dir / MANIFEST)
        if stored is not None:
            writer = IndexWriter(
                index_dir, fingerprint=stored["fingerprint"], factory=options.factory, **memory
            )
            return writer, embedder
    if not _loaded(embedder):
        if options.progress is not None:
            options.progress(IndexProgress(phase="load"))
        embedder = embedder()  # type: ignore[operator]
    writer = _open_writer(
        index_dir,
        embedder,
        rebuild=options.rebuild,
        factory=options.factory,
        **memory,  # type: ignore[arg-type]
    )
    _record_embedder(index_dir, writer, embedder)  # type: ignore[arg-type]
    return writer, embedder


def _record_embedder(index_dir: Path, writer: IndexWriter, embedder: VelaEmbedder) -> None:
    """Remember how to load the embedder again, and the room a query has behind its prefix."""
    # The prefix is rendered once per embedder: a rerun that embeds nothing keeps the recorded room.
    room = recorded_room(index_dir, writer.fingerprint) or QueryRoom.from_embedder(embedder)
    record_spec(index_dir, writer.fingerprint, EmbedderSpec.from_embedder(embedder), room)


def _on_load(index_dir: Path, writer: IndexWriter) -> Callable[[VelaEmbedder], None]:
    """What a lazily loaded embedder goes through: the index's fingerprint check, then the record."""

    def check(embedder: VelaEmbedder) -> None:
        from vela_search.embedding.fingerprint import fingerprint_for_index
        from vela_search.store import manifest

        mine = fingerprint_for_index(embedder.fingerprint.to_dict(), writer.fingerprint)
        manifest.check_fingerprint(index_dir, writer.fingerprint, mine)
        _record_embedder(index_dir, writer, embedder)

    return check


def _start(
    writer: IndexWriter,
    embedder: EmbedderSource,
    paths: Sequence[str | os.PathLike[str]],
    index_dir: Path,
    options: IndexOptions,
    report: IndexReport,
    dataset: DatasetListing | None,
) -> IndexRun:
    """Settle the run's roots and segmentation (recorded in the manifest), plan it, apply what needs no
    embedding, and return the run state the embedding stage works on."""
    from vela_search.store import manifest
    from vela_search.store.layout import MANIFEST

    main = manifest.read(index_dir / MANIFEST)
    recorded = Segmentation.from_manifest(writer.manifest)
    segmentation = options.segmentation(
        recorded, default=Segmentation.from_manifest(main), index_dir=str(index_dir)
    )
    roots = _run_roots(paths, index_dir, writer, main, dataset, options.rebuild)
    writer.record(roots=_roots_to_record(writer, main, roots, dataset), segmentation=segmentation.to_dict())
    plan = plan_run(
        writer,
        roots,
        window_s=segmentation.window_s,
        hop_s=segmentation.hop_s,
        prune=options.prune,
        on_progress=scan_progress(options.progress),
        dataset=dataset,
        settle_s=options.settle_s,
        keep_missing_roots=options.keep_missing_roots,
    )
    _apply_plan(writer, plan, report)
    run = IndexRun(
        writer,
        embedder,
        report,
        plan,
        segmentation=segmentation,
        commit_every=options.commit_every,
        commit_interval_s=options.commit_interval_s,
        progress=options.progress,
        segments_total=plan.planned_segments,
        files_total=len(plan.jobs),
    )
    run.on_load = _on_load(index_dir, writer)
    run.dirty = bool(plan.put_rows or plan.remove_paths or len(plan.delete_ids))
    return run


def _run_roots(
    paths: Sequence[str | os.PathLike[str]],
    index_dir: Path,
    writer: IndexWriter,
    main: dict[str, Any] | None,
    dataset: DatasetListing | None,
    rebuild: bool,
) -> list[str]:
    """The folders the run scans: those given, or (a rescan, a rebuild) also those the index records.

    The roots come from the manifest's record and the files tables, so that a repair that empties the
    files table loses none.
    """
    from vela_search.store import AudioIndex

    roots = [os.path.abspath(os.path.expanduser(str(p))) for p in paths]
    if dataset is None and (rebuild or not roots):
        with AudioIndex.open(index_dir, shards=False) as current:
            recorded = recorded_roots(current.files())
        recorded += [r for r in (main or {}).get("roots") or [] if isinstance(r, str)]
        if rebuild and any(is_dataset_uri(r) for r in recorded):
            # A rebuild starts a new generation from the folders; dataset rows would be left out.
            raise VelaError(
                "--rebuild re-embeds folders, and this index also holds dataset rows: rebuild into a "
                "new index (--index NEW) from the folders and each dataset (--dataset)"
            )
        # Rescans cover folders; a dataset is indexed again only when it is given (--dataset).
        for root in [*recorded, *recorded_roots(writer.files(), folders_only=True)]:
            if root not in roots and not is_dataset_uri(root):
                roots.append(root)
    if dataset is None and not roots:
        raise VelaError(f"nothing to index: give audio files or directories (index {index_dir} records none)")
    return roots


def _roots_to_record(
    writer: IndexWriter, main: dict[str, Any] | None, roots: list[str], dataset: DatasetListing | None
) -> list[str]:
    """Every root the index has been given that is still there (a dataset split's name stays)."""
    before = [
        r for r in (writer.manifest.get("roots") or (main or {}).get("roots") or []) if isinstance(r, str)
    ]
    # A file given by itself is recorded by its folder, as the files table records its root.
    given = [os.path.dirname(r) if os.path.isfile(r) else r for r in roots]
    given += [dataset.root] if dataset is not None else []
    return sorted({r for r in [*before, *given] if is_dataset_uri(r) or os.path.lexists(r)})


def _finish(
    run: IndexRun, options: IndexOptions, report: IndexReport, *, wait_maintenance: bool = True
) -> None:
    """The last commit, the promotion of a rebuild, compaction, and the report's totals."""
    writer = run.writer
    run.commit()
    if writer.num_pending:
        writer.commit()  # a factory that needs training gets its error here, with the counts
    # Background merges and re-training due by now run to the end here: the run leaves a maintained index
    # (an interrupted run leaves a consistent one, its maintenance redone by the next writer).
    if wait_maintenance:
        writer.finish_maintenance()
    if writer.staged:
        run.emit("promote")
        writer.promote()
        report.rebuilt = True
    if options.compact and _worth_compacting(writer.manifest):
        run.emit("compact")
        writer.compact()
        report.compacted = True
    prune_to_files(writer.root, writer.files())
    data = writer.manifest
    report.shards = len(data["shards"])
    report.vectors = int(data["num_vectors"])
    report.generation = int(data["generation"])
    report.fingerprint = dict(writer.fingerprint)
    report.model_loaded = run.embedder_loaded
    run.emit("done")


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
    report.held = list(plan.held)


def _relink_jobs(run: IndexRun, jobs: list[RelinkJob]) -> list[EmbedJob]:
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
                unreadable.append(job.as_embed_job(run.segmentation.window_s, run.segmentation.hop_s))
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


def _embed_jobs(run: IndexRun, jobs: list[EmbedJob], segmentation: Segmentation, *, workers: int) -> None:
    """Decode (in the background), embed and land every job, committing between files."""
    if not jobs:
        return
    emb = run.embedder
    # Windows per embedding call at most: enough to fill the embedder's batches, and no more than a commit
    # holds. Fewer are embedded when the decoder has nothing more ready.
    chunk_limit = max(1, min(2 * emb.max_batch_items, run.commit_every))
    chunk: list[tuple[Landing, int]] = []
    pending: deque[Landing] = deque()

    def flush() -> None:
        run.embed(chunk)
        chunk.clear()
        while pending and pending[0].ready:
            run.land(pending.popleft())
        run.maybe_commit()

    prefetcher = SegmentPrefetcher(
        [job.file.source for job in jobs],
        window_s=segmentation.window_s,
        hop_s=segmentation.hop_s,
        workers=workers,
        budget=max(2 * chunk_limit, 16),
        head_allowance=max(chunk_limit, 8),
    )
    try:
        for index, job in enumerate(jobs):
            landing = Landing(job)
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
