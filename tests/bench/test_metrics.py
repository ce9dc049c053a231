from __future__ import annotations

import math

import numpy as np
import pytest

from vela_search.bench.metrics import modality_gap, retrieval_metrics

KEYS = [
    f"{d}_{m}" for d in ("t2a", "a2t") for m in ("R@1", "R@5", "R@10", "mAP@10", "median_rank", "mean_rank")
]


def _five_per_clip(n_audio: int) -> np.ndarray:
    return np.repeat(np.arange(n_audio), 5)


# ---------------------------------------------------------------------------------------------------------
# An independent, deliberately plain implementation: one loop per query, ranking by an explicit sort in
# which non-relevant items come first among equal scores (the pessimistic tie rule).
# ---------------------------------------------------------------------------------------------------------


def _pessimistic_order(scores: np.ndarray, relevant: np.ndarray) -> list[int]:
    items = list(range(len(scores)))
    return sorted(items, key=lambda k: (-float(scores[k]), bool(relevant[k])))


def _reference(sim: np.ndarray, c2a: np.ndarray) -> dict[str, float]:
    n_cap, n_audio = sim.shape
    t2a_ranks, t2a_ap = [], []
    for i in range(n_cap):
        relevant = np.arange(n_audio) == c2a[i]
        order = _pessimistic_order(sim[i], relevant)
        r = order.index(int(c2a[i]))
        t2a_ranks.append(r)
        t2a_ap.append(1.0 / (r + 1) if r < 10 else 0.0)
    a2t_ranks, a2t_ap = [], []
    for a in range(n_audio):
        relevant = c2a == a
        if not relevant.any():
            continue
        order = _pessimistic_order(sim[:, a], relevant)
        positions = sorted(p for p, k in enumerate(order) if relevant[k])
        a2t_ranks.append(positions[0])
        hits = [p for p in positions if p < 10]
        a2t_ap.append(sum((j + 1) / (p + 1) for j, p in enumerate(hits)) / len(positions))
    out = {}
    for d, ranks, ap in (("t2a", t2a_ranks, t2a_ap), ("a2t", a2t_ranks, a2t_ap)):
        ranks = np.array(ranks)
        for k in (1, 5, 10):
            out[f"{d}_R@{k}"] = 100.0 * sum(r < k for r in ranks) / len(ranks)
        out[f"{d}_mAP@10"] = 100.0 * sum(ap) / len(ap)
        out[f"{d}_median_rank"] = math.floor(float(np.median(ranks))) + 1
        out[f"{d}_mean_rank"] = sum(ranks) / len(ranks) + 1
    return out


def _assert_close(got: dict[str, float], want: dict[str, float]) -> None:
    assert set(got) == set(KEYS)
    for key in KEYS:
        assert got[key] == pytest.approx(want[key], abs=1e-9), key


# --------------------------------------------------------------------------------------------- known cases


def test_keys_and_types():
    m = retrieval_metrics(np.eye(3), np.arange(3))
    assert list(m) == KEYS
    assert all(type(v) is float for v in m.values())


def test_perfect_five_captions_per_clip():
    n_audio = 12
    c2a = _five_per_clip(n_audio)
    sim = (c2a[:, None] == np.arange(n_audio)[None, :]).astype(np.float32)
    m = retrieval_metrics(sim, c2a)
    for d in ("t2a", "a2t"):
        assert m[f"{d}_R@1"] == m[f"{d}_R@5"] == m[f"{d}_R@10"] == 100.0
        assert m[f"{d}_mAP@10"] == pytest.approx(100.0)
        assert m[f"{d}_median_rank"] == m[f"{d}_mean_rank"] == 1.0


