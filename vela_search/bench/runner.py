"""The retrieval benchmark runner: embed a dataset's clips and captions, score them, report.

:func:`run_retrieval_benchmark` embeds every clip of a :class:`~vela_search.bench.datasets.RetrievalDataset`
(audio decoded by a thread pool that runs ahead of the embedder) and every caption (caption mode), scores the
caption x clip cosine matrix with :func:`~vela_search.bench.metrics.retrieval_metrics`, measures the
modality gap, and returns a :class:`BenchmarkReport` with the paper's numbers beside the measured ones.

- Clips longer than 30 s (the audio encoder's window) are embedded on their first 30 s and counted in
  ``n_truncated``; Clotho clips are 15-30 s and AudioCaps clips 10 s, so the official sets need no cut.
- A clip whose audio cannot be decoded is left out with its captions, and listed in ``unreadable``; clips
  without an audio file were already left out by the dataset reader (``missing``).
- With an index (``index=``) whose embedder fingerprint matches, clips the index holds as one whole-file
  segment take their stored vectors instead of being embedded again (``n_from_index``).
"""

from __future__ import annotations

import datetime as dt
import os
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from vela_search.bench.datasets import PAPER_RESULTS, RetrievalDataset
from vela_search.bench.metrics import modality_gap, retrieval_metrics
from vela_search.errors import AudioDecodeError, DatasetError

if TYPE_CHECKING:
    from vela_search.embedding.embedder import VelaEmbedder
    from vela_search.store import AudioIndex

__all__ = [
    "MAX_CLIP_SECONDS",
    "BenchmarkReport",
    "decode_benchmark_clip",
    "ProgressCallback",
    "index_vectors",
    "run_retrieval_benchmark",
]

MAX_CLIP_SECONDS = 30.0
SAMPLE_RATE = 16_000
# Clips handed to the embedder at a time: enough for full batches, few enough to report progress often.
_CLIPS_PER_CHUNK = 32
_CAPTIONS_PER_CHUNK = 256

ProgressCallback = Callable[[str, int, int], None]
"""Called as ``progress(stage, done, total)`` with stage ``"audio"`` or ``"captions"``."""


