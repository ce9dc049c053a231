"""Attention over a shared, read-only demo prefix without copying it.

Every Vela input is embedded behind the same demonstration prefix. The prefix's keys and values are computed
once (:class:`PrefixKV`) and then each batch attends to them *in place*: attention is computed separately over
the prefix (no mask: every item sees all of it) and over the batch's own tokens (causal), and the two partial
results are merged with their log-sum-exp weights. Nothing of size batch x prefix is ever materialised, so a
query costs no copy of the prefix and memory does not grow with batch size times prefix length.

The function is registered with transformers' ``AttentionInterface`` under :data:`ATTENTION_NAME` and set as
the language model's attention implementation; it receives the prefix through the forward's keyword
arguments (``vela_prefix=``), and records a forward's keys/values when asked (``vela_capture=``).

Padding: the embedder right-pads its batches and passes no mask (causal masking alone is then exact for every
real token). transformers hands a custom attention no mask, so :func:`guard_padding` checks a 2-D
``attention_mask`` given to the language model: right padding runs, left padding is refused with a clear
error. A 4-D mask that does reach :func:`vela_attention` is honoured, except left padding behind a prefix
(its pads would sit between the prefix and the tokens), which is refused.

Training: when the prefix's keys/values carry autograd history (``PrefixKV.keep_graph``), every item's
attention backpropagates into them, so gradients equal those of a plain forward of prefix + item. The
attention formula with log-sum-exp is then recomputed chunk by chunk in the backward pass, so no chunk's
score matrix is kept: memory per layer is the output, not batch x tokens x prefix scores.
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
    # Keep the captured tensors' autograd history (training: items backpropagate into the prefix).
    keep_graph: bool = False

    @property
    def nbytes(self) -> int:
        """Bytes held by the cached tensors (the prefix is stored once, whatever the batch size)."""
        return sum(t.numel() * t.element_size() for t in (*self.keys.values(), *self.values.values()))


def register_attention() -> str:
    """Register the prefix-aware attention with transformers (idempotent) and return its name."""
    from transformers import AttentionInterface

    AttentionInterface.register(ATTENTION_NAME, vela_attention)
    return ATTENTION_NAME


def guard_padding(language_model: torch.nn.Module) -> None:
    """Refuse a forward whose ``attention_mask`` the prefix attention would get wrong.

    transformers builds no mask for a custom attention (it would also check every forward's position ids
    on the host, a GPU sync that CUDA graphs cannot capture), so a ``attention_mask=`` given to the
    language model never reaches :func:`vela_attention`. Causal masking alone is exact for right-padded
    rows; a left-padded (or holed) mask is refused here with a clear error instead of being ignored.
    """
    language_model.register_forward_pre_hook(_check_padding_mask, with_kwargs=True)


def _check_padding_mask(module: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    mask = kwargs.get("attention_mask")
    if mask is None:
        return
    if not isinstance(mask, torch.Tensor) or mask.dim() != 2:
        raise ValueError(
            "the Vela attention takes a 2-D padding mask (batch, tokens) with right padding, or none; "
            f"got {type(mask).__name__}{tuple(mask.shape) if isinstance(mask, torch.Tensor) else ''}"
        )
    if _left_padded(mask.bool()[:, None, None, :]):
        raise ValueError(
            "the Vela attention needs right-padded batches (pads after the tokens; tokenizer "
            "padding_side='right'): this attention_mask hides tokens before visible ones (left padding), "
            "which causal masking cannot express and a shared prefix would see in the wrong place"
        )


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

    ``attention_mask`` (a boolean or additive ``(batch, 1, q, k)`` mask over the batch's own tokens, as
    transformers builds it for SDPA) is honoured; None means plain causal masking, which is exact for
    right-padded batches.

    Returns:
        ``(attn_output (batch, seq, heads, head_dim), None)`` as transformers expects.

    Raises:
        ValueError: A left-padded mask behind a prefix, or a mask of the wrong shape.
    """
    layer = module.layer_idx
    capture: PrefixKV | None = kwargs.get("vela_capture")
    prefix: PrefixKV | None = kwargs.get("vela_prefix")
    if capture is not None and layer not in capture.keys:
        # Batch 1 by construction: the prefix is one sequence. The first write wins: activation
        # checkpointing re-runs the layer in backward, and items already hold the original tensors.
        capture.keys[layer] = key[0] if capture.keep_graph else key[0].detach()
        capture.values[layer] = value[0] if capture.keep_graph else value[0].detach()
        capture.length = key.shape[2]
    scale = scaling if scaling is not None else query.shape[-1] ** -0.5
    groups = query.shape[1] // key.shape[1]
    keep = _visible_keys(attention_mask, query, key)

    if prefix is None or prefix.length == 0:
        out = F.scaled_dot_product_attention(
            query,
            _repeat_kv(key, groups),
            _repeat_kv(value, groups),
            attn_mask=keep,
            is_causal=keep is None,
            scale=scale,
        )
        return out.transpose(1, 2).contiguous(), None
    if keep is not None and _left_padded(keep):
        raise ValueError(
            "the Vela prefix attention needs right-padded batches behind a prefix: this attention_mask hides "
            "tokens before visible ones (left padding), which would put pads between the prefix and the "
            "tokens; pad on the right (tokenizer padding_side='right')"
        )

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

    out_s, lse_s = _attend_causal(query, _repeat_kv(key, groups), _repeat_kv(value, groups), scale, keep)

    # Merge the two softmax partitions exactly. The items' share of the total mass is
    # exp(lse_s) / (exp(lse_p) + exp(lse_s)) = sigmoid(lse_s - lse_p): stable, and few kernels per layer.
    share = torch.sigmoid(lse_s - lse_p).unsqueeze(-1)
    out = torch.lerp(out_p, out_s, share)
    return out.to(query.dtype).transpose(1, 2).contiguous(), None


