"""`index --ray`: the same index as the single-process path, built by decode tasks and embedding actors on a
real local Ray (the session's `ray_cluster`, tests/conftest.py), through faults: broken files, the driver
killed with SIGKILL, an embedding actor killed mid-run, a second writer."""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys

import numpy as np
import pytest
from audio_factory import noise, tone, write_audio, write_broken_files
from cli_in_process import vela

from indexing.helpers import (
    cli_command,
    cli_env,
    file_states,
    files_table,
    generation,
    live_segments,
    wait_for,
)
from indexing.helpers import small_collection as clips
from vela_search.errors import IndexLockedError
from vela_search.indexing import index_paths
from vela_search.store import AudioIndex

needs_ray = pytest.mark.skipif(importlib.util.find_spec("ray") is None, reason='needs "vela-search[ray]"')
TINY = ["--model", "tiny", "--demos", "none", "--device", "cpu"]
# What differs between two runs that built the same index: where, how long, and who embedded.
_RUN_FIELDS = {"index_dir", "seconds", "workers"}


@pytest.fixture(scope="module")
def exact_emb(tiny_model_dir):
    """The tiny model embedding one window per forward: its vectors do not depend on what shares a batch,
    so two runs that batch windows differently must still agree bit for bit."""
    from vela_search.embedding.embedder import VelaEmbedder

    return VelaEmbedder.from_pretrained("tiny", demos="none", device="cpu", max_batch_items=1)


def _vectors(index_dir) -> dict[tuple[str, float, float], np.ndarray]:  # noqa: ANN001
    with AudioIndex.open(index_dir) as index:
        ids, vectors = index.all_vectors()
        rows = index.segment_rows(ids)
    return {(r["path"], r["start_s"], r["end_s"]): vectors[i] for i, r in enumerate(rows)}


def _summary(report) -> dict:  # noqa: ANN001
    data = report.to_dict()
    data["failures"] = sorted(data["failures"], key=lambda f: f["path"])
    return {k: v for k, v in data.items() if k not in _RUN_FIELDS}


def _parent(pid: int) -> int:
    """The parent process of ``pid`` (0 once it is gone)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            stat = fh.read().decode(errors="replace")
    except OSError:
        return 0
    return int(stat.rsplit(")", 1)[1].split()[1])  # the field after the (command), which may hold spaces


def _ours(pid: int) -> bool:
    """Whether ``pid`` descends from this test process (the Ray it started): another test run on the same
    machine has embedding actors of its own."""
    me = os.getpid()
    while pid > 1:
        pid = _parent(pid)
        if pid == me:
            return True
    return False


def _actor_pids() -> list[int]:
    """Processes of this session's embedding actors (Ray titles them after the Dataset stage)."""
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as fh:
                    title = fh.read().decode(errors="replace")
            except OSError:
                continue
            if title.startswith("ray::") and "WindowEmbedder" in title and _ours(int(entry)):
                pids.append(int(entry))
    return pids


# --------------------------------------------------------------------------------------- equal results
@needs_ray
def test_ray_builds_the_same_index_as_one_process(tmp_path, ray_cluster, exact_emb):
    from vela_search.indexing.cluster import RaySettings, index_paths_on_ray

    audio = tmp_path / "audio"
    clips(audio, 3)
    broken = write_broken_files(audio / "broken")
    write_audio(audio / "long.flac", tone(47.0, 16_000, freq=300.0) + noise(47.0, 16_000, seed=5), 16_000)

    # No timed commits: a run slowed past the commit interval by a busy machine would commit once more.
    slow = 3600.0
    local = index_paths([audio], tmp_path / "local", exact_emb, factory="Flat", commit_interval_s=slow)
    seen = []
    on_ray = index_paths_on_ray(
        [audio],
        tmp_path / "ray",
        exact_emb,
        factory="Flat",
        ray=RaySettings(workers=1, batch_windows=4),
        progress=seen.append,
        commit_interval_s=slow,
    )

    # Same segments (the long file cut into the same windows), the same fp32 vectors bit for bit.
    assert live_segments(tmp_path / "ray") == live_segments(tmp_path / "local")
    assert sum(1 for s in live_segments(tmp_path / "ray") if s[0].endswith("long.flac")) == 9
    local_vectors, ray_vectors = _vectors(tmp_path / "local"), _vectors(tmp_path / "ray")
    assert local_vectors.keys() == ray_vectors.keys()
    for place, vector in local_vectors.items():
        assert ray_vectors[place].dtype == np.float32
        np.testing.assert_array_equal(ray_vectors[place], vector)
    # Same files table (broken files failed with the same reasons) and the same summary.
    assert files_table(tmp_path / "ray") == files_table(tmp_path / "local")
    assert _summary(on_ray) == _summary(local)
    assert on_ray.files_failed == len(broken) and on_ray.files_indexed == 4
    # Per-worker throughput, and progress as the single-process path reports it.
    assert [w["segments"] for w in on_ray.workers] == [on_ray.segments_added]
    assert on_ray.workers[0]["segments_per_s"] > 0 and on_ray.workers[0]["load_s"] > 0
    assert seen[-1].phase == "done" and seen[-1].segments_done == on_ray.segments_added
    assert seen[-1].files_done == seen[-1].files_total == 4 + len(broken)

    # A rerun embeds nothing, on Ray as in one process.
    again = index_paths_on_ray([audio], tmp_path / "ray", exact_emb, factory="Flat")
    assert again.files_skipped == 4 and again.files_indexed == 0 and again.segments_added == 0


