"""Automatic indexes through the real writer: switching to compressed codes, re-ranking, re-training,
training-sample spread, filters, check/repair and old indexes."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from vela_search.store import AudioIndex, faiss_ops, layout
from vela_search.store import codes as codes_module
from vela_search.store.integrity import IndexDamagedError
from vela_search.store.manifest import seal
from vela_search.store.repair import check_index, repair_index
from vela_search.store.rerank import merge_top_k, rerank, search_candidates, shard_scorer
from vela_search.store.writer import IndexWriter

from .compressed_helpers import CHOICE, DIM, FP, KIND_LIMITS, LIMITS, add_commit, build_compressed, clustered


def _recall(found: list, truth: list) -> float:
    return float(
        np.mean([len({h.id for h in a} & {h.id for h in b}) / max(len(b), 1) for a, b in zip(found, truth)])
    )


@pytest.fixture(scope="module")
def compressed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray, np.ndarray]:
    root = tmp_path_factory.mktemp("compressed") / "idx"
    ids, vectors = build_compressed(root)
    return root, ids, vectors


def test_switches_to_compressed_codes_past_the_threshold(tmp_path: Path) -> None:
    root = tmp_path / "idx"
    AudioIndex.create(root, fingerprint=FP, dim=DIM).close()
    add_commit(root, clustered(1_000, 0), "a")
    data = json.loads((root / layout.MANIFEST).read_text())
    assert data["policy"]["mode"] == "auto" and data["codes"] is None
    assert not any(s.get("codes") for s in data["shards"])
    add_commit(root, clustered(1_000, 1), "b")
    data = json.loads((root / layout.MANIFEST).read_text())
    codes = data["codes"]
    assert codes["factory"].startswith("PCAR64,IVF") and codes["factory"].endswith("_HNSW32,PQ32x4fs")
    assert codes["design_size"] == 2_000
    assert codes["recall_at_10"] >= 0.9
    assert all(s["codes"] and (root / s["codes"]).is_file() for s in data["shards"])
    assert {codes["trained"], *(s["codes"] for s in data["shards"])} <= set(data["checksums"])
    with AudioIndex.open(root) as index:
        assert index.index_info()["choice"] == "compressed"
        # Merged, the template's fixed parts (quantizer, rotation) are held once, not once per codes file.
        files = sum((root / s["codes"]).stat().st_size for s in data["shards"])
        assert len(data["shards"]) > 1 and 0 < index.codes_memory_bytes() < files
    # The PCA's training-only eigenvectors (dim x dim) are not copied into the template and codes files.
    template = faiss_ops.read_bytes(root, codes["trained"], (root / codes["trained"]).read_bytes())
    pca = faiss_ops.faiss().downcast_VectorTransform(faiss_ops.faiss().downcast_index(template).chain.at(0))
    assert pca.PCAMat.size() == 0 and pca.A.size() == 64 * DIM


def test_compressed_search_recall_against_exact(compressed) -> None:  # noqa: ANN001
    root, _, _ = compressed
    queries = clustered(40, seed=99)
    with AudioIndex.open(root) as index:
        assert index._codes is not None
        found = index.search(queries, 10)
        truth = index.search(queries, 10, exact=True)
    assert _recall(found, truth) >= 0.9
    assert all(len(h) == 10 for h in found)


def test_reranked_scores_are_exact_and_the_top_k_of_the_candidates(compressed) -> None:  # noqa: ANN001
    root, _, _ = compressed
    queries = clustered(8, seed=7)
    with AudioIndex.open(root) as index:
        hits = index.search(queries, 10)
        codes = index._codes
        candidates = search_candidates(codes.index, queries, 100, nprobe=codes.nprobe, allowed=None)
        for q, row, cand in zip(queries, hits, candidates, strict=True):
            ids = np.array([h.id for h in row])
            exact = index.vectors(ids) @ q
            np.testing.assert_allclose([h.score for h in row], exact, rtol=1e-5, atol=1e-6)
            # The top-10 by exact inner product among the candidates is what search returned.
            cand = np.unique(cand[cand >= 0])
            scores = index.vectors(cand) @ q
            best = cand[np.lexsort((cand, -scores))[:10]]
            assert ids.tolist() == best.tolist()


def test_rerank_orders_by_exact_score_and_pads() -> None:
    vectors = {1: [1.0, 0.0], 2: [0.0, 1.0], 3: [0.6, 0.8]}
    table = np.array([vectors[i] for i in sorted(vectors)], dtype=np.float32)

    def score_among(queries: np.ndarray, ids: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        scores = queries @ table[np.searchsorted(sorted(vectors), ids)].T
        return merge_top_k(scores, np.broadcast_to(ids, scores.shape).copy(), k)

    scores, ids = rerank(np.array([[1.0, 0.0]], np.float32), np.array([[2, 3, 1, -1]]), score_among, 5)
    assert ids.tolist() == [[1, 3, 2, -1, -1]]
    np.testing.assert_allclose(scores[0, :3], [1.0, 0.6, 0.0])


def test_shard_scores_are_an_exact_scan_of_the_rows_asked_for(tmp_path: Path) -> None:
    root = tmp_path / "idx"
    AudioIndex.create(root, fingerprint=FP, dim=DIM).close()
    for c in range(3):
        add_commit(root, clustered(300, seed=c), folder=f"f{c}")
    q = clustered(4, seed=9)
    with AudioIndex.open(root) as index:
        readers = index.shard_readers()
        assert len(readers) >= 3
        asked = np.sort(np.random.default_rng(0).choice(index.num_vectors, 40, replace=False))
        scores, ids = shard_scorer(readers)(q, np.append(asked, 10_000), 7)  # an unknown id is left out
        stored = index.vectors(asked)
        for i in range(len(q)):
            exact = stored @ q[i]
            order = np.lexsort((asked, -exact))[:7]
            assert ids[i].tolist() == asked[order].tolist()
            np.testing.assert_allclose(scores[i], exact[order], rtol=1e-5, atol=1e-5)


def test_training_sample_is_drawn_from_every_shard(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "idx"
    AudioIndex.create(root, fingerprint=FP, dim=DIM).close()
    # Each commit holds its own clusters: where a training vector comes from is visible.
    parts = [clustered(700, seed=c, clusters=slice(40 * c, 40 * c + 40)) for c in range(3)]
    trained: list[np.ndarray] = []
    original = faiss_ops.train

    def spy(index, vectors, factory, **kw):  # noqa: ANN001, ANN003, ANN202
        trained.append(np.array(vectors))
        return original(index, vectors, factory, **kw)

    monkeypatch.setattr(faiss_ops, "train", spy)
    for c, part in enumerate(parts[:2]):
        add_commit(root, part, f"f{c}")
    assert not trained  # 1,400 vectors: still exact
    add_commit(root, parts[2], "f2")
    (sample,) = trained
    everything = np.concatenate(parts)
    origin = np.argmax(sample @ everything.T, axis=1) // 700
    share = np.bincount(origin, minlength=3) / len(sample)
    assert len(sample) > 1_500
    assert (share > 0.25).all(), share  # uniform over the whole collection, not the first files


def test_forced_factory_trains_on_a_uniform_sample_of_the_commit(tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    root = tmp_path / "idx"
    AudioIndex.create(root, fingerprint=FP, dim=DIM, factory="IVF4,Flat").close()
    trained: list[np.ndarray] = []
    original = faiss_ops.train
    monkeypatch.setattr(
        faiss_ops, "train", lambda i, v, f, **kw: (trained.append(np.array(v)), original(i, v, f, **kw))[1]
    )
    parts = [clustered(800, seed=c, clusters=slice(40 * c, 40 * c + 40)) for c in range(3)]
    with IndexWriter(root, fingerprint=FP) as w:
        # Indexing runs buffer 39 vectors per centroid before the first commit, not just one.
        assert (w.training_vectors_needed, w.training_vectors_wanted) == (4, 4 * 39)
        for c, part in enumerate(parts):
            w.add(part, [{"path": f"/{c}.wav"}] * len(part))
        w.commit()
    (sample,) = trained
    origin = np.argmax(sample @ np.concatenate(parts).T, axis=1) // 800
    assert (np.bincount(origin, minlength=3) / len(sample) > 0.25).all()
    assert not json.loads((root / layout.MANIFEST).read_text()).get("policy")


def test_retrains_past_the_design_size_and_old_snapshots_still_answer(tmp_path: Path) -> None:
    root = tmp_path / "idx"
    limits = dataclasses.replace(LIMITS, measure_queries=30, growth_factor=2)
    AudioIndex.create(root, fingerprint=FP, dim=DIM).close()
    for c in range(2):
        add_commit(root, clustered(1_000, seed=c), f"f{c}", limits)
    first = json.loads((root / layout.MANIFEST).read_text())["codes"]
    assert first["design_size"] == 2_000
    queries = clustered(10, seed=50)
    old = AudioIndex.open(root)
    before = [[h.id for h in row] for row in old.search(queries, 10)]
    add_commit(root, clustered(1_000, seed=2), "f2", limits)  # 3,000 <= 2 x 2,000: no re-training
    assert json.loads((root / layout.MANIFEST).read_text())["codes"]["trained"] == first["trained"]
    add_commit(root, clustered(1_500, seed=3), "f3", limits)  # 4,500 > 4,000: re-trained
    data = json.loads((root / layout.MANIFEST).read_text())
    assert data["codes"]["design_size"] == 4_500 and data["codes"]["trained"] != first["trained"]
    assert all(s["codes"].endswith(f"codes-{data['generation']}.faiss") for s in data["shards"])
    # The snapshot opened before keeps answering from its own codes, with the same results.
    assert [[h.id for h in row] for row in old.search(queries, 10)] == before
    old.close()
    with AudioIndex.open(root) as index:
        assert _recall(index.search(queries, 10), index.search(queries, 10, exact=True)) >= 0.9
    # Garbage collection: the first codes stay one commit for readers (retained), then go.
    assert first["trained"] in data["retained"] and (root / first["trained"]).is_file()
    add_commit(root, clustered(10, seed=4), "f4", limits)
    data = json.loads((root / layout.MANIFEST).read_text())
    present = set(layout.owned_files(root))
    assert first["trained"] not in present
    assert {data["codes"]["trained"], *(s["codes"] for s in data["shards"] if s.get("codes"))} <= present


def test_deletions_and_filters_hold_in_the_compressed_path(tmp_path: Path, kind: str) -> None:
    root = tmp_path / "idx"
    ids, vectors = build_compressed(root, limits=KIND_LIMITS[kind])
    queries = vectors[[5, 1_500, 2_500]]
    with AudioIndex.open(root) as index:
        top = [h.id for row in index.search(queries, 3) for h in row]
    with IndexWriter(root, fingerprint=FP, choice_limits=KIND_LIMITS[kind]) as w:
        w.delete(top)
        w.commit()
    with AudioIndex.open(root) as index:
        assert index.index_info()["choice"] == CHOICE[kind]
        for row in index.search(queries, 10):
            assert len(row) == 10 and not {h.id for h in row} & set(top)
        glob = index.search(queries, 10, path_glob="/audio/f1/*")
        assert all(h.row["path"].startswith("/audio/f1/") for row in glob for h in row)
        assert all(len(row) == 10 for row in glob)
        ranged = index.search(queries, 10, ranges={"duration_s": (2.0, 3.0)})
        assert all(2.0 <= h.row["duration_s"] <= 3.0 for row in ranged for h in row)
        exact = index.search(queries, 10, ranges={"duration_s": (2.0, 3.0)}, exact=True)
        assert _recall(ranged, exact) >= 0.9


def test_damaged_codes_are_found_and_rebuilt_from_the_exact_vectors(
    tmp_path: Path,
    monkeypatch,  # noqa: ANN001
    kind: str,
) -> None:
    root = tmp_path / "idx"
    limits = KIND_LIMITS[kind]
    monkeypatch.setattr(
        codes_module, "ChoiceLimits", lambda: limits
    )  # repair's writer: the test's thresholds
    build_compressed(root, commits=2, limits=limits)
    data = json.loads((root / layout.MANIFEST).read_text())
    # A shard's codes, or the graph (one file over every shard).
    name = data["shards"][1]["codes"] if CHOICE[kind] == "compressed" else data["codes"]["trained"]
    (root / name).write_bytes(b"not a faiss index")
    with pytest.raises(IndexDamagedError, match=name):
        AudioIndex.open(root)
    report = check_index(root)
    assert [(d.kind, d.path) for d in report.damaged] == [("codes", name)]
    repaired = repair_index(root)
    assert repaired.repaired and not repaired.dropped_shards and not repaired.files_to_reembed
    assert check_index(root).ok
    with AudioIndex.open(root) as index:
        assert index.num_vectors == 2_000 and index.index_info()["choice"] == CHOICE[kind]
        q = clustered(20, seed=8)
        assert _recall(index.search(q, 10), index.search(q, 10, exact=True)) >= 0.9


def test_an_old_exact_index_without_policy_works_and_turns_auto_on_request(tmp_path: Path) -> None:
    root = tmp_path / "idx"
    AudioIndex.create(root, fingerprint=FP, dim=DIM, factory="SQfp16").close()
    # What version-1 indexes look like: no policy, no codes keys.
    add_commit(root, clustered(1_000, seed=0), "a")
    add_commit(root, clustered(1_000, seed=1), "b")
    data = json.loads((root / layout.MANIFEST).read_text())
    assert "policy" not in data and "codes" not in data
    with AudioIndex.open(root) as index:
        assert index.index_info()["mode"] == "fixed" and index.index_info()["choice"] == "exact"
        assert len(index.search(clustered(2, seed=3), 5)[0]) == 5
    with IndexWriter(root, fingerprint=FP, factory="auto", choice_limits=LIMITS) as w:
        w.commit()  # nothing added: the policy alone is recorded (and the codes trained)
    data = json.loads((root / layout.MANIFEST).read_text())
    assert data["policy"]["mode"] == "auto" and data["codes"]["design_size"] == 2_000


def test_auto_refused_for_other_fixed_factories_and_budget_needs_auto(tmp_path: Path) -> None:
    from vela_search.errors import StoreError

    root = tmp_path / "idx"
    AudioIndex.create(root, fingerprint=FP, dim=DIM, factory="IVF4,Flat").close()
    with pytest.raises(StoreError, match="--rebuild --faiss-factory auto"):
        IndexWriter(root, fingerprint=FP, factory="auto")
    with pytest.raises(StoreError, match="--faiss-factory auto"):
        IndexWriter(root, fingerprint=FP, max_index_memory=1 << 30)


def test_the_memory_budget_is_recorded_and_can_change(tmp_path: Path) -> None:
    root = tmp_path / "idx"
    AudioIndex.create(root, fingerprint=FP, dim=DIM, max_index_memory=512 << 20).close()
    assert json.loads((root / layout.MANIFEST).read_text())["policy"]["max_index_memory"] == 512 << 20
    with IndexWriter(root, fingerprint=FP, max_index_memory=1 << 30) as w:
        w.commit()
    assert json.loads((root / layout.MANIFEST).read_text())["policy"]["max_index_memory"] == 1 << 30


def test_compaction_gives_merged_shards_codes_from_the_template(tmp_path: Path, kind: str) -> None:
    root = tmp_path / "idx"
    build_compressed(root, commits=3, limits=KIND_LIMITS[kind])
    before = json.loads((root / layout.MANIFEST).read_text())
    with IndexWriter(root, fingerprint=FP, choice_limits=KIND_LIMITS[kind]) as w:
        w.delete(np.arange(0, 3_000, 7))
        w.compact(target_shard_size=10_000)
    data = json.loads((root / layout.MANIFEST).read_text())
    assert len(data["shards"]) == 1 < len(before["shards"])
    # Not re-trained: codes encoded from the template, or the graph kept (its ids did not change).
    assert data["codes"]["trained"] == before["codes"]["trained"]
    if CHOICE[kind] == "compressed":
        assert data["shards"][0]["codes"] and data["shards"][0]["codes"] in data["checksums"]
    q = clustered(20, seed=11)
    with AudioIndex.open(root) as index:
        found = index.search(q, 10)
        assert not {h.id for row in found for h in row} & set(range(0, 3_000, 7))
        assert _recall(found, index.search(q, 10, exact=True)) >= 0.9


def test_a_new_budget_that_changes_the_codes_retrains_them(tmp_path: Path) -> None:
    root = tmp_path / "idx"
    build_compressed(root, commits=2)
    before = json.loads((root / layout.MANIFEST).read_text())["codes"]
    with IndexWriter(root, fingerprint=FP, choice_limits=LIMITS, max_index_memory=60_000) as w:
        w.commit()  # 2,000 vectors in 60 kB: smaller codes
    after = json.loads((root / layout.MANIFEST).read_text())["codes"]
    assert after["trained"] != before["trained"] and after["factory"] != before["factory"]
    assert after["memory_bytes"] <= 60_000


def test_a_shard_without_codes_is_encoded_in_memory_then_on_disk_at_the_next_commit(tmp_path: Path) -> None:
    root = tmp_path / "idx"
    build_compressed(root, commits=2)
    data = json.loads((root / layout.MANIFEST).read_text())
    del data["shards"][0]["codes"]  # as a writer that does not know codes would leave it
    (root / layout.MANIFEST).write_text(json.dumps(seal(data)))
    q = clustered(3, seed=4)
    with AudioIndex.open(root) as index:
        assert index._codes is not None and index._uncoded == []  # its codes are made at open
        assert index._codes.index.ntotal == sum(s["count"] for s in data["shards"])
        exact = index.search(q, 10, exact=True)
        assert _recall(index.search(q, 10), exact) >= 0.9
    with IndexWriter(root, fingerprint=FP, choice_limits=LIMITS) as w:
        w.add(clustered(100, seed=9), [{"path": "/x.wav"}] * 100)
        w.commit()
    data = json.loads((root / layout.MANIFEST).read_text())
    assert all(s.get("codes") for s in data["shards"])
    with AudioIndex.open(root) as index:
        assert index._codes is not None
        assert _recall(index.search(q, 10), exact) >= 0.9


@pytest.mark.parametrize("codes", ["compressed", "rabitq"])
def test_small_shards_get_no_codes_file_and_are_searched_through_codes_made_at_open(
    tmp_path: Path, codes: str
) -> None:
    root = tmp_path / "idx"
    limits = dataclasses.replace(KIND_LIMITS[codes], min_coded_rows=500)
    AudioIndex.create(root, fingerprint=FP, dim=DIM).close()
    vectors = [clustered(1_000, seed=c) for c in range(3)]
    for c, v in enumerate(vectors):
        add_commit(root, v, f"f{c}", limits)  # shards of 700 (coded) and 300 rows (exact)
    data = json.loads((root / layout.MANIFEST).read_text())
    assert [bool(s.get("codes")) for s in data["shards"]] == [s["count"] >= 500 for s in data["shards"]]
    assert {s["count"] for s in data["shards"]} == {700, 300}
    assert data["codes"]["recall_at_10"] >= 0.9
    small = next(s for s in data["shards"] if s["count"] == 300)
    queries = np.concatenate(vectors)[[small["min_id"] + 5, 10, 1_800]]
    with AudioIndex.open(root) as index:
        found = index.search(queries, 10)
        exact = index.search(queries, 10, exact=True)
        assert found[0][0].id == small["min_id"] + 5  # a vector of a shard without codes is found
        assert _recall(found, exact) >= 0.9
        for row in found:
            scores = [h.score for h in row]
            assert scores == sorted(scores, reverse=True) and len({h.id for h in row}) == 10
        # Every shard's codes, the small one's included, are in the one merged index.
        assert index._codes.index.ntotal == 3_000
