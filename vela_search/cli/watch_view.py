"""``vela-search index --watch``: follow the index's folders after the first pass, one line per thing done.

The watcher itself is :class:`vela_search.indexing.watch.IndexWatcher`; this module says on stderr what it
does (folders followed, a root paused or back, each run's counts) and turns Ctrl-C into the clean stop
every interrupted run has (exit 130, everything that landed committed).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from rich.markup import escape

from vela_search.cli.common import err_console
from vela_search.errors import RunInterrupted, VelaError

if TYPE_CHECKING:
    from vela_search.indexing import IndexOptions
    from vela_search.indexing.pipeline import EmbedderSource
    from vela_search.indexing.watch import WatchEvent, WatchSettings

__all__ = ["check_not_locked", "check_watch_flags", "describe_event", "watch_folders", "watch_settings"]


def watch_settings(settle: float, max_wait: float, poll: bool, poll_interval: float) -> WatchSettings:
    """The watcher's settings from the command-line flags, checked.

    Raises:
        VelaError: a negative or zero delay.
    """
    from vela_search.indexing.watch import WatchSettings

    settings = WatchSettings(settle_s=settle, max_wait_s=max_wait, poll=poll, poll_interval_s=poll_interval)
    settings.validate()
    return settings


def check_watch_flags(*, dry_run: bool, ray: bool, dataset: bool) -> None:
    """Refuse the flags that do not go with ``--watch``.

    Raises:
        VelaError: naming the flag.
    """
    for given, flag in ((dry_run, "--dry-run"), (ray, "--ray"), (dataset, "--dataset")):
        if given:
            raise VelaError(f"--watch follows folders in this process: it does not go with {flag}")


def check_not_locked(root: Path) -> None:
    """Refuse an index that another process writes, before any model loads.

    Raises:
        IndexLockedError: naming the writing process.
    """
    from vela_search.store.lock import WriterLock

    lock = WriterLock(root)
    lock.acquire()
    lock.release()


def describe_event(event: WatchEvent) -> str | None:
    """One line for a watcher event (None: nothing worth a line)."""
    roots = ", ".join(escape(r) for r in event.roots)
    if event.kind == "watching":
        return f"watching {len(event.roots)} folder(s): {roots}"
    if event.kind == "paused":
        return f"[yellow]paused[/] {roots}: {escape(event.message)}"
    if event.kind == "resumed":
        return f"[green]back[/] {roots}: catching up"
    if event.kind == "failed":
        return f"[red]run failed[/] ({roots}): {escape(event.message)}; retried with the next change"
    if event.kind == "run" and event.report is not None:
        r = event.report
        parts = [
            (r.files_indexed, "indexed"),
            (r.files_relinked, "moved"),
            (r.files_removed - r.files_relinked, "removed"),
            (r.files_duplicates, "duplicates"),
            (r.files_failed, "failed"),
            (len(r.held), "still being written"),
        ]
        counts = ", ".join(f"{n} {what}" for n, what in parts if n) or "no change"
        return f"{counts} (generation {r.generation}, {r.vectors} vectors, {r.seconds:.1f} s)"
    return None


def watch_folders(
    root: Path,
    paths: list[str],
    embedder: EmbedderSource,
    options: IndexOptions,
    settings: WatchSettings,
    *,
    decode_workers: int | None = None,
    on_event: Callable[[WatchEvent], None] | None = None,
) -> None:
    """Follow the folders of the index at ``root`` (and ``paths``) until Ctrl-C.

    Raises:
        RunInterrupted: on Ctrl-C (exit 130), after the run under way committed what landed.
        IndexLockedError: another process writes the index.
    """
    from vela_search.indexing.watch import IndexWatcher

    def say(event: WatchEvent) -> None:
        line = describe_event(event)
        if line is not None:
            err_console.print(line, highlight=False)
        if on_event is not None:
            on_event(event)

    watcher = IndexWatcher(
        root, embedder, options, settings=settings, paths=paths, on_event=say, decode_workers=decode_workers
    )
    err_console.print(
        f"following changes (a file is added once unchanged for {settings.settle_s:g} s"
        + (f", polling every {settings.poll_interval_s:g} s" if settings.poll else "")
        + "); Ctrl-C stops",
        highlight=False,
    )
    try:
        watcher.run(threading.Event())
    except KeyboardInterrupt:
        raise RunInterrupted(
            "stopped watching: every file that landed is saved; run the same command again to continue"
        ) from None
