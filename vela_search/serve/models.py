"""The server's models: one embedder (and its micro-batcher) per distinct index fingerprint.

An index's first embedder is loaded at start-up; one a rebuilt or newly filled index needs later is
loaded in a background thread (at most one load per fingerprint at a time) while the served generation
keeps answering. A load that fails is remembered, so requests do not retry it over and over.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from vela_search.search import load_index_embedder
from vela_search.serve.batching import QueryBatcher

if TYPE_CHECKING:
    from vela_search.embedding.embedder import VelaEmbedder
    from vela_search.store import AudioIndex

__all__ = ["Models", "fingerprint_key"]


def fingerprint_key(index: AudioIndex) -> str:
    """What identifies an index's embedder (model, adapter, demos, ...): equal keys share one model."""
    return repr(sorted(index.fingerprint.items()))


class Models:
    """Embedders and their batchers by fingerprint, loaded now or in the background.

    Args:
        device: where models load (``auto``, ``cpu``, ``cuda``...).
        window_s, max_batch: the micro-batching of every batcher.
        embedders: already loaded embedders by :func:`fingerprint_key` (tests, benchmarks).
    """

    def __init__(
        self,
        *,
        device: str,
        window_s: float,
        max_batch: int,
        embedders: dict[str, VelaEmbedder] | None = None,
    ) -> None:
        self.device = device
        self.window_s = window_s
        self.max_batch = max_batch
        self._lock = threading.Lock()
        self._batchers: dict[str, QueryBatcher] = {}
        self._failed: dict[str, str] = {}
        self._loading: dict[str, threading.Event] = {}
        for key, embedder in (embedders or {}).items():
            self._batchers[key] = self._batcher(embedder)

    def _batcher(self, embedder: VelaEmbedder) -> QueryBatcher:
        return QueryBatcher(embedder, window_s=self.window_s, max_batch=self.max_batch)

    def ready(self, index: AudioIndex) -> QueryBatcher | None:
        """The batcher of ``index``'s embedder when it is loaded."""
        with self._lock:
            return self._batchers.get(fingerprint_key(index))

    def failure(self, index: AudioIndex) -> str | None:
        """Why ``index``'s embedder could not be loaded, or None."""
        with self._lock:
            return self._failed.get(fingerprint_key(index))

    def loading(self, index: AudioIndex) -> threading.Event | None:
        """An event set when the running load of ``index``'s embedder ends, or None when none runs."""
        with self._lock:
            return self._loading.get(fingerprint_key(index))

    def load_now(self, index: AudioIndex) -> QueryBatcher:
        """``index``'s embedder, loaded here if it is not yet (start-up).

        Raises:
            ModelLoadError, FingerprintMismatchError: as ``load_index_embedder``.
        """
        key = fingerprint_key(index)
        batcher = self.ready(index)
        if batcher is None:
            batcher = self._batcher(load_index_embedder(index, device=self.device))
            with self._lock:
                batcher = self._batchers.setdefault(key, batcher)
        return batcher

    def load_later(self, root: Path, index: AudioIndex, on_done: Callable[[], None]) -> None:
        """Start loading ``index``'s embedder in a background thread (unless one is loading or failed).

        ``on_done`` runs in that thread once the load has ended, loaded or failed, before the event of
        :meth:`loading` is set.
        """
        key = fingerprint_key(index)
        with self._lock:
            if key in self._batchers or key in self._failed or key in self._loading:
                return
            done = self._loading[key] = threading.Event()
        threading.Thread(
            target=self._load, args=(root, key, done, on_done), name="vela-model-load", daemon=True
        ).start()

    def _load(self, root: Path, key: str, done: threading.Event, on_done: Callable[[], None]) -> None:
        from vela_search.store import AudioIndex

        try:
            with AudioIndex.open(root) as index:
                if fingerprint_key(index) != key:
                    raise RuntimeError("the index changed embedder again while its model was loading")
                batcher = self._batcher(load_index_embedder(index, device=self.device))
            with self._lock:
                self._batchers[key] = batcher
        except Exception as exc:  # any failure: this generation cannot be answered by this server
            with self._lock:
                self._failed[key] = f"{type(exc).__name__}: {exc}".splitlines()[0]
        finally:
            with self._lock:
                del self._loading[key]
            try:
                on_done()  # the switch first: whoever waits on `done` then finds the new generation
            finally:
                done.set()

    def batchers(self) -> list[QueryBatcher]:
        """Every loaded batcher."""
        with self._lock:
            return list(self._batchers.values())
