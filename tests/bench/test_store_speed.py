"""The index writer benchmark: it lands what it says, commits as indexing does, and leaves nothing behind."""

from __future__ import annotations

import pytest

from vela_search.bench.store_speed import compare_maintenance, measure_store
from vela_search.errors import VelaError


def test_lands_every_file_commits_at_file_boundaries_and_cleans_up(tmp_path):
    run = measure_store(60, dim=8, segments_per_file=2, commit_every=16, workdir=tmp_path)
    # 2 segments per file: a commit every 8 files (7 in 56 files), then the last 4 files.
    assert (run.files, run.segments_per_file, run.dim, run.commits) == (60, 2, 8, 8)
    assert [landed for landed, _ in run.curve] == list(range(6, 61, 6))
    assert all(ms > 0 for _, ms in run.curve) and run.total_s > 0
    assert run.ms_per_file == pytest.approx(run.total_s * 1000 / 60)
    assert list(tmp_path.iterdir()) == []  # the temporary index is removed


def test_a_run_shorter_than_ten_files_still_has_a_curve(tmp_path):
    run = measure_store(3, dim=4, workdir=tmp_path)
    assert [landed for landed, _ in run.curve] == [1, 2, 3] and run.commits == 1


def test_moves_relink_files_under_their_new_path(tmp_path):
    calls = []
    run = measure_store(
        30, dim=4, commit_every=10, moves=12, workdir=tmp_path, progress=lambda *a: calls.append(a)
    )
    assert calls == [("land", n, 30) for n in range(3, 31, 3)] + [("move", 12, 12)]
    # The run checks its index itself (30 rows, 12 under the moved folder) and raises otherwise.
    assert run.moves == 12 and run.ms_per_move is not None and run.ms_per_move > 0
    assert run.commits == 3 + 2  # 30 files landed, then 12 moves: 10 + 2
    assert measure_store(5, dim=4, workdir=tmp_path).ms_per_move is None


def test_reports_the_shards_a_run_leaves_uncompacted_and_its_first_and_last_tenth(tmp_path):
    run = measure_store(240, dim=4, commit_every=4, workdir=tmp_path, maintenance="inline")
    assert run.commits == 60
    # One shard per commit without tiered merging; merged as they land (inline), they stay few.
    assert 1 <= run.shards_at_end <= run.peak_shards <= 12
    assert run.first_tenth_ms == run.curve[0][1] and run.last_tenth_ms == run.curve[-1][1]
    assert run.last_vs_first == pytest.approx(run.last_tenth_ms / run.first_tenth_ms)
    assert run.max_shard_size == 100_000


def test_reports_commit_latency_and_trainings_in_both_maintenance_modes(tmp_path):
    runs = compare_maintenance(600, dim=8, commit_every=40, workdir=tmp_path, exact_max_vectors=100)
    for mode, run in runs.items():
        assert run.maintenance == mode and run.commits == 15
        assert 0 < run.commit_p50_ms <= run.commit_p99_ms <= run.commit_max_ms
        # Codes past 100 vectors, re-trained past 4x each design size: a few templates either way.
        assert run.trainings >= 2
    assert runs["inline"].finish_s < 1.0  # nothing is left after the last commit inline


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ({"files": 0}, "at least 1"),
        ({"dim": 0}, "at least 1"),
        ({"segments_per_file": 0}, "at least 1"),
        ({"commit_every": 0}, "at least 1"),
        ({"moves": 6}, "moves must be from 0"),
    ],
)
def test_bad_counts_are_refused(bad, message, tmp_path):
    args = {"files": 5, "dim": 4, **bad}
    with pytest.raises(VelaError, match=message):
        measure_store(args.pop("files"), workdir=tmp_path, **args)
