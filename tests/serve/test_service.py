"""The service under change and load: rebuilds and first vectors followed live, a bounded queue per index."""

from __future__ import annotations

import asyncio
import subprocess
import time

import httpx
from audio_factory import tone, write_audio
from fastapi.testclient import TestClient

from vela_search.errors import ModelLoadError
from vela_search.serve.app import create_app
from vela_search.serve.service import ServeSettings, Service
from vela_search.store import AudioIndex

from .helpers import SR, copy_index, index_command


def vela(*args: str) -> None:
    run = subprocess.run(index_command(*args), capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr


def until(condition, timeout: float = 60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError("timed out waiting")


def test_a_flood_beyond_the_queue_gets_503_with_retry_after_at_once(serve_collection, monkeypatch):
    service = Service.open([("idx", serve_collection[1])], ServeSettings(max_queue=3))
    batcher = service.get(None).batcher
    real = batcher.embed

    async def slow(item, **kwargs):
        await asyncio.sleep(0.5)  # a busy model
        return await real(item, **kwargs)

    monkeypatch.setattr(batcher, "embed", slow)

    async def flood() -> list[tuple[int, float, str | None]]:
        transport = httpx.ASGITransport(app=create_app(service))
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:

            async def one(i: int) -> tuple[int, float, str | None]:
                started = time.perf_counter()
                response = await client.post("/api/search", json={"query": f"tone {i}"})
                took = time.perf_counter() - started
                return response.status_code, took, response.headers.get("retry-after")

            return await asyncio.gather(*(one(i) for i in range(12)))

    results = asyncio.run(flood())
    ok = [r for r in results if r[0] == 200]
    busy = [r for r in results if r[0] == 503]
    assert len(ok) == 3 and len(busy) == 9, results
    assert all(retry == "1" and took < 0.4 for _, took, retry in busy)  # refused at once, not after waiting


def test_an_empty_index_becomes_searchable_when_a_commit_adds_vectors(serve_collection, tmp_path):
    fingerprint = dict(AudioIndex.open(serve_collection[1]).fingerprint)
    empty = tmp_path / "empty"
    AudioIndex.create(empty, fingerprint=fingerprint, dim=int(fingerprint["dim"])).close()
    audio = tmp_path / "audio"
    audio.mkdir()
    write_audio(audio / "first.wav", tone(2, freq=500), SR)
    service = Service.open([("empty", empty)], ServeSettings())
    with TestClient(create_app(service), raise_server_exceptions=False) as client:
        assert client.post("/api/search", json={"query": "dog"}).status_code == 409
        vela("index", str(audio), "--index", str(empty), "--model", "tiny", "--demos", "none")
        response = client.post("/api/search", json={"query": "a tone"})
        assert response.status_code == 200, response.text
        assert [h["display_path"] for h in response.json()["hits"]] == ["first.wav"]
        assert response.json()["behind"] is None


def test_a_rebuild_whose_embedder_cannot_load_keeps_the_last_generation_answering(
    serve_collection, tmp_path, monkeypatch
):
    audio, session_index = serve_collection
    index = copy_index(session_index, tmp_path / "idx")
    service = Service.open([("idx", index)], ServeSettings())
    loads = []

    def cannot_load(index, **kwargs):
        loads.append(index.generation)
        raise ModelLoadError("the adapter directory is gone")

    monkeypatch.setattr("vela_search.serve.models.load_index_embedder", cannot_load)
    with TestClient(create_app(service), raise_server_exceptions=False) as client:
        before = client.post("/api/search", json={"query": "a tone"}).json()
        vela("index", str(audio), "--index", str(index), "--rebuild", "--demos", "default")
        latest = AudioIndex.open(index).generation
        assert latest > before["generation"]

        def reported():
            info = client.get("/api/indexes").json()["indexes"][0]
            return info if info["behind"] and "cannot load" in info["behind"] else None

        info = until(reported)
        assert info["generation"] == before["generation"] and f"generation {latest}" in info["behind"]
        assert "the adapter directory is gone" in info["behind"]
        health = client.get("/healthz").json()
        assert health["status"] == "degraded" and "cannot load" in health["behind"]["idx"]
        for _ in range(5):  # no storm: one failed load, the old generation answers every request
            answer = client.post("/api/search", json={"query": "a tone"})
            assert answer.status_code == 200 and answer.json()["generation"] == before["generation"]
            assert [h["path"] for h in answer.json()["hits"]] == [h["path"] for h in before["hits"]]
            like = client.post("/api/search/like", json={"segment_id": before["hits"][0]["segment_id"]})
            assert like.status_code == 200
        assert loads == [latest]


def commit_one_segment(root) -> str:
    """Commit a copy of an indexed segment under a new path (a 1-vector commit); returns the path."""
    with AudioIndex.open(root) as index:
        fingerprint = dict(index.fingerprint)
        file_row = next(f for f in index.files().to_pylist() if f["status"] == "indexed")
        ids = index.ids_with_path(file_row["path"])
        segment = index.segment_rows([int(ids[0])])[0]
        vector = index.vectors(ids[:1])
    path = "/elsewhere/committed.wav"
    with AudioIndex.open(root).writer(fingerprint=fingerprint) as writer:
        writer.add(vector, [{**{k: v for k, v in segment.items() if k != "id"}, "path": path}])
        writer.put_files([{**file_row, "path": path}])
        writer.commit()
    return path


def test_a_request_never_waits_for_a_reload_another_started(serve_collection, tmp_path):
    index = copy_index(serve_collection[1], tmp_path / "idx")
    # Requests alone look for new generations here (no background refresh racing the test's lock).
    service = Service.open([("idx", index)], ServeSettings(refresh_interval_s=None))
    served = service.get(None)
    with TestClient(create_app(service), raise_server_exceptions=False) as client:
        first = client.post("/api/search/like", json={"segment_id": 0, "k": 20}).json()
        path = commit_one_segment(index)
        with served._reload:  # another request is preparing the new generation right now
            started = time.perf_counter()
            during = client.post("/api/search/like", json={"segment_id": 0, "k": 20}).json()
            assert time.perf_counter() - started < 5
        assert during["generation"] == first["generation"]  # answered from the generation it searched
        assert path not in [h["path"] for h in during["hits"]]
        after = client.post("/api/search/like", json={"segment_id": 0, "k": 20}).json()
        assert after["generation"] == first["generation"] + 1
        assert path in [h["path"] for h in after["hits"]]


def test_query_sends_the_search_knobs_only_when_asked():
    from vela_search.search import QueryRequest
    from vela_search.serve.discovery import request_body
    from vela_search.serve.schemas import SearchBody

    plain = request_body(QueryRequest(text="rain"), "idx")[1]
    assert not {"nprobe", "refine", "exact"} & set(plain)
    tuned = request_body(QueryRequest(text="rain", nprobe=8, refine=200, exact=True), "idx")[1]
    assert (tuned["nprobe"], tuned["refine"], tuned["exact"]) == (8, 200, True)
    assert SearchBody(**tuned).to_request().nprobe == 8  # what the server reads back


def test_a_new_generations_words_index_is_prepared_off_the_request_path(serve_collection, tmp_path):
    from vela_search.search.hybrid import lexical_for
    from vela_search.search.lexical import LexicalIndex

    index = copy_index(serve_collection[1], tmp_path / "idx")
    service = Service.open([("idx", index)], ServeSettings(refresh_interval_s=0.05))
    served = service.get(None)
    try:
        before = served.current.number
        lexical_for(served.current.searcher.index)  # a words query of the served generation built one
        commit_one_segment(index)
        until(lambda: served.current.number == before + 1, timeout=20)
        # No request is made: the background refresh brings the words index up by a delta.
        until(lambda: LexicalIndex.exists(served.current.searcher.index), timeout=20)
    finally:
        asyncio.run(service.close())


def test_a_new_generation_is_prepared_off_the_request_path(serve_collection, tmp_path):
    index = copy_index(serve_collection[1], tmp_path / "idx")
    service = Service.open([("idx", index)], ServeSettings(refresh_interval_s=0.05))
    served = service.get(None)
    try:
        before = served.current.number
        path = commit_one_segment(index)
        deadline = time.monotonic() + 20
        while served.current.number == before and time.monotonic() < deadline:
            time.sleep(0.05)  # no request is made: the background refresh alone prepares it
        assert served.current.number == before + 1
        assert path in served.current.searcher.index.files()["path"].to_pylist()
    finally:
        asyncio.run(service.close())
