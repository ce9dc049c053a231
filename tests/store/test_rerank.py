"""The re-rank's parts: finding each id's shard and row, and scoring a few rows of many shards."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from vela_search.store import AudioIndex, faiss_ops
from vela_search.store import rerank as rerank_module
from vela_search.store.rerank import RowLocator, shard_scorer, sorted_unique

from .compressed_helpers import DIM, FP, add_commit, clustered


@pytest.mark.parametrize("gap", [1, 10])  # ids 0..n (a direct table) or spread tenfold (sorted ids searched)
def test_locator_finds_each_ids_shard_and_row(gap: int) -> None:
    empty = np.array([], np.int64)
    shards = [np.arange(0, 50) * gap, np.arange(50, 60) * gap, empty, np.arange(60, 90) * gap]
    readers = [SimpleNamespace(ids=ids.astype(np.int64), count=len(ids)) for ids in shards]
    locator = RowLocator(readers)  # type: ignore[arg-type]
    assert (locator._table is not None) == (gap == 1)
    asked = np.array([55 * gap, 0, 89 * gap, 3 * gap, 89 * gap + 1, -1, 10_000])
    shard_of, row_of, found = locator.locate(asked)
    assert found.tolist() == [True, True, True, True, gap > 1 and False, False, False]
    assert shard_of[:4].tolist() == [1, 0, 3, 0] and row_of[:4].tolist() == [5, 0, 29, 3]


def test_sorted_unique_is_numpys_unique() -> None:
    values = np.random.default_rng(0).integers(0, 50, 300)
    assert np.array_equal(sorted_unique(values), np.unique(values))
    assert sorted_unique(np.array([4])).tolist() == [4] and sorted_unique(np.array([], np.int64)).size == 0


# Rows copied out and scored at once (because sparse in their shards, or few bytes), or shard by shard.
@pytest.mark.parametrize("way", ["sparse", "few bytes", "by shard"])
def test_a_few_rows_of_many_shards_score_exactly_either_way(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, way: str
) -> None:
    # The test's shards are small, so their rows are dense: gathering is allowed for any share of their
    # rows, or by the rows' bytes (62 rows x 128 x 2 bytes), or not at all.
    gathered = way != "by shard"
    monkeypatch.setattr(rerank_module, "_SPARSE_ROWS", 1 if way == "sparse" else 1024)
    monkeypatch.setattr(rerank_module, "_GATHER_ALWAYS_BYTES", 62 * DIM * 2 if way == "few bytes" else 0)
    scored: list[int] = []
    real = faiss_ops.score_codes
    monkeypatch.setattr(faiss_ops, "score_codes", lambda *a: scored.append(1) or real(*a))
    root = tmp_path / "idx"
    AudioIndex.create(root, fingerprint=FP, dim=DIM).close()
    for c in range(3):
        vectors = clustered(300, seed=c)
        if c == 2:
            vectors[5] = clustered(300, seed=0)[0]  # the same vector in two shards: a tie, ordered by id
        add_commit(root, vectors, folder=f"f{c}")
    with AudioIndex.open(root) as index:
        readers = index.shard_readers()
        assert len(readers) >= 3
        first, twin = int(readers[0].ids[0]), int(readers[-1].ids[5])
        picked = np.random.default_rng(0).choice(index.num_vectors, 60)
        asked = np.unique(np.concatenate([[twin, first], picked]))
        q = index.vectors(np.array([twin]))
        scores, ids = shard_scorer(readers)(q, asked, 5)
        stored = index.vectors(asked)
        exact = stored @ q[0]
        order = np.lexsort((asked, -exact))[:5]
        assert ids[0].tolist() == asked[order].tolist() and ids[0][:2].tolist() == sorted([first, twin])
        np.testing.assert_allclose(scores[0], exact[order], rtol=1e-5, atol=1e-5)
    assert bool(scored) == gathered


def _codes_searcher(factory: str, n: int = 2_000) -> rerank_module.CodesSearcher:
    vectors = clustered(n, seed=5)
    index = faiss_ops.build(factory, DIM)
    index.train(vectors)
    index.add_with_ids(vectors, np.arange(n, dtype=np.int64))
    return rerank_module.CodesSearcher(index, nprobe=4, rerank_depth=100)


@pytest.mark.parametrize(("share", "depth"), [(1.0, 100), (0.5, 200), (0.2, 400), (0.01, 400)])
def test_a_filter_grows_the_default_rerank_depth_up_to_four_times(
    monkeypatch: pytest.MonkeyPatch, share: float, depth: int
) -> None:
    searcher = _codes_searcher("IVF16_HNSW32,RaBitQ")
    asked: list[int] = []
    original = rerank_module.search_candidates

    def spy(index, queries, d, **options):  # noqa: ANN001, ANN003, ANN202
        asked.append(d)
        return original(index, queries, d, **options)

    monkeypatch.setattr(rerank_module, "search_candidates", spy)
    allowed = np.arange(2_000) < int(2_000 * share)
    vectors = clustered(2_000, seed=5)

    def score_among(queries: np.ndarray, ids: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        scores = queries @ vectors[ids].T
        order = np.argsort(-scores, axis=1)[:, :k]
        return np.take_along_axis(scores, order, axis=1), ids[order]

    found = searcher.search(clustered(1, seed=6), 10, allowed, score_among)[1]
    assert allowed[found[0]].all() and len(found[0]) == 10
    assert asked[0] == depth
    asked.clear()
    searcher.search(clustered(1, seed=6), 10, allowed, score_among, refine=150)
    assert asked[0] == 150  # an explicit depth is kept


def test_rabitq_codes_are_searched_with_8_bit_queries_and_a_narrow_coarse_walk() -> None:
    f = faiss_ops.faiss()

    def made(searcher: rerank_module.CodesSearcher, nprobe: int) -> tuple[object, object, int]:
        keep: list[object] = []  # what the parameters point to, as the searcher keeps it
        params = rerank_module.search_params(searcher.index, nprobe, None, keep)
        (walk,) = [o for o in keep if isinstance(o, f.SearchParametersHNSW)]
        (ivf,) = [o for o in keep if isinstance(o, f.SearchParametersIVF)]
        return params, ivf, walk.efSearch

    params, ivf, ef = made(_codes_searcher("IVF16_HNSW32,RaBitQ"), 4)
    assert params is ivf and isinstance(ivf, f.IVFRaBitQSearchParameters) and ivf.qb == 8 and ef == 16
    params, ivf, ef = made(_codes_searcher("PCAR64,IVF16_HNSW32,PQ32x4fs"), 32)
    assert isinstance(params, f.SearchParametersPreTransform) and type(ivf) is f.SearchParametersIVF
    assert ivf.nprobe == 32 and ef == 64
