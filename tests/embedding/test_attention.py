"""The prefix-aware attention equals plain attention over [prefix; items], values and gradients."""

from __future__ import annotations

import types

import pytest
import torch

from vela_search.embedding.attention import PrefixKV, _exact_with_lse, _fused_with_lse, vela_attention


def _reference(q, prefix_k, prefix_v, k, v, scale):
    """Plain attention: each item sees the whole prefix and its own earlier tokens."""
    batch, heads, seq, _ = q.shape
    groups = heads // k.shape[1]
    full_k = torch.cat([prefix_k.unsqueeze(0).expand(batch, -1, -1, -1), k], dim=2).repeat_interleave(
        groups, 1
    )
    full_v = torch.cat([prefix_v.unsqueeze(0).expand(batch, -1, -1, -1), v], dim=2).repeat_interleave(
        groups, 1
    )
    p = prefix_k.shape[1]
    allowed = torch.ones(seq, p + seq, dtype=torch.bool)
    allowed[:, p:] = torch.ones(seq, seq, dtype=torch.bool).tril()
    scores = (q @ full_k.transpose(-1, -2)) * scale
    scores = scores.masked_fill(~allowed, float("-inf"))
    return (torch.softmax(scores, -1) @ full_v).transpose(1, 2)


@pytest.mark.parametrize("grad", [False, True])
def test_prefix_attention_matches_plain_attention(grad):
    torch.manual_seed(0)
    batch, heads, kv_heads, seq, prefix_len, dim = 3, 4, 2, 7, 11, 8
    q = torch.randn(batch, heads, seq, dim, requires_grad=grad)
    k = torch.randn(batch, kv_heads, seq, dim, requires_grad=grad)
    v = torch.randn(batch, kv_heads, seq, dim, requires_grad=grad)
    prefix = PrefixKV(
        keys={0: torch.randn(kv_heads, prefix_len, dim)}, values={0: torch.randn(kv_heads, prefix_len, dim)}
    )
    prefix.length = prefix_len
    module = types.SimpleNamespace(layer_idx=0)
    out, _ = vela_attention(module, q, k, v, None, scaling=0.3, vela_prefix=prefix)
    expected = _reference(q, prefix.keys[0], prefix.values[0], k, v, 0.3)
    assert torch.allclose(out, expected, atol=1e-5)
    if grad:
        weights = torch.randn_like(out)
        grads = torch.autograd.grad((out * weights).sum(), (q, k, v))
        expected_grads = torch.autograd.grad((expected * weights).sum(), (q, k, v))
        for got, want in zip(grads, expected_grads, strict=True):
            assert torch.allclose(got, want, atol=1e-4)


@pytest.mark.parametrize("causal", [False, True])
def test_fused_kernel_agrees_with_the_formula(causal):
    torch.manual_seed(1)
    q, k, v = (torch.randn(2, 3, 9, 8) for _ in range(3))
    fused = _fused_with_lse(q, k, v, 0.35, causal)
    assert fused is not None, "the CPU fused kernel with LSE should be available"
    exact = _exact_with_lse(q, k, v, 0.35, causal)
    for a, b in zip(fused, exact, strict=True):
        assert torch.allclose(a, b, atol=1e-5)


def test_capture_records_the_prefix():
    capture = PrefixKV()
    q = torch.randn(1, 2, 5, 4)
    k = torch.randn(1, 2, 5, 4)
    vela_attention(types.SimpleNamespace(layer_idx=3), q, k, k, None, vela_capture=capture)
    assert capture.length == 5 and capture.keys[3].shape == (2, 5, 4)
    assert capture.nbytes == 2 * 2 * 5 * 4 * 4
