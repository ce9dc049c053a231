"""The index stays live: `vela-search index` commits while requests run, none fails, the next sees it."""

from __future__ import annotations

import subprocess

import pytest
from audio_factory import tone, write_audio
from fastapi.testclient import TestClient

from vela_search.serve.app import create_app
from vela_search.serve.service import ServeSettings, Service
from vela_search.store import AudioIndex

from .helpers import SR, copy_index, index_command


def test_searches_while_an_index_run_commits(serve_collection, tmp_path):
    _audio, session_index = serve_collection
    index = copy_index(session_index, tmp_path / "live-idx")
    first_generation = AudioIndex.open(index).generation
    new = tmp_path / "new-sounds"
    new.mkdir()
    for i in range(6):
        write_audio(new / f"fresh{i}.wav", tone(1 + i / 2, freq=300 + 150 * i), SR)

    service = Service.open([("live", index)], ServeSettings())
    statuses: list[int] = []
    generations: set[int] = set()
    with TestClient(create_app(service), raise_server_exceptions=False) as client:
        segment = client.post("/api/search", json={"query": "a tone"}).json()["hits"][0]["segment_id"]
        # One commit per file (--commit-every 1), so several generations replace each other meanwhile.
        run = subprocess.Popen(
            index_command("index", str(new), "--index", str(index), "--commit-every", "1"),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            while run.poll() is None:
                for response in (
                    client.post("/api/search", json={"query": "a tone", "k": 20}),
                    client.post("/api/search/like", json={"segment_id": segment, "k": 20}),
                    client.get("/api/indexes"),
                    client.get(f"/api/audio/{segment}", headers={"Range": "bytes=0-99"}),
                ):
                    statuses.append(response.status_code)
                    if response.status_code not in (200, 206):
                        pytest.fail(f"a request failed during the index run: {response.text}")
                    if response.headers["content-type"].startswith("application/json"):
                        body = response.json()
                        generations.add(
                            body.get("generation", body.get("indexes", [{}])[0].get("generation"))
                        )
        finally:
            out, err = run.communicate(timeout=300)
        assert run.returncode == 0, err
        final = AudioIndex.open(index).generation
        assert final > first_generation + 1  # several commits happened
        # The next search sees the new generation and the new files, with no restart.
        answer = client.post("/api/search", json={"query": "a tone", "k": 20, "where": "new-sounds/*"}).json()
        assert answer["generation"] == final
        assert sorted(h["display_path"] for h in answer["hits"]) == [f"fresh{i}.wav" for i in range(6)]
        assert client.get("/api/indexes").json()["indexes"][0]["generation"] == final
    assert len(statuses) >= 4
    seen = {g for g in generations if g is not None}
    assert all(first_generation <= g <= final for g in seen)
    assert len(seen) >= 2, "requests should have run across at least one switch of generation"
