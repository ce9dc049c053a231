"""Filters are exact on every index kind: a filtered search on compressed codes and on a graph (automatic
policy) and on forced IVF shards gives what an exact scan gives for the same filter, at 0.1%, 1%, 10%
and 100%."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from vela_search.store import AudioIndex
from vela_search.store.writer import IndexWriter

from .compressed_helpers import DIM, FP, KIND_LIMITS, LIMITS, clustered

N = 3_000
# A numeric column whose ranges select a known share of the rows: [0, share * 1000) of `sel`.
SHARES = {"0.1%": 1, "1%": 10, "10%": 100, "100%": 1000}


def _build(root: Path, factory: str) -> np.ndarray:
    """The index of N vectors (ids 0..N-1, `sel` = id % 1000); returns the vectors as stored (fp16).
    Factory "auto" is the compressed kind (PQ codes), "auto rabitq" with RaBitQ codes, "auto graph" the
    graph kind."""
    limits = KIND_LIMITS[factory.split()[1]] if " " in factory else LIMITS
    AudioIndex.create(root, fingerprint=FP, dim=DIM, factory=factory.split()[0]).close()
    for c in range(3):
        with IndexWriter(root, fingerprint=FP, choice_limits=limits, max_shard_size=700) as w:
            start = w.manifest["next_id"]
            rows = [{"path": f"/a/{c}/{i % 13}.wav", "sel": (start + i) % 1000} for i in range(N // 3)]
            w.add(clustered(N // 3, seed=c), rows)
            w.commit()
    vectors = np.concatenate([clustered(N // 3, seed=c) for c in range(3)])
    return vectors.astype(np.float16).astype(np.float32)


def _exact(vectors: np.ndarray, queries: np.ndarray, k: int, below: int) -> list[list[int]]:
    """Brute-force top-k ids among the rows with `sel` < below (best first, ties by id)."""
    ids = np.flatnonzero(np.arange(len(vectors)) % 1000 < below)
    scores = queries @ vectors[ids].T
    return [ids[np.lexsort((ids, -row))[:k]].tolist() for row in scores]


@pytest.fixture(scope="module", params=["auto", "auto rabitq", "auto graph", "IVF32,SQfp16"])
def filtered_index(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> tuple[AudioIndex, np.ndarray]:
    root = tmp_path_factory.mktemp("filtered") / "idx"
    vectors = _build(root, request.param)
    index = AudioIndex.open(root)
    yield index, vectors
    index.close()


@pytest.mark.parametrize("share", list(SHARES))
def test_filtered_search_matches_exact_search(
    filtered_index: tuple[AudioIndex, np.ndarray], share: str
) -> None:
    index, vectors = filtered_index
    if index.manifest["factory"] != "IVF32,SQfp16":
        assert index.index_info()["choice"] in ("compressed", "graph")
    queries = clustered(20, seed=99)
    ranges = {"sel": (0, SHARES[share] - 1)}
    k = 50
    found = index.search(queries, k, ranges=ranges)
    truth = _exact(vectors, queries, k, SHARES[share])
    matching = N * SHARES[share] // 1000
    # The search depth: the codes' re-rank depth or the graph's candidates (10 x k; fewer matching rows
    # are scanned exactly), or k for forced IVF shards (no re-ranking).
    depth = k if index.manifest["factory"] == "IVF32,SQfp16" else 10 * k
    for got, want in zip(found, truth, strict=True):
        assert len(want) == min(k, matching)
        assert all(h.row["sel"] < SHARES[share] for h in got)
        assert len(got) == len(want)  # never fewer hits than match
        if matching <= depth:  # no more rows match than the search depth: the exact answer
            assert [h.id for h in got] == want
    # Otherwise the top 10 up to the recall the index states (0.9 and more on these vectors).
    top10 = [len({h.id for h in a[:10]} & set(b[:10])) / len(b[:10]) for a, b in zip(found, truth)]
    assert float(np.mean(top10)) >= 0.9


def test_per_query_knobs_are_bounded_and_change_the_search(
    filtered_index: tuple[AudioIndex, np.ndarray],
) -> None:
    index, vectors = filtered_index
    queries = clustered(5, seed=7)
    if index.index_info()["choice"] in ("compressed", "graph"):
        # Clipped to every list / every row; a graph walks a candidate list as long as the collection.
        wide = index.search(queries, 10, nprobe=10_000, refine=3_000)
        assert [[h.id for h in r] for r in wide] == _exact(vectors, queries, 10, 1000)
    narrow = index.search(queries, 10, nprobe=1, refine=10)
    assert all(len(r) == 10 for r in narrow)
    with pytest.raises(ValueError, match="nprobe"):
        index.search(queries, 10, nprobe=0)
    with pytest.raises(ValueError, match="refine"):
        index.search(queries, 10, refine=0)
