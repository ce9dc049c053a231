"""Micro-batching: queries that arrive together are embedded in one forward, on one model thread.

Each request awaits :meth:`QueryBatcher.embed`. The first item of a batch opens a short collection
window; items arriving within it (up to ``max_batch``) join the batch, which then runs on the single
model thread while the event loop keeps accepting requests. Right padding keeps each item's vector the
same as when it is embedded alone (attention is causal), so batching changes throughput, not results.
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from vela_search.audio import SAMPLE_RATE
from vela_search.errors import QueryError, VelaError
from vela_search.search.validation import check_fits

if TYPE_CHECKING:
    from vela_search.embedding.embedder import EmbedItem, VelaEmbedder

__all__ = ["BatchStats", "QueryBatcher", "check_item"]

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
    deadline: float  # loop time after which nobody waits for this item

    def wanted(self, now: float) -> bool:
        """Still awaited: not cancelled (its client left or timed out) and within its deadline."""
        if self.future.done():
            return False
        if now >= self.deadline:
            self.future.set_exception(TimeoutError("the deadline passed before the model ran the query"))
            return False
        return True


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
        # The model's recent time per item (a running mean), to cut a batch before its deadlines pass.
        self.seconds_per_item = 0.0
        self._queue: asyncio.Queue[_Pending] | None = None
        self._task: asyncio.Task[None] | None = None
        self._model_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="vela-model")

    async def embed(self, item: EmbedItem, *, timeout_s: float | None = None) -> np.ndarray:
        """The unit vector of ``item``, embedded with whatever other items arrive with it.

        An item whose caller stopped waiting (cancelled: its client left or its request timed out) or
        whose ``timeout_s`` passed before the model reached it is dropped, never run.

        Raises:
            QueryError: an item that does not fit behind the prefix (the others of its batch still run).
            TimeoutError: ``timeout_s`` passed before the model ran the item.
            VelaError: the model refused the item (alone: the others of its batch still get theirs).
        """
        loop = asyncio.get_running_loop()
        if self._queue is None:
            self._queue = asyncio.Queue()
            self._task = loop.create_task(self._collect())
        future: asyncio.Future[np.ndarray] = loop.create_future()
        deadline = loop.time() + timeout_s if timeout_s is not None else float("inf")
        await self._queue.put(_Pending(item, future, deadline))
        return await future

    async def run_on_model_thread(self, function, *args):  # type: ignore[no-untyped-def]
        """Run ``function(*args)`` on the model thread (e.g. warming the prefix up) without blocking."""
        return await asyncio.get_running_loop().run_in_executor(self._model_thread, function, *args)

    def run_blocking(self, function, *args):  # type: ignore[no-untyped-def]
        """Run ``function(*args)`` on the model thread from any other thread and wait for its result
        (a folder watcher's embedding chunks: they take turns with the query batches)."""
        return self._model_thread.submit(function, *args).result()

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
            now = loop.time()
            live = [p for p in batch if p.wanted(now)]
            if live:
                await self._run(live)

    async def _run(self, live: list[_Pending]) -> None:
        """Embed a batch; when the forward raises, each item alone, so only an item failing alone fails."""
        loop = asyncio.get_running_loop()
        try:
            results = await loop.run_in_executor(self._model_thread, self._embed_batch, live)
        except asyncio.CancelledError:
            for pending in live:
                if not pending.future.done():
                    pending.future.cancel()
            raise
        except Exception as exc:
            if len(live) == 1:
                _deliver(live[0], exc)
                return
            for pending in live:  # one item (out of memory, a decode edge) must not fail its neighbours
                if pending.wanted(loop.time()):
                    await self._run([pending])
            return
        for pending, result in zip(live, results, strict=True):
            _deliver(pending, result)

    def _embed_batch(self, batch: list[_Pending]) -> list[np.ndarray | BaseException]:
        """On the model thread: refuse items that cannot fit (each on its own), embed the rest in one call."""
        results: list[np.ndarray | BaseException | None] = [None] * len(batch)
        ok: list[int] = []
        now = time.monotonic()  # the event loop's clock
        for i, pending in enumerate(batch):
            if not _still_wanted(pending, now, results, i):
                continue  # nobody waits for it any more: the model does not run it
            try:
                check_item(self.embedder, pending.item)
                ok.append(i)
            except VelaError as exc:
                results[i] = exc
        while ok:
            # A forward cannot be stopped once started, so the batch is cut where the latest deadline
            # would pass: the model is never held for items nobody waits for any more.
            now = time.monotonic()
            ok = [i for i in ok if _still_wanted(batch[i], now, results, i)]
            if not ok:
                break
            room = max(batch[i].deadline for i in ok) - now
            fits = len(ok)
            if self.seconds_per_item > 0 and room < fits * self.seconds_per_item:
                fits = int(room / self.seconds_per_item)
            take = ok[: max(1, fits)]
            started = time.monotonic()
            vectors = self.embedder.embed_items([batch[i].item for i in take])
            per_item = (time.monotonic() - started) / len(take)
            self.seconds_per_item = 0.5 * self.seconds_per_item + 0.5 * per_item
            for row, i in enumerate(take):
                results[i] = vectors[row]
            ok = ok[len(take) :]
            self.stats.batches += 1
            self.stats.items += len(take)
            self.stats.largest = max(self.stats.largest, len(take))
        return results  # type: ignore[return-value]

    @property
    def waiting(self) -> int:
        """Items queued for the next batches."""
        return self._queue.qsize() if self._queue is not None else 0

    async def close(self) -> None:
        """Stop collecting and release the model thread."""
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):
                pass
        self._model_thread.shutdown(wait=False, cancel_futures=True)


def check_item(embedder: VelaEmbedder, item: EmbedItem) -> None:
    """Refuse an item that cannot fit behind the embedder's prefix: a text, or a clip too long for it.

    Raises:
        QueryError: naming the item's token count and the room left (API terms, no CLI flag).
    """
    check_fits(embedder, item)
    if item.is_audio:
        count = embedder.token_count(item)
        room = embedder.max_positions - embedder.prefix_length
        if count > room:
            seconds = len(item.wave) / SAMPLE_RATE  # type: ignore[arg-type]
            raise QueryError(
                f"the {seconds:.1f} s clip takes {count} tokens but at most {room} fit behind this index's "
                "prefix; send a shorter clip or a span of it (start, end)"
            )


def _still_wanted(pending: _Pending, now: float, results: list, i: int) -> bool:
    """On the model thread: whether ``pending`` is still awaited (else its result says why not)."""
    if pending.future.cancelled():
        results[i] = TimeoutError("the request was cancelled before the model ran it")
        return False
    if pending.deadline <= now:
        results[i] = TimeoutError("the deadline passed before the model ran the query")
        return False
    return True


def _deliver(pending: _Pending, result: np.ndarray | BaseException) -> None:
    if pending.future.done():
        return
    if isinstance(result, BaseException):
        pending.future.set_exception(result)
    else:
        pending.future.set_result(result)
