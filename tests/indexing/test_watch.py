"""A real folder watcher (inotify here) on temporary folders: the index follows copies, moves, deletions,
pauses for a vanished root, and turns a burst of files into a few commits."""

from __future__ import annotations

import contextlib
import os
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from audio_factory import noise, tone, write_audio

from vela_search.indexing import index_paths
from vela_search.indexing.plan import RootVanishedError
from vela_search.indexing.watch import IndexWatcher, WatchEvent, WatchSettings
from vela_search.store.activity import read_activity

from .helpers import SR, files_table, generation, small_collection

SETTLE_S = 0.5
# The index follows a settled change within settle + one run; runs of a few files take ~1-3 s here.
FOLLOW_S = 20.0


def wait_until(check: Callable[[], object], timeout: float = FOLLOW_S, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise AssertionError(f"not within {timeout:g} s: {what}")


@contextlib.contextmanager
def watching(index_dir: Path, emb, settings: WatchSettings | None = None) -> Iterator[list[WatchEvent]]:
    """A watcher thread on ``index_dir`` (its first pass done); yields the events it reports."""
    events: list[WatchEvent] = []
    stop = threading.Event()
    settings = settings or WatchSettings(settle_s=SETTLE_S, max_wait_s=10.0)
    watch = IndexWatcher(index_dir, emb, settings=settings, on_event=events.append)
    failure: list[BaseException] = []

    def run() -> None:
        try:
            watch.run(stop)
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            failure.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        wait_until(lambda: failure or runs(events), what="the first pass")
        assert not failure, failure
        yield events
    finally:
        stop.set()
        thread.join(10)
    assert not thread.is_alive()
    assert not failure, failure
    assert events[-1].kind == "stopped"


def runs(events: list[WatchEvent]) -> list[WatchEvent]:
    return [e for e in events if e.kind == "run"]


def clip(i: int, seconds: float = 0.5) -> np.ndarray:
    return tone(seconds, SR, freq=300.0 + 53.0 * i) + noise(seconds, SR, seed=100 + i, amplitude=0.01)


@pytest.fixture
def indexed(tmp_path: Path, emb) -> tuple[Path, Path]:
    """A folder of two clips, indexed: (folder, index)."""
    folder, index_dir = tmp_path / "lib", tmp_path / "idx"
    small_collection(folder, 2, seconds=0.5)
    index_paths([folder], index_dir, emb)
    return folder, index_dir


def test_slow_copy_is_embedded_once_whole_then_renamed_and_deleted(indexed, emb, tmp_path: Path) -> None:
    folder, index_dir = indexed
    source = write_audio(tmp_path / "new.wav", clip(7, seconds=2.0), SR)
    data = source.read_bytes()
    with watching(index_dir, emb) as events:
        target = folder / "sub" / "new.wav"
        target.parent.mkdir()
        with open(target, "wb") as out:  # copied slowly: 3 pieces, 0.3 s apart (under the settle time)
            for piece in np.array_split(np.frombuffer(data, np.uint8), 3):
                out.write(piece.tobytes())
                out.flush()
                time.sleep(0.3)
                assert str(target) not in files_table(index_dir), "embedded before the copy ended"
        wait_until(lambda: sum(e.report.files_indexed for e in runs(events)) == 1, what="the copy indexed")
        row = files_table(index_dir)[str(target)]
        assert row["status"] == "indexed" and row["size"] == len(data)

        before = len(runs(events))
        moved = folder / "renamed.wav"
        os.rename(target, moved)
        wait_until(lambda: sum(e.report.files_relinked for e in runs(events)) == 1, what="the move followed")
        assert str(target) not in files_table(index_dir) and str(moved) in files_table(index_dir)
        assert sum(e.report.files_indexed for e in runs(events)[before:]) == 0  # relinked, not embedded

        os.remove(moved)
        wait_until(lambda: str(moved) not in files_table(index_dir), what="the deletion followed")
        assert sorted(files_table(index_dir)) == sorted(str(p) for p in folder.glob("*.wav"))
    assert read_activity(index_dir).caught_up_at is not None


def test_a_vanished_root_pauses_and_nothing_is_removed(indexed, emb, tmp_path: Path) -> None:
    folder, index_dir = indexed
    before = files_table(index_dir)
    parked = tmp_path / "parked"
    with watching(index_dir, emb) as events:
        shutil.move(folder, parked)  # the drive goes away
        wait_until(lambda: any(e.kind == "paused" for e in events), what="the root paused")
        assert read_activity(index_dir).paused_roots == [str(folder)]
        time.sleep(SETTLE_S * 3)  # the deletion events would have been run by now
        assert files_table(index_dir) == before

        write_audio(parked / "while_away.wav", clip(9), SR)
        shutil.move(parked, folder)  # back, with a file more
        wait_until(lambda: any(e.kind == "resumed" for e in events), what="the root resumed")
        wait_until(lambda: str(folder / "while_away.wav") in files_table(index_dir), what="caught up")
        assert read_activity(index_dir).paused_roots == []
    assert set(before) < set(files_table(index_dir))


def test_an_emptied_mount_point_pauses(indexed, emb) -> None:
    folder, index_dir = indexed
    before = files_table(index_dir)
    with watching(index_dir, emb) as events:
        for path in folder.iterdir():
            path.unlink()
        wait_until(lambda: any(e.kind == "paused" for e in events), what="the root paused")
        time.sleep(SETTLE_S * 3)
        assert files_table(index_dir) == before


def _burst(folder: Path, n: int, distinct: int) -> None:
    staging = folder.parent / "staging"
    staging.mkdir()
    clips = [
        write_audio(staging / f"c{i:04d}.wav", clip(i, seconds=0.1), SR).read_bytes() for i in range(distinct)
    ]
    for i in range(n):
        (staging / f"b{i:04d}.wav").write_bytes(clips[i % distinct])
    for i in range(distinct):
        (staging / f"c{i:04d}.wav").unlink()
    os.rename(staging, folder / "burst")  # dropped at once


@pytest.mark.parametrize(
    ("distinct"),
    [
        25,
        pytest.param(2000, marks=pytest.mark.slow),
    ],  # slow: 2,000 embeddings, 353 s at load 15-20 on 2 cores
)
def test_a_burst_of_2000_files_is_a_few_commits(indexed, emb, distinct: int) -> None:
    folder, index_dir = indexed
    with watching(index_dir, emb) as events:
        first = generation(index_dir)
        _burst(folder, 2000, distinct)
        wait_until(
            lambda: sum(1 for p in files_table(index_dir) if "/burst/" in p) == 2000,
            timeout=FOLLOW_S + distinct * 0.2,
            what="the burst indexed",
        )
        wait_until(lambda: read_activity(index_dir).files_waiting == 0, what="nothing waiting")
    commits = generation(index_dir) - first
    assert 1 <= commits <= 2000 // 256 + 3, commits
    assert len(runs(events)) <= 3


def test_polling_follows_too(indexed, emb) -> None:
    folder, index_dir = indexed
    polling = WatchSettings(settle_s=SETTLE_S, max_wait_s=10.0, poll=True, poll_interval_s=0.2)
    with watching(index_dir, emb, settings=polling):
        write_audio(folder / "polled.wav", clip(11), SR)
        wait_until(lambda: str(folder / "polled.wav") in files_table(index_dir), what="a polled change")


@pytest.mark.parametrize("keep", [True, False])
def test_a_missing_root_is_kept_only_when_asked(indexed, emb, tmp_path: Path, keep: bool) -> None:
    folder, index_dir = indexed
    before = files_table(index_dir)
    folder.rename(tmp_path / "away")  # unmounted before the run
    index_paths([folder], index_dir, emb, keep_missing_roots=keep)
    # The watcher's runs keep it; a one-off run prunes a folder that is gone, as documented.
    assert files_table(index_dir) == (before if keep else {})


def test_a_root_vanishing_while_a_run_plans_changes_nothing(indexed, emb, tmp_path: Path) -> None:
    folder, index_dir = indexed
    before, first = files_table(index_dir), generation(index_dir)

    def unmount(event) -> None:  # noqa: ANN001
        if event.phase == "scan" and folder.exists():
            folder.rename(tmp_path / "away")

    with pytest.raises(RootVanishedError, match="vanished during the run; nothing of it was removed"):
        index_paths([folder], index_dir, emb, keep_missing_roots=True, progress=unmount)
    assert files_table(index_dir) == before and generation(index_dir) == first
