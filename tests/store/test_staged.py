"""Staged generations: a rebuild with a new embedder replaces the old generation only at promote()."""

from __future__ import annotations

import numpy as np

from vela_search.store import AudioIndex

from .helpers import DIM, FP, brute_force, rows_for, run_python, unit

NEW_FP = dict(FP, revision="r2")


def _old_generation(index: AudioIndex) -> None:
    with index.writer(fingerprint=FP) as w:
        w.add(unit(40, seed=1), rows_for(0, 40, "old"))
        w.put_files([{"path": "/audio/old.wav", "status": "indexed"}])
        w.commit()


def _top_ids(index: AudioIndex, queries: np.ndarray, k: int = 5) -> list[list[int]]:
    return [[h.id for h in hits] for hits in index.search(queries, k)]


def test_staged_writer_and_promote(index, root):
    _old_generation(index)
    queries = unit(3, seed=5)
    old_answers = _top_ids(AudioIndex.open(root), queries)
    with index.writer(fingerprint=NEW_FP, staged=True) as w:
        assert not w.resumed and w.fingerprint == NEW_FP and w.generation == 0
        new_ids = w.add(unit(30, seed=2), rows_for(0, 30, "new"))
        w.put_files([{"path": "/audio/new.wav", "status": "indexed"}])
        w.commit()
        assert (root / "manifest.staging.json").exists()
        reader = AudioIndex.open(root)  # readers still see the old generation
        assert reader.fingerprint == FP and _top_ids(reader, queries) == old_answers
        assert reader.staging["fingerprint"] == NEW_FP
        promoted = w.promote()
        assert not (root / "manifest.staging.json").exists()
        # The writer goes on as an ordinary writer of the promoted generation.
        w.add(unit(2, seed=3), rows_for(0, 2, "new"))
        assert w.commit() == promoted + 1
    assert _top_ids(reader, queries) == old_answers  # an open snapshot keeps its generation
    now = AudioIndex.open(root)
    assert now.fingerprint == NEW_FP
    assert now.generation > reader.generation
    assert now.num_vectors == 32
    assert now.files()["path"].to_pylist() == ["/audio/new.wav"]
    assert new_ids[0] >= 40  # ids are never reused, even across generations
    ids, vecs = now.all_vectors()
    assert _top_ids(now, queries) == brute_force(ids, vecs, queries, 5)[0].tolist()
    # Old shards are kept one generation for readers, then collected.
    with now.writer(fingerprint=NEW_FP) as w:
        w.delete([int(new_ids[0])])
        w.commit()
    assert not (root / reader.manifest["shards"][0]["index"]).exists()


ABANDONED_REBUILD = """
    import os, sys
    import numpy as np
    from vela_search.store import AudioIndex
    fp = {"model": "tiny", "revision": "r2", "prompt_version": "1", "dim": 16}
    w = AudioIndex.open(sys.argv[1]).writer(fingerprint=fp, staged=True)
    v = np.random.default_rng(7).standard_normal((20, 16)).astype(np.float32)
    w.add(v, [{"path": "/audio/new/%d.wav" % i} for i in range(20)])
    w.put_files([{"path": "/audio/new/0.wav", "status": "indexed"}])
    w.commit()
    w.add(v, [{"path": "/audio/new/lost.wav"}] * 20)
    os._exit(9)  # killed mid-rebuild, with a second batch uncommitted
"""


def test_abandoned_rebuild_keeps_old_generation_and_resumes(index, root):
    _old_generation(index)
    queries = unit(3, seed=6)
    before = AudioIndex.open(root)
    old_answers = _top_ids(before, queries)
    proc = run_python(ABANDONED_REBUILD, str(root))
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 9, err
    after = AudioIndex.open(root)
    assert after.generation == before.generation and after.fingerprint == FP
    assert _top_ids(after, queries) == old_answers
    # The old generation keeps taking updates; its commits must not collect the staged files.
    with after.writer(fingerprint=FP) as w:
        w.add(unit(5, seed=9), rows_for(0, 5, "old"))
        w.commit()
    assert AudioIndex.open(root).num_vectors == 45
    # Reopening the rebuild with the same embedder resumes it.
    with after.writer(fingerprint=NEW_FP, staged=True) as w:
        assert w.resumed
        assert w.files()["path"].to_pylist() == ["/audio/new/0.wav"]
        assert len(w.manifest["shards"]) == 1 and w.manifest["num_vectors"] == 20
        more = w.add(unit(10, seed=10), [{"path": "/audio/new/more.wav"}] * 10)
        assert more[0] >= 45  # above every id issued by either generation
        w.promote()
    final = AudioIndex.open(root)
    assert final.fingerprint == NEW_FP and final.num_vectors == 30
    paths = {r["path"] for r in final.segment_rows(final.all_vectors()[0])}
    assert "/audio/new/lost.wav" not in paths and "/audio/new/more.wav" in paths


def test_staged_writer_with_another_fingerprint_starts_fresh(index, root):
    _old_generation(index)
    with index.writer(fingerprint=NEW_FP, staged=True) as w:
        w.add(unit(5), rows_for(0, 5))
        w.commit()
        first_shard = w.manifest["shards"][0]["index"]
    third = dict(FP, revision="r3")
    with index.writer(fingerprint=third, staged=True, dim=8) as w:
        assert not w.resumed and w.dim == 8 and w.manifest["shards"] == []
        w.add(unit(4, dim=8), rows_for(0, 4))
        w.commit()
        assert not (root / first_shard).exists()  # the replaced staging is collected
        w.promote()
    r = AudioIndex.open(root)
    assert (r.dim, r.num_vectors, r.fingerprint) == (8, 4, third)


def test_staged_writer_with_the_same_fingerprint_rebuilds_from_scratch(index, root):
    _old_generation(index)
    with index.writer(fingerprint=FP, staged=True) as w:
        assert w.manifest["shards"] == [] and w.files().num_rows == 0
        w.add(unit(3, seed=4, dim=DIM), rows_for(0, 3))
        w.promote()
    assert AudioIndex.open(root).num_vectors == 3
