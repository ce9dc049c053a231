"""Held-out metrics of an embedder on triplets: triplet accuracy and text-to-text R@1 (caption mode).

Run before, during and after training by the step loop (:mod:`vela_search.training.loop`), in its
evaluation mode, and usable on any embedder. A training embedder (``avoid_no_grad``) embeds under
``enable_grad``, never ``no_grad`` (the bitsandbytes pitfall of :mod:`vela_search.training.trainer`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

    from vela_search.embedding.embedder import VelaEmbedder
    from vela_search.training.data import Triplet

__all__ = ["evaluate"]


def evaluate(embedder: VelaEmbedder, triplets: Sequence[Triplet], *, chunk: int = 192) -> dict[str, Any]:
    """Held-out metrics of an embedder on triplets (caption mode, as in training).

    Args:
        embedder: The embedder (in training: with its current weights).
        triplets: Held-out rows.
        chunk: Texts embedded per call (bounds memory when the forward builds a graph).

    Returns:
        ``{"triplet_accuracy", "recall_at_1", "pairs"}``: how often the anchor is closer to its positive
        than to its hard negative, and text-to-text R@1 of anchors against all held-out positives.
    """
    from vela_search.training.loss import recall_at_1, triplet_accuracy

    if not triplets:
        raise ValueError("evaluation needs at least one triplet")
    vectors = _embed_detached(
        embedder,
        [t.anchor for t in triplets] + [t.positive for t in triplets] + [t.negative for t in triplets],
        chunk=max(1, chunk),
    )
    n = len(triplets)
    a, p, neg = vectors[:n], vectors[n : 2 * n], vectors[2 * n :]
    return {"triplet_accuracy": triplet_accuracy(a, p, neg), "recall_at_1": recall_at_1(a, p), "pairs": n}


def _embed_detached(embedder: VelaEmbedder, texts: list[str], *, chunk: int) -> torch.Tensor:
    """Caption embeddings, detached, behind the cached prefix.

    A training embedder (``avoid_no_grad``) runs them under enable_grad, never no_grad (see module doc).
    """
    import torch

    from vela_search.embedding.embedder import EmbedItem

    items = [EmbedItem("caption", text=t) for t in texts]
    parts = []
    for start in range(0, len(items), chunk):
        parts.append(embedder.encode(items[start : start + chunk], grad=False).detach())
    return torch.cat(parts)
