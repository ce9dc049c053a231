"""Re-ranking in the retrieval benchmark: text-to-audio metrics with and without the judge, same vectors.

For every caption, the top ``n`` clips of the benchmark's own cosine matrix are judged by the audio LLM
(:class:`~vela_search.embedding.judge.AudioJudge`, the caption as the query) and re-ordered by the rule
of :mod:`vela_search.search.rerank` (``P(yes) + vector_weight * cosine``); the other clips keep their
cosine order below them. The re-ranked matrix is scored by the same
:func:`~vela_search.bench.metrics.retrieval_metrics`, so the two sets of ``t2a_*`` numbers differ only by
the re-ranking. Audio-to-text is not re-ranked (the judge reads audio candidates, not caption candidates).

Cost: captions x n judge forwards (Clotho evaluation at n = 20: 5,225 x 20 = 104,500), each candidate's
clip decoded again from its file (an LRU cache keeps recent clips: a clip is a top candidate of many
captions).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from vela_search.bench.metrics import retrieval_metrics
from vela_search.errors import AudioDecodeError

if TYPE_CHECKING:
    from vela_search.embedding.judge import AudioJudge

__all__ = ["RerankReport", "rerank_retrieval"]

# Decoded clips kept (30 s at 16 kHz float32 is 1.9 MB: 256 clips are under 0.5 GB).
_CLIP_CACHE = 256
# Re-ranked candidates are lifted above every cosine (in [-1, 1]) so they stay the top n.
_LIFT = 10.0


@dataclass
class RerankReport:
    """Text-to-audio metrics after re-ranking the top ``n`` clips of every caption.

    Attributes:
        n: candidates judged per caption.
        metrics: the ``t2a_*`` keys of :func:`retrieval_metrics` on the re-ranked order.
        prompt_digest: which judge prompt was used.
        vector_weight: the cosine's weight in the final order.
        judged: candidate judgements made.
        undecodable: candidates left at their cosine rank because their clip could not be decoded.
        wall_s: time of the re-ranking stage (decoding and judging).
        ms_per_candidate: ``wall_s`` per judgement, in milliseconds.
    """

    n: int
    metrics: dict[str, float]
    prompt_digest: str
    vector_weight: float
    judged: int
    undecodable: int
    wall_s: float
    ms_per_candidate: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def rerank_retrieval(
    similarity: np.ndarray,
    caption_to_audio: np.ndarray,
    captions: Sequence[str],
    clip_paths: Sequence[Path],
    judge: AudioJudge,
    n: int,
    *,
    decode: Callable[[Path], np.ndarray],
    progress: Callable[[str, int, int], None] | None = None,
) -> RerankReport:
    """Re-rank each caption's top ``n`` clips with ``judge`` and score text-to-audio retrieval again.

    Args:
        similarity: ``(captions, clips)`` cosine matrix of the benchmark run.
        caption_to_audio: each caption's clip (column of ``similarity``).
        captions: the caption texts (row order).
        clip_paths: each column's audio file.
        judge: the judge on the benchmark's loaded model.
        n: candidates per caption (at most the number of clips).
        decode: a clip's audio as the benchmark embedded it (16 kHz mono; raises AudioDecodeError).
        progress: called as ``progress("re-ranking", done, total)``.
    """
    started = time.perf_counter()
    report = progress or (lambda _stage, _done, _total: None)
    n = min(n, similarity.shape[1])
    cache: OrderedDict[int, np.ndarray | None] = OrderedDict()

    def clip(column: int) -> np.ndarray | None:
        if column in cache:
            cache.move_to_end(column)
            return cache[column]
        try:
            wave: np.ndarray | None = decode(clip_paths[column])
        except AudioDecodeError:
            wave = None
        cache[column] = wave
        if len(cache) > _CLIP_CACHE:
            cache.popitem(last=False)
        return wave

    from vela_search.embedding.judge import JudgeReference, combined_order

    reranked = np.array(similarity, dtype=np.float64, copy=True)
    weight = judge.prompt.vector_weight
    judged = undecodable = 0
    report("re-ranking", 0, len(captions))
    for row, caption in enumerate(captions):
        top = np.argsort(-similarity[row], kind="stable")[:n]
        waves = [clip(int(c)) for c in top]
        ok = [i for i, w in enumerate(waves) if w is not None]
        undecodable += len(top) - len(ok)
        odds = judge.judge(JudgeReference.for_text(caption), [waves[i] for i in ok])  # type: ignore[misc]
        judged += len(ok)
        order = combined_order(similarity[row, top], ok, odds, weight)
        for slot, position in enumerate(order):  # the top n, lifted above every cosine, in the new order
            reranked[row, top[position]] = _LIFT + len(top) - slot
        report("re-ranking", row + 1, len(captions))
    wall = time.perf_counter() - started
    metrics = {k: v for k, v in retrieval_metrics(reranked, caption_to_audio).items() if k.startswith("t2a_")}
    return RerankReport(
        n=n,
        metrics=metrics,
        prompt_digest=judge.prompt.digest,
        vector_weight=weight,
        judged=judged,
        undecodable=undecodable,
        wall_s=wall,
        ms_per_candidate=1000.0 * wall / judged if judged else 0.0,
    )
