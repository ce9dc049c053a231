"""Re-ranking: the judged order equals an independent computation; edges; a planted judge moves a clip up."""

from __future__ import annotations

import dataclasses
import shutil
import struct
import tracemalloc

import numpy as np
import pytest
import torch
from audio_factory import tone, write_audio

from vela_search.audio import decode_audio
from vela_search.embedding.judge import AudioJudge, JudgeReference
from vela_search.errors import QueryError
from vela_search.indexing import index_paths
from vela_search.search import Hit, QueryRequest, Searcher, run_query
from vela_search.search.rerank import MAX_RERANK, RerankCandidates, check_rerank, combine, rerank_hits
from vela_search.store import AudioIndex

SR = 16_000
FREQS = (220.0, 330.0, 495.0, 740.0, 1110.0, 1665.0)
QUERY = "a bell rings twice"


@pytest.fixture(scope="module")
def library(tmp_path_factory):
    folder = tmp_path_factory.mktemp("library")
    for i, freq in enumerate(FREQS):
        write_audio(folder / f"clip{i}.wav", tone(1.0 + 0.25 * i, freq=freq), SR)
    return folder


@pytest.fixture(scope="module")
def searcher(library, tiny_embedder, tmp_path_factory):
    root = tmp_path_factory.mktemp("idx") / "lib"
    index_paths([library], root, tiny_embedder)
    with Searcher(AudioIndex.open(root), tiny_embedder) as s:
        yield s


@pytest.fixture(scope="module")
def stock_model(tiny_model_dir):
    from transformers import Qwen2AudioForConditionalGeneration

    return Qwen2AudioForConditionalGeneration.from_pretrained(
        tiny_model_dir, attn_implementation="eager"
    ).eval()


def plain_forward(model, judge: AudioJudge, reference: JudgeReference, clip: np.ndarray):
    """Final hidden state and yes/no log-odds of the whole prompt in one stock forward."""
    waves = ([reference.wave] if reference.wave is not None else []) + [clip]
    text = [judge.render(reference).full]
    enc = judge.backbone.processor(text=text, audio=waves, sampling_rate=SR, return_tensors="pt")
    with torch.no_grad():
        out = model(
            input_ids=enc["input_ids"],
            input_features=enc["input_features"],
            feature_attention_mask=enc["feature_attention_mask"],
            use_cache=False,
            output_hidden_states=True,
        )
    logp = torch.log_softmax(out.logits[0, -1].double(), dim=-1)
    odds = float(torch.logsumexp(logp[judge.yes_ids], 0) - torch.logsumexp(logp[judge.no_ids], 0))
    return out.hidden_states[-1][0, -1], odds


def expected_order(hits: list[Hit], odds: list[float], weight: float) -> list[int]:
    final = [1 / (1 + np.exp(-o)) + weight * h.score for h, o in zip(hits, odds, strict=True)]
    return [hits[i].segment_id for i in sorted(range(len(hits)), key=lambda i: (-final[i], i))]


def test_reranked_order_equals_an_independent_plain_forward(searcher, stock_model):
    vector = run_query(searcher, QueryRequest(text=QUERY, k=6))
    reranked = run_query(searcher, QueryRequest(text=QUERY, k=6, rerank=6))
    judge = AudioJudge.for_embedder(searcher.embedder)
    reference = JudgeReference.for_text(QUERY)
    odds = [plain_forward(stock_model, judge, reference, decode_audio(h.path))[1] for h in vector]
    assert [h.segment_id for h in reranked] == expected_order(vector, odds, 0.5)
    by_id = {h.segment_id: o for h, o in zip(vector, odds, strict=True)}
    for hit in reranked:
        assert hit.judge == pytest.approx(1 / (1 + np.exp(-by_id[hit.segment_id])), abs=1e-5)
    assert [h.rank for h in reranked] == list(range(1, 7))
    # The vector score is kept as it was.
    assert {h.segment_id: h.score for h in reranked} == {h.segment_id: h.score for h in vector}


