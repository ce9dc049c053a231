"""Compressed search: candidates from the codes index, re-ranked with exact inner products.

The codes (an IVF index over global ids, see `codes.py`) only propose candidates; every returned score
is the exact inner product of the query with the stored fp16 vector, so a hit's score is the same as an
exact search would give it, and the top-k is the exact top-k of the candidate set.
"""

from __future__ import annotations

import math
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
# A locator indexes a table by id while the largest id is below this many times the row count.
_DENSE_SPAN = 3
# A re-rank gathers its rows into one array up to this size, and only while its shards hold at least
# `_SPARSE_ROWS` rows per row asked for (or the rows take at most `_GATHER_ALWAYS_BYTES`); otherwise each
# shard scans its rows under a selector, which tests every row of the shard but copies none. 300 rows of
# 1M x 1,024 in 11 shards: 0.70 ms gathered, ~3 ms by the shards' scans; 500 rows of 100k x 4,096 (8 KB
# each) in 7 shards: 3.6-4.2 ms gathered, 1.5-2.2 ms by the scans.
_GATHER_MAX_BYTES = 32 << 20
_SPARSE_ROWS = 1024
# 100 rows of 100k x 4,096 (800 KB in 6-7 shards of 16,384) took 1.36-2.45 ms a query gathered against
# 1.47-3.19 ms by the shards' scans, in 3 passes alternating on one store (docs/benchmarks.md, "RaBitQ
# codes").
_GATHER_ALWAYS_BYTES = 1 << 20
# The HNSW coarse quantizer's narrowest walk (efSearch is at least twice the lists probed).
_MIN_QUANTIZER_EF = 16
# A filter that keeps a share s of the rows leaves its best rows further from the query, among more rows
# of near-equal scores, where the codes' estimates rank less well: the default re-rank depth grows by
# 1/s, up to this factor. On 3,000 clustered vectors with a 20% range filter, recall@10 against exact
# search went from 0.88 (PQ and RaBitQ codes alike, 100 candidates) to 1.0 with 400.
_FILTER_DEPTH_GROWTH = 4.0
# Bits of the query's scalar quantization in RaBitQ distance estimates.
_RABITQ_QUERY_BITS = 8


def merge_codes(indexes: list[Any]) -> Any:
    """One searchable index holding every shard's codes (the first index absorbs the others).

    A query then makes one coarse-quantizer search instead of one per shard.
    """
    merged = indexes[0]
    for other in indexes[1:]:
        merged.merge_from(other, 0)  # ids are global already: no offset
    return merged


def search_params(index: Any, nprobe: int, allowed: np.ndarray | None, keep: list[Any]) -> Any:
    """FAISS search parameters of the codes index `index`: `nprobe` lists, an HNSW quantizer walk wide
    enough for them, and a selector of `allowed` ids. `keep` receives the objects that must outlive
    the search (FAISS holds raw pointers to them)."""
    f = faiss_ops.faiss()
    selector = None
    if allowed is not None:
        bitmap = np.packbits(allowed, bitorder="little")
        keep.append(bitmap)  # the selector points into it: it must outlive the search
        selector = f.IDSelectorBitmap(len(bitmap), f.swig_ptr(bitmap))  # n counts bytes: ids past it are out
    # The coarse walk visits ~efSearch centroids of full dimension: at 4,096 dims efSearch 64 took 1.0 ms
    # and 16 took 0.43 ms, finding the same 8 lists (docs/benchmarks.md, "RaBitQ codes").
    quantizer = f.SearchParametersHNSW(efSearch=max(2 * nprobe, _MIN_QUANTIZER_EF))
    keep.append(quantizer)
    concrete = f.downcast_index(index)
    inner = f.downcast_index(concrete.index) if isinstance(concrete, f.IndexPreTransform) else concrete
    if isinstance(inner, f.IndexIVFRaBitQ):
        ivf = f.IVFRaBitQSearchParameters()  # the query quantized to 8 bits, not FAISS's default 4
        ivf.qb, ivf.nprobe, ivf.sel = _RABITQ_QUERY_BITS, int(nprobe), selector
        ivf.quantizer_params = quantizer
    else:
        ivf = f.SearchParametersIVF(sel=selector, nprobe=int(nprobe), quantizer_params=quantizer)
    keep.append(ivf)
    if inner is not concrete:
        return f.SearchParametersPreTransform(index_params=ivf)
    return ivf