# ----------------------------------------------------------------------------------------------- faults
@needs_ray
def test_driver_killed_then_a_rerun_whose_actor_is_killed_equals_a_clean_run(tmp_path, ray_cluster, emb):
    """Both faults in one scenario (each Ray job starts its actors anew, which is what takes time here):
    the driver is SIGKILLed mid-run, a second writer is refused meanwhile, and the rerun that resumes
    loses its embedding actor mid-run."""
    from vela_search.indexing.cluster import RaySettings, index_paths_on_ray

    audio = tmp_path / "audio"
    clips(audio, 40)
    idx = tmp_path / "idx"
    address = ray_cluster.get_runtime_context().gcs_address
    log = open(tmp_path / "log.txt", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        cli_command("index", str(audio), "--index", str(idx), *TINY, "--commit-every", "1")
        + ["--ray-address", address, "--workers", "1"],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=cli_env(),
    )
    try:
        wait_for(lambda: generation(idx) >= 2, 240, "two commits", proc)
        # A second writer is refused while the Ray run writes, on Ray and in one process.
        with pytest.raises(IndexLockedError, match=f"is being written by process {proc.pid}"):
            index_paths_on_ray([audio], idx, emb)
        with pytest.raises(IndexLockedError, match=f"is being written by process {proc.pid}"):
            index_paths([audio], idx, emb)
        assert proc.poll() is None, "the run ended before it could be killed; make it longer"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()
    assert proc.returncode == -signal.SIGKILL

    # Whole files only, each with its row.
    partial = live_segments(idx)
    indexed = [p for p, status, _ in file_states(idx) if status == "indexed"]
    assert 0 < len(partial) < 40
    assert sorted(s[0] for s in partial) == sorted(indexed)

    # The rerun resumes; its actor is killed as soon as its first vectors arrive.
    before = set(_actor_pids())  # the killed driver's actor, if Ray has not reaped it yet
    killed: list[int] = []

    def kill_the_actor_once(event) -> None:  # noqa: ANN001
        if event.phase == "embed" and event.segments_done and not killed:
            pids = [pid for pid in _actor_pids() if pid not in before]
            assert len(pids) == 1, pids
            os.kill(pids[0], signal.SIGKILL)
            killed.extend(pids)

    resumed = index_paths_on_ray(
        [audio], idx, emb, ray=RaySettings(workers=1, batch_windows=2), progress=kill_the_actor_once
    )
    assert killed, "the actor was never killed"
    # A replacement actor embedded the rest: two workers reported, both did work.
    assert len(resumed.workers) == 2 and all(w["segments"] > 0 for w in resumed.workers), resumed.workers
    assert resumed.files_skipped == len(indexed) and resumed.files_indexed == 40 - len(indexed)
    assert resumed.segments_added == 40 - len(indexed) and resumed.files_failed == 0

    # Nothing lost, nothing doubled: the index of an uninterrupted run.
    index_paths([audio], tmp_path / "clean", emb)
    segments = live_segments(idx)
    assert len(set(segments)) == len(segments) == 40
    assert segments == live_segments(tmp_path / "clean")
    assert file_states(idx) == file_states(tmp_path / "clean")
    clean = _vectors(tmp_path / "clean")
    for place, vector in _vectors(idx).items():  # fp16 storage, batches composed differently
        np.testing.assert_allclose(vector, clean[place], atol=2e-3)


