from __future__ import annotations

import csv
import shutil

import numpy as np
import pytest
import soundfile as sf

from vela_search.bench.datasets import (
    PAPER_RESULTS,
    RetrievalDataset,
    audiocaps_audio_stems,
    load_audiocaps,
    load_clotho,
    load_dataset,
)
from vela_search.errors import DatasetError, VelaError

from .dataset_factory import (
    audiocaps_captions,
    clotho_captions,
    clotho_file_name,
    make_audiocaps,
    make_clotho,
    write_tone,
    youtube_id,
)

# ----------------------------------------------------------------------------------------------- Clotho


def test_clotho_reads_official_layout(tmp_path):
    make_clotho(tmp_path, 4, seconds=0.5)
    ds = load_clotho(tmp_path)
    assert (ds.name, ds.split) == ("clotho", "evaluation")
    assert ds.n_clips == 4 and ds.n_captions == 20
    assert ds.clip_ids == [clotho_file_name(i) for i in range(4)]
    assert [p.name for p in ds.audio_paths] == ds.clip_ids
    assert ds.captions[:5] == clotho_captions(0)  # quotes and commas survive the CSV round trip
    assert ds.caption_to_audio.tolist() == np.repeat(np.arange(4), 5).tolist()
    assert ds.caption_to_audio.dtype == np.int64
    assert ds.missing == []
    audio, sr = sf.read(ds.audio_paths[2])
    assert sr == 16_000 and audio.shape == (8000,)


@pytest.mark.parametrize("subdir", ["clotho_audio_evaluation", "audio/evaluation"])
def test_clotho_alternative_audio_folders(tmp_path, subdir):
    make_clotho(tmp_path, 2, seconds=0.1, audio_subdir=subdir)
    ds = load_clotho(tmp_path)
    assert ds.n_clips == 2
    assert all(p.parent == tmp_path / subdir for p in ds.audio_paths)


def test_clotho_other_split_and_converted_audio(tmp_path):
    make_clotho(tmp_path, 3, seconds=0.1, split="validation")
    wav = tmp_path / "validation" / clotho_file_name(1)
    write_tone(wav.with_suffix(".flac"), 1, 0.1)
    wav.unlink()
    ds = load_dataset("Clotho", tmp_path, split="validation")
    assert ds.split == "validation" and ds.n_clips == 3
    assert ds.audio_paths[1].suffix == ".flac"


def test_clotho_missing_audio_is_reported_and_excluded(tmp_path):
    make_clotho(tmp_path, 5, seconds=0.1)
    (tmp_path / "evaluation" / clotho_file_name(1)).unlink()
    (tmp_path / "evaluation" / clotho_file_name(3)).unlink()
    ds = load_clotho(tmp_path)
    assert ds.missing == [clotho_file_name(1), clotho_file_name(3)]
    assert ds.clip_ids == [clotho_file_name(i) for i in (0, 2, 4)]
    assert ds.n_captions == 15
    assert ds.captions[5:10] == clotho_captions(2)
    assert ds.caption_to_audio.tolist() == np.repeat(np.arange(3), 5).tolist()


def test_clotho_no_audio_at_all(tmp_path):
    make_clotho(tmp_path, 2, seconds=0.1)
    shutil.rmtree(tmp_path / "evaluation")
    with pytest.raises(DatasetError) as err:
        load_clotho(tmp_path)
    msg = str(err.value)
    assert "none of the 2 clips" in msg and str(tmp_path / "evaluation") in msg and "--download" in msg


def test_clotho_missing_csv_names_path_and_download(tmp_path):
    with pytest.raises(DatasetError) as err:
        load_clotho(tmp_path)
    msg = str(err.value)
    assert str(tmp_path / "clotho_captions_evaluation.csv") in msg
    assert "--download" in msg
    assert isinstance(err.value, VelaError)


def test_clotho_bad_columns(tmp_path):
    (tmp_path / "clotho_captions_evaluation.csv").write_text("name,text\na.wav,hello\n")
    with pytest.raises(DatasetError, match=r"missing file_name, caption_1 \(found: name, text\)"):
        load_clotho(tmp_path)


