"""`vela-search index --watch` as a user runs it: the first pass, a file added while it watches, Ctrl-C
(exit 130, the lock let go), and the flags it refuses."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from audio_factory import tone, write_audio
from cli_in_process import vela
from indexing.helpers import SR, files_table, small_collection

from vela_search.cli.watch_view import describe_event
from vela_search.indexing import IndexReport
from vela_search.indexing.watch import WatchEvent
from vela_search.store.lock import WriterLock

SCRIPT = Path(sys.executable).with_name("vela-search")
TINY = ("--model", "tiny", "--demos", "none")


def _read_until(proc: subprocess.Popen, text: str, seen: list[str], timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while not any(text in line for line in seen):
        assert time.monotonic() < deadline, f"timed out waiting for {text!r}: {seen}"
        line = proc.stderr.readline()
        if not line:
            proc.wait(timeout=10)
            raise AssertionError(f"the watcher ended ({proc.returncode}) before {text!r}: {''.join(seen)}")
        seen.append(line)


def test_index_watch_adds_a_new_file_and_ctrl_c_exits_130(tiny_model_dir, tmp_path: Path) -> None:
    audio, idx = tmp_path / "audio", tmp_path / "idx"
    small_collection(audio, 2)
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen(
        [str(SCRIPT), "index", str(audio), "--index", str(idx), *TINY, "--watch", "--settle", "0.5"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    seen: list[str] = []
    try:
        _read_until(proc, "watching 1 folder", seen)
        write_audio(audio / "arrived.wav", tone(1.0, SR, freq=990.0), SR)
        _read_until(proc, "1 indexed", seen)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, "".join(seen) + err
    assert "Traceback" not in out + err
    assert err.strip().splitlines()[-1].startswith("stopped watching: every file that landed is saved")
    assert str(audio / "arrived.wav") in files_table(idx)
    WriterLock(idx).acquire()  # let go


def test_flags_that_do_not_go_with_watch_are_refused(tmp_path: Path) -> None:
    for extra, flag in ((("--dry-run",), "--dry-run"), (("--ray",), "--ray")):
        result = vela("index", str(tmp_path), "--index", str(tmp_path / "idx"), "--watch", *extra)
        assert result.returncode == 1 and f"does not go with {flag}" in result.stderr, result.stderr
    result = vela("index", str(tmp_path), "--index", str(tmp_path / "idx"), "--watch", "--settle", "-1")
    assert result.returncode == 1 and "--settle must be >= 0" in result.stderr, result.stderr
    result = vela("serve", "--index", str(tmp_path / "idx"), "--watch", "--settle", "5", "--max-wait", "1")
    assert result.returncode == 1 and "--max-wait (1 s) must be at least --settle" in result.stderr


def test_each_event_is_one_readable_line() -> None:
    report = IndexReport(index_dir="idx", files_indexed=2, files_removed=1, files_relinked=1, generation=7)
    report.held = ["/a/copying.wav"]
    line = describe_event(WatchEvent("run", ["/a"], report=report))
    assert line is not None and line.startswith("2 indexed, 1 moved, 1 still being written (generation 7")
    assert "removed" not in line  # the moved file's old path is not counted as removed
    paused = describe_event(WatchEvent("paused", ["/mnt/[nas]"], message="missing"))
    assert paused is not None and "/mnt/\\[nas]" in paused  # markup in a path is shown as text
    assert describe_event(WatchEvent("stopped")) is None


def test_watching_a_path_that_never_existed_is_refused_and_a_recorded_missing_one_is_not(
    tmp_path: Path,
) -> None:
    from vela_search.cli.index_cmd import _check_watch_paths
    from vela_search.store import AudioIndex

    root, drive = tmp_path / "idx", str(tmp_path / "unmounted")
    AudioIndex.create(root, fingerprint={"model": "m"}, dim=4).close()
    row = {"path": f"{drive}/a.wav", "size": 1, "mtime_ns": 1, "sha256": "ab", "duration_s": 1.0}
    with AudioIndex.open(root, shards=False).writer(fingerprint={"model": "m"}) as writer:
        writer.put_files([dict(row, status="indexed", segments=1, root=drive)])
        writer.commit()
    typo = str(tmp_path / "sounds-typo")
    result = vela("index", typo, "--index", str(root), "--watch")
    assert result.returncode == 1, result.stderr
    assert f"{typo} does not exist, and the index holds no files from it" in result.stderr
    _check_watch_paths(root, [drive, f"{drive}/sub"])  # an unmounted drive the index knows: paused later
