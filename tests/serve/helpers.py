"""Helpers of the service tests: the console script, a server in a subprocess, a private index copy."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

SR = 16_000
# A file name a page must show as text, never as markup.
HTML_NAME = '<img src=x onerror="window.__vela_injected=1">.wav'
VELA_SEARCH = Path(sys.executable).with_name("vela-search")


def index_command(*args: str) -> list[str]:
    """The installed console script (next to this interpreter), as a user runs it."""
    return [str(VELA_SEARCH), *args]


def copy_index(index: Path, dest: Path) -> Path:
    """A private copy of the session index (for tests that change it)."""
    shutil.copytree(index, dest, ignore=shutil.ignore_patterns("serve.json", "writer.lock"))
    return dest


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(index: Path, *args: str, port: int | None = None) -> tuple[subprocess.Popen, str]:
    """`vela-search serve --index INDEX --port N` in a subprocess; returns it and its URL once it answers."""
    import urllib.request

    port = port or free_port()
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    proc = subprocess.Popen(
        index_command("serve", "--index", str(index), "--port", str(port), *args),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"server exited early: {proc.stderr.read()}")
        try:
            with urllib.request.urlopen(url + "/healthz", timeout=2):
                return proc, url
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise AssertionError("server did not answer within 120 s")


def stop_server(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
