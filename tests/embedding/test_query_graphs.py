"""The fixed-size query path: padding to buckets is exact, and any capture problem falls back to eager."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from vela_search.embedding import query_graphs
from vela_search.embedding.embedder import EmbedItem, VelaEmbedder
from vela_search.embedding.query_graphs import QUERY_BUCKETS, StaticQuery, query_bucket

QUERIES = [
    "dog",
    "dog barking then a car passes",
    "rain on a tin roof with distant thunder and a door slamming twice",
    "a",  # shorter than the previous query in the same bucket: stale tokens must not leak in
]


@pytest.fixture()
def embedders(tiny_embedder):
    """The same backbone and demos, with the fixed-size query path on and off."""
    on = VelaEmbedder(tiny_embedder.backbone, tiny_embedder.demos, query_graphs=True)
    off = VelaEmbedder(tiny_embedder.backbone, tiny_embedder.demos, query_graphs=False)
    return on, off


def test_query_bucket_bounds():
    assert query_bucket(1) == QUERY_BUCKETS[0]
    assert query_bucket(QUERY_BUCKETS[0]) == QUERY_BUCKETS[0]
    assert query_bucket(QUERY_BUCKETS[0] + 1) == QUERY_BUCKETS[1]
    assert query_bucket(QUERY_BUCKETS[-1]) == QUERY_BUCKETS[-1]
    assert query_bucket(QUERY_BUCKETS[-1] + 1) is None


def test_padded_queries_equal_the_batch_path(embedders):
    on, off = embedders
    for mode, instruction in (("caption", None), ("long", None), ("instruction", "find the quiet ones")):
        for text in QUERIES:
            fast = on.embed_text([text], mode, instruction=instruction)
            plain = off.embed_text([text], mode, instruction=instruction)
            np.testing.assert_allclose(fast, plain, atol=1e-5)
    # Every query above was short enough for a bucket, so every one went through the padded buffers.
    assert on._graphs is not None and on._graphs._runners


def test_padded_queries_equal_the_plain_full_forward(embedders):
    """Against the reference itself: demos + query in one stock forward (``embed_naive``)."""
    on, _ = embedders
    for text in QUERIES:
        item = EmbedItem("caption", text=text)
        np.testing.assert_allclose(on.embed_items([item]), on.embed_naive([item]), atol=1e-4)


# Ops whose output size depends on tensor values: on CUDA they wait for the device, which a capture forbids.
DATA_DEPENDENT_OPS = {
    "aten.nonzero.default",
    "aten.masked_select.default",
    "aten._unique2.default",
    "aten.unique_dim.default",
    "aten.unique_consecutive.default",
    "aten.repeat_interleave.Tensor",
}


def _traced_ops(forward, *args) -> list[torch.fx.Node]:
    """The aten ops `forward` runs, recorded by make_fx (which raises on a host read of a tensor value)."""
    from torch.fx.experimental.proxy_tensor import make_fx

    with torch.no_grad():
        graph = make_fx(forward, tracing_mode="real")(*args).graph
    return [node for node in graph.nodes if node.op == "call_function"]


def _host_waits(nodes: list[torch.fx.Node]) -> list[str]:
    waits = [str(n.target) for n in nodes if str(n.target) in DATA_DEPENDENT_OPS]
    for node in nodes:
        if str(node.target) == "aten.index.Tensor":  # a boolean index is a nonzero in disguise
            waits += [
                "boolean index"
                for idx in node.args[1]
                if idx is not None and idx.meta["val"].dtype == torch.bool
            ]
    return waits


def test_the_query_forward_never_waits_for_the_device(embedders):
    """What a CUDA graph capture needs, checked on the CPU: recording a bucket's forward (embedding, every
    layer behind the prefix, pooling) op by op finds no read of a tensor's value on the host (``.item()``,
    ``if mask.all()``) and no op whose output size depends on values."""
    on, _ = embedders
    on.embed_text(["dog barking then a car passes"], "caption")
    (runner,) = on._graphs._runners.values()
    nodes = _traced_ops(runner.forward, runner.ids, runner.last)
    names = [str(n.target) for n in nodes]
    layers = on.backbone.model.config.text_config.num_hidden_layers
    assert names.count("aten.sigmoid.default") == layers  # every layer's prefix merge was recorded
    assert _host_waits(nodes) == []

    # The check sees both kinds of wait.
    def reads_a_value(ids: torch.Tensor, last: torch.Tensor) -> torch.Tensor:
        return runner.forward(ids, last) if int(last.item()) >= 0 else runner.forward(ids, last * 0)

    with pytest.raises(RuntimeError, match="_local_scalar_dense"):
        _traced_ops(reads_a_value, runner.ids, runner.last)

    def pools_by_mask(ids: torch.Tensor, last: torch.Tensor) -> torch.Tensor:
        vector = runner.forward(ids, last)
        return vector[vector.norm(dim=-1) > 0]

    assert _host_waits(_traced_ops(pools_by_mask, runner.ids, runner.last)) == ["boolean index"]


def test_queries_longer_than_every_bucket_take_the_batch_path(embedders):
    on, off = embedders
    text = " ".join(["a long field recording of wind in the pines"] * 40)
    assert on.token_count(EmbedItem("long", text=text)) > QUERY_BUCKETS[-1]
    np.testing.assert_allclose(on.embed_text([text], "long"), off.embed_text([text], "long"), atol=1e-5)
    assert on._graphs is None or not on._graphs._runners


def test_batches_and_audio_do_not_take_the_query_path(embedders):
    on, off = embedders
    texts = QUERIES[:3]
    np.testing.assert_allclose(on.embed_text(texts), off.embed_text(texts), atol=1e-5)
    assert on._graphs is None


def test_training_mode_keeps_queries_eager(embedders):
    on, _ = embedders
    item = [EmbedItem("caption", text="dog")]
    model = on.backbone.model
    model.train()
    try:
        assert not on._takes_query_path(item, grad=False)
    finally:
        model.eval()
    assert on._takes_query_path(item, grad=False)
    assert not on._takes_query_path(item, grad=True)


def test_new_prefix_gets_new_runners(embedders):
    on, _ = embedders
    on.embed_text(["dog"])
    first = on._graphs
    on.refresh_prefix(now=True)
    on.embed_text(["dog"])
    assert on._graphs is not first and on._graphs.owner is on._prefix


def test_failed_capture_falls_back_to_eager(embedders, caplog):
    """On the CPU a capture cannot succeed (no CUDA): the query must still answer, and graphs turn off."""
    on, off = embedders
    graphs = on._query_graphs(on._prefix_kv())
    graphs.capture = True
    with caplog.at_level(logging.WARNING, logger=query_graphs.__name__):
        vectors = [on.embed_text(["dog barking"]) for _ in range(query_graphs.CAPTURE_ON_USE + 1)]
    expected = off.embed_text(["dog barking"])
    for vector in vectors:
        np.testing.assert_allclose(vector, expected, atol=1e-5)
    assert graphs.disabled_reason is not None
    assert "queries run eagerly" in caplog.text
    assert on.query_graph_state["disabled_reason"] == graphs.disabled_reason
    # The reason survives a new prefix: a capture that failed once is not retried.
    on.refresh_prefix(now=True)
    on.embed_text(["dog"])
    assert on._graphs.disabled_reason == graphs.disabled_reason


class _WrongGraph:
    """Stands in for a CUDA graph whose replay does not compute what the eager forward does."""

    def replay(self) -> None:
        pass


def test_capture_that_disagrees_with_eager_is_dropped(embedders, monkeypatch):
    on, off = embedders
    graphs = on._query_graphs(on._prefix_kv())
    graphs.capture = True

    def fake_capture(self: StaticQuery) -> None:
        self.graph = _WrongGraph()
        self.output = torch.nn.functional.normalize(torch.ones(1, on.dim), dim=-1)

    monkeypatch.setattr(StaticQuery, "capture", fake_capture)
    for _ in range(query_graphs.CAPTURE_ON_USE + 1):
        vector = on.embed_text(["dog barking"])
        np.testing.assert_allclose(vector, off.embed_text(["dog barking"]), atol=1e-5)
    assert "disagrees" in graphs.disabled_reason
    assert graphs.captured_buckets == []


def test_static_query_rejects_what_does_not_fit():
    runner = StaticQuery(lambda ids, last: ids, bucket=4, pad_id=0, device=torch.device("cpu"))
    with pytest.raises(ValueError, match="does not fit"):
        runner.load([1, 2, 3, 4, 5])
    with pytest.raises(ValueError, match="does not fit"):
        runner.load([])
    runner.load([7, 8])
    assert runner.ids.tolist() == [[7, 8, 0, 0]] and runner.last.tolist() == [1]


@pytest.mark.gpu
def test_cuda_graph_replay_matches_eager(tiny_model_dir):
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    on = VelaEmbedder.from_pretrained("tiny", demos="default", device="cuda", dtype="fp32")
    off = VelaEmbedder(on.backbone, on.demos, query_graphs=False)
    for text in QUERIES * 2:
        np.testing.assert_allclose(on.embed_text([text]), off.embed_text([text]), atol=1e-4)
    state = on.query_graph_state
    assert state["disabled_reason"] is None, state
    assert state["captured_buckets"], state
