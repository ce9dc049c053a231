"""SettlingPaths on real files with a test clock: a growing file waits, a removal does not, a stream of
changes still gets a batch by max_wait."""

from __future__ import annotations

from pathlib import Path

from vela_search.indexing.settle import SettlingPaths


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_growing_file_waits_until_its_size_stays_the_same(tmp_path: Path) -> None:
    clock = Clock()
    waiting = SettlingPaths(2.0, 30.0, clock=clock)
    path = tmp_path / "copying.wav"
    path.write_bytes(b"x" * 10)
    waiting.note([str(path)])
    assert waiting.check() == 1 and not waiting.due()
    clock.now += 1.5
    with open(path, "ab") as out:  # still being written
        out.write(b"y" * 10)
    assert waiting.check() == 1  # its size changed: the wait starts again
    clock.now += 1.9
    assert waiting.check() == 1 and not waiting.due()
    clock.now += 0.2
    assert waiting.check() == 0 and waiting.due()
    assert waiting.files_waiting == 1
    assert waiting.take() == [str(path)] and len(waiting) == 0 and not waiting.due()


def test_a_removal_needs_no_settling_but_the_folder_must_be_quiet(tmp_path: Path) -> None:
    clock = Clock()
    waiting = SettlingPaths(2.0, 30.0, clock=clock)
    waiting.note([str(tmp_path / "gone.wav")])
    assert waiting.check() == 0
    assert not waiting.due()  # an event just came: more may follow (a folder being deleted)
    clock.now += 2.0
    waiting.check()
    assert waiting.due()


def test_a_stream_of_changes_gets_a_batch_by_max_wait(tmp_path: Path) -> None:
    clock = Clock()
    waiting = SettlingPaths(2.0, 10.0, clock=clock)
    for i in range(12):  # a new file every second: never quiet for 2 s
        (tmp_path / f"f{i}.wav").write_bytes(b"z" * (i + 1))
        waiting.note([str(tmp_path / f"f{i}.wav")])
        waiting.check()
        if waiting.due():
            break
        clock.now += 1.0
    assert clock.now - 100.0 == 10.0  # due at max_wait, not before
    assert len(waiting.take()) == 11


def test_forgetting_a_vanished_root(tmp_path: Path) -> None:
    waiting = SettlingPaths(2.0, 30.0, clock=Clock())
    waiting.note([str(tmp_path / "a" / "x.wav"), str(tmp_path / "ab" / "y.wav"), str(tmp_path / "a")])
    waiting.drop_under(str(tmp_path / "a"))
    assert waiting.take() == [str(tmp_path / "ab" / "y.wav")]