def test_clotho_latin1_csv_and_blank_captions(tmp_path):
    (tmp_path / "evaluation").mkdir()
    write_tone(tmp_path / "evaluation" / "caf\u00e9.wav", 0, 0.1)
    content = "file_name,caption_1,caption_2,caption_3,caption_4,caption_5\ncaf\u00e9.wav,a,b,,d, e \n"
    (tmp_path / "clotho_captions_evaluation.csv").write_bytes(content.encode("latin-1"))
    ds = load_clotho(tmp_path)
    assert ds.clip_ids == ["caf\u00e9.wav"]
    assert ds.captions == ["a", "b", "d", "e"]


# -------------------------------------------------------------------------------------------- AudioCaps


def test_audiocaps_groups_captions_and_reports_missing(tmp_path):
    make_audiocaps(tmp_path, 6, n_missing=2, seconds=0.1)
    ds = load_audiocaps(tmp_path)
    assert (ds.name, ds.split) == ("audiocaps", "test")
    assert ds.clip_ids == [youtube_id(i) for i in range(4)]
    assert ds.missing == [youtube_id(4), youtube_id(5)]
    assert ds.n_captions == 20
    for i in range(4):
        assert [c for c, a in zip(ds.captions, ds.caption_to_audio) if a == i] == audiocaps_captions(i)
    assert [p.name for p in ds.audio_paths] == [f"{youtube_id(i)}.wav" for i in range(4)]


def test_audiocaps_keeps_every_caption_of_uneven_clips(tmp_path):
    make_audiocaps(tmp_path, 3, seconds=0.1, captions_per_clip=[5, 4, 6])
    ds = load_dataset("audiocaps", tmp_path)
    assert np.bincount(ds.caption_to_audio).tolist() == [5, 4, 6]
    assert ds.n_captions == 15


@pytest.mark.parametrize(
    "folder, stem",
    [
        ("test", "{yid}"),
        ("test", "Y{yid}"),
        ("audio/test", "{yid}_30"),
        ("audio", "{yid}_30_40"),
        (".", "Y{yid}_30.000_40.000"),
        ("test", "{yid}_30.000_40.000"),
    ],
)
@pytest.mark.parametrize("ext", [".wav", ".flac", ".ogg"])
def test_audiocaps_file_name_patterns(tmp_path, folder, stem, ext):
    yid = "-x_Y0aBc9Zz"
    (tmp_path / "test.csv").write_text(
        f"audiocap_id,youtube_id,start_time,caption\n1,{yid},30,a cat meows\n2,{yid},30,a kitten mews\n"
    )
    path = write_tone(tmp_path / folder / (stem.format(yid=yid) + ext), 0, 0.1)
    ds = load_audiocaps(tmp_path)
    assert ds.audio_paths == [path]
    assert ds.captions == ["a cat meows", "a kitten mews"]


def test_audiocaps_mp3_extension_is_accepted(tmp_path):
    yid = "abcdefghijk"
    (tmp_path / "test.csv").write_text(f"audiocap_id,youtube_id,start_time,caption\n1,{yid},0,hello\n")
    (tmp_path / "test").mkdir()
    (tmp_path / "test" / f"{yid}.MP3").write_bytes(b"not decoded here")
    assert load_audiocaps(tmp_path).audio_paths[0].name == f"{yid}.MP3"


def test_audiocaps_folder_and_extension_priority(tmp_path):
    make_audiocaps(tmp_path, 1, seconds=0.1)
    yid = youtube_id(0)
    write_tone(tmp_path / "test" / f"{yid}.flac", 0, 0.1)
    write_tone(tmp_path / "audio" / f"{yid}.wav", 0, 0.1)
    assert load_audiocaps(tmp_path).audio_paths == [tmp_path / "test" / f"{yid}.wav"]


def test_audiocaps_alternative_csv_name(tmp_path):
    make_audiocaps(tmp_path, 2, seconds=0.1)
    (tmp_path / "test.csv").rename(tmp_path / "audiocaps_test.csv")
    assert load_audiocaps(tmp_path).n_clips == 2


