"""Re-ranking in the retrieval benchmark: a judge that knows the answer lifts R@1; both reports in one run."""

from __future__ import annotations

import json

import numpy as np
from typer.testing import CliRunner

from tests.bench.dataset_factory import clotho_file_name, make_clotho
from vela_search.bench.datasets import load_dataset
from vela_search.bench.metrics import retrieval_metrics
from vela_search.bench.rerank_eval import rerank_retrieval
from vela_search.bench.runner import decode_benchmark_clip
from vela_search.cli.app import app
from vela_search.embedding.judge_prompt import DEFAULT_JUDGE_PROMPT


def decode(path):
    return decode_benchmark_clip(path)[0]


class KnowingJudge:
    """Says yes (log-odds +10) to the clip that belongs to the caption, no (-10) to every other clip."""

    prompt = DEFAULT_JUDGE_PROMPT

    def __init__(self, owner_of_caption: dict[str, bytes]) -> None:
        self.owner_of_caption = owner_of_caption
        self.calls = 0

    def judge(self, reference, clips):
        self.calls += 1
        right = self.owner_of_caption[reference.text]
        return np.array([10.0 if c.tobytes() == right else -10.0 for c in clips])


def test_a_judge_that_knows_the_answer_lifts_recall_within_the_top_n(tmp_path):
    dataset = load_dataset("clotho", make_clotho(tmp_path / "clotho", 6, seconds=0.5), "evaluation")
    c2a = dataset.caption_to_audio
    waves = [decode_benchmark_clip(p)[0].tobytes() for p in dataset.audio_paths]
    judge = KnowingJudge({c: waves[a] for c, a in zip(dataset.captions, c2a, strict=True)})
    rng = np.random.default_rng(0)
    similarity = rng.uniform(-0.2, 0.2, (len(dataset.captions), 6))
    similarity[np.arange(len(c2a)), c2a] -= 0.5  # the right clip scores last by cosine ...
    similarity[0, c2a[0]] = similarity[0].max() - 1.0
    report = rerank_retrieval(similarity, c2a, dataset.captions, dataset.audio_paths, judge, 6, decode=decode)
    before = retrieval_metrics(similarity, c2a)
    assert before["t2a_R@1"] == 0.0
    assert report.metrics["t2a_R@1"] == 100.0 and report.metrics["t2a_mean_rank"] == 1.0
    assert set(report.metrics) == {k for k in before if k.startswith("t2a_")}
    assert report.judged == 6 * len(dataset.captions) and judge.calls == len(dataset.captions)
    # ... and outside the top n the judge never sees it: the cosine order stays.
    narrow = rerank_retrieval(similarity, c2a, dataset.captions, dataset.audio_paths, judge, 2, decode=decode)
    assert narrow.metrics["t2a_R@1"] == 0.0 and narrow.metrics["t2a_R@5"] == before["t2a_R@5"]


def test_an_undecodable_candidate_keeps_its_cosine_place(tmp_path):
    data = make_clotho(tmp_path / "clotho", 3, seconds=0.5)
    dataset = load_dataset("clotho", data, "evaluation")
    c2a = dataset.caption_to_audio
    waves = [decode_benchmark_clip(p)[0].tobytes() for p in dataset.audio_paths]
    judge = KnowingJudge({c: waves[a] for c, a in zip(dataset.captions, c2a, strict=True)})
    (data / "evaluation" / clotho_file_name(1)).write_bytes(b"not audio")
    similarity = np.tile(np.array([0.3, 0.2, 0.1]), (len(c2a), 1))
    report = rerank_retrieval(similarity, c2a, dataset.captions, dataset.audio_paths, judge, 3, decode=decode)
    assert report.undecodable == len(c2a)
    # Clip 0's captions: judged yes, it stays first. Clip 1 (undecodable) stays second for its captions.
    # Clip 2's captions: clip 2 takes the first judged slot from clip 0, around clip 1's kept slot.
    assert report.metrics["t2a_R@1"] == 100.0 * np.mean(c2a != 1)
    assert report.metrics["t2a_mean_rank"] == np.mean(np.where(c2a == 1, 2.0, 1.0))


def test_bench_clotho_rerank_reports_both_sets_of_metrics(tmp_path, tiny_model_dir):
    data = make_clotho(tmp_path / "clotho", 3, seconds=0.5)
    out = tmp_path / "report.json"
    args = [
        "bench",
        "clotho",
        "--data-dir",
        str(data),
        "--model",
        "tiny",
        "--device",
        "cpu",
        "--demos",
        "none",
    ]
    result = CliRunner().invoke(app, [*args, "--rerank", "2", "--json", str(out)])
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert report["rerank"]["n"] == 2 and report["rerank"]["judged"] == 2 * report["n_captions"]
    assert set(report["rerank"]["metrics"]) == {k for k in report["metrics"] if k.startswith("t2a_")}
    assert report["rerank"]["ms_per_candidate"] > 0
    table = CliRunner().invoke(app, [*args, "--rerank", "2"])
    assert table.exit_code == 0, table.output
    assert "top 2 re-ranked" in table.stdout and "ms per candidate" in table.stdout


def test_bench_rerank_options_are_checked_before_loading(tmp_path):
    data = make_clotho(tmp_path / "clotho", 2, seconds=0.5)
    base = ["bench", "clotho", "--data-dir", str(data), "--model", "tiny", "--device", "cpu"]
    result = CliRunner().invoke(app, [*base, "--rerank", "0"])
    assert result.exit_code == 1 and "rerank must be" in str(result.exception)
    result = CliRunner().invoke(app, [*base, "--rerank", "2", "--demos", "none", "--demos", "default"])
    assert result.exit_code == 1 and "one --demos" in str(result.exception)
