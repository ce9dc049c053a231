"""`bench search` at tiny scale: built through the writer, compressed beside exact, honest numbers."""

from __future__ import annotations

import numpy as np
import pytest

from vela_search.bench.search_index import ReferenceTopK, commit_every_for, measure_index_search
from vela_search.bench.synthetic_vectors import ClusteredVectors
from vela_search.errors import VelaError

DIM = 64


def test_a_small_budget_builds_compressed_codes_and_exact_search_stays_exact(tmp_path):
    calls = []
    run = measure_index_search(
        5000,  # one shard of 5,000: over the 4,096 rows a shard needs to get codes
        dim=DIM,
        queries=30,
        exact_queries=10,
        max_index_memory=200 << 10,  # below the 625 KiB of fp16 vectors: the choice must compress
        workdir=tmp_path,
        progress=lambda *a: calls.append(a),
    )
    assert run.choice["choice"] == "compressed" and run.default.mode == "compressed"
    assert run.factory == run.choice["factory"] and "IVF" in run.factory and "PQ" in run.factory
    assert run.default.queries == 30 and run.exact is not None and run.exact.queries == 10
    assert run.exact.recall_at_k == 1.0  # the exact scan agrees with the brute-force reference
    assert 0.8 <= run.default.recall_at_k <= 1.0
    for side in (run.default, run.exact):
        assert 0 < side.latency_ms_p50 <= side.latency_ms_p99
    assert run.fp16_bytes == 5000 * DIM * 2
    assert 0 < run.index_memory_bytes < run.fp16_bytes
    assert run.memory_fraction == pytest.approx(run.index_memory_bytes / run.fp16_bytes, abs=1e-5)
    assert run.build_s > 0 and run.commits == 1 and run.shards >= 1 and run.peak_rss_bytes > 0
    assert calls[-3:] == [("build", 5000, 5000), ("search", 1, 2), ("search", 2, 2)]
    assert list(tmp_path.iterdir()) == []  # the index is removed
    # The filtered cases: 5 and 50 matching rows are answered exactly, wider filters at the codes' recall.
    modes = [side.mode for side in run.filtered]
    assert modes == [f"compressed filter {s}" for s in ("0.1%", "1%", "10%", "100%")]
    assert [side.recall_at_k for side in run.filtered[:2]] == [1.0, 1.0]
    assert all(0.8 <= side.recall_at_k <= 1.0 and side.queries == 30 for side in run.filtered)


def test_a_collection_that_fits_stays_exact_and_says_so(tmp_path):
    run = measure_index_search(500, dim=DIM, queries=5, workdir=tmp_path, keep=True)
    assert run.choice["choice"] == "exact" and run.default.mode == "exact"
    assert run.default.recall_at_k == 1.0 and run.exact is not None and run.exact.recall_at_k == 1.0
    assert run.index_memory_bytes > run.fp16_bytes * 0.9  # the fp16 shards themselves
    assert any("kept exact search" in note for note in run.notes)
    assert any("index kept at" in note for note in run.notes) and (tmp_path.iterdir())


def test_trained_codes_without_a_coded_shard_are_reported_as_exact_search(tmp_path):
    # 3,000 vectors in one shard: the budget asks for codes, but a shard needs 4,096 rows to get them.
    run = measure_index_search(3000, dim=DIM, queries=5, max_index_memory=100 << 10, workdir=tmp_path)
    assert run.choice["choice"] == "compressed" and run.default.mode == "exact" and run.factory == "SQfp16"
    assert run.default.recall_at_k == 1.0
    assert run.fp16_bytes <= run.index_memory_bytes < 1.01 * run.fp16_bytes  # the fp16 shard files
    assert any("too small for codes" in note for note in run.notes)


def test_a_forced_lossy_factory_has_no_exact_side(tmp_path):
    run = measure_index_search(1200, dim=DIM, queries=10, factory="IVF8,PQ8", workdir=tmp_path)
    assert run.default.mode == "fixed" and run.exact is None and run.factory == "IVF8,PQ8"
    assert 0 < run.default.recall_at_k < 1.0  # PQ codes without re-ranking lose neighbours
    assert any("no exact search" in note for note in run.notes)


def test_the_reference_is_the_brute_force_top_k_with_ties():
    g = ClusteredVectors(DIM, 5, seed=9)
    stored, queries = g.vectors(0, 700), g.queries(4)
    ref = ReferenceTopK(queries, 10)
    for start in range(0, 700, 128):  # fed in chunks, as the build does
        ref.add(stored[start : start + 128], np.arange(start, min(start + 128, 700)))
    rounded = stored.astype(np.float16).astype(np.float32)
    truth = np.argsort(-(queries @ rounded.T), axis=1)[:, :10]
    for i in range(4):
        assert ref.recall(i, truth[i].tolist()) == 1.0
        assert ref.recall(i, truth[i][:5].tolist()) == 0.5
        assert ref.recall(i, list(range(1000, 1010))) == 0.0


def test_commits_bound_the_writer_buffer():
    assert (
        commit_every_for(4096) == 16_384
        and commit_every_for(256) == 262_144
        and commit_every_for(10**7) == 1000
    )


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n_vectors": 0}, "vectors"),
        ({"n_vectors": 5, "k": 10}, "k (10)"),
        ({"n_vectors": 5, "queries": 0}, "queries"),
    ],
)
def test_bad_sizes_are_refused_in_one_line(kwargs, message, tmp_path):
    with pytest.raises(VelaError, match=message.replace("(", r"\(").replace(")", r"\)")):
        measure_index_search(dim=DIM, workdir=tmp_path, **kwargs)
