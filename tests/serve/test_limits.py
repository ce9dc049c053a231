"""Body limits counted on the stream: chunked or declared, uploads and JSON, nothing past the limit read."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from vela_search.serve.app import create_app
from vela_search.serve.service import ServeSettings, Service

LIMIT = 1_000_000
JSON_LIMIT = 4096
CHUNK = 64 * 1024
BOUNDARY = b"vela-boundary"


@pytest.fixture(scope="module")
def app(serve_collection):
    settings = ServeSettings(max_upload_bytes=LIMIT, max_json_bytes=JSON_LIMIT)
    return create_app(Service.open([("idx", serve_collection[1])], settings))


def written_bytes() -> int:
    """Bytes this process has passed to write() so far (Linux)."""
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("wchar:"):
            return int(line.split()[1])
    raise AssertionError("no wchar in /proc/self/io")


def multipart_chunks(total: int):
    head = b"--" + BOUNDARY + b'\r\nContent-Disposition: form-data; name="file"; filename="big.wav"\r\n\r\n'
    yield head
    sent = 0
    while sent < total:
        yield b"\0" * CHUNK
        sent += CHUNK
    yield b"\r\n--" + BOUNDARY + b"--\r\n"


def drive(app, path: str, content_type: bytes, chunks, declared: int | None = None) -> tuple[int, dict, int]:
    """One request straight through ASGI, its body sent chunk by chunk; (status, body, bytes taken)."""
    headers = [(b"content-type", content_type)]
    if declared is not None:
        headers.append((b"content-length", str(declared).encode()))
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": headers,
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80),
        "state": {},
    }
    taken = 0
    sent: list[dict] = []

    async def receive() -> dict:
        nonlocal taken
        chunk = next(chunks, None)
        if chunk is None:
            return {"type": "http.request", "body": b"", "more_body": False}
        taken += len(chunk)
        return {"type": "http.request", "body": chunk, "more_body": True}

    async def send(message: dict) -> None:
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    status = next(m["status"] for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return status, json.loads(body), taken


def test_a_chunked_upload_over_the_limit_stops_at_the_limit_and_never_reaches_the_disk(app):
    before = written_bytes()
    status, body, taken = drive(
        app, "/api/search/audio", b"multipart/form-data; boundary=" + BOUNDARY, multipart_chunks(20_000_000)
    )
    on_disk = written_bytes() - before
    assert status == 413 and "limit of 1 MB" in body["error"]
    assert taken <= LIMIT + 64 * 1024 + 2 * CHUNK  # the server stopped reading at the limit
    assert on_disk < LIMIT + 256 * 1024  # of 20 MB sent, at most the limit was written anywhere


def test_a_declared_length_over_the_limit_is_refused_before_reading(app):
    status, body, taken = drive(
        app,
        "/api/search/audio",
        b"multipart/form-data; boundary=" + BOUNDARY,
        multipart_chunks(20_000_000),
        declared=20_000_000,
    )
    assert status == 413 and taken == 0


def test_json_bodies_have_their_own_small_limit_counted_on_the_stream(app):
    query = json.dumps({"query": "word " * 50_000}).encode()  # 250 kB: far under the upload limit
    pieces = iter([query[i : i + 1000] for i in range(0, len(query), 1000)])
    status, body, taken = drive(app, "/api/search", b"application/json", pieces)
    assert status == 413 and f"limit of {JSON_LIMIT} bytes" in body["error"]
    assert taken <= JSON_LIMIT + 1000
    with TestClient(app) as client:  # declared, through HTTP
        response = client.post("/api/search", content=query, headers={"content-type": "application/json"})
        assert response.status_code == 413 and "limit of" in response.json()["error"]
        assert client.post("/api/search", json={"query": "dog"}).status_code == 200
