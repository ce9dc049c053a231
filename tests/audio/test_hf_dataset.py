"""Hugging Face datasets as an audio source: rows listed with stable names and digests, bytes decoded here."""

from __future__ import annotations

import hashlib
import io
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from audio_factory import noise, tone, write_pyav

from vela_search.audio import SAMPLE_RATE, decode_audio
from vela_search.audio.hf_dataset import list_dataset_audio
from vela_search.errors import VelaError

datasets = pytest.importorskip("datasets")


def wav_bytes(seed: int, seconds: float = 1.0) -> bytes:
    wave = tone(seconds, SAMPLE_RATE, freq=200.0 + 37.0 * seed) + noise(seconds, SAMPLE_RATE, seed=seed)
    buffer = io.BytesIO()
    sf.write(buffer, wave, SAMPLE_RATE, format="WAV")
    return buffer.getvalue()


def audio_dataset(clips: dict[str, bytes], **columns: list) -> datasets.Dataset:
    """A dataset with an `Audio` column holding the clips' bytes (what `Audio()` stores), no decoding."""
    data = {"audio": [{"bytes": b, "path": name} for name, b in clips.items()], **columns}
    return datasets.Dataset.from_dict(data).cast_column("audio", datasets.Audio(decode=False))


def save(ds: datasets.Dataset | datasets.DatasetDict, path: Path) -> Path:
    shutil.rmtree(path, ignore_errors=True)
    ds.save_to_disk(str(path))
    return path


def test_saved_dataset_rows_are_named_digested_and_decoded(tmp_path: Path) -> None:
    clips = {f"clip{i}.wav": wav_bytes(i) for i in range(3)}
    m4a = tmp_path / "talk.m4a"
    write_pyav(m4a, tone(2.0, 44_100, amplitude=0.3), 44_100)
    clips["talk.m4a"] = m4a.read_bytes()  # a format only PyAV reads
    train = audio_dataset(clips, caption=["a", "b", "c", "d"])
    test = audio_dataset({"other.wav": wav_bytes(9)}, caption=["e"])
    folder = save(datasets.DatasetDict({"train": train, "test": test}), tmp_path / "birds")

    with pytest.raises(VelaError, match="has the splits train, test: choose one with --split"):
        list_dataset_audio(folder)
    with pytest.raises(VelaError, match="no split 'dev'"):
        list_dataset_audio(folder, split="dev")

    listing = list_dataset_audio(folder, split="train")
    assert listing.root == f"dataset:{folder}#train"
    assert [r.uri for r in listing.rows] == [f"dataset:{folder}#train/{name}" for name in clips]
    for row, data in zip(listing.rows, clips.values(), strict=True):
        assert row.size == len(data) and row.sha256 == hashlib.sha256(data).hexdigest()
        held = row.load()
        assert held.data == data and held.name == row.uri
    as_file = tmp_path / "clip0.wav"
    as_file.write_bytes(clips["clip0.wav"])
    np.testing.assert_array_equal(decode_audio(listing.rows[0].load()), decode_audio(as_file))
    assert len(decode_audio(listing.rows[3].load())) == 2 * SAMPLE_RATE  # m4a through PyAV

    # A key column names rows instead of the file names; without names, row numbers do.
    keyed = list_dataset_audio(folder, split="train", key_column="caption")
    assert [r.uri.rsplit("/", 1)[1] for r in keyed.rows] == ["a", "b", "c", "d"]
    with pytest.raises(VelaError, match="no column 'nope'"):
        list_dataset_audio(folder, split="train", key_column="nope")
    rows = {"sound": [{"bytes": wav_bytes(i), "path": None} for i in range(11)]}
    unnamed_ds = datasets.Dataset.from_dict(rows).cast_column("sound", datasets.Audio(decode=False))
    unnamed = save(unnamed_ds, tmp_path / "unnamed")
    names = [r.uri.rsplit("/", 1)[1] for r in list_dataset_audio(unnamed).rows]
    assert names == [f"{i:02d}" for i in range(11)]


def test_parquet_with_an_audio_column(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "hf-cache"))
    clips = {f"clip{i}.wav": wav_bytes(i) for i in range(3)}
    folder = tmp_path / "pq"
    folder.mkdir()
    audio_dataset(clips, caption=["a", "b", "c"]).to_parquet(str(folder / "train-0.parquet"))

    for target in (folder, folder / "train-0.parquet"):
        listing = list_dataset_audio(target)
        assert listing.root == f"dataset:{target}#train"
        assert [r.sha256 for r in listing.rows] == [hashlib.sha256(b).hexdigest() for b in clips.values()]
        assert len(decode_audio(listing.rows[2].load())) == SAMPLE_RATE

    plain = tmp_path / "plain.parquet"
    datasets.Dataset.from_dict({"caption": ["a"]}).to_parquet(str(plain))
    with pytest.raises(VelaError, match="has no audio column"):
        list_dataset_audio(plain)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(VelaError, match="not a dataset"):
        list_dataset_audio(empty)
    with pytest.raises(VelaError, match="no such dataset"):
        list_dataset_audio(tmp_path / "missing")


def test_without_datasets_the_error_says_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = save(audio_dataset({"a.wav": wav_bytes(0)}), tmp_path / "ds")
    monkeypatch.setitem(sys.modules, "datasets", None)
    with pytest.raises(
        VelaError, match=r"needs the `datasets` package: pip install 'vela-search\[datasets\]'"
    ):
        list_dataset_audio(folder)
