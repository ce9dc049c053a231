"""Synthetic embedding-like vectors with cluster structure, for index benchmarks.

Uniform random unit vectors are a useless test of approximate search: in high dimension every pair is
nearly orthogonal, all distances are alike, and "the 10 nearest neighbours" are an arbitrary pick that no
index can find better than chance. Real embeddings are different: they sit near a low-dimensional subspace
(a decaying variance spectrum) and group into topics, and a query's neighbours are the close members of
its topic. The generator reproduces those properties:

* a global subspace of ``rank`` orthonormal directions in ``dim`` dimensions, with variances decaying as a
  power law (the leading directions carry most of the spread, as in real embedding spectra);
* ``clusters`` cluster centres drawn in that subspace, with unequal (log-normal) cluster sizes;
* within each cluster, variation along the cluster's own ``cluster_rank`` random directions of the global
  subspace (``spread`` sets its size relative to the centre);
* small isotropic noise in all ``dim`` dimensions (``noise``), then unit normalisation (cosine = inner
  product, as the store assumes).

`hard_vectors` gives the harder set (``bench search --data hard``): the spectrum spans all ``dim``
dimensions with variance proportional to i^-0.5 (direction i), the basis is a random rotation of the
whole space, and the within-cluster variation follows the same spectrum in every direction, as LLM
hidden states do; no low-dimensional projection keeps most of the variance, so PCA and PQ lose more.

Queries are fresh draws from the same mixture (not copies of stored vectors), so a query's nearest
neighbours are mostly members of its own cluster, ranked by their within-cluster position: the regime
where approximate search must be both fast (skip other clusters) and fine-grained (order a cluster's
members) for recall@10 to be high.

Everything is deterministic for a seed and generated in fixed blocks, each from its own seeded stream, so
any slice ``[start, stop)`` is the same vectors however it is chunked, and a million 4,096-d vectors are
produced block by block without ever holding them all.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property

import numpy as np

__all__ = ["DATA_SETS", "ClusteredVectors", "default_clusters", "hard_vectors", "vectors_for"]

DATA_SETS = ("clustered", "hard")

# Rows per generated block: every block is drawn from its own stream, so slices do not depend on chunking.
BLOCK_ROWS = 1024
# Stream tags, so stored vectors, queries and the model parameters never share random numbers.
_MODEL, _STORED, _QUERIES = 0, 1, 2


def default_clusters(n_vectors: int) -> int:
    """A cluster count that grows with the collection: ~500 vectors per cluster, between 16 and 4,096."""
    return int(min(4096, max(16, n_vectors // 500)))


def hard_vectors(dim: int, clusters: int, seed: int = 0) -> ClusteredVectors:
    """The hard set: variance proportional to i^-0.5 over all `dim` directions of a random rotation,
    clustered, with full-rank within-cluster variation of the same spectrum."""
    return ClusteredVectors(dim, clusters, seed=seed, rank=dim, cluster_rank=0, spread=1.0, decay=0.25)


def vectors_for(data: str, dim: int, n_vectors: int, seed: int = 0) -> ClusteredVectors:
    """The generator of a named data set (`DATA_SETS`) for a collection of `n_vectors`."""
    if data == "hard":
        return hard_vectors(dim, default_clusters(n_vectors), seed)
    if data == "clustered":
        return ClusteredVectors(dim, default_clusters(n_vectors), seed=seed)
    raise ValueError(f"unknown data set {data!r}: choose one of {', '.join(DATA_SETS)}")


@dataclass(frozen=True)
class ClusteredVectors:
    """A seeded mixture of low-rank clusters in ``dim`` dimensions (see the module docstring).

    Attributes:
        dim: vector dimension.
        clusters: number of clusters (topics).
        seed: the seed of everything.
        rank: dimension of the global subspace that holds centres and within-cluster variation.
        cluster_rank: number of directions each cluster varies along (0: every direction of the global
            subspace, with its spectrum).
        spread: within-cluster variation relative to the centre (both have unit expected norm before it).
        noise: isotropic noise relative to the centre.
        decay: power-law exponent of the global subspace's standard deviations (direction i: (1 + i)^-decay).
    """

    dim: int
    clusters: int
    seed: int = 0
    rank: int = 256
    cluster_rank: int = 16
    spread: float = 0.7
    noise: float = 0.3
    decay: float = 0.5

    def __post_init__(self) -> None:
        if self.dim < 2 or self.clusters < 1:
            raise ValueError(f"need dim >= 2 and clusters >= 1, not dim={self.dim}, clusters={self.clusters}")

    # ----- the model, drawn once from the seed -----

    @cached_property
    def _model(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(basis (rank, dim), centre coordinates (clusters, rank), loadings (clusters, cluster_rank, rank),
        cumulative cluster probabilities)."""
        rng = np.random.default_rng([self.seed, _MODEL])
        rank = min(self.rank, self.dim)
        basis = np.linalg.qr(rng.standard_normal((self.dim, rank), dtype=np.float32))[0].T
        scale = (1.0 + np.arange(rank, dtype=np.float32)) ** -self.decay
        scale /= np.linalg.norm(scale)  # a centre's expected squared norm is 1
        centres = rng.standard_normal((self.clusters, rank), dtype=np.float32) * scale
        if self.cluster_rank:
            loadings = rng.standard_normal((self.clusters, self.cluster_rank, rank), dtype=np.float32)
            loadings *= scale * (self.spread / np.sqrt(self.cluster_rank))
        else:  # full-rank variation: per direction, the global spectrum
            loadings = (scale * self.spread)[None, None, :].astype(np.float32)
        weights = rng.lognormal(0.0, 0.5, size=self.clusters)
        cumulative = np.cumsum(weights / weights.sum())
        cumulative[-1] = 1.0
        return np.ascontiguousarray(basis), centres, loadings, cumulative

    def _block(self, stream: int, block: int) -> tuple[np.ndarray, np.ndarray]:
        """Block ``block`` of a stream: (unit vectors (BLOCK_ROWS, dim) float32, cluster labels)."""
        basis, centres, loadings, cumulative = self._model
        rng = np.random.default_rng([self.seed, stream, block])
        labels = np.searchsorted(cumulative, rng.random(BLOCK_ROWS), side="right")
        labels = np.minimum(labels, self.clusters - 1)
        if self.cluster_rank:
            z = rng.standard_normal((BLOCK_ROWS, self.cluster_rank), dtype=np.float32)
            coords = centres[labels] + np.einsum("br,brk->bk", z, loadings[labels])
        else:
            z = rng.standard_normal((BLOCK_ROWS, basis.shape[0]), dtype=np.float32)
            coords = centres[labels] + z * loadings[0, 0]
        vectors = coords @ basis
        vectors += rng.standard_normal(vectors.shape, dtype=np.float32) * np.float32(
            self.noise / np.sqrt(self.dim)
        )
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        return vectors, labels

    def _rows(self, stream: int, start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
        if not 0 <= start <= stop:
            raise ValueError(f"invalid row range [{start}, {stop})")
        vectors = np.empty((stop - start, self.dim), dtype=np.float32)
        labels = np.empty(stop - start, dtype=np.int64)
        row = start
        while row < stop:
            block, offset = divmod(row, BLOCK_ROWS)
            take = min(BLOCK_ROWS - offset, stop - row)
            v, lab = self._block(stream, block)
            vectors[row - start : row - start + take] = v[offset : offset + take]
            labels[row - start : row - start + take] = lab[offset : offset + take]
            row += take
        return vectors, labels

    # ----- public API -----

    def vectors(self, start: int, stop: int) -> np.ndarray:
        """Stored vectors ``[start, stop)`` as unit float32 rows (the same whatever the chunking)."""
        return self._rows(_STORED, start, stop)[0]

    def labels(self, start: int, stop: int) -> np.ndarray:
        """The cluster of each stored vector ``[start, stop)``."""
        return self._rows(_STORED, start, stop)[1]

    def chunks(self, n_vectors: int, chunk: int) -> Iterator[tuple[int, np.ndarray]]:
        """``(start, vectors)`` for consecutive chunks of the first ``n_vectors`` stored vectors."""
        for start in range(0, n_vectors, chunk):
            yield start, self.vectors(start, min(n_vectors, start + chunk))

    def queries(self, n_queries: int) -> np.ndarray:
        """``n_queries`` fresh draws from the same mixture (an independent stream: never stored vectors)."""
        return self._rows(_QUERIES, 0, n_queries)[0]

    def query_labels(self, n_queries: int) -> np.ndarray:
        """The cluster each query was drawn from."""
        return self._rows(_QUERIES, 0, n_queries)[1]