def test_query_by_example_is_judged_against_the_example(searcher, library, stock_model):
    example = library / "clip2.wav"
    hits = run_query(searcher, QueryRequest(audio=example, k=3, rerank=3))
    judge = AudioJudge.for_embedder(searcher.embedder)
    reference = JudgeReference(wave=decode_audio(example))
    for hit in hits:
        odds = plain_forward(stock_model, judge, reference, decode_audio(hit.path))[1]
        assert hit.judge == pytest.approx(1 / (1 + np.exp(-odds)), abs=1e-5)


def test_n_larger_than_the_hits_judges_all_of_them(searcher):
    hits = run_query(searcher, QueryRequest(text=QUERY, k=10, rerank=50))
    assert len(hits) == len(FREQS) and all(h.judge is not None for h in hits)


def test_n_of_one_judges_the_first_hit_only(searcher):
    vector = run_query(searcher, QueryRequest(text=QUERY, k=4))
    hits = run_query(searcher, QueryRequest(text=QUERY, k=4, rerank=1))
    assert [h.segment_id for h in hits] == [h.segment_id for h in vector]
    assert hits[0].judge is not None and all(h.judge is None for h in hits[1:])


def test_fewer_shown_than_judged_shows_the_best_judged(searcher):
    full = run_query(searcher, QueryRequest(text=QUERY, k=6, rerank=6))
    top = run_query(searcher, QueryRequest(text=QUERY, k=2, rerank=6))
    assert [h.segment_id for h in top] == [h.segment_id for h in full[:2]]


def test_an_undecodable_candidate_keeps_its_vector_rank(searcher, tmp_path):
    hits = run_query(searcher, QueryRequest(text=QUERY, k=6))
    gone = str(tmp_path / "gone.wav")
    hits[2] = dataclasses.replace(hits[2], path=gone, paths=(gone,))
    reranked = searcher.rerank(hits, JudgeReference.for_text(QUERY), n=6)
    assert reranked[2].segment_id == hits[2].segment_id and reranked[2].judge is None
    assert sum(h.judge is not None for h in reranked) == 5
    assert {h.segment_id for h in reranked} == {h.segment_id for h in hits}


def test_combine_keeps_failed_slots_and_orders_by_the_rule():
    hits = [_hit(i, score) for i, score in enumerate((0.9, 0.8, 0.7, 0.6))]
    clips = [np.zeros(1), None, np.zeros(1), np.zeros(1)]
    plan = RerankCandidates(hits, 4, clips, {1: "gone"})
    # P(yes) = 0.5, 0.88, 0.12: slot 0, 2, 3 get hits 2, 0, 3; hit 1 stays in slot 1.
    out = combine(hits, plan, np.array([0.0, 2.0, -2.0]), vector_weight=0.5)
    assert [h.segment_id for h in out] == [2, 1, 0, 3]
    assert out[1].judge is None and out[0].judge == pytest.approx(1 / (1 + np.exp(-2.0)))
    # A heavy vector weight brings the vector order back.
    out = combine(hits, plan, np.array([0.0, 2.0, -2.0]), vector_weight=100.0)
    assert [h.segment_id for h in out] == [0, 1, 2, 3]


def test_rerank_bounds():
    assert check_rerank(None) is None and check_rerank(MAX_RERANK) == MAX_RERANK
    for bad in (0, MAX_RERANK + 1, 2.5, True):
        with pytest.raises(QueryError, match="rerank"):
            check_rerank(bad)
    with pytest.raises(QueryError, match="rerank"):
        QueryRequest(text="x", rerank=0).validate()