def _visible_keys(mask: torch.Tensor | None, query: torch.Tensor, key: torch.Tensor) -> torch.Tensor | None:
    """The attention mask as booleans ``(batch, 1, q, k)`` (True: may attend), or None for plain causal.

    Rows that see no key at all (pads before the first token) are let see every key: their output is
    garbage either way, but finite, so it cannot leak NaN into real rows through a zero weight.
    """
    if mask is None:
        return None
    batch, _, q_len, _ = query.shape
    k_len = key.shape[2]
    if mask.dim() != 4 or mask.shape[-2:] != (q_len, k_len) or mask.shape[0] not in (1, batch):
        raise ValueError(
            f"attention_mask of shape {tuple(mask.shape)} does not fit a batch of {batch} x {q_len} "
            f"queries over {k_len} keys; expected (batch, 1, {q_len}, {k_len})"
        )
    keep = mask if mask.dtype == torch.bool else mask > torch.finfo(mask.dtype).min / 2
    return keep | ~keep.any(dim=-1, keepdim=True)


def _left_padded(keep: torch.Tensor) -> bool:
    """Whether a row's last query hides a key that comes before one it sees (pads before tokens)."""
    last = keep[:, :, -1, :]
    seen_later = torch.flip(torch.cummax(torch.flip(last.int(), [-1]), -1).values, [-1]).bool()
    return bool((seen_later & ~last).any())


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
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float, keep: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Causal attention of a batch over its own tokens ``(b, h, s, d)``; fp32 output and LSE.

    ``keep`` (``(b, 1, s, s)`` booleans) replaces the causal mask when given.
    """
    return _attend(q, k, v, scale, causal=keep is None, keep=keep)


def _attend(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    scale: float,
    *,
    causal: bool,
    keep: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Attention that also returns the log-sum-exp, ``(b, h, n, d)`` over ``(b, h, p, d)``.

    Without autograd and without a mask it uses PyTorch's fused kernels, which return the LSE. Their
    backward ignores the LSE's gradient, which the merge needs, so with autograd (training) it uses the
    exact chunked formula, recomputed chunk by chunk in backward.
    """
    needs_grad = torch.is_grad_enabled() and (q.requires_grad or k.requires_grad or v.requires_grad)
    if not needs_grad and keep is None:
        fused = _fused_with_lse(q, k, v, scale, causal)
        if fused is not None:
            return fused
    return _exact_with_lse(q, k, v, scale, causal, keep=keep)


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
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    scale: float,
    causal: bool,
    *,
    keep: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Attention by the formula, in fp32, chunked over query rows to bound the score matrix.

    With autograd each chunk is checkpointed: its scores and probabilities are dropped after the forward
    and recomputed in backward, so at most one chunk's score matrix (:data:`_MAX_SCORE_ELEMENTS` fp32
    values, plus its gradient) exists at a time, forward or backward.
    """
    from torch.utils.checkpoint import checkpoint

    rows, keys = q.shape[2], k.shape[2]
    chunk = max(1, _MAX_SCORE_ELEMENTS // max(1, q.shape[0] * q.shape[1] * keys))
    recompute = torch.is_grad_enabled() and (q.requires_grad or k.requires_grad or v.requires_grad)
    outs, lses = [], []
    for start in range(0, rows, chunk):
        stop = min(start + chunk, rows)
        part_keep = None if keep is None else keep[:, :, start:stop]
        args = (q[:, :, start:stop], k, v, part_keep, scale, causal, start)
        if recompute:
            out, lse = checkpoint(_attend_chunk, *args, use_reentrant=False)
        else:
            out, lse = _attend_chunk(*args)
        outs.append(out)
        lses.append(lse)
    return torch.cat(outs, dim=2), torch.cat(lses, dim=2)


def _attend_chunk(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    keep: torch.Tensor | None,
    scale: float,
    causal: bool,
    start: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Output and LSE of query rows ``start..`` (fp32). A row that sees no key gets LSE -inf, output 0."""
    scores = torch.matmul(q.float(), k.float().transpose(-1, -2)) * scale
    if keep is not None:
        scores = scores.masked_fill(~keep, float("-inf"))
    elif causal:
        # Query row r (absolute) sees keys 0..r of the same sequence (q and k share positions).
        row_ids = torch.arange(start, start + q.shape[2], device=q.device)[:, None]
        scores = scores.masked_fill(
            torch.arange(k.shape[2], device=q.device)[None, :] > row_ids, float("-inf")
        )
    lse = torch.logsumexp(scores, dim=-1)
    # exp(-inf - 0) = 0 for rows without keys, instead of exp(-inf - -inf) = NaN.
    shift = torch.where(torch.isfinite(lse), lse, torch.zeros_like(lse))
    return torch.matmul(torch.exp(scores - shift.unsqueeze(-1)), v.float()), lse
