"""Waiting for changed files to settle: a path is ready once its size and mtime have stopped changing.

A folder watcher learns *that* something changed, not whether the writer is done: a file being copied
grows for seconds or minutes and fires event after event. :class:`SettlingPaths` keeps every path an
event named, looks at it again on each :meth:`~SettlingPaths.check`, and calls it settled once its
``(size, mtime)`` has stayed the same for ``settle_s`` seconds, or once it is gone (a removal needs no
wait). A batch is due when nothing it knows of is still settling and no event came for ``settle_s``, so a
burst of thousands of copied files becomes one run; a stream that never pauses still gets a run every
``max_wait_s`` (the files still being written are left for the next one by the planner's own
``settle_s`` rule).
"""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

__all__ = ["SettlingPaths"]


@dataclass
class _Seen:
    """What a path looked like when last checked, and since when it has looked so."""

    key: tuple[int, int] | None  # (size, mtime_ns); None: gone
    since: float
    is_dir: bool = False


class SettlingPaths:
    """Paths named by events, until they have settled and a batch takes them.

    Args:
        settle_s: how long a path's size and mtime must stay the same (and how long the folders must stay
            quiet) before a batch is due.
        max_wait_s: a batch is due at the latest this long after the oldest waiting event, settled or not.
        clock: monotonic seconds (tests pass their own).
    """

    def __init__(
        self, settle_s: float, max_wait_s: float, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.settle_s = float(settle_s)
        self.max_wait_s = float(max_wait_s)
        self._clock = clock
        self._seen: dict[str, _Seen | None] = {}  # None: named by an event, not checked yet
        self._first_event: float | None = None
        self._last_event: float | None = None

    def __len__(self) -> int:
        return len(self._seen)

    def note(self, paths: Iterable[str]) -> None:
        """Paths that an event named (created, modified, moved or deleted): each waits to settle again."""
        now = self._clock()
        for path in paths:
            self._seen[path] = None
            self._first_event = now if self._first_event is None else self._first_event
            self._last_event = now

    def check(self) -> int:
        """Look at every waiting path again; returns how many are still settling."""
        now = self._clock()
        unsettled = 0
        for path, seen in self._seen.items():
            key, is_dir = _stat_key(path)
            if seen is None or seen.key != key:
                self._seen[path] = seen = _Seen(key, now, is_dir)
            if seen.key is not None and now - seen.since < self.settle_s:
                unsettled += 1
        return unsettled

    @property
    def files_waiting(self) -> int:
        """Waiting paths that are not folders (what "N files being added" counts)."""
        return sum(1 for seen in self._seen.values() if seen is None or not seen.is_dir)

    def due(self) -> bool:
        """Whether a batch should run now: events are waiting and all settled and quiet, or the oldest has
        waited ``max_wait_s``. Call :meth:`check` first."""
        if not self._seen or self._first_event is None or self._last_event is None:
            return False
        now = self._clock()
        if now - self._first_event >= self.max_wait_s:
            return True
        quiet = now - self._last_event >= self.settle_s
        settled = all(
            seen is not None and (seen.key is None or now - seen.since >= self.settle_s)
            for seen in self._seen.values()
        )
        return quiet and settled

    def take(self) -> list[str]:
        """Every waiting path, for the batch about to run (they stop waiting)."""
        paths = list(self._seen)
        self._seen.clear()
        self._first_event = self._last_event = None
        return paths

    def drop_under(self, root: str) -> None:
        """Forget the paths under ``root`` (a root that vanished: its events mean nothing now)."""
        prefix = root.rstrip(os.sep) + os.sep
        for path in [p for p in self._seen if p == root or p.startswith(prefix)]:
            del self._seen[path]
        if not self._seen:
            self._first_event = self._last_event = None


def _stat_key(path: str) -> tuple[tuple[int, int] | None, bool]:
    try:
        st = os.stat(path)
    except OSError:
        return None, False
    return (int(st.st_size), int(st.st_mtime_ns)), stat.S_ISDIR(st.st_mode)
