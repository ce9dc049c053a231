"""Helpers of the indexing tests: small collections, and what an index holds, read back through the store."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import numpy as np
from audio_factory import noise, tone, write_audio

from vela_search.store import AudioIndex

SR = 16_000
REPO = Path(__file__).resolve().parents[2]


def small_collection(directory: Path, n: int, seconds: float = 1.0, prefix: str = "clip") -> list[Path]:
    """``n`` distinct short WAV files (different tones), returned sorted."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        wave = tone(seconds, SR, freq=200.0 + 37.0 * i) + noise(seconds, SR, seed=i, amplitude=0.01)
        paths.append(write_audio(directory / f"{prefix}{i:03d}.wav", wave, SR))
    return sorted(paths)


def live_segments(index_dir: Path) -> list[tuple[str, float, float]]:
    """(path, start_s, end_s) of every live segment, sorted."""
    with AudioIndex.open(index_dir) as index:
        ids, _ = index.all_vectors()
        rows = index.segment_rows(ids)
    return sorted((r["path"], r["start_s"], r["end_s"]) for r in rows)


def segment_rows(index_dir: Path) -> list[dict]:
    """Metadata rows of every live segment, ordered by (path, start_s)."""
    with AudioIndex.open(index_dir) as index:
        ids, _ = index.all_vectors()
        rows = index.segment_rows(ids)
    return sorted(rows, key=lambda r: (r["path"], r["start_s"]))


def files_table(index_dir: Path) -> dict[str, dict]:
    """The files table as path -> row."""
    with AudioIndex.open(index_dir) as index:
        return {row["path"]: row for row in index.files().to_pylist()}


def file_states(index_dir: Path) -> list[tuple[str, str, str | None]]:
    """(path, status, sha256) of every files row, sorted."""
    return sorted((p, r["status"], r["sha256"]) for p, r in files_table(index_dir).items())


def generation(index_dir: Path, name: str = "manifest.json") -> int:
    """Generation of the (staged) manifest, -1 when there is none or it is being replaced."""
    try:
        return int(json.loads((index_dir / name).read_text())["generation"])
    except (FileNotFoundError, json.JSONDecodeError, KeyError):
        return -1


def cli_command(*args: str) -> list[str]:
    """The command line of ``vela-search`` in a fresh interpreter."""
    return [sys.executable, "-m", "vela_search", *args]


def cli_env() -> dict[str, str]:
    """Environment of CLI subprocesses: offline, the session's tiny checkpoint, the source tree first."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("TRANSFORMERS_OFFLINE", "1")
    return env


def wait_for(condition, timeout: float, what: str, proc=None) -> None:  # noqa: ANN001
    """Poll ``condition()`` every 20 ms; fail with ``what`` (and the process output) on timeout or exit."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        if proc is not None and proc.poll() is not None:
            out = proc.stdout.read().decode(errors="replace") if proc.stdout else ""
            raise AssertionError(f"the process exited ({proc.returncode}) before {what}:\n{out}")
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def unit_rows(vectors: np.ndarray) -> bool:
    """Whether every row is a unit vector (fp16 storage tolerance)."""
    return bool(np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=2e-3))
