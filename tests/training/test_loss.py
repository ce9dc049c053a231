"""InfoNCE loss and held-out metrics."""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from vela_search.training.data import load_triplet_data
from vela_search.training.loss import info_nce_loss, recall_at_1, triplet_accuracy

SHIPPED = Path(__file__).resolve().parents[2] / "data" / "nli" / "triplets.csv"


def unit(*rows: list[float]) -> torch.Tensor:
    return F.normalize(torch.tensor(rows, dtype=torch.float32), dim=-1)


def test_loss_equals_hand_computed_cross_entropy() -> None:
    a = unit([1.0, 0.0], [0.0, 1.0])
    p = unit([0.6, 0.8], [0.0, 1.0])
    n = unit([-1.0, 0.0], [1.0, 0.0])
    t = 0.5
    # Row i: candidates p0, p1, n0, n1; target p_i.
    expected = 0.0
    for i in range(2):
        logits = [float(a[i] @ c) / t for c in (p[0], p[1], n[0], n[1])]
        expected += -logits[i] + math.log(sum(math.exp(x) for x in logits))
    expected /= 2
    got = info_nce_loss(a, p, n, temperature=t)
    assert got.shape == ()
    assert got.item() == pytest.approx(expected, abs=1e-6)


def test_loss_without_negatives_uses_in_batch_positives_only() -> None:
    a = unit([1.0, 0.0], [0.0, 1.0])
    p = unit([1.0, 1.0], [0.0, 1.0])
    t = 1.0
    s = a @ p.T
    expected = F.cross_entropy(s / t, torch.arange(2))
    assert info_nce_loss(a, p, temperature=t).item() == pytest.approx(expected.item(), abs=1e-6)
    # With a single pair there is nothing to contrast against.
    assert info_nce_loss(a[:1], p[:1]).item() == pytest.approx(0.0, abs=1e-6)


def test_loss_normalises_its_inputs() -> None:
    g = torch.Generator().manual_seed(0)
    a, p, n = (torch.randn(4, 8, generator=g) for _ in range(3))
    raw = info_nce_loss(a * 3.0, p * 0.1, n * 7.0)
    normed = info_nce_loss(F.normalize(a, dim=-1), F.normalize(p, dim=-1), F.normalize(n, dim=-1))
    assert raw.item() == pytest.approx(normed.item(), rel=1e-5)


def test_loss_is_lower_when_positives_align() -> None:
    g = torch.Generator().manual_seed(1)
    a = torch.randn(8, 16, generator=g)
    n = torch.randn(8, 16, generator=g)
    aligned = a + 0.05 * torch.randn(8, 16, generator=g)
    random_pos = torch.randn(8, 16, generator=g)
    assert info_nce_loss(a, aligned, n) < info_nce_loss(a, random_pos, n)
    # A hard negative equal to the positive splits the probability mass: the loss is about log 2.
    assert info_nce_loss(a, aligned, n) < info_nce_loss(a, aligned, aligned)
    assert info_nce_loss(a, aligned, aligned).item() == pytest.approx(math.log(2), abs=1e-3)


def test_temperature_sharpens_the_loss() -> None:
    a = unit([1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0])
    p = unit([1.0, 0.1, 0.0], [0.0, 1.0, 0.1], [0.1, 0.0, 1.0])
    n = unit([0.0, 1.0, 1.0], [1.0, 0.0, 1.0], [1.0, 1.0, 0.0])
    # Positives win every row, so a lower temperature drives the loss towards 0 ...
    losses = [info_nce_loss(a, p, n, temperature=t).item() for t in (1.0, 0.2, 0.05, 0.01)]
    assert losses == sorted(losses, reverse=True) and losses[-1] < 1e-3
    # ... and a very high one towards uniform over all 2B candidates: log(6).
    assert info_nce_loss(a, p, n, temperature=1e4).item() == pytest.approx(math.log(6), abs=1e-3)
    with pytest.raises(ValueError, match="temperature"):
        info_nce_loss(a, p, n, temperature=0.0)


def test_loss_gradients_flow_and_low_precision_inputs_work() -> None:
    g = torch.Generator().manual_seed(2)
    a = torch.randn(4, 8, generator=g, requires_grad=True)
    p = torch.randn(4, 8, generator=g, requires_grad=True)
    n = torch.randn(4, 8, generator=g, requires_grad=True)
    loss = info_nce_loss(a, p, n)
    loss.backward()
    assert all(x.grad is not None and torch.isfinite(x.grad).all() for x in (a, p, n))
    bf16 = info_nce_loss(a.detach().bfloat16(), p.detach().bfloat16(), n.detach().bfloat16())
    assert bf16.dtype == torch.float32
    assert bf16.item() == pytest.approx(loss.item(), rel=0.05)


def test_loss_accepts_a_different_number_of_negatives() -> None:
    a = unit([1.0, 0.0], [0.0, 1.0])
    n = unit([1.0, 1.0], [-1.0, 0.0], [0.0, -1.0])
    logits = a @ torch.cat([a, n]).T / 0.05
    expected = F.cross_entropy(logits, torch.arange(2))
    assert info_nce_loss(a, a, n).item() == pytest.approx(expected.item(), rel=1e-6)


