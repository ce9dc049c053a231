"""Indexing a Hugging Face dataset: built here from generated clips, indexed, queried, re-indexed."""

from __future__ import annotations

import io
import json
import os
import shutil
from pathlib import Path

import pytest
import soundfile as sf
from audio_factory import noise, tone
from cli_in_process import vela

from indexing.helpers import small_collection
from vela_search.audio.hf_dataset import list_dataset_audio
from vela_search.indexing import index_paths
from vela_search.store import AudioIndex

datasets = pytest.importorskip("datasets")
SR = 16_000
TINY = ["--model", "tiny", "--demos", "none", "--device", "cpu"]


def clip(seed: int, seconds: float = 1.0) -> bytes:
    wave = tone(seconds, SR, freq=200.0 + 37.0 * seed) + noise(seconds, SR, seed=seed, amplitude=0.01)
    buffer = io.BytesIO()
    sf.write(buffer, wave, SR, format="FLAC")
    return buffer.getvalue()


def save_dataset(folder: Path, clips: dict[str, bytes]) -> Path:
    """A `save_to_disk` folder with an Audio column of the clips (replacing what was there)."""
    ds = datasets.Dataset.from_dict(
        {"audio": [{"bytes": b, "path": name} for name, b in clips.items()], "caption": list(clips)}
    ).cast_column("audio", datasets.Audio(decode=False))
    shutil.rmtree(folder, ignore_errors=True)
    datasets.DatasetDict({"train": ds}).save_to_disk(str(folder))
    return folder


def rows(index_dir: Path) -> dict[str, str]:
    """path -> status of the index's files table."""
    with AudioIndex.open(index_dir) as index:
        return {r["path"]: r["status"] for r in index.files().to_pylist()}


def test_dataset_rows_index_incrementally_as_files_do(tmp_path: Path, emb) -> None:
    folder = tmp_path / "sounds-ds"
    clips = {f"c{i}.flac": clip(i) for i in range(4)}
    clips["copy.flac"] = clips["c0.flac"]  # the same content twice: embedded once
    save_dataset(folder, clips)
    idx = tmp_path / "idx"
    root = f"dataset:{folder}#train"

    report = index_paths([], idx, emb, dataset=list_dataset_audio(folder))
    assert (report.files_indexed, report.files_duplicates, report.segments_added) == (4, 1, 4)
    assert rows(idx)[f"{root}/copy.flac"] == "duplicate"

    # Unchanged: nothing embedded.
    again = index_paths([], idx, emb, dataset=list_dataset_audio(folder))
    assert (again.files_skipped, again.files_indexed, again.segments_added) == (5, 0, 0)

    # One row's audio changed, one row gone, one new row: exactly those are redone.
    clips["c1.flac"] = clip(11)
    del clips["c2.flac"]
    clips["c9.flac"] = clip(9)
    save_dataset(folder, clips)
    changed = index_paths([], idx, emb, dataset=list_dataset_audio(folder))
    assert (changed.files_indexed, changed.files_removed, changed.files_skipped) == (2, 1, 3)
    assert changed.segments_deleted == 2  # c1's old segment and c2's
    with AudioIndex.open(idx) as index:
        assert index.num_vectors == 4
    assert set(rows(idx)) == {f"{root}/{name}" for name in clips}

    # A folder of files in the same index: rescans of folders leave the dataset rows alone.
    small_collection(tmp_path / "files", 2)
    index_paths([tmp_path / "files"], idx, emb)
    rescan = index_paths([], idx, emb)
    assert rescan.files_removed == 0 and rescan.files_skipped == 2
    assert len(rows(idx)) == len(clips) + 2
    with pytest.raises(Exception, match="also holds dataset rows"):
        index_paths([], idx, emb, rebuild=True)


def test_index_and_query_a_dataset_with_the_command_line(tmp_path: Path, tiny_model_dir) -> None:
    folder = save_dataset(tmp_path / "ds", {f"c{i}.flac": clip(i) for i in range(3)})
    idx = tmp_path / "idx"
    run = vela  # the console script's entry point, in process

    indexed = run("index", "--dataset", str(folder), "--index", str(idx), *TINY, "--json")
    assert indexed.returncode == 0, indexed.stderr
    assert json.loads(indexed.stdout)["files_indexed"] == 3
    found = run("query", "a low tone", "--index", str(idx), "--device", "cpu", "--json", "-k", "3")
    assert found.returncode == 0, found.stderr
    hits = json.loads(found.stdout)
    assert len(hits) == 3
    assert {h["path"] for h in hits} == {f"dataset:{folder}#train/c{i}.flac" for i in range(3)}
    assert all(h["start_s"] == 0.0 and h["end_s"] == pytest.approx(1.0) for h in hits)


def test_dataset_option_errors_are_one_line(tmp_path: Path, capsys) -> None:
    from vela_search.cli.app import app
    from vela_search.cli.common import run_app

    folder = save_dataset(tmp_path / "ds", {"c0.flac": clip(0)})
    idx = str(tmp_path / "idx")
    for args, message in [
        (["--dataset", str(tmp_path / "nope")], "no such dataset"),
        ([str(tmp_path), "--dataset", str(folder)], "--dataset is indexed on its own"),
        (["--dataset", str(folder), "--split", "test"], "no split 'test' (it has train)"),
        ([str(tmp_path), "--split", "train"], "--split, --audio-column and --key-column go with --dataset"),
    ]:
        code = run_app(app, ["index", *args, "--index", idx, *TINY])
        err = " ".join(capsys.readouterr().err.split())
        assert code == 1 and message in err and "Traceback" not in err, (args, err)
    assert not os.path.exists(idx)  # no model loaded, nothing written
