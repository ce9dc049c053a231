"""Lexical builds kept up by deltas: a new generation's build starts from the older one and applies only
the changed files, answers exactly as a build from scratch, and leaves the older build as it was."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import mutagen
from audio_factory import noise, tone, write_audio

from vela_search.indexing import index_paths
from vela_search.search import Searcher
from vela_search.search.hybrid import attach_words
from vela_search.search.lexical import LEXICAL_DIR, LexicalIndex, snapshot_key
from vela_search.store import AudioIndex


def _tagged(path: Path, wave, description: str) -> Path:  # noqa: ANN001
    write_audio(path, wave, 16000)
    audio = mutagen.File(str(path))
    audio["DESCRIPTION"] = description
    audio.save()
    return path


def _answers(lex: LexicalIndex) -> dict[str, list[tuple[str, int]]]:
    return {
        word: [(Path(h.path).name, h.segment_id) for h in lex.search(word, [], 20)]
        for word in ("owl", "frog", "heron", "wolf", "marsh", "clip", "gull")
    }


def _built(index_dir: Path, index: AudioIndex) -> dict:
    return json.loads((index_dir / LEXICAL_DIR / snapshot_key(index) / "done.json").read_text())["built"]


def test_a_new_generation_is_built_from_the_older_build_and_answers_like_a_fresh_build(
    tmp_path: Path, tiny_embedder
) -> None:
    audio = tmp_path / "audio"
    audio.mkdir()
    for i, animal in enumerate(("owl", "frog", "heron", "wolf")):
        _tagged(audio / f"clip{i}.flac", tone(1.0, freq=300.0 + 90 * i), f"{animal} near the marsh")
    index_dir = tmp_path / "idx"
    index_paths([audio], index_dir, tiny_embedder, window_s=1.0, hop_s=1.0)
    old = AudioIndex.open(index_dir)
    old_answers = _answers(LexicalIndex.for_index(old))
    assert _built(index_dir, old)["mode"] == "full"

    (audio / "clip1.flac").unlink()  # gone
    _tagged(audio / "clip2.flac", tone(1.0, freq=480.0), "gull over the harbour")  # new tags
    (audio / "clip3.flac").rename(audio / "clip9.flac")  # moved
    _tagged(audio / "new.flac", noise(1.0, seed=5), "frog chorus")  # added
    index_paths([audio], index_dir, tiny_embedder, window_s=1.0, hop_s=1.0)

    with old, AudioIndex.open(index_dir) as new:
        # A vector-mode query of a library too large for a full build still gets words: the delta is cheap.
        hits = Searcher(new, tiny_embedder).search("a sound", k=4)
        worded = attach_words(new, hits, build_limit=0)
        assert {Path(h.path).name: h.words.get("description") for h in worded}["new.flac"] == "frog chorus"
        lex = LexicalIndex.for_index(new)
        built = _built(index_dir, new)
        assert built["mode"] == "delta" and built["base"] == snapshot_key(old)
        assert (built["added"], built["deleted"], built["files"]) == (3, 3, 4)
        answers = _answers(lex)
        assert answers["heron"] == [] and answers["gull"][0][0] == "clip2.flac"
        assert [name for name, _ in answers["frog"]] == ["new.flac"]
        assert [name for name, _ in answers["wolf"]] == ["clip9.flac"]
        # The same answers as a build from scratch.
        for folder in (index_dir / LEXICAL_DIR).iterdir():
            shutil.rmtree(folder)
        fresh = LexicalIndex.for_index(new)
        assert _built(index_dir, new)["mode"] == "full"
        assert _answers(fresh) == answers
        assert fresh.num_files == lex.num_files == 4
        # The older generation still answers with its own words (its build, or a build of its own).
        assert _answers(LexicalIndex.for_index(old)) == old_answers


def test_a_build_of_a_newer_generation_is_no_base_and_a_half_build_is_ignored(
    tmp_path: Path, tiny_embedder
) -> None:
    audio = tmp_path / "audio"
    audio.mkdir()
    _tagged(audio / "a.flac", tone(1.0), "owl at dusk")
    index_dir = tmp_path / "idx"
    index_paths([audio], index_dir, tiny_embedder, window_s=1.0, hop_s=1.0)
    old = AudioIndex.open(index_dir)
    _tagged(audio / "b.flac", noise(1.0, seed=2), "frog at dawn")
    index_paths([audio], index_dir, tiny_embedder, window_s=1.0, hop_s=1.0)
    with old, AudioIndex.open(index_dir) as new:
        LexicalIndex.for_index(new)
        # A builder that died half-way: a folder without done.json is rebuilt, never read.
        stale = index_dir / LEXICAL_DIR / snapshot_key(old)
        stale.mkdir()
        (stale / "meta.json").write_text("{}")
        lex = LexicalIndex.for_index(old)
        assert _built(index_dir, old)["mode"] == "full"  # the newer build is no base for it
        assert [Path(h.path).name for h in lex.search("frog", [], 5)] == []
        assert [Path(h.path).name for h in lex.search("owl", [], 5)] == ["a.flac"]


def test_a_damaged_older_build_is_no_base_the_generation_is_built_from_scratch(
    tmp_path: Path, tiny_embedder
) -> None:
    audio = tmp_path / "audio"
    audio.mkdir()
    _tagged(audio / "a.flac", tone(1.0), "owl at dusk")
    index_dir = tmp_path / "idx"
    index_paths([audio], index_dir, tiny_embedder, window_s=1.0, hop_s=1.0)
    with AudioIndex.open(index_dir) as old:
        LexicalIndex.for_index(old)
        (index_dir / LEXICAL_DIR / snapshot_key(old) / "meta.json").write_text("not json")
    _tagged(audio / "b.flac", noise(1.0, seed=2), "frog at dawn")
    index_paths([audio], index_dir, tiny_embedder, window_s=1.0, hop_s=1.0)
    with AudioIndex.open(index_dir) as new:
        lex = LexicalIndex.for_index(new)
        assert _built(index_dir, new)["mode"] == "full"
        assert [Path(h.path).name for h in lex.search("frog owl", [], 5)] == ["a.flac", "b.flac"]


def test_segments_added_without_path_and_start_are_left_out(tmp_path: Path) -> None:
    import numpy as np

    from vela_search.search.lexical import file_words

    fingerprint = {"model": "m", "dim": 4}
    AudioIndex.create(tmp_path / "idx", fingerprint=fingerprint, dim=4).close()
    with AudioIndex.open(tmp_path / "idx").writer(fingerprint=fingerprint) as writer:
        writer.add(np.eye(4, dtype=np.float32), [{"path": f"/a/{i}.wav"} for i in range(4)])
        writer.commit()
    with AudioIndex.open(tmp_path / "idx") as index:
        assert file_words(index) == {}
        assert LexicalIndex.for_index(index).num_files == 0
