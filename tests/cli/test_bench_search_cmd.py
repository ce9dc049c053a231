"""`vela-search bench search`: a report in process, a refusal through the installed console script."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from cli_in_process import vela

CLI = str(Path(sys.executable).with_name("vela-search"))


def _run(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run(
        [CLI, "bench", "search", *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=120
    )


def test_reports_compressed_and_exact_search_with_memory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = vela(
        "bench",
        "search",
        "--vectors", "5000", "--dim", "64", "--queries", "20", "--exact-queries", "5",
        "--max-index-memory", "200K", "--workdir", str(tmp_path), "--json", "-",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["vectors"] == 5000 and report["dim"] == 64 and report["k"] == 10
    assert report["choice"]["choice"] == "compressed" and report["choice"]["max_index_memory"] == 200 << 10
    assert report["default"]["mode"] == "compressed" and 0.8 <= report["default"]["recall_at_k"] <= 1.0
    assert report["exact"]["recall_at_k"] == 1.0 and report["exact"]["queries"] == 5
    assert 0 < report["index_memory_bytes"] < report["fp16_bytes"] == 5000 * 64 * 2
    # The table goes to stderr when the JSON goes to stdout.
    assert "compressed" in result.stderr and "index memory" in result.stderr and "targets:" in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_a_bad_memory_size_is_one_line(tmp_path):
    result = _run("--vectors", "100", "--max-index-memory", "lots", cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "error: --max-index-memory: 'lots' is not a size: give bytes or a number with K, M, G or T (e.g. 4G)"
    ]


def test_data_compares_the_kinds_and_logs_each_row(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "report.json"
    result = vela(
        "bench", "search", "--data", "hard",
        "--vectors", "1500", "--dim", "16", "--queries", "5", "--no-peers",
        "--max-index-memory", "20K", "--workdir", str(tmp_path / "made" / "here"), "--json", str(out),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert list((tmp_path / "made" / "here").iterdir()) == []  # made when missing, left empty
    report = json.loads(out.read_text())
    assert report["data"] == "hard" and report["small_memory"] == 20 << 10
    assert report["choices"]["default"]["choice"] == "exact"  # 24,000 numbers: exact
    assert report["choices"]["small budget"]["choice"] == "compressed"
    systems = {row["system"] for row in report["rows"]}
    assert {"vela exact", "vela compressed", "vela compressed ids"} <= systems
    logged = [json.loads(line) for line in (tmp_path / "report.json.rows.jsonl").read_text().splitlines()]
    assert logged == report["rows"]
    flat = " ".join(result.stdout.split())
    assert "compressed forced by a budget of 20 KiB" in flat and "at recall >= 0.95: vela exact" in flat
    bad = vela("bench", "search", "--data", "easy")
    assert bad.returncode == 2 and "'easy' is not one of hard, clustered" in bad.stderr
    not_a_folder = vela("bench", "search", "--data", "hard", "--workdir", str(out))
    assert not_a_folder.returncode == 2 and f"cannot use {out} as a work folder" in not_a_folder.stderr


def test_data_with_keep_leaves_the_stores_it_built(tmp_path):
    from vela_search.store import AudioIndex

    result = vela(
        "bench", "search", "--data", "hard", "--vectors", "300", "--dim", "8", "--queries", "3",
        "--no-peers", "--no-compressed", "--keep", "--workdir", str(tmp_path),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    (kept,) = tmp_path.iterdir()
    assert f"storeskeptin{kept}" in "".join(result.stdout.split())  # (the table may wrap the path)
    with AudioIndex.open(kept / "default") as index:
        assert index.num_vectors == 300


def test_data_with_peers_measures_only_those(tmp_path):
    from vela_search.bench.search_compare import all_peers
    from vela_search.cli import bench_search_cmd

    assert bench_search_cmd._PEER_NAMES == all_peers()
    out = tmp_path / "report.json"
    result = vela(
        "bench", "search", "--data", "hard", "--vectors", "300", "--dim", "8", "--queries", "3",
        "--peers", "faiss", "--no-compressed", "--workdir", str(tmp_path), "--json", str(out),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    systems = {row["system"] for row in json.loads(out.read_text())["rows"]}
    assert systems == {"vela exact", "vela exact ids", "faiss"}
    bad = vela("bench", "search", "--data", "hard", "--peers", "faiss,annoy")
    assert bad.returncode == 2 and "give one or more of faiss, hnswlib, usearch" in bad.stderr
