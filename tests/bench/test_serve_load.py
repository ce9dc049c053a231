"""`vela-search bench serve`: the load benchmark of the service, run as a user runs it."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

VELA_SEARCH = Path(sys.executable).with_name("vela-search")
SAMPLES = Path(__file__).resolve().parents[2] / "data" / "samples"


def test_a_missing_index_fails_before_any_server_starts(tmp_path):
    result = subprocess.run(
        [str(VELA_SEARCH), "bench", "serve", "--index", str(tmp_path / "none")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1 and "no index at" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_bench_serve_reports_latency_throughput_and_errors(tmp_path, tiny_model_dir):
    audio = tmp_path / "audio"
    shutil.copytree(SAMPLES, audio)
    index = tmp_path / "idx"
    built = subprocess.run(
        [str(VELA_SEARCH), "index", str(audio), "--index", str(index), "--model", "tiny", "--demos", "none"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert built.returncode == 0, built.stderr
    result = subprocess.run(
        [str(VELA_SEARCH), "bench", "serve", "--index", str(index), "--clients", "3", "--queries", "4"]
        + ["--device", "cpu", "--commits", "--json", "-"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    runs = report["runs"]
    assert [(r["batching"], r["clients"]) for r in runs] == [
        (True, 1),
        (True, 3),
        (False, 1),
        (False, 3),
        (True, 3),
        (True, 3),
    ]
    assert runs[4]["commits"] == 0 and runs[5]["commits"] >= 1  # the same load, then with commits
    assert report["p99_with_commits_ratio"] == runs[5]["p99_ms"] / runs[4]["p99_ms"]
    assert report["errors"] == 0 and all(r["queries"] == r["clients"] * 4 for r in runs)
    assert all(r["p50_ms"] > 0 and r["p99_ms"] >= r["p50_ms"] and r["queries_per_s"] > 0 for r in runs)
    unbatched = [r for r in runs if not r["batching"]]
    assert all(r["largest_batch"] == 1 and r["batches"] == r["queries"] for r in unbatched)
    assert "queries/s" in result.stderr  # the table
