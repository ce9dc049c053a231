"""Searcher: query modes, grouping, filters and errors, on an index written directly with the store."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import numpy as np
import pytest
from audio_factory import tone, write_audio

from vela_search.audio import audio_duration, iter_segments
from vela_search.errors import (
    EmptyIndexError,
    FingerprintMismatchError,
    IndexNotFoundError,
    ModelLoadError,
    QueryError,
)
from vela_search.search import (
    MAX_K,
    Hit,
    Searcher,
    check_k,
    embedder_spec,
    format_timestamp,
    index_embedder,
    load_query_clip,
    normalize_glob,
    relative_to_root,
)
from vela_search.search import grouping as grouping_mod
from vela_search.store import AudioIndex

SR = 16_000
# Distinct tones embed to clearly distinct vectors even with random weights (noise clips do not).
LONG_TONES = (220.0, 440.0, 880.0, 1760.0)  # 10 s each: the 40 s file's windows differ


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def build_index(
    root: Path, index_dir: Path, embedder, files: list[Path], duplicates: dict[Path, Path]
) -> None:
    """Index `files` as `vela-search index` lays them out; `duplicates` maps a copy to its original."""
    fp = embedder.fingerprint.to_dict()
    index = AudioIndex.open_or_create(index_dir, fingerprint=fp, dim=embedder.dim)
    index.close()
    with AudioIndex.open(index_dir).writer(fingerprint=fp) as writer:
        file_rows = []
        for path in files:
            segments = list(iter_segments(path))
            duration = audio_duration(path)
            sha = _sha(path)
            vectors = embedder.embed_audio([s.samples for s in segments])
            rows = [
                {
                    "path": str(path),
                    "content_sha256": sha,
                    "start_s": s.start_s,
                    "end_s": s.end_s,
                    "duration_s": duration,
                    "root": str(root),
                }
                for s in segments
            ]
            writer.add(vectors, rows)
            file_rows.append(
                {
                    "path": str(path),
                    "size": path.stat().st_size,
                    "sha256": sha,
                    "duration_s": duration,
                    "status": "indexed",
                    "segments": len(segments),
                    "root": str(root),
                }
            )
        for copy, original in duplicates.items():
            file_rows.append(
                {
                    "path": str(copy),
                    "size": copy.stat().st_size,
                    "sha256": _sha(original),
                    "duration_s": audio_duration(copy),
                    "status": "duplicate",
                    "segments": 0,
                    "root": str(root),
                }
            )
        writer.put_files(file_rows)
        writer.commit()


@pytest.fixture(scope="module")
def collection(tmp_path_factory):
    """Audio files: three short tones, a 40 s file of four tones, and a duplicate of one short tone."""
    root = tmp_path_factory.mktemp("audio")
    (root / "a").mkdir()
    (root / "b").mkdir()
    (root / "copy").mkdir()
    files = {
        "a220": write_audio(root / "a" / "t220.wav", tone(3, freq=220), SR),
        "a660": write_audio(root / "a" / "t660.wav", tone(2, freq=660), SR),
        "b1320": write_audio(root / "b" / "t1320.wav", tone(4, freq=1320), SR),
        "long": write_audio(root / "long.wav", np.concatenate([tone(10, freq=f) for f in LONG_TONES]), SR),
    }
    copy = root / "copy" / "t220.wav"
    shutil.copyfile(files["a220"], copy)
    files["copy"] = copy
    return root, files


@pytest.fixture(scope="module")
def index_dir(collection, tiny_embedder, tmp_path_factory):
    root, files = collection
    out = tmp_path_factory.mktemp("idx") / "default"
    indexed = [files[k] for k in ("a220", "a660", "b1320", "long")]
    build_index(root, out, tiny_embedder, indexed, {files["copy"]: files["a220"]})
    return out


@pytest.fixture(scope="module")
def searcher(index_dir, tiny_embedder):
    s = Searcher(AudioIndex.open(index_dir), tiny_embedder)
    yield s
    s.close()


def brute_force(searcher: Searcher, query: np.ndarray, group: bool) -> list[tuple[str, float, float, float]]:
    """(path, start, end, score) best first over every stored vector, best segment per file if grouped."""
    ids, vectors = searcher.index.all_vectors()
    rows = searcher.index.segment_rows(ids)
    scores = vectors @ query
    order = np.lexsort((ids, -scores))
    out, seen = [], set()
    for i in order:
        path = rows[i]["path"]
        if group and path in seen:
            continue
        seen.add(path)
        out.append((path, rows[i]["start_s"], rows[i]["end_s"], float(scores[i])))
    return out


def as_tuples(hits: list[Hit]) -> list[tuple[str, float, float]]:
    return [(h.path, h.start_s, h.end_s) for h in hits]


# ------------------------------------------------------------------------------------------ text modes


@pytest.mark.parametrize(
    ("mode", "query", "instruction"),
    [
        ("caption", "dog barking then a car passes", None),
        ("long", "First rain on a roof, then thunder, then a dog barks while traffic passes. " * 8, None),
        ("instruction", "a kettle whistling", "find recordings with the same sound source as:"),
    ],
)
def test_text_modes_match_brute_force(searcher, mode, query, instruction):
    hits = searcher.search(query, mode=mode, instruction=instruction, k=10)
    vector = searcher.embed_query(query, mode=mode, instruction=instruction)
    expected = brute_force(searcher, vector, group=True)
    assert as_tuples(hits) == [e[:3] for e in expected]
    np.testing.assert_allclose([h.score for h in hits], [e[3] for e in expected], atol=2e-3)
    assert [h.rank for h in hits] == list(range(1, len(hits) + 1))
    assert all(a.score >= b.score for a, b in zip(hits, hits[1:], strict=False))


def test_modes_embed_differently(searcher):
    text = "a dog barks"
    caption = searcher.embed_query(text)
    long = searcher.embed_query(text, mode="long")
    request = searcher.embed_query(text, mode="instruction", instruction="find the same sound source as:")
    assert not np.allclose(caption, long)
    assert not np.allclose(caption, request)
    assert np.linalg.norm(caption) == pytest.approx(1.0, abs=1e-5)


def test_search_many_equals_single_searches(searcher):
    queries = ["dog barking", "rain on a roof", "a car engine idling"]
    many = searcher.search_many(queries, k=3)
    assert len(many) == 3
    for query, hits in zip(queries, many, strict=True):
        single = searcher.search(query, k=3)
        assert as_tuples(hits) == as_tuples(single)
        np.testing.assert_allclose([h.score for h in hits], [h.score for h in single], atol=1e-5)
    assert searcher.search_many([], k=3) == []
    with pytest.raises(TypeError):
        searcher.search_many("one string")


# -------------------------------------------------------------------------------------- query by example


def test_query_by_example_returns_the_clip_first(searcher, collection):
    _, files = collection
    hits = searcher.search_audio(files["b1320"], k=5)
    assert hits[0].path == str(files["b1320"])
    assert hits[0].score >= 0.999
    assert (hits[0].start_s, hits[0].end_s) == (0.0, pytest.approx(4.0))
    assert hits[0].duration_s == pytest.approx(4.0)
    assert all(h.score < 0.999 for h in hits[1:])


def test_query_by_example_in_another_format(searcher, collection, tmp_path):
    _, files = collection
    flac = write_audio(tmp_path / "same.flac", tone(3, freq=220), SR)
    hits = searcher.search_audio(flac, k=3)
    assert hits[0].path == str(files["a220"])
    assert hits[0].score >= 0.999


def test_query_by_example_from_a_waveform(searcher, collection):
    _, files = collection
    hits = searcher.search_audio(tone(2, freq=660), k=3)
    assert hits[0].path == str(files["a660"])
    assert hits[0].score >= 0.999


def test_duplicate_content_lists_every_path(searcher, collection):
    _, files = collection
    hit = searcher.search_audio(files["copy"], k=1)[0]
    assert hit.path == str(files["a220"])
    assert hit.paths == (str(files["a220"]), str(files["copy"]))
    assert hit.file["status"] == "indexed"
    assert hit.file["sha256"] == _sha(files["a220"])


def test_long_query_file_uses_its_first_window(searcher, collection):
    _, files = collection
    hits = searcher.search_audio(files["long"], k=1, group=False)
    assert (hits[0].path, hits[0].start_s, hits[0].end_s) == (str(files["long"]), 0.0, 10.0)
    assert hits[0].score >= 0.999


# ------------------------------------------------------------------------------------ more like a stored file


def test_like_a_stored_clip_equals_query_by_example(searcher, collection):
    _, files = collection
    for key in ("a220", "a660", "b1320"):
        like = searcher.search_like(files[key], k=5)
        example = searcher.search_audio(files[key], k=5)
        assert [h.path for h in like] == [h.path for h in example]
        assert [h.score for h in like] == pytest.approx([h.score for h in example], abs=2e-3)  # fp16 storage
        assert like[0].path == str(files[key]) and like[0].score >= 0.999


def test_like_a_copy_uses_the_vectors_of_its_original(searcher, collection):
    _, files = collection
    hit = searcher.search_like(files["copy"], k=1)[0]
    assert hit.path == str(files["a220"]) and hit.score >= 0.999
    assert hit.paths == (str(files["a220"]), str(files["copy"]))


def test_like_a_long_file_averages_its_windows_or_those_of_a_span(searcher, collection):
    from vela_search.search.similar import stored_file_vector

    _, files = collection
    index = searcher.index
    ids = index.ids_with_path(str(files["long"]))
    rows = index.segment_rows(ids)
    assert len(ids) == 7  # 40 s in 10 s windows every 5 s

    def expected(keep: list[bool]) -> np.ndarray:
        mean = index.vectors(ids[np.asarray(keep)]).mean(axis=0)
        return mean / np.linalg.norm(mean)

    np.testing.assert_allclose(stored_file_vector(index, files["long"]), expected([True] * 7), atol=1e-6)
    span = [r["end_s"] > 20 and r["start_s"] < 30 for r in rows]  # 15-25, 20-30, 25-35
    assert sum(span) == 3
    np.testing.assert_allclose(
        stored_file_vector(index, files["long"], start_s=20, end_s=30), expected(span), atol=1e-6
    )
    late = [r["end_s"] > 32 for r in rows]  # --start alone: to the end
    np.testing.assert_allclose(
        stored_file_vector(index, files["long"], start_s=32), expected(late), atol=1e-6
    )


def test_like_needs_a_file_the_index_holds(searcher, collection, tmp_path):
    _, files = collection
    stray = write_audio(tmp_path / "stray.wav", tone(1, freq=500), SR)
    with pytest.raises(QueryError, match="is not in this index"):
        searcher.search_like(stray)
    with pytest.raises(QueryError, match="no segment of .* overlaps"):
        searcher.search_like(files["long"], start_s=45)
    with pytest.raises(QueryError, match="must be after"):
        searcher.search_like(files["long"], start_s=20, end_s=10)


def test_like_a_file_that_failed_to_index_says_why(tmp_path, collection, tiny_embedder):
    root, files = collection
    build_index(root, tmp_path / "idx", tiny_embedder, [files["a660"]], {})
    broken = str(root / "broken.wav")
    with AudioIndex.open(tmp_path / "idx").writer(fingerprint=tiny_embedder.fingerprint.to_dict()) as writer:
        writer.put_files([{"path": broken, "status": "failed", "error": "file is empty (0 bytes)"}])
        writer.commit()
    with Searcher(AudioIndex.open(tmp_path / "idx"), None) as bare:
        with pytest.raises(QueryError, match=r"could not be indexed \(file is empty \(0 bytes\)\)"):
            bare.search_like(broken)


def test_a_searcher_without_a_model_searches_stored_vectors_only(index_dir, collection):
    _, files = collection
    with Searcher(AudioIndex.open(index_dir), None) as bare:
        assert bare.notice == "tiny random model: results carry no meaning"  # from the index's fingerprint
        assert bare.search_like(files["a660"], k=1)[0].path == str(files["a660"])
        with pytest.raises(QueryError, match="no model"):
            bare.search("dog barking")
        with pytest.raises(QueryError, match="no model"):
            bare.search_audio(files["a660"])


# ------------------------------------------------------------------------------------------ file length


def test_duration_filters_files_by_length_before_top_k(searcher, collection):
    _, files = collection
    lengths = {
        str(files["a220"]): 3.0,
        str(files["a660"]): 2.0,
        str(files["b1320"]): 4.0,
        str(files["long"]): 40.0,
    }
    for duration, expected in (
        ((None, 3.0), {str(files["a220"]), str(files["a660"])}),
        ((3.5, None), {str(files["b1320"]), str(files["long"])}),
        ((2.5, 3.5), {str(files["a220"])}),
        ((5.0, 39.0), set()),
    ):
        hits = searcher.search("dog barking", k=10, duration=duration)
        assert {h.path for h in hits} == expected
        assert all(h.duration_s == pytest.approx(lengths[h.path]) for h in hits)
    # Before top-k: the best file of the allowed length comes back even at k=1.
    best = searcher.search_audio(files["b1320"], k=1, duration=(None, 3.0))
    assert len(best) == 1 and best[0].path in {str(files["a220"]), str(files["a660"])}


@pytest.mark.parametrize(
    ("duration", "needle"),
    [((-1.0, None), "minimum duration"), ((None, float("nan")), "maximum duration"), ((5.0, 2.0), "above")],
)
def test_bad_duration_filters_are_refused(searcher, duration, needle):
    with pytest.raises(QueryError, match=needle):
        searcher.search("dog", duration=duration)


# ---------------------------------------------------------------------------------------------- grouping


def test_grouping_keeps_the_best_segment_per_file(searcher, collection):
    _, files = collection
    hits = searcher.search_audio(files["long"], start_s=20, end_s=30, k=10)
    paths = [h.path for h in hits]
    assert len(paths) == len(set(paths)) == 4  # four indexed files, one hit each
    long = hits[0]
    assert (long.path, long.start_s, long.end_s) == (str(files["long"]), 20.0, 30.0)
    assert long.score >= 0.999
    assert long.duration_s == pytest.approx(40.0)


def test_ungrouped_lists_every_segment(searcher, collection):
    _, files = collection
    hits = searcher.search_audio(files["long"], start_s=20, end_s=30, k=10, group=False)
    vector = searcher.embedder.embed_audio([load_query_clip(files["long"], 20, 30)])[0]
    expected = brute_force(searcher, vector, group=False)[:10]
    assert as_tuples(hits) == [e[:3] for e in expected]
    spans = [(h.start_s, h.end_s) for h in hits if h.path == str(files["long"])]
    assert len(spans) == 7  # every 10 s window (hop 5 s) of the 40 s file
    assert spans[0] == (20.0, 30.0)


def test_grouping_continues_without_restarting_until_k_files(searcher, collection, monkeypatch):
    _, files = collection
    # Fetch only k segments at a time: the long file's windows fill them, so the search must draw more,
    # leaving out the files it has, at the same depth (a continuation, not a deeper restart).
    monkeypatch.setattr(grouping_mod, "OVERFETCH", 1)
    calls = []
    original = searcher.index.search

    def spy(queries, k, **kw):
        calls.append((k, len(kw.get("exclude_paths") or ())))
        return original(queries, k, **kw)

    monkeypatch.setattr(searcher.index, "search", spy)
    hits = searcher.search_audio(files["long"], start_s=20, end_s=30, k=3)
    assert len({h.path for h in hits}) == 3
    assert len(calls) >= 2 and all(k == 3 for k, _ in calls)
    assert calls[0][1] == 0 and all(excluded >= 1 for _, excluded in calls[1:])
    assert all(h.generation == searcher.index.generation for h in hits)
    vector = searcher.embedder.embed_audio([load_query_clip(files["long"], 20, 30)])[0]
    assert as_tuples(hits) == [e[:3] for e in brute_force(searcher, vector, group=True)[:3]]


# ------------------------------------------------------------------------------------- filters and k


def test_path_glob_filters_before_top_k(searcher, collection):
    _, files = collection
    hits = searcher.search("dog barking", k=1, path_glob="*/b/*")
    assert [h.path for h in hits] == [str(files["b1320"])]
    hits = searcher.search("dog barking", k=10, path_glob="*/a/*.wav")
    assert sorted(h.path for h in hits) == sorted([str(files["a220"]), str(files["a660"])])
    assert searcher.search("dog barking", path_glob="*.mp3") == []


def test_relative_path_globs_match_from_any_directory(searcher, collection):
    _, files = collection
    assert [h.path for h in searcher.search("dog", path_glob="b/*")] == [str(files["b1320"])]
    assert [h.path for h in searcher.search("dog", path_glob="t660.wav")] == [str(files["a660"])]
    assert [h.path for h in searcher.search("dog", path_glob="./long.wav")] == [str(files["long"])]
    assert searcher.search("dog", path_glob="/b/*") == []  # anchored at the filesystem root
    assert normalize_glob("a/*.wav") == "*/a/*.wav"
    assert normalize_glob("/data/*") == "/data/*"
    assert normalize_glob(None) is None
    with pytest.raises(QueryError, match="empty"):
        searcher.search("dog", path_glob=" ")


def test_path_glob_on_a_duplicate_path_shows_that_path(searcher, collection, monkeypatch):
    _, files = collection
    # A store whose rows list every path of the content can match the copy; the hit then names it.
    original = searcher.index.search

    def with_paths(queries, k, **kw):
        found = original(queries, k)
        for hits in found:
            for hit in hits:
                copies = [str(files["copy"])] if hit.row["path"] == str(files["a220"]) else []
                hit.row["paths"] = [hit.row["path"], *copies]
        return found

    monkeypatch.setattr(searcher.index, "search", with_paths)
    hits = searcher.search_audio(files["a220"], k=1, path_glob="*/copy/*")
    assert hits[0].path == str(files["copy"])
    assert hits[0].paths == (str(files["copy"]), str(files["a220"]))


def test_min_score_drops_weaker_hits(searcher, collection):
    _, files = collection
    every = searcher.search_audio(files["long"], start_s=20, end_s=30, k=10)
    threshold = (every[1].score + every[2].score) / 2
    kept = searcher.search_audio(files["long"], start_s=20, end_s=30, k=10, min_score=threshold)
    assert as_tuples(kept) == as_tuples(every[:2])
    assert all(hit.score >= 1.0 for hit in searcher.search("dog", min_score=1.0))
    with pytest.raises(QueryError, match="between -1 and 1"):
        searcher.search("dog", min_score=1.5)  # no cosine reaches it: a mistake, not an empty result
    with pytest.raises(QueryError, match="min_score"):
        searcher.search("dog", min_score=float("nan"))


def test_k_is_bounded(searcher):
    assert len(searcher.search("dog barking", k=1)) == 1
    for bad in (0, -3, MAX_K + 1, 2.5, True):
        with pytest.raises(QueryError, match=f"1 to {MAX_K}"):
            searcher.search("dog barking", k=bad)
    assert check_k(MAX_K) == MAX_K


def test_k_larger_than_the_collection_returns_every_file(searcher):
    assert len(searcher.search("dog barking", k=MAX_K)) == 4
    assert len(searcher.search("dog barking", k=MAX_K, group=False)) == searcher.index.num_vectors


# ------------------------------------------------------------------------------------------------ errors


@pytest.mark.parametrize("query", ["", "   ", "\n\t"])
def test_empty_query_is_refused(searcher, query):
    with pytest.raises(QueryError, match="empty"):
        searcher.search(query)


def test_bad_mode_and_instruction_are_refused(searcher):
    with pytest.raises(QueryError, match="instruction"):
        searcher.search("a kettle", mode="instruction")
    with pytest.raises(QueryError, match="instruction"):
        searcher.search("a kettle", mode="instruction", instruction="  ")
    with pytest.raises(QueryError, match="instruction mode only"):
        searcher.search("a kettle", instruction="find:")
    with pytest.raises(QueryError, match="unknown query mode"):
        searcher.search("a kettle", mode="audio")


def test_over_long_query_is_refused_with_its_token_count(searcher):
    text = "dog barking then a car passes " * 2000
    count = searcher.embedder.token_count(long_item(text))
    assert count > 8192
    with pytest.raises(QueryError) as info:
        searcher.search(text, mode="long")
    message = str(info.value)
    assert f"{count} tokens" in message
    assert "8192 positions" in message
    assert "never truncated" in message


def long_item(text: str):
    from vela_search.embedding.embedder import EmbedItem

    return EmbedItem("long", text=text)


def test_bad_audio_spans_are_refused(searcher, collection):
    _, files = collection
    with pytest.raises(QueryError, match="30 s"):
        searcher.search_audio(files["long"], start_s=0, end_s=31)
    with pytest.raises(QueryError, match="after"):
        searcher.search_audio(files["long"], start_s=10, end_s=5)
    with pytest.raises(QueryError, match=">= 0"):
        searcher.search_audio(files["long"], start_s=-1)
    with pytest.raises(QueryError, match="past the end"):
        searcher.search_audio(tone(2), start_s=5)


def test_start_alone_takes_a_window_from_there(collection):
    _, files = collection
    clip = load_query_clip(files["long"], start_s=25)
    assert len(clip) == 10 * SR
    np.testing.assert_array_equal(clip, load_query_clip(files["long"], 25, 35))


def test_mismatched_embedder_is_refused(index_dir, tiny_embedder_default_demos):
    index = AudioIndex.open(index_dir)
    with pytest.raises(FingerprintMismatchError) as info:
        Searcher(index, tiny_embedder_default_demos)
    message = str(info.value)
    assert "demos (index: " in message
    assert "model (index" not in message and "weights (index" not in message  # only the demos differ
    assert "vela-search index" in message and "--demos" in message
    index.close()


def test_empty_index(tmp_path, tiny_embedder):
    fp = tiny_embedder.fingerprint.to_dict()
    index = AudioIndex.create(tmp_path / "empty", fingerprint=fp, dim=tiny_embedder.dim)
    searcher = Searcher(index, tiny_embedder)
    with pytest.raises(EmptyIndexError, match="holds no vectors"):
        searcher.search("dog barking")
    with pytest.raises(EmptyIndexError):
        searcher.search_audio(tone(1))
    searcher.close()


def test_open_checks_emptiness_before_loading_the_model(tmp_path, tiny_embedder, monkeypatch):
    from vela_search.embedding.embedder import VelaEmbedder

    fp = tiny_embedder.fingerprint.to_dict()
    AudioIndex.create(tmp_path / "empty", fingerprint=fp, dim=tiny_embedder.dim).close()

    def no_loading(*args, **kwargs):
        raise AssertionError("the model must not be loaded for an empty index")

    monkeypatch.setattr(VelaEmbedder, "from_pretrained", no_loading)
    with pytest.raises(EmptyIndexError):
        Searcher.open(tmp_path / "empty")


def test_missing_index(tmp_path):
    with pytest.raises(IndexNotFoundError) as info:
        Searcher.open(tmp_path / "nowhere")
    assert str(tmp_path / "nowhere") in str(info.value)
    assert "vela-search index" in str(info.value)


# ----------------------------------------------------------------------------- opening with the embedder


@pytest.fixture(scope="module")
def none_demos_index(collection, tiny_model_dir, tmp_path_factory):
    from vela_search.embedding.embedder import VelaEmbedder

    root, files = collection
    embedder = VelaEmbedder.from_pretrained("tiny", demos="none", device="cpu")
    out = tmp_path_factory.mktemp("idx-none") / "idx"
    build_index(root, out, embedder, [files["a220"], files["b1320"]], {})
    return out


def test_open_loads_the_embedder_the_index_records(none_demos_index, collection):
    _, files = collection
    with Searcher.open(none_demos_index, device="cpu") as searcher:
        assert searcher.embedder.fingerprint.demos == "none"
        assert searcher.notice  # the tiny model says its results mean nothing
        hits = searcher.search_audio(files["b1320"], k=2)
        assert hits[0].path == str(files["b1320"]) and hits[0].score >= 0.999


def test_open_with_other_demos_is_refused_before_loading_the_model(none_demos_index, monkeypatch):
    from vela_search.embedding.embedder import VelaEmbedder

    def no_loading(*args, **kwargs):
        raise AssertionError("a demo mismatch is known before the model loads")

    monkeypatch.setattr(VelaEmbedder, "from_pretrained", no_loading)
    with pytest.raises(FingerprintMismatchError, match=r"demos \(index: none, query: "):
        Searcher.open(none_demos_index, demos="default", device="cpu")


def test_embedder_spec_from_the_fingerprint(none_demos_index, index_dir):
    with AudioIndex.open(none_demos_index) as index:
        spec = embedder_spec(index)
        assert (spec.model, spec.adapter, spec.demos, spec.quantize) == ("tiny", None, "none", None)
        assert embedder_spec(index, model="some/model", demos="default").demos == "default"
    # The module index was built with an in-memory demo set that no file records.
    with AudioIndex.open(index_dir) as index, pytest.raises(ModelLoadError, match="--demos FILE"):
        embedder_spec(index)


def test_embedder_spec_reads_what_indexing_recorded(tmp_path, tiny_embedder):
    from vela_search.indexing.spec import EmbedderSpec, record_spec

    demo_file = tmp_path / "demos.jsonl"
    demo_file.write_text('{"text": "a dog barks", "word": "dog"}\n')
    adapter_dir = tmp_path / "adapter"
    adapter_dir.mkdir()
    fp = dict(tiny_embedder.fingerprint.to_dict(), demos="d" * 64, adapter="a" * 64)
    with AudioIndex.create(tmp_path / "idx", fingerprint=fp, dim=tiny_embedder.dim) as index:
        with pytest.raises(ModelLoadError, match="--adapter DIR"):
            embedder_spec(index)
        recorded = EmbedderSpec(model="tiny", adapter=str(adapter_dir), demos=str(demo_file))
        record_spec(index.root, fp, recorded)
        spec = embedder_spec(index)
        assert (spec.model, spec.adapter, spec.demos) == ("tiny", str(adapter_dir), str(demo_file))
        assert embedder_spec(index, demos="none").demos == "none"
        demo_file.unlink()
        with pytest.raises(ModelLoadError, match="--demos FILE"):
            embedder_spec(index)


def test_model_refs_map_back_to_load_arguments(tmp_path):
    assert index_embedder._model_from_ref("tiny@recipe-1") == ("tiny", None)
    assert index_embedder._model_from_ref("Qwen/Qwen2-Audio-7B-Instruct@abc123") == (
        "Qwen/Qwen2-Audio-7B-Instruct",
        "abc123",
    )
    assert index_embedder._model_from_ref(str(tmp_path)) == (str(tmp_path), None)


def test_refresh_sees_a_newer_generation(tmp_path, collection, tiny_embedder):
    root, files = collection
    out = tmp_path / "idx"
    build_index(root, out, tiny_embedder, [files["a220"]], {})
    with Searcher(AudioIndex.open(out), tiny_embedder) as searcher:
        assert [h.path for h in searcher.search("dog", k=5)] == [str(files["a220"])]
        assert searcher.refresh() is False
        build_index(root, out, tiny_embedder, [files["a660"]], {})
        assert searcher.refresh() is True
        assert len(searcher.search("dog", k=5)) == 2


# ------------------------------------------------------------------------------------------- formatting


def test_format_timestamp():
    assert format_timestamp(0) == "00:00"
    assert format_timestamp(65.4) == "01:05"
    assert format_timestamp(2.5) == "00:03" and format_timestamp(4.5) == "00:05"  # half up, as the page
    assert format_timestamp(3600 + 62) == "1:01:02"
    assert format_timestamp(None) == "-"


def test_paths_relative_to_the_indexed_root(searcher, collection):
    root, files = collection
    hit = searcher.search_audio(files["b1320"], k=1)[0]
    assert hit.root == str(root)
    assert hit.display_path == "b/t1320.wav"
    assert relative_to_root("/elsewhere/x.wav", str(root)) == "/elsewhere/x.wav"
    assert relative_to_root("/x.wav", None) == "/x.wav"
    data = hit.to_dict()
    assert data["path"] == str(files["b1320"]) and data["display_path"] == "b/t1320.wav"
    assert set(data) >= {"rank", "score", "path", "start_s", "end_s", "duration_s", "segment_id", "paths"}


def test_scores_are_clamped_to_the_cosine_range():
    from vela_search.search.hits import Hit

    hit = Hit(path="a.wav", start_s=0.0, end_s=1.0, score=1.0000497, duration_s=1.0, segment_id=0, rank=1)
    assert hit.score == 1.0 and hit.to_dict()["score"] == 1.0
    low = Hit(path="a.wav", start_s=0.0, end_s=1.0, score=-1.0002, duration_s=1.0, segment_id=0, rank=1)
    assert low.score == -1.0


@pytest.mark.parametrize("bad", [2, -1.5, 1.0001])
def test_min_score_outside_the_cosine_range_is_refused(bad):
    from vela_search.errors import QueryError
    from vela_search.search import check_min_score

    with pytest.raises(QueryError, match=r"--min-score must be between -1 and 1"):
        check_min_score(bad)
    assert check_min_score(1) == 1.0 and check_min_score(-1) == -1.0


def test_query_text_that_is_not_utf8_is_refused():
    import os

    from vela_search.search.validation import check_text_query

    with pytest.raises(QueryError, match=r"not valid UTF-8 text \(byte 0xff at character 5\)"):
        check_text_query(os.fsdecode(b"dog \xff"))
    with pytest.raises(QueryError, match="the instruction is not valid UTF-8"):
        check_text_query("dog", "instruction", os.fsdecode(b"find \xfe"))
