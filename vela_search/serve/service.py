"""What the server holds: the served indexes (kept on their latest generation) and one model per embedder.

The HTTP layer (:mod:`vela_search.serve.app`) asks this module for a :class:`ServedIndex` by name and
awaits its searches; every search itself is :func:`vela_search.search.run_query`.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vela_search.errors import QueryError
from vela_search.search import QueryRequest, Searcher, check_not_empty, load_index_embedder, run_query
from vela_search.serve.batching import DEFAULT_MAX_BATCH, DEFAULT_WINDOW_S, QueryBatcher
from vela_search.serve.limits import DEFAULT_JSON_LIMIT
from vela_search.store import AudioIndex
from vela_search.store.layout import MANIFEST

if TYPE_CHECKING:
    import numpy as np

    from vela_search.embedding.embedder import VelaEmbedder
    from vela_search.search import Hit

__all__ = ["ServeSettings", "ServedIndex", "Service", "UnknownIndexError"]


class UnknownIndexError(QueryError):
    """A request named an index the server does not serve."""


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
    device: str = "auto"


@dataclass
class ServedIndex:
    """One index, its searcher (reopened on the latest generation when a commit replaces the manifest)."""

    name: str
    root: Path
    searcher: Searcher
    batcher: QueryBatcher | None
    _manifest_key: tuple[int, int] | None = None
    _refresh_lock: threading.Lock = field(default_factory=threading.Lock)

    def refresh(self) -> None:
        """Switch to the latest committed generation when the manifest changed since the last look.

        A commit replaces ``manifest.json`` by an atomic rename, so a changed inode or mtime is a new
        generation; an open snapshot keeps its own files, so searches running meanwhile are unaffected.
        """
        key = _stat_key(self.root / MANIFEST)
        if key == self._manifest_key:
            return
        with self._refresh_lock:
            if key == self._manifest_key:
                return
            self.searcher.refresh()
            self._manifest_key = key

    def search(self, request: QueryRequest, vector: np.ndarray | None = None) -> list[Hit]:
        """Run a request on the latest generation (blocking: call it from a worker thread)."""
        self.refresh()
        return run_query(self.searcher, request, vector=vector)

    def info(self) -> dict[str, Any]:
        """Counts, embedder and generation (for /api/indexes and the page's summary)."""
        self.refresh()
        index = self.searcher.index
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
            "notice": self.searcher.notice,
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

    def __init__(self, indexes: list[ServedIndex], settings: ServeSettings) -> None:
        if not indexes:
            raise ValueError("a service needs at least one index")
        self.indexes = {i.name: i for i in indexes}
        self.settings = settings
        self.started = time.time()

    @classmethod
    def open(
        cls,
        roots: list[tuple[str, Path]],
        settings: ServeSettings,
        *,
        embedders: dict[str, VelaEmbedder] | None = None,
    ) -> Service:
        """Open each ``(name, root)`` and load the embedder it records (once per distinct embedder).

        An empty index is served (searches say it is empty) and loads no model until it has vectors
        at start-up; restart the server after its first `vela-search index`.

        Raises:
            IndexNotFoundError, ModelLoadError, FingerprintMismatchError: as ``Searcher.open``.
        """
        cache: dict[str, VelaEmbedder] = dict(embedders or {})
        batchers: dict[int, QueryBatcher] = {}
        served = []
        for name, root in roots:
            index = AudioIndex.open(root)
            embedder = None
            if index.num_vectors:
                key = repr(sorted(index.fingerprint.items()))
                if key not in cache:
                    cache[key] = load_index_embedder(index, device=settings.device)
                embedder = cache[key]
            searcher = Searcher(index, embedder)
            batcher = None
            if embedder is not None:
                batcher = batchers.setdefault(
                    id(embedder),
                    QueryBatcher(embedder, window_s=settings.batch_window_s, max_batch=settings.max_batch),
                )
            item = ServedIndex(name=name, root=Path(root), searcher=searcher, batcher=batcher)
            item._manifest_key = _stat_key(Path(root) / MANIFEST)
            served.append(item)
        return cls(served, settings)

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
        self, served: ServedIndex, request: QueryRequest, clip: np.ndarray | None = None
    ) -> list[Hit]:
        """Answer ``request``: embed it in a micro-batch if it needs the model, then search (off the loop)."""
        request.validate()
        vector = None
        if request.needs_model:
            await asyncio.to_thread(served.refresh)
            check_not_empty(served.searcher.index)
            if served.batcher is None:
                raise QueryError(
                    f"index {served.name} had no vectors when the server started, so no model is loaded; "
                    "restart `vela-search serve` after indexing"
                )
            vector = await served.batcher.embed(request.embed_item(clip))
        return await asyncio.to_thread(served.search, request, vector)

    async def warm_up(self) -> None:
        """Compute each model's demo prefix before the first request (so it does not pay for it)."""
        seen = set()
        for served in self.indexes.values():
            batcher = served.batcher
            if batcher is None or id(batcher) in seen:
                continue
            seen.add(id(batcher))
            await batcher.run_on_model_thread(
                lambda e=batcher.embedder: e.prefix_length and e.embed_text(["warm up"])
            )

    async def close(self) -> None:
        """Stop the batchers and close the index snapshots."""
        seen = set()
        for served in self.indexes.values():
            if served.batcher is not None and id(served.batcher) not in seen:
                seen.add(id(served.batcher))
                await served.batcher.close()
            served.searcher.close()