@needs_ray
def test_a_worker_that_cannot_load_the_embedder_is_reported_in_one_line():
    from ray.exceptions import ActorDiedError, RayActorError

    from vela_search.indexing.cluster import worker_start_error

    # What Ray raises on the driver when an actor's __init__ failed (as seen with a fingerprint mismatch).
    text = (
        "The actor died because of an error raised in its creation task, ray::MapWorker(...).__init__() "
        '(pid=1, ip=10.0.0.2)\n  File "cluster.py", line 131, in load\n    raise VelaError(\n'
        "vela_search.errors.VelaError: worker gpu-7 loaded a different embedder than the driver (weights: "
        "worker=5bdec7f79df3…, driver=other); every node needs the same model, adapter and demo files"
    )
    died = RayActorError(error_msg=text, actor_init_failed=True)
    assert worker_start_error(died) == (
        "worker gpu-7 loaded a different embedder than the driver (weights: worker=5bdec7f79df3…, "
        "driver=other); every node needs the same model, adapter and demo files"
    )
    wrapped = RuntimeError("the dataset failed")
    wrapped.__cause__ = died
    assert worker_start_error(wrapped) is not None
    # An actor that died mid-run (not in __init__), or a bug's traceback, stays as Ray raised it.
    assert worker_start_error(ActorDiedError()) is None
    bug = RayActorError(
        error_msg=text.replace("vela_search.errors.VelaError", "KeyError"), actor_init_failed=True
    )
    assert worker_start_error(bug) is None


# ------------------------------------------------------------------------------- without the extra
def test_without_ray_installed_ray_says_what_to_install(tmp_path, tiny_model_dir, monkeypatch):
    clips(tmp_path / "audio", 1)
    # The command line's entry point (in process) where `import ray` fails as without the extra.
    monkeypatch.setitem(sys.modules, "ray", None)
    done = vela("index", tmp_path / "audio", "--index", tmp_path / "idx", "--ray", *TINY)
    assert done.returncode == 1, done.stderr
    assert done.stderr.strip() == (
        'error: --ray needs Ray, which is not installed: pip install "vela-search[ray]"'
    )
    assert not (tmp_path / "idx").exists()


def test_ray_options_are_checked_before_anything_runs(tmp_path, capsys):
    from vela_search.cli.app import app
    from vela_search.cli.common import run_app

    clips(tmp_path / "audio", 1)
    base = ["index", str(tmp_path / "audio"), "--index", str(tmp_path / "idx"), *TINY]
    assert run_app(app, [*base, "--workers", "2"]) == 1
    assert "--workers sets the Ray actor pool: use it with --ray" in capsys.readouterr().err
    assert run_app(app, [*base, "--ray-address", "./audio"]) == 1
    assert "--ray-address takes a cluster address" in capsys.readouterr().err
    assert not (tmp_path / "idx").exists()


def test_a_window_the_model_cannot_embed_fails_its_own_file_only(tiny_embedder, monkeypatch):
    from vela_search.embedding.embedder import EmbedItem
    from vela_search.indexing.cluster import embed_windows

    real = tiny_embedder.embed_items

    def fragile(items):  # a decode edge: one window breaks any forward it is in
        if any(len(item.wave) == 7_777 for item in items):
            raise RuntimeError("shape mismatch in the audio encoder")
        return real(items)

    monkeypatch.setattr(tiny_embedder, "embed_items", fragile)
    waves = [np.full(16_000, 0.1, np.float32), np.zeros(7_777, np.float32), np.full(8_000, -0.2, np.float32)]
    vectors, reasons = embed_windows(tiny_embedder, [EmbedItem("audio", wave=w) for w in waves])
    assert reasons[0] == reasons[2] == "" and "shape mismatch" in reasons[1]
    np.testing.assert_allclose(vectors[2], real([EmbedItem("audio", wave=waves[2])])[0], atol=1e-6)
    assert not vectors[1].any()


def test_idle_fraction_is_the_workers_time_not_spent_embedding_once_ready():
    from vela_search.indexing.cluster import ClusterTiming, WorkerThroughput

    timing = ClusterTiming(workers=2, wall_s=12.0, first_actor_ready_s=2.0, commit_s=1.5, commit_max_s=1.0)
    timing.per_worker = {"a": WorkerThroughput("a", busy_s=8.0), "b": WorkerThroughput("b", busy_s=6.0)}
    assert timing.idle_fraction == pytest.approx(1 - 14.0 / 20.0)
    report = timing.to_dict()
    assert report["idle_fraction"] == pytest.approx(0.3) and report["commit_max_s"] == 1.0
    assert ClusterTiming().idle_fraction == 0.0  # nothing measured
