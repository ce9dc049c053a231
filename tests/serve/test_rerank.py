"""`rerank` through the HTTP API: the hits of a local re-ranked query, judged on the model thread."""

from __future__ import annotations

import threading

import pytest
from fastapi.testclient import TestClient

from vela_search.embedding.judge import AudioJudge
from vela_search.search import QueryRequest, Searcher, load_index_embedder, run_query
from vela_search.serve.app import create_app
from vela_search.serve.discovery import request_body
from vela_search.serve.service import ServeSettings, Service
from vela_search.store import AudioIndex


@pytest.fixture(scope="module")
def service(serve_collection):
    return Service.open([("idx", serve_collection[1])], ServeSettings())


@pytest.fixture(scope="module")
def client(service):
    with TestClient(create_app(service), raise_server_exceptions=False) as test_client:
        yield test_client


@pytest.fixture(scope="module")
def local_searcher(serve_collection):
    idx = AudioIndex.open(serve_collection[1])
    searcher = Searcher(idx, load_index_embedder(idx, device="cpu"))
    yield searcher
    searcher.close()


@pytest.fixture
def judge_threads(monkeypatch):
    """The names of the threads the judge's forwards ran on."""
    names: list[str] = []
    real = AudioJudge.judge

    def spy(self, reference, clips):
        names.append(threading.current_thread().name)
        return real(self, reference, clips)

    monkeypatch.setattr(AudioJudge, "judge", spy)
    return names


def as_pairs(hits: list[dict]) -> list[tuple[int, float | None]]:
    return [(h["segment_id"], None if h["judge"] is None else round(h["judge"], 5)) for h in hits]


def test_a_rerank_search_answers_like_a_local_one_on_the_model_thread(client, local_searcher, judge_threads):
    response = client.post("/api/search", json={"query": "a bell rings", "k": 3, "rerank": 4})
    assert response.status_code == 200, response.text
    hits = response.json()["hits"]
    local = run_query(local_searcher, QueryRequest(text="a bell rings", k=3, rerank=4))
    assert as_pairs(hits) == [(h.segment_id, round(h.judge, 5)) for h in local]
    assert all(h["judge"] is not None for h in hits)
    assert judge_threads[0].startswith("vela-model")  # the server's one model thread, between batches


def test_like_and_audio_searches_rerank_against_the_example(client, serve_collection, judge_threads):
    audio, _index = serve_collection
    like = client.post("/api/search/like", json={"path": str(audio / "tones" / "t660.wav"), "rerank": 2})
    assert like.status_code == 200, like.text
    assert [h["judge"] is not None for h in like.json()["hits"][:3]] == [True, True, False]
    segment = like.json()["hits"][0]["segment_id"]  # "more like this" on the page: a segment as example
    more = client.post("/api/search/like", json={"segment_id": segment, "k": 1, "rerank": 1})
    assert more.status_code == 200, more.text
    assert more.json()["hits"][0]["judge"] is not None
    with open(audio / "tones" / "t220.wav", "rb") as fh:
        upload = client.post(
            "/api/search/audio", files={"file": ("t.wav", fh)}, data={"k": "2", "rerank": "2"}
        )
    assert upload.status_code == 200, upload.text
    assert all(h["judge"] is not None for h in upload.json()["hits"])
    assert len(judge_threads) == 3 and all(n.startswith("vela-model") for n in judge_threads)


@pytest.mark.parametrize("rerank", [0, 101])
def test_a_bad_rerank_is_a_422(client, rerank):
    response = client.post("/api/search", json={"query": "rain", "rerank": rerank})
    assert response.status_code == 422 and "rerank:" in response.json()["error"]


def test_a_search_without_rerank_has_no_judge_and_query_sends_rerank(client):
    response = client.post("/api/search", json={"query": "rain", "k": 2})
    assert [h["judge"] for h in response.json()["hits"]] == [None, None]
    assert request_body(QueryRequest(text="rain", rerank=5), None)[1]["rerank"] == 5
    assert "rerank" not in request_body(QueryRequest(text="rain"), None)[1]