@dataclass
class BenchmarkReport:
    """The result of one retrieval benchmark run (``to_dict()`` for JSON).

    Attributes:
        dataset: ``clotho`` or ``audiocaps``.
        split: The split evaluated.
        metrics: ``t2a_*`` and ``a2t_*`` R@1/5/10, mAP@10 (percent), median and mean rank (1-based).
        modality_gap: Distance between the audio and caption embedding centroids.
        paper: The Vela paper's reported numbers for this dataset (same keys as ``metrics``).
        n_clips: Clips scored.
        n_captions: Captions scored.
        n_missing: Clips listed by the dataset without an audio file (excluded).
        missing: Their ids.
        n_unreadable: Clips whose audio could not be decoded (excluded with their captions).
        unreadable: ``{clip id: reason}``.
        n_truncated: Clips longer than 30 s, embedded on their first 30 s.
        n_from_index: Clips whose vectors came from ``index`` instead of being embedded.
        fingerprint: The embedder's fingerprint.
        device: The embedder's device.
        clips_per_s: Clips embedded per second (decode included), None when none was embedded.
        captions_per_s: Captions embedded per second.
        audio_s: Wall time of the audio stage.
        text_s: Wall time of the caption stage.
        wall_s: Wall time of the whole run.
        notice: A warning about the embedder (e.g. the tiny random model), or None.
        date: When the run finished (UTC, ISO 8601).
        rerank: With re-ranking, the text-to-audio metrics after the judge re-ordered each caption's top
            clips, with its cost (:class:`~vela_search.bench.rerank_eval.RerankReport`); else None.
    """

    dataset: str
    split: str
    metrics: dict[str, float]
    modality_gap: float
    paper: dict[str, float]
    n_clips: int
    n_captions: int
    n_missing: int
    missing: list[str]
    n_unreadable: int
    unreadable: dict[str, str]
    n_truncated: int
    n_from_index: int
    fingerprint: dict[str, Any]
    device: str
    clips_per_s: float | None
    captions_per_s: float
    audio_s: float
    text_s: float
    wall_s: float
    notice: str | None
    date: str = field(default_factory=lambda: dt.datetime.now(dt.UTC).isoformat(timespec="seconds"))
    rerank: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def run_retrieval_benchmark(
    dataset: RetrievalDataset,
    embedder: VelaEmbedder,
    *,
    index: AudioIndex | None = None,
    progress: ProgressCallback | None = None,
    decode_workers: int = 2,
    rerank: int | None = None,
    rerank_prompt: Any = None,
) -> BenchmarkReport:
    """Embed a retrieval dataset's clips and captions and score text-to-audio and audio-to-text retrieval.

    Args:
        dataset: Clips and captions (see :func:`vela_search.bench.datasets.load_dataset`).
        embedder: The embedder; audio and captions share it, as the method requires.
        index: An index to take clip vectors from where it holds them (see :func:`index_vectors`).
        progress: Optional callback, see :data:`ProgressCallback`.
        decode_workers: Threads decoding audio ahead of the embedder.
        rerank: Also score text-to-audio after re-ranking each caption's top ``rerank`` clips with the
            model's judgement (same vectors; :mod:`vela_search.bench.rerank_eval`).
        rerank_prompt: The judge prompt (a JSON file or a JudgePrompt; None: the default).

    Returns:
        The report.

    Raises:
        DatasetError: No clip could be decoded.
        VelaError: The embedder refuses an input (e.g. a clip does not fit behind the demo prefix).

    Example:
        >>> from vela_search.bench.datasets import load_clotho  # doctest: +SKIP
        >>> report = run_retrieval_benchmark(load_clotho("data/clotho"), emb)  # doctest: +SKIP
        >>> report.metrics["t2a_R@1"]  # doctest: +SKIP
    """
    started = time.perf_counter()
    report_progress = progress or (lambda _stage, _done, _total: None)

    reused = index_vectors(index, embedder.fingerprint.to_dict(), dataset.audio_paths) if index else {}
    t0 = time.perf_counter()
    audio_vectors, unreadable, truncated = _embed_clips(
        dataset, embedder, reused, report_progress, decode_workers
    )
    audio_s = time.perf_counter() - t0

    keep = [i for i in range(dataset.n_clips) if audio_vectors[i] is not None]
    if not keep:
        raise DatasetError(
            f"none of the {dataset.n_clips} clips of {dataset.name} {dataset.split} could be decoded; first "
            f"error: {next(iter(unreadable.values()))}"
        )
    new_index = np.full(dataset.n_clips, -1, dtype=np.int64)
    new_index[keep] = np.arange(len(keep))
    caption_mask = new_index[dataset.caption_to_audio] >= 0
    captions = [c for c, ok in zip(dataset.captions, caption_mask, strict=True) if ok]
    caption_to_audio = new_index[dataset.caption_to_audio[caption_mask]]

    t1 = time.perf_counter()
    text = _embed_captions(captions, embedder, report_progress)
    text_s = time.perf_counter() - t1

    audio = np.stack([audio_vectors[i] for i in keep]).astype(np.float32, copy=False)
    similarity = text @ audio.T
    embedded = dataset.n_clips - len(reused) - len(unreadable)
    reranked = None
    if rerank:
        paths = [dataset.audio_paths[i] for i in keep]
        reranked = _rerank(
            embedder, similarity, caption_to_audio, captions, paths, rerank, rerank_prompt, progress
        )
    return BenchmarkReport(
        dataset=dataset.name,
        split=dataset.split,
        metrics=retrieval_metrics(similarity, caption_to_audio),
        modality_gap=modality_gap(audio, text),
        paper=dict(PAPER_RESULTS.get(dataset.name, {})),
        n_clips=len(keep),
        n_captions=len(captions),
        n_missing=len(dataset.missing),
        missing=list(dataset.missing),
        n_unreadable=len(unreadable),
        unreadable={dataset.clip_ids[i]: reason for i, reason in unreadable.items()},
        n_truncated=truncated,
        n_from_index=len(reused),
        fingerprint=embedder.fingerprint.to_dict(),
        device=str(embedder.backbone.device),
        clips_per_s=embedded / audio_s if embedded and audio_s > 0 else None,
        captions_per_s=len(captions) / text_s if text_s > 0 else 0.0,
        audio_s=audio_s,
        text_s=text_s,
        wall_s=time.perf_counter() - started,
        notice=_notice(embedder),
        rerank=reranked,
    )


