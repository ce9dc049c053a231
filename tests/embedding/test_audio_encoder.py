"""Length-aware audio encoding equals the stock 30 s-window encoder on every valid output."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vela_search.embedding.audio_encoder import encode_audio


@pytest.mark.parametrize(
    "batch_seconds", [[0.5], [1.0, 3.7], [9.96, 10.0, 10.04], [17.3, 29.9, 30.0], [0.5, 30.0]]
)
def test_length_aware_encoder_matches_stock(tiny_embedder, batch_seconds):
    core = tiny_embedder.backbone.core
    processor = tiny_embedder.backbone.processor
    rng = np.random.default_rng(len(batch_seconds))
    waves = [rng.standard_normal(int(s * 16000)).astype(np.float32) * 0.2 for s in batch_seconds]
    enc = processor.feature_extractor(
        waves, sampling_rate=16000, return_attention_mask=True, padding="max_length", return_tensors="pt"
    )
    lengths = enc["attention_mask"].sum(-1)
    with torch.no_grad():
        fast = encode_audio(core.audio_tower, core.multi_modal_projector, enc["input_features"], lengths)
        # Stock path: full 3000-frame window with the padding masked, as Qwen2AudioModel runs it.
        positions = (lengths - 1) // 2 + 1
        keep = torch.arange(1500)[None, :] < positions[:, None]
        mask = torch.zeros(keep.shape).masked_fill(~keep, torch.finfo(torch.float32).min)[:, None, None, :]
        stock = core.audio_tower(enc["input_features"], attention_mask=mask.expand(-1, 1, 1500, 1500))
        stock = core.multi_modal_projector(stock.last_hidden_state)
    for i, clip in enumerate(fast):
        tokens = ((int(positions[i]) - 2) // 2) + 1
        assert clip.shape[0] == tokens
        assert torch.abs(clip - stock[i, :tokens]).max().item() < 1e-4
