"""Re-ranking: the audio LLM judges the top N hits against the query, and the order combines both scores.

The vector search proposes; the loaded Qwen2-Audio then looks at the query and each of the top ``n``
candidates together (:class:`~vela_search.embedding.judge.AudioJudge`: the log-odds of answering "yes"
against "no") and the candidates are put in a new order. The rule, for every judged candidate::

    final = P(yes) + vector_weight * score

where ``P(yes) = sigmoid(log-odds)`` is the judge's probability in [0, 1] and ``score`` the cosine
similarity in [-1, 1]; ``vector_weight`` (0.5 by default, set in the judge prompt file) lets the vector
still separate candidates the judge finds equally likely, while a confident judgement (a gap of 0.5 in
probability or more) always wins over the vector's order. Ties keep the vector order.

- Only the top ``n`` hits are judged (:data:`DEFAULT_RERANK`, at most :data:`MAX_RERANK`); hits below
  them keep their vector order after them.
- Each candidate's audio is decoded from the index's files, the candidate segment's span only (a hit in a
  two-hour recording reads its 10 s), once per request even when several hits share it.
- A candidate whose audio cannot be decoded (file gone, unreadable, a dataset row) is left out of the
  judgement and keeps its vector rank; the others are re-ordered around it.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from vela_search.errors import QueryError
from vela_search.search.hits import Hit

if TYPE_CHECKING:
    from vela_search.embedding.judge import JudgeReference

__all__ = [
    "DEFAULT_RERANK",
    "MAX_RERANK",
    "RerankCandidates",
    "check_rerank",
    "combine",
    "decode_candidates",
    "rerank_hits",
]

DEFAULT_RERANK = 20
# Each candidate costs one forward of its audio (up to 750 tokens for 30 s) behind the query: 100 bounds a
# request at a few seconds of a GPU.
MAX_RERANK = 100
# Decoding threads: candidates' files are read and resampled in parallel (I/O and soxr release the GIL).
_DECODE_WORKERS = 4

Judge = Callable[["JudgeReference", list[np.ndarray]], np.ndarray]
"""``judge(reference, clips)`` -> yes-against-no log-odds, one per clip."""


def check_rerank(n: int | None) -> int | None:
    """Return ``n`` if it is None (no re-ranking) or an integer in ``1..MAX_RERANK``.

    Raises:
        QueryError: any other value.
    """
    if n is None:
        return None
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or not 1 <= n <= MAX_RERANK:
        raise QueryError(f"rerank must be a number of candidates from 1 to {MAX_RERANK}, got {n!r}")
    return int(n)


@dataclass
class RerankCandidates:
    """The top hits to judge and their decoded audio (None where it could not be decoded, with why)."""

    hits: list[Hit]
    n: int
    clips: list[np.ndarray | None]
    failures: dict[int, str] = field(default_factory=dict)  # position in ``hits`` -> reason

    @property
    def judged(self) -> list[int]:
        """Positions (in ``hits``) of the candidates the judge sees."""
        return [i for i, clip in enumerate(self.clips) if clip is not None]


def decode_candidates(hits: Sequence[Hit], n: int) -> RerankCandidates:
    """Decode the audio of the top ``n`` hits' segments (only their spans), each distinct span once.

    A hit is tried under each of its paths (copies of the same content) until one decodes.
    """
    from vela_search.audio import decode_audio
    from vela_search.errors import AudioDecodeError

    top = list(hits[:n])
    spans = list(dict.fromkeys((h.paths or (h.path,), h.start_s, h.end_s) for h in top))

    def decode(span: tuple[tuple[str, ...], float, float]) -> np.ndarray | str:
        paths, start, end = span
        reason = "no path"
        for path in paths:
            if path.startswith("dataset:"):
                reason = "a dataset row: its audio is not a file to decode"
                continue
            try:
                return decode_audio(Path(path), start_s=start, end_s=end if math.isfinite(end) else None)
            except (AudioDecodeError, OSError, ValueError) as exc:
                reason = str(exc)
        return reason

    with ThreadPoolExecutor(max_workers=max(1, min(_DECODE_WORKERS, len(spans)))) as pool:
        decoded = dict(zip(spans, pool.map(decode, spans), strict=True))  # the per-request cache
    clips: list[np.ndarray | None] = []
    failures: dict[int, str] = {}
    for i, hit in enumerate(top):
        result = decoded[(hit.paths or (hit.path,), hit.start_s, hit.end_s)]
        if isinstance(result, str):
            failures[i] = result
            clips.append(None)
        else:
            clips.append(result)
    return RerankCandidates(top, len(top), clips, failures)


def combine(
    hits: Sequence[Hit], candidates: RerankCandidates, log_odds: np.ndarray, vector_weight: float
) -> list[Hit]:
    """The hits in their new order, ranks renumbered, each judged hit carrying its ``judge`` probability.

    ``log_odds`` holds one value per judged candidate (:attr:`RerankCandidates.judged`, in that order).
    Undecoded candidates stay in their slots; the judged ones fill the other slots of the top ``n`` by
    ``P(yes) + vector_weight * score`` (ties: vector order); hits past ``n`` follow unchanged.
    """
    from vela_search.embedding.judge import combined_order, yes_probability

    judged = candidates.judged
    if len(log_odds) != len(judged):
        raise ValueError(f"{len(log_odds)} judgements for {len(judged)} candidates")
    probability = {i: yes_probability(x) for i, x in zip(judged, log_odds, strict=True)}
    order = combined_order([h.score for h in hits], judged, list(log_odds), vector_weight)
    placed = [dataclasses.replace(hits[i], judge=probability.get(i)) for i in order]
    return [dataclasses.replace(hit, rank=rank) for rank, hit in enumerate(placed, start=1)]


def rerank_hits(
    hits: Sequence[Hit], reference: JudgeReference, judge: Judge, *, n: int, vector_weight: float
) -> list[Hit]:
    """Judge the top ``n`` of ``hits`` against ``reference`` and return every hit in the combined order.

    Args:
        hits: vector-search hits, best first.
        reference: the query as the judge reads it (a text as written, or the example clip).
        judge: scores clips against the reference (``AudioJudge.judge``, possibly on a model thread).
        n: how many of the top hits to judge (1..MAX_RERANK, checked by the caller: `check_rerank`;
            fewer hits: all of them).
        vector_weight: weight of the cosine score beside the judge's probability.
    """
    candidates = decode_candidates(hits, n)
    clips = [candidates.clips[i] for i in candidates.judged]
    log_odds = judge(reference, clips) if clips else np.zeros(0)  # type: ignore[arg-type]
    return combine(hits, candidates, log_odds, vector_weight)
