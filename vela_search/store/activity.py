"""What a running writer is doing now: files waiting to be added, background maintenance, last catch-up.

A writer (an `index` run, `index --watch`, `serve --watch`, a background merge or re-training) records its
state in `<index>/activity.json` so that `info`, `/api/indexes` and the page can say "N files being added"
or "re-training codes". The file is advisory, never data: it is written atomically, names the writer's pid
and host, and a reader treats it as stale (nothing pending) once that process is gone or it has not been
refreshed within `STALE_AFTER_S`, so a killed writer never leaves a false "pending" behind. The last
catch-up time survives the writer: it is when the index last matched its folders.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .fsio import write_json
from .layout import ACTIVITY_FILE

# A live writer refreshes its record at least this often while work is pending (see `ActivityRecorder`).
STALE_AFTER_S = 120.0


@dataclass(frozen=True)
class Activity:
    """A writer's pending work as last recorded.

    Attributes:
        files_waiting: files seen but not yet committed (new, changed, or waiting to be stable).
        maintenance: background tasks pending or running, e.g. ["merge", "retrain"].
        paused_roots: recorded roots that are missing or unmounted (watched, nothing deleted).
        caught_up_at: UNIX time when the index last matched its folders, or None if never recorded.
        updated_at: UNIX time of this record.
        pid: the writer's process id; host: its hostname.
        live: whether the writer is still running (computed on read; False for a stale record).
    """

    files_waiting: int = 0
    maintenance: list[str] = field(default_factory=list)
    paused_roots: list[str] = field(default_factory=list)
    caught_up_at: float | None = None
    updated_at: float = 0.0
    pid: int = 0
    host: str = ""
    live: bool = False

    @property
    def pending(self) -> bool:
        """Whether a live writer has work pending."""
        return self.live and bool(self.files_waiting or self.maintenance)

    def to_json(self) -> dict:
        """The record as JSON-ready fields, with `pending` added."""
        return {**asdict(self), "pending": self.pending}


def _process_alive(pid: int, host: str) -> bool:
    if host != socket.gethostname():
        return True  # another machine's writer (shared storage): trust its refresh time instead
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def read_activity(index_root: Path, *, now: float | None = None) -> Activity:
    """The index's recorded activity; a record whose writer is gone or silent reads as not live.

    Args:
        index_root: the index directory.
        now: the current time (for tests); defaults to `time.time()`.

    Returns:
        The `Activity`; an empty one when nothing was recorded or the record cannot be read.
    """
    path = Path(index_root) / ACTIVITY_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return Activity()
    known = {k: data[k] for k in Activity.__dataclass_fields__ if k in data and k != "live"}
    try:
        record = Activity(**known)
    except TypeError:
        return Activity()
    now = time.time() if now is None else now
    live = (now - record.updated_at) < STALE_AFTER_S and _process_alive(record.pid, record.host)
    return Activity(**{**asdict(record), "live": live})


class ActivityRecorder:
    """Keeps one writer's `activity.json` current; thread-safe, one instance per writing process.

    Call `update(...)` with the fields that changed; unchanged fields keep their last value. Writes are
    atomic; a failure to write (read-only media) is ignored because the record is advisory.
    """

    def __init__(self, index_root: Path) -> None:
        self._root = Path(index_root)
        self._lock = threading.Lock()
        previous = read_activity(self._root)
        self._state = Activity(caught_up_at=previous.caught_up_at)

    @property
    def state(self) -> Activity:
        """The record as last written by this recorder."""
        with self._lock:
            return self._state

    def update(
        self,
        *,
        files_waiting: int | None = None,
        maintenance: list[str] | None = None,
        paused_roots: list[str] | None = None,
        caught_up: bool = False,
    ) -> Activity:
        """Record the given fields (None leaves a field as it was); `caught_up=True` stamps the time now.

        Returns:
            The record as written.
        """
        with self._lock:
            changes: dict = {"updated_at": time.time(), "pid": os.getpid(), "host": socket.gethostname()}
            if files_waiting is not None:
                changes["files_waiting"] = int(files_waiting)
            if maintenance is not None:
                changes["maintenance"] = list(maintenance)
            if paused_roots is not None:
                changes["paused_roots"] = list(paused_roots)
            if caught_up:
                changes["caught_up_at"] = changes["updated_at"]
            self._state = Activity(**{**asdict(self._state), **changes, "live": True})
            with contextlib.suppress(OSError):
                record = {k: v for k, v in asdict(self._state).items() if k != "live"}
                write_json(self._root / ACTIVITY_FILE, record)
            return self._state

    def add_maintenance(self, task: str) -> None:
        """Mark background task `task` (e.g. "merge", "retrain") as pending or running."""
        with self._lock:
            tasks = [t for t in self._state.maintenance if t != task] + [task]
        self.update(maintenance=tasks)

    def finish_maintenance(self, task: str) -> None:
        """Mark background task `task` as done."""
        with self._lock:
            tasks = [t for t in self._state.maintenance if t != task]
        self.update(maintenance=tasks)


_SHARED: dict[str, ActivityRecorder] = {}
_SHARED_LOCK = threading.Lock()


def shared_recorder(index_root: Path) -> ActivityRecorder:
    """The one `ActivityRecorder` of `index_root` in this process, created on first use.

    Every part of a process that records activity (a folder watcher, a writer's background maintenance)
    takes this one, so that one part's update never overwrites another's fields with stale values.
    """
    key = os.path.realpath(index_root)
    with _SHARED_LOCK:
        recorder = _SHARED.get(key)
        if recorder is None:
            recorder = _SHARED[key] = ActivityRecorder(Path(index_root))
        return recorder
