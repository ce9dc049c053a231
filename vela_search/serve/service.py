"""What the server holds: the served indexes, each on the latest generation it can answer, and their models.

The HTTP layer (:mod:`vela_search.serve.routes`) asks this module for a :class:`ServedIndex` by name and
awaits its searches; every search itself is :func:`vela_search.search.run_query`.

Each generation is served by its own immutable :class:`Generation` (a snapshot and the batcher of its
embedder): a request takes one and answers from it alone, so the ``generation`` of a response is the one
its hits came from. A commit is picked up by the first request that notices it (the others keep answering
from the current generation meanwhile, never waiting for that reload). A rebuild with another embedder
(model, adapter or demos) is followed once that embedder is loaded in the background; until then, or for
good when it cannot be loaded, the last generation the server can answer keeps answering and
``/api/indexes`` and ``/healthz`` say so.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vela_search.errors import QueryError, VelaError
from vela_search.search import CheckedQuery, Searcher, check_not_empty, run_query
from vela_search.search.hybrid import prepare_words
from vela_search.serve.batching import DEFAULT_MAX_BATCH, DEFAULT_WINDOW_S, QueryBatcher
from vela_search.serve.limits import DEFAULT_JSON_LIMIT
from vela_search.serve.models import Models
from vela_search.store import AudioIndex
from vela_search.store.activity import read_activity
from vela_search.store.layout import MANIFEST

if TYPE_CHECKING:
    import numpy as np

    from vela_search.embedding.embedder import VelaEmbedder
    from vela_search.indexing.watch import WatchSettings
    from vela_search.search import Hit
    from vela_search.serve.folder_watch import FolderWatchers

__all__ = ["Generation", "ServeSettings", "ServedIndex", "ServerBusyError", "Service", "UnknownIndexError"]

DEFAULT_MAX_QUEUE = 64


class UnknownIndexError(QueryError):
    """A request named an index the server does not serve."""


class ServerBusyError(VelaError):
    """The index already has as many requests waiting as the server admits (HTTP 503 with Retry-After)."""


@dataclass(frozen=True)
class ServeSettings:
    """How the server batches, limits and protects requests."""

    host: str = "127.0.0.1"
    port: int = 8000
    token: str | None = None
    batch_window_s: float = DEFAULT_WINDOW_S
    max_batch: int = DEFAULT_MAX_BATCH
    max_upload_bytes: int = 50_000_000
    max_json_bytes: int = DEFAULT_JSON_LIMIT
    max_upload_seconds: float = 600.0
    request_timeout_s: float = 30.0
    max_queue: int = DEFAULT_MAX_QUEUE
    device: str = "auto"
    access_log: bool = True
    # How often a background thread looks for a new generation and prepares it, so that requests find it
    # ready (None: only requests look, and the one that notices a commit prepares it).
    refresh_interval_s: float | None = 0.5
    # `serve --watch`: each index follows its folders in this process (None: the indexes are only read).
    watch: WatchSettings | None = None


@dataclass(frozen=True)
class Generation:
    """One generation as served: its snapshot's searcher and its embedder's batcher (None: no model)."""

    searcher: Searcher
    batcher: QueryBatcher | None

    @property
    def number(self) -> int:
        return self.searcher.index.generation

    def file_row(self, path: str) -> dict | None:
        """The files-table row recorded for ``path`` at indexing (size, mtime, root), or None."""
        import pyarrow.compute as pc

        files = self.searcher.index.files()
        if files.num_rows == 0:
            return None
        rows = files.filter(pc.equal(files["path"], path)).to_pylist()
        return rows[-1] if rows else None


class ServedIndex:
    """One index, served on the latest generation it can answer (see the module's docstring).

    Args:
        name: the name requests use.
        root: the index directory.
        models: the server's embedders.
        first: the generation open at start-up.
        grace_s: how long a replaced generation stays open for the requests still using it.
    """

    def __init__(self, name: str, root: Path, models: Models, first: Generation, *, grace_s: float) -> None:
        self.name = name
        self.root = Path(root)
        self.models = models
        self.current = first
        self.note: str | None = None  # why the served generation is not the latest, when it is not
        self.waiting = 0  # requests admitted and not yet answered
        self._grace_s = grace_s
        self._manifest_key = _stat_key(self.root / MANIFEST)
        self._reload = threading.Lock()
        self._pending: threading.Event | None = None  # the model load the latest generation waits for
        self._stop_watching = threading.Event()
        self._watcher: threading.Thread | None = None

    def watch(self, interval_s: float) -> None:
        """Prepare new generations off the request path: a daemon thread calls :meth:`refresh` every
        ``interval_s`` seconds, so a commit's snapshot (and a rebuild's embedder load) is usually ready
        before a request asks; a request never waits for it (see :meth:`refresh`).
        """
        if self._watcher is not None:
            return

        def loop() -> None:
            while not self._stop_watching.wait(interval_s):
                try:
                    self.refresh()
                    prepare_words(self.current.searcher.index)  # a delta of the words index, if one was built
                except Exception:  # a damaged commit: the requests' own refresh reports it
                    continue

        self._watcher = threading.Thread(target=loop, name=f"vela-refresh-{self.name}", daemon=True)
        self._watcher.start()

    def stop_watching(self) -> None:
        """Stop the background refresh (waits for a refresh under way to end)."""
        self._stop_watching.set()
        if self._watcher is not None:
            self._watcher.join()
            self._watcher = None

    @property
    def searcher(self) -> Searcher:
        """The searcher of the served generation."""
        return self.current.searcher

    @property
    def batcher(self) -> QueryBatcher | None:
        """The batcher of the served generation's embedder (None: it needs no model)."""
        return self.current.batcher

    def refresh(self) -> Generation:
        """The generation to answer from: the latest one when it can be served now.

        A commit replaces ``manifest.json`` by an atomic rename, so a changed inode or mtime is a new
        generation. Only the request that notices it opens the new snapshot; requests meanwhile answer from
        the current generation rather than wait.
        """
        key = _stat_key(self.root / MANIFEST)
        if key == self._manifest_key or not self._reload.acquire(blocking=False):
            return self.current
        try:
            key = _stat_key(self.root / MANIFEST)
            if key != self._manifest_key:
                self._advance()
                self._manifest_key = key
        finally:
            self._reload.release()
        return self.current

    def _advance(self) -> None:
        # Only what the new manifest adds is read; open shards, codes and tables are shared.
        latest = self.current.searcher.index.refreshed()
        if latest is self.current.searcher.index:
            return
        batcher = self.models.ready(latest) if latest.num_vectors else None
        if batcher is None and latest.num_vectors:
            failure = self.models.failure(latest)
            if failure is None:
                self.models.load_later(self.root, latest, self._loaded)
                self._pending = self.models.loading(latest)
                self.note = f"loading the embedder of generation {latest.generation}; serving generation "
            else:
                self.note = (
                    f"generation {latest.generation} needs an embedder this server cannot load ({failure}); "
                    "serving generation "
                )
            self.note += f"{self.current.number} until then"
            latest.close()
            return
        self._switch(Generation(Searcher(latest, batcher.embedder if batcher else None), batcher))
        self.note = None

    def _loaded(self) -> None:
        """After a background load: look at the manifest again (the new embedder may now be ready)."""
        with self._reload:
            self._manifest_key = None
        self.refresh()

    def _switch(self, new: Generation) -> None:
        old, self.current = self.current, new
        # Requests that took the old generation may still be searching it: close it once they are done.
        timer = threading.Timer(self._grace_s, old.searcher.close)
        timer.daemon = True
        timer.start()

    def loading(self) -> threading.Event | None:
        """An event set when the model load the latest generation waits for ends (None: none runs)."""
        pending = self._pending
        return pending if pending is not None and not pending.is_set() else None

    def search(
        self,
        generation: Generation,
        query: CheckedQuery,
        vector: np.ndarray | None = None,
        clip: np.ndarray | None = None,
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> list[Hit]:
        """Run a query checked where it entered on ``generation`` (blocking: call it from a worker thread).

        A re-ranking request's judge forwards run on the batcher's model thread (``loop`` is the event
        loop it belongs to), between embedding batches, never beside them.
        """
        on_model_thread = None
        batcher = generation.batcher
        if query.request.rerank and batcher is not None and loop is not None:

            def on_model_thread(work):  # type: ignore[no-untyped-def]
                return asyncio.run_coroutine_threadsafe(batcher.run_on_model_thread(work), loop).result()

        searcher = generation.searcher
        return run_query(searcher, query, vector=vector, clip=clip, on_model_thread=on_model_thread)

    def info(self) -> dict[str, Any]:
        """Counts, embedder and generation (for /api/indexes and the page's summary)."""
        generation = self.refresh()
        index = generation.searcher.index
        files = index.files()
        statuses = files["status"].to_pylist() if files.num_rows else []
        return {
            "name": self.name,
            "path": str(self.root.resolve()),
            "generation": index.generation,
            "vectors": index.num_vectors,
            "files": sum(1 for s in statuses if s != "failed"),
            "failed_files": sum(1 for s in statuses if s == "failed"),
            "shards": index.num_shards,
            "dim": index.dim,
            "embedder": dict(index.fingerprint),
            "notice": generation.searcher.notice,
            "behind": self.note,
            "activity": read_activity(self.root).to_json(),
        }


def _stat_key(path: Path) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_ino, st.st_mtime_ns)


