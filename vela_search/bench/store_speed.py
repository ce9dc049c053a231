"""What the index writer costs per file, without a model: the bookkeeping share of indexing a large library.

Indexing lands each file with one ``IndexWriter.add`` (its segments' vectors and metadata rows) and one
``put_files`` (its files-table row), and commits every few hundred segments. This benchmark makes the same
calls with random vectors into a fresh index and reports the time per file along the way, so a cost that
grows with the collection shows up as a rising curve rather than being lost in an average. It also counts
the shards as commits land (tiered merging keeps them few) and at the end of the landing loop, which is
what an interrupted run leaves: the run is never compacted.

It times every commit too, and reports their latency (p50, p99, max) under either maintenance mode of the
writer: ``background`` (tier merges and codes re-training off the commit path, as `index` runs) or
``inline`` (inside the commit that makes them due). `compare_maintenance` runs both at the same scale; a
small ``exact_max_vectors`` makes a short run cross the codes re-training thresholds.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vela_search.errors import VelaError
from vela_search.store import AudioIndex
from vela_search.store.index_choice import ChoiceLimits

__all__ = ["StoreRun", "compare_maintenance", "measure_store"]

# Marks the benchmark's index so its fingerprint can never be mistaken for a real embedder's.
_FINGERPRINT_MODEL = "bench-store (random vectors)"


@dataclass
class StoreRun:
    """Writer time per landed file, overall and per tenth of the run, and per moved file when measured."""

    files: int
    segments_per_file: int
    dim: int
    commit_every: int
    commits: int
    total_s: float
    ms_per_file: float
    # (files landed so far, ms per file over the last tenth)
    curve: list[tuple[int, float]] = field(default_factory=list)
    moves: int = 0
    ms_per_move: float | None = None
    # ms per file over the first and the last tenth of the landing, and their ratio (flat: near 1)
    first_tenth_ms: float = 0.0
    last_tenth_ms: float = 0.0
    last_vs_first: float = 0.0
    shards_at_end: int = 0  # after the landing loop, before any compaction (what an interrupted run leaves)
    peak_shards: int = 0  # the most shards any commit left
    max_shard_size: int = 0
    maintenance: str = "background"
    # latency of the writer's commits, ms (the landing loop and the moves)
    commit_p50_ms: float = 0.0
    commit_p99_ms: float = 0.0
    commit_max_ms: float = 0.0
    finish_s: float = 0.0  # waiting, after the last commit, for the maintenance still due (background)
    trainings: int = 0  # codes templates the run's commits published (first training and re-trainings)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form."""
        return asdict(self)


def _segment_rows(path: str, sha: str, segments: int) -> list[dict[str, Any]]:
    """A file's segment rows, as indexing writes them."""
    return [
        {
            "path": path,
            "root": "/library",
            "content_sha256": sha,
            "segment": s,
            "start_s": 10.0 * s,
            "end_s": 10.0 * s + 10.0,
            "duration_s": 10.0 * segments,
        }
        for s in range(segments)
    ]


def _files_row(path: str, sha: str, number: int, segments: int) -> dict[str, Any]:
    """A file's files-table row, as indexing writes it."""
    return {
        "path": path,
        "size": 100_000 + number,
        "mtime_ns": number,
        "sha256": sha,
        "duration_s": 10.0 * segments,
        "status": "indexed",
        "error": None,
        "segments": segments,
        "root": "/library",
    }


