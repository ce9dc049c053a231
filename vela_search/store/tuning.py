"""Self-tuned accuracy: search settings chosen from recall measured on held-out queries.

When an automatic index builds (or folds, or re-trains) its graph or codes, it measures recall@10 of
its own search against exact search, on queries that the searched index does not hold. A graph holds out
real rows: a uniform sample of the live rows it takes in (`held_out_rows`) is inserted only after the
measurement, so each query is a draw from the collection's own distribution that the graph has never
seen (truth and search both leave the held-out rows out). Compressed codes are trained on a sample and
then hold every row, so their queries are live vectors drawn apart from the training sample, perturbed
with isotropic noise (`PERTURBATION` of their norm) and re-normalised, with the source vector left out of
both answers (a query never finds itself). It then walks a ladder of settings
from cheap to expensive (efSearch for a graph; lists probed and re-rank depth for codes) and keeps the
first that reaches `TARGET_RECALL`, or the most accurate one when none does, recording the recall it
measured. The functions here are plain (vectors in, settings out) so that they can run wherever the
building runs.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from . import faiss_ops
from .shards import ShardReader

# The recall@10 a tuned setting must reach on the held-out queries: 0.95 plus one standard error of a
# 200-query estimate (~0.01), so that fresh queries still see 0.95.
TARGET_RECALL = 0.96
# Noise added to a codes query's source vector, relative to its norm (the query is then ~0.8 cosine from
# its source). Calibrated on the hard set (variance ~ i^-0.5 over 1,024 dims, 20k vectors, HNSW32): at
# efSearch 16/24/32 these queries gave recall@10 0.881/0.936/0.959 where fresh queries gave
# 0.881/0.926/0.962; noise of 0.5 overstated recall by up to 0.05 (0.930/0.957/0.970), 1.0 understated
# it. At 1M vectors 0.75 understated a graph's recall by 0.03-0.06 and 0.5 matched: no noise fits every
# size, which is why graphs hold out real rows instead (docs/benchmarks.md).
PERTURBATION = 0.75
HELD_OUT = 200
# A graph holds out at most this share of the rows it takes in (small graphs: fewer queries).
HELD_OUT_SHARE = 0.1
RECALL_K = 10
# efSearch values tried, cheapest first.
EF_LADDER = (16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512)
# (lists probed, candidates re-ranked) tried for compressed codes, cheapest first. On the hard set at
# 100k x 4,096 (docs/benchmarks.md) doubling the probes from 32 costs more than re-ranking 100 more:
# (32, 300) reached 0.966 at 2.7 ms where (64, 200) reached 0.925 at 3.3 ms, hence no (64, 200). RaBitQ
# codes there reach 0.98 from 8 lists and 100 candidates.
CODES_LADDER = (
    (8, 100),
    (16, 100),
    (32, 100),
    (32, 200),
    (32, 300),
    (64, 300),
    (64, 500),
    (128, 500),
    (128, 1000),
    (256, 1000),
    (256, 2000),
    (512, 2000),
)


def live_masks(readers: list[ShardReader], deleted: np.ndarray) -> list[np.ndarray]:
    """Per shard, which rows are live (not deleted)."""
    return [~np.isin(r.ids, deleted) for r in readers]


def gather(
    readers: list[ShardReader], masks: list[np.ndarray], picks: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Ids and exact vectors of the live vectors with the given sorted ranks (0..live-1, in shard order)."""
    live_counts = np.array([int(m.sum()) for m in masks])
    starts = np.concatenate([[0], np.cumsum(live_counts)])
    shard_of = np.searchsorted(starts, picks, side="right") - 1
    ids = np.empty(len(picks), np.int64)
    vectors = np.empty((len(picks), 0), np.float32)
    for s in np.unique(shard_of).tolist():
        which = np.flatnonzero(shard_of == s)
        rows = np.flatnonzero(masks[s])[picks[which] - starts[s]]
        got = faiss_ops.reconstruct_rows(readers[s].index(), rows)
        if vectors.shape[1] == 0:
            vectors = np.empty((len(picks), got.shape[1]), np.float32)
        vectors[which] = got
        ids[which] = readers[s].ids[rows]
        readers[s].close()  # one shard's exact vectors in memory at a time
    return ids, vectors


def perturb(vectors: np.ndarray, rng: np.random.Generator, amount: float = PERTURBATION) -> np.ndarray:
    """Unit vectors near `vectors`: isotropic noise of `amount` x each norm added, then normalised."""
    noise = rng.standard_normal(vectors.shape).astype(np.float32)
    noise *= amount * np.linalg.norm(vectors, axis=1, keepdims=True) / np.sqrt(vectors.shape[1])
    out = vectors + noise
    return np.ascontiguousarray(out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12))


