"""How well the pipeline hides decoding behind embedding: decode-only, embed-only and end-to-end times."""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from vela_search.audio import discover_audio_files
from vela_search.indexing.pipeline import (
    DEFAULT_HOP_S,
    DEFAULT_WINDOW_S,
    default_decode_workers,
    index_paths,
)
from vela_search.indexing.prefetch import Failed, SegmentPrefetcher

if TYPE_CHECKING:
    from vela_search.embedding.embedder import VelaEmbedder


@dataclass(frozen=True)
class PipelineTiming:
    """Seconds for the same files decoded only, embedded only (pre-decoded) and indexed end to end.

    Attributes:
        files: audio files measured.
        segments: windows they give.
        decode_s: decoding all windows (same decoding threads as the pipeline, nothing embedded).
        embed_s: embedding the pre-decoded windows in the pipeline's chunk size.
        end_to_end_s: ``index_paths`` into a fresh index (discovery, hashing, decoding, embedding, commits).
        overlap_ratio: ``end_to_end_s / max(decode_s, embed_s)``; 1.0 means decoding is fully hidden.
    """

    files: int
    segments: int
    decode_s: float
    embed_s: float
    end_to_end_s: float
    overlap_ratio: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def measure_pipeline_overlap(
    paths: Sequence[str | os.PathLike[str]],
    embedder: VelaEmbedder,
    *,
    window_s: float = DEFAULT_WINDOW_S,
    hop_s: float = DEFAULT_HOP_S,
    decode_workers: int | None = None,
) -> PipelineTiming:
    """Time decode-only, embed-only and end-to-end indexing of the same files.

    The embedder is warmed up first (its demo prefix computed), so no measurement pays for that.
    The decoded windows are held in memory for the embed-only pass: measure a benchmark-sized set.
    """
    from vela_search.embedding.embedder import EmbedItem

    workers = decode_workers or default_decode_workers()
    files = [str(p) for p in discover_audio_files(paths).files]
    embedder.embed_items([EmbedItem("audio", wave=np.zeros(16_000, np.float32))])

    started = time.perf_counter()
    waves: list[np.ndarray] = []
    with SegmentPrefetcher(files, window_s=window_s, hop_s=hop_s, workers=workers) as prefetcher:
        for i in range(len(files)):
            for message in prefetcher.messages(i):
                if not isinstance(message, Failed):
                    waves.append(message.segment.samples)
    decode_s = time.perf_counter() - started

    chunk = max(1, 2 * embedder.max_batch_items)
    started = time.perf_counter()
    for i in range(0, len(waves), chunk):
        embedder.embed_items([EmbedItem("audio", wave=w) for w in waves[i : i + chunk]])
    embed_s = time.perf_counter() - started

    with tempfile.TemporaryDirectory(prefix="vela-overlap-") as tmp:
        started = time.perf_counter()
        index_paths(
            files,
            os.path.join(tmp, "index"),
            embedder,
            window_s=window_s,
            hop_s=hop_s,
            decode_workers=workers,
            compact=False,
        )
        end_to_end_s = time.perf_counter() - started

    return PipelineTiming(
        files=len(files),
        segments=len(waves),
        decode_s=decode_s,
        embed_s=embed_s,
        end_to_end_s=end_to_end_s,
        overlap_ratio=end_to_end_s / max(decode_s, embed_s, 1e-9),
    )


@dataclass(frozen=True)
class RayOverhead:
    """The same files indexed in one process and on Ray, and where the Ray run's time went.

    Attributes:
        files: audio files measured.
        segments: windows embedded (each run).
        workers: embedding actors of the Ray run.
        ray_start_s: starting (or joining) Ray; paid once per session, not per run.
        single_s: ``index_paths`` into a fresh index.
        ray_s: ``index_paths_on_ray`` into a fresh index (actor start and model load included).
        single_clips_per_s: segments per second, one process.
        ray_clips_per_s: segments per second on Ray.
        overhead_ratio: ``ray_s / single_s``.
        overhead_ratio_ready_pool: the same with the pool's start-up (until the first actor had started
            and loaded the embedder) taken out of ``ray_s``: the pipeline's own cost once the actors are
            up (an approximation: decoding already runs during the start-up).
        ray_timing: where the Ray run's time went (:class:`~vela_search.indexing.cluster.ClusterTiming`),
            with background maintenance (as `index --ray` runs).
        ray_inline_s: with ``exact_max_vectors``, a third run on Ray with the merges and re-training
            inside the commits (as before background maintenance); None otherwise.
        ray_inline_timing: that run's timing (compare ``idle_fraction`` and ``commit_max_s``).
        codes_design_size: vectors the Ray run's last codes training saw (None: it never trained).
        base_vectors: vectors each index held before the run (``base_vectors`` of the measurement).
    """

    files: int
    segments: int
    workers: int
    ray_start_s: float
    single_s: float
    ray_s: float
    single_clips_per_s: float
    ray_clips_per_s: float
    overhead_ratio: float
    overhead_ratio_ready_pool: float
    ray_timing: dict[str, Any]
    ray_inline_s: float | None = None
    ray_inline_timing: dict[str, Any] | None = None
    codes_design_size: int | None = None
    base_vectors: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _bench_options(
    window_s: float, hop_s: float, dim: int, exact_max_vectors: int | None, commit_every: int | None
) -> dict[str, Any]:
    """The settings every run of a Ray measurement shares (never compacted: the runs are compared)."""
    from vela_search.store.index_choice import ChoiceLimits

    limits = ChoiceLimits(exact_max_elements=exact_max_vectors * dim) if exact_max_vectors else None
    common: dict[str, Any] = {"window_s": window_s, "hop_s": hop_s, "compact": False, "choice_limits": limits}
    if commit_every is not None:
        common["commit_every"] = commit_every
    return common


