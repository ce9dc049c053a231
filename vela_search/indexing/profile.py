"""How well the pipeline hides decoding behind embedding: decode-only, embed-only and end-to-end times."""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
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