@pytest.mark.parametrize(
    ("anchor", "positive", "negative"),
    [
        (torch.zeros(2, 4), torch.zeros(3, 4), None),
        (torch.zeros(2, 4), torch.zeros(2, 4), torch.zeros(2, 5)),
        (torch.zeros(4), torch.zeros(4), None),
        (torch.zeros(0, 4), torch.zeros(0, 4), None),
    ],
)
def test_loss_rejects_bad_shapes(
    anchor: torch.Tensor, positive: torch.Tensor, negative: torch.Tensor | None
) -> None:
    with pytest.raises(ValueError):
        info_nce_loss(anchor, positive, negative)


def test_triplet_accuracy_on_constructed_vectors() -> None:
    a = unit([1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [1.0, 0.0])
    p = unit([1.0, 0.1], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0])
    n = unit([0.0, 1.0], [0.0, 1.0], [-1.0, 1.0], [0.0, 1.0])
    # Row 0: right. Row 1: wrong. Row 2: right. Row 3: tie, which counts as wrong.
    assert triplet_accuracy(a, p, n) == pytest.approx(0.5)
    assert triplet_accuracy(a, a, -a) == 1.0
    assert triplet_accuracy(a * 5, p * 0.2, n) == pytest.approx(0.5)


def test_recall_at_1_on_constructed_vectors() -> None:
    a = unit([1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [1.0, 1.0, 0.0])
    assert recall_at_1(a, a) == 1.0
    # Anchor 3's own positive is less similar to it than positive 0 is.
    p = unit([1.0, 0.1, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [0.0, 1.0, 0.2])
    assert recall_at_1(a, p) == pytest.approx(0.75)
    # Collapsed embeddings: every similarity ties, which scores no hits.
    ones = torch.ones(5, 3)
    assert recall_at_1(ones, ones) == 0.0
    assert recall_at_1(a[:1], p[:1]) == 1.0


def test_recall_at_1_is_chunked_correctly(monkeypatch: pytest.MonkeyPatch) -> None:
    import vela_search.training.loss as loss_mod

    g = torch.Generator().manual_seed(3)
    a = torch.randn(50, 8, generator=g)
    p = a + 0.8 * torch.randn(50, 8, generator=g)
    full = recall_at_1(a, p)
    monkeypatch.setattr(loss_mod, "_RECALL_CHUNK", 7)
    assert recall_at_1(a, p) == full
    sims = F.normalize(a, dim=-1) @ F.normalize(p, dim=-1).T
    assert full == pytest.approx((sims.argmax(dim=1) == torch.arange(50)).float().mean().item())


def test_metrics_reject_mismatched_shapes() -> None:
    with pytest.raises(ValueError):
        triplet_accuracy(torch.zeros(2, 3), torch.zeros(2, 3), torch.zeros(3, 3))
    with pytest.raises(ValueError):
        recall_at_1(torch.zeros(2, 3), torch.zeros(2, 4))


@pytest.fixture
def one_thread() -> Iterator[None]:
    # The model is tiny: thread start-up and contention with other processes cost more than they save.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@pytest.mark.usefixtures("one_thread")
def test_shipped_triplets_are_learnable_and_generalise() -> None:
    """A tiny bag-of-words encoder trained with this loss learns the held-out split of the shipped file.

    Positives share content words with their anchor and hard negatives share the frame, so untrained
    (uniform) word weights score near chance and learned weights must generalise to unseen combinations.
    """
    torch.manual_seed(0)
    data = load_triplet_data(SHIPPED, eval_fraction=0.2, seed=0)
    vocab: dict[str, int] = {}

    def ids(text: str) -> list[int]:
        return [vocab.setdefault(w, len(vocab)) for w in re.findall(r"[a-z']+", text.lower())]

    def encode(model: torch.nn.EmbeddingBag, texts: list[str]) -> torch.Tensor:
        seqs = [torch.tensor(ids(t)) for t in texts]
        offsets = torch.tensor([0] + [len(s) for s in seqs[:-1]]).cumsum(0)
        return model(torch.cat(seqs), offsets)

    for t in data.train + data.eval:
        ids(t.anchor), ids(t.positive), ids(t.negative)
    model = torch.nn.EmbeddingBag(len(vocab), 32, mode="mean")
    columns = [[getattr(t, f) for t in data.eval] for f in ("anchor", "positive", "negative")]

    def evaluate() -> tuple[float, float]:
        with torch.no_grad():
            a, p, n = (encode(model, c) for c in columns)
        return triplet_accuracy(a, p, n), recall_at_1(a, p)

    acc0, r0 = evaluate()
    opt = torch.optim.AdamW(model.parameters(), lr=0.05)
    batch = 32
    first = last = 0.0
    for step in range(150):
        rows = [data.train[i] for i in torch.randint(len(data.train), (batch,)).tolist()]
        a, p, n = (encode(model, [getattr(t, f) for t in rows]) for f in ("anchor", "positive", "negative"))
        loss = info_nce_loss(a, p, n)
        opt.zero_grad()
        loss.backward()
        opt.step()
        first = loss.item() if step == 0 else first
        last = loss.item()
    acc1, r1 = evaluate()
    assert last < first / 2
    assert acc1 >= 0.9 and acc1 > acc0 + 0.2, (acc0, acc1)
    assert r1 > r0, (r0, r1)
