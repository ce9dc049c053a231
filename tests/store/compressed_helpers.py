"""Helpers of the compressed- and graph-search tests: clustered vectors and a small automatic index that
is "large" (compressed codes with `LIMITS` or `RABITQ_LIMITS`, an HNSW graph with `GRAPH_LIMITS`)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from vela_search.store import AudioIndex
from vela_search.store.index_choice import ChoiceLimits
from vela_search.store.writer import IndexWriter

DIM = 128
FP = {"model": "tiny", "revision": "r1", "prompt_version": "1", "dim": DIM}
# Exact search up to 1,500 vectors: a few thousand are "large", and compressed (PCA to 64 dims, PQ16).
LIMITS = ChoiceLimits(
    exact_max_elements=1_500 * DIM, max_code_bytes=16, measure_queries=50, min_coded_rows=100, graph=False
)
# The same sizes with RaBitQ codes (one bit per dimension) instead of PCA and PQ.
RABITQ_LIMITS = dataclasses.replace(LIMITS, rabitq_min_dim=DIM)
# The same sizes with the graph kind allowed: past 1,500 vectors the default budget holds a graph.
GRAPH_LIMITS = dataclasses.replace(LIMITS, graph=True)
# The store tests of the kinds past exact search run for each (see the `kind` fixture); CHOICE is what
# `index_info()["choice"]` says of each.
KIND_LIMITS = {"compressed": LIMITS, "rabitq": RABITQ_LIMITS, "graph": GRAPH_LIMITS}
CHOICE = {"compressed": "compressed", "rabitq": "compressed", "graph": "graph"}
_CENTRES = np.random.default_rng(1234).standard_normal((120, DIM)).astype(np.float32)


def clustered(n: int, seed: int, clusters: slice = slice(None)) -> np.ndarray:
    """`n` unit vectors around random centres (a mixture of clusters, where ANN recall means something)."""
    rng = np.random.default_rng(seed)
    centres = _CENTRES[clusters]
    v = centres[rng.integers(0, len(centres), n)] + 0.4 * rng.standard_normal((n, DIM)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def rows(start: int, n: int, folder: str) -> list[dict]:
    """Metadata: files of `folder`, with a numeric `duration_s` to filter on."""
    return [
        {"path": f"/audio/{folder}/{(start + i) % 11}.wav", "start_s": float(i), "duration_s": float(i % 10)}
        for i in range(n)
    ]


def add_commit(
    root: Path, vectors: np.ndarray, folder: str, limits: ChoiceLimits = LIMITS, **options
) -> np.ndarray:
    """One writer session adding `vectors` and committing; returns their ids."""
    with IndexWriter(root, fingerprint=FP, choice_limits=limits, max_shard_size=700, **options) as w:
        ids = w.add(vectors, rows(w.manifest["next_id"], len(vectors), folder))
        w.commit()
    return ids


def build_compressed(
    root: Path, commits: int = 3, per: int = 1_000, limits: ChoiceLimits = LIMITS
) -> tuple[np.ndarray, np.ndarray]:
    """An automatic index grown over `commits` commits until it is compressed (or, with `GRAPH_LIMITS`,
    searched through a graph); returns (ids, vectors)."""
    AudioIndex.create(root, fingerprint=FP, dim=DIM).close()
    ids, vectors = [], []
    for c in range(commits):
        v = clustered(per, seed=c)
        ids.append(add_commit(root, v, folder=f"f{c}", limits=limits))
        vectors.append(v)
    return np.concatenate(ids), np.concatenate(vectors)
