"""Contrastive loss and held-out metrics for triplet training.

The objective is SimCSE's supervised InfoNCE: each anchor must pick out its own positive among every
positive of the batch (in-batch negatives) and every hard negative of the batch. Embeddings are
L2-normalised inside each function, so callers may pass raw hidden states or unit vectors alike (for unit
vectors the normalisation changes nothing); similarities are cosines, as at search time.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

# Rows of the similarity matrix computed at once in `recall_at_1`, so a large held-out set does not need
# an n x n matrix in memory.
_RECALL_CHUNK = 1024


def info_nce_loss(
    anchor: torch.Tensor,
    positive: torch.Tensor,
    negative: torch.Tensor | None = None,
    *,
    temperature: float = 0.05,
) -> torch.Tensor:
    """SimCSE supervised InfoNCE loss with in-batch and hard negatives.

    logits = normalise(anchor) @ cat(normalise(positive), normalise(negative)).T / temperature, shape
    (B, B + M); the loss is the mean cross-entropy with target i for row i. Computed in float32 whatever
    the input dtype, since bf16 logits at temperature 0.05 lose the precision the softmax needs.

    Args:
        anchor: (B, d) anchor embeddings.
        positive: (B, d) positive embeddings; row i pairs with anchor row i.
        negative: (M, d) hard negative embeddings (usually M = B), or None for in-batch negatives only.
        temperature: Softmax temperature, > 0.

    Returns:
        A scalar tensor (differentiable with respect to the inputs).

    Raises:
        ValueError: Shapes do not match, the batch is empty, or the temperature is not positive.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    _check_pair(anchor, positive, "positive")
    candidates = positive
    if negative is not None:
        if negative.ndim != 2 or negative.shape[1] != anchor.shape[1]:
            raise ValueError(
                f"negative must be (M, {anchor.shape[1]}) like the anchors, got {tuple(negative.shape)}"
            )
        candidates = torch.cat([positive, negative], dim=0)
    a = F.normalize(anchor.float(), dim=-1)
    c = F.normalize(candidates.float(), dim=-1)
    logits = a @ c.T / temperature
    target = torch.arange(a.shape[0], device=a.device)
    return F.cross_entropy(logits, target)


@torch.no_grad()
def triplet_accuracy(anchor: torch.Tensor, positive: torch.Tensor, negative: torch.Tensor) -> float:
    """Fraction of triplets whose anchor is strictly closer (cosine) to its positive than to its negative.

    Args:
        anchor: (B, d) anchor embeddings.
        positive: (B, d) positive embeddings.
        negative: (B, d) hard negative embeddings.

    Returns:
        Accuracy in [0, 1]; ties count as errors.

    Raises:
        ValueError: Shapes do not match or the batch is empty.
    """
    _check_pair(anchor, positive, "positive")
    _check_pair(anchor, negative, "negative")
    a = F.normalize(anchor.float(), dim=-1)
    pos = (a * F.normalize(positive.float(), dim=-1)).sum(-1)
    neg = (a * F.normalize(negative.float(), dim=-1)).sum(-1)
    return (pos > neg).float().mean().item()


@torch.no_grad()
def recall_at_1(anchor: torch.Tensor, positive: torch.Tensor) -> float:
    """Text-to-text R@1: how often an anchor's nearest positive (cosine) is its own.

    Each anchor row i searches all positive rows; it scores a hit when positive i is strictly more similar
    than every other positive. Ties count as misses, so identical embeddings (a collapsed model) score 0
    rather than a lucky first-index hit.

    Args:
        anchor: (B, d) anchor embeddings.
        positive: (B, d) positive embeddings; row i is anchor i's match.

    Returns:
        Recall@1 in [0, 1].

    Raises:
        ValueError: Shapes do not match or the batch is empty.
    """
    _check_pair(anchor, positive, "positive")
    a = F.normalize(anchor.float(), dim=-1)
    p = F.normalize(positive.float(), dim=-1)
    n = a.shape[0]
    hits = 0
    for start in range(0, n, _RECALL_CHUNK):
        sims = a[start : start + _RECALL_CHUNK] @ p.T
        rows = torch.arange(sims.shape[0], device=sims.device)
        own = sims[rows, rows + start]
        others = sims.clone()
        others[rows, rows + start] = float("-inf")
        hits += int((own > others.max(dim=1).values).sum().item())
    return hits / n


def _check_pair(anchor: torch.Tensor, other: torch.Tensor, name: str) -> None:
    if anchor.ndim != 2:
        raise ValueError(f"anchor must be a (B, d) matrix, got shape {tuple(anchor.shape)}")
    if anchor.shape[0] == 0:
        raise ValueError("empty batch: need at least one anchor")
    if other.shape != anchor.shape:
        raise ValueError(
            f"{name} must have the anchors' shape {tuple(anchor.shape)}, got {tuple(other.shape)}"
        )
