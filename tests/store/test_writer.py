"""IndexWriter: commits, crash safety, fingerprints, FAISS factories, compaction, garbage collection."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from vela_search.errors import FingerprintMismatchError, StoreError
from vela_search.store import AudioIndex, IndexTrainingError

from .helpers import DIM, FP, brute_force, rows_for, run_python, unit


def _hits(index: AudioIndex, queries: np.ndarray, k: int = 10) -> list[list[tuple[int, float, dict]]]:
    return [[(h.id, round(h.score, 5), h.row) for h in hits] for hits in index.search(queries, k)]


def _fill(index: AudioIndex, commits: int, per: int = 30) -> None:
    with index.writer(fingerprint=FP) as w:
        for c in range(commits):
            w.add(unit(per, seed=c), rows_for(c * per, per))
            w.put_files([{"path": f"/audio/commit-{c}.wav", "status": "indexed", "segments": per}])
            w.commit()


def test_ids_are_monotonic_across_writers_and_pending_state(index, root):
    with index.writer(fingerprint=FP) as w:
        a = w.add(unit(4), rows_for(0, 4))
        assert w.num_pending == 4
        w.delete([1])
        assert w.deleted_ids().tolist() == [1]
        assert w.commit() == 1
        assert w.commit() == 1  # nothing pending: no new generation
    with index.writer(fingerprint=FP) as w:
        b = w.add(unit(2), rows_for(0, 2))
        # Uncommitted work is dropped when the writer closes without commit().
    with index.writer(fingerprint=FP) as w:
        c = w.add(unit(2), rows_for(0, 2))
        w.commit()
    assert a.tolist() == [0, 1, 2, 3] and b.tolist() == [4, 5]
    # Ids of discarded work may be reissued only because nothing ever referenced them.
    assert c[0] >= 4
    r = AudioIndex.open(root)
    assert r.num_vectors == 5 and r.generation == 2


def test_add_validation(index):
    with index.writer(fingerprint=FP) as w:
        with pytest.raises(ValueError, match="shape"):
            w.add(np.zeros((2, DIM + 1), np.float32), [{}, {}])
        with pytest.raises(ValueError, match="metadata rows"):
            w.add(unit(2), [{}])
        with pytest.raises(ValueError, match="NaN"):
            w.add(np.full((1, DIM), np.nan, np.float32), [{}])
        with pytest.raises(ValueError, match="reserved"):
            w.add(unit(1), [{"id": 3}])
        w.add(unit(1), [{"start_s": 1}])
        with pytest.raises(ValueError, match="do not match"):
            w.add(unit(1), [{"start_s": "one"}])
        w.add(unit(1), [{"start_s": 2.5, "path": "/p.wav"}])  # int widens to float; new columns are fine
        w.commit()
    assert AudioIndex.open(index.root).segment_rows([0, 1]) == [
        {"id": 0, "start_s": 1.0, "path": None},
        {"id": 1, "start_s": 2.5, "path": "/p.wav"},
    ]


def test_max_shard_size_splits_a_commit(index, root):
    with index.writer(fingerprint=FP, max_shard_size=40) as w:
        w.add(unit(100), rows_for(0, 100))
        w.commit()
    r = AudioIndex.open(root)
    assert [s["count"] for s in r.manifest["shards"]] == [40, 40, 20]
    ids, vecs = np.arange(100), unit(100)
    want, _ = brute_force(ids, vecs, unit(3, seed=4), 7)
    assert [[h.id for h in hits] for hits in r.search(unit(3, seed=4), 7)] == want.tolist()


CRASHING_COMMIT = """
    import os, sys
    import numpy as np
    from vela_search.store import AudioIndex

    real_replace = os.replace

    def crash_at_manifest(src, dst, *args, **kwargs):
        if str(dst).endswith("manifest.json"):
            os._exit(17)  # dies like a killed process: no cleanup, lock not released
        return real_replace(src, dst, *args, **kwargs)

    os.replace = crash_at_manifest
    fp = {"model": "tiny", "revision": "r1", "prompt_version": "1", "dim": 16}
    w = AudioIndex.open(sys.argv[1]).writer(fingerprint=fp)
    v = np.random.default_rng(1).standard_normal((50, 16)).astype(np.float32)
    w.add(v, [{"path": "/new.wav"}] * 50)
    w.put_files([{"path": "/new.wav", "status": "indexed"}])
    w.delete([0, 1, 2])
    w.commit()