def test_worst_case():
    n_audio = 12
    c2a = _five_per_clip(n_audio)
    rng = np.random.default_rng(0)
    sim = rng.uniform(0.0, 1.0, size=(len(c2a), n_audio))
    sim[np.arange(len(c2a)), c2a] = -1.0
    m = retrieval_metrics(sim, c2a)
    for d in ("t2a", "a2t"):
        assert m[f"{d}_R@1"] == m[f"{d}_R@5"] == m[f"{d}_R@10"] == m[f"{d}_mAP@10"] == 0.0
    assert m["t2a_median_rank"] == m["t2a_mean_rank"] == n_audio
    # The 5 relevant captions are the last 5 of 60: the best of them is 56th.
    assert m["a2t_median_rank"] == m["a2t_mean_rank"] == len(c2a) - 4


def test_all_ties_rank_last():
    n_audio = 12
    c2a = _five_per_clip(n_audio)
    m = retrieval_metrics(np.zeros((len(c2a), n_audio)), c2a)
    assert m["t2a_R@10"] == 0.0 and m["a2t_R@10"] == 0.0
    assert m["t2a_mAP@10"] == 0.0 and m["a2t_mAP@10"] == 0.0
    assert m["t2a_mean_rank"] == n_audio
    assert m["a2t_mean_rank"] == len(c2a) - 4


def test_tie_with_one_other_item_is_pessimistic():
    # Caption 0's clip (0) ties with clip 1 and beats clip 2: rank 2, not 1.
    sim = np.array([[0.5, 0.5, 0.1], [0.1, 0.9, 0.0], [0.0, 0.0, 0.3]])
    m = retrieval_metrics(sim, np.array([0, 1, 2]))
    assert m["t2a_R@1"] == pytest.approx(200 / 3)
    assert m["t2a_mean_rank"] == pytest.approx((2 + 1 + 1) / 3)
    assert m["t2a_mAP@10"] == pytest.approx(100 * (0.5 + 1 + 1) / 3)


def test_hand_computed_two_captions_per_clip():
    # 3 clips, captions 0,1 -> clip 0; 2,3 -> clip 1; 4,5 -> clip 2.
    sim = np.array(
        [
            [0.9, 0.1, 0.0],  # t2a rank 1
            [0.2, 0.8, 0.1],  # rank 2
            [0.1, 0.7, 0.3],  # rank 1
            [0.6, 0.5, 0.4],  # rank 2
            [0.3, 0.2, 0.1],  # rank 3
            [0.0, 0.1, 0.95],  # rank 1
        ]
    )
    c2a = np.array([0, 0, 1, 1, 2, 2])
    m = retrieval_metrics(sim, c2a)
    t2a = np.array([0, 1, 0, 1, 2, 0])
    assert m["t2a_R@1"] == pytest.approx(50.0)
    assert m["t2a_R@5"] == 100.0
    assert m["t2a_mean_rank"] == pytest.approx(t2a.mean() + 1)
    assert m["t2a_median_rank"] == 1 + 0  # floor(median([0,0,0,1,1,2]) = 0.5) + 1
    assert m["t2a_mAP@10"] == pytest.approx(100 * np.mean(1 / (t2a + 1)))
    # a2t. Clip 0 column: [.9 .2 .1 .6 .3 .0] -> captions 0 and 1 at positions 0 and 3.
    #      Clip 1 column: [.1 .8 .7 .5 .2 .1] -> captions 2, 3 at positions 1 and 2.
    #      Clip 2 column: [.0 .1 .3 .4 .1 .95] -> captions 5, 4 at positions 0 and 4 (caption 4 ties with
    #      caption 1 at 0.1 and ranks behind it).
    best = np.array([0, 1, 0])
    ap = np.array([(1 / 1 + 2 / 4) / 2, (1 / 2 + 2 / 3) / 2, (1 / 1 + 2 / 5) / 2])
    assert m["a2t_R@1"] == pytest.approx(200 / 3)
    assert m["a2t_mean_rank"] == pytest.approx(best.mean() + 1)
    assert m["a2t_mAP@10"] == pytest.approx(100 * ap.mean())


