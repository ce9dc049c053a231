"""The audio route serves a file only while it is the one indexed; every error, Range included, is JSON."""

from __future__ import annotations

import os
import subprocess

import pytest
from audio_factory import tone, write_audio
from fastapi.testclient import TestClient

from vela_search.serve.app import create_app
from vela_search.serve.service import ServeSettings, Service

from .helpers import SR, index_command


@pytest.fixture(scope="module")
def library(tmp_path_factory, tiny_model_dir):
    """A private library (its files are changed by these tests), its index and a client."""
    base = tmp_path_factory.mktemp("audio-route")
    audio = base / "library"
    audio.mkdir()
    for name, freq in (("a.wav", 300), ("b.wav", 600), ("c.wav", 900)):
        write_audio(audio / name, tone(2, freq=freq), SR)
    index = base / "idx"
    run = subprocess.run(
        index_command("index", str(audio), "--index", str(index), "--model", "tiny", "--demos", "none"),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr
    service = Service.open([("idx", index)], ServeSettings())
    with TestClient(create_app(service), raise_server_exceptions=False) as client:
        hits = client.post("/api/search", json={"query": "tone", "k": 10}).json()["hits"]
        yield audio, client, {os.path.basename(h["path"]): h["segment_id"] for h in hits}


def assert_json_error(response, *statuses: int) -> str:
    assert response.status_code in statuses, response.text
    assert response.headers["content-type"] == "application/json"
    return response.json()["error"]


def test_range_errors_are_json(library):
    audio, client, ids = library
    url = f"/api/audio/{ids['a.wav']}"
    size = (audio / "a.wav").stat().st_size
    assert client.get(url, headers={"Range": "bytes=0-9"}).status_code == 206
    assert "malformed" in assert_json_error(client.get(url, headers={"Range": "bytes=9-2"}), 400)
    assert "malformed" in assert_json_error(client.get(url, headers={"Range": "lines=garbage"}), 400)
    beyond = client.get(url, headers={"Range": f"bytes={size + 10}-"})
    assert "outside the file" in assert_json_error(beyond, 416)
    assert beyond.headers["content-range"] == f"bytes */{size}"


def test_out_of_range_numbers_are_422_not_500(library):
    _audio, client, ids = library
    assert "end" in assert_json_error(client.get(f"/api/audio/{ids['a.wav']}?start=0&end=1e308"), 422)
    assert assert_json_error(client.get(f"/api/audio/{2**64}"), 422)
    assert assert_json_error(client.post("/api/search/like", json={"segment_id": 2**64}), 422)
    assert assert_json_error(client.post("/api/search/like", json={"segment_id": False}), 422)
    assert assert_json_error(client.post("/api/search", json={"query": "dog", "min_score": True}), 422)
    surrogate = b'{"query": "dog \\ud800 barks"}'
    response = client.post("/api/search", content=surrogate, headers={"content-type": "application/json"})
    assert "query:" in assert_json_error(response, 422)


def test_a_symlink_swapped_in_after_indexing_is_not_followed(library, tmp_path):
    audio, client, ids = library
    secret = tmp_path / "outside.wav"
    secret.write_bytes(b"RIFF not yours")
    (audio / "b.wav").unlink()
    (audio / "b.wav").symlink_to(secret)
    response = client.get(f"/api/audio/{ids['b.wav']}")
    assert "outside the indexed folder" in assert_json_error(response, 409)
    assert b"not yours" not in response.content
    (audio / "b.wav").unlink()
    (audio / "b.wav").symlink_to("/etc/passwd")
    response = client.get(f"/api/audio/{ids['b.wav']}", headers={"Range": "bytes=0-99"})
    assert_json_error(response, 409)
    assert b"root:" not in response.content


def test_a_file_replaced_after_indexing_is_not_served(library):
    audio, client, ids = library
    write_audio(audio / "c.wav", tone(3, freq=100), SR)  # other content at the same path
    response = client.get(f"/api/audio/{ids['c.wav']}")
    assert "changed since it was indexed" in assert_json_error(response, 409)
    assert "changed" in assert_json_error(client.get(f"/api/audio/{ids['c.wav']}?segment=true"), 409)
    (audio / "c.wav").unlink()
    assert "no longer on disk" in assert_json_error(client.get(f"/api/audio/{ids['c.wav']}"), 404)
    assert client.get(f"/api/audio/{ids['a.wav']}").status_code == 200  # the untouched file still plays
