"""The state of one indexing run: the writer, the counters, the commit policy, and landing whole files.

:class:`IndexRun` is what an embedding stage works on (the in-process one in
:mod:`vela_search.indexing.pipeline`, the Ray one in :mod:`vela_search.indexing.cluster`): it embeds chunks
of windows, lands a file (vectors, files rows and tombstones together) once all its windows are embedded,
and commits between files. Its embedder may be a loader, called on first use, so that a run with nothing
to embed never loads a model.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from vela_search.audio import AudioSegment
from vela_search.audio.metadata import add_words_column
from vela_search.indexing.options import Segmentation
from vela_search.indexing.plan import (
    AUDIO_SHA256_COLUMN,
    DUPLICATE,
    FAILED,
    INDEXED,
    EmbedJob,
    RelinkJob,
    RunPlan,
)
from vela_search.indexing.report import IndexProgress, IndexReport, ProgressCallback
from vela_search.peaks.builder import PeakBuilder
from vela_search.peaks.indexing import copy_peaks, store_peaks

if TYPE_CHECKING:
    from vela_search.embedding.embedder import VelaEmbedder
    from vela_search.store import IndexWriter

__all__ = ["IndexRun", "Landing"]


@dataclass
class Landing:
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


class IndexRun:
    """State of one run: the writer, counters and the commit policy."""

    def __init__(
        self,
        writer: IndexWriter,
        embedder: VelaEmbedder | Callable[[], VelaEmbedder],
        report: IndexReport,
        plan: RunPlan,
        *,
        segmentation: Segmentation,
        commit_every: int,
        commit_interval_s: float,
        progress: ProgressCallback | None,
        segments_total: int,
        files_total: int,
    ) -> None:
        self.writer = writer
        self.plan = plan
        self.segmentation = segmentation
        # Loaded on first use when given as a loader: a run that only skips, relinks or removes files
        # never loads a model.
        self._embedder = embedder
        # Called once a lazily loaded embedder is there (the pipeline checks and records it).
        self.on_load: Callable[[VelaEmbedder], None] | None = None
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

    @property
    def embedder(self) -> VelaEmbedder:
        """The embedder, loaded now if the run was given a loader (then checked against the index)."""
        if callable(self._embedder) and not hasattr(self._embedder, "embed_items"):
            self.emit("load")
            self._embedder = self._embedder()
            if self.on_load is not None:
                self.on_load(self._embedder)
        return self._embedder  # type: ignore[return-value]

    @property
    def embedder_loaded(self) -> bool:
        """Whether the embedder is loaded (a run that embedded nothing may never load it)."""
        return hasattr(self._embedder, "embed_items")

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
    def embed(self, chunk: list[tuple[Landing, int]]) -> None:
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
    def land(self, landing: Landing) -> None:
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
            add_words_column(meta, state.path)
            for i, row in enumerate(meta):  # on the first segment, as the words are
                row[AUDIO_SHA256_COLUMN] = state.audio_sha256 if i == 0 else None
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
            {
                **{k: v for k, v in row.items() if k != "id"},
                "path": state.path,
                "root": state.root,
                "content_sha256": state.sha256,  # a tag edit: the file's new digest
            }
            for row in rows
        ]
        add_words_column(meta, state.path)  # the new name's (and tags') words
        writer.add(vectors, meta)
        writer.delete(job.replaces)
        if job.source_path == state.path:
            copy_peaks(writer.root, rows[0].get("content_sha256") if rows else None, state.sha256)
            self.report.files_retagged += 1
        else:
            writer.remove_files([job.source_path])
            self.report.files_removed += 1
            self.report.files_relinked += 1
        files = [state.row(INDEXED, duration_s=job.duration_s, segments=len(meta))]
        files += [dup.row(DUPLICATE, duration_s=job.duration_s) for dup in job.duplicates]
        writer.put_files(files)
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
