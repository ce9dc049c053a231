"""Compressed search: candidates from the codes index, re-ranked with exact inner products.

The codes (an IVF index over global ids, see `codes.py`) only propose candidates; every returned score
is the exact inner product of the query with the stored fp16 vector, so a hit's score is the same as an
exact search would give it, and the top-k is the exact top-k of the candidate set.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from . import faiss_ops

if TYPE_CHECKING:
    from .shards import ShardReader

# (queries (n, d), sorted unique global ids, k) -> the exact (scores, ids) (n, <= k) among those ids.
ScoreAmong = Callable[[np.ndarray, np.ndarray, int], tuple[np.ndarray, np.ndarray]]
# Up to this many queries search on one thread: 2.2 ms instead of 10.8 ms per query over 200k x 4096
# codes on a loaded 2-core machine (thread barriers cost more than the work).
_FEW_QUERIES = 4


def merge_codes(indexes: list[Any]) -> Any:
    """One searchable index holding every shard's codes (the first index absorbs the others).

    A query then makes one coarse-quantizer search instead of one per shard.
    """
    merged = indexes[0]
    for other in indexes[1:]:
        merged.merge_from(other, 0)  # ids are global already: no offset
    return merged


def _params(index: Any, nprobe: int, allowed: np.ndarray | None, keep: list[Any]) -> Any:
    f = faiss_ops.faiss()
    selector = None
    if allowed is not None:
        bitmap = np.packbits(allowed, bitorder="little")
        keep.append(bitmap)  # the selector points into it: it must outlive the search
        selector = f.IDSelectorBitmap(len(bitmap), f.swig_ptr(bitmap))  # n counts bytes: ids past it are out
    quantizer = f.SearchParametersHNSW(efSearch=max(2 * nprobe, 64))
    keep.append(quantizer)
    ivf = f.SearchParametersIVF(sel=selector, nprobe=int(nprobe), quantizer_params=quantizer)
    keep.append(ivf)
    if isinstance(f.downcast_index(index), f.IndexPreTransform):
        return f.SearchParametersPreTransform(index_params=ivf)
    return ivf


def search_candidates(
    index: Any, queries: np.ndarray, depth: int, *, nprobe: int, allowed: np.ndarray | None
) -> np.ndarray:
    """Global ids of the `depth` best candidates per query by code distance (-1 pads).

    Args:
        index: an IVF codes index whose stored ids are global segment ids.
        queries: (q, d) float32.
        depth: candidates per query.
        nprobe: IVF lists probed.
        allowed: boolean mask over global ids (index = id), or None for all; excluded ids are removed
            before the top-`depth`, inside FAISS.
    """
    keep: list[Any] = []
    params = _params(index, nprobe, allowed, keep)
    with faiss_ops.single_thread(len(queries) <= _FEW_QUERIES):
        _, ids = index.search(np.ascontiguousarray(queries, dtype=np.float32), int(depth), params=params)
    return ids


def merge_top_k(scores: np.ndarray, ids: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The best k of per-query lists (-1 ids last): best score first, equal scores by ascending id, so
    results do not depend on shard layout."""
    scores = np.where(ids < 0, np.float32(-np.inf), scores).astype(np.float32, copy=False)
    order = np.lexsort((ids, -scores), axis=-1)[:, :k]
    rows = np.arange(len(ids))[:, None]  # (plain indexing: take_along_axis costs ~10 us a call in Python)
    return scores[rows, order], ids[rows, order]


