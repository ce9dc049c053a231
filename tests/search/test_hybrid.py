"""Words and hybrid search on a small tiny-model index: a metadata word finds its file first, a query
whose words match nothing ranks by sound as the vector mode does, field filters combine with every mode,
and each generation's readers see that generation's words."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from audio_factory import noise, tone, write_audio

from vela_search.errors import QueryError
from vela_search.indexing import index_paths
from vela_search.search import QueryRequest, Searcher, run_query
from vela_search.search.hybrid import attach_words, lexical_for
from vela_search.search.where import parse_where
from vela_search.store import AudioIndex


def _tag(path: Path, **tags: str) -> None:
    import mutagen

    audio = mutagen.File(str(path))
    for key, value in tags.items():
        audio[key] = value
    audio.save()


@pytest.fixture(scope="module")
def collection(tmp_path_factory: pytest.TempPathFactory, tiny_embedder) -> Path:
    """Eight one-second files whose names say nothing; one carries a rare word in its description."""
    root = tmp_path_factory.mktemp("words")
    audio = root / "audio"
    audio.mkdir()
    for i in range(6):
        wave = tone(1.0, freq=200.0 + 150 * i) if i % 2 else noise(1.0, seed=i)
        write_audio(audio / f"take{i:02d}.flac", wave, 16000)
    _tag(audio / "take03.flac", DESCRIPTION="rain on a zephyrquill tin roof", LIBRARY="Wet Sounds")
    write_audio(audio / "AMBForst_Night Crickets_ACME_Summer.flac", noise(1.0, seed=9), 16000)
    write_audio(audio / "DOORWood_Creak Slow_OTHER_Take3.flac", tone(1.0, freq=900.0), 16000)
    index_paths([audio], root / "idx", tiny_embedder, window_s=1.0, hop_s=1.0)
    return root


def _paths(searcher: Searcher, text: str, **options) -> list[str]:
    return [Path(h.path).name for h in run_query(searcher, QueryRequest(text=text, **options))]


def test_a_metadata_word_finds_its_file_first(collection: Path, tiny_embedder) -> None:
    with AudioIndex.open(collection / "idx") as idx:
        searcher = Searcher(idx, tiny_embedder)
        assert _paths(searcher, "zephyrquill", mode="words")[0] == "take03.flac"
        assert _paths(searcher, "zephyrquill", mode="hybrid")[0] == "take03.flac"
        # The tiny model cannot know the word: the vector ranking alone is not asked to find it.
        assert _paths(Searcher(idx, None), "zephyrquill", mode="words") == ["take03.flac"]


def test_words_that_match_nothing_rank_by_sound_as_the_vector_mode(collection: Path, tiny_embedder) -> None:
    with AudioIndex.open(collection / "idx") as idx:
        searcher = Searcher(idx, tiny_embedder)
        caption = _paths(searcher, "dog barking far away", k=5)
        assert _paths(searcher, "dog barking far away", mode="hybrid", k=5) == caption
        assert _paths(searcher, "dog barking far away", mode="words") == []


def test_field_filters_combine_with_every_mode(collection: Path, tiny_embedder) -> None:
    with AudioIndex.open(collection / "idx") as idx:
        searcher = Searcher(idx, tiny_embedder)
        for mode in ("caption", "words", "hybrid"):
            found = _paths(searcher, "night", mode=mode, where=("category=AMB",))
            assert found == ["AMBForst_Night Crickets_ACME_Summer.flac"]
            assert _paths(searcher, "sound", mode=mode, where=("library=wet sounds",)) == ["take03.flac"]
        assert _paths(searcher, "roof", mode="words", where=("description~rain",)) == ["take03.flac"]
        assert _paths(searcher, "creak", mode="words", where=("library=ACME",)) == []
        caption = _paths(searcher, "a sound", where=("library=ACME",), k=10)
        assert caption == ["AMBForst_Night Crickets_ACME_Summer.flac"]
        (hit,) = run_query(searcher, QueryRequest(text="zephyrquill", mode="words"))
        assert hit.words["description"] == "rain on a zephyrquill tin roof"
        assert hit.to_dict()["words"]["library"] == "Wet Sounds"
        # Vector-mode hits carry their words too (the lexical index is small enough to build).
        (hit,) = run_query(searcher, QueryRequest(text="a sound", where=("library=wet sounds",)))
        assert hit.words["library"] == "Wet Sounds"
        assert attach_words(idx, [dataclasses.replace(hit, words={})])[0].words == hit.words
        assert attach_words(idx, [dataclasses.replace(hit, words={})], build_limit=0)[0].words == hit.words


@pytest.mark.parametrize("scan_files", [0, 10_000])
def test_field_filters_in_the_vector_mode_are_exact(
    collection: Path, tiny_embedder, monkeypatch: pytest.MonkeyPatch, scan_files: int
) -> None:
    from vela_search.search import hybrid

    monkeypatch.setattr(hybrid, "SCAN_FILES", scan_files)  # 0: the deeper sound ranking, else a scan
    with AudioIndex.open(collection / "idx") as idx:
        searcher = Searcher(idx, tiny_embedder)
        everything = _paths(searcher, "a dog far away", k=8)
        for where in [("name~take",), ("category=AMB",), ("description~zephyrquill",), ("library=none",)]:
            matching = {
                Path(h.path).name for h in lexical_for(idx).search(None, list(parse_where(where)), 100)
            }
            expected = [name for name in everything if name in matching][:3]
            assert _paths(searcher, "a dog far away", where=where, k=3) == expected
            fused = _paths(searcher, "a dog far away", mode="hybrid", where=where, k=3)
            assert set(fused) <= matching and len(fused) == min(3, len(matching))


@pytest.mark.parametrize(
    "where, message",
    [(("library",), "FIELD=VALUE"), (("Bad Field=x",), "field name"), (("description~",), "give a value")],
)
def test_bad_filters_are_refused_clearly(where: tuple[str, ...], message: str) -> None:
    with pytest.raises(QueryError, match=message):
        QueryRequest(text="x", where=where).validate()


def test_each_generation_sees_its_own_words(tmp_path: Path, tiny_embedder) -> None:
    audio = tmp_path / "audio"
    audio.mkdir()
    path = write_audio(audio / "a.flac", tone(1.0), 16000)
    _tag(path, DESCRIPTION="thunder")
    write_audio(audio / "b.flac", noise(1.0), 16000)
    index_paths([audio], tmp_path / "idx", tiny_embedder, window_s=1.0, hop_s=1.0)
    old = AudioIndex.open(tmp_path / "idx")
    _tag(path, DESCRIPTION="seagulls")  # a metadata edit; the rerun picks it up
    index_paths([audio], tmp_path / "idx", tiny_embedder, window_s=1.0, hop_s=1.0)
    with old, AudioIndex.open(tmp_path / "idx") as new:
        assert [h.path for h in lexical_for(old).search("thunder", [], 10)] == [str(path)]
        assert lexical_for(old).search("seagulls", [], 10) == []
        assert [h.path for h in lexical_for(new).search("seagulls", [], 10)] == [str(path)]
        assert lexical_for(new).search("thunder", [], 10) == []


def test_words_summary_counts_the_fields_files_carry(collection: Path) -> None:
    from vela_search.search.lexical import words_summary

    with AudioIndex.open(collection / "idx", vectors=False) as idx:
        summary = words_summary(idx)
    assert summary["name"] == 8 and summary["category"] == 2 and summary["description"] == 1