def held_out_queries(
    readers: list[ShardReader],
    masks: list[np.ndarray],
    seed: int,
    count: int = HELD_OUT,
    picks: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(source ids, queries): `count` live vectors sampled uniformly (or the live ranks `picks`, e.g.
    drawn apart from a training sample), perturbed (see `perturb`)."""
    live = int(sum(int(m.sum()) for m in masks))
    rng = np.random.default_rng(seed)
    if picks is None:
        picks = rng.choice(live, size=min(live, count), replace=False)
    ids, vectors = gather(readers, masks, np.sort(picks))
    return ids, perturb(vectors, rng)


def held_out_rows(
    readers: list[ShardReader], masks: list[np.ndarray], seed: int, count: int = HELD_OUT, since: int = 0
) -> list[np.ndarray]:
    """Per shard, a mask of the rows held out of a graph while it is measured: `count` (at most
    `HELD_OUT_SHARE` of them, at least one where there are ten) live rows with ids at or past `since`,
    sampled uniformly."""
    eligible = [m & (r.ids >= since) for r, m in zip(readers, masks, strict=True)]
    total = int(sum(int(e.sum()) for e in eligible))
    take = min(count, int(HELD_OUT_SHARE * total))
    held = [np.zeros(r.count, dtype=bool) for r in readers]
    if take == 0:
        return held
    picks = np.sort(np.random.default_rng(seed).choice(total, size=take, replace=False))
    start = 0
    for e, h in zip(eligible, held, strict=True):
        rows = np.flatnonzero(e)
        inside = picks[(picks >= start) & (picks < start + len(rows))] - start
        h[rows[inside]] = True
        start += len(rows)
    return held


class RunningTopK:
    """Exact top-k inner products of a few queries, fed the collection chunk by chunk."""

    def __init__(self, queries: np.ndarray, k: int) -> None:
        self.queries = queries
        self.k = k
        self.scores = np.full((len(queries), 0), -np.inf, np.float32)
        self.ids = np.full((len(queries), 0), -1, np.int64)

    def add(self, vectors: np.ndarray, ids: np.ndarray) -> None:
        """Fold in a chunk of stored (vectors, ids)."""
        if len(ids) == 0:
            return
        self.add_results(self.queries @ vectors.T, np.broadcast_to(ids, (len(self.queries), len(ids))))

    def add_results(self, scores: np.ndarray, ids: np.ndarray) -> None:
        """Merge per-query (scores, ids) lists found elsewhere (-1 ids are ignored)."""
        scores = np.where(ids >= 0, scores, -np.inf).astype(np.float32)
        scores = np.hstack([self.scores, scores])
        all_ids = np.hstack([self.ids, ids])
        order = np.lexsort((all_ids, -scores), axis=-1)[:, : self.k]
        self.scores = np.take_along_axis(scores, order, axis=1)
        self.ids = np.take_along_axis(all_ids, order, axis=1)

    def result(self) -> tuple[np.ndarray, np.ndarray]:
        """(scores, ids), best first."""
        return self.scores, self.ids


def exact_truth(
    readers: list[ShardReader], masks: list[np.ndarray], queries: np.ndarray, k: int = RECALL_K + 1
) -> np.ndarray:
    """The exact top-k ids of each query over every live vector (one pass over the shards)."""
    truth = RunningTopK(queries, k)
    for reader, mask in zip(readers, masks, strict=True):
        for start in range(0, reader.count, 8192):
            stop = min(start + 8192, reader.count)
            vectors = faiss_ops.reconstruct_rows(reader.index(), np.arange(start, stop))
            keep = mask[start:stop]
            truth.add(vectors[keep], reader.ids[start:stop][keep])
        reader.close()
    return truth.result()[1]


def recall_at_k(found: np.ndarray, truth: np.ndarray, own: np.ndarray, k: int = RECALL_K) -> float:
    """Mean share of each query's exact top-k (its own source id left out) that `found` holds."""
    hits = 0.0
    for source, got, want in zip(own.tolist(), found, truth, strict=True):
        got = [i for i in got.tolist() if i != source and i >= 0][:k]
        want = [i for i in want.tolist() if i != source and i >= 0][:k]
        hits += len(set(got) & set(want)) / max(len(want), 1)
    return round(hits / max(len(truth), 1), 4)


def pick_setting(
    ladder: Sequence[Any], measure: Callable[[Any], float], target: float = TARGET_RECALL
) -> tuple[Any, float]:
    """The first setting of `ladder` whose measured recall reaches `target` (else the most accurate)."""
    best: tuple[Any, float] | None = None
    for setting in ladder:
        recall = measure(setting)
        if recall >= target:
            return setting, recall
        if best is None or recall > best[1]:
            best = (setting, recall)
    assert best is not None
    return best
