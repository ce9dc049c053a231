"""The HTTP API through FastAPI's test client: every endpoint, every error, Range requests, the token rule."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from audio_factory import tone, write_audio
from cli_in_process import vela
from fastapi.testclient import TestClient

import vela_search.search.request as request_module
import vela_search.search.searcher as searcher_module
from vela_search.audio import decode_audio
from vela_search.search import QueryRequest, Searcher, hit_record, load_index_embedder, run_query
from vela_search.search.options import SearchOptions
from vela_search.serve.app import STATIC_DIR, create_app
from vela_search.serve.service import ServeSettings, Service
from vela_search.store import AudioIndex

from .helpers import HTML_NAME, SR

MAX_UPLOAD = 2_000_000  # bytes: the 40 s 16-bit mono WAV of the collection is 1.28 MB
MAX_UPLOAD_S = 45.0
TOKEN = "s3cret-token"


@pytest.fixture(scope="module")
def service(serve_collection):
    _audio, index = serve_collection
    settings = ServeSettings(max_upload_bytes=MAX_UPLOAD, max_upload_seconds=MAX_UPLOAD_S)
    return Service.open([("idx", index)], settings)


@pytest.fixture(scope="module")
def client(service):
    with TestClient(create_app(service), raise_server_exceptions=False) as test_client:
        yield test_client


@pytest.fixture(scope="module")
def local_searcher(serve_collection):
    """The same index searched in process, as `vela-search query` does: the reference for the API."""
    _audio, index = serve_collection
    idx = AudioIndex.open(index)
    searcher = Searcher(idx, load_index_embedder(idx, device="cpu"))
    yield searcher
    searcher.close()


def post(client: TestClient, path: str, body: dict) -> tuple[int, dict]:
    response = client.post(path, json=body)
    assert response.headers["content-type"].startswith("application/json")
    return response.status_code, response.json()


def assert_error(response, status: int, needle: str) -> None:
    """A JSON error with the right code and a message for people, never a traceback."""
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}
    assert needle in body["error"]
    assert "Traceback" not in response.text


# ------------------------------------------------------------------------------------------ discovery


def test_healthz_and_indexes(client, serve_collection):
    health = client.get("/healthz").json()
    assert health["status"] == "ok" and health["indexes"] == ["idx"]
    listing = client.get("/api/indexes").json()
    assert listing["token_required"] is False
    (info,) = listing["indexes"]
    index = AudioIndex.open(serve_collection[1])
    assert info["name"] == "idx"
    assert info["path"] == str(serve_collection[1].resolve())
    assert info["generation"] == index.generation
    assert info["vectors"] == index.num_vectors
    assert info["files"] == 5 and info["failed_files"] == 0
    assert info["embedder"]["model"].startswith("tiny@")
    assert "tiny random model" in info["notice"]
    index.close()


def test_openapi_documents_every_route(client):
    paths = client.get("/openapi.json").json()["paths"]
    for path in (
        "/api/search",
        "/api/search/audio",
        "/api/search/like",
        "/api/audio/{segment_id}",
        "/api/indexes",
    ):
        assert path in paths
    assert client.get("/docs").status_code == 200


# --------------------------------------------------------------------------------------------- search

TEXT_QUERIES = [
    ({"query": "dog barking then a car passes"}, QueryRequest(text="dog barking then a car passes")),
    (
        {"query": "rain on a tin roof, then thunder " * 10, "mode": "long", "k": 3},
        QueryRequest(text="rain on a tin roof, then thunder " * 10, mode="long", k=3),
    ),
    (
        {"query": "a kettle", "mode": "instruction", "instruction": "find the same sound source as:"},
        QueryRequest(text="a kettle", mode="instruction", instruction="find the same sound source as:"),
    ),
    ({"query": "tones", "segments": True, "k": 20}, QueryRequest(text="tones", group=False, k=20)),
    ({"query": "tones", "where": "tones/*"}, QueryRequest(text="tones", path_glob="tones/*")),
    ({"query": "tones", "max_duration": 3.5}, QueryRequest(text="tones", max_duration=3.5)),
    ({"query": "tones", "min_duration": 30}, QueryRequest(text="tones", min_duration=30)),
    ({"query": "tones", "min_score": 1.0}, QueryRequest(text="tones", min_score=1.0)),
]


@pytest.mark.parametrize(("body", "request_"), TEXT_QUERIES)
def test_text_search_returns_the_hits_of_the_cli(client, local_searcher, body, request_):
    status, answer = post(client, "/api/search", body)
    assert status == 200, answer
    expected = [hit_record(h, local_searcher.notice) for h in run_query(local_searcher, request_)]
    assert [h["path"] for h in answer["hits"]] == [h["path"] for h in expected]
    assert [h["segment_id"] for h in answer["hits"]] == [h["segment_id"] for h in expected]
    # One schema: every field of `query --json`, in the same order.
    for got, want in zip(answer["hits"], expected, strict=True):
        assert list(got) == list(want)
        assert got["score"] == pytest.approx(want["score"], abs=1e-5)
    assert answer["index"] == "idx" and answer["generation"] == local_searcher.index.generation
    assert "tiny random model" in answer["notice"]


def test_filters_apply(client):
    _, segments = post(client, "/api/search", {"query": "tones", "segments": True, "k": 50})
    long_segments = [h for h in segments["hits"] if h["path"].endswith("long.wav")]
    assert len(long_segments) > 1 and any(h["start_s"] > 0 for h in long_segments)
    _, short = post(client, "/api/search", {"query": "tones", "max_duration": 3.5})
    assert short["hits"] and all(h["duration_s"] <= 3.5 for h in short["hits"])
    _, none = post(client, "/api/search", {"query": "tones", "min_score": 1.0})
    assert none["hits"] == []


@pytest.mark.parametrize(
    ("body", "status", "needle"),
    [
        ({"query": ""}, 422, "query:"),
        ({"query": "   "}, 422, "query:"),
        ({"query": "dog", "k": 0}, 422, "k:"),
        ({"query": "dog", "k": 1001}, 422, "k:"),
        ({"query": "dog", "k": "ten"}, 422, "k:"),
        ({"k": 3}, 422, "query:"),
        ({"query": "dog", "mode": "poem"}, 422, "mode:"),
        ({"query": "dog", "colour": "red"}, 422, "colour:"),
        ({"query": "dog", "mode": "instruction"}, 422, "instruction mode needs an instruction"),
        ({"query": "dog", "index": "nope"}, 404, "unknown index 'nope'"),
        ({"query": "dog", "min_duration": 9, "max_duration": 2}, 400, "above the maximum"),
        ({"query": "dog", "where": " "}, 422, "where:"),
        ({"query": "dog", "min_score": 2.0}, 422, "min_score:"),
    ],
)
def test_search_errors_are_json_with_the_right_code(client, body, status, needle):
    assert_error(client.post("/api/search", json=body), status, needle)


def test_over_long_query_is_refused_with_its_token_count(client, service):
    embedder = service.get(None).batcher.embedder
    room = embedder.max_positions - embedder.prefix_length
    response = client.post("/api/search", json={"query": "word " * (room + 50), "mode": "long"})
    assert_error(response, 400, "tokens but at most")
    message = response.json()["error"]
    count = int(message.split("the query is ")[1].split(" tokens")[0])
    assert count > room and str(room) in message


def test_malformed_json_is_a_json_error(client):
    response = client.post("/api/search", content=b"{not json", headers={"content-type": "application/json"})
    assert_error(response, 422, "invalid request")


# ------------------------------------------------------------------------------------ query by example


def wav_bytes(wave: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, wave, SR, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


def test_audio_upload_finds_the_clip_itself(client, serve_collection):
    audio, _ = serve_collection
    clip = audio / "tones" / "t660.wav"
    response = client.post("/api/search/audio", files={"file": ("query.wav", clip.read_bytes(), "audio/wav")})
    assert response.status_code == 200, response.text
    best = response.json()["hits"][0]
    assert best["path"] == str(clip) and best["score"] == pytest.approx(1.0, abs=2e-3)


def test_audio_upload_with_a_span_and_options(client, serve_collection):
    audio, _ = serve_collection
    data = (audio / "long.wav").read_bytes()
    response = client.post(
        "/api/search/audio",
        files={"file": ("long.wav", data, "audio/wav")},
        data={"start": "10", "end": "20", "k": "2", "segments": "true"},
    )
    assert response.status_code == 200, response.text
    best = response.json()["hits"][0]
    assert best["path"].endswith("long.wav") and (best["start_s"], best["end_s"]) == (10.0, 20.0)
    assert len(response.json()["hits"]) == 2


def test_upload_errors(client, tmp_path):
    too_big = wav_bytes(tone(MAX_UPLOAD / (2 * SR) + 1))
    assert_error(client.post("/api/search/audio", files={"file": ("big.wav", too_big)}), 413, "limit")
    # Within the byte limit but longer than the duration limit (8 kHz FLAC is small per second).
    long_flac = write_audio(tmp_path / "long.flac", tone(MAX_UPLOAD_S + 5, sr=8000, amplitude=0.0), 8000)
    assert long_flac.stat().st_size < MAX_UPLOAD
    response = client.post("/api/search/audio", files={"file": ("long.flac", long_flac.read_bytes())})
    assert_error(response, 413, f"up to {MAX_UPLOAD_S:g} s")
    text = client.post("/api/search/audio", files={"file": ("notes.txt", b"not audio at all " * 40)})
    assert_error(text, 415, "'notes.txt'")
    assert "vela-upload" not in text.json()["error"]  # the server's temporary path stays private
    assert_error(client.post("/api/search/audio", files={"file": ("e.wav", b"")}), 415, "empty")
    assert_error(client.post("/api/search/audio", data={"k": "3"}), 422, "file:")
    ok = wav_bytes(tone(2))
    assert_error(client.post("/api/search/audio", files={"file": ("a.wav", ok)}, data={"k": "0"}), 422, "k:")
    response = client.post("/api/search/audio", files={"file": ("a.wav", ok)}, data={"start": "5"})
    assert_error(response, 400, "past the end")


# --------------------------------------------------------------------------------------- more like this


def test_like_a_segment_and_a_file(client, serve_collection):
    audio, _ = serve_collection
    _, first = post(client, "/api/search", {"query": "tones", "segments": True, "k": 50})
    segment = next(h for h in first["hits"] if h["path"].endswith("long.wav") and h["start_s"] > 0)
    status, like = post(client, "/api/search/like", {"segment_id": segment["segment_id"], "segments": True})
    assert status == 200, like
    best = like["hits"][0]
    assert best["segment_id"] == segment["segment_id"] and best["score"] == pytest.approx(1.0, abs=2e-3)
    status, by_path = post(client, "/api/search/like", {"path": str(audio / "tones" / "t220.wav"), "k": 2})
    assert status == 200 and by_path["hits"][0]["path"].endswith("t220.wav")


@pytest.mark.parametrize(
    ("body", "status", "needle"),
    [
        ({}, 422, "give either path"),
        ({"path": "/x.wav", "segment_id": 1}, 422, "give either path"),
        ({"segment_id": 987654}, 404, "no segment with id 987654"),
        ({"path": "/etc/passwd"}, 404, "is not in this index"),
        ({"segment_id": 0, "k": -1}, 422, "k:"),
    ],
)
def test_like_errors(client, body, status, needle):
    assert_error(client.post("/api/search/like", json=body), status, needle)


# ------------------------------------------------------------------------------------------- audio by id


def segment_of(client, name: str) -> dict:
    _, answer = post(client, "/api/search", {"query": "tones", "segments": True, "k": 50})
    return next(h for h in answer["hits"] if h["path"].endswith(name))


def test_audio_streams_the_indexed_file(client):
    hit = segment_of(client, "t1320.flac")
    response = client.get(f"/api/audio/{hit['segment_id']}")
    assert response.status_code == 200
    assert response.headers["content-type"] == "audio/flac"
    assert response.headers["accept-ranges"] == "bytes"
    assert response.content == Path(hit["path"]).read_bytes()


def test_range_requests_get_206_with_the_right_bytes(client):
    hit = segment_of(client, "long.wav")
    data = Path(hit["path"]).read_bytes()
    for header, (lo, hi) in (("bytes=100-299", (100, 299)), ("bytes=-50", (len(data) - 50, len(data) - 1))):
        response = client.get(f"/api/audio/{hit['segment_id']}", headers={"Range": header})
        assert response.status_code == 206
        assert response.content == data[lo : hi + 1]
        assert response.headers["content-range"] == f"bytes {lo}-{hi}/{len(data)}"
    response = client.get(f"/api/audio/{hit['segment_id']}", headers={"Range": f"bytes={len(data) + 10}-"})
    assert response.status_code == 416


def test_a_span_comes_back_as_wav(client):
    hit = segment_of(client, "long.wav")
    response = client.get(f"/api/audio/{hit['segment_id']}", params={"start": 12, "end": 13.5})
    assert response.status_code == 200 and response.headers["content-type"] == "audio/wav"
    wave, rate = sf.read(io.BytesIO(response.content), dtype="float32")
    expected = decode_audio(hit["path"], start_s=12, end_s=13.5)
    assert rate == SR and len(wave) == len(expected)
    np.testing.assert_allclose(wave, expected, atol=1e-4)
    segment = client.get(f"/api/audio/{hit['segment_id']}", params={"segment": "true"})
    wave, _ = sf.read(io.BytesIO(segment.content), dtype="float32")
    assert len(wave) == round((hit["end_s"] - hit["start_s"]) * SR)
    bad = client.get(f"/api/audio/{hit['segment_id']}", params={"start": 5, "end": 2})
    assert_error(bad, 400, "must be after")


@pytest.mark.parametrize(
    "path",
    [
        "/api/audio/987654",
        "/api/audio/-1",
        "/api/audio/..%2F..%2F..%2Fetc%2Fpasswd",
        "/api/audio/%2Fetc%2Fpasswd",
        "/api/audio/1/../../../../etc/passwd",
        "/api/audio/0?path=/etc/passwd&file=/etc/passwd",
        "/static/../../../../etc/passwd",
        "/static/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
    ],
)
def test_no_path_from_a_request_reaches_the_file_system(client, path):
    response = client.get(path)
    assert b"root:" not in response.content
    if "?path=" in path:  # the id decides what is served; other parameters are ignored
        assert response.status_code == 200
    else:
        assert response.status_code in (404, 422)
        assert "error" in response.json() or "detail" in response.json()


def test_audio_errors(client):
    assert_error(client.get("/api/audio/987654"), 404, "no segment with id 987654")
    assert_error(client.get("/api/audio/abc"), 422, "segment_id:")
    assert_error(client.get("/api/audio/0?index=nope"), 404, "unknown index")


# ---------------------------------------------------------------------------------------------- the page


def test_the_page_and_its_assets_are_served_from_the_package(client):
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    for asset in ("/static/app.js", "/static/style.css"):
        assert client.get(asset).status_code == 200
    assert "http://" not in page.text and "https://" not in page.text  # nothing from outside: works offline
    script = (STATIC_DIR / "app.js").read_text()
    assert "innerHTML" not in script and "insertAdjacentHTML" not in script and "document.write" not in script


def test_html_in_a_file_name_is_data(client):
    _, answer = post(client, "/api/search", {"query": "tones", "k": 10})
    assert HTML_NAME in [h["display_path"] for h in answer["hits"]]


# ---------------------------------------------------------------------------------------- unexpected bugs


def test_an_unexpected_failure_is_a_500_without_a_traceback(client, service, monkeypatch):
    served = service.get(None)

    def broken() -> dict:
        raise RuntimeError("secret internals")

    monkeypatch.setattr(served, "info", broken)
    response = client.get("/api/indexes")
    assert_error(response, 500, "internal error (RuntimeError)")
    assert "secret internals" not in response.text


# -------------------------------------------------------------------------------------------- the token


@pytest.fixture(scope="module")
def token_client(serve_collection):
    _audio, index = serve_collection
    settings = ServeSettings(host="0.0.0.0", token=TOKEN, request_timeout_s=1e-6)
    service = Service.open([("idx", index)], settings)
    with TestClient(create_app(service), raise_server_exceptions=False) as test_client:
        yield test_client


def test_token_is_checked_on_every_api_call(token_client):
    calls = [
        ("get", "/api/indexes", {}),
        ("post", "/api/search", {"json": {"query": "dog"}}),
        ("post", "/api/search/like", {"json": {"segment_id": 0}}),
        ("post", "/api/search/audio", {"files": {"file": ("a.wav", wav_bytes(tone(1)))}}),
        ("get", "/api/audio/0", {}),
    ]
    for method, path, kwargs in calls:
        assert_error(getattr(token_client, method)(path, **kwargs), 401, "needs a token")
        wrong = {"Authorization": "Bearer nope"}
        assert_error(getattr(token_client, method)(path, headers=wrong, **kwargs), 401, "needs a token")
    good = {"Authorization": f"Bearer {TOKEN}"}
    assert token_client.get("/api/indexes", headers=good).json()["token_required"] is True
    # (Searches with the right token reach the time limit of this server: see the next test.)
    assert_error(token_client.post("/api/search/like", json={"segment_id": 0}, headers=good), 504, "took")
    # <audio> cannot send headers: the page puts the token in the query string.
    assert token_client.get(f"/api/audio/0?token={TOKEN}").status_code == 200
    # The page and the health check hold no data.
    assert token_client.get("/").status_code == 200
    assert token_client.get("/healthz").status_code == 200


def test_a_search_over_the_time_limit_is_a_504(token_client):
    response = token_client.post(
        "/api/search", json={"query": "dog"}, headers={"Authorization": f"Bearer {TOKEN}"}
    )
    assert_error(response, 504, "took longer than")


def test_json_errors_stay_json_for_unknown_routes(client):
    response = client.get("/api/nothing-here")
    assert_error(response, 404, "Not Found")
    assert json.loads(response.text)


def test_an_empty_index_is_served_and_says_so(tmp_path, serve_collection):
    fingerprint = dict(AudioIndex.open(serve_collection[1]).fingerprint)
    empty = tmp_path / "empty"
    AudioIndex.create(empty, fingerprint=fingerprint, dim=int(fingerprint["dim"])).close()
    service = Service.open([("empty", empty)], ServeSettings())  # loads no model: nothing to search yet
    with TestClient(create_app(service), raise_server_exceptions=False) as test_client:
        info = test_client.get("/api/indexes").json()["indexes"][0]
        assert info["vectors"] == 0 and info["files"] == 0
        assert_error(test_client.post("/api/search", json={"query": "dog"}), 409, "holds no vectors")
        assert_error(test_client.post("/api/search/like", json={"segment_id": 0}), 409, "holds no vectors")


# ------------------------------------------------------------------------------------- checked once
def test_a_request_is_checked_once_where_it_enters(client, local_searcher, serve_collection, monkeypatch):
    """Python's run_query, the HTTP API and the command line each check a request once: the layers
    under the entry (run_query given a CheckedQuery, the service, the Searcher) take it as it is."""
    checks: list[str] = []
    real_options, real_text = SearchOptions.checked.__func__, request_module.check_text_query

    def options(cls, **given):  # noqa: ANN001, ANN003
        checks.append("options")
        return real_options(cls, **given)

    def text(*args, **kwargs):  # noqa: ANN002, ANN003
        checks.append("text")
        return real_text(*args, **kwargs)

    monkeypatch.setattr(SearchOptions, "checked", classmethod(options))
    monkeypatch.setattr(request_module, "check_text_query", text)
    monkeypatch.setattr(searcher_module, "check_text_query", text)
    audio, index = serve_collection
    like = str(audio / "long.wav")
    for request, expected in [
        (QueryRequest(text="a low hum", k=3), ["text", "options"]),
        (QueryRequest(text="a low hum", mode="hybrid", k=3), ["text", "options"]),
        (QueryRequest(text="a low hum", k=3, rerank=2), ["text", "options"]),
        (QueryRequest(like=like, k=3), ["options"]),
    ]:
        checks.clear()
        assert run_query(local_searcher, request)
        assert checks == expected, request
        checked = request.validate()
        checks.clear()
        assert run_query(local_searcher, checked) and checks == [], request
    # The Searcher's own methods are an entry too (Python callers): they check their keywords once.
    checks.clear()
    local_searcher.search("a low hum", k=3)
    assert checks == ["options", "text"]

    checks.clear()
    status, answer = post(client, "/api/search", {"query": "a low hum", "k": 3})
    assert status == 200 and answer["hits"] and checks == ["text", "options"], answer
    checks.clear()
    status, answer = post(client, "/api/search/like", {"path": like, "k": 3})
    assert status == 200 and answer["hits"] and checks == ["options"], answer

    checks.clear()
    done = vela("query", "a low hum", "--index", index, "-k", "3", "--json")
    assert done.returncode == 0 and json.loads(done.stdout), done.stderr
    assert checks == ["text", "options"]
