"""Comparing demo sets: one backbone, a run per set, and sets that cannot fit refused before any run."""

from __future__ import annotations

import pytest

import vela_search.bench.demo_comparison as comparison_module
from tests.bench.dataset_factory import make_clotho, write_tone
from vela_search.bench.datasets import load_dataset
from vela_search.embedding.demos import Demo, DemoSet
from vela_search.errors import TokenBudgetError


def test_each_set_runs_over_the_same_backbone(tmp_path, tiny_embedder):
    dataset = load_dataset("clotho", make_clotho(tmp_path / "clotho", 2, seconds=0.5), "evaluation")
    texts = DemoSet((Demo(word="dog", text="A dog barks"),), source="one-text")
    result = comparison_module.compare_demo_sets(
        dataset, tiny_embedder.backbone, [("none", DemoSet.none()), ("one-text", texts)]
    )
    assert [run.demos for run in result.runs] == ["none", "one-text"]
    assert [run.n_demos for run in result.runs] == [0, 1]
    assert result.runs[0].prefix_tokens < result.runs[1].prefix_tokens
    assert result.runs[1].report.fingerprint["demos"] == texts.digest
    assert result.to_dict()["runs"][1]["report"]["n_clips"] == 2


def test_a_set_without_room_for_the_longest_clip_is_refused_before_any_run(
    tmp_path, tiny_embedder, monkeypatch
):
    dataset = load_dataset("clotho", make_clotho(tmp_path / "clotho", 2, seconds=20.0), "evaluation")
    clip = write_tone(tmp_path / "long.wav", 3, seconds=30.0)
    heavy = DemoSet(tuple(Demo(word=f"w{k}", audio=clip) for k in range(10)), source="heavy")
    runs = []
    monkeypatch.setattr(comparison_module, "run_retrieval_benchmark", lambda *a, **k: runs.append(a))
    with pytest.raises(TokenBudgetError) as caught:
        comparison_module.compare_demo_sets(
            dataset, tiny_embedder.backbone, [("none", DemoSet.none()), ("heavy.jsonl", heavy)]
        )
    message = str(caught.value)
    assert message.startswith("demo set heavy.jsonl leaves no room for the longest clip of clotho (20.0 s)")
    assert "> limit 8192 positions" in message
    assert runs == []
