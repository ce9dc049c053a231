"""What ``vela-search info`` says about a running writer: files being added, maintenance, paused folders.

The record is the advisory ``activity.json`` (see :mod:`vela_search.store.activity`); a record whose writer
is gone reads as "nothing pending", and only the last catch-up time is kept from it.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime

from vela_search.store.activity import Activity

__all__ = ["activity_lines"]


def _ago(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s ago"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min ago"
    if seconds < 172_800:
        return f"{seconds / 3600:.0f} h ago"
    return f"{seconds / 86_400:.0f} days ago"


def activity_lines(activity: Activity, *, now: float | None = None) -> list[tuple[str, str]]:
    """``(what, text)`` rows describing ``activity``: pending work, paused folders, last catch-up."""
    now = time.time() if now is None else now
    rows: list[tuple[str, str]] = []
    if activity.live:
        pending = []
        if activity.files_waiting:
            pending.append(f"{activity.files_waiting} files being added")
        if activity.maintenance:
            pending.append("maintenance: " + ", ".join(activity.maintenance))
        rows.append(
            ("pending", "; ".join(pending) or f"nothing (a writer, pid {activity.pid}, is following)")
        )
        if activity.paused_roots:
            rows.append(("paused folders", ", ".join(activity.paused_roots) + " (missing: nothing removed)"))
    else:
        rows.append(("pending", "nothing (no writer running)"))
    if activity.caught_up_at is None:
        rows.append(("last caught up", "not recorded (never watched)"))
    else:
        when = datetime.fromtimestamp(activity.caught_up_at, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        rows.append(("last caught up", f"{when} ({_ago(max(0.0, now - activity.caught_up_at))})"))
    return rows
