"""FLOPs per embedded item and the matrix peaks of common GPUs, for the speed benchmark's utilisation figure.

The count is the model's arithmetic (a multiply-add is 2 FLOPs) for what the fast path must compute, not what
it happens to execute (padding, bucketed encoder lengths): the usual "model FLOPs" convention, so the fraction
of peak it gives is comparable across implementations. See :func:`item_flops` for the formula.
"""

from __future__ import annotations

from typing import Any

__all__ = ["PEAK_BF16_TFLOPS", "encoder_flops", "item_flops", "peak_tflops_for"]

SAMPLE_RATE = 16_000

# Dense (no sparsity) bf16 tensor-core peaks from the vendors' data sheets, in TFLOP/s, matched in order
# against torch.cuda.get_device_name(). fp16 peaks are the same on these chips. Measured sustained GEMM
# rates are lower (an H200 sustained ~790 TFLOP/s on large bf16 GEMMs), so a fraction near 0.8 is the ceiling.
PEAK_BF16_TFLOPS: tuple[tuple[str, float, str], ...] = (
    ("H200", 989.0, "H200 SXM/NVL: 989 TFLOP/s dense bf16"),
    ("H100 NVL", 835.0, "H100 NVL: 835 TFLOP/s dense bf16"),
    ("H100 PCIe", 756.0, "H100 PCIe: 756 TFLOP/s dense bf16"),
    ("H100", 989.0, "H100 SXM: 989 TFLOP/s dense bf16"),
    ("H800", 989.0, "H800 SXM: 989 TFLOP/s dense bf16"),
    ("A100", 312.0, "A100: 312 TFLOP/s dense bf16"),
    ("L40S", 362.0, "L40S: 362 TFLOP/s dense bf16"),
    ("A10G", 70.0, "A10G: 70 TFLOP/s dense bf16"),
    ("L4", 121.0, "L4: 121 TFLOP/s dense bf16"),
)


def item_flops(
    config: Any,
    *,
    prefix_tokens: int,
    item_tokens: int,
    audio_samples: int | None,
    stock_encoder: bool = False,
) -> dict[str, float]:
    """Model FLOPs to embed one item behind a cached prefix of ``prefix_tokens`` tokens.

    A multiply-add counts as 2 FLOPs. With ``L`` LLM layers, ``P`` prefix and ``T`` item tokens:

    - LLM linear layers: ``2 * N_lin * T``, ``N_lin`` = the layers' projection weights
      (q, k, v, o, gate, up, down; no embedding table, no lm_head: the embedder never runs it);
    - LLM attention: ``4 * d_q * L * (P*T + T*(T+1)/2)`` (scores and weighted sum; token ``t`` sees the
      prefix and ``t+1`` item tokens), ``d_q`` = heads x head size;
    - audio encoder on the clip's valid mel frames ``F`` (``S = (F-1)//2+1`` positions, ``A`` audio tokens):
      convolutions ``2*3*(mel*d*F + d*d*S)``, per layer ``2*S*(4*d^2 + 2*d*ffn) + 4*d*S^2``, projector
      ``2*A*d*h``. With ``stock_encoder`` the full 30 s window (F = 3000) is counted instead, as the stock
      forward runs it.

    Args:
        config: A ``Qwen2AudioConfig`` (``text_config``, ``audio_config``).
        prefix_tokens: Tokens already cached before the item (0 for a full forward).
        item_tokens: Tokens of the item itself.
        audio_samples: 16 kHz samples of the item's clip, or None for a text item.
        stock_encoder: Count the padded 30 s window rather than the valid frames.

    Returns:
        ``llm_linear``, ``llm_attention``, ``encoder`` and ``total`` FLOPs.
    """
    text, enc = config.text_config, config.audio_config
    h, layers = text.hidden_size, text.num_hidden_layers
    head = getattr(text, "head_dim", None) or h // text.num_attention_heads
    d_q, d_kv = text.num_attention_heads * head, text.num_key_value_heads * head
    linear_params = layers * (h * d_q + 2 * h * d_kv + d_q * h + 3 * h * text.intermediate_size)
    p, t = prefix_tokens, item_tokens
    flops = {
        "llm_linear": 2.0 * linear_params * t,
        "llm_attention": 4.0 * d_q * layers * (p * t + t * (t + 1) / 2),
        "encoder": 0.0,
    }
    if audio_samples is not None:
        flops["encoder"] = encoder_flops(enc, h, audio_samples, stock=stock_encoder)
    flops["total"] = sum(flops.values())
    return flops


def encoder_flops(enc: Any, llm_hidden: int, samples: int, *, stock: bool = False) -> float:
    """FLOPs of the Whisper-style encoder and projector for one clip (see :func:`item_flops`)."""
    window = 30 * SAMPLE_RATE
    frames = 3000 if stock else max(1, min(samples, window) // 160)
    positions = (frames - 1) // 2 + 1
    tokens = (positions - 2) // 2 + 1
    d, mel = enc.d_model, enc.num_mel_bins
    conv = 2.0 * 3 * (mel * d * frames + d * d * positions)
    per_layer = 2.0 * positions * (4 * d * d + 2 * d * enc.encoder_ffn_dim) + 4.0 * d * positions**2
    layers = enc.encoder_layers * per_layer
    return conv + layers + 2.0 * tokens * d * llm_hidden


def peak_tflops_for(device_name: str) -> tuple[float | None, str | None]:
    """A GPU's dense bf16 peak from :data:`PEAK_BF16_TFLOPS`, matched by name; ``(None, None)`` if unknown."""
    upper = device_name.upper()
    for key, value, source in PEAK_BF16_TFLOPS:
        if key.upper() in upper:
            return value, source
    return None, None
