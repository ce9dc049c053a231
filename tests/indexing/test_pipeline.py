"""`index_paths` on real audio files with the tiny model: formats, broken and long files, incremental runs."""

from __future__ import annotations

import hashlib
import os
import shutil

import numpy as np
import pytest
from audio_factory import (
    BROKEN_FILE_ERRORS,
    install_fake_ffmpeg,
    tone,
    write_audio,
    write_broken_files,
    write_fake_ffmpeg_file,
    write_long_tone,
)

from vela_search.errors import FingerprintMismatchError, VelaError
from vela_search.indexing import IndexProgress, index_paths
from vela_search.store import AudioIndex

from .helpers import SR, file_states, files_table, live_segments, segment_rows, small_collection, unit_rows


def sha(path) -> str:  # noqa: ANN001
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


# ------------------------------------------------------------------------------------ what gets indexed


def test_every_format_broken_files_odd_names_and_channels(tmp_path, emb, monkeypatch):
    monkeypatch.setenv(
        "PATH", f"{install_fake_ffmpeg(tmp_path / 'bin').parent}{os.pathsep}{os.environ['PATH']}"
    )
    audio = tmp_path / "audio"
    for sub in ("formats", "ffmpeg", "names", "multichannel"):
        (audio / sub).mkdir(parents=True)
    good: dict[str, float] = {}
    for i, ext in enumerate(["wav", "flac", "ogg", "oga", "opus", "mp3", "aiff", "aif"]):
        rate = 48_000 if ext == "opus" else SR
        seconds = 1.0 + 0.25 * i
        good[
            str(write_audio(audio / "formats" / f"clip.{ext}", tone(seconds, rate, freq=300 + 40 * i), rate))
        ] = seconds
    for i, ext in enumerate(["m4a", "aac", "webm", "wma"]):  # through the ffmpeg pipe
        path = write_fake_ffmpeg_file(audio / "ffmpeg" / f"clip.{ext}", tone(1.5, SR, freq=700 + 50 * i), SR)
        good[str(path)] = 1.5
    good[str(write_audio(audio / "names" / "café ñandú 日本.flac", tone(1.0, SR, freq=990), SR))] = 1.0
    good[str(write_audio(audio / "names" / "звук.wav", tone(1.2, SR, freq=1010), SR))] = 1.2
    eight = write_audio(
        audio / "multichannel" / "surround.wav", tone(2.0, 48_000, freq=250, channels=8), 48_000
    )
    good[str(eight)] = 2.0

    broken = write_broken_files(audio / "broken")
    long_cut = write_long_tone(audio / "broken" / "long_cut.flac", 120.0, sr=8000)
    data = long_cut.read_bytes()
    long_cut.write_bytes(data[: len(data) // 2])  # windows decode fine, then the stream breaks
    expected_errors = {str(p): BROKEN_FILE_ERRORS[kind] for kind, p in broken.items()}
    expected_errors[str(long_cut)] = "truncated"

    events: list[IndexProgress] = []
    report = index_paths([audio], tmp_path / "idx", emb, progress=events.append)

    assert report.files_seen == len(good) + len(expected_errors)
    assert report.files_indexed == len(good)
    assert report.files_failed == len(expected_errors)
    failures = dict(report.failures)
    assert set(failures) == set(expected_errors)
    for path, fragment in expected_errors.items():
        assert fragment in failures[path], (path, failures[path])

    files = files_table(tmp_path / "idx")
    for path, seconds in good.items():
        row = files[path]
        assert row["status"] == "indexed" and row["error"] is None
        assert row["sha256"] == sha(path)
        assert row["segments"] == 1
        assert row["root"] == str(audio)
        assert row["duration_s"] == pytest.approx(seconds, abs=0.08)  # mp3/opus add codec padding
    for path, fragment in expected_errors.items():
        assert files[path]["status"] == "failed" and fragment in files[path]["error"]

    rows = segment_rows(tmp_path / "idx")
    assert sorted(r["path"] for r in rows) == sorted(good)  # nothing from a failed file, not even long_cut
    for row in rows:
        assert row["start_s"] == 0.0 and row["segment"] == 0
        assert (
            row["end_s"]
            == pytest.approx(row["duration_s"])
            == pytest.approx(files[row["path"]]["duration_s"])
        )
        assert row["content_sha256"] == files[row["path"]]["sha256"]
        assert row["root"] == str(audio)
    with AudioIndex.open(tmp_path / "idx") as index:
        _, vectors = index.all_vectors()
        assert unit_rows(vectors)
        assert index.num_vectors == len(good)
    # Progress: the embed phase counts every embedded window (long_cut's too, before it broke).
    embed = [e for e in events if e.phase == "embed"]
    assert embed[-1].segments_done >= report.segments_added == len(good)
    assert events[-1].phase == "done" and events[-1].files_done == events[-1].files_total


def test_twenty_minute_file_is_cut_into_timed_windows(tmp_path, emb):
    (tmp_path / "audio").mkdir()
    path = write_long_tone(tmp_path / "audio" / "lecture.flac", 20 * 60, sr=8000)
    report = index_paths([tmp_path / "audio"], tmp_path / "idx", emb)
    assert report.files_indexed == 1 and report.segments_added == 239
    rows = segment_rows(tmp_path / "idx")
    assert [r["segment"] for r in rows] == list(range(239))
    assert [r["start_s"] for r in rows] == [5.0 * k for k in range(239)]
    assert [r["end_s"] for r in rows] == [5.0 * k + 10.0 for k in range(239)]
    assert rows[-1]["end_s"] == 1200.0
    assert {r["duration_s"] for r in rows} == {1200.0}
    assert files_table(tmp_path / "idx")[str(path)]["segments"] == 239


def test_a_window_that_does_not_fit_the_encoder_is_refused_before_anything_runs(tmp_path, emb):
    with pytest.raises(VelaError, match="--window"):
        index_paths([tmp_path], tmp_path / "idx", emb, window_s=45.0)
    with pytest.raises(VelaError, match="--hop"):
        index_paths([tmp_path], tmp_path / "idx", emb, window_s=10.0, hop_s=12.0)
    assert not (tmp_path / "idx").exists()
    with pytest.raises(VelaError, match="maintenance must be 'inline' or 'background'"):
        index_paths([tmp_path], tmp_path / "idx", emb, maintenance="later")
    assert not (tmp_path / "idx").exists()


# ----------------------------------------------------------------------------------------- incremental


def test_rerun_skips_everything_and_commits_nothing(tmp_path, emb):
    small_collection(tmp_path / "audio", 4)
    write_broken_files(tmp_path / "audio" / "broken")
    first = index_paths([tmp_path / "audio"], tmp_path / "idx", emb)
    before = (live_segments(tmp_path / "idx"), AudioIndex.open(tmp_path / "idx").generation)
    second = index_paths([tmp_path / "audio"], tmp_path / "idx", emb)
    assert first.files_indexed == 4 and second.files_indexed == 0
    assert second.files_skipped == 4 and second.segments_added == 0 and second.segments_deleted == 0
    # Broken files are tried again (a fix such as installing ffmpeg takes effect) and still fail.
    assert second.files_failed == first.files_failed > 0
    assert (live_segments(tmp_path / "idx"), AudioIndex.open(tmp_path / "idx").generation) == before


def test_changed_file_is_reembedded_alone_and_a_touched_one_is_not(tmp_path, emb):
    paths = small_collection(tmp_path / "audio", 4)
    index_paths([tmp_path / "audio"], tmp_path / "idx", emb)
    ids_before = {r["path"]: r["id"] for r in segment_rows(tmp_path / "idx")}

    write_audio(paths[1], tone(2.5, SR, freq=1234), SR)  # new content
    st = os.stat(paths[2])
    os.utime(paths[2], ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))  # same bytes, new mtime
    report = index_paths([tmp_path / "audio"], tmp_path / "idx", emb)

    assert report.files_indexed == 1 and report.files_skipped == 3
    assert report.segments_added == 1 and report.segments_deleted == 1
    rows = {r["path"]: r for r in segment_rows(tmp_path / "idx")}
    assert len(rows) == 4
    assert rows[str(paths[1])]["id"] != ids_before[str(paths[1])]
    assert rows[str(paths[1])]["content_sha256"] == sha(paths[1])
    assert rows[str(paths[1])]["end_s"] == pytest.approx(2.5)
    for p in (paths[0], paths[2], paths[3]):
        assert rows[str(p)]["id"] == ids_before[str(p)]
    with AudioIndex.open(tmp_path / "idx") as index:
        assert ids_before[str(paths[1])] in set(index.deleted_ids().tolist())
    assert files_table(tmp_path / "idx")[str(paths[2])]["mtime_ns"] == os.stat(paths[2]).st_mtime_ns


def test_deleted_file_is_pruned_unless_no_prune(tmp_path, emb):
    paths = small_collection(tmp_path / "audio", 3)
    index_paths([tmp_path / "audio"], tmp_path / "idx", emb)
    paths[0].unlink()
    kept = index_paths([tmp_path / "audio"], tmp_path / "idx", emb, prune=False)
    assert kept.files_removed == 0 and str(paths[0]) in files_table(tmp_path / "idx")
    assert len(live_segments(tmp_path / "idx")) == 3

    pruned = index_paths([tmp_path / "audio"], tmp_path / "idx", emb)
    assert pruned.files_removed == 1 and pruned.segments_deleted == 1
    assert str(paths[0]) not in files_table(tmp_path / "idx")
    assert [s[0] for s in live_segments(tmp_path / "idx")] == [str(p) for p in paths[1:]]


def test_pruning_stays_inside_the_given_paths(tmp_path, emb):
    a = small_collection(tmp_path / "a", 2)
    small_collection(tmp_path / "b", 2, prefix="other")
    index_paths([tmp_path / "a"], tmp_path / "idx", emb)
    index_paths([tmp_path / "b"], tmp_path / "idx", emb)  # files of a/ are not "vanished" here
    assert len(files_table(tmp_path / "idx")) == 4
    shutil.rmtree(tmp_path / "a")
    report = index_paths([tmp_path / "b"], tmp_path / "idx", emb)
    assert report.files_removed == 0 and str(a[0]) in files_table(tmp_path / "idx")
    # Without paths, the roots the index records are rescanned, so a/ is pruned now. b/ holds the same
    # sounds under other names, so b/'s files take over a/'s stored vectors.
    report = index_paths([], tmp_path / "idx", emb)
    assert report.files_removed == 2 and len(files_table(tmp_path / "idx")) == 2
    assert report.files_relinked == 2 and report.files_indexed == 0


def test_same_content_is_embedded_once_and_every_path_listed(tmp_path, emb):
    paths = small_collection(tmp_path / "audio", 2)
    shutil.copyfile(paths[0], tmp_path / "audio" / "zz_copy.wav")
    shutil.copyfile(paths[0], tmp_path / "audio" / "aa_copy.wav")
    report = index_paths([tmp_path / "audio"], tmp_path / "idx", emb)
    assert report.files_indexed == 2 and report.files_duplicates == 2 and report.segments_added == 2
    digest = sha(paths[0])
    states = file_states(tmp_path / "idx")
    assert [(os.path.basename(p), s) for p, s, d in states if d == digest] == [
        ("aa_copy.wav", "indexed"),  # the first path in order owns the content
        ("clip000.wav", "duplicate"),
        ("zz_copy.wav", "duplicate"),
    ]
    assert [os.path.basename(s[0]) for s in live_segments(tmp_path / "idx")] == ["aa_copy.wav", "clip001.wav"]

    # A new copy of content already indexed is recorded without embedding anything.
    shutil.copyfile(paths[1], tmp_path / "audio" / "b_copy.wav")
    report = index_paths([tmp_path / "audio"], tmp_path / "idx", emb)
    assert report.files_duplicates == 1 and report.files_indexed == 0 and report.segments_added == 0

    # When the owner goes, a remaining copy takes the content over (and its segments carry its path),
    # reusing the stored vectors.
    (tmp_path / "audio" / "aa_copy.wav").unlink()
    report = index_paths([tmp_path / "audio"], tmp_path / "idx", emb)
    assert (report.files_removed, report.files_relinked, report.files_indexed) == (1, 1, 0)
    states = dict((os.path.basename(p), s) for p, s, _ in file_states(tmp_path / "idx"))
    assert states == {
        "b_copy.wav": "duplicate",
        "clip000.wav": "indexed",
        "clip001.wav": "indexed",
        "zz_copy.wav": "duplicate",
    }
    assert [os.path.basename(s[0]) for s in live_segments(tmp_path / "idx")] == ["clip000.wav", "clip001.wav"]


def test_a_file_owns_its_content_before_links_to_it(tmp_path, emb):
    audio = tmp_path / "audio"
    (audio / "z_library").mkdir(parents=True)
    write_audio(audio / "z_library" / "door.wav", tone(1.0, freq=300), SR)
    write_audio(audio / "z_library" / "bell.wav", tone(1.0, freq=900), SR)
    (audio / "a_favourite.wav").symlink_to(audio / "z_library" / "door.wav")  # first in path order
    (audio / "b_shortcut").symlink_to(audio / "z_library", target_is_directory=True)
    index_paths([audio], tmp_path / "idx", emb)
    states = {path: status for path, status, _ in file_states(tmp_path / "idx")}
    real = str(audio / "z_library" / "door.wav")
    assert states == {
        str(audio / "a_favourite.wav"): "duplicate",
        str(audio / "b_shortcut" / "bell.wav"): "duplicate",
        str(audio / "b_shortcut" / "door.wav"): "duplicate",
        str(audio / "z_library" / "bell.wav"): "indexed",
        real: "indexed",
    }
    assert {path for path, _, _ in live_segments(tmp_path / "idx")} == {
        real,
        str(audio / "z_library" / "bell.wav"),
    }


def test_owner_changing_content_hands_the_old_content_to_its_copy(tmp_path, emb):
    paths = small_collection(tmp_path / "audio", 1)
    copy = tmp_path / "audio" / "copy.wav"
    shutil.copyfile(paths[0], copy)
    index_paths([tmp_path / "audio"], tmp_path / "idx", emb)
    old = sha(paths[0])
    write_audio(paths[0], tone(1.7, SR, freq=1500), SR)
    report = index_paths([tmp_path / "audio"], tmp_path / "idx", emb)
    assert report.files_indexed == 2  # the changed file, and its former copy as the new owner
    assert file_states(tmp_path / "idx") == sorted(
        [(str(paths[0]), "indexed", sha(paths[0])), (str(copy), "indexed", old)]
    )
    rows = segment_rows(tmp_path / "idx")
    assert sorted((r["path"], r["content_sha256"]) for r in rows) == sorted(
        [(str(paths[0]), sha(paths[0])), (str(copy), old)]
    )


def _vectors_by_place(index_dir) -> dict[tuple[str, float], np.ndarray]:
    """(file name, start_s) -> stored vector, for every live segment."""
    with AudioIndex.open(index_dir) as index:
        ids, vectors = index.all_vectors()
        rows = index.segment_rows(ids)
    return {(os.path.basename(r["path"]), r["start_s"]): v for r, v in zip(rows, vectors, strict=True)}


def test_moved_and_renamed_files_reuse_their_vectors(tmp_path, emb, monkeypatch):
    audio = tmp_path / "audio"
    paths = small_collection(audio, 3)
    write_long_tone(audio / "long.flac", seconds=40.0, sr=SR)  # several windows
    shutil.copyfile(paths[2], audio / "copy_of_2.wav")
    index_paths([audio], tmp_path / "idx", emb)
    before = _vectors_by_place(tmp_path / "idx")

    (audio / "sub").mkdir()
    paths[0].rename(audio / "renamed.wav")
    (audio / "long.flac").rename(audio / "sub" / "long.flac")
    paths[2].rename(audio / "sub" / paths[2].name)  # the owner of a content that has a copy

    def no_embedding(*args, **kwargs):  # noqa: ANN002, ANN003
        raise AssertionError("a moved file was embedded again")

    monkeypatch.setattr(emb, "embed_items", no_embedding)
    report = index_paths([audio], tmp_path / "idx", emb)
    assert (report.files_relinked, report.files_indexed, report.files_removed) == (3, 0, 3)
    assert report.segments_added == 0 and report.segments_relinked == report.segments_deleted > 3

    # The same segments, every one under the name that now owns its content, with the same vector.
    new_owner = {"clip000.wav": "renamed.wav", "clip002.wav": "copy_of_2.wav"}
    expected = {(new_owner.get(name, name), start): v for (name, start), v in before.items()}
    after = _vectors_by_place(tmp_path / "idx")
    assert sorted(after) == sorted(expected)
    for place, vector in expected.items():
        np.testing.assert_array_equal(after[place], vector)
    states = {os.path.relpath(p, audio): s for p, s, _ in file_states(tmp_path / "idx")}
    assert states == {
        "renamed.wav": "indexed",
        "clip001.wav": "indexed",
        "copy_of_2.wav": "indexed",  # first in path order among the content's paths: the new owner
        os.path.join("sub", "clip002.wav"): "duplicate",
        os.path.join("sub", "long.flac"): "indexed",
    }
    rows = segment_rows(tmp_path / "idx")
    long_rows = [r for r in rows if r["path"].endswith("long.flac")]
    assert {r["path"] for r in long_rows} == {str(audio / "sub" / "long.flac")}
    assert [r["segment"] for r in long_rows] == list(range(len(long_rows)))
    assert all(r["root"] == str(audio) for r in rows)
    with AudioIndex.open(tmp_path / "idx") as index:
        assert index.num_vectors == len(before)
    # A rerun finds nothing to do.
    again = index_paths([audio], tmp_path / "idx", emb)
    assert again.files_relinked == again.files_indexed == again.segments_deleted == 0


def test_many_moves_are_read_back_in_batches(tmp_path, emb, monkeypatch):
    from vela_search.indexing import pipeline

    paths = small_collection(tmp_path / "audio", 5)
    index_paths([tmp_path / "audio"], tmp_path / "idx", emb, commit_every=2)  # several shards
    before = _vectors_by_place(tmp_path / "idx")
    for path in paths:
        path.rename(path.with_name("moved_" + path.name))
    monkeypatch.setattr(pipeline, "RELINK_BATCH_SEGMENTS", 2)
    events: list[IndexProgress] = []
    report = index_paths([tmp_path / "audio"], tmp_path / "idx", emb, progress=events.append)
    assert (report.files_relinked, report.files_indexed) == (5, 0)
    relinking = [(e.files_done, e.files_total) for e in events if e.phase == "relink"]
    assert relinking == [(2, 5), (4, 5), (5, 5)]  # one event per batch of two one-segment files
    after = _vectors_by_place(tmp_path / "idx")
    assert sorted(after) == sorted(("moved_" + name, start) for name, start in before)
    for (name, start), vector in before.items():
        np.testing.assert_array_equal(after[("moved_" + name, start)], vector)


def test_a_moved_file_whose_vectors_cannot_be_read_back_is_embedded(tmp_path, emb, monkeypatch):
    from vela_search.errors import StoreError
    from vela_search.store import IndexWriter

    paths = small_collection(tmp_path / "audio", 2)
    index_paths([tmp_path / "audio"], tmp_path / "idx", emb)
    paths[0].rename(tmp_path / "audio" / "moved.wav")

    def unreadable(self, ids):  # noqa: ANN001
        raise StoreError("this index type cannot return its stored vectors")

    monkeypatch.setattr(IndexWriter, "read_segments", unreadable)
    report = index_paths([tmp_path / "audio"], tmp_path / "idx", emb)
    assert (report.files_relinked, report.files_indexed, report.segments_added) == (0, 1, 1)
    assert report.files_removed == 1 and str(paths[0]) not in files_table(tmp_path / "idx")
    assert [os.path.basename(s[0]) for s in live_segments(tmp_path / "idx")] == ["clip001.wav", "moved.wav"]


def test_a_copy_outside_the_runs_paths_takes_over_a_deleted_owner(tmp_path, emb):
    (owner,) = small_collection(tmp_path / "a", 1)
    (tmp_path / "b").mkdir()
    copy = tmp_path / "b" / "copy.wav"
    shutil.copyfile(owner, copy)
    index_paths([tmp_path / "a"], tmp_path / "idx", emb)
    index_paths([tmp_path / "b"], tmp_path / "idx", emb)
    before = _vectors_by_place(tmp_path / "idx")
    owner.unlink()
    report = index_paths([tmp_path / "a"], tmp_path / "idx", emb)  # b/ is not scanned in this run
    assert (report.files_removed, report.files_relinked, report.files_indexed) == (1, 1, 0)
    assert file_states(tmp_path / "idx") == [(str(copy), "indexed", sha(copy))]
    (vector,) = before.values()
    np.testing.assert_array_equal(_vectors_by_place(tmp_path / "idx")[("copy.wav", 0.0)], vector)
    assert files_table(tmp_path / "idx")[str(copy)]["root"] == str(tmp_path / "b")


def test_an_interrupted_run_finds_the_remaining_moves_again(tmp_path, emb, monkeypatch):
    from vela_search.indexing.run import IndexRun

    paths = small_collection(tmp_path / "audio", 3)
    index_paths([tmp_path / "audio"], tmp_path / "idx", emb)
    before = _vectors_by_place(tmp_path / "idx")
    for path in paths[:2]:
        path.rename(path.with_name("moved_" + path.name))

    landed = []
    real_relink = IndexRun.relink

    def relink_then_crash(self, job, vectors, rows):  # noqa: ANN001
        if landed:
            raise KeyboardInterrupt  # Ctrl-C after the first moved file landed
        landed.append(job.file.path)
        real_relink(self, job, vectors, rows)

    monkeypatch.setattr(IndexRun, "relink", relink_then_crash)
    with pytest.raises(KeyboardInterrupt):
        index_paths([tmp_path / "audio"], tmp_path / "idx", emb, commit_every=1)
    monkeypatch.undo()
    # The first move was committed (new row, old row gone); the second one's old row is still there.
    files = files_table(tmp_path / "idx")
    assert landed[0] in files and str(paths[0]) not in files and str(paths[1]) in files

    report = index_paths([tmp_path / "audio"], tmp_path / "idx", emb)
    assert (report.files_relinked, report.files_indexed) == (1, 0)
    after = _vectors_by_place(tmp_path / "idx")
    renamed = {p.name: "moved_" + p.name for p in paths[:2]}
    assert sorted(after) == sorted((renamed.get(n, n), t) for n, t in before)
    for (name, start), vector in before.items():
        np.testing.assert_array_equal(after[(renamed.get(name, name), start)], vector)


def test_segments_no_files_row_accounts_for_are_tombstoned(tmp_path, emb):
    """What an interrupted writer of another kind could leave: segments of a file without its row."""
    paths = small_collection(tmp_path / "audio", 2)
    index_paths([tmp_path / "audio"], tmp_path / "idx", emb)
    fingerprint = emb.fingerprint.to_dict()
    with AudioIndex.open(tmp_path / "idx").writer(fingerprint=fingerprint) as writer:
        vec = np.eye(emb.dim, dtype=np.float32)[:1]
        writer.add(vec, [{"path": str(paths[0]), "content_sha256": "0" * 64, "start_s": 0.0, "end_s": 1.0}])
        writer.commit()
    assert len(live_segments(tmp_path / "idx")) == 3
    report = index_paths([tmp_path / "audio"], tmp_path / "idx", emb)
    assert report.segments_deleted == 1 and report.files_skipped == 2
    assert live_segments(tmp_path / "idx") == sorted((str(p), 0.0, 1.0) for p in paths)


# ------------------------------------------------------------------------------------------ embedders


def test_another_embedder_is_refused_with_a_rebuild_hint(tmp_path, emb, tiny_embedder):
    small_collection(tmp_path / "audio", 1)
    index_paths([tmp_path / "audio"], tmp_path / "idx", emb)
    with pytest.raises(FingerprintMismatchError, match="--rebuild"):
        index_paths([tmp_path / "audio"], tmp_path / "idx", tiny_embedder)


def test_rebuild_with_an_adapter_replaces_the_generation(tmp_path, emb, tiny_model_dir):
    from peft import LoraConfig, get_peft_model
    from transformers import Qwen2AudioForConditionalGeneration

    from vela_search.embedding.backbone import LLM_LORA_TARGETS
    from vela_search.embedding.embedder import VelaEmbedder
    from vela_search.indexing import recorded_spec

    model = Qwen2AudioForConditionalGeneration.from_pretrained(tiny_model_dir)
    config = LoraConfig(r=4, lora_alpha=8, target_modules=LLM_LORA_TARGETS, init_lora_weights=False)
    get_peft_model(model, config).save_pretrained(tmp_path / "adapter")
    tuned = VelaEmbedder.from_pretrained("tiny", adapter=tmp_path / "adapter", demos="none", device="cpu")

    small_collection(tmp_path / "audio", 3)
    index_paths([tmp_path / "audio"], tmp_path / "idx", emb)
    old_segments = live_segments(tmp_path / "idx")
    report = index_paths([], tmp_path / "idx", tuned, rebuild=True)  # the recorded roots are rebuilt
    assert report.rebuilt and report.files_indexed == 3
    with AudioIndex.open(tmp_path / "idx") as index:
        assert index.fingerprint["adapter"] == tuned.fingerprint.adapter is not None
        assert index.staging is None
        # The stored vectors are the new embedder's: a file's own embedding finds its segment first.
        first = live_segments(tmp_path / "idx")[0][0]
        hit = index.search(tuned.embed_audio([first]), k=1)[0][0]
        assert hit.row["path"] == first and hit.score == pytest.approx(1.0, abs=2e-3)
    assert live_segments(tmp_path / "idx") == old_segments
    spec = recorded_spec(tmp_path / "idx", tuned.fingerprint.to_dict())
    assert spec is not None and spec.adapter == str((tmp_path / "adapter").resolve())
    # Incremental runs now go on with the new embedder; the old one is refused.
    assert index_paths([tmp_path / "audio"], tmp_path / "idx", tuned).files_skipped == 3
    with pytest.raises(FingerprintMismatchError):
        index_paths([tmp_path / "audio"], tmp_path / "idx", emb)


# --------------------------------------------------------------------------------------- shards, types


def test_many_small_commits_are_merged_at_the_end(tmp_path, emb):
    # Eight one-segment commits: too few shards for the commits' own tiered merging (more than 8), enough
    # small ones for the end of the run to compact them.
    small_collection(tmp_path / "audio", 8, seconds=0.5)
    report = index_paths([tmp_path / "audio"], tmp_path / "idx", emb, commit_every=1)
    assert report.compacted and report.shards == 1 and report.vectors == 8
    assert len(live_segments(tmp_path / "idx")) == 8
    few = index_paths([tmp_path / "audio"], tmp_path / "few", emb, commit_every=3)
    assert not few.compacted and few.shards == 3


def test_a_factory_that_needs_training_waits_for_enough_vectors(tmp_path, emb):
    paths = small_collection(tmp_path / "audio", 5, seconds=0.5)
    report = index_paths([tmp_path / "audio"], tmp_path / "idx", emb, commit_every=1, factory="IVF4,Flat")
    assert report.vectors == 5
    with AudioIndex.open(tmp_path / "idx") as index:
        assert index.factory == "IVF4,Flat"
        hit = index.search(emb.embed_audio([paths[2]]), k=1)[0][0]
        assert hit.row["path"] == str(paths[2])
    with pytest.raises(VelaError, match="at least 8 vectors"):
        index_paths([tmp_path / "audio"], tmp_path / "big", emb, factory="IVF8,Flat")


def test_no_paths_and_no_index_is_an_error(tmp_path, emb):
    with pytest.raises(VelaError, match="nothing to index"):
        index_paths([], tmp_path / "idx", emb)
    assert not (tmp_path / "idx").exists()


def test_missing_paths_do_not_create_an_empty_index(tiny_embedder, tmp_path):
    from vela_search.errors import VelaError
    from vela_search.indexing import index_paths
    from vela_search.store import AudioIndex

    with pytest.raises(VelaError, match="no such file or directory: .*typo"):
        index_paths([tmp_path / "typo"], tmp_path / "index", tiny_embedder)
    assert not AudioIndex.exists(tmp_path / "index")
