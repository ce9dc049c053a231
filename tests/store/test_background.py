"""Background maintenance: merges and re-training off the commit path, re-based publication, kill -9."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from vela_search.store import AudioIndex, background, layout, manifest
from vela_search.store.activity import read_activity
from vela_search.store.repair import check_index
from vela_search.store.tables import read_ids
from vela_search.store.tiers import TierPolicy
from vela_search.store.writer import IndexWriter

from . import compressed_helpers as ch
from .helpers import DIM, FP, rows_for, run_python, unit

EAGER = TierPolicy(fanout=2, min_items=2)  # merges every few commits of a short test


def contents(root: Path) -> tuple[list[int], np.ndarray, list[str], list[tuple]]:
    """Live ids, their stored vectors, their paths, and the files table: what a clean run must equal."""
    data = manifest.read(root / layout.MANIFEST)
    fp = data["fingerprint"]
    with IndexWriter(root, fingerprint=fp) as w:
        ids = np.concatenate(
            [read_ids(root, e["meta"], manifest.checksum(data, e["meta"])) for e in data["shards"]]
        )
        live = np.setdiff1d(ids, w.deleted_ids())
        vectors, rows = w.read_segments(live)
        files = sorted(tuple(sorted(r.items())) for r in w.files().to_pylist())
    return live.tolist(), vectors, [r["path"] for r in rows], files


def _land(w: IndexWriter, commits: int, *, per: int = 10, seed: int = 0) -> None:
    """`commits` commits of `per` vectors, every fifth deleting three of its own rows."""
    for c in range(commits):
        ids = w.add(unit(per, seed=seed + c), rows_for(w.manifest["next_id"] + w.num_pending, per))
        w.put_files([{"path": f"/audio/{seed + c}.wav", "status": "indexed", "segments": per}])
        if c % 5 == 4:
            w.delete(ids[:3])
        w.commit()


@pytest.fixture
def held(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, threading.Event]]:
    """Background jobs that wait on an event (per kind) before they start working."""
    events = {background.MERGE: threading.Event(), background.RETRAIN: threading.Event()}
    for kind in events:
        original = getattr(background, f"run_{kind}")

        def job(*args, _original=original, _event=events[kind]):  # noqa: ANN001, ANN002, ANN202
            assert _event.wait(30), "the test never released the job"
            return _original(*args)

        monkeypatch.setattr(background, f"run_{kind}", job)
    yield events
    for event in events.values():
        event.set()


def test_background_merges_keep_the_contents_of_inline_ones(tmp_path: Path) -> None:
    results = {}
    for mode in ("inline", "background"):
        root = tmp_path / mode
        AudioIndex.create(root, fingerprint=FP, dim=DIM).close()
        with IndexWriter(root, fingerprint=FP, maintenance=mode, max_shard_size=64, merge_policy=EAGER) as w:
            _land(w, 30)
            w.finish_maintenance()
            shards = len(w.manifest["shards"])
        assert shards < 10  # 30 commits, merged down
        assert check_index(root).ok
        results[mode] = contents(root)
    (ids_a, vec_a, paths_a, files_a), (ids_b, vec_b, paths_b, files_b) = results.values()
    assert ids_a == ids_b and paths_a == paths_b and files_a == files_b
    np.testing.assert_array_equal(vec_a, vec_b)


def test_a_commit_does_not_wait_for_a_running_merge(tmp_path: Path, held) -> None:  # noqa: ANN001
    root = tmp_path / "idx"
    AudioIndex.create(root, fingerprint=FP, dim=DIM).close()
    with IndexWriter(root, fingerprint=FP, maintenance="background", merge_policy=EAGER) as w:
        _land(w, 3)
        assert w.maintenance_running == [background.MERGE]  # held on its event
        assert read_activity(root).maintenance == [background.MERGE]
        merged = [e["meta"] for e in w.manifest["shards"]]
        before = w.manifest["num_vectors"]
        # Rows of the shards being merged are deleted meanwhile: the merge result must keep them deleted.
        w.delete(np.arange(0, 5))
        w.commit()
        _land(w, 2, seed=50)
        assert w.manifest["num_vectors"] == before - 5 + 20  # three commits published while it waited
        held[background.MERGE].set()
        w.finish_maintenance()
        shards = [e["meta"] for e in w.manifest["shards"]]
        assert not set(merged) & set(shards)  # the merged shards were replaced...
        assert w.manifest["num_vectors"] == 45  # ...rows deleted meanwhile stay deleted
        assert read_activity(root).maintenance == []
    assert check_index(root).ok
    with AudioIndex.open(root) as index:
        assert index.num_vectors == 45
        found = {h.id for hits in index.search(unit(10, seed=0)[:5], 50) for h in hits}
        assert not found & set(range(5))


def test_a_commit_does_not_wait_for_a_running_retraining(tmp_path: Path, held, kind: str) -> None:  # noqa: ANN001
    root = tmp_path / "idx"
    AudioIndex.create(root, fingerprint=ch.FP, dim=ch.DIM).close()
    limits = ch.KIND_LIMITS[kind]  # a graph is built in the background the same way
    options = {"choice_limits": limits, "max_shard_size": 700, "maintenance": "background"}
    with IndexWriter(root, fingerprint=ch.FP, **options) as w:
        w.add(ch.clustered(2_000, 0), ch.rows(0, 2_000, "a"))
        w.commit()  # outgrew exact search: the training is due, and waits on its event
        assert w.maintenance_running == [background.RETRAIN]
        assert read_activity(root).maintenance == [background.RETRAIN]
        assert w.manifest["codes"] is None  # searched exactly meanwhile
        w.add(ch.clustered(300, 1), ch.rows(2_000, 300, "b"))
        w.commit()  # completes while the training is held
        assert w.manifest["num_vectors"] == 2_300 and w.maintenance_running == [background.RETRAIN]
        held[background.RETRAIN].set()
        w.finish_maintenance()
        data = w.manifest
        if ch.CHOICE[kind] == "compressed":
            assert data["codes"]["design_size"] == 2_000  # trained on the snapshot...
            assert all(s.get("codes") for s in data["shards"] if s["count"] >= limits.min_coded_rows)
        else:  # built on the snapshot, then the 300 rows landed since (over a tenth) folded in
            assert data["codes"]["covers_below"] == data["codes"]["design_size"] == 2_300
            assert not any(s.get("codes") for s in data["shards"])
        assert read_activity(root).maintenance == []
    assert check_index(root).ok  # ...and the shard landed since was encoded with the new template
    with AudioIndex.open(root) as index:
        assert index.index_info()["choice"] == ch.CHOICE[kind]
        hits = index.search(ch.clustered(300, 1)[:3], 5)  # rows landed during the training
        assert [h[0].id for h in hits] == [2_000, 2_001, 2_002]


def test_merges_go_on_during_a_retraining_and_both_publish_consistently(tmp_path: Path, held) -> None:  # noqa: ANN001
    results = {}
    held[background.MERGE].set()  # merges run freely; the re-training waits until the end
    for mode in ("background", "inline"):
        root = tmp_path / mode
        AudioIndex.create(root, fingerprint=ch.FP, dim=ch.DIM).close()
        options = {"choice_limits": ch.LIMITS, "max_shard_size": 700, "merge_policy": EAGER}
        with IndexWriter(root, fingerprint=ch.FP, maintenance=mode, **options) as w:
            w.add(ch.clustered(1_600, 0), ch.rows(0, 1_600, "a"))
            w.commit()
            for c in range(8):
                w.add(ch.clustered(150, c + 1), ch.rows(1_600 + 150 * c, 150, f"b{c}"))
                w.commit()
                if mode == "background":
                    assert background.RETRAIN in w.maintenance_running
            if mode == "background":
                deadline = time.monotonic() + 30  # the merges' threads publish (nothing is buffered)
                while len(w.manifest["shards"]) >= 11 and time.monotonic() < deadline:
                    time.sleep(0.01)
                assert w.manifest["codes"] is None  # still exact: the training is held...
                assert len(w.manifest["shards"]) < 11  # ...while merges went on (3 + 8 shards unmerged)
                held[background.RETRAIN].set()
            w.finish_maintenance()
            data = w.manifest
        assert data["codes"] is not None and check_index(root).ok
        assert all(s.get("codes") for s in data["shards"] if s["count"] >= ch.LIMITS.min_coded_rows)
        assert len(data["shards"]) < 9  # merged meanwhile
        results[mode] = contents(root)
    (ids_a, vec_a, paths_a, _), (ids_b, vec_b, paths_b, _) = results.values()
    assert ids_a == ids_b and paths_a == paths_b
    np.testing.assert_array_equal(vec_a, vec_b)


def test_closing_stops_a_running_retraining_and_the_next_writer_redoes_it(tmp_path: Path, held) -> None:  # noqa: ANN001
    root = tmp_path / "idx"
    AudioIndex.create(root, fingerprint=ch.FP, dim=ch.DIM).close()
    options = {"choice_limits": ch.LIMITS, "max_shard_size": 700}
    w = IndexWriter(root, fingerprint=ch.FP, maintenance="background", **options)
    w.add(ch.clustered(2_000, 0), ch.rows(0, 2_000, "a"))
    w.commit()
    assert w.maintenance_running == [background.RETRAIN]
    threading.Timer(0.3, held[background.RETRAIN].set).start()  # the job starts once close() cancelled it
    started = time.monotonic()
    w.close()
    assert time.monotonic() - started < 10  # stopped at its first read, not trained to the end
    assert manifest.read(root / layout.MANIFEST)["codes"] is None and check_index(root).ok
    assert read_activity(root).maintenance == []
    with IndexWriter(root, fingerprint=ch.FP, maintenance="background", **options) as w:
        w.finish_maintenance()  # found due again
        assert w.manifest["codes"] is not None
    assert check_index(root).ok


def test_a_result_finished_while_changes_are_buffered_goes_out_with_the_next_commit(
    tmp_path: Path,
    held,  # noqa: ANN001
) -> None:
    root = tmp_path / "idx"
    AudioIndex.create(root, fingerprint=FP, dim=DIM).close()
    with IndexWriter(root, fingerprint=FP, maintenance="background", merge_policy=EAGER) as w:
        _land(w, 3)
        merged = [e["meta"] for e in w.manifest["shards"]]
        w.add(unit(4, seed=99), rows_for(30, 4))  # buffered: the merge cannot publish on its own
        held[background.MERGE].set()
        deadline = time.monotonic() + 30
        while w.maintenance_running and time.monotonic() < deadline:  # the merge finishes, unpublished
            time.sleep(0.01)
        assert [e["meta"] for e in w.manifest["shards"]] == merged  # not published yet
        w.commit()  # carries the merge and the buffered rows in one generation
        data = w.manifest
        assert not set(merged) & {e["meta"] for e in data["shards"]} and data["num_vectors"] == 34
    assert check_index(root).ok


KILLED_DURING_JOB = """
    import sys, threading, time
    sys.path.insert(0, sys.argv[4])
    from vela_search.store import background
    from vela_search.store.tiers import TierPolicy
    from vela_search.store.writer import IndexWriter
    from store import compressed_helpers as ch
    from store.test_background import _land, FP

    kind = sys.argv[2]
    original = getattr(background, "run_" + kind)
    landed = threading.Event()

    def job(*args):
        landed.wait()  # every commit of the run is in first: the rerun is compared with a clean run
        result = original(*args)  # its files are written, none published
        print("running", flush=True)
        time.sleep(300)  # killed here
        return result

    setattr(background, "run_" + kind, job)
    if kind == "merge":
        w = IndexWriter(sys.argv[1], fingerprint=FP, maintenance="background",
                        max_shard_size=64, merge_policy=TierPolicy(fanout=2, min_items=2))
        _land(w, int(sys.argv[3]))
    else:
        w = IndexWriter(sys.argv[1], fingerprint=ch.FP, maintenance="background",
                        choice_limits=ch.LIMITS, max_shard_size=700)
        w.add(ch.clustered(2_000, 0), ch.rows(0, 2_000, "a"))
        w.put_files([{"path": "/audio/a.wav", "status": "indexed", "segments": 2_000}])
        w.commit()
    landed.set()
    time.sleep(300)
