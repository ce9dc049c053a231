"""The advisory activity record: written by a live writer, stale once the writer is gone or silent."""

from __future__ import annotations

import json
import os

from vela_search.store.activity import STALE_AFTER_S, ActivityRecorder, read_activity


def test_a_live_writer_shows_its_pending_work(tmp_path):
    recorder = ActivityRecorder(tmp_path)
    recorder.update(files_waiting=12)
    recorder.add_maintenance("retrain")
    activity = read_activity(tmp_path)
    assert activity.live and activity.pending
    assert activity.files_waiting == 12 and activity.maintenance == ["retrain"]
    recorder.finish_maintenance("retrain")
    recorder.update(files_waiting=0, caught_up=True)
    activity = read_activity(tmp_path)
    assert not activity.pending and activity.caught_up_at is not None


def test_a_record_left_by_a_dead_or_silent_writer_is_not_pending(tmp_path):
    ActivityRecorder(tmp_path).update(files_waiting=3)
    path = tmp_path / "activity.json"
    data = json.loads(path.read_text())
    assert read_activity(tmp_path, now=data["updated_at"] + STALE_AFTER_S + 1).pending is False
    # A pid that cannot be running (beyond the kernel's pid range) reads as gone.
    data["pid"] = 2**22 + 17
    path.write_text(json.dumps(data))
    assert read_activity(tmp_path).pending is False
    assert os.getpid() != data["pid"]


def test_the_last_catch_up_survives_a_new_writer_and_damage_reads_as_empty(tmp_path):
    ActivityRecorder(tmp_path).update(caught_up=True)
    stamped = read_activity(tmp_path).caught_up_at
    assert ActivityRecorder(tmp_path).update(files_waiting=1).caught_up_at == stamped
    (tmp_path / "activity.json").write_text("{not json")
    assert read_activity(tmp_path).files_waiting == 0 and not read_activity(tmp_path).live


def test_one_shared_recorder_per_index_keeps_every_parts_fields(tmp_path):
    from vela_search.store.activity import shared_recorder

    watcher, maintenance = shared_recorder(tmp_path), shared_recorder(tmp_path / "." / "")
    assert watcher is maintenance
    maintenance.add_maintenance("merge")
    watcher.update(files_waiting=5, paused_roots=["/mnt/away"])  # leaves the merge recorded
    activity = read_activity(tmp_path)
    assert activity.maintenance == ["merge"] and activity.files_waiting == 5
    assert watcher.state.paused_roots == ["/mnt/away"]
    assert shared_recorder(tmp_path / "other") is not watcher
