"""``preview_index`` (``index --dry-run``): it counts what the run then does, and changes nothing."""

from __future__ import annotations

import shutil

import pytest
from audio_factory import tone, write_audio

from vela_search.errors import VelaError
from vela_search.indexing import index_paths, preview_index
from vela_search.store import IndexWriter

from .helpers import SR, generation, small_collection

WINDOWS = {"window_s": 10.0, "hop_s": 5.0}


def _same_counts(preview, report) -> None:  # noqa: ANN001
    assert preview.files_seen == report.files_seen
    assert preview.files_to_embed == report.files_indexed
    assert preview.segments_to_embed == report.segments_added
    assert preview.files_to_relink == report.files_relinked
    assert preview.files_to_reread == report.files_retagged
    assert preview.files_unchanged == report.files_skipped
    assert preview.files_duplicates == report.files_duplicates
    assert preview.files_to_remove == report.files_removed


def test_a_preview_counts_what_the_run_then_does_and_changes_nothing(tmp_path, emb):
    audio = tmp_path / "audio"
    paths = small_collection(audio, 5, seconds=0.5)
    (audio / "field").mkdir()
    write_audio(audio / "field" / "dawn.wav", tone(40.0, freq=330), SR)  # 40 s: 7 windows of 10 s, hop 5
    idx = tmp_path / "idx"

    new = preview_index([audio], idx, **WINDOWS)
    assert not idx.exists() and not new.index_exists  # nothing created
    assert (new.files_to_embed, new.segments_to_embed) == (6, 5 + 7)
    assert new.audio_seconds_to_embed == pytest.approx(5 * 0.5 + 40.0) and new.files_without_duration == 0
    _same_counts(new, index_paths([audio], idx, emb, **WINDOWS))

    # A library between two runs: a new file, a moved one, a deleted one, a copy of another.
    write_audio(audio / "fresh.wav", tone(0.7, freq=1234), SR)
    (audio / "moved").mkdir()
    shutil.move(paths[0], audio / "moved" / paths[0].name)
    paths[1].unlink()
    shutil.copyfile(paths[2], audio / "copy.wav")
    before = generation(idx)

    events = []
    changed = preview_index([], idx, **WINDOWS, progress=events.append)  # no paths: the recorded folders
    assert {e.phase for e in events} == {"scan", "hash"}  # the same progress events as a run's
    assert events[-1].files_done == events[-1].files_total
    assert changed.index_exists and changed.roots == [str(audio)]
    assert (changed.files_to_embed, changed.files_to_relink, changed.files_duplicates) == (1, 1, 1)
    assert changed.files_to_remove == 2  # the deleted file, and the moved file's old row
    assert generation(idx) == before  # nothing committed
    _same_counts(changed, index_paths([audio], idx, emb, **WINDOWS))

    again = preview_index([audio], idx, **WINDOWS)
    assert (again.files_to_embed, again.files_to_relink, again.files_unchanged) == (0, 0, again.files_seen)


def test_a_preview_needs_paths_and_reads_only_what_is_committed(tmp_path, emb):
    with pytest.raises(VelaError, match="nothing to preview"):
        preview_index([], tmp_path / "nowhere", **WINDOWS)
    small_collection(tmp_path / "audio", 2, seconds=0.5)
    index_paths([tmp_path / "audio"], tmp_path / "idx", emb)
    # A run in progress (its writer holds the lock, its change not committed yet) does not block a preview.
    with IndexWriter(tmp_path / "idx", fingerprint=emb.fingerprint.to_dict()) as writer:
        writer.remove_files([str(tmp_path / "audio" / "clip000.wav")])
        preview = preview_index([tmp_path / "audio"], tmp_path / "idx", **WINDOWS)
    assert (preview.files_unchanged, preview.files_to_embed) == (2, 0)
