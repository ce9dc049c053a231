"""Compressed search: candidates from the codes index, re-ranked with exact inner products.

The codes (an IVF index over global ids, see `codes.py`) only propose candidates; every returned score
is the exact inner product of the query with the stored fp16 vector, so a hit's score is the same as an
exact search would give it, and the top-k is the exact top-k of the candidate set.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from . import faiss_ops

VectorsOf = Callable[[np.ndarray], np.ndarray]
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


def inner_products(queries: np.ndarray, vectors: np.ndarray) -> np.ndarray:
    """``queries @ vectors.T`` (float32), on this thread for a few queries.

    A BLAS matrix-vector product wakes the BLAS library's thread pool: on a busy 2-core machine that cost
    23.6 ms for 800 x 1,024 candidates, where NumPy's own loop (`einsum`, which calls no BLAS) took
    0.97 ms (scripts/search_breakdown.py, docs/benchmarks.md). Many queries go through BLAS.
    """
    if len(queries) <= _FEW_QUERIES:
        return np.einsum("qd,nd->qn", queries, vectors)
    return queries @ vectors.T


def rerank(
    queries: np.ndarray, candidates: np.ndarray, vectors_of: VectorsOf, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """The exact top-k of each query's candidates.

    Args:
        queries: (q, d) float32.
        candidates: (q, c) global ids, -1 for none.
        vectors_of: returns the stored (exact fp16) vectors of sorted unique ids, float32.
        k: results per query.

    Returns:
        (scores, ids), each (q, k): exact inner products, best first, equal scores by ascending id;
        -inf and -1 where a query has fewer than k candidates.
    """
    q = len(queries)
    scores = np.full((q, k), -np.inf, dtype=np.float32)
    ids = np.full((q, k), -1, dtype=np.int64)
    wanted = np.unique(candidates[candidates >= 0])
    if wanted.size == 0:
        return scores, ids
    vectors = vectors_of(wanted)
    for i in range(q):
        mine = np.unique(candidates[i][candidates[i] >= 0])
        if mine.size == 0:
            continue
        exact = inner_products(queries[i : i + 1], vectors[np.searchsorted(wanted, mine)])[0]
        order = np.lexsort((mine, -exact))[:k]
        scores[i, : len(order)] = exact[order]
        ids[i, : len(order)] = mine[order]
    return scores, ids


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
        vectors_of: VectorsOf,
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
        return rerank(queries, candidates, vectors_of, k)
