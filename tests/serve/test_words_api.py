"""The search body's words and hybrid modes and field filters: the same hits as the local query."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from vela_search.search import QueryRequest, Searcher, load_index_embedder, run_query
from vela_search.serve.app import create_app
from vela_search.serve.service import ServeSettings, Service
from vela_search.store import AudioIndex


@pytest.fixture(scope="module")
def client(serve_collection):
    service = Service.open([("idx", serve_collection[1])], ServeSettings())
    with TestClient(create_app(service), raise_server_exceptions=False) as test_client:
        yield test_client


@pytest.mark.parametrize(
    "body, request_",
    [
        ({"query": "t660", "mode": "words"}, QueryRequest(text="t660", mode="words")),
        ({"query": "t660 tone", "mode": "hybrid"}, QueryRequest(text="t660 tone", mode="hybrid")),
        (
            {"query": "tone", "where": ["tones/*", "name~1320"]},
            QueryRequest(text="tone", path_glob="tones/*", where=("name~1320",)),
        ),
    ],
)
def test_words_modes_and_filters_answer_like_the_local_query(client, serve_collection, body, request_):
    with AudioIndex.open(serve_collection[1]) as idx:
        expected = run_query(Searcher(idx, load_index_embedder(idx, device="cpu")), request_)
    response = client.post("/api/search", json=body)
    assert response.status_code == 200, response.text
    hits = response.json()["hits"]
    assert [h["path"] for h in hits] == [h.path for h in expected] and hits
    assert hits[0]["words"]["name"]


def test_a_bad_field_filter_is_a_400_with_the_reason(client):
    response = client.post("/api/search", json={"query": "x", "where": ["library="]})
    assert response.status_code == 400 and "give a value" in response.text
