"""Searching a few rows of a flat index: scored one by one or scanned under a selector, the same answer."""

from __future__ import annotations

import numpy as np
import pytest

from vela_search.store import faiss_ops


def _flat(n: int, dim: int = 32) -> tuple[object, np.ndarray]:
    vectors = np.random.default_rng(0).standard_normal((n, dim)).astype(np.float32)
    vectors[7] = vectors[3]  # a tie at the top (the merge across shards orders ties by id)
    index = faiss_ops.build("SQfp16", dim)
    index.add(vectors)
    return index, vectors.astype(np.float16).astype(np.float32)


@pytest.mark.parametrize("queries", [1, 4, 9])  # up to 4 queries scored one by one when rows are few
@pytest.mark.parametrize("wanted", [8, 600])  # 8 rows of 20,000 are few; 600 are scanned
def test_search_rows_is_the_exact_top_k_among_the_rows(monkeypatch, queries: int, wanted: int) -> None:
    index, stored = _flat(20_000)
    rng = np.random.default_rng(1)
    rows = np.unique(np.concatenate([[3, 7], rng.choice(20_000, wanted, replace=False)]))
    q = stored[[3, 11, 12, 13, 14, 15, 16, 17, 18][:queries]].copy()
    scored = []
    real = faiss_ops._score_rows
    monkeypatch.setattr(faiss_ops, "_score_rows", lambda *a: scored.append(1) or real(*a))
    scores, positions = faiss_ops.search_rows(index, q, 5, rows)
    assert bool(scored) == (queries <= 4 and wanted == 8)
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