"""


def test_crash_before_manifest_rename_keeps_old_generation(index, root):
    _fill(index, 2)
    before = AudioIndex.open(root)
    queries = unit(4, seed=11)
    expected = _hits(before, queries)
    proc = run_python(CRASHING_COMMIT, str(root))
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 17, err
    # The crashed commit wrote shard and table files, but no manifest names them.
    assert len(list((root / "shards").iterdir())) > 4
    after = AudioIndex.open(root)
    assert after.generation == before.generation == 2
    assert after.files().equals(before.files())
    assert after.deleted_ids().size == 0
    assert _hits(after, queries) == expected
    # The dead writer's lock is taken over, and the next commit collects its leftovers.
    with after.writer(fingerprint=FP) as w:
        w.add(unit(1, seed=50), [{"path": "/later.wav"}])
        assert w.commit() == 3
    referenced = {p for s in AudioIndex.open(root).manifest["shards"] for p in (s["index"], s["meta"])}
    on_disk = {f"shards/{p.name}" for p in (root / "shards").iterdir()}
    assert on_disk == referenced
    assert not [p for p in root.iterdir() if p.name.startswith(".tmp-")]


def test_garbage_collection_keeps_current_and_previous_generation(index, root):
    _fill(index, 1)
    with index.writer(fingerprint=FP) as w:
        for c in range(3):
            w.put_files([{"path": f"/g{c}.wav", "status": "indexed"}])
            w.delete([c])
            w.commit()
    tables = sorted(p.name for p in root.glob("*.parquet"))
    assert tables == ["deleted-3.parquet", "deleted-4.parquet", "files-3.parquet", "files-4.parquet"]
    m = json.loads((root / "manifest.json").read_text())
    assert m["retained"] == ["deleted-3.parquet", "files-3.parquet"]


def test_snapshot_survives_garbage_collection(index, root):
    _fill(index, 2)
    old = AudioIndex.open(root)
    queries = unit(2, seed=8)
    with index.writer(fingerprint=FP) as w:
        w.add(unit(10, seed=30), rows_for(0, 10))
        w.commit()
        w.compact()
        w.put_files([{"path": "/z.wav", "status": "failed", "error": "not audio"}])
        w.commit()
    assert not (root / old.manifest["shards"][0]["index"]).exists()
    # The old snapshot still answers from the files it holds open.
    want_ids, _ = brute_force(np.arange(60), np.concatenate([unit(30, seed=0), unit(30, seed=1)]), queries, 5)
    assert [[h.id for h in hits] for hits in old.search(queries, 5)] == want_ids.tolist()
    assert old.files().num_rows == 2


def test_fingerprint_mismatch_is_refused_with_differing_keys(index, root):
    other = dict(FP, revision="r2", adapter={"sha256": "abc"})
    with pytest.raises(FingerprintMismatchError) as e:
        index.writer(fingerprint=other)
    message = str(e.value)
    assert "revision" in message and "adapter.sha256" in message
    assert "model" not in message.split("differing keys:")[1].split(".")[0]
    assert "vela-search index PATH --rebuild" in message
    # The refused writer did not keep the lock.
    with index.writer(fingerprint=dict(FP)) as w:
        assert w.generation == 0


def test_factory_is_trained_when_data_allows(tmp_path):
    idx = AudioIndex.create(tmp_path / "ivf", fingerprint=FP, dim=DIM, factory="IVF16,SQfp16")
    with idx.writer(fingerprint=FP) as w:
        assert w.training_vectors_needed == 16
        w.add(unit(10), rows_for(0, 10))
        with pytest.raises(IndexTrainingError, match="at least 16 vectors, but only 10"):
            w.commit()
        w.add(unit(290, seed=1), rows_for(10, 290))  # the refused batch is still pending
        assert w.commit() == 1
        trained = w.manifest["trained"]
        assert trained and (idx.root / trained).exists()
        assert w.training_vectors_needed == 0
        w.add(unit(5, seed=2), rows_for(300, 5))  # later commits reuse the trained index
        w.delete([3])
        w.commit()
        assert w.manifest["trained"] == trained
    r = AudioIndex.open(idx.root)
    ids = np.arange(305)
    vecs = np.concatenate([unit(10), unit(290, seed=1), unit(5, seed=2)])
    live = ids != 3
    queries = unit(4, seed=9)
    want_ids, want_scores = brute_force(ids[live], vecs[live], queries, 5)
    got = r.search(queries, 5)
    # nprobe defaults to all 16 lists here, so IVF search is exhaustive.
    assert [[h.id for h in hits] for hits in got] == want_ids.tolist()
    # IVF stores fp16 residuals, so scores match within fp16 precision.
    np.testing.assert_allclose([[h.score for h in hits] for hits in got], want_scores, atol=1e-3)


def test_pq_factory_needs_its_codebook_size(tmp_path):
    idx = AudioIndex.create(tmp_path / "pq", fingerprint=FP, dim=DIM, factory="IVF4,PQ8")
    with idx.writer(fingerprint=FP) as w:
        w.add(unit(100), rows_for(0, 100))
        with pytest.raises(IndexTrainingError, match="at least 256 vectors"):
            w.commit()


@pytest.mark.parametrize("factory", ["HNSW32", "PQ4x4"])
def test_other_factories_filter_before_top_k(tmp_path, factory):
    # HNSW takes an IDSelector; IndexPQ rejects one and uses the exact wider-search fallback.
    idx = AudioIndex.create(tmp_path / factory, fingerprint=FP, dim=DIM, factory=factory)
    vecs = unit(400)
    with idx.writer(fingerprint=FP) as w:
        w.add(vecs, rows_for(0, 400))
        w.delete(range(0, 400, 2))
        w.commit()
    r = AudioIndex.open(idx.root)
    hits = r.search(vecs[:4], 50, path_glob="/audio/a/[0-3].wav")
    for q_hits in hits:
        assert len(q_hits) == 50
        assert all(h.id % 2 == 1 and h.row["path"][-5] in "0123" for h in q_hits)
    assert hits[1][0].id == 1 and hits[3][0].id == 3


def test_compact_keeps_results_identical(index, root):
    _fill(index, 6, per=25)
    with index.writer(fingerprint=FP) as w:
        w.delete(list(range(0, 150, 7)))
        w.commit()
    before = AudioIndex.open(root)
    queries = unit(6, seed=21)
    expected = _hits(before, queries, k=20)
    filtered = [[h.id for h in hits] for hits in before.search(queries, 20, path_glob="*/[12].wav")]
    with index.writer(fingerprint=FP) as w:
        gen = w.compact(target_shard_size=60)
        assert gen == before.generation + 1
        assert w.compact(target_shard_size=60) == gen  # already compact: no new generation
    after = AudioIndex.open(root)
    assert after.num_shards == 3
    assert after.num_vectors == before.num_vectors
    assert after.deleted_ids().size == 0  # purged rows take their tombstones with them
    assert _hits(after, queries, k=20) == expected
    assert [[h.id for h in hits] for hits in after.search(queries, 20, path_glob="*/[12].wav")] == filtered
    assert after.files().equals(before.files())
    ids_b, vecs_b = before.all_vectors()
    ids_a, vecs_a = after.all_vectors()
    assert ids_a.tolist() == ids_b.tolist()
    np.testing.assert_array_equal(vecs_a, vecs_b)
    with index.writer(fingerprint=FP) as w:
        w.compact()
    assert AudioIndex.open(root).num_shards == 1
    assert _hits(AudioIndex.open(root), queries, k=20) == expected


def test_closed_writer_refuses_work(index):
    w = index.writer(fingerprint=FP)
    w.close()
    with pytest.raises(StoreError, match="closed"):
        w.add(unit(1), [{}])


def test_non_staged_writer_refuses_other_factory(index):
    with pytest.raises(StoreError, match="factory"):
        index.writer(fingerprint=FP, factory="HNSW32")


def test_no_temporary_files_after_commits(index, root):
    _fill(index, 3)
    assert not [
        p for p in list(root.iterdir()) + list((root / "shards").iterdir()) if p.name.startswith(".tmp")
    ]
    assert os.path.exists(root / "writer.lock")


@pytest.mark.parametrize("factory", ["SQfp16", "IVF4,Flat"])
def test_read_segments_returns_committed_vectors_and_rows_even_when_tombstoned(tmp_path, factory):
    idx = AudioIndex.create(tmp_path / "idx", fingerprint=FP, dim=DIM, factory=factory)
    vecs = unit(300)
    rows = rows_for(0, 300)
    with idx.writer(fingerprint=FP, max_shard_size=128) as w:
        w.add(vecs[:200], rows[:200])
        w.commit()
        w.add(vecs[200:], rows[200:])
        w.commit()
        assert len(w.manifest["shards"]) > 1
        w.delete([5, 250])
        w.commit()
        wanted = np.array([250, 5, 130, 5, 0, 299])  # out of order, across shards, a repeat
        got, got_rows = w.read_segments(wanted)
        stored = vecs[wanted].astype(np.float16).astype(np.float32) if factory == "SQfp16" else vecs[wanted]
        np.testing.assert_allclose(got, stored, atol=1e-6)
        assert [r["id"] for r in got_rows] == wanted.tolist()
        assert [r["path"] for r in got_rows] == [rows[i]["path"] for i in wanted]
        w.add(unit(2, seed=9), rows_for(0, 2))  # pending: not readable
        with pytest.raises(KeyError, match="300"):
            w.read_segments(np.array([1, 300]))


def test_rows_like_earlier_ones_keep_their_exact_values(index):
    # Rows shaped like the earlier ones take a faster path; it must store what inference would.
    with index.writer(fingerprint=FP) as w:
        w.add(unit(1), [{"n": 1, "x": 0.5, "tag": "a", "flag": True}])
        w.add(
            unit(2, seed=1),
            [{"n": 2, "x": 1, "tag": None, "flag": False}, {"n": 3, "x": 2.0, "tag": "b", "flag": None}],
        )
        # A float in the int column: the column widens to float, the value is not truncated to 2.
        w.add(unit(1, seed=2), [{"n": 2.5, "x": 3.5, "tag": "c", "flag": True}])
        with pytest.raises(ValueError, match="do not match"):
            w.add(unit(1, seed=3), [{"n": 1.0, "x": True, "tag": "d", "flag": True}])  # bool is not a number
        with pytest.raises(ValueError, match="do not match"):
            w.add(unit(1, seed=3), [{"n": 1.0, "x": 1.0, "tag": 7, "flag": True}])
        w.commit()
    rows = AudioIndex.open(index.root).segment_rows([0, 1, 2, 3])
    assert [(r["n"], r["x"], r["tag"], r["flag"]) for r in rows] == [
        (1.0, 0.5, "a", True),
        (2.0, 1.0, None, False),
        (3.0, 2.0, "b", None),
        (2.5, 3.5, "c", True),
    ]


def test_files_changes_apply_in_order_and_a_no_op_commits_nothing(index, root):
    with index.writer(fingerprint=FP) as w:
        w.put_files([{"path": "/a.wav", "status": "indexed", "segments": 1}])
        w.remove_files(["/a.wav"])
        w.put_files([{"path": "/a.wav", "status": "failed", "error": "truncated"}])
        w.put_files([{"path": "/b.wav", "status": "indexed"}])
        w.remove_files(["/b.wav"])
        w.put_files([{"path": "/c.wav", "status": "indexed"}, {"path": "/c.wav", "status": "duplicate"}])
        assert sorted(w.files()["path"].to_pylist()) == ["/a.wav", "/c.wav"]
        generation = w.commit()
        w.remove_files(["/never-indexed.wav"])
        w.remove_files([])
        assert w.commit() == generation  # nothing changed: no new generation
    files = {f["path"]: f for f in AudioIndex.open(root).files().to_pylist()}
    assert files.keys() == {"/a.wav", "/c.wav"}
    assert (files["/a.wav"]["status"], files["/a.wav"]["error"]) == ("failed", "truncated")
    assert files["/c.wav"]["status"] == "duplicate"