def test_a2t_map_sorts_caption_positions():
    # Clip 0's first caption ranks 4th and its second ranks 1st. Sorted positions give
    # (1/1 + 2/4) / 2 = 0.75; pairing them in caption order would give (1/4 + 2/1) / 2 = 1.125 > 1.
    sim = np.zeros((5, 2))
    sim[:, 0] = [0.35, 0.9, 0.5, 0.4, 0.3]
    sim[:, 1] = [0.0, 0.0, 1.0, 1.0, 1.0]
    m = retrieval_metrics(sim, np.array([0, 0, 1, 1, 1]))
    clip1_ap = (1 / 1 + 2 / 2 + 3 / 3) / 3
    assert m["a2t_mAP@10"] == pytest.approx(100 * (0.75 + clip1_ap) / 2)


def test_map_cutoff_at_ten():
    n_audio = 20
    sim = np.tile(np.arange(n_audio, 0, -1, dtype=float), (n_audio, 1))  # every query ranks clip k at k
    m = retrieval_metrics(sim, np.arange(n_audio))
    want = sum(1 / (r + 1) for r in range(10)) / n_audio
    assert m["t2a_mAP@10"] == pytest.approx(100 * want)
    assert m["t2a_R@10"] == 50.0


def test_clip_without_captions_is_only_a_distractor():
    sim = np.array([[0.9, 0.95], [0.1, 0.95]])
    m = retrieval_metrics(sim, np.array([0, 0]))  # clip 1 has no caption
    assert m["t2a_R@1"] == 0.0 and m["t2a_R@5"] == 100.0
    assert m["a2t_R@1"] == 100.0  # averaged over clip 0 only


# ---------------------------------------------------------------------------- against the loop reference


@pytest.mark.parametrize("seed", range(6))
def test_matches_loop_reference_on_random_matrices(seed):
    rng = np.random.default_rng(seed)
    n_audio = int(rng.integers(8, 40))
    counts = rng.integers(0 if seed % 2 else 1, 7, size=n_audio)
    counts[0] = max(counts[0], 1)
    c2a = np.repeat(np.arange(n_audio), counts)
    rng.shuffle(c2a)
    if seed < 3:
        sim = rng.standard_normal((len(c2a), n_audio)).astype(np.float32)
    else:  # few distinct values: many ties
        sim = rng.integers(0, 4, size=(len(c2a), n_audio)).astype(np.float64)
    # Make retrieval better than chance so the top-10 metrics are not all zero.
    sim[np.arange(len(c2a)), c2a] += rng.uniform(0, 2, size=len(c2a))
    _assert_close(retrieval_metrics(sim, c2a), _reference(sim, c2a))


def test_matches_reference_protocol_without_ties():
    # XinhaoMei/audio-text_retrieval: argsort rankings, 5 consecutive captions per clip.
    rng = np.random.default_rng(11)
    n_audio = 30
    c2a = _five_per_clip(n_audio)
    sim = rng.standard_normal((5 * n_audio, n_audio)) + 2.0 * (c2a[:, None] == np.arange(n_audio))
    t2a = np.array([np.where(np.argsort(sim[i])[::-1] == c2a[i])[0][0] for i in range(len(c2a))])
    best, ap = [], []
    for a in range(n_audio):
        inds = np.argsort(sim[:, a])[::-1]
        pos = np.sort([np.where(inds == i)[0][0] for i in range(5 * a, 5 * a + 5)])
        best.append(pos[0])
        top = pos[pos < 10] + 1
        ap.append(np.sum(np.arange(1, len(top) + 1) / top) / 5)
    m = retrieval_metrics(sim, c2a)
    assert m["t2a_R@1"] == pytest.approx(100 * np.mean(t2a < 1))
    assert m["t2a_R@10"] == pytest.approx(100 * np.mean(t2a < 10))
    assert m["t2a_mAP@10"] == pytest.approx(100 * np.sum(1 / (t2a[t2a < 10] + 1)) / len(t2a))
    assert m["t2a_median_rank"] == np.floor(np.median(t2a)) + 1
    assert m["a2t_R@5"] == pytest.approx(100 * np.mean(np.array(best) < 5))
    assert m["a2t_mAP@10"] == pytest.approx(100 * np.mean(ap))
    assert m["a2t_mean_rank"] == pytest.approx(np.mean(best) + 1)


