"""Building demo sets from a library of clips (tiny model's tokenizer, no weights): mix, spread, trim,
determinism, budget, sources."""

from __future__ import annotations

import json
import random
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from tests.embedding.demo_library import LABELS, burst_start, write_clip, write_library
from vela_search.embedding.demo_builder import (
    build_demo_set,
    loudest_start,
    read_demo_source,
    spread_by_label,
)
from vela_search.embedding.demos import DemoSet
from vela_search.errors import DemoFileError, TokenBudgetError


@pytest.fixture(scope="module")
def counting_backbone(tiny_model_dir):
    from vela_search.embedding.backbone import load_backbone_without_weights

    return load_backbone_without_weights("tiny")


def _records(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_labelled_folder_gives_the_asked_mix_spread_trimmed_and_within_budget(tmp_path, counting_backbone):
    from vela_search.embedding.embedder import VelaEmbedder

    library = write_library(tmp_path / "library", per_label=3, seconds=3.0, unlabelled=2)
    source = read_demo_source(library)
    assert source.labels == sorted(LABELS) and sum(c.word is None for c in source.clips) == 2

    result = build_demo_set(
        source,
        tmp_path / "out" / "set.jsonl",
        counting_backbone,
        n_audio=8,
        n_text=12,
        clip_seconds=1.0,
        seed=3,
    )

    records = _records(result.output)
    audio = [r for r in records if "audio" in r]
    assert (len(audio), len(records) - len(audio)) == (8, 12)
    # Spread: the first five audio demos cover all five labels, then labels repeat at most once more.
    words = [r["word"] for r in audio]
    assert sorted(words[:5]) == sorted(LABELS)
    assert max(Counter(words).values()) - min(Counter(words).values()) <= 1
    assert result.unlabelled_left_out == 2 and all(r["word_from"] == "given" for r in audio)
    # Audio is spread among the texts, not bunched at one end.
    positions = [i for i, r in enumerate(records) if "audio" in r]
    assert positions[0] < 4 and positions[-1] > len(records) - 4
    # Each clip is the loud second of its source: 1 s long, starting where the burst starts.
    for record in audio:
        clip = result.output.parent / record["audio"]
        wave, rate = sf.read(clip, dtype="float32")
        assert rate == 16000 and len(wave) == 16000 and record["duration_s"] == 1.0
        src = record["source"].split("/")
        expected = burst_start(LABELS.index(src[-2]), int(src[-1].split(".")[0]))
        assert record["start_s"] == pytest.approx(expected, abs=0.01)
        assert np.abs(wave).max() > 0.3  # the burst, not the quiet noise around it
    # Within budget, counted as the embedder counts: the JSONL reads back and the numbers agree.
    demos = DemoSet.from_jsonl(result.output)
    embedder = VelaEmbedder(counting_backbone, demos)
    budget = result.budget
    assert budget.prefix_tokens == embedder.prefix_length
    assert budget.header_tokens + sum(c.tokens for c in budget.costs) == budget.prefix_tokens
    assert budget.prefix_tokens + budget.item_tokens + budget.room_left == 8192 and budget.fits
    assert budget.digest == demos.digest
    assert result.to_dict()["labels"] == sorted(LABELS)


def test_the_same_seed_gives_the_same_files_another_seed_another_set(tmp_path, counting_backbone):
    library = write_library(tmp_path / "library", per_label=3)
    source = read_demo_source(library)

    def build(folder: str, seed: int):
        out = tmp_path / folder / "set.jsonl"
        return build_demo_set(
            source, out, counting_backbone, n_audio=6, n_text=5, clip_seconds=1.0, seed=seed
        )

    first, again, other = build("a", 7), build("b", 7), build("c", 8)
    assert first.output.read_bytes() == again.output.read_bytes()
    for record in _records(first.output):
        if "audio" in record:
            assert (first.output.parent / record["audio"]).read_bytes() == (
                again.output.parent / record["audio"]
            ).read_bytes()
    assert first.budget.digest == again.budget.digest
    assert other.budget.digest != first.budget.digest


def test_a_set_that_does_not_fit_is_refused_with_the_numbers_and_nothing_is_written(
    tmp_path, counting_backbone
):
    # Ten 30 s clips: ~7,700 audio tokens, so no 30 s item fits behind them.
    library = tmp_path / "long"
    for k in range(10):
        write_clip(library / f"w{k}" / "a.wav", 30.0, None, seed=k)
    out = tmp_path / "out" / "set.jsonl"
    with pytest.raises(TokenBudgetError) as caught:
        build_demo_set(
            read_demo_source(library),
            out,
            counting_backbone,
            n_audio=10,
            n_text=5,
            clip_seconds=30.0,
            item_seconds=30.0,
        )
    message = str(caught.value)
    assert "does not fit: prefix" in message and "> limit 8192 positions" in message
    assert "10 audio" in message and "--audio " in message and "longest clip that fits" in message
    assert "\n" not in message
    assert not out.exists() and list(out.parent.iterdir()) == []


def test_table_sources_with_columns_and_audio_dir(tmp_path, counting_backbone):
    audio = tmp_path / "audio"
    for k, word in enumerate(["dog", "dog", "rooster", ""]):
        write_clip(audio / f"{k}.wav", 2.0, 0.5, seed=k)
    meta = tmp_path / "meta" / "esc.csv"
    meta.parent.mkdir()
    rows = ["filename,category,fold"] + [
        f"{k}.wav,{w},1" for k, w in enumerate(["dog", "dog", "rooster", ""])
    ]
    meta.write_text("\n".join([*rows, "missing.wav,cat,1"]) + "\n")
    source = read_demo_source(meta, audio_dir=audio)
    assert [(c.path.name, c.word) for c in source.clips] == [
        ("0.wav", "dog"),
        ("1.wav", "dog"),
        ("2.wav", "rooster"),
        ("3.wav", None),
    ]
    assert len(source.problems) == 1 and "missing.wav" in source.problems[0][0]

    captions = tmp_path / "mixed.jsonl"
    captions.write_text(
        json.dumps({"audio": "audio/0.wav", "word": "dog"})
        + "\n"
        + json.dumps({"text": "A rooster crows at dawn", "word": "rooster"})
        + "\n"
    )
    mixed = read_demo_source(captions)
    assert [c.word for c in mixed.clips] == ["dog"] and mixed.texts[0].word == "rooster"
    result = build_demo_set(
        mixed, tmp_path / "m" / "set.jsonl", counting_backbone, n_audio=1, n_text=1, clip_seconds=1.0
    )
    assert {r.get("text") for r in _records(result.output)} == {None, "A rooster crows at dawn"}

    from_csv = build_demo_set(source, tmp_path / "c" / "set.jsonl", counting_backbone, n_audio=2, n_text=1)
    assert [Path(clip).name for clip, _ in from_csv.skipped] == ["missing.wav"]

    bad = tmp_path / "bad.csv"
    bad.write_text("file,word\na.wav,church bells\n")
    with pytest.raises(DemoFileError, match="not one word"):
        read_demo_source(bad)
    with pytest.raises(DemoFileError, match="no column 'name'"):
        read_demo_source(meta, file_column="name")


def test_too_few_clips_existing_output_and_unlabelled_clips_are_clear_errors(tmp_path, counting_backbone):
    library = write_library(tmp_path / "library", labels=("dog", "rain"), per_label=1, unlabelled=3)
    source = read_demo_source(library)
    out = tmp_path / "set.jsonl"
    with pytest.raises(DemoFileError) as caught:
        build_demo_set(source, out, counting_backbone, n_audio=4, n_text=2, clip_seconds=1.0)
    assert "asked for 4 audio demos" in str(caught.value) and "2 usable labelled clips" in str(caught.value)
    assert "3 without a label" in str(caught.value) and "--label-with-model" in str(caught.value)
    with pytest.raises(DemoFileError, match="holds 81 captions"):
        build_demo_set(source, out, counting_backbone, n_audio=1, n_text=90)
    out.write_text("keep me\n")
    with pytest.raises(DemoFileError, match="already exists; pass --force"):
        build_demo_set(source, out, counting_backbone, n_audio=1, n_text=1)
    assert out.read_text() == "keep me\n"
    replaced = build_demo_set(
        source, out, counting_backbone, n_audio=2, n_text=1, clip_seconds=1.0, force=True
    )
    assert len(DemoSet.from_jsonl(replaced.output)) == 3


def test_loudest_start_and_spread_by_label():
    wave = np.zeros(100, dtype=np.float32)
    wave[60:70] = 1.0
    assert loudest_start(wave, 10) == 60
    assert loudest_start(wave, 200) == 0

    items = [("a", 1), ("a", 2), ("a", 3), ("b", 1), ("c", 1), ("c", 2)]
    ordered = spread_by_label(items, lambda x: x[0], random.Random(0))
    assert sorted(ordered) == sorted(items)
    assert {x[0] for x in ordered[:3]} == {"a", "b", "c"}
    assert {x[0] for x in ordered[3:5]} == {"a", "c"} and ordered[5][0] == "a"
    assert ordered == spread_by_label(items, lambda x: x[0], random.Random(0))
