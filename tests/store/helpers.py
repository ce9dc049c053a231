"""Helpers of the store tests: random unit vectors, a brute-force oracle, subprocesses."""

from __future__ import annotations

import fnmatch
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np

DIM = 16
FP = {"model": "tiny", "revision": "r1", "prompt_version": "1", "dim": DIM}
REPO = Path(__file__).resolve().parents[2]


def unit(n: int, dim: int = DIM, seed: int = 0) -> np.ndarray:
    """`n` random unit vectors."""
    v = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def rows_for(ids_start: int, n: int, folder: str = "a") -> list[dict]:
    """Metadata rows spread over a few files of `folder`."""
    return [
        {"path": f"/audio/{folder}/{(ids_start + i) % 7}.wav", "start_s": float(i), "end_s": float(i + 10)}
        for i in range(n)
    ]


def brute_force(
    ids: np.ndarray, vectors: np.ndarray, queries: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k by numpy over fp16-rounded vectors (what SQfp16 stores), ties by id."""
    stored = vectors.astype(np.float16).astype(np.float32)
    scores = queries @ stored.T
    out_ids, out_scores = [], []
    for row in scores:
        order = np.lexsort((ids, -row))[:k]
        out_ids.append(ids[order])
        out_scores.append(row[order])
    return np.array(out_ids), np.array(out_scores)


def glob_mask(rows: list[dict], pattern: str) -> np.ndarray:
    """Rows whose path (or any of paths) matches `pattern`."""
    return np.array(
        [
            any(fnmatch.fnmatch(p, pattern) for p in [r.get("path"), *(r.get("paths") or [])] if p)
            for r in rows
        ]
    )


def run_python(code: str, *args: str, **kwargs) -> subprocess.Popen:
    """Start a Python subprocess running `code` with the repository importable."""
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kwargs,
    )
