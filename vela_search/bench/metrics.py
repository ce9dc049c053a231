"""Retrieval metrics for audio-text benchmarks (Clotho, AudioCaps) and the modality gap.

The protocol is the one of XinhaoMei/audio-text_retrieval (``tools/utils.py``), which laion_clap's
``evaluate_clotho_audiocaps`` adapts, so numbers are comparable with the tables of those papers:

- text-to-audio (t2a): every caption is a query with exactly one relevant clip.
- audio-to-text (a2t): every clip is a query whose relevant items are all of its captions; R@k and the
  median/mean rank use the *best* rank among the clip's captions.
- mAP@10 (a2t): the captions' positions are sorted, those within the top 10 contribute ``j / position_j``
  (j = 1, 2, ...), and the sum is divided by the clip's number of captions (5 in both benchmarks).

Ties are broken pessimistically: a relevant item ranks behind every non-relevant item with an equal score,
so a constant similarity matrix scores as badly as possible instead of as well as the sort order allows.
See ``docs/metrics.md`` for the definitions and formulas.
"""

from __future__ import annotations

import numpy as np

__all__ = ["RECALL_KS", "modality_gap", "retrieval_metrics"]

RECALL_KS: tuple[int, ...] = (1, 5, 10)
_MAP_CUTOFF = 10
# Bound on the boolean work matrix of one chunk, so that very large benchmarks do not allocate
# n_captions x n_captions at once.
_CHUNK_ELEMENTS = 1 << 22


def retrieval_metrics(similarity: np.ndarray, caption_to_audio: np.ndarray) -> dict[str, float]:
    """Text-to-audio and audio-to-text retrieval metrics of a caption x audio similarity matrix.

    Ranks are 0-based internally: the relevant item's rank is the number of non-relevant items scored
    at least as high (pessimistic ties). For a2t the j-th best caption of a clip (j = 0, 1, ...) sits at
    position ``j + (non-relevant captions scored >= it)``. Reported ranks are 1-based; the median rank is
    ``floor(median(rank0)) + 1`` as in the reference code. Clips that have no caption are distractors for
    t2a and are left out of the a2t averages.

    Args:
        similarity: ``(n_captions, n_audio)`` scores, higher is more similar (e.g. cosine).
        caption_to_audio: ``(n_captions,)`` integer index of each caption's clip.

    Returns:
        ``t2a_R@1``, ``t2a_R@5``, ``t2a_R@10``, ``t2a_mAP@10``, ``t2a_median_rank``, ``t2a_mean_rank`` and
        the same six ``a2t_*`` keys. Recalls and mAP@10 are percentages (0-100), ranks are 1-based.

    Raises:
        ValueError: If the shapes disagree, an index is out of range, or a score is NaN or infinite.

    Example:
        >>> sim = np.array([[0.9, 0.1], [0.8, 0.2], [0.1, 0.7]])
        >>> m = retrieval_metrics(sim, np.array([0, 0, 1]))
        >>> m["t2a_R@1"], m["a2t_R@1"]
        (100.0, 100.0)
    """
    sim, c2a = _validate(similarity, caption_to_audio)
    metrics: dict[str, float] = {}

    t2a = _t2a_ranks(sim, c2a)
    t2a_ap = np.where(t2a < _MAP_CUTOFF, 1.0 / (t2a + 1.0), 0.0)
    metrics.update(_summarise("t2a", t2a, t2a_ap))

    best, a2t_ap = _a2t_ranks_and_ap(sim, c2a)
    metrics.update(_summarise("a2t", best, a2t_ap))
    return metrics


def modality_gap(audio_embeddings: np.ndarray, text_embeddings: np.ndarray) -> float:
    """Euclidean distance between the centroids of the L2-normalised audio and text embeddings.

    ``gap = || mean_i(a_i / ||a_i||) - mean_j(t_j / ||t_j||) ||_2`` (Liang et al., 2022, "Mind the Gap").
    Each centroid is taken over its own set, so the counts may differ (e.g. 1,045 clips and 5,225
    captions). The value lies in [0, 2]: 0 when the centroids coincide.

    Args:
        audio_embeddings: ``(n_audio, d)`` audio vectors (normalised or not).
        text_embeddings: ``(n_text, d)`` text vectors, same ``d``.

    Returns:
        The gap as a Python float.

    Raises:
        ValueError: On empty inputs, mismatched dimensions, non-finite values or zero vectors.

    Example:
        >>> modality_gap(np.array([[1.0, 0.0]]), np.array([[0.0, 2.0]]))  # doctest: +ELLIPSIS
        1.414...
    """
    centroids = []
    for name, emb in (("audio_embeddings", audio_embeddings), ("text_embeddings", text_embeddings)):
        x = np.asarray(emb, dtype=np.float64)
        if x.ndim != 2 or x.shape[0] == 0 or x.shape[1] == 0:
            raise ValueError(f"{name} must be a non-empty 2-D array, got shape {x.shape}")
        if not np.isfinite(x).all():
            raise ValueError(f"{name} contains NaN or infinite values")
        norms = np.linalg.norm(x, axis=1, keepdims=True)
        if (norms == 0).any():
            raise ValueError(f"{name} contains {int((norms == 0).sum())} zero vector(s)")
        centroids.append((x / norms).mean(axis=0))
    if centroids[0].shape != centroids[1].shape:
        raise ValueError(
            f"embedding dimensions differ: audio {centroids[0].shape[0]}, text {centroids[1].shape[0]}"
        )
    return float(np.linalg.norm(centroids[0] - centroids[1]))