def test_audiocaps_missing_csv(tmp_path):
    with pytest.raises(DatasetError) as err:
        load_audiocaps(tmp_path)
    msg = str(err.value)
    assert str(tmp_path / "test.csv") in msg and "--download" in msg and "YouTube" in msg


def test_audiocaps_bad_columns(tmp_path):
    (tmp_path / "test.csv").write_text("audiocap_id,ytid,start_time,caption\n1,abc,0,hi\n")
    with pytest.raises(
        DatasetError, match=r"missing youtube_id \(found: audiocap_id, ytid, start_time, caption\)"
    ):
        load_audiocaps(tmp_path)


def test_audiocaps_without_any_audio(tmp_path):
    make_audiocaps(tmp_path, 3, n_missing=3, seconds=0.1)
    with pytest.raises(DatasetError, match="none of the 3 clips.*YouTube"):
        load_audiocaps(tmp_path)


def test_audiocaps_audio_stems():
    assert audiocaps_audio_stems("abc") == ["abc", "Yabc"]
    stems = audiocaps_audio_stems("abc", ["30"])
    assert stems == [
        "abc",
        "Yabc",
        "abc_30",
        "Yabc_30",
        "abc_30_40",
        "Yabc_30_40",
        "abc_30.000_40.000",
        "Yabc_30.000_40.000",
    ]
    assert "abc_30.0" in audiocaps_audio_stems("abc", ["30.0"])


# ------------------------------------------------------------------------------------- shared behaviour


def test_limit_keeps_first_clips_and_their_captions(tmp_path):
    make_audiocaps(tmp_path, 5, seconds=0.1, captions_per_clip=[2, 3, 1, 4, 5])
    ds = load_audiocaps(tmp_path)
    small = ds.limit(2)
    assert small.clip_ids == ds.clip_ids[:2]
    assert small.audio_paths == ds.audio_paths[:2]
    assert small.captions == audiocaps_captions(0, 2) + audiocaps_captions(1, 3)
    assert np.bincount(small.caption_to_audio).tolist() == [2, 3]
    assert ds.n_clips == 5  # unchanged
    assert ds.limit(100).n_captions == ds.n_captions
    assert ds.limit(3).limit(2).captions == small.captions
    with pytest.raises(ValueError):
        ds.limit(0)


def test_limit_is_deterministic(tmp_path):
    make_clotho(tmp_path, 6, seconds=0.1)
    a, b = load_clotho(tmp_path).limit(3), load_clotho(tmp_path).limit(3)
    assert a.clip_ids == b.clip_ids == [clotho_file_name(i) for i in range(3)]
    assert a.captions == b.captions and a.caption_to_audio.tolist() == b.caption_to_audio.tolist()


def test_dataset_validates_its_fields(tmp_path):
    with pytest.raises(ValueError):
        RetrievalDataset("x", "y", [tmp_path / "a.wav"], ["c1", "c2"], np.array([0]))
    with pytest.raises(ValueError):
        RetrievalDataset("x", "y", [tmp_path / "a.wav"], ["c1"], np.array([1]))
    ds = RetrievalDataset("x", "y", [str(tmp_path / "a.wav")], ["c1"], [0])
    assert ds.clip_ids == ["a.wav"] and ds.missing == []


def test_load_dataset_unknown_name(tmp_path):
    with pytest.raises(DatasetError, match="clotho, audiocaps"):
        load_dataset("esc50", tmp_path)


def test_paper_results_are_the_sourced_numbers():
    assert PAPER_RESULTS == {"audiocaps": {"t2a_R@1": 18.1}, "clotho": {"t2a_R@1": 17.9}}


def test_factory_csvs_have_official_headers(tmp_path):
    make_clotho(tmp_path / "c", 1, seconds=0.1)
    make_audiocaps(tmp_path / "a", 1, seconds=0.1)
    with open(tmp_path / "c" / "clotho_captions_evaluation.csv", newline="") as fh:
        assert next(csv.reader(fh)) == [
            "file_name",
            "caption_1",
            "caption_2",
            "caption_3",
            "caption_4",
            "caption_5",
        ]
    with open(tmp_path / "a" / "test.csv", newline="") as fh:
        assert next(csv.reader(fh)) == ["audiocap_id", "youtube_id", "start_time", "caption"]
