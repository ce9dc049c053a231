"""Batch planning: sizing batches by tokens, grouping items of similar length, host-side batch inputs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

if TYPE_CHECKING:
    from collections.abc import Sequence

    from vela_search.embedding.backbone import Backbone

# Suffix tokens per batch (padded length x items). The prefix is shared and not counted.
DEFAULT_BATCH_TOKENS = 8192
DEFAULT_MAX_BATCH_ITEMS = 32
# What the Whisper-style encoder reads at most; longer clips must be cut into windows by the caller.
MAX_CLIP_SECONDS = 30.0
SAMPLE_RATE = 16_000


@dataclass
class PreparedBatch:
    """One batch's model inputs, built on the host."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    features: tuple[torch.Tensor, torch.Tensor] | None  # (log-mel features, valid frames per clip)

    def pinned(self) -> PreparedBatch:
        features = None if self.features is None else (self.features[0].pin_memory(), self.features[1])
        return PreparedBatch(self.input_ids.pin_memory(), self.attention_mask.pin_memory(), features)


def plan_batches(lengths: Sequence[int], batch_tokens: int, max_items: int) -> list[list[int]]:
    """Group item indices into batches of similar length.

    Items are sorted longest first so that right-padding is small; a batch grows while its padded size
    (longest item x items) stays within ``batch_tokens`` and it holds at most ``max_items`` items. An item
    longer than ``batch_tokens`` gets a batch of its own.
    """
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    batches: list[list[int]] = []
    current: list[int] = []
    for index in order:
        longest = lengths[current[0]] if current else lengths[index]
        if current and (longest * (len(current) + 1) > batch_tokens or len(current) >= max_items):
            batches.append(current)
            current = []
        current.append(index)
    if current:
        batches.append(current)
    return batches


def auto_batch_tokens(backbone: Backbone, *, memory_fraction: float = 0.5) -> int:
    """Suffix tokens per batch that fit in a share of the GPU's free memory (the default on the CPU).

    Per token and layer, a forward holds the hidden state, q/k/v/o, the MLP's two intermediate
    activations and fp32 attention outputs; only one layer's activations are alive at a time without a
    graph, so the estimate is per layer plus the residual stream. It is deliberately conservative.
    """
    if backbone.device.type != "cuda":
        return DEFAULT_BATCH_TOKENS
    config = backbone.model.config.text_config
    element = torch.finfo(backbone.dtype).bits // 8
    per_token = element * (6 * config.hidden_size + 3 * config.intermediate_size) + 8 * config.hidden_size
    free, _total = torch.cuda.mem_get_info(backbone.device)
    return int(min(1 << 17, max(1024, free * memory_fraction // per_token)))


# Samples per mel frame (the Whisper feature extractor's hop at 16 kHz).
HOP_SAMPLES = 160
# The shortest clip the encoder turns into at least one audio token: 3 mel frames (ceil(n / 160) >= 3).
# Shorter clips would give zero audio tokens (an input with no audio at all), so they are padded with
# silence up to this length (:func:`pad_short_clip`).
MIN_CLIP_SAMPLES = 2 * HOP_SAMPLES + 1


def audio_token_count(n_samples: int) -> int:
    """Audio tokens Qwen2-Audio spends on a clip of ``n_samples`` at 16 kHz (25 per second).

    The processor counts ``ceil(n / 160)`` valid mel frames (a partial hop still makes a frame), then the
    encoder's stride-2 convolution and stride-2 pooling reduce them: 16,000 samples -> 25 tokens,
    16,400 -> 26.
    """
    samples = min(n_samples, int(MAX_CLIP_SECONDS * SAMPLE_RATE))
    frames = max(1, -(-samples // HOP_SAMPLES))
    return max(0, ((frames - 1) // 2 + 1 - 2) // 2 + 1)


def pad_short_clip(wave: np.ndarray) -> np.ndarray:
    """``wave`` padded with trailing silence to :data:`MIN_CLIP_SAMPLES` if shorter (else unchanged)."""
    if 0 < len(wave) < MIN_CLIP_SAMPLES:
        return np.pad(wave, (0, MIN_CLIP_SAMPLES - len(wave)))
    return wave