def test_clotho_sized_matrix():
    n_audio = 1045
    c2a = _five_per_clip(n_audio)
    rng = np.random.default_rng(0)
    sim = rng.standard_normal((len(c2a), n_audio)).astype(np.float32)
    sim[np.arange(len(c2a)), c2a] = 10.0
    sim[:5, 3] = 20.0  # clip 0's captions prefer clip 3
    m = retrieval_metrics(sim, c2a)
    assert m["t2a_R@1"] == pytest.approx(100 * (len(c2a) - 5) / len(c2a))
    # Clip 3 now finds clip 0's 5 captions (20) above its own (10): best 0-based rank 5.
    assert m["a2t_R@1"] == m["a2t_R@5"] == pytest.approx(100 * (n_audio - 1) / n_audio)
    assert m["a2t_R@10"] == 100.0


# ------------------------------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "sim, c2a, match",
    [
        (np.array([[np.nan, 0.0]]), np.array([0]), "NaN"),
        (np.array([[np.inf, 0.0]]), np.array([0]), "infinite"),
        (np.zeros((2, 2)), np.array([0]), "shape"),
        (np.zeros((2, 2)), np.array([0, 2]), r"\[0, 2\)"),
        (np.zeros((2, 2)), np.array([0, -1]), r"\[0, 2\)"),
        (np.zeros((2, 2)), np.array([0.0, 1.0]), "integers"),
        (np.zeros(3), np.array([0]), "matrix"),
        (np.zeros((0, 3)), np.zeros(0, dtype=int), "non-empty"),
    ],
)
def test_invalid_input(sim, c2a, match):
    with pytest.raises(ValueError, match=match):
        retrieval_metrics(sim, c2a)


# ---------------------------------------------------------------------------------------------- modality gap


def test_modality_gap_known_values():
    assert modality_gap(np.array([[1.0, 0.0]]), np.array([[0.0, 3.0]])) == pytest.approx(math.sqrt(2))
    assert modality_gap(np.array([[1.0, 0.0]]), np.array([[-5.0, 0.0]])) == pytest.approx(2.0)
    # Centroids (0.5, 0.5) and (0, 1): distance sqrt(0.5).
    audio = np.array([[2.0, 0.0], [0.0, 0.5]])
    text = np.array([[0.0, 1.0], [0.0, 7.0], [0.0, 0.1]])
    assert modality_gap(audio, text) == pytest.approx(math.sqrt(0.5))


def test_modality_gap_identical_and_scale_invariant():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((50, 16))
    assert modality_gap(x, x) == pytest.approx(0.0, abs=1e-12)
    y = rng.standard_normal((80, 16)).astype(np.float32)
    scaled = y * rng.uniform(0.1, 10, size=(80, 1)).astype(np.float32)
    assert modality_gap(x, y) == pytest.approx(modality_gap(x, scaled), rel=1e-5)
    want = np.linalg.norm(
        (x / np.linalg.norm(x, axis=1, keepdims=True)).mean(0)
        - (y / np.linalg.norm(y, axis=1, keepdims=True)).mean(0)
    )
    assert modality_gap(x, y) == pytest.approx(want, rel=1e-6)


@pytest.mark.parametrize(
    "audio, text, match",
    [
        (np.ones((2, 3)), np.ones((2, 4)), "dimensions"),
        (np.zeros((1, 3)), np.ones((2, 3)), "zero vector"),
        (np.ones((0, 3)), np.ones((2, 3)), "non-empty"),
        (np.array([[np.nan, 1.0]]), np.ones((1, 2)), "NaN"),
    ],
)
def test_modality_gap_invalid(audio, text, match):
    with pytest.raises(ValueError, match=match):
        modality_gap(audio, text)
