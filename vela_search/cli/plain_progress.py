"""Progress for logs and CI: a plain line on stderr at a steady interval when stderr is not a terminal.

Rich's bars redraw one line in place, which a log file or a CI console cannot show: a long ``index`` or
``train`` under ``> log 2>&1`` printed nothing for half an hour. :class:`PlainProgress` prints instead, every
``$VELA_PROGRESS_INTERVAL`` seconds (default 30), one line with what is done, the rate and the time left,
e.g. ``embedding: 1200/5000 segments (24%), 8.3 segments/s, 7:38 left``. A background thread prints it,
so that a line comes even while one step (a model load, a long training step) takes longer than the
interval. :func:`use_plain_progress` says which of the two a command should show.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from typing import TextIO

__all__ = ["INTERVAL_ENV", "PlainProgress", "progress_interval", "use_plain_progress"]

INTERVAL_ENV = "VELA_PROGRESS_INTERVAL"
DEFAULT_INTERVAL_S = 30.0


def progress_interval() -> float:
    """Seconds between plain progress lines: ``$VELA_PROGRESS_INTERVAL``, else 30 (at least 0.1)."""
    try:
        return max(0.1, float(os.environ.get(INTERVAL_ENV) or DEFAULT_INTERVAL_S))
    except ValueError:
        return DEFAULT_INTERVAL_S


def use_plain_progress(stream: TextIO | None = None) -> bool:
    """Whether progress should be plain lines: the stream (stderr by default) is not a terminal."""
    stream = stream if stream is not None else sys.stderr
    try:
        return not stream.isatty()
    except (AttributeError, ValueError):
        return True


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


class PlainProgress:
    """A progress line printed at a steady interval from a background thread.

    Use as a context manager; feed it with :meth:`update` (cheap: it only stores the numbers).

    Args:
        interval_s: seconds between lines (default :func:`progress_interval`).
        stream: where lines go (default stderr, looked up when printing).
    """

    def __init__(self, *, interval_s: float | None = None, stream: TextIO | None = None) -> None:
        self.interval_s = interval_s if interval_s is not None else progress_interval()
        self._stream = stream
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._started = time.monotonic()
        self._stage = "starting"
        self._stage_started = self._started
        self._stage_base = 0.0
        self._done = 0.0
        self._total: float | None = None
        self._unit = ""
        self._extra = ""

    def __enter__(self) -> PlainProgress:
        self._thread = threading.Thread(target=self._loop, name="vela-progress", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def update(
        self, stage: str, done: float = 0, total: float | None = None, unit: str = "", extra: str = ""
    ) -> None:
        """The state now: ``stage`` (a new one restarts the rate), ``done`` of ``total`` ``unit``."""
        with self._lock:
            if stage != self._stage:
                self._stage, self._stage_started, self._stage_base = stage, time.monotonic(), float(done)
            self._done, self._total, self._unit, self._extra = float(done), total, unit, extra

    def line(self) -> str:
        """The line that would be printed now."""
        with self._lock:
            stage, done, total, unit, extra = self._stage, self._done, self._total, self._unit, self._extra
            elapsed = time.monotonic() - self._stage_started
            rate = (done - self._stage_base) / elapsed if elapsed > 0 else 0.0
        parts = []
        if unit:
            count = (
                f"{done:.0f}/{total:.0f} {unit} ({100 * done / total:.0f}%)"
                if total
                else f"{done:.0f} {unit}"
            )
            parts += [count, f"{rate:.1f} {unit}/s"]
            if total and rate > 0:
                parts.append(f"{_clock(max(0.0, total - done) / rate)} left")
        parts.append(f"{_clock(time.monotonic() - self._started)} elapsed")
        text = f"{stage}: " + ", ".join(parts)
        return text + (f"; {extra}" if extra else "")

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            stream = self._stream if self._stream is not None else sys.stderr
            try:
                stream.write(self.line() + "\n")
                stream.flush()
            except (OSError, ValueError):  # a closed log: stop printing, never fail the run
                return