class _Committer:
    """Commits after at least ``every`` segments, at a file boundary, as ``vela-search index`` does."""

    def __init__(self, writer: Any, every: int) -> None:
        self.writer, self.every = writer, every
        self.commits = self.uncommitted = self.peak_shards = 0
        self.latencies: list[float] = []
        self.templates: set[str] = set()

    def landed(self, segments: int) -> None:
        self.uncommitted += segments
        if self.uncommitted >= self.every:
            self.flush()

    def flush(self) -> None:
        if self.uncommitted:
            started = time.perf_counter()
            self.writer.commit()
            self.latencies.append(time.perf_counter() - started)
            self.commits, self.uncommitted = self.commits + 1, 0
            self.seen(self.writer.manifest)

    def latency(self) -> dict[str, Any]:
        """Commit latency p50, p99 and max (ms), and the codes templates the commits published."""
        ms = np.asarray(self.latencies or [0.0]) * 1000
        return {
            "commit_p50_ms": float(np.percentile(ms, 50)),
            "commit_p99_ms": float(np.percentile(ms, 99)),
            "commit_max_ms": float(ms.max()),
            "trainings": len(self.templates),
        }

    def seen(self, data: dict) -> None:
        """Note what a published generation holds (shards, codes template)."""
        self.peak_shards = max(self.peak_shards, len(data["shards"]))
        if data.get("codes"):
            self.templates.add(data["codes"]["trained"])


def measure_store(
    files: int,
    *,
    dim: int = 4096,
    segments_per_file: int = 1,
    commit_every: int = 256,
    moves: int = 0,
    workdir: str | Path | None = None,
    seed: int = 0,
    progress: Callable[[str, int, int], None] | None = None,
    maintenance: str = "background",
    exact_max_vectors: int | None = None,
) -> StoreRun:
    """Land ``files`` synthetic files into a fresh index the way indexing does, and time it.

    Args:
        files: files to land.
        dim: vector dimension (4096 for Qwen2-Audio-7B).
        segments_per_file: vectors per file (a 30 s file is one, longer files have one per window).
        commit_every: commit after at least this many segments, at a file boundary (as ``index`` does).
        moves: then move this many of the files to a new folder, with the writer calls a relink makes
            (vectors added under the new path, old segments tombstoned, old row removed, new row put).
        workdir: where the temporary index goes (default: the system's temporary directory); removed after.
        seed: seed of the random vectors.
        progress: called as ``(phase, done, total)`` with ``land`` after each tenth of the files and ``move``
            after the moves (a few calls, outside the per-file work).
        maintenance: the writer's maintenance mode, "background" or "inline".
        exact_max_vectors: collections above this many vectors get compressed codes (default: the
            automatic choice's limit); a small one crosses the re-training thresholds in a short run.

    Raises:
        VelaError: a count below 1, or more moves than files.
    """
    _check_store_settings(files, dim, segments_per_file, commit_every, moves)
    scratch = Path(tempfile.mkdtemp(prefix="vela-bench-store-", dir=workdir))
    try:
        root = scratch / "index"
        fingerprint = {"model": _FINGERPRINT_MODEL, "dim": dim}
        index = AudioIndex.create(root, fingerprint=fingerprint, dim=dim)
        rng = np.random.default_rng(seed)
        vectors = rng.standard_normal((64, segments_per_file, dim)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=-1, keepdims=True)
        ms_per_move = None
        limits = ChoiceLimits(exact_max_elements=exact_max_vectors * dim) if exact_max_vectors else None
        options = {"maintenance": maintenance, "choice_limits": limits}
        with index.writer(fingerprint=fingerprint, **options) as writer:
            committer = _Committer(writer, commit_every)
            ids, curve, total = _land(writer, committer, vectors, files, segments_per_file, progress)
            shards_at_end = len(writer.manifest["shards"])
            max_shard_size = writer.max_shard_size
            if moves:
                ms_per_move = _move(writer, committer, vectors, ids, moves, segments_per_file)
                if progress is not None:
                    progress("move", moves, moves)
            started = time.perf_counter()
            writer.finish_maintenance()
            finish_s = time.perf_counter() - started
            committer.seen(writer.manifest)
        _check_landed(root, files, moves)
        return StoreRun(
            files=files,
            segments_per_file=segments_per_file,
            dim=dim,
            commit_every=commit_every,
            commits=committer.commits,
            total_s=total,
            ms_per_file=total * 1000 / files,
            curve=curve,
            moves=moves,
            ms_per_move=ms_per_move,
            first_tenth_ms=curve[0][1],
            last_tenth_ms=curve[-1][1],
            last_vs_first=curve[-1][1] / curve[0][1] if curve[0][1] else 0.0,
            shards_at_end=shards_at_end,
            peak_shards=committer.peak_shards,
            max_shard_size=max_shard_size,
            maintenance=maintenance,
            finish_s=finish_s,
            **committer.latency(),
        )
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def compare_maintenance(files: int, **options: Any) -> dict[str, StoreRun]:
    """`measure_store` twice at the same scale: background maintenance, then inline (as before it).

    Args:
        files: files to land.
        options: as `measure_store` takes them (except `maintenance`).

    Returns:
        The runs by mode: ``{"background": ..., "inline": ...}``.
    """
    return {mode: measure_store(files, maintenance=mode, **options) for mode in ("background", "inline")}


