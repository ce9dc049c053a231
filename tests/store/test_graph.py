"""The graph kind through the real writer: folding new rows into the main graph, per-shard graphs of the
rows committed since, crash safety of both automatic kinds, and tuned settings that keep the recall they
claim on queries they were not tuned on."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from vela_search.store import AudioIndex, graph, layout, manifest, tuning
from vela_search.store.writer import IndexWriter

from .compressed_helpers import FP, GRAPH_LIMITS, KIND_LIMITS, add_commit, build_compressed, clustered


def _manifest(root: Path) -> dict:
    return json.loads((root / layout.MANIFEST).read_text())


def _recall(found: list, truth: list) -> float:
    return float(np.mean([len({h.id for h in a} & {h.id for h in b}) / len(b) for a, b in zip(found, truth)]))


def test_new_rows_get_a_graph_of_their_own_then_fold_into_the_main_graph(tmp_path: Path) -> None:
    root = tmp_path / "idx"
    ids, vectors = build_compressed(root, commits=2, limits=GRAPH_LIMITS)
    first = _manifest(root)["codes"]
    assert first["kind"] == "graph" and first["covers_below"] == 2_000 and first["rows"] == 2_000
    assert first["recall_at_10"] >= tuning.TARGET_RECALL and first["ef_search"] in tuning.EF_LADDER
    old = AudioIndex.open(root)
    q = clustered(10, seed=40)
    before = [[h.id for h in row] for row in old.search(q, 10)]
    # 150 rows: under a tenth of the graph, so a graph of their own (no fold).
    late = clustered(150, seed=41)
    late_ids = add_commit(root, late, "late", GRAPH_LIMITS)
    data = _manifest(root)
    assert data["codes"]["trained"] == first["trained"]
    tails = [s for s in data["shards"] if s.get("codes")]
    assert sum(s["codes_rows"] for s in tails) == 150 and all(s["codes"] in data["checksums"] for s in tails)
    with AudioIndex.open(root) as index:
        found = index.search(late[:5], 1)
        assert [row[0].id for row in found] == late_ids[:5].tolist()  # found through the new graphs
        assert _recall(index.search(q, 10), index.search(q, 10, exact=True)) >= 0.9
    # 100 more: past a tenth of the graph, everything is folded into a new main graph.
    add_commit(root, clustered(100, seed=42), "later", GRAPH_LIMITS)
    data = _manifest(root)
    assert data["codes"]["trained"] != first["trained"] and data["codes"]["rows"] == 2_250
    assert data["codes"]["covers_below"] == 2_250 and not any(s.get("codes") for s in data["shards"])
    assert data["codes"]["measured_size"] == 2_250  # re-measured at the new size
    # The snapshot opened before answers as it did, from its own graph.
    assert [[h.id for h in row] for row in old.search(q, 10)] == before
    old.close()
    with AudioIndex.open(root) as index:
        info = index.index_info()
        assert info["choice"] == "graph" and info["ef_search"] == data["codes"]["ef_search"]
        assert _recall(index.search(q, 10), index.search(q, 10, exact=True)) >= 0.9


@pytest.mark.parametrize("maintenance", ["inline", "background"])
def test_the_end_of_a_run_folds_new_rows_past_a_hundredth(tmp_path: Path, maintenance: str) -> None:
    root = tmp_path / "idx"
    build_compressed(root, commits=2, limits=GRAPH_LIMITS)
    main = _manifest(root)["codes"]["trained"]
    late = clustered(150, seed=41)
    options = {"maintenance": maintenance}
    late_ids = add_commit(root, late, "late", GRAPH_LIMITS, **options)  # 7.5%: a graph of their own
    assert _manifest(root)["codes"]["trained"] == main
    assert any(s.get("codes") for s in _manifest(root)["shards"])
    with IndexWriter(root, fingerprint=FP, choice_limits=GRAPH_LIMITS, **options) as writer:
        writer.finish_maintenance()  # what an index run does last
    data = _manifest(root)
    assert data["codes"]["trained"] != main and data["codes"]["covers_below"] == 2_150
    assert not any(s.get("codes") for s in data["shards"])  # no small graph left beside the main one
    generation = data["generation"]
    with IndexWriter(root, fingerprint=FP, choice_limits=GRAPH_LIMITS, **options) as writer:
        writer.finish_maintenance()  # nothing new since: no fold, no generation
    assert _manifest(root)["generation"] == generation
    with AudioIndex.open(root) as index:
        assert [row[0].id for row in index.search(late[:5], 1)] == late_ids[:5].tolist()


def test_a_graph_with_half_its_rows_dead_is_rebuilt(tmp_path: Path) -> None:
    root = tmp_path / "idx"
    build_compressed(root, commits=4, limits=GRAPH_LIMITS)
    first = _manifest(root)["codes"]
    with IndexWriter(root, fingerprint=FP, choice_limits=GRAPH_LIMITS) as w:
        w.delete(np.arange(0, 800))
        w.commit()
    assert _manifest(root)["codes"]["trained"] == first["trained"]  # a fifth dead: masked, kept
    with IndexWriter(root, fingerprint=FP, choice_limits=GRAPH_LIMITS) as w:
        w.delete(np.arange(800, 2_100))
        w.compact(target_shard_size=10_000)
    data = _manifest(root)
    assert data["codes"]["trained"] != first["trained"] and data["codes"]["rows"] == 1_900
    q = clustered(5, seed=3)
    with AudioIndex.open(root) as index:
        found = index.search(q, 10)
        assert all(h.id >= 2_100 for row in found for h in row)
        assert _recall(found, index.search(q, 10, exact=True)) >= 0.9


def test_a_commit_that_dies_before_its_manifest_leaves_the_old_generation(
    tmp_path: Path, kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "idx"
    limits = KIND_LIMITS[kind]
    build_compressed(root, commits=2, limits=limits)
    before = _manifest(root)
    q = clustered(5, seed=9)
    with AudioIndex.open(root) as index:
        expected = [[h.id for h in row] for row in index.search(q, 10)]

    def die(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    # 1,500 rows: the graph folds them in (a new main graph file), the codes encode them.
    monkeypatch.setattr(manifest, "write", die)
    with pytest.raises(KeyboardInterrupt):
        add_commit(root, clustered(1_500, seed=5), "dying", limits)
    monkeypatch.undo()
    leftovers = (
        set(layout.owned_files(root)) - manifest.references(before) - set(before.get("retained") or [])
    )
    assert leftovers  # files written aside that no manifest names
    with AudioIndex.open(root) as index:
        assert index.generation == before["generation"]
        assert [[h.id for h in row] for row in index.search(q, 10)] == expected
    add_commit(root, clustered(10, seed=6), "next", limits)
    data = _manifest(root)
    present = set(layout.owned_files(root))
    assert not leftovers & present  # collected by the next commit
    assert present <= manifest.references(data) | set(data.get("retained") or [])


def test_tuned_settings_meet_the_recall_they_claim_on_other_held_out_queries(
    tmp_path: Path, kind: str
) -> None:
    root = tmp_path / "idx"
    ids, vectors = build_compressed(root, commits=3, limits=KIND_LIMITS[kind])
    claimed = _manifest(root)["codes"]["recall_at_10"]
    assert claimed >= tuning.TARGET_RECALL
    # Queries the tuning never saw: fresh draws from the collection's mixture, as users' queries are.
    queries = clustered(200, seed=2024)
    with AudioIndex.open(root) as index:
        found = np.array([[h.id for h in row] + [-1] * (10 - len(row)) for row in index.search(queries, 10)])
        truth = np.array([[h.id for h in row] for row in index.search(queries, 10, exact=True)])
    measured = tuning.recall_at_k(found, truth, np.full(len(queries), -1))
    assert measured >= claimed - 0.03 and measured >= 0.93  # within the estimate's sampling error


def test_a_graph_holds_out_real_rows_while_it_is_measured_then_takes_them_in(tmp_path: Path) -> None:
    root = tmp_path / "idx"
    ids, _ = build_compressed(root, commits=2, limits=GRAPH_LIMITS)
    codes = _manifest(root)["codes"]
    # The limits' 50 measuring queries are rows held out of the graph, then inserted: it holds every row.
    assert codes["recall_queries"] == GRAPH_LIMITS.measure_queries == 50 and codes["rows"] == len(ids)
    with AudioIndex.open(root) as index:
        held = np.sort(graph.graph_ids(index._graph.graphs[0]))
    assert np.array_equal(held, np.sort(ids))


def test_held_out_rows_are_a_uniform_sample_of_the_eligible_live_rows() -> None:
    class Rows:
        def __init__(self, ids: np.ndarray) -> None:
            self.ids, self.count = ids, len(ids)

    readers = [Rows(np.arange(0, 600)), Rows(np.arange(600, 1_000))]
    masks = [np.arange(600) % 3 != 0, np.ones(400, bool)]  # a third of the first shard is deleted
    held = tuning.held_out_rows(readers, masks, seed=1, count=50, since=300)  # type: ignore[arg-type]
    picked = np.concatenate([r.ids[h] for r, h in zip(readers, held)])
    assert len(picked) == 50 and len(set(picked.tolist())) == 50
    assert (picked >= 300).all() and not any(p < 600 and p % 3 == 0 for p in picked.tolist())
    # Never more than a tenth of the eligible rows.
    few = tuning.held_out_rows(readers, masks, seed=1, count=500, since=900)  # type: ignore[arg-type]
    assert sum(int(h.sum()) for h in few) == 10


def test_graph_memory_estimate_matches_the_file() -> None:
    from vela_search.store.index_choice import graph_memory

    index = graph.new_graph(64)
    index.add_with_ids(clustered(2_000, seed=1)[:, :64].copy(), np.arange(2_000))
    from vela_search.store import faiss_ops

    size = int(faiss_ops.faiss().serialize_index(index).size)
    assert 0.8 * size <= graph_memory(2_000, 64) <= 1.25 * size
