"""Peaks, segment clips and whole-file downloads through the API (FastAPI's test client)."""

from __future__ import annotations

import io
import shutil

import numpy as np
import pytest
import soundfile as sf
from fastapi.testclient import TestClient

from vela_search.peaks import OVERVIEW_BINS, PEAKS_DIR
from vela_search.serve.app import create_app
from vela_search.serve.service import ServeSettings, Service

from ..helpers import SR


@pytest.fixture(scope="module")
def client(serve_collection, tmp_path_factory):
    # A copy without its peaks folder: an index written before peaks computes them on demand.
    index = tmp_path_factory.mktemp("media") / "idx"
    shutil.copytree(serve_collection[1], index, ignore=shutil.ignore_patterns(PEAKS_DIR, "serve.json"))
    service = Service.open([("idx", index)], ServeSettings(token="tok"))
    with TestClient(create_app(service), raise_server_exceptions=False) as test_client:
        test_client.headers["Authorization"] = "Bearer tok"
        yield test_client, index


def long_segment(client) -> dict:
    body = {"query": "a low tone", "k": 50, "segments": True}
    hits = client.post("/api/search", json=body).json()["hits"]
    return next(h for h in hits if h["path"].endswith("long.wav") and h["start_s"] > 0)


def test_peaks_of_a_hit_are_computed_once_and_cached(client):
    test_client, index = client
    hit = long_segment(test_client)
    answer = test_client.get(f"/api/peaks/{hit['segment_id']}")
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert len(body["overview"]) == OVERVIEW_BINS
    assert abs(body["duration_s"] - 40.0) < 0.05
    assert (body["sample_rate"], body["channels"]) == (SR, 1)
    assert 0.3 < max(hi for _, hi in body["overview"]) <= 1.0
    assert len(list((index / PEAKS_DIR).glob("??/*.peaks"))) == 1
    assert test_client.get(f"/api/peaks/{hit['segment_id']}").json() == body


def test_clip_is_the_exact_span_and_file_is_the_original(client, serve_collection):
    test_client, _ = client
    hit = long_segment(test_client)
    answer = test_client.get(f"/api/clip/{hit['segment_id']}")
    assert answer.status_code == 200
    assert "attachment" in answer.headers["content-disposition"]
    assert "long_" in answer.headers["content-disposition"]
    wave, rate = sf.read(io.BytesIO(answer.content), dtype="float32")
    assert rate == SR
    assert len(wave) == round((hit["end_s"] - hit["start_s"]) * SR)
    source, _ = sf.read(serve_collection[0] / "long.wav", dtype="float32")
    first = round(hit["start_s"] * SR)
    assert np.abs(wave - source[first : first + len(wave)]).max() < 1e-3
    whole = test_client.get(f"/api/file/{hit['segment_id']}")
    assert whole.content == (serve_collection[0] / "long.wav").read_bytes()
    assert 'filename="long.wav"' in whole.headers["content-disposition"]


def test_unknown_segment_and_missing_token_are_refused(client):
    test_client, _ = client
    assert test_client.get("/api/peaks/99999999").status_code == 404
    bare = TestClient(test_client.app, raise_server_exceptions=False)
    assert bare.get("/api/clip/0").status_code == 401
