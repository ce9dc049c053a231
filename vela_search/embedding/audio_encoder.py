"""Length-aware audio encoding for Qwen2-Audio's Whisper-style encoder.

The stock encoder always runs the padded 30 s window (1500 positions) and masks the padded positions out of
its attention. The valid positions' outputs therefore depend only on the valid positions, plus the
convolutions' one-frame margin. Running the encoder on the valid length (rounded up to a few bucket sizes so
kernels see repeated shapes) gives the same outputs for a fraction of the work: a 10 s clip needs a third of
the window.
"""

from __future__ import annotations

import torch

# Encoder positions (after the stride-2 convolution) are bucketed to multiples of this: 50 positions = 2 s.
BUCKET_POSITIONS = 50


def conv_lengths(mel_frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Encoder positions after the strided convolution, and audio tokens after pooling, per clip."""
    after_conv = (mel_frames - 1) // 2 + 1
    tokens = (after_conv - 2) // 2 + 1
    return after_conv, tokens


def encode_audio(
    audio_tower: torch.nn.Module,
    projector: torch.nn.Module,
    input_features: torch.Tensor,
    feature_lengths: torch.Tensor,
) -> list[torch.Tensor]:
    """Encode clips on their valid frames only; returns each clip's audio-token embeddings.

    Args:
        audio_tower: The model's ``Qwen2AudioEncoder``.
        projector: The model's multi-modal projector (encoder width -> LLM width).
        input_features: ``(n, mel_bins, 3000)`` log-mel features as the processor pads them.
        feature_lengths: ``(n,)`` valid mel frames per clip (the processor's feature attention mask sums).

    Returns:
        One ``(tokens_i, hidden)`` tensor per clip, equal to the stock encoder's valid outputs.
    """
    device = audio_tower.conv1.weight.device
    dtype = audio_tower.conv1.weight.dtype
    feature_lengths = feature_lengths.to(device)
    positions, tokens = conv_lengths(feature_lengths)
    max_positions = audio_tower.config.max_source_positions
    span = int(positions.max().item())
    span = min(max_positions, -(-span // BUCKET_POSITIONS) * BUCKET_POSITIONS)
    # Position j of the strided conv reads mel frames up to 2j + 2: keep that margin of the real padding
    # frames so the edge outputs match the stock 30 s window exactly.
    frames = min(input_features.shape[-1], 2 * span + 2)
    features = input_features[:, :, :frames].to(device=device, dtype=dtype)

    hidden = torch.nn.functional.gelu(audio_tower.conv1(features))
    hidden = torch.nn.functional.gelu(audio_tower.conv2(hidden))
    hidden = hidden.permute(0, 2, 1)[:, :span] + audio_tower.embed_positions.weight[:span]

    # Key-padding mask, additive as both the eager and SDPA encoder attention accept.
    keep = torch.arange(span, device=device)[None, :] < positions[:, None]
    mask = torch.zeros(keep.shape, dtype=hidden.dtype, device=device)
    mask = mask.masked_fill(~keep, torch.finfo(hidden.dtype).min)[:, None, None, :]
    mask = mask.expand(-1, 1, span, span)
    for layer in audio_tower.layers:
        out = layer(hidden, mask)
        hidden = out[0] if isinstance(out, tuple) else out

    hidden = audio_tower.avg_pooler(hidden.permute(0, 2, 1)).permute(0, 2, 1)
    hidden = projector(audio_tower.layer_norm(hidden))
    return [hidden[i, : int(tokens[i])] for i in range(hidden.shape[0])]