def search_candidates(
    index: Any,
    queries: np.ndarray,
    depth: int,
    *,
    nprobe: int,
    allowed: np.ndarray | None,
    params: Any = None,
) -> np.ndarray:
    """Global ids of the `depth` best candidates per query by code distance (-1 pads).

    Args:
        index: an IVF codes index whose stored ids are global segment ids.
        queries: (q, d) float32.
        depth: candidates per query.
        nprobe: IVF lists probed.
        allowed: boolean mask over global ids (index = id), or None for all; excluded ids are removed
            before the top-`depth`, inside FAISS.
        params: `search_params(index, nprobe, None)` made earlier, for a search without `allowed`
            (making them costs ~50 us a query).
    """
    keep: list[Any] = []
    if params is None or allowed is not None:
        params = search_params(index, nprobe, allowed, keep)
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
    """Where each global id of a snapshot lives: the position of its shard in `readers`, and its row.

    Ids are allocated in order and mostly live, so where the largest id is below `_DENSE_SPAN` x the
    row count they index a table directly (8 bytes per id up to the largest: 300 lookups at 1M rows
    took 0.04 ms right after a candidate search, a binary search over the sorted ids 0.20-0.26 ms);
    otherwise the sorted ids are searched.
    """

    def __init__(self, readers: Sequence[ShardReader]) -> None:
        empty = np.empty(0, np.int64)
        all_ids = np.concatenate([r.ids for r in readers] or [empty])
        shard_of = np.repeat(np.arange(len(readers), dtype=np.int64), [r.count for r in readers])
        row_of = np.concatenate([np.arange(r.count, dtype=np.int64) for r in readers] or [empty])
        span = int(all_ids.max()) + 1 if len(all_ids) else 0
        self._table: np.ndarray | None = None
        if len(all_ids) and span <= _DENSE_SPAN * len(all_ids):
            self._table = np.full(span, -1, np.int64)  # shard << 32 | row, -1 where no row
            self._table[all_ids] = (shard_of << 32) | row_of
            return
        order = np.argsort(all_ids, kind="stable")
        self._ids, self._shard_of, self._row_of = all_ids[order], shard_of[order], row_of[order]

    def locate(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(shard positions, rows, found) of `ids`; shard and row mean nothing where `found` is False."""
        ids = np.asarray(ids, dtype=np.int64)
        if self._table is not None:
            inside = (ids >= 0) & (ids < len(self._table))
            packed = self._table[np.where(inside, ids, 0)]
            found = inside & (packed >= 0)
            return packed >> 32, packed & 0xFFFFFFFF, found
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

    A few rows of large shards (a re-rank's at 1M) are copied out of the shards' mapped files and
    scored in one FAISS call for every query (`faiss_ops.score_codes`), not one Python call per row per
    query: at 1M x 1,024 over 11 shards, 300 rows took 0.70 ms against 0.72 ms one by one. Reading
    the rows is the cost either way. Other rows (a filter's scan, a re-rank of many rows of small
    shards: see `_SPARSE_ROWS`), or shards whose rows cannot be scored apart, are scored by each shard's
    own index under a row selector. Both use FAISS's SIMD fp16 kernels and give the scores an exact
    scan gives.
    """
    with faiss_ops.single_thread(len(queries) <= _FEW_QUERIES):
        gathered = _gather_rows(readers, shard_of, row_of)
        if gathered is not None:
            kind, codes, ids = gathered
            scores, positions = faiss_ops.score_codes(kind, codes, queries)
            return _best_first_top_k(scores, ids[positions], k)
        scores, ids = [], []
        for s in np.unique(shard_of).tolist():
            found_scores, found_ids = readers[s].search_rows(queries, k, row_of[shard_of == s])
            scores.append(found_scores)
            ids.append(found_ids)
    if not scores:
        return np.empty((len(queries), 0), np.float32), np.empty((len(queries), 0), np.int64)
    return merge_top_k(np.hstack(scores), np.hstack(ids), k)


def _best_first_top_k(scores: np.ndarray, ids: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """`merge_top_k` of lists already sorted best first: only the columns down to each query's k-th
    score (and its ties) can be in the top-k, so only they are ordered by (score, id)."""
    if scores.shape[1] <= k:
        return merge_top_k(scores, ids, k)
    reach = int((scores >= scores[:, k - 1 : k]).sum(axis=1).max())
    return merge_top_k(scores[:, :reach], ids[:, :reach], k)


def _gather_rows(
    readers: Sequence[ShardReader], shard_of: np.ndarray, row_of: np.ndarray
) -> tuple[tuple, np.ndarray, np.ndarray] | None:
    """(kind, codes, global ids) of the rows, copied out of their shards into one array, or None when
    there are none, they are too many to copy (`_GATHER_MAX_BYTES`) or, past `_GATHER_ALWAYS_BYTES`, too
    dense in their shards for a copy to pay (`_SPARSE_ROWS`), or a shard's rows cannot be scored apart
    from it (see `ShardReader.flat_rows`)."""
    if not len(shard_of):
        return None
    order = np.argsort(shard_of, kind="stable")
    shards, starts = np.unique(shard_of[order], return_index=True)
    involved = shards.tolist()
    views = [readers[s].flat_rows() for s in involved]
    if any(v is None for v in views) or len({v.kind for v in views}) != 1:  # type: ignore[union-attr]
        return None
    width = views[0].codes.shape[1]  # type: ignore[union-attr]
    dense = len(order) * _SPARSE_ROWS > sum(readers[s].count for s in involved)
    if len(order) * width > (_GATHER_ALWAYS_BYTES if dense else _GATHER_MAX_BYTES):
        return None
    codes = np.empty((len(order), width), np.uint8)
    ids = np.empty(len(order), np.int64)
    ends = [*starts[1:].tolist(), len(order)]
    for s, view, start, end in zip(involved, views, starts.tolist(), ends):
        rows = row_of[order[start:end]]
        np.take(view.codes, rows, axis=0, out=codes[start:end])  # type: ignore[union-attr]
        ids[start:end] = readers[s].ids[rows]
    return views[0].kind, codes, ids  # type: ignore[union-attr]


def sorted_unique(values: np.ndarray) -> np.ndarray:
    """`np.unique` of a short 1-d array, by a sort (NumPy's hash-based unique costs ~70 us for 300 ids)."""
    ordered = np.sort(values)
    if len(ordered) < 2:
        return ordered
    return ordered[np.concatenate(([True], ordered[1:] != ordered[:-1]))]


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
        mine = sorted_unique(candidates[i][candidates[i] >= 0])
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
        self._unfiltered: dict[int, tuple[Any, list[Any]]] = {}  # nprobe -> (params, what they point to)

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
        re-rank depth and 10 x k, grown for a filter, see `_FILTER_DEPTH_GROWTH`; never fewer than k),
        probing ``nprobe`` lists first (default: the trained value) and widening for the queries that
        come back short."""
        available = int(np.count_nonzero(allowed)) if allowed is not None else int(self.index.ntotal)
        if refine is not None:
            depth = max(int(refine), k)
        else:
            share = available / max(int(self.index.ntotal), 1)
            growth = min(_FILTER_DEPTH_GROWTH, max(1.0, 1.0 / max(share, 1e-9)))
            depth = int(math.ceil(max(self.rerank_depth, 10 * k) * growth))
        probes = min(self.nlist, int(nprobe) if nprobe is not None else self.nprobe)
        want = min(depth, available)
        candidates = search_candidates(
            self.index, queries, depth, nprobe=probes, allowed=allowed, params=self._params(probes)
        )
        short = np.flatnonzero((candidates >= 0).sum(axis=1) < want)
        while short.size and probes < self.nlist:
            probes = min(self.nlist, probes * 4)
            again = search_candidates(self.index, queries[short], depth, nprobe=probes, allowed=allowed)
            candidates[short] = again
            short = short[(again >= 0).sum(axis=1) < want]
        return rerank(queries, candidates, score_among, k)

    def memory_bytes(self) -> int:
        """Bytes the merged index holds (codes, ids, coarse quantizer, codebooks or rotation): its
        serialised size, measured by writing it out (a copy as large as the index, for reports)."""
        return int(faiss_ops.faiss().serialize_index(self.index).nbytes)

    def _params(self, nprobe: int) -> Any:
        """The search parameters for `nprobe` probes without a filter, made once (FAISS only reads them)."""
        if nprobe not in self._unfiltered:
            keep: list[Any] = []
            self._unfiltered[nprobe] = (search_params(self.index, nprobe, None, keep), keep)
        return self._unfiltered[nprobe][0]
