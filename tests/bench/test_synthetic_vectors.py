"""The synthetic vectors of `bench search`: real cluster structure, low intrinsic dimension, deterministic."""

from __future__ import annotations

import numpy as np
import pytest

from vela_search.bench.synthetic_vectors import BLOCK_ROWS, ClusteredVectors, default_clusters

DIM = 256


def test_same_seed_same_vectors_other_seed_other_vectors():
    a = ClusteredVectors(DIM, 20, seed=3)
    assert np.array_equal(a.vectors(0, 500), ClusteredVectors(DIM, 20, seed=3).vectors(0, 500))
    assert np.array_equal(a.queries(7), ClusteredVectors(DIM, 20, seed=3).queries(7))
    assert not np.allclose(a.vectors(0, 500), ClusteredVectors(DIM, 20, seed=4).vectors(0, 500))


def test_chunks_and_slices_are_the_whole_however_cut():
    g = ClusteredVectors(DIM, 20, seed=1)
    n = 2 * BLOCK_ROWS + 300
    whole = g.vectors(0, n)
    assert whole.shape == (n, DIM) and whole.dtype == np.float32
    for chunk in (1, 333, BLOCK_ROWS, 5000):
        if chunk == 1:
            pieces = [g.vectors(i, i + 1) for i in range(BLOCK_ROWS - 3, BLOCK_ROWS + 3)]
            assert np.array_equal(np.concatenate(pieces), whole[BLOCK_ROWS - 3 : BLOCK_ROWS + 3])
            continue
        starts, parts = zip(*g.chunks(n, chunk), strict=True)
        assert list(starts) == list(range(0, n, chunk))
        assert np.array_equal(np.concatenate(parts), whole)
    assert np.array_equal(
        g.vectors(BLOCK_ROWS - 10, BLOCK_ROWS + 10), whole[BLOCK_ROWS - 10 : BLOCK_ROWS + 10]
    )
    assert np.array_equal(g.labels(0, n)[500:600], g.labels(500, 600))
    np.testing.assert_allclose(np.linalg.norm(whole, axis=1), 1.0, atol=1e-5)


def test_a_querys_nearest_neighbours_are_mostly_its_own_cluster():
    g = ClusteredVectors(DIM, 40, seed=0)
    stored, labels = g.vectors(0, 8000), g.labels(0, 8000)
    queries, query_labels = g.queries(100), g.query_labels(100)
    scores = queries @ stored.T
    top = np.argsort(-scores, axis=1)[:, :10]
    same = (labels[top] == query_labels[:, None]).mean()
    assert same >= 0.9  # uniform noise would give ~1/40
    # Neighbours are much closer than a random pair, so "the 10 nearest" are well defined.
    nearest = np.take_along_axis(scores, top, axis=1).mean()
    assert nearest > 0.5 and abs(scores.mean()) < 0.1
    # Queries are fresh draws, not copies of stored vectors.
    assert scores.max() < 0.999
    # Unequal cluster sizes, every cluster used.
    sizes = np.bincount(labels, minlength=40)
    assert sizes.min() > 0 and sizes.max() > 2 * sizes.min()


def test_low_intrinsic_dimension():
    g = ClusteredVectors(DIM, 30, seed=2, rank=32)
    x = g.vectors(0, 4000)
    spectrum = np.linalg.svd(x - x.mean(axis=0), compute_uv=False) ** 2
    # The 32-d subspace holds nearly all of the spread; the rest is the small isotropic noise.
    assert spectrum[:32].sum() / spectrum.sum() > 0.85


def test_cluster_count_grows_with_the_collection_within_bounds():
    assert default_clusters(1_000) == 16
    assert default_clusters(1_000_000) == 2_000
    assert default_clusters(10_000_000) == 4_096


@pytest.mark.parametrize("bad", [{"dim": 1, "clusters": 4}, {"dim": 8, "clusters": 0}])
def test_invalid_shapes_are_refused(bad):
    with pytest.raises(ValueError):
        ClusteredVectors(**bad)
