"""Scoring a few rows of flat indexes: under a selector, or gathered from several and scored at once."""

from __future__ import annotations

import numpy as np
import pytest

from vela_search.store import faiss_ops


def _flat(n: int, dim: int = 32, factory: str = "SQfp16") -> tuple[object, np.ndarray]:
    vectors = np.random.default_rng(0).standard_normal((n, dim)).astype(np.float32)
    vectors[7] = vectors[3]  # a tie at the top (the merge across shards orders ties by id)
    index = faiss_ops.build(factory, dim)
    index.add(vectors)
    stored = vectors.astype(np.float16).astype(np.float32) if factory == "SQfp16" else vectors
    return index, stored


@pytest.mark.parametrize("queries", [1, 9])
def test_search_rows_is_the_exact_top_k_among_the_rows(queries: int) -> None:
    index, stored = _flat(20_000)
    rng = np.random.default_rng(1)
    rows = np.unique(np.concatenate([[3, 7], rng.choice(20_000, 600, replace=False)]))
    q = stored[[3, 11, 12, 13, 14, 15, 16, 17, 18][:queries]].copy()
    scores, positions = faiss_ops.search_rows(index, q, 5, rows)
    exact = q @ stored[rows].T
    for i in range(queries):
        order = np.lexsort((rows, -exact[i]))[:5]
        np.testing.assert_allclose(scores[i], exact[i][order], rtol=1e-5, atol=1e-5)
        # The rows returned (any of tied ones), each with its own score.
        at = np.searchsorted(rows, positions[i])
        assert len(set(positions[i].tolist())) == 5 and np.array_equal(rows[at], positions[i])
        np.testing.assert_allclose(exact[i][at], scores[i], rtol=1e-5, atol=1e-5)
    assert set(positions[0][:2].tolist()) == {3, 7}  # the query is row 3 (and its copy, row 7)


def test_search_rows_asks_for_no_more_than_the_rows_hold() -> None:
    index, stored = _flat(3_000)
    scores, positions = faiss_ops.search_rows(index, stored[:1], 10, np.array([5, 9]))
    assert positions.shape == (1, 2) and sorted(positions[0].tolist()) == [5, 9]


@pytest.mark.parametrize("factory", ["SQfp16", "Flat"])
def test_gathered_rows_score_as_their_own_index_does(factory: str) -> None:
    first, stored = _flat(500, factory=factory)
    second, _ = _flat(400, factory=factory)
    a, b = faiss_ops.flat_rows(first), faiss_ops.flat_rows(second)
    assert a is not None and b is not None and a.kind == b.kind and a.codes.shape[0] == 500
    rows = np.array([3, 7, 250, 499])
    codes = np.vstack([a.codes[rows], b.codes[[0, 1]]])  # rows of two indexes in one array
    q = stored[[3, 20]]
    scores, positions = faiss_ops.score_codes(a.kind, codes, q)
    assert scores.shape == positions.shape == (2, 6)
    own_scores, own_positions = first.search(q, 500)  # the index's own scan, every row
    for i in range(2):
        own = dict(zip(own_positions[i].tolist(), own_scores[i].tolist()))
        for score, position in zip(scores[i], positions[i]):
            if position < 4:  # a row of `first`: the very score its own search gives
                assert score == own[int(rows[position])]
        assert np.all(np.diff(scores[i]) <= 0)  # best first
    assert set(positions[0][:2].tolist()) == {0, 1}  # the query's own row and its copy


def test_rows_that_need_training_state_are_not_scored_apart() -> None:
    trained = faiss_ops.build("SQ8", 32)
    trained.train(np.random.default_rng(0).standard_normal((200, 32)).astype(np.float32))
    assert faiss_ops.flat_rows(trained) is None
    l2 = faiss_ops.faiss().IndexFlatL2(32)  # another metric than the store's inner products
    assert faiss_ops.flat_rows(l2) is None
