"""Micro-batching: queries that arrive together are embedded in one forward, on one model thread.

Each request awaits :meth:`QueryBatcher.embed`. The first item of a batch opens a short collection
window; items arriving within it (up to ``max_batch``) join the batch, which then runs on the single
model thread while the event loop keeps accepting requests. Right padding keeps each item's vector the
same as when it is embedded alone (attention is causal), so batching changes throughput, not results.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from vela_search.errors import VelaError
from vela_search.search.validation import check_fits

if TYPE_CHECKING:
    from vela_search.embedding.embedder import EmbedItem, VelaEmbedder

__all__ = ["BatchStats", "QueryBatcher"]

# 2 ms: long enough for requests sent together to meet, short next to a query's own time.
DEFAULT_WINDOW_S = 0.002
DEFAULT_MAX_BATCH = 32


@dataclass
class BatchStats:
    """What the batcher has done: batches run and items embedded (for /healthz and the benchmark)."""

    batches: int = 0
    items: int = 0
    largest: int = 0


@dataclass
class _Pending:
    item: EmbedItem
    future: asyncio.Future[np.ndarray]


class QueryBatcher:
    """Embeds query items for one embedder in micro-batches on one dedicated model thread.

    Args:
        embedder: the model (used from the model thread only).
        window_s: how long the first item of a batch waits for others.
        max_batch: items per forward at most; 1 turns batching off (one forward per query).
    """

    def __init__(
        self,
        embedder: VelaEmbedder,
        *,
        window_s: float = DEFAULT_WINDOW_S,
        max_batch: int = DEFAULT_MAX_BATCH,
    ) -> None:
        if max_batch < 1 or window_s < 0:
            raise ValueError("max_batch must be >= 1 and window_s >= 0")
        self.embedder = embedder
        self.window_s = window_s
        self.max_batch = max_batch
        self.stats = BatchStats()
        self._queue: asyncio.Queue[_Pending] | None = None
        self._task: asyncio.Task[None] | None = None
        self._model_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="vela-model")

    async def embed(self, item: EmbedItem) -> np.ndarray:
        """The unit vector of ``item``, embedded with whatever other items arrive with it.

        Raises:
            QueryError: a text that does not fit behind the prefix (the others of its batch still run).
            VelaError: the model refused the item.
        """
        loop = asyncio.get_running_loop()
        if self._queue is None:
            self._queue = asyncio.Queue()
            self._task = loop.create_task(self._collect())
        future: asyncio.Future[np.ndarray] = loop.create_future()
        await self._queue.put(_Pending(item, future))
        return await future

    async def run_on_model_thread(self, function, *args):  # type: ignore[no-untyped-def]
        """Run ``function(*args)`` on the model thread (e.g. warming the prefix up) without blocking."""
        return await asyncio.get_running_loop().run_in_executor(self._model_thread, function, *args)

    async def _collect(self) -> None:
        assert self._queue is not None
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self._queue.get()]
            deadline = loop.time() + self.window_s
            while len(batch) < self.max_batch:
                timeout = deadline - loop.time()
                if timeout <= 0:
                    # Whatever is already queued joins without waiting.
                    if self._queue.empty():
                        break
                    batch.append(self._queue.get_nowait())
                    continue
                try:
                    batch.append(await asyncio.wait_for(self._queue.get(), timeout))
                except TimeoutError:
                    break
            live = [p for p in batch if not p.future.cancelled()]
            if not live:
                continue
            try:
                results = await loop.run_in_executor(self._model_thread, self._embed_batch, live)
            except BaseException as exc:  # a failure of the whole forward goes to every waiter
                for pending in live:
                    if not pending.future.done():
                        pending.future.set_exception(exc)
                if isinstance(exc, asyncio.CancelledError):
                    raise
                continue
            for pending, result in zip(live, results, strict=True):
                if pending.future.done():
                    continue
                if isinstance(result, BaseException):
                    pending.future.set_exception(result)
                else:
                    pending.future.set_result(result)

    def _embed_batch(self, batch: list[_Pending]) -> list[np.ndarray | BaseException]:
        """On the model thread: refuse items that cannot fit, embed the rest in one call."""
        results: list[np.ndarray | BaseException | None] = [None] * len(batch)
        ok: list[int] = []
        for i, pending in enumerate(batch):
            try:
                check_fits(self.embedder, pending.item)
                ok.append(i)
            except VelaError as exc:
                results[i] = exc
        if ok:
            vectors = self.embedder.embed_items([batch[i].item for i in ok])
            for row, i in enumerate(ok):
                results[i] = vectors[row]
            self.stats.batches += 1
            self.stats.items += len(ok)
            self.stats.largest = max(self.stats.largest, len(ok))
        return results  # type: ignore[return-value]

    async def close(self) -> None:
        """Stop collecting and release the model thread."""
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):
                pass
        self._model_thread.shutdown(wait=False, cancel_futures=True)