def _check_store_settings(
    files: int, dim: int, segments_per_file: int, commit_every: int, moves: int
) -> None:
    for name, value in (("files", files), ("dim", dim), ("segments_per_file", segments_per_file)):
        if value < 1:
            raise VelaError(f"{name} must be at least 1, got {value}")
    if commit_every < 1:
        raise VelaError(f"commit_every must be at least 1, got {commit_every}")
    if not 0 <= moves <= files:
        raise VelaError(f"moves must be from 0 to the number of files ({files}), got {moves}")


def _land(
    writer: Any,
    committer: _Committer,
    vectors: np.ndarray,
    files: int,
    segments_per_file: int,
    progress: Callable[[str, int, int], None] | None,
) -> tuple[list[Any], list[tuple[int, float]], float]:
    """Land ``files`` files as indexing does; their segment ids, the ms per file of each tenth, seconds."""
    tenth = max(1, files // 10)
    curve: list[tuple[int, float]] = []
    ids: list[Any] = []
    started = mark = time.perf_counter()
    for number in range(files):
        path = f"/library/folder-{number % 97:02d}/sound-{number:07d}.wav"
        sha = f"{number:064x}"
        ids.append(writer.add(vectors[number % len(vectors)], _segment_rows(path, sha, segments_per_file)))
        writer.put_files([_files_row(path, sha, number, segments_per_file)])
        committer.landed(segments_per_file)
        if (number + 1) % tenth == 0 or number + 1 == files:
            now = time.perf_counter()
            landed = number + 1 - (curve[-1][0] if curve else 0)
            curve.append((number + 1, (now - mark) * 1000 / landed))
            if progress is not None:
                progress("land", number + 1, files)
            mark = time.perf_counter()
    committer.flush()
    return ids, curve, time.perf_counter() - started


def _move(
    writer: Any,
    committer: _Committer,
    vectors: np.ndarray,
    ids: list[Any],
    moves: int,
    segments_per_file: int,
) -> float:
    """Move the first ``moves`` files with the writer calls of a relink; returns ms per move."""
    started = time.perf_counter()
    for number in range(moves):
        old = f"/library/folder-{number % 97:02d}/sound-{number:07d}.wav"
        new = f"/library/moved/sound-{number:07d}.wav"
        sha = f"{number:064x}"
        writer.add(vectors[number % len(vectors)], _segment_rows(new, sha, segments_per_file))
        writer.delete(ids[number])
        writer.remove_files([old])
        writer.put_files([_files_row(new, sha, number, segments_per_file)])
        committer.landed(segments_per_file)
    committer.flush()
    return (time.perf_counter() - started) * 1000 / moves


def _check_landed(root: Path, files: int, moves: int) -> None:
    """The benchmark must have done the work it timed (the files table only: the vectors may be GBs)."""
    with AudioIndex.open(root, shards=False) as done:
        paths = done.files()["path"].to_pylist()
    moved = sum(p.startswith("/library/moved/") for p in paths)
    if len(paths) != files or moved != moves:
        raise RuntimeError(f"the index holds {len(paths)} files rows ({moved} moved) after landing {files}")