def _embed_clips(
    dataset: RetrievalDataset,
    embedder: VelaEmbedder,
    reused: dict[int, np.ndarray],
    report_progress: ProgressCallback,
    decode_workers: int,
) -> tuple[list[np.ndarray | None], dict[int, str], int]:
    """Every clip's vector (taken from ``reused``, else embedded; None for a clip that does not decode),
    why each unreadable clip failed, and how many clips were cut to the audio encoder's length."""
    audio_vectors: list[np.ndarray | None] = [reused.get(i) for i in range(dataset.n_clips)]
    todo = [i for i in range(dataset.n_clips) if i not in reused]
    unreadable: dict[int, str] = {}
    truncated = 0
    report_progress("audio", len(reused), dataset.n_clips)
    done = len(reused)
    chunk: list[tuple[int, np.ndarray]] = []
    for position, (clip, result) in enumerate(_decode_ahead(dataset.audio_paths, todo, decode_workers)):
        if isinstance(result, AudioDecodeError):
            unreadable[clip] = str(result)
        else:
            wave, was_cut = result
            truncated += was_cut
            chunk.append((clip, wave))
        if len(chunk) == _CLIPS_PER_CHUNK or (position == len(todo) - 1 and chunk):
            for (index_, _), vector in zip(chunk, embedder.embed_audio([w for _, w in chunk]), strict=True):
                audio_vectors[index_] = vector
            chunk = []
        done += 1
        report_progress("audio", done, dataset.n_clips)
    return audio_vectors, unreadable, truncated


def _embed_captions(
    captions: list[str], embedder: VelaEmbedder, report_progress: ProgressCallback
) -> np.ndarray:
    """The captions' vectors (caption mode), in chunks, as float32 rows."""
    text_rows = []
    report_progress("captions", 0, len(captions))
    for start in range(0, len(captions), _CAPTIONS_PER_CHUNK):
        text_rows.append(embedder.embed_text(captions[start : start + _CAPTIONS_PER_CHUNK], mode="caption"))
        report_progress("captions", min(start + _CAPTIONS_PER_CHUNK, len(captions)), len(captions))
    return np.concatenate(text_rows).astype(np.float32, copy=False)


def _rerank(
    embedder: VelaEmbedder,
    similarity: np.ndarray,
    caption_to_audio: np.ndarray,
    captions: list[str],
    paths: list[Path],
    n: int,
    prompt: Any,
    progress: ProgressCallback | None,
) -> dict[str, Any]:
    """The re-ranked text-to-audio report (:func:`vela_search.bench.rerank_eval.rerank_retrieval`)."""
    from vela_search.bench.rerank_eval import rerank_retrieval
    from vela_search.embedding.judge import AudioJudge

    judge = AudioJudge.for_embedder(embedder, prompt)
    return rerank_retrieval(
        similarity, caption_to_audio, captions, paths, judge, n, decode=_benchmark_wave, progress=progress
    ).to_dict()


def _benchmark_wave(path: Path) -> np.ndarray:
    """The clip as the benchmark embedded it (its first 30 s)."""
    return decode_benchmark_clip(path)[0]


