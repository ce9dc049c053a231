"""What `info` says about a writer's activity: pending work of a live writer, nothing for a dead one."""

from __future__ import annotations

import json

from cli_in_process import vela
from indexing.helpers import small_collection

from vela_search.cli.activity_view import activity_lines
from vela_search.indexing import index_paths
from vela_search.store.activity import Activity, ActivityRecorder


def test_a_live_writer_shows_its_pending_work_and_the_last_catch_up() -> None:
    live = Activity(
        files_waiting=12, maintenance=["merge"], paused_roots=["/mnt/nas"], caught_up_at=1000.0, live=True
    )
    rows = dict(activity_lines(live, now=1000.0 + 300))
    assert rows["pending"] == "12 files being added; maintenance: merge"
    assert rows["paused folders"].startswith("/mnt/nas")
    assert rows["last caught up"] == "1970-01-01 00:16:40 UTC (5 min ago)"


def test_a_dead_writer_leaves_nothing_pending() -> None:
    stale = Activity(files_waiting=12, maintenance=["merge"], paused_roots=["/mnt/nas"], live=False)
    rows = dict(activity_lines(stale))
    assert rows == {
        "pending": "nothing (no writer running)",
        "last caught up": "not recorded (never watched)",
    }


def test_info_shows_the_record(tmp_path, tiny_embedder) -> None:
    serve_index = tmp_path / "idx"
    index_paths(small_collection(tmp_path / "audio", 1), serve_index, tiny_embedder)
    ActivityRecorder(serve_index).update(files_waiting=4, caught_up=True)
    shown = vela("info", "--index", str(serve_index))
    assert shown.returncode == 0 and "pending: 4 files being added" in shown.stdout, shown.stdout
    data = json.loads(vela("info", "--index", str(serve_index), "--json").stdout)["activity"]
    assert data["files_waiting"] == 4 and data["live"] and data["pending"] and data["caught_up_at"]
