"""Attention over a shared, read-only demo prefix without copying it.

Every Vela input is embedded behind the same demonstration prefix. The prefix's keys and values are computed
once (:class:`PrefixKV`) and then each batch attends to them *in place*: attention is computed separately over
the prefix (no mask: every item sees all of it) and over the batch's own tokens (causal), and the two partial
results are merged with their log-sum-exp weights. Nothing of size batch x prefix is ever materialised, so a
query costs no copy of the prefix and memory does not grow with batch size times prefix length.

The function is registered with transformers' ``AttentionInterface`` under :data:`ATTENTION_NAME` and set as
the language model's attention implementation; it receives the prefix through the forward's keyword
arguments (``vela_prefix=``), and records a forward's keys/values when asked (``vela_capture=``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

ATTENTION_NAME = "vela_prefix"

# Bounds the transient score matrix of the exact fallback kernel (elements per chunk, fp32).
_MAX_SCORE_ELEMENTS = 1 << 25


@dataclass
class PrefixKV:
    """Per-layer keys and values of the shared prefix, each ``(n_kv_heads, prefix_len, head_dim)``."""

    keys: dict[int, torch.Tensor] = field(default_factory=dict)
    values: dict[int, torch.Tensor] = field(default_factory=dict)
    length: int = 0

    @property
    def nbytes(self) -> int:
        """Bytes held by the cached tensors (the prefix is stored once, whatever the batch size)."""
        return sum(t.numel() * t.element_size() for t in (*self.keys.values(), *self.values.values()))


def register_attention() -> str:
    """Register the prefix-aware attention with transformers (idempotent) and return its name."""
    from transformers import AttentionInterface

    AttentionInterface.register(ATTENTION_NAME, vela_attention)
    return ATTENTION_NAME


def vela_attention(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """transformers attention function: causal self-attention, optionally behind a shared prefix.

    Batches are right-padded, so plain causal masking is exact for every real token (padding only ever
    follows them); ``attention_mask`` is therefore not needed and not used.

    Returns:
        ``(attn_output (batch, seq, heads, head_dim), None)`` as transformers expects.
    """
    layer = module.layer_idx
    capture: PrefixKV | None = kwargs.get("vela_capture")
    prefix: PrefixKV | None = kwargs.get("vela_prefix")
    if capture is not None:
        # Batch 1 by construction: the prefix is one sequence.
        capture.keys[layer] = key[0].detach()
        capture.values[layer] = value[0].detach()
        capture.length = key.shape[2]
    scale = scaling if scaling is not None else query.shape[-1] ** -0.5
    groups = query.shape[1] // key.shape[1]

    if prefix is None or prefix.length == 0:
        out = F.scaled_dot_product_attention(
            query, _repeat_kv(key, groups), _repeat_kv(value, groups), is_causal=True, scale=scale
        )
        return out.transpose(1, 2).contiguous(), None

    batch, heads, seq, dim = query.shape
    kv_heads = key.shape[1]
    # Group query rows by kv head and fold the batch in: (kv_heads, groups * batch * seq, dim). The prefix is
    # then shared by every row as it is, with no expansion over batch or query groups.
    q_rows = query.view(batch, kv_heads, groups, seq, dim).permute(1, 2, 0, 3, 4).reshape(kv_heads, -1, dim)
    out_p, lse_p = _attend_rows(q_rows, prefix.keys[layer], prefix.values[layer], scale)
    out_p = (
        out_p.view(kv_heads, groups, batch, seq, dim).permute(2, 0, 1, 3, 4).reshape(batch, heads, seq, dim)
    )
    lse_p = lse_p.view(kv_heads, groups, batch, seq).permute(2, 0, 1, 3).reshape(batch, heads, seq)

    out_s, lse_s = _attend_causal(query, _repeat_kv(key, groups), _repeat_kv(value, groups), scale)

    # Merge the two softmax partitions exactly. The items' share of the total mass is
    # exp(lse_s) / (exp(lse_p) + exp(lse_s)) = sigmoid(lse_s - lse_p): stable, and few kernels per layer.
    share = torch.sigmoid(lse_s - lse_p).unsqueeze(-1)
    out = torch.lerp(out_p, out_s, share)
    return out.to(query.dtype).transpose(1, 2).contiguous(), None


def _repeat_kv(x: torch.Tensor, groups: int) -> torch.Tensor:
    if groups == 1:
        return x
    b, h, s, d = x.shape
    return x[:, :, None].expand(b, h, groups, s, d).reshape(b, h * groups, s, d)


def _attend_rows(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Unmasked attention of query rows ``(h, n, d)`` over ``(h, p, d)``; returns fp32 output and LSE."""
    out, lse = _attend(q.unsqueeze(0), k.unsqueeze(0), v.unsqueeze(0), scale, causal=False)
    return out[0], lse[0]


def _attend_causal(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Causal attention of a batch over its own tokens ``(b, h, s, d)``; fp32 output and LSE."""
    return _attend(q, k, v, scale, causal=True)


def _attend(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float, *, causal: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """Attention that also returns the log-sum-exp, ``(b, h, n, d)`` over ``(b, h, p, d)``.

    Without autograd it uses PyTorch's fused kernels, which return the LSE. Their backward ignores the
    LSE's gradient, which the merge needs, so with autograd (training behind demos) it uses the exact
    chunked formula instead.
    """
    needs_grad = torch.is_grad_enabled() and (q.requires_grad or k.requires_grad or v.requires_grad)
    if not needs_grad:
        fused = _fused_with_lse(q, k, v, scale, causal)
        if fused is not None:
            return fused
    return _exact_with_lse(q, k, v, scale, causal)


def _fused_with_lse(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float, causal: bool
) -> tuple[torch.Tensor, torch.Tensor] | None:
    """A fused kernel's output and LSE, or None where none applies (the caller falls back)."""
    try:
        if q.device.type == "cpu":
            out, lse = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(
                q, k, v, 0.0, causal, scale=scale
            )[:2]
        elif q.dtype in (torch.float16, torch.bfloat16):
            out, lse = torch.ops.aten._scaled_dot_product_flash_attention(
                q, k, v, 0.0, causal, False, scale=scale
            )[:2]
        else:
            out, lse = torch.ops.aten._scaled_dot_product_efficient_attention(
                q, k, v, None, True, 0.0, causal, scale=scale
            )[:2]
            lse = lse[..., : q.shape[2]]  # the kernel pads the LSE's length
    except (RuntimeError, NotImplementedError, AttributeError):
        return None
    return out.float(), lse.float()


def _exact_with_lse(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float, causal: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """Attention by the formula, in fp32, chunked over query rows to bound the score matrix."""
    rows, keys = q.shape[2], k.shape[2]
    chunk = max(1, _MAX_SCORE_ELEMENTS // max(1, q.shape[0] * q.shape[1] * keys))
    kf, vf = k.float(), v.float()
    outs, lses = [], []
    for start in range(0, rows, chunk):
        scores = torch.matmul(q[:, :, start : start + chunk].float(), kf.transpose(-1, -2)) * scale
        if causal:
            # Query row r (absolute) sees keys 0..r of the same sequence (q and k share positions).
            row_ids = torch.arange(start, min(start + chunk, rows), device=q.device)[:, None]
            scores = scores.masked_fill(torch.arange(keys, device=q.device)[None, :] > row_ids, float("-inf"))
        lse = torch.logsumexp(scores, dim=-1)
        outs.append(torch.matmul(torch.exp(scores - lse.unsqueeze(-1)), vf))
        lses.append(lse)
    return torch.cat(outs, dim=2), torch.cat(lses, dim=2)