def test_a_candidate_in_a_two_hour_file_decodes_its_segment_only(tmp_path, monkeypatch):
    path = tmp_path / "two-hours.wav"
    seconds, start = 2 * 3600, 3600.0
    data_bytes = seconds * SR * 2
    with open(path, "wb") as f:  # a sparse 16-bit mono WAV: 230 MB on paper, a few blocks on disk
        f.write(b"RIFF" + struct.pack("<I", 36 + data_bytes) + b"WAVEfmt ")
        f.write(
            struct.pack("<IHHIIHH", 16, 1, 1, SR, SR * 2, 2, 16) + b"data" + struct.pack("<I", data_bytes)
        )
        f.seek(44 + int(start * SR) * 2)
        f.write((tone(10.0, freq=440.0) * 32767).astype("<i2").tobytes())
        f.truncate(44 + data_bytes)
    hit = _hit(0, 0.5, path=str(path), start_s=start, end_s=start + 10.0)
    calls = []
    real = decode_audio

    def spy(p, *, start_s=None, end_s=None):
        calls.append((start_s, end_s))
        return real(p, start_s=start_s, end_s=end_s)

    monkeypatch.setattr("vela_search.audio.decode_audio", spy)
    seen: list[np.ndarray] = []

    def judge(reference, clips):
        seen.extend(clips)
        return np.zeros(len(clips))

    tracemalloc.start()
    out = rerank_hits([hit, hit], JudgeReference.for_text(QUERY), judge, n=2, vector_weight=0.5)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert calls == [(start, start + 10.0)]  # one decode for the two hits of the same span (the cache)
    assert [len(c) for c in seen] == [10 * SR, 10 * SR]
    assert np.abs(seen[0] - tone(10.0, freq=440.0)).max() < 1e-3
    assert peak < 50 << 20  # the whole file as float32 would be 460 MB
    assert [h.judge for h in out] == [0.5, 0.5]


def test_without_a_model_reranking_is_refused(searcher):
    with pytest.raises(QueryError, match="needs the model"):
        Searcher(searcher.index, None).rerank([], JudgeReference.for_text(QUERY))


def _hit(i: int, score: float, path: str = "/nowhere.wav", start_s: float = 0.0, end_s: float = 1.0) -> Hit:
    return Hit(
        path=path, start_s=start_s, end_s=end_s, score=score, duration_s=None, segment_id=i, rank=i + 1
    )


def test_a_planted_judge_moves_its_clip_to_the_top(
    library, tiny_model_dir, tiny_embedder, stock_model, tmp_path
):
    """A copy of the tiny checkpoint whose lm_head says "yes" for one clip only: that clip goes to the top."""
    from transformers import Qwen2AudioForConditionalGeneration

    from vela_search.embedding.embedder import VelaEmbedder

    judge = AudioJudge.for_embedder(tiny_embedder)
    reference = JudgeReference.for_text(QUERY)
    paths = sorted(library.glob("*.wav"))
    hidden = torch.stack([plain_forward(stock_model, judge, reference, decode_audio(p))[0] for p in paths])
    # The clip the vectors rank last becomes the judge's choice.
    root = tmp_path / "planted-index"
    planted_dir = tmp_path / "planted"
    shutil.copytree(tiny_model_dir, planted_dir)
    model = Qwen2AudioForConditionalGeneration.from_pretrained(planted_dir).eval()
    with torch.no_grad():
        # u . h = +1 for the target, -1 for every other clip (a least-squares solve over 64 dims).
        index_paths([library], tmp_path / "probe", tiny_embedder)
        with Searcher(AudioIndex.open(tmp_path / "probe"), tiny_embedder) as probe:
            vector_before = run_query(probe, QueryRequest(text=QUERY, k=len(paths)))
        target = vector_before[-1].path
        wanted = torch.tensor([1.0 if str(p) == target else -1.0 for p in paths], dtype=torch.float64)
        u = torch.linalg.lstsq(hidden.double(), wanted.unsqueeze(1)).solution[:, 0].float()
        head = model.get_output_embeddings().weight
        head[judge.yes_ids] = 5.0 * u
        head[judge.no_ids] = -5.0 * u
    model.save_pretrained(planted_dir)
    embedder = VelaEmbedder.from_pretrained(planted_dir, demos=tiny_embedder.demos, device="cpu")
    index_paths([library], root, embedder)
    with Searcher(AudioIndex.open(root), embedder) as planted:
        vector = run_query(planted, QueryRequest(text=QUERY, k=len(paths)))
        reranked = run_query(planted, QueryRequest(text=QUERY, k=len(paths), rerank=len(paths)))
    assert vector[-1].path == target  # the planted checkpoint's vectors are the tiny model's
    assert reranked[0].path == target and reranked[0].judge > 0.99
    assert all(h.judge < 0.01 for h in reranked[1:])