def _validate(similarity: np.ndarray, caption_to_audio: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    sim = np.asarray(similarity)
    if sim.ndim != 2 or sim.shape[0] == 0 or sim.shape[1] == 0:
        raise ValueError(f"similarity must be a non-empty (n_captions, n_audio) matrix, got {sim.shape}")
    if not np.issubdtype(sim.dtype, np.floating):
        sim = sim.astype(np.float64)
    if not np.isfinite(sim).all():
        # A NaN compares false with everything and would silently rank as a perfect or a worst match.
        raise ValueError("similarity contains NaN or infinite values")
    c2a = np.asarray(caption_to_audio)
    if c2a.shape != (sim.shape[0],):
        raise ValueError(f"caption_to_audio must have shape ({sim.shape[0]},), got {c2a.shape}")
    if not np.issubdtype(c2a.dtype, np.integer):
        raise ValueError(f"caption_to_audio must hold integers, got dtype {c2a.dtype}")
    if c2a.min() < 0 or c2a.max() >= sim.shape[1]:
        raise ValueError(
            f"caption_to_audio values must lie in [0, {sim.shape[1]}), got {c2a.min()}..{c2a.max()}"
        )
    return sim, c2a.astype(np.int64, copy=False)


def _t2a_ranks(sim: np.ndarray, c2a: np.ndarray) -> np.ndarray:
    """0-based rank of each caption's clip: clips other than it scored >= its score."""
    n_cap, n_audio = sim.shape
    ranks = np.empty(n_cap, dtype=np.int64)
    step = max(1, _CHUNK_ELEMENTS // n_audio)
    for start in range(0, n_cap, step):
        rows = sim[start : start + step]
        true = rows[np.arange(rows.shape[0]), c2a[start : start + step]]
        # ">=" also counts the relevant clip itself once: subtract it.
        ranks[start : start + step] = (rows >= true[:, None]).sum(axis=1) - 1
    return ranks


def _a2t_ranks_and_ap(sim: np.ndarray, c2a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Best 0-based rank and AP@10 of every clip that has at least one caption."""
    n_cap, n_audio = sim.shape
    true = sim[np.arange(n_cap), c2a]

    # nonrel_ge[i]: captions of other clips scoring >= caption i on caption i's own clip.
    nonrel_ge = np.empty(n_cap, dtype=np.int64)
    step = max(1, _CHUNK_ELEMENTS // n_cap)
    for start in range(0, n_cap, step):
        clips = c2a[start : start + step]
        cols = sim[:, clips].T  # (chunk, n_cap): scores of every caption for these captions' clips
        other = c2a[None, :] != clips[:, None]
        nonrel_ge[start : start + step] = ((cols >= true[start : start + step, None]) & other).sum(axis=1)

    # Order each clip's captions best first. A smaller count implies a higher score, and captions with
    # equal counts have no non-relevant caption between them, so swapping them leaves every position
    # (and therefore R@k and AP) unchanged: sorting by the count is enough.
    order = np.lexsort((nonrel_ge, c2a))
    clip_sorted = c2a[order]
    counts = np.bincount(c2a, minlength=n_audio)
    group_start = np.concatenate(([0], np.cumsum(counts)[:-1]))
    j = np.arange(n_cap) - group_start[clip_sorted]  # 0-based index of the caption within its clip
    position = j + nonrel_ge[order]  # 0-based position in the clip's ranked caption list

    has_caption = counts > 0
    best = np.full(n_audio, np.iinfo(np.int64).max, dtype=np.int64)
    np.minimum.at(best, clip_sorted, position)
    contrib = np.where(position < _MAP_CUTOFF, (j + 1.0) / (position + 1.0), 0.0)
    ap = np.bincount(clip_sorted, weights=contrib, minlength=n_audio)[has_caption] / counts[has_caption]
    return best[has_caption], ap


def _summarise(prefix: str, ranks: np.ndarray, ap: np.ndarray) -> dict[str, float]:
    out = {f"{prefix}_R@{k}": float(100.0 * np.mean(ranks < k)) for k in RECALL_KS}
    out[f"{prefix}_mAP@10"] = float(100.0 * np.mean(ap))
    out[f"{prefix}_median_rank"] = float(np.floor(np.median(ranks)) + 1)
    out[f"{prefix}_mean_rank"] = float(np.mean(ranks) + 1)
    return out
