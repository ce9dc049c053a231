"""Labelling clips with the model: real generation on the tiny model, consistent with the embedding path."""

from __future__ import annotations

import numpy as np
import torch

from vela_search.embedding.demo_labeller import ModelLabeller, first_word


def _clip(seed: int, seconds: float = 1.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(round(seconds * 16000)) / 16000
    return (0.4 * np.sin(2 * np.pi * (250 + 90 * seed) * t) + 0.05 * rng.standard_normal(t.size)).astype(
        np.float32
    )


def test_generated_words_come_from_the_language_model_head_behind_the_same_prompt(tiny_embedder):
    labeller = ModelLabeller(tiny_embedder)
    clips = [_clip(seed) for seed in range(3)]
    before = tiny_embedder.embed_audio(clips)

    labels = labeller.label_all(clips)

    assert all(label.word for label in labels), labels
    assert all(len(label.tokens) >= 1 for label in labels)
    # The first generated token is the lm_head's argmax at the very state the embedder reads (its last prompt
    # token, before normalisation: scaling does not move an argmax): generation ran on the embedding prompt.
    lm_head = tiny_embedder.backbone.model.lm_head.weight.detach().float()
    for label, vector in zip(labels, before, strict=True):
        assert label.tokens[0] == int(torch.argmax(lm_head @ torch.from_numpy(vector)))
    # Deterministic, and the embedding path is untouched (its own attention is back in place).
    assert [x.word for x in labeller.label_all(clips)] == [x.word for x in labels]
    assert tiny_embedder.backbone.language_model.config._attn_implementation == "vela_prefix"
    np.testing.assert_allclose(tiny_embedder.embed_audio(clips), before, atol=1e-6)


def test_first_word_of_an_answer():
    assert first_word(" Dog.") == "dog"
    assert first_word("rock'n'roll music") == "rock'n'roll"
    assert first_word("  ...\t") is None
