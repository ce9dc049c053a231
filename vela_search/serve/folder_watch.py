"""``serve --watch``: each served index follows its folders in a thread of the server process.

Each index gets an :class:`~vela_search.indexing.watch.IndexWatcher` holding its writer lock (taken before
the server starts, so a running ``index`` is refused at once). The watcher embeds with the model the
server already holds for queries: its forwards run on that model's thread, one chunk at a time between
query batches (:class:`ModelThreadEmbedder`), so one copy of the model serves both and a query waits at
most one chunk. The server's background refresh then serves each new generation as it is committed.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vela_search.indexing.watch import IndexWatcher, WatchEvent, WatchSettings

if TYPE_CHECKING:
    import numpy as np

    from vela_search.embedding.embedder import EmbedItem
    from vela_search.serve.batching import QueryBatcher
    from vela_search.serve.models import Models

__all__ = ["FolderWatchers", "ModelThreadEmbedder"]

# How long a stopping server waits for a watcher's run to end at its next file.
_STOP_WAIT_S = 60.0


class ModelThreadEmbedder:
    """The embedder of a server's batcher, with every forward run on the batcher's model thread."""

    def __init__(self, batcher: QueryBatcher) -> None:
        self._batcher = batcher
        self._embedder = batcher.embedder

    def embed_items(self, items: list[EmbedItem]) -> list[np.ndarray]:
        """Embed ``items`` on the model thread (between query batches)."""
        return self._batcher.run_blocking(self._embedder.embed_items, items)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._embedder, name)


class FolderWatchers:
    """One watcher thread per served index; :meth:`start` takes every writer lock first.

    Args:
        roots: ``(name, directory)`` of each served index.
        models: the server's models (the watchers embed with them).
        settings: the watchers' waits and polling.
        on_event: called with ``(index name, event)`` from the watcher threads.
    """

    def __init__(
        self,
        roots: list[tuple[str, Path]],
        models: Models,
        settings: WatchSettings,
        on_event: Callable[[str, WatchEvent], None] | None = None,
    ) -> None:
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._watchers = [
            (
                name,
                IndexWatcher(root, self._loader(root, models), settings=settings, on_event=self._say(name)),
            )
            for name, root in roots
        ]
        self._on_event = on_event or (lambda name, event: None)
        self.failures: dict[str, BaseException] = {}

    def _say(self, name: str) -> Callable[[WatchEvent], None]:
        return lambda event: self._on_event(name, event)

    @staticmethod
    def _loader(root: Path, models: Models) -> Callable[[], ModelThreadEmbedder]:
        def load() -> ModelThreadEmbedder:
            from vela_search.store import AudioIndex

            with AudioIndex.open(root, shards=False) as index:
                return ModelThreadEmbedder(models.load_now(index))

        return load

    def start(self) -> None:
        """Take every index's writer lock, then follow the folders in daemon threads.

        Raises:
            IndexLockedError: another process writes one of the indexes (no watcher is left running).
        """
        try:
            for _name, watcher in self._watchers:
                watcher.hold()
        except BaseException:
            self.stop()
            raise
        for name, watcher in self._watchers:
            thread = threading.Thread(target=self._run, args=(name, watcher), name=f"vela-watch-{name}")
            thread.daemon = True
            thread.start()
            self._threads.append(thread)

    def _run(self, name: str, watcher: IndexWatcher) -> None:
        try:
            watcher.run(self._stop)
        except Exception as exc:  # reported; the server keeps answering from what is committed
            self.failures[name] = exc
            self._on_event(name, WatchEvent("failed", message=f"stopped watching: {exc}"))

    def stop(self) -> None:
        """Stop every watcher (a run under way ends at its next file) and release the locks."""
        self._stop.set()
        for thread in self._threads:
            thread.join(_STOP_WAIT_S)
        self._threads.clear()
        for _name, watcher in self._watchers:
            watcher.release()
