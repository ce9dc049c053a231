"""Micro-batching: concurrent queries share forwards, get the vectors they get alone, never block the loop."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest

from vela_search.embedding.embedder import EmbedItem
from vela_search.errors import QueryError
from vela_search.serve.batching import QueryBatcher

CANDIDATES = [
    "dog barking",
    "rain falling",
    "car horns",
    "birds",
    "a door",
    "wind noise",
    "glass breaks",
    "a bell",
]
MIXED = [
    EmbedItem("caption", text="a dog barks twice"),
    EmbedItem("caption", text="rain on a roof at night with thunder far away and a car passing by"),
    EmbedItem("long", text="A long passage about a harbour at dawn, gulls and ropes. " * 6),
    EmbedItem("instruction", text="a kettle", instruction="find recordings with the same sound source as:"),
    EmbedItem("audio", wave=(0.3 * np.sin(np.arange(16_000) * 0.05)).astype(np.float32)),
]


def embed_concurrently(batcher: QueryBatcher, items: list[EmbedItem]) -> list[np.ndarray | BaseException]:
    async def main() -> list[np.ndarray | BaseException]:
        try:
            return await asyncio.gather(*(batcher.embed(item) for item in items), return_exceptions=True)
        finally:
            await batcher.close()

    return asyncio.run(main())


def test_queries_of_one_batch_get_their_own_vectors(tiny_embedder):
    by_length: dict[int, list[EmbedItem]] = {}
    for text in CANDIDATES:
        item = EmbedItem("caption", text=text)
        by_length.setdefault(tiny_embedder.token_count(item), []).append(item)
    same = max(by_length.values(), key=len)  # queries of one token length (no padding between them)
    # fp32 on the CPU: what differs is rounding only (kernels of other shapes), far below any score gap.
    batcher = QueryBatcher(tiny_embedder, window_s=0.05)
    vectors = embed_concurrently(batcher, same + MIXED)
    assert batcher.stats.batches == 1 and batcher.stats.items == len(same) + len(MIXED)
    alone = np.stack([tiny_embedder.embed_items([item])[0] for item in same + MIXED])
    np.testing.assert_allclose(np.stack(vectors), alone, atol=1e-6, rtol=0)
    # A batch holding the same query twice gives it the same vector twice.
    batcher = QueryBatcher(tiny_embedder, window_s=0.05)
    twice = embed_concurrently(batcher, [same[0], MIXED[1], same[0]])
    assert np.array_equal(twice[0], twice[2])


def test_batches_are_bounded_and_one_is_one_forward_per_query(tiny_embedder):
    items = [EmbedItem("caption", text=f"sound number {i}") for i in range(10)]
    bounded = QueryBatcher(tiny_embedder, window_s=0.05, max_batch=4)
    embed_concurrently(bounded, items)
    assert bounded.stats.largest == 4 and bounded.stats.items == 10 and bounded.stats.batches == 3
    single = QueryBatcher(tiny_embedder, window_s=0.05, max_batch=1)
    embed_concurrently(single, items)
    assert single.stats.batches == 10 and single.stats.largest == 1


def test_a_query_that_cannot_fit_fails_alone(tiny_embedder):
    room = tiny_embedder.max_positions - tiny_embedder.prefix_length
    too_long = EmbedItem("long", text="word " * (room + 20))
    ok = EmbedItem("caption", text="a dog barks")
    batcher = QueryBatcher(tiny_embedder, window_s=0.05)
    results = embed_concurrently(batcher, [ok, too_long, ok])
    assert isinstance(results[1], QueryError) and "tokens but at most" in str(results[1])
    # The same vector as alone, within fp32 rounding (a row's position in a batch changes the last bits).
    np.testing.assert_allclose(results[0], tiny_embedder.embed_items([ok])[0], atol=1e-6, rtol=0)
    np.testing.assert_allclose(results[2], results[0], atol=1e-6, rtol=0)


def test_the_event_loop_keeps_running_while_the_model_works(tiny_embedder):
    items = [
        EmbedItem("long", text=f"passage {i}: " + "waves and wind over the bay " * 30) for i in range(16)
    ]
    batcher = QueryBatcher(tiny_embedder, window_s=0.0)

    async def main() -> tuple[int, float]:
        ticks = 0
        done = asyncio.Event()

        async def ticker() -> None:
            nonlocal ticks
            while not done.is_set():
                ticks += 1
                await asyncio.sleep(0.001)

        task = asyncio.create_task(ticker())
        started = time.perf_counter()
        await asyncio.gather(*(batcher.embed(item) for item in items))
        took = time.perf_counter() - started
        done.set()
        await task
        await batcher.close()
        return ticks, took

    ticks, took = asyncio.run(main())
    assert took > 0.05, "the batch should take a while for this test to mean anything"
    # A blocked loop would tick once or twice; a free one ticks every few milliseconds.
    assert ticks >= min(20, took / 0.01), (ticks, took)


def test_bad_settings_are_refused(tiny_embedder):
    with pytest.raises(ValueError):
        QueryBatcher(tiny_embedder, max_batch=0)


@pytest.fixture(scope="module")
def long_prefix_embedder(tiny_model_dir):
    """Demos long enough that a 30 s clip no longer fits behind them (texts still do)."""
    from vela_search.embedding.demos import Demo, DemoSet
    from vela_search.embedding.embedder import VelaEmbedder

    text = "A very long description of a sound heard close by, " * 112
    words = ("dog", "rain", "bell")
    demos = DemoSet(demos=tuple(Demo(word=w, text=text) for w in words), source="long-demos")
    embedder = VelaEmbedder.from_pretrained("tiny", demos=demos, device="cpu")
    room = embedder.max_positions - embedder.prefix_length
    assert embedder.token_count(EmbedItem("audio", wave=np.zeros(30 * 16_000, np.float32))) > room
    return embedder


def test_an_oversized_clip_fails_its_own_request_only(long_prefix_embedder):
    texts = [EmbedItem("caption", text="a dog barks"), EmbedItem("caption", text="rain on a roof")]
    clip = EmbedItem("audio", wave=(0.1 * np.sin(np.arange(30 * 16_000) * 0.03)).astype(np.float32))
    batcher = QueryBatcher(long_prefix_embedder, window_s=0.05)
    results = embed_concurrently(batcher, [texts[0], clip, texts[1]])
    assert isinstance(results[1], QueryError) and "send a shorter clip" in str(results[1])
    assert "--" not in str(results[1])  # the API's words, not the CLI's flags
    for got, item in ((results[0], texts[0]), (results[2], texts[1])):
        np.testing.assert_allclose(got, long_prefix_embedder.embed_items([item])[0], atol=1e-6, rtol=0)


def test_a_batch_that_raises_is_retried_item_by_item(tiny_embedder, monkeypatch):
    real = tiny_embedder.embed_items

    def fragile(items):  # one item breaks any forward it is in (a decode edge, out of memory)
        if any(item.text == "breaks the model" for item in items):
            raise RuntimeError("CUDA out of memory")
        return real(items)

    monkeypatch.setattr(tiny_embedder, "embed_items", fragile)
    items = [EmbedItem("caption", text=t) for t in ("a dog barks", "breaks the model", "rain")]
    results = embed_concurrently(QueryBatcher(tiny_embedder, window_s=0.05), items)
    assert isinstance(results[1], RuntimeError)
    assert all(isinstance(results[i], np.ndarray) for i in (0, 2))
    np.testing.assert_allclose(results[2], real([items[2]])[0], atol=1e-6, rtol=0)


def test_items_nobody_waits_for_never_reach_the_model(tiny_embedder):
    batcher = QueryBatcher(tiny_embedder, window_s=0.05)

    async def main() -> list:
        late = asyncio.ensure_future(batcher.embed(EmbedItem("caption", text="late"), timeout_s=0.0))
        left = asyncio.ensure_future(batcher.embed(EmbedItem("caption", text="client left")))
        kept = asyncio.ensure_future(batcher.embed(EmbedItem("caption", text="kept")))
        await asyncio.sleep(0.01)
        left.cancel()  # its client went away while the batch was collecting
        try:
            return await asyncio.gather(late, left, kept, return_exceptions=True)
        finally:
            await batcher.close()

    late, left, kept = asyncio.run(main())
    assert isinstance(late, TimeoutError) and isinstance(left, asyncio.CancelledError)
    assert isinstance(kept, np.ndarray)
    assert batcher.stats.items == 1  # only the item still awaited ran


def test_a_batch_is_cut_before_the_deadlines_of_its_items_pass(tiny_embedder, monkeypatch):
    real = tiny_embedder.embed_items
    forwards: list[int] = []

    def slow(items):  # 0.2 s per item, as a busy model
        forwards.append(len(items))
        time.sleep(0.2 * len(items))
        return real(items)

    monkeypatch.setattr(tiny_embedder, "embed_items", slow)
    batcher = QueryBatcher(tiny_embedder, window_s=0.05)
    batcher.seconds_per_item = 0.2  # as measured on earlier batches

    async def main() -> list:
        items = [EmbedItem("caption", text=t) for t in CANDIDATES[:4]]
        try:
            return await asyncio.gather(
                *(batcher.embed(item, timeout_s=0.5) for item in items), return_exceptions=True
            )
        finally:
            await batcher.close()

    results = asyncio.run(main())
    # Four items would hold the model 0.8 s: the batch was cut to what fits before the deadline, and the
    # items left when it passed never reached the model.
    ran = [r for r in results if isinstance(r, np.ndarray)]
    late = [r for r in results if isinstance(r, TimeoutError)]
    assert forwards and forwards[0] < 4, forwards
    assert len(ran) + len(late) == 4 and late, results
    assert sum(forwards) == batcher.stats.items == len(ran)