class Service:
    """The served indexes, in order (the first is the default), and one embedder per distinct model.

    Build it with :meth:`open`; it is shared by every request of the app.
    """

    def __init__(self, indexes: list[ServedIndex], settings: ServeSettings, models: Models) -> None:
        if not indexes:
            raise ValueError("a service needs at least one index")
        self.indexes = {i.name: i for i in indexes}
        self.settings = settings
        self.models = models
        self.started = time.time()
        # The folder watchers of `serve --watch` (see serve/folder_watch.py), stopped before the models.
        self.watchers: FolderWatchers | None = None

    @classmethod
    def open(
        cls,
        roots: list[tuple[str, Path]],
        settings: ServeSettings,
        *,
        embedders: dict[str, VelaEmbedder] | None = None,
    ) -> Service:
        """Open each ``(name, root)`` and load the embedder it records (once per distinct embedder).

        An empty index is served (searches say it is empty) and loads its model once a commit adds
        vectors.

        Raises:
            IndexNotFoundError, ModelLoadError, FingerprintMismatchError: as ``Searcher.open``.
        """
        models = Models(
            device=settings.device,
            window_s=settings.batch_window_s,
            max_batch=settings.max_batch,
            embedders=embedders,
        )
        served = []
        for name, root in roots:
            index = AudioIndex.open(root)
            batcher = models.load_now(index) if index.num_vectors else None
            first = Generation(Searcher(index, batcher.embedder if batcher else None), batcher)
            grace = settings.request_timeout_s + 5
            served.append(ServedIndex(name, Path(root), models, first, grace_s=grace))
        if settings.refresh_interval_s is not None:
            for index in served:
                index.watch(settings.refresh_interval_s)
        return cls(served, settings, models)

    def get(self, name: str | None) -> ServedIndex:
        """The index served as ``name`` (None: the first).

        Raises:
            UnknownIndexError: no index of that name.
        """
        if name is None:
            return next(iter(self.indexes.values()))
        try:
            return self.indexes[name]
        except KeyError:
            served = ", ".join(self.indexes)
            raise UnknownIndexError(f"unknown index {name!r}; this server serves: {served}") from None

    async def search(
        self, served: ServedIndex, query: CheckedQuery, clip: np.ndarray | None = None
    ) -> tuple[Generation, list[Hit]]:
        """Answer ``query`` (checked by the route it came in by) within the server's time limit: the
        generation answering and its hits.

        Raises:
            ServerBusyError: the index has ``max_queue`` requests waiting already.
        """
        if served.waiting >= self.settings.max_queue:
            raise ServerBusyError(
                f"index {served.name} has {served.waiting} requests waiting, the most this server admits; "
                "retry shortly"
            )
        served.waiting += 1
        try:
            deadline = asyncio.get_running_loop().time() + self.settings.request_timeout_s
            return await self._search(served, query, clip, deadline)
        finally:
            served.waiting -= 1

    async def _search(
        self, served: ServedIndex, query: CheckedQuery, clip: np.ndarray | None, deadline: float
    ) -> tuple[Generation, list[Hit]]:
        loop = asyncio.get_running_loop()
        request = query.request
        generation = await asyncio.to_thread(served.refresh)
        vector = None
        if request.needs_model:
            pending = served.loading() if generation.batcher is None else None
            if pending is not None:  # nothing older can answer (the index was empty): wait for the model
                await asyncio.to_thread(pending.wait, max(0.0, deadline - loop.time()))
                generation = await asyncio.to_thread(served.refresh)
            check_not_empty(generation.searcher.index)
            if generation.batcher is None:
                raise QueryError(f"index {served.name}: {served.note or 'no model is loaded for it'}")
            item = request.embed_item(clip)
            vector = await generation.batcher.embed(item, timeout_s=max(0.0, deadline - loop.time()))
        hits = await asyncio.to_thread(served.search, generation, query, vector, clip, loop)
        return generation, hits

    async def warm_up(self) -> None:
        """Compute each model's demo prefix before the first request (so it does not pay for it)."""
        for batcher in self.models.batchers():
            await batcher.run_on_model_thread(
                lambda e=batcher.embedder: e.prefix_length and e.embed_text(["warm up"])
            )

    async def close(self) -> None:
        """Stop the folder watchers, the batchers, and close the index snapshots."""
        if self.watchers is not None:
            await asyncio.to_thread(self.watchers.stop)
        for batcher in self.models.batchers():
            await batcher.close()
        for served in self.indexes.values():
            served.stop_watching()
            served.searcher.close()
