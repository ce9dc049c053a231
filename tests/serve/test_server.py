"""A real `vela-search serve` on a loopback port: `vela-search query` through it, and clean shutdowns.

The server is always a subprocess (its signals and its record are the point); the commands that talk to it
or are refused before serving run in process (tests/cli_in_process.py), which is a second process all the
same for the server.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
import urllib.request

import pytest
from cli_in_process import vela as vela_in_process

from vela_search.serve.discovery import SERVE_FILE

from .helpers import copy_index, start_server, stop_server

QUERY = ["query", "a low hum", "-k", "3", "--json"]


def vela(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """`vela-search *args` in process (`timeout` is kept for the callers; nothing here serves)."""
    return vela_in_process(*args)


@pytest.fixture(autouse=True)
def no_serving_in_process(monkeypatch):
    """A `serve` that should be refused before any work fails the test instead of serving forever."""

    def refuse(*args, **kwargs):  # noqa: ANN002, ANN003
        raise AssertionError("the command went on to serve")

    monkeypatch.setattr("vela_search.serve.server.run_server", refuse)


def health(url: str) -> dict:
    with urllib.request.urlopen(url + "/healthz", timeout=10) as response:
        return json.loads(response.read())


@pytest.fixture(scope="module")
def index(serve_collection, tmp_path_factory):
    """A private copy: the server writes serve.json beside it."""
    return copy_index(serve_collection[1], tmp_path_factory.mktemp("server") / "idx")


def test_query_uses_a_running_server_with_identical_output(index, serve_collection):
    audio, _ = serve_collection
    like = ["query", "--like", str(audio / "long.wav"), "--start", "10", "--end", "20", "-k", "3"]
    # A record left by a server that is gone does not stop a query: it runs here.
    (index / SERVE_FILE).write_text(
        json.dumps({"url": "http://127.0.0.1:9", "pid": 2**22 + 12345, "name": "x"})
    )
    local = vela(*QUERY, "--index", str(index))
    assert local.returncode == 0, local.stderr
    local_like = vela(*like, "--index", str(index))
    assert local_like.returncode == 0, local_like.stderr

    proc, url = start_server(index)
    try:
        record = json.loads((index / SERVE_FILE).read_text())
        assert record["url"] == url and record["pid"] == proc.pid and record["name"] == "idx"
        before = health(url)["batched_items"]
        served = vela(*QUERY, "--index", str(index))
        assert served.returncode == 0, served.stderr
        assert served.stdout == local.stdout  # identical, byte for byte
        assert health(url)["batched_items"] == before + 1  # and the server answered it
        assert "loading the model" not in served.stderr
        assert vela(*like, "--index", str(index)).stdout == local_like.stdout
        explicit = vela(*QUERY, "--index", str(index), "--server", url)
        assert explicit.returncode == 0 and explicit.stdout == local.stdout
        # The server's refusal reads as the local one.
        refused = vela(
            "query",
            "x",
            "-k",
            "3",
            "--where",
            "*.nothing",
            "--min-duration",
            "9",
            "--max-duration",
            "1",
            "--index",
            str(index),
        )
        assert refused.returncode == 1 and "above the maximum" in refused.stderr
        # Stopping: SIGTERM ends it cleanly and the record goes with it.
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err
        assert "stopped" in err and "Traceback" not in err
        assert '"POST /api/search HTTP/1.1" 200' in out  # the access log is on by default
        assert not (index / SERVE_FILE).exists()
    finally:
        stop_server(proc)


def test_an_explicit_server_that_does_not_answer_is_an_error(index):
    result = vela("query", "dog", "--index", str(index), "--server", "http://127.0.0.1:9")
    assert result.returncode == 1
    assert "no vela-search server answers at http://127.0.0.1:9" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_busy_port_is_a_clear_error_and_ctrl_c_stops_the_server_cleanly(index):
    proc, url = start_server(index)
    try:
        port = url.rsplit(":", 1)[1]
        busy = vela("serve", "--index", str(index), "--port", port, timeout=120)
        assert busy.returncode == 1
        assert f"could not listen on 127.0.0.1:{port}" in busy.stderr and "Traceback" not in busy.stderr
        assert "loading the model" not in busy.stderr  # refused before any work
        assert json.loads((index / SERVE_FILE).read_text())["pid"] == proc.pid  # left to its owner
        assert health(url)["status"] == "ok"
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err
        assert "stopped" in err and "Traceback" not in err
        assert not (index / SERVE_FILE).exists()
    finally:
        stop_server(proc)


def test_a_public_bind_needs_a_token(index, monkeypatch):
    monkeypatch.delenv("VELA_SERVE_TOKEN", raising=False)
    result = vela("serve", "--index", str(index), "--host", "0.0.0.0", "--port", "0", timeout=60)
    assert result.returncode == 1
    assert "--token" in result.stderr and "VELA_SERVE_TOKEN" in result.stderr
    assert "loading the model" not in result.stderr  # refused before any work


def indexes(url: str) -> dict:
    with urllib.request.urlopen(url + "/api/indexes", timeout=10) as response:
        return json.loads(response.read())["indexes"][0]


def test_a_rebuild_under_a_running_server_is_followed_and_query_keeps_working(serve_collection, tmp_path):
    audio, session_index = serve_collection
    index = copy_index(session_index, tmp_path / "idx")
    proc, url = start_server(index)
    try:
        first = indexes(url)["generation"]
        rebuilt = vela("index", str(audio), "--index", str(index), "--rebuild", "--demos", "default")
        assert rebuilt.returncode == 0, rebuilt.stderr
        # Right after the promotion: through the server once it has the new model, else answered here.
        during = vela(*QUERY, "--index", str(index))
        assert during.returncode == 0, during.stderr
        assert json.loads(during.stdout)
        deadline = time.monotonic() + 120
        while (info := indexes(url))["generation"] == first or info["behind"]:
            assert time.monotonic() < deadline, info
            time.sleep(0.2)
        assert info["embedder"]["demos"] != "none" and health(url)["status"] == "ok"
        before = health(url)["batched_items"]
        after = vela(*QUERY, "--index", str(index))
        assert after.returncode == 0, after.stderr
        assert health(url)["batched_items"] == before + 1  # the server answered, with the new embedder
        assert after.stdout == during.stdout
    finally:
        stop_server(proc)