def _notice(embedder: VelaEmbedder) -> str | None:
    from vela_search.embedding.shapes import SHAPE_NOTICE, is_shape_model

    if embedder.notice:
        return embedder.notice
    return SHAPE_NOTICE if is_shape_model(embedder.fingerprint.model) else None


def decode_benchmark_clip(path: Path) -> tuple[np.ndarray, bool]:
    """The clip at 16 kHz mono, cut to its first 30 s; and whether it was cut."""
    from vela_search.audio import decode_audio

    limit = int(MAX_CLIP_SECONDS * SAMPLE_RATE)
    # Decoding one second past the limit tells a longer clip from one of exactly 30 s without reading it all.
    wave = decode_audio(path, end_s=MAX_CLIP_SECONDS + 1.0)
    if len(wave) > limit:
        return wave[:limit], True
    return wave, False


def _decode_ahead(
    paths: Sequence[Path], order: Sequence[int], workers: int
) -> Iterator[tuple[int, tuple[np.ndarray, bool] | AudioDecodeError]]:
    """Decode ``paths[i]`` for ``i`` in ``order`` on a thread pool, yielding in order, a bounded window ahead.

    Decode errors are yielded, not raised, so one bad clip does not end the benchmark.
    """

    def decode(i: int) -> tuple[np.ndarray, bool] | AudioDecodeError:
        try:
            return decode_benchmark_clip(paths[i])
        except AudioDecodeError as exc:
            return exc

    ahead = max(2, 2 * _CLIPS_PER_CHUNK)
    with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="vela-bench-decode") as pool:
        pending: deque[tuple[int, Future]] = deque()
        queue = iter(order)
        for i in queue:
            pending.append((i, pool.submit(decode, i)))
            if len(pending) >= ahead:
                break
        while pending:
            i, future = pending.popleft()
            nxt = next(queue, None)
            if nxt is not None:
                pending.append((nxt, pool.submit(decode, nxt)))
            yield i, future.result()


def index_vectors(
    index: AudioIndex, fingerprint: dict[str, Any], paths: Sequence[Path]
) -> dict[int, np.ndarray]:
    """Stored vectors of the clips that ``index`` holds as one whole-file segment each.

    Nothing is taken unless every field of ``fingerprint`` equals the index's (same model, weights, adapter,
    prompts, demos). A clip qualifies when its absolute path (or, for a file recorded as a duplicate, the
    path of the file with the same content) is ``indexed`` with exactly one segment starting at 0: the
    indexer gives a file of at most 30 s one window covering all of it, which is what the benchmark embeds.

    Args:
        index: An open index.
        fingerprint: The embedder's fingerprint (``embedder.fingerprint.to_dict()``).
        paths: The dataset's clip paths.

    Returns:
        ``{clip position: float32 vector}`` for the clips found.
    """
    stored = index.fingerprint
    if any(stored.get(key) != value for key, value in fingerprint.items()):
        return {}
    files = index.files().to_pylist()
    by_path = {row["path"]: row for row in files}
    owner_of = {row["sha256"]: row["path"] for row in files if row["status"] == "indexed" and row["sha256"]}
    wanted: dict[int, str] = {}
    for i, path in enumerate(paths):
        row = by_path.get(os.path.abspath(path))
        if row is not None and row["status"] == "duplicate":
            row = by_path.get(owner_of.get(row["sha256"], ""))
        if row is not None and row["status"] == "indexed" and row["segments"] == 1:
            wanted[i] = row["path"]
    if not wanted:
        return {}
    ids, vectors = index.all_vectors()
    rows = index.segment_rows(ids)
    counts = Counter(row.get("path") for row in rows)
    position = {
        row.get("path"): pos
        for pos, row in enumerate(rows)
        if not row.get("start_s")  # start_s is 0 or absent
    }
    return {
        i: vectors[position[path]].astype(np.float32)
        for i, path in wanted.items()
        if counts[path] == 1 and path in position
    }
