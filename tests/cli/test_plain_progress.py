"""The plain progress line of logs and CI: its content, and that it comes at the set interval."""

from __future__ import annotations

import io
import time

from vela_search.cli.plain_progress import PlainProgress, progress_interval, use_plain_progress


def test_line_says_what_is_done_the_rate_and_the_time_left():
    lines = PlainProgress(interval_s=60)
    lines.update("embedding", 0, 100, "segments")
    time.sleep(0.05)
    lines.update("embedding", 50, 100, "segments", "3/6 files")
    text = lines.line()
    assert text.startswith("embedding: 50/100 segments (50%), ") and "segments/s" in text
    assert " left, " in text and text.endswith("elapsed; 3/6 files")
    lines.update("loading the model")
    assert lines.line() == "loading the model: 0:00 elapsed"


def test_lines_come_at_the_interval_from_a_thread():
    out = io.StringIO()
    with PlainProgress(interval_s=0.05, stream=out) as lines:
        lines.update("hashing new files", 1, 4, "files")
        time.sleep(0.5)  # ~10 intervals: a loaded machine still gives a few
    printed = out.getvalue().splitlines()
    assert len(printed) >= 3 and all(line.startswith("hashing new files: 1/4 files") for line in printed)


def test_interval_setting_and_terminal_detection(monkeypatch):
    monkeypatch.setenv("VELA_PROGRESS_INTERVAL", "2.5")
    assert progress_interval() == 2.5
    monkeypatch.setenv("VELA_PROGRESS_INTERVAL", "soon")
    assert progress_interval() == 30.0
    assert use_plain_progress(io.StringIO())


def test_benchmark_phases_print_plain_lines_in_a_log(monkeypatch, capsys):
    from vela_search.cli.bench_common import phase_progress

    monkeypatch.setenv("VELA_PROGRESS_INTERVAL", "0.1")  # stderr under capsys is not a terminal
    with phase_progress({"build": ("indexing vectors", 100)}) as advance:
        advance("build", 40, 100)
        time.sleep(0.5)
    lines = [line for line in capsys.readouterr().err.splitlines() if line]
    assert lines and all(line.startswith("indexing vectors: 40/100 items (40%)") for line in lines), lines
