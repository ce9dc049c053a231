"""``vela-search bench``: the commands end to end on synthetic datasets and the tiny model (CPU)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from cli_in_process import vela
from typer.testing import CliRunner

from tests.bench.dataset_factory import make_audiocaps, make_clotho, write_tone, youtube_id
from vela_search.cli.app import app
from vela_search.errors import DatasetError, VelaError

METRIC_KEYS = {
    f"{d}_{m}" for d in ("t2a", "a2t") for m in ("R@1", "R@5", "R@10", "mAP@10", "median_rank", "mean_rank")
}
TINY = ["--model", "tiny", "--device", "cpu", "--demos", "none"]


def invoke(*args: str):
    return CliRunner().invoke(app, ["bench", *args])


def test_clotho_command_prints_the_table_and_writes_the_report(tmp_path, tiny_model_dir):
    data = make_clotho(tmp_path / "clotho", 3, seconds=0.5)
    out = tmp_path / "reports" / "clotho.json"
    result = invoke("clotho", "--data-dir", str(data), *TINY, "--json", str(out))
    assert result.exit_code == 0, result.output
    assert "R@1" in result.output and "17.9" in result.output  # the paper's Clotho R@1 beside ours
    assert "tiny random model" in result.output

    report = json.loads(out.read_text())
    assert (report["dataset"], report["split"]) == ("clotho", "evaluation")
    assert (report["n_clips"], report["n_captions"], report["n_missing"]) == (3, 15, 0)
    assert set(report["metrics"]) == METRIC_KEYS
    assert all(0 <= report["metrics"][f"t2a_R@{k}"] <= 100 for k in (1, 5, 10))
    assert report["fingerprint"]["model"].startswith("tiny@") and report["fingerprint"]["demos"] == "none"
    assert report["clips_per_s"] > 0 and report["wall_s"] > 0 and report["device"] == "cpu"


def test_audiocaps_command_counts_missing_clips_and_limits(tmp_path, tiny_model_dir):
    data = make_audiocaps(tmp_path / "audiocaps", 4, n_missing=1, seconds=0.5)
    result = invoke("audiocaps", "--data-dir", str(data), *TINY, "--json", "-")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert (report["n_clips"], report["n_captions"], report["n_missing"]) == (3, 15, 1)
    assert report["missing"] == [youtube_id(3)]
    assert report["paper"] == {"t2a_R@1": 18.1}

    limited = invoke("audiocaps", "--data-dir", str(data), *TINY, "--limit", "2", "--json", "-")
    assert limited.exit_code == 0, limited.output
    assert (json.loads(limited.stdout)["n_clips"], json.loads(limited.stdout)["n_captions"]) == (2, 10)


def test_missing_dataset_is_a_clear_error(tmp_path):
    result = invoke("clotho", "--data-dir", str(tmp_path / "nowhere"), *TINY)
    assert isinstance(result.exception, DatasetError)
    assert "clotho_captions_evaluation.csv" in str(result.exception)


def test_speed_command_checks_parity_and_writes_the_report(tmp_path, tiny_model_dir):
    out = tmp_path / "speed.json"
    result = invoke(
        "speed",
        "--model",
        "tiny",
        "--device",
        "cpu",
        "--demos",
        "none",
        "--clip-seconds",
        "1",
        "--clips",
        "3",
        "--naive-clips",
        "2",
        "--queries",
        "3",
        "--naive-queries",
        "1",
        "--search-vectors",
        "300",
        "--json",
        str(out),
    )
    assert result.exit_code == 0, result.output
    assert "parity with the naive loop" in result.output and "ok" in result.output
    report = json.loads(out.read_text())
    assert report["parity_ok"] is True and report["model"].startswith("tiny@")
    (run,) = report["runs"]
    (clip,) = run["audio"]
    keys = ("clips_per_s", "naive_clips_per_s", "speedup_vs_naive", "parity_max_abs_diff", "flops_per_clip")
    for key in keys:
        assert clip[key] is not None, key
    assert clip["parity_max_abs_diff"] < 1e-4
    assert run["text"]["latency_ms_median"] > 0
    assert report["search"]["vectors"] == 300


def test_speed_command_refuses_bad_settings_before_loading():
    result = invoke("speed", "--model", "no/such-model", "--device", "cpu", "--clip-seconds", "45")
    assert isinstance(result.exception, VelaError) and "clip-seconds" in str(result.exception)

    result = invoke("speed", "--model", "no/such-model", "--device", "cpu", "--clips", "0")
    assert result.exit_code == 2 and "Invalid value" in result.output


def test_python_m_entry_point_end_to_end(tmp_path, tiny_model_dir):
    """The command line: JSON on stdout (in process), and a one-line error from a real `python -m` process."""
    data = make_clotho(tmp_path / "clotho", 2, seconds=0.5)
    env = dict(os.environ, COLUMNS="120")
    cli = [sys.executable, "-m", "vela_search", "bench"]
    done = vela("bench", "clotho", "--data-dir", data, *TINY, "--json", "-")
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout)
    assert (report["n_clips"], report["n_captions"]) == (2, 10)
    assert "R@1" in done.stderr  # the table goes to stderr when the JSON takes stdout

    failed = subprocess.run(
        [*cli, "audiocaps", "--data-dir", str(tmp_path / "none"), *TINY],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert failed.returncode == 1
    assert failed.stderr.startswith("error:") and "test.csv" in failed.stderr


def test_pipeline_benchmark_reports_the_three_timings(tiny_model_dir, tmp_path):
    import pytest
    from audio_factory import tone, write_audio

    (tmp_path / "clips").mkdir()
    for i in range(3):
        write_audio(tmp_path / "clips" / f"c{i}.wav", tone(2.0 + i, freq=300 + 100 * i), 16000, "wav")
    result = CliRunner().invoke(
        app,
        ["bench", "pipeline", str(tmp_path / "clips"), "--model", "tiny", "--demos", "none", "--json", "-"],
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout[result.stdout.index("{") :])
    assert report["files"] == 3 and report["segments"] == 3
    assert report["decode_s"] > 0 and report["embed_s"] > 0 and report["end_to_end_s"] > 0
    assert report["overlap_ratio"] == pytest.approx(
        report["end_to_end_s"] / max(report["decode_s"], report["embed_s"]), rel=1e-6
    )


def test_store_benchmark_prints_the_curve_and_writes_json(tmp_path):
    result = invoke(
        "store", "--files", "40", "--dim", "8", "--moves", "5", "--workdir", str(tmp_path), "--json", "-"
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout[result.stdout.index("{") :])
    assert report["files"] == 40 and report["dim"] == 8 and report["commits"] == 2
    assert [landed for landed, _ in report["curve"]] == list(range(4, 41, 4))
    assert report["moves"] == 5 and report["ms_per_move"] > 0
    assert "ms per file" in result.stderr and "5 moved files" in result.stderr
    assert report["shards_at_end"] == 1 and report["peak_shards"] == 2 and report["last_vs_first"] > 0
    assert "shards after the landing (not compacted" in " ".join(result.stderr.split())
    # Both maintenance modes at the same scale: the background run's fields at the top, the inline run beside.
    assert report["maintenance"] == "background" and report["inline"]["maintenance"] == "inline"
    assert report["inline"]["commits"] == report["commits"] and report["commit_p99_ms"] > 0
    assert "commit latency" in result.stderr
    bad = invoke("store", "--files", "4", "--dim", "4", "--maintenance", "later")
    assert "--maintenance must be background, inline or both" in str(bad.exception)


def test_clotho_with_index_loads_the_index_embedder_without_model(tmp_path, tiny_model_dir, capsys):
    from vela_search.cli.common import run_app

    data = make_clotho(tmp_path / "clotho", 3, seconds=0.5)
    idx = tmp_path / "idx"
    assert run_app(app, ["index", str(data / "evaluation"), "--index", str(idx), *TINY]) == 0
    capsys.readouterr()
    # No --model: the index's recorded tiny embedder, as `query` does (not the 7B default, which is offline).
    code = run_app(app, ["bench", "clotho", "--data-dir", str(data), "--index", str(idx), "--json", "-"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    report = json.loads(captured.out)
    assert report["n_from_index"] == 3 and report["fingerprint"]["model"].startswith("tiny@")


def test_download_offline_leaves_no_empty_folder(tmp_path, monkeypatch, capsys):
    import socket

    from vela_search.bench import download as dl
    from vela_search.cli.common import run_app

    with socket.socket() as sock:  # a port nothing listens on: the connection is refused, as offline
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    remote = dl.RemoteFile(url=f"http://127.0.0.1:{port}/captions.csv", filename="c.csv", md5=None, size=None)
    monkeypatch.setitem(dl.REMOTE_FILES, "clotho", {"evaluation": (remote,)})
    target = tmp_path / "data" / "clotho"
    code = run_app(app, ["bench", "clotho", "--download", "--data-dir", str(target), *TINY])
    err = capsys.readouterr().err
    assert code == 1 and err.strip().startswith("error: cannot download") and "Traceback" not in err
    assert not (tmp_path / "data").exists()


def test_two_demo_sets_are_scored_side_by_side_with_one_model_load(tmp_path, tiny_model_dir, monkeypatch):
    import vela_search.embedding.embedder as embedder_module

    loads = []
    real_load = embedder_module.load_backbone
    monkeypatch.setattr(
        embedder_module, "load_backbone", lambda *a, **k: loads.append(a) or real_load(*a, **k)
    )
    data = make_clotho(tmp_path / "clotho", 3, seconds=0.5)
    write_tone(tmp_path / "demos" / "clips" / "bark.wav", 7, seconds=0.5)
    demo_file = tmp_path / "demos" / "mixed.jsonl"
    demo_file.write_text(
        '{"audio": "clips/bark.wav", "word": "dog"}\n{"text": "Rain falls on a roof", "word": "rain"}\n'
    )
    out = tmp_path / "compare.json"
    result = invoke(
        *("clotho", "--data-dir", str(data), "--model", "tiny", "--device", "cpu"),
        *("--demos", "none", "--demos", str(demo_file), "--json", str(out)),
    )
    assert result.exit_code == 0, result.output
    assert len(loads) == 1
    assert "none" in result.output and "mixed.jsonl" in result.output and "modality gap" in result.output

    comparison = json.loads(out.read_text())
    assert comparison["dataset"] == "clotho"
    none, mixed = comparison["runs"]
    assert (none["demos"], mixed["demos"]) == ("none", str(demo_file))
    assert (none["n_demos"], mixed["n_demos"], mixed["n_audio_demos"]) == (0, 2, 1)
    assert none["prefix_tokens"] < mixed["prefix_tokens"]
    assert none["report"]["fingerprint"]["demos"] == "none"
    assert mixed["report"]["fingerprint"]["demos"] not in ("none", "default")
    for run in (none, mixed):
        assert set(run["report"]["metrics"]) == METRIC_KEYS and run["report"]["n_clips"] == 3
    assert none["report"]["modality_gap"] != mixed["report"]["modality_gap"]