"""


def _finish_compressed(root: Path, maintenance: str) -> None:
    with IndexWriter(root, fingerprint=ch.FP, maintenance=maintenance, choice_limits=ch.LIMITS) as w:
        if maintenance == "inline":
            w.add(ch.clustered(2_000, 0), ch.rows(0, 2_000, "a"))
            w.put_files([{"path": "/audio/a.wav", "status": "indexed", "segments": 2_000}])
        w.finish_maintenance()


@pytest.mark.parametrize("kind", [background.MERGE, background.RETRAIN])
def test_kill_9_during_background_maintenance_loses_nothing(tmp_path: Path, kind: str) -> None:
    killed, clean = tmp_path / "killed", tmp_path / "clean"
    fp, dim = (FP, DIM) if kind == background.MERGE else (ch.FP, ch.DIM)
    for root in (killed, clean):
        AudioIndex.create(root, fingerprint=fp, dim=dim).close()
    commits = 12
    run = run_python(KILLED_DURING_JOB, str(killed), kind, str(commits), str(Path(__file__).parents[1]))
    assert run.stdout.readline().strip() == "running", run.stderr.read()
    run.send_signal(signal.SIGKILL)
    run.communicate(timeout=30)
    assert check_index(killed).ok  # opens, nothing of the job published
    data = manifest.read(killed / layout.MANIFEST)
    unnamed = set(layout.owned_files(killed)) - manifest.references(data) - set(data["retained"])
    assert unnamed  # the job's files were written when it was killed
    # The rerun: a writer that finds the maintenance due and does it.
    if kind == background.MERGE:
        options = {"maintenance": "background", "max_shard_size": 64, "merge_policy": EAGER}
        with IndexWriter(killed, fingerprint=FP, **options) as w:
            assert w.manifest["num_vectors"] == 10 * commits - 2 * 3
            w.finish_maintenance()
        with IndexWriter(clean, fingerprint=FP, max_shard_size=64, merge_policy=EAGER) as w:
            _land(w, commits)
    else:
        _finish_compressed(killed, "background")
        _finish_compressed(clean, "inline")
        assert manifest.read(killed / layout.MANIFEST)["codes"] is not None
    assert check_index(killed).ok
    data = manifest.read(killed / layout.MANIFEST)
    # The killed job's files were collected.
    assert set(layout.owned_files(killed)) <= manifest.references(data) | set(data["retained"])
    (ids_a, vec_a, paths_a, files_a), (ids_b, vec_b, paths_b, files_b) = contents(killed), contents(clean)
    assert ids_a == ids_b and paths_a == paths_b and files_a == files_b
    np.testing.assert_array_equal(vec_a, vec_b)
