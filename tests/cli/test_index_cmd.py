"""`vela-search index`, `info` and `compact`: in process through Typer's runner, and as real processes
killed mid-run (crash safety, resume, concurrent writers, interrupted rebuilds)."""

from __future__ import annotations

import json
import os
import signal
import subprocess

import pytest
from audio_factory import write_broken_files
from cli_in_process import vela
from indexing.helpers import (
    cli_command,
    cli_env,
    file_states,
    generation,
    live_segments,
    small_collection,
    wait_for,
)
from typer.testing import CliRunner

from vela_search.cli.app import app
from vela_search.cli.common import run_app
from vela_search.errors import IndexLockedError
from vela_search.indexing import index_info, index_paths
from vela_search.store import AudioIndex

runner = CliRunner()
TINY = ["--model", "tiny", "--demos", "none", "--device", "cpu"]


@pytest.fixture(scope="module")
def emb(tiny_model_dir):
    """The embedder that ``--model tiny --demos none`` loads (same fingerprint)."""
    from vela_search.embedding.embedder import VelaEmbedder

    return VelaEmbedder.from_pretrained("tiny", demos="none", device="cpu")


def invoke(*args: str):  # noqa: ANN201
    return runner.invoke(app, [str(a) for a in args])


def run_cli(capsys, *args: str) -> tuple[int, str, str]:  # noqa: ANN001
    """Run the command line as `vela-search` does (a user error becomes one line and exit status 1)."""
    code = run_app(app, [str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, " ".join(captured.err.split())


# ------------------------------------------------------------------------------------------ in process


def test_index_json_strict_rerun_info_and_compact(tmp_path, tiny_model_dir):
    audio = tmp_path / "audio"
    small_collection(audio, 3)
    broken = write_broken_files(audio / "broken")
    idx = tmp_path / "idx"

    result = invoke("index", audio, "--index", idx, *TINY, "--commit-every", "1", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["files_indexed"] == 3 and report["segments_added"] == 3
    assert report["shards"] == 3  # one commit per segment, too few shards to merge automatically
    assert {f["path"] for f in report["failures"]} == {str(p) for p in broken.values()}
    assert "tiny random model" in report["notice"]
    assert report["embedder_spec"]["model"] == "tiny"

    # Rerun without model flags: the index's recorded embedder is used; --strict fails on broken files.
    result = invoke("index", audio, "--index", idx, "--device", "cpu", "--strict")
    assert result.exit_code == 1
    assert "skipped (unchanged)" in result.stdout and "failed files" in result.stdout
    assert "zero_byte.wav" in result.stdout and "(--strict)" in result.output
    assert (
        invoke("index", audio / "clip000.wav", "--index", idx, "--device", "cpu", "--strict").exit_code == 0
    )

    info = json.loads(invoke("info", "--index", idx, "--json").stdout)
    assert info["files"] == {"total": 3 + len(broken), "indexed": 3, "duplicate": 0, "failed": len(broken)}
    assert info["embedder"]["model"] == "tiny" and info["embedder"]["demos"] == "none"
    assert info["vectors"] == 3 and len(info["shards"]) == 3 and info["roots"] == [str(audio)]
    # demos none: the prefix is the system turn alone
    assert info["query_room"]["max_positions"] == 8192 and 0 < info["query_room"]["prefix_tokens"] < 64
    assert info["query_room"]["tokens"] == 8192 - info["query_room"]["prefix_tokens"]
    human = invoke("info", "--index", idx)
    assert human.exit_code == 0 and "format version" in human.stdout and "SQfp16" in human.stdout
    assert f"{info['query_room']['tokens']} tokens" in human.stdout

    compacted = json.loads(invoke("compact", "--index", idx, "--json").stdout)
    assert compacted["shards_before"] == 3 and compacted["shards_after"] == 1 and compacted["changed"]
    assert index_info(idx)["vectors"] == 3
    assert "nothing to merge" in invoke("compact", "--index", idx).stdout


def test_dry_run_loads_no_model_and_changes_nothing(tmp_path, monkeypatch, capsys):
    import vela_search.cli.index_cmd as index_cmd

    def no_model(*args, **kwargs):  # noqa: ANN002, ANN003
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(index_cmd, "_load", no_model)
    audio, idx = tmp_path / "audio", tmp_path / "idx"
    small_collection(audio, 3)
    result = invoke("index", audio, "--index", idx, *TINY, "--dry-run")
    assert result.exit_code == 0, result.output
    flat = " ".join(result.stdout.split())
    assert "(new index): what a run would do (dry run: nothing changed)" in flat and "to embed" in flat
    preview = json.loads(invoke("index", audio, "--index", idx, "--dry-run", "--json").stdout)
    assert (
        preview["files_to_embed"] == 3 and preview["segments_to_embed"] == 3 and not preview["index_exists"]
    )
    assert not idx.exists()
    code, _, err = run_cli(capsys, "index", audio, "--index", idx, "--dry-run", "--rebuild")
    assert code == 1 and "--dry-run previews incremental runs" in err


def test_default_index_location_and_clear_errors(tmp_path, tiny_model_dir, monkeypatch, capsys):
    monkeypatch.setenv("VELA_INDEX_DIR", str(tmp_path / "home"))
    small_collection(tmp_path / "audio", 1)
    result = invoke("index", tmp_path / "audio", *TINY)
    assert result.exit_code == 0, result.output
    assert AudioIndex.exists(tmp_path / "home" / "default")

    # Another embedder for the same index: refused before anything is embedded, naming the fix.
    code, _, err = run_cli(
        capsys, "index", tmp_path / "audio", "--model", "tiny", "--demos", "default", "--device", "cpu"
    )
    assert code == 1 and "error: index" in err and "different embedder" in err and "--rebuild" in err

    code, _, err = run_cli(capsys, "index", "--index", tmp_path / "nowhere", *TINY)
    assert code == 1 and "give audio files or folders" in err
    code, _, err = run_cli(
        capsys, "index", tmp_path / "audio", "--index", tmp_path / "x", *TINY, "--window", "40"
    )
    assert code == 1 and "--window" in err and not (tmp_path / "x").exists()


# ------------------------------------------------------------------------------------ real processes


def test_kill_9_mid_run_then_rerun_equals_an_uninterrupted_run(tmp_path, emb, capsys):
    audio = tmp_path / "audio"
    small_collection(audio, 48)
    idx = tmp_path / "idx"
    log = open(tmp_path / "log.txt", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        cli_command("index", str(audio), "--index", str(idx), *TINY, "--commit-every", "1"),
        stdout=log,
        stderr=subprocess.STDOUT,
        env=cli_env(),
    )
    try:
        wait_for(lambda: generation(idx) >= 2, 180, "two commits", proc)
        # A second writer is refused while the first runs, by the library and by the CLI.
        with pytest.raises(IndexLockedError, match=f"is being written by process {proc.pid}"):
            index_paths([audio], idx, emb)
        code, _, err = run_cli(capsys, "index", audio, "--index", idx, *TINY)
        assert code == 1 and f"is being written by process {proc.pid}" in err
        assert proc.poll() is None, "the run ended before it could be killed; make it longer"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()
    assert proc.returncode == -signal.SIGKILL

    # The killed run left a consistent index: whole files only, each with its row.
    partial = live_segments(idx)
    indexed = [p for p, status, _ in file_states(idx) if status == "indexed"]
    assert 0 < len(partial) < 48
    assert sorted(s[0] for s in partial) == sorted(indexed)

    resumed = index_paths([audio], idx, emb, commit_every=4)
    assert resumed.files_skipped == len(indexed) and resumed.files_indexed == 48 - len(indexed)
    index_paths([audio], tmp_path / "clean", emb)
    segments = live_segments(idx)
    assert len(set(segments)) == len(segments) == 48
    assert segments == live_segments(tmp_path / "clean")
    assert file_states(idx) == file_states(tmp_path / "clean")


def test_rebuild_killed_half_way_keeps_the_old_generation_and_resumes(tmp_path, emb):
    from vela_search.embedding.embedder import VelaEmbedder

    audio = tmp_path / "audio"
    files = small_collection(audio, 32)
    idx = tmp_path / "idx"
    index_paths([audio], idx, emb)
    before = live_segments(idx)
    old_fingerprint = AudioIndex.open(idx).fingerprint
    demos = tmp_path / "demos.jsonl"
    demos.write_text(
        json.dumps({"text": "A kettle whistles on the stove", "word": "kettle"})
        + "\n"
        + json.dumps({"text": "Heavy rain falls on a tin roof", "word": "rain"})
        + "\n",
        encoding="utf-8",
    )

    log = open(tmp_path / "log.txt", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(  # no PATH: the rebuild covers the roots the index records
        cli_command(
            "index",
            "--index",
            str(idx),
            "--rebuild",
            "--demos",
            str(demos),
            "--device",
            "cpu",
            "--commit-every",
            "1",
        ),
        stdout=log,
        stderr=subprocess.STDOUT,
        env=cli_env(),
    )
    try:
        wait_for(
            lambda: (
                generation(idx, "manifest.staging.json") >= 0
                and len(AudioIndex.open(idx).staging["shards"]) >= 2
            ),
            180,
            "two staged commits",
            proc,
        )
        assert proc.poll() is None, "the rebuild ended before it could be killed; make it longer"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()

    # The old generation is intact and answers queries with the old embedder.
    with AudioIndex.open(idx) as index:
        assert index.fingerprint == old_fingerprint and index.staging is not None
        hit = index.search(emb.embed_audio([files[5]]), k=1)[0][0]
        assert hit.row["path"] == str(files[5]) and hit.score == pytest.approx(1.0, abs=2e-3)
    assert live_segments(idx) == before
    assert index_info(idx)["staged_rebuild"]["embedder"]["demos"] == str(demos)

    # Rerunning the rebuild resumes the staged work and then replaces the old generation.
    new = VelaEmbedder.from_pretrained("tiny", demos=str(demos), device="cpu")
    report = index_paths([], idx, new, rebuild=True)
    assert report.rebuilt and report.files_skipped > 0
    assert report.files_skipped + report.files_indexed == 32
    with AudioIndex.open(idx) as index:
        assert index.fingerprint == new.fingerprint.to_dict() != old_fingerprint
        assert index.staging is None
    assert live_segments(idx) == before


def test_progress_counts_show_no_made_up_total():
    """Before a phase knows its total, the bar shows what is done ("0/1 files" was shown while scanning)."""
    from vela_search.cli.index_cmd import _PHASES, _CountColumn, _ProgressView
    from vela_search.indexing import IndexProgress

    view = _ProgressView(enabled=False)

    def shown() -> tuple[str, str]:
        task = view._progress.tasks[-1]
        counts = [c for c in view._progress.columns if isinstance(c, _CountColumn)]
        files = task.fields.get("files", "")
        return task.description, " ".join(x for x in (str(counts[0].render(task)), files) if x)

    view.update(IndexProgress("scan"))
    assert shown() == (_PHASES["scan"], "")
    view.update(IndexProgress("scan", files_done=3, files_total=10))
    assert shown()[1].startswith("3/10 files")
    view.update(IndexProgress("hash", files_done=0, files_total=0))
    assert shown() == ("hashing new files", "")
    view.update(IndexProgress("embed", files_done=0, files_total=2, segments_done=0, segments_total=0))
    assert "0/1" not in shown()[1] and "segments" not in shown()[1]
    view.update(IndexProgress("embed", files_done=1, files_total=2, segments_done=2, segments_total=0))
    assert "2 segments" in shown()[1] and "1/2 files" in shown()[1]


# ------------------------------------------------------------------ automatic choice (compressed codes)


def test_new_index_is_automatic_with_the_given_budget_and_info_says_so(tmp_path, tiny_model_dir):
    audio = tmp_path / "audio"
    small_collection(audio, 2)
    idx = tmp_path / "idx"
    made = vela("index", audio, "--index", idx, *TINY, "--max-index-memory", "1G")
    assert made.returncode == 0, made.stderr
    shown = vela("info", "--index", idx, "--json")
    search = json.loads(shown.stdout)["search"]
    assert search["mode"] == "auto" and search["choice"] == "exact" and search["max_index_memory"] == 1 << 30
    text = vela("info", "--index", idx)
    assert "exact SQfp16 (auto; budget 1.0 GiB" in " ".join(text.stdout.split())


@pytest.mark.parametrize("kind", ["compressed", "graph"])
def test_info_shows_the_compressed_choice_and_its_measured_recall(tmp_path, kind):
    from store.compressed_helpers import KIND_LIMITS, build_compressed

    idx = tmp_path / "idx"
    build_compressed(idx, commits=2, limits=KIND_LIMITS[kind])
    shown = vela("info", "--index", idx, "--json")
    search = json.loads(shown.stdout)["search"]
    assert search["choice"] == kind and search["design_size"] == 2_000
    assert search["recall_at_10"] >= 0.9 and search["measured_at"] and search["recall_queries"] == 50
    text = vela("info", "--index", idx)
    flat = " ".join(text.stdout.split())
    assert "held-out" in flat
    if kind == "compressed":
        assert search["factory"].startswith("PCAR64,IVF")
        assert "compressed PCAR64,IVF" in flat and "designed for 2000" in flat and "nprobe" in flat
    else:
        assert search["factory"] == "IDMap,HNSW32_SQfp16" and search["ef_search"] >= 16
        assert "graph IDMap,HNSW32_SQfp16" in flat and "efSearch" in flat


@pytest.mark.parametrize("size", ["4X", "lots", "-2G"])
def test_a_bad_memory_budget_is_one_clear_line(capsys, tmp_path, size):
    code, out, err = run_cli(
        capsys, "index", str(tmp_path), "--index", str(tmp_path / "i"), "--max-index-memory", size
    )
    assert code == 1
    assert err.startswith("error: --max-index-memory:") and "(e.g. 4G)" in err
    assert "Traceback" not in err and not (tmp_path / "i").exists()


def test_info_says_which_faiss_build_and_gpus_without_reading_shards(tmp_path, monkeypatch):
    # The command line, on an index whose shard files are gone: info reads none of them.
    import faiss
    import numpy as np

    from vela_search.cli import common

    root = tmp_path / "idx"
    fingerprint = {"model": "m", "dim": 4}
    AudioIndex.create(root, fingerprint=fingerprint, dim=4).close()
    with AudioIndex.open(root).writer(fingerprint=fingerprint) as w:
        w.add(np.eye(4, dtype=np.float32), [{"path": f"/a/{i}.wav"} for i in range(4)])
        w.commit()
    for shard in (root / "shards").glob("*.faiss"):
        shard.unlink()
    with monkeypatch.context() as wide:
        wide.setattr(common.console, "_width", 200)  # one table row per line (as COLUMNS=200 would)
        text = vela("info", "--index", root)
    assert text.returncode == 0, text.stderr
    [line] = [" ".join(row.replace("│", " ").split()) for row in text.stdout.splitlines() if "FAISS" in row]
    assert line.startswith(f"FAISS {faiss.__version__}, CPU build (")
    assert line.endswith("0 GPUs (searches run on the CPU)")
    done = vela("info", "--index", root, "--json")
    assert done.returncode == 0, done.stderr
    info = json.loads(done.stdout)
    assert info["gpus"] == 0 and info["faiss_build"]["version"] == faiss.__version__
    assert info["faiss_build"]["compile_options"] == faiss.get_compile_options().split()
    assert info["faiss_build"]["gpu_support"] is False and info["faiss_build"]["cuvs"] is False


# ------------------------------------------------------------------ what the index knows, before a load
def test_rescans_and_refusals_load_no_model(tmp_path, emb, monkeypatch):
    """With every model load made to fail (VELA_NO_MODEL_LOAD), a no-op rescan, a move-only rescan and
    refusals of another embedder still finish: none of them loads a model."""
    audio, idx = tmp_path / "audio", tmp_path / "idx"
    paths = small_collection(audio, 3)
    index_paths([audio], idx, emb, window_s=8, hop_s=4)
    monkeypatch.setenv("VELA_NO_MODEL_LOAD", "1")

    same = vela("index", "--index", idx, "--json")
    assert same.returncode == 0, same.stderr
    report = json.loads(same.stdout)
    assert report["files_skipped"] == 3 and report["model_loaded"] is False
    assert report["embedder_spec"]["model"] == "tiny" and "tiny random model" in report["notice"]

    paths[0].rename(audio / "moved.wav")
    moved = vela("index", "--index", idx, "--json")
    assert moved.returncode == 0, moved.stderr
    assert json.loads(moved.stdout)["files_relinked"] == 1

    for command in (["index", "--index", idx], ["query", "a dog", "--index", idx]):
        refused = vela(*command, "--model", "Qwen/Qwen2-Audio-7B-Instruct")
        err = " ".join(refused.stderr.split())
        assert refused.returncode == 1 and "different embedder: model (index: tiny@" in err, err
        assert "No model was loaded" in err and "VELA_NO_MODEL_LOAD" not in err and "loading" not in err


def test_every_embedder_refusal_comes_before_a_load(tmp_path, emb, capsys, monkeypatch):
    audio, idx = tmp_path / "audio", tmp_path / "idx"
    small_collection(audio, 2)
    index_paths([audio], idx, emb)
    monkeypatch.setenv("VELA_NO_MODEL_LOAD", "1")
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text("{}")
    cases = {
        ("index", "--demos", "default"): "demos (index: none, asked: default)",
        ("index", "--dtype", "bf16"): "dtype (index: fp32, asked: bf16)",
        ("index", "--adapter", adapter): "adapter (index: none, asked:",
        ("index", "--quantize", "8bit"): "quantization (index: none, asked: 8bit)",
        ("query", "x", "--demos", "default"): "demos (index: none, asked: default)",
        ("query", "x", "--adapter", adapter): "adapter (index: none, asked:",
    }
    for args, difference in cases.items():
        code, _, err = run_cli(capsys, *args, "--index", idx)
        assert code == 1 and difference in err and "No model was loaded" in err, (args, err)
    code, _, err = run_cli(capsys, "serve", "--index", tmp_path / "nosuch", "--port", "0")
    assert code == 1 and "no index at" in err and "loading" not in err


def test_segmentation_is_recorded_kept_by_a_rebuild_and_enforced(tmp_path, tiny_model_dir, capsys):
    audio, idx = tmp_path / "audio", tmp_path / "idx"
    from audio_factory import noise, write_audio

    audio.mkdir()
    write_audio(audio / "long.wav", noise(40.0, 16_000, seed=3), 16_000)
    code, _, err = run_cli(capsys, "index", audio, "--index", idx, *TINY, "--window", "8", "--hop", "4")
    assert code == 0, err
    data = json.loads((idx / "manifest.json").read_text())
    assert data["segmentation"] == {"window_s": 8.0, "hop_s": 4.0, "single_max_s": 30.0}
    assert data["roots"] == [str(audio)]
    before = live_segments(idx)
    assert [(s, e) for _, s, e in before][:2] == [(0.0, 8.0), (4.0, 12.0)]

    code, _, err = run_cli(capsys, "index", "--index", idx, "--rebuild", "--device", "cpu")
    assert code == 0, err
    assert live_segments(idx) == before  # 8/4 again, not the default 10/5
    assert json.loads((idx / "manifest.json").read_text())["segmentation"]["window_s"] == 8.0

    code, _, err = run_cli(capsys, "index", "--index", idx, "--window", "10")
    assert code == 1 and "cuts files with --window 8 --hop 4" in err
    assert "`vela-search index --rebuild --window 10 --hop 4`" in err
    code, _, err = run_cli(capsys, "index", audio, "--index", idx, "--dry-run", "--hop", "5")
    assert code == 1 and "cuts files with --window 8 --hop 4" in err


def test_roots_survive_a_repair_of_the_files_table(tmp_path, emb, capsys):
    audio, idx = tmp_path / "audio", tmp_path / "idx"
    small_collection(audio, 2)
    index_paths([audio], idx, emb)
    files = json.loads((idx / "manifest.json").read_text())["files"]
    (idx / files).write_bytes(b"damaged")
    code, _, err = run_cli(capsys, "check", "--index", idx, "--repair")
    assert code == 0, err
    assert index_info(idx)["files"]["total"] == 0
    report = index_paths([], idx, emb)  # what a plain `vela-search index` does
    assert report.files_seen == 2 and index_info(idx)["files"]["indexed"] == 2


def test_index_prints_plain_progress_lines_without_a_terminal(
    tmp_path, tiny_model_dir, capsys, monkeypatch, plain_progress_states
):
    monkeypatch.setenv("VELA_PROGRESS_INTERVAL", "0.1")  # stderr under capsys is not a terminal, as a log
    audio = tmp_path / "audio"
    small_collection(audio, 2)
    code = run_app(app, ["index", str(audio), "--index", str(tmp_path / "idx"), *TINY])
    err = capsys.readouterr().err
    assert code == 0, err
    assert [line for line in err.splitlines() if " elapsed" in line], err
    assert "\r" not in err and "\x1b[" not in err  # no bar redraws in a log
    # Which stages a 2-file run prints depends on timing; that each one reaches the log does not.
    states = plain_progress_states
    embedding = [state for state in states if state.startswith("embedding: ")]
    assert any(state.startswith("loading the model: ") for state in states), states
    assert embedding and embedding[-1].startswith("embedding: 2/2 segments (100%)"), embedding
