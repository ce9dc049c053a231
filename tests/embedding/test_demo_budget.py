"""What a demo set costs: per-demo tokens, the prefix, the longest clip that fits, refusals with numbers."""

from __future__ import annotations

import numpy as np
import pytest

from tests.embedding.demo_library import write_clip
from vela_search.embedding.demo_budget import measure_demo_set
from vela_search.embedding.demos import Demo, DemoSet
from vela_search.embedding.embedder import EmbedItem, VelaEmbedder
from vela_search.errors import TokenBudgetError


@pytest.fixture(scope="module")
def counting_backbone(tiny_model_dir):
    from vela_search.embedding.backbone import load_backbone_without_weights

    return load_backbone_without_weights("tiny")


def _audio_set(tmp_path, seconds: list[float]) -> DemoSet:
    demos = []
    for k, length in enumerate(seconds):
        path = write_clip(tmp_path / f"c{k}.wav", length, None, seed=k)
        demos.append(Demo(word=f"w{k}", audio=path))
        demos.append(Demo(word="dog", text="A dog barks twice"))
    return DemoSet(tuple(demos), source="test-set")


def test_the_shipped_set_costs_what_the_embedder_counts(counting_backbone):
    embedder = VelaEmbedder(counting_backbone, DemoSet.default())
    budget = measure_demo_set(embedder)
    assert (budget.n_demos, budget.n_audio) == (81, 0)
    assert budget.header_tokens + sum(c.tokens for c in budget.costs) == budget.prefix_tokens
    assert budget.prefix_tokens == embedder.prefix_length
    assert budget.longest_clip_s == 30.0 and budget.fits
    assert budget.digest == DemoSet.default().digest
    assert budget.item_tokens == embedder.token_count(EmbedItem("audio", wave=np.zeros(160000, np.float32)))


def test_the_longest_fitting_clip_is_the_embedders_own_limit(tmp_path, counting_backbone):
    # Nine 30 s clips leave less than 30 s of room: the longest clip that fits passes the embedder's own
    # check, a clip 10 ms longer does not.
    embedder = VelaEmbedder(counting_backbone, _audio_set(tmp_path, [30.0] * 9 + [5.0]))
    budget = measure_demo_set(embedder, item_seconds=5.0)
    assert 0 < budget.longest_clip_s < 30.0 and budget.fits
    assert budget.header_tokens + sum(c.tokens for c in budget.costs) == budget.prefix_tokens
    assert [c.kind for c in budget.costs[:2]] == ["audio", "text"] and budget.costs[0].seconds == 30.0
    fits = round(budget.longest_clip_s * 16000)
    embedder.check_budget([EmbedItem("audio", wave=np.zeros(fits, np.float32))])
    with pytest.raises(TokenBudgetError):
        embedder.check_budget([EmbedItem("audio", wave=np.zeros(fits + 160, np.float32))])


def test_a_set_that_does_not_fit_is_refused_with_the_numbers(tmp_path, counting_backbone):
    embedder = VelaEmbedder(counting_backbone, _audio_set(tmp_path, [30.0] * 10))
    budget = measure_demo_set(embedder, item_seconds=30.0)
    assert not budget.fits and budget.room_left < 0
    with pytest.raises(TokenBudgetError) as caught:
        budget.require_fit("use fewer demos")
    message = str(caught.value)
    total = budget.prefix_tokens + budget.item_tokens
    assert f"prefix {budget.prefix_tokens} tokens (20 demos, 10 audio)" in message
    assert f"a 30 s clip {budget.item_tokens} tokens = {total} > limit 8192 positions" in message
    assert f"({-budget.room_left} over)" in message and message.endswith("use fewer demos")


def test_counting_without_weights_agrees_with_the_loaded_model(
    counting_backbone, tiny_embedder_default_demos
):
    loaded = tiny_embedder_default_demos
    counting = VelaEmbedder(counting_backbone, loaded.demos)
    assert next(counting_backbone.model.parameters()).device.type == "meta"
    assert counting.prefix_length == loaded.prefix_length and counting.max_positions == loaded.max_positions
    for item in (
        EmbedItem("audio", wave=np.zeros(12345, np.float32)),
        EmbedItem("caption", text="a dog barks"),
    ):
        assert counting.token_count(item) == loaded.token_count(item)
    assert measure_demo_set(counting).to_dict() == measure_demo_set(loaded).to_dict()
