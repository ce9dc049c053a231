"""Helpers of the service tests: the console script, a server in a subprocess, a private index copy."""

from __future__ import annotations

import json
import os
import shutil
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


def start_server(index: Path, *args: str, port: int | None = None) -> tuple[subprocess.Popen, str]:
    """`vela-search serve --index INDEX` in a subprocess; returns it and its URL once it answers.

    Without ``port`` the server takes any free port (``--port 0``) and its URL is read from the
    ``serve.json`` it writes beside the index once it listens, recorded with its process id: a port picked
    here beforehand could be taken meanwhile by another process on this machine (a parallel test run),
    whose server would then answer in its place.
    """
    import urllib.request

    env = dict(os.environ, HF_HUB_OFFLINE="1")
    proc = subprocess.Popen(
        index_command("serve", "--index", str(index), "--port", str(port or 0), *args),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    record = Path(index) / "serve.json"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"server exited early: {proc.stderr.read()}")
        try:
            served = json.loads(record.read_text())
            if served.get("pid") == proc.pid:
                with urllib.request.urlopen(served["url"] + "/healthz", timeout=2):
                    return proc, served["url"]
        except (OSError, ValueError):
            pass
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