def prefill_index(root: Path, embedder: VelaEmbedder, count: int, *, seed: int = 0) -> None:
    """Create an index for `embedder` holding `count` random unit vectors (rows of no file): the existing
    library a benchmark run adds to."""
    from vela_search.embedding.fingerprint import fingerprint_for_index
    from vela_search.store import AudioIndex, IndexWriter

    fingerprint = fingerprint_for_index(embedder.fingerprint.to_dict(), None)
    AudioIndex.create(root, fingerprint=fingerprint, dim=embedder.dim).close()
    rng = np.random.default_rng(seed)
    with IndexWriter(root, fingerprint=fingerprint) as writer:
        for start in range(0, count, 50_000):
            n = min(50_000, count - start)
            vectors = rng.standard_normal((n, embedder.dim)).astype(np.float32)
            vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
            writer.add(vectors, [{"path": f"/library/base-{start + i}.wav"} for i in range(n)])
            writer.commit()


def measure_ray_overhead(
    paths: Sequence[str | os.PathLike[str]],
    embedder: VelaEmbedder,
    *,
    address: str | None = None,
    workers: int | None = None,
    window_s: float = DEFAULT_WINDOW_S,
    hop_s: float = DEFAULT_HOP_S,
    decode_workers: int | None = None,
    threads: int | None = None,
    exact_max_vectors: int | None = None,
    commit_every: int | None = None,
    base_vectors: int = 0,
) -> RayOverhead:
    """Index the same files in one process and on Ray (a local Ray, or the cluster at ``address``).

    The embedder is warmed up first (its demo prefix computed) so that neither run pays for it here; the
    Ray run's actors load their own copy, which is what a Ray run costs and is reported apart.
    ``threads``: torch threads of each CPU actor (set this process's to the same for a fair comparison).
    ``exact_max_vectors``: give the indexes compressed codes above this many vectors, so that a short run
    crosses the re-training thresholds, and index on Ray a second time with inline maintenance.
    ``commit_every``: commit after this many segments (default: as `index` does).
    ``base_vectors``: start every run from an index already holding this many random vectors (a library
    that the run adds to), so that a training crossed during the run works over a collection of that size.
    """
    from vela_search.embedding.embedder import EmbedItem
    from vela_search.indexing.cluster import ClusterTiming, RaySettings, index_paths_on_ray, ray_session
    from vela_search.store import manifest
    from vela_search.store.layout import MANIFEST

    files = [str(p) for p in discover_audio_files(paths).files]
    embedder.embed_items([EmbedItem("audio", wave=np.zeros(16_000, np.float32))])
    common = _bench_options(window_s, hop_s, embedder.dim, exact_max_vectors, commit_every)
    inline: tuple[float, ClusterTiming] | None = None
    with tempfile.TemporaryDirectory(prefix="vela-ray-bench-") as tmp:
        for name in ("single", "ray", "ray-inline"):
            if base_vectors:
                prefill_index(Path(tmp) / name, embedder, base_vectors)
        started = time.perf_counter()
        single = index_paths(
            files, os.path.join(tmp, "single"), embedder, decode_workers=decode_workers, **common
        )
        single_s = time.perf_counter() - started
        started = time.perf_counter()
        with ray_session(address):
            ray_start_s = time.perf_counter() - started
            settings = RaySettings(workers=workers, threads=threads)

            def on_ray_run(name: str, maintenance: str) -> tuple[Any, float, ClusterTiming]:
                timing, started = ClusterTiming(), time.perf_counter()
                report = index_paths_on_ray(
                    files, os.path.join(tmp, name), embedder, ray=settings, timing=timing,
                    maintenance=maintenance, **common,
                )  # fmt: skip
                return report, time.perf_counter() - started, timing

            on_ray, ray_s, timing = on_ray_run("ray", "background")
            codes = (manifest.read(Path(tmp) / "ray" / MANIFEST) or {}).get("codes")
            if exact_max_vectors:
                _, inline_s, inline_timing = on_ray_run("ray-inline", "inline")
                inline = (inline_s, inline_timing)
    if on_ray.segments_added != single.segments_added:  # the runs must have done the same work
        raise RuntimeError(
            f"Ray embedded {on_ray.segments_added} segments, one process {single.segments_added}"
        )
    segments = single.segments_added
    return RayOverhead(
        files=len(files),
        segments=segments,
        workers=timing.workers,
        ray_start_s=ray_start_s,
        single_s=single_s,
        ray_s=ray_s,
        single_clips_per_s=segments / max(single_s, 1e-9),
        ray_clips_per_s=segments / max(ray_s, 1e-9),
        overhead_ratio=ray_s / max(single_s, 1e-9),
        overhead_ratio_ready_pool=max(ray_s - timing.first_actor_ready_s, 0.0) / max(single_s, 1e-9),
        ray_timing=timing.to_dict(),
        ray_inline_s=inline[0] if inline else None,
        ray_inline_timing=inline[1].to_dict() if inline else None,
        codes_design_size=int(codes["design_size"]) if codes else None,
        base_vectors=base_vectors,
    )
