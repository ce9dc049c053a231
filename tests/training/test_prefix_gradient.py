"""Training behind the shared prefix follows the gradient of a plain full forward of prefix + text, and the
attention behind the prefix keeps no score matrix for backward."""

from __future__ import annotations

import pytest
import torch

from vela_search.embedding.demos import Demo, DemoSet
from vela_search.embedding.embedder import EmbedItem, VelaEmbedder
from vela_search.training.lora import LoraSettings, attach_lora, trainable_parameters

TEXTS = ["a dog barks while cars pass", "rain on a tin roof", "a kettle whistles", "people talking far away"]
DEMOS = DemoSet(
    demos=tuple(Demo(word=w, text=f"A {w} can be heard close by") for w in ("dog", "rain", "engine")),
    source="test-demos",
)


def _lora_embedder(demos, *, checkpointing: bool) -> tuple[VelaEmbedder, list[torch.nn.Parameter]]:
    emb = VelaEmbedder.from_pretrained("tiny", demos=demos, device="cpu")
    emb.avoid_no_grad = True
    torch.manual_seed(0)
    peft_model = attach_lora(
        emb, LoraSettings(r=4, alpha=8, dropout=0.0), gradient_checkpointing=checkpointing
    )
    params = [p for _, p in trainable_parameters(peft_model)]
    with torch.no_grad():
        # LoRA's B starts at zero (the adapter starts as a no-op); give it values so that every LoRA weight,
        # those of the k/v projections included, gets a gradient and changes the prefix.
        for name, p in trainable_parameters(peft_model):
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=torch.Generator().manual_seed(len(name))) * 0.3)
    peft_model.eval()  # no dropout: both sides compute exactly the same function
    return emb, params


def _loss(vectors: torch.Tensor) -> torch.Tensor:
    weights = torch.randn(vectors.shape, generator=torch.Generator().manual_seed(7))
    sims = vectors @ vectors.T / 0.05
    return (vectors * weights).sum() + torch.logsumexp(sims, dim=-1).sum()


def _grads(params: list[torch.nn.Parameter]) -> torch.Tensor:
    out = torch.cat([p.grad.flatten() for p in params])
    for p in params:
        p.grad = None
    return out


def _full_forward_vectors(emb: VelaEmbedder, items: list[EmbedItem]) -> torch.Tensor:
    """Each text run with its whole prompt (prefix + item) in one plain forward: the reference."""
    rows = []
    for item in items:
        ids = torch.tensor([emb.full_prompt_ids(item)])
        hidden = emb.backbone.core(input_ids=ids, use_cache=False).last_hidden_state
        rows.append(torch.nn.functional.normalize(hidden[0, -1].float(), dim=-1))
    return torch.stack(rows)


@pytest.mark.parametrize(
    ("demos", "checkpointing"),
    [("none", False), (DEMOS, False), (DEMOS, True)],
    ids=["none", "demos", "ckpt"],
)
def test_lora_gradient_equals_a_full_forward(tiny_model_dir, demos, checkpointing):
    emb, params = _lora_embedder(demos, checkpointing=checkpointing)
    items = [EmbedItem("caption", text=t) for t in TEXTS]
    before = emb.prefix_computations
    with torch.enable_grad():
        shared = emb.encode(items, grad=True)
        _loss(shared).backward()
    assert emb.prefix_computations == before + 1, "one prefix forward per batch, not one per item"
    got = _grads(params)
    with torch.enable_grad():
        full = _full_forward_vectors(emb, items)
        _loss(full).backward()
    want = _grads(params)
    torch.testing.assert_close(shared.detach(), full.detach(), atol=2e-5, rtol=0)
    assert want.norm() > 0
    relative = float((got - want).norm() / want.norm())
    assert relative < 1e-4, f"LoRA gradient differs from a full forward's by {relative:.2e} (relative norm)"
    # The k/v projections' LoRA weights are among those whose gradient flows through the prefix.
    kv = [
        p
        for (name, p) in zip([n for n, _ in trainable_parameters(emb.backbone.model)], params, strict=True)
        if "k_proj" in name or "v_proj" in name
    ]
    assert kv


def test_attention_behind_the_prefix_keeps_no_score_matrix_for_backward(monkeypatch):
    """Under autograd, what the prefix attention saves for backward does not grow with rows x prefix."""
    from vela_search.embedding import attention
    from vela_search.embedding.attention import PrefixKV, vela_attention

    monkeypatch.setattr(attention, "_MAX_SCORE_ELEMENTS", 1 << 14)  # many chunks
    torch.manual_seed(0)
    batch, heads, kv_heads, seq, prefix_len, dim = 4, 4, 2, 32, 1024, 8
    q = torch.randn(batch, heads, seq, dim, requires_grad=True)
    k = torch.randn(batch, kv_heads, seq, dim, requires_grad=True)
    v = torch.randn(batch, kv_heads, seq, dim, requires_grad=True)
    pk = torch.randn(kv_heads, prefix_len, dim, requires_grad=True)
    pv = torch.randn(kv_heads, prefix_len, dim, requires_grad=True)
    prefix = PrefixKV(keys={0: pk}, values={0: pv}, length=prefix_len, keep_graph=True)

    saved: dict[tuple[int, int], int] = {}  # by storage: the same tensor saved twice costs nothing more

    def pack(t: torch.Tensor) -> torch.Tensor:
        saved[(t.untyped_storage().data_ptr(), t.storage_offset())] = t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out, _ = vela_attention(
            type("M", (), {"layer_idx": 0})(), q, k, v, None, scaling=0.3, vela_prefix=prefix
        )
    scores_bytes = batch * heads * seq * prefix_len * 4  # one fp32 score matrix over the prefix
    assert sum(saved.values()) < scores_bytes / 4, (sum(saved.values()), scores_bytes)
    out.sum().backward()  # and the recomputation gives gradients everywhere
    assert all(t.grad is not None and t.grad.abs().sum() > 0 for t in (q, k, v, pk, pv))
