"""`bench search --data`: every index kind of the policy beside the peers, on the hard set, at tiny scale."""

from __future__ import annotations

import numpy as np
import pytest

from vela_search.bench import search_compare
from vela_search.bench.search_compare import best_at, compare_search
from vela_search.bench.search_index import ReferenceTopK
from vela_search.bench.synthetic_vectors import ClusteredVectors, hard_vectors, vectors_for
from vela_search.store.index_choice import ChoiceLimits


def _top_share(vectors: np.ndarray, top: int) -> float:
    centred = vectors - vectors.mean(axis=0)
    spectrum = np.linalg.svd(centred, compute_uv=False) ** 2
    return float(spectrum[:top].sum() / spectrum.sum())


def test_the_hard_set_spreads_its_variance_over_every_dimension() -> None:
    dim = 256
    easy = ClusteredVectors(dim, 16, seed=1, rank=64).vectors(0, 1024)
    hard = hard_vectors(dim, 16, seed=1).vectors(0, 1024)
    assert np.allclose(np.linalg.norm(hard, axis=1), 1.0, atol=1e-5)
    # Today's kind of set lies in a subspace (here 64-d); the hard one spreads over every dimension.
    assert _top_share(hard, 64) < 0.8 < 0.95 < _top_share(easy, 64)
    # Same rows however they are chunked, and queries that are not stored vectors.
    generator = vectors_for("hard", dim, 5000, seed=1)
    assert np.array_equal(generator.vectors(900, 1000), hard[900:1000])
    assert not np.isclose(generator.queries(5) @ hard.T, 1.0).any()
    with pytest.raises(ValueError, match="hard, clustered|clustered, hard"):
        vectors_for("easy", dim, 10)


def test_every_kind_and_the_peers_are_measured_on_the_same_vectors(tmp_path) -> None:  # noqa: ANN001
    limits = ChoiceLimits(exact_max_elements=1_000 * 32, min_coded_rows=100, measure_queries=50)
    seen = []
    run = compare_search(
        2_000,
        dim=32,
        data="hard",
        queries=20,
        small_memory=40_000,  # below the 128 kB of fp16 vectors: compressed
        workdir=tmp_path,
        report=seen.append,
        choice_limits=limits,
    )
    assert (
        run.choices["default"]["choice"] == "graph" and run.choices["small budget"]["choice"] == "compressed"
    )
    systems = {row.system for row in run.rows}
    assert {"vela graph", "vela graph ids", "vela exact", "vela compressed", "faiss"} <= systems
    assert seen == run.rows  # each row reported as measured
    for row in run.rows:
        assert 0.0 <= row.recall_at_k <= 1.0 and row.cpu_ms_per_query > 0 and row.memory_bytes > 0
    exact = next(r for r in run.rows if r.system == "vela exact")
    assert exact.recall_at_k == 1.0  # the exact scan agrees with the reference
    tuned = [r for r in run.rows if r.tuned]
    assert {r.system for r in tuned} == {
        "vela graph",
        "vela graph ids",
        "vela compressed",
        "vela compressed ids",
    }
    compressed = next(r for r in tuned if r.system == "vela compressed")
    assert compressed.memory_bytes < 2_000 * 32 * 2  # smaller than the fp16 vectors
    # The highest efSearch reaches (near) exact recall for the graph and FAISS alike.
    assert max(r.recall_at_k for r in run.rows if r.system == "vela graph") >= 0.95
    assert best_at(run.rows, 0.0)["vela graph"].cpu_ms_per_query == min(
        r.cpu_ms_per_query for r in run.rows if r.system == "vela graph"
    )
    assert list(tmp_path.iterdir()) == []


def test_a_missing_peer_is_noted_not_fatal(tmp_path, monkeypatch) -> None:  # noqa: ANN001
    monkeypatch.setattr(search_compare, "PEERS", {"hnswlib": "no_such_module_for_vela"})
    assert search_compare.missing_peers() == ["hnswlib"]
    run = compare_search(500, dim=16, data="clustered", queries=5, workdir=tmp_path)
    assert any("hnswlib" in note and "[bench]" in note for note in run.notes)
    assert {row.system for row in run.rows} >= {"vela exact", "faiss"}


def test_pages_read_back_from_disk_are_counted_per_query(tmp_path) -> None:  # noqa: ANN001
    import mmap
    import os

    path = tmp_path / "mapped.bin"
    path.write_bytes(os.urandom(64 * 4096))
    with path.open("rb") as f:
        os.fsync(f.fileno())
        os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)  # out of the page cache
        pages = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    pages.madvise(mmap.MADV_RANDOM)  # one page per fault, no read-ahead
    queries = np.zeros((40, 4), np.float32)
    reference = ReferenceTopK(queries, 1)
    reference.add(np.ones((1, 4), np.float32), np.arange(1))
    touched = iter(range(64))

    def search(q: np.ndarray) -> list[int]:
        _ = pages[next(touched) * 4096]  # a page not read before: from the disk
        return [0]

    recall, cpu, wall, faults = search_compare._time_queries(search, queries, reference)
    assert recall == 1.0 and faults >= 0.5  # the 20 warm-up queries are not counted