class RowLocator:
    """Where each global id of a snapshot lives: the position of its shard in `readers`, and its row."""

    def __init__(self, readers: Sequence[ShardReader]) -> None:
        empty = np.empty(0, np.int64)
        all_ids = np.concatenate([r.ids for r in readers] or [empty])
        shard_of = np.repeat(np.arange(len(readers)), [r.count for r in readers])
        row_of = np.concatenate([np.arange(r.count) for r in readers] or [empty])
        order = np.argsort(all_ids, kind="stable")
        self._ids, self._shard_of, self._row_of = all_ids[order], shard_of[order], row_of[order]

    def locate(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(shard positions, rows, found) of `ids`; shard and row mean nothing where `found` is False."""
        if not len(self._ids):
            zeros = np.zeros(len(ids), np.int64)
            return zeros, zeros, np.zeros(len(ids), bool)
        at = np.minimum(np.searchsorted(self._ids, ids), len(self._ids) - 1)
        return self._shard_of[at], self._row_of[at], self._ids[at] == ids


def exact_top_k(
    readers: Sequence[ShardReader], shard_of: np.ndarray, row_of: np.ndarray, queries: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """The exact top-k of every query among the same stored rows (``row_of[i]`` of
    ``readers[shard_of[i]]``), as (scores, global ids), best first, equal scores by ascending id.

    Each shard scores its rows with its own index under a row selector: FAISS's SIMD fp16 kernels, the
    scores an exact scan gives, without decoding the vectors (decoding 500 rows of 4,096 fp16 and a
    NumPy product took 5.9 ms; see docs/benchmarks.md).
    """
    scores, ids = [], []
    with faiss_ops.single_thread(len(queries) <= _FEW_QUERIES):
        for s in np.unique(shard_of).tolist():
            found_scores, found_ids = readers[s].search_rows(queries, k, row_of[shard_of == s])
            scores.append(found_scores)
            ids.append(found_ids)
    if not scores:
        return np.empty((len(queries), 0), np.float32), np.empty((len(queries), 0), np.int64)
    return merge_top_k(np.hstack(scores), np.hstack(ids), k)


def rerank(
    queries: np.ndarray, candidates: np.ndarray, score_among: ScoreAmong, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """The exact top-k of each query's candidates.

    Args:
        queries: (q, d) float32.
        candidates: (q, c) global ids, -1 for none.
        score_among: the exact top-k of queries (n, d) among the same sorted unique global ids, as
            (scores, ids) best first, e.g. `shard_scorer`.
        k: results per query.

    Returns:
        (scores, ids), each (q, k): exact inner products, best first, equal scores by ascending id;
        -inf and -1 where a query has fewer than k candidates.
    """
    q = len(queries)
    scores = np.full((q, k), -np.inf, dtype=np.float32)
    ids = np.full((q, k), -1, dtype=np.int64)
    for i in range(q):
        mine = np.unique(candidates[i][candidates[i] >= 0])
        if mine.size == 0:
            continue
        found_scores, found_ids = score_among(queries[i : i + 1], mine, k)
        keep = found_ids[0] >= 0
        n = int(keep.sum())
        scores[i, :n], ids[i, :n] = found_scores[0][keep], found_ids[0][keep]
    return scores, ids


def shard_scorer(readers: Sequence[ShardReader]) -> ScoreAmong:
    """`rerank`'s scorer over these shards, by `exact_top_k` (ids outside them are left out)."""
    locator = RowLocator(readers)

    def score_among(queries: np.ndarray, ids: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        shard_of, row_of, found = locator.locate(ids)
        return exact_top_k(readers, shard_of[found], row_of[found], queries, k)

    return score_among


def list_count(index: Any) -> int:
    """How many inverted lists the IVF codes index `index` has (the most probes a search can make)."""
    return int(faiss_ops.faiss().extract_index_ivf(index).nlist)


class CodesSearcher:
    """The merged codes index of one snapshot, with the probe and re-rank depths it was trained for.

    A search never silently returns fewer candidates than the allowed rows could give: a query whose
    probed lists hold fewer than its depth of allowed candidates (a filter, deletions) is searched again
    with 4x the probes, up to every list (LanceDB's ``maximum_nprobes`` idea), so that when fewer rows
    than the depth are allowed, all of them are candidates and the re-ranked answer is exact.
    """

    def __init__(self, index: Any, *, nprobe: int, rerank_depth: int, names: list[str] | None = None) -> None:
        self.index = index
        self.names = list(names or [])  # the codes files merged into `index`, in merge order
        self.nprobe = int(nprobe)
        self.rerank_depth = int(rerank_depth)
        self.nlist = list_count(index)

    def search(
        self,
        queries: np.ndarray,
        k: int,
        allowed: np.ndarray | None,
        score_among: ScoreAmong,
        *,
        nprobe: int | None = None,
        refine: int | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Exact top-k among the candidates the codes propose (``refine``, default at least the trained
        re-rank depth and 10 x k; never fewer than k), probing ``nprobe`` lists first (default: the
        trained value) and widening for the queries that come back short."""
        depth = max(int(refine), k) if refine is not None else max(self.rerank_depth, 10 * k)
        probes = min(self.nlist, int(nprobe) if nprobe is not None else self.nprobe)
        available = int(np.count_nonzero(allowed)) if allowed is not None else int(self.index.ntotal)
        want = min(depth, available)
        candidates = search_candidates(self.index, queries, depth, nprobe=probes, allowed=allowed)
        short = np.flatnonzero((candidates >= 0).sum(axis=1) < want)
        while short.size and probes < self.nlist:
            probes = min(self.nlist, probes * 4)
            again = search_candidates(self.index, queries[short], depth, nprobe=probes, allowed=allowed)
            candidates[short] = again
            short = short[(again >= 0).sum(axis=1) < want]
        return rerank(queries, candidates, score_among, k)
