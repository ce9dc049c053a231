"""Content identity across tag edits: a file whose tags changed (BWF description, ID3 title) keeps its
vectors and has its words read again; a file whose audio changed is embedded again."""

from __future__ import annotations

import os
import struct
from pathlib import Path

import numpy as np
from audio_factory import noise, tone, write_audio

from vela_search.indexing import index_paths, preview_index
from vela_search.search.hybrid import lexical_for
from vela_search.store import AudioIndex

from .helpers import SR, files_table, segment_rows


def _bext(description: str) -> bytes:
    body = description.encode().ljust(602, b"\0")
    return b"bext" + struct.pack("<I", len(body)) + body


def _write_bwf(path: Path, wave: np.ndarray, description: str) -> Path:
    """A broadcast WAV: the samples, then a bext chunk with ``description``."""
    write_audio(path, wave, SR)
    data = bytearray(path.read_bytes()) + _bext(description)
    struct.pack_into("<I", data, 4, len(data) - 8)
    path.write_bytes(bytes(data))
    return path


def _retitle_mp3(path: Path, title: str) -> None:
    from mutagen.id3 import ID3, TIT2

    tags = ID3()
    tags.add(TIT2(encoding=3, text=title))
    tags.save(str(path))


def _vectors(index_dir: Path) -> dict[str, np.ndarray]:
    with AudioIndex.open(index_dir) as index:
        ids, vectors = index.all_vectors()
        rows = index.segment_rows(ids)
    return {os.path.basename(r["path"]): v for r, v in zip(rows, vectors, strict=True)}


def _words(index_dir: Path, text: str) -> list[str]:
    with AudioIndex.open(index_dir) as index:
        return [os.path.basename(h.path) for h in lexical_for(index).search(text, [], 10)]


def test_a_tag_edit_rereads_the_words_without_embedding_and_an_audio_edit_embeds(tmp_path, emb, monkeypatch):
    audio = tmp_path / "audio"
    audio.mkdir()
    bwf = _write_bwf(audio / "door.wav", tone(1.0, SR, freq=300), "old oak door creaking")
    mp3 = write_audio(audio / "storm.mp3", noise(1.0, seed=4), SR)
    _retitle_mp3(mp3, "Thunder Close")
    plain = write_audio(audio / "plain.wav", tone(1.0, SR, freq=700), SR)
    index_paths([audio], tmp_path / "idx", emb, window_s=1.0, hop_s=1.0)
    before = _vectors(tmp_path / "idx")
    assert _words(tmp_path / "idx", "oak") == ["door.wav"]

    _write_bwf(bwf, tone(1.0, SR, freq=300), "seagulls over the harbour")  # same samples, new bext
    _retitle_mp3(mp3, "Distant Foghorn")
    write_audio(plain, tone(1.0, SR, freq=1400), SR)  # new audio
    embedded: list[int] = []
    real = emb.embed_items

    def counting(items):  # noqa: ANN001, ANN202
        embedded.append(len(items))
        return real(items)

    monkeypatch.setattr(emb, "embed_items", counting)
    preview = preview_index([audio], tmp_path / "idx", window_s=1.0, hop_s=1.0)
    assert (preview.files_to_reread, preview.files_to_relink, preview.files_to_embed) == (2, 0, 1)
    report = index_paths([audio], tmp_path / "idx", emb, window_s=1.0, hop_s=1.0)

    assert (report.files_retagged, report.files_indexed, report.files_removed) == (2, 1, 0)
    assert sum(embedded) == 1  # only the file whose audio changed
    after = _vectors(tmp_path / "idx")
    assert sorted(after) == ["door.wav", "plain.wav", "storm.mp3"]
    for name in ("door.wav", "storm.mp3"):
        np.testing.assert_array_equal(after[name], before[name])
    assert not np.array_equal(after["plain.wav"], before["plain.wav"])
    # The words of the new tags are found, the old ones are not.
    assert _words(tmp_path / "idx", "seagulls") == ["door.wav"]
    assert _words(tmp_path / "idx", "oak") == []
    assert _words(tmp_path / "idx", "foghorn") == ["storm.mp3"]
    assert _words(tmp_path / "idx", "thunder") == []
    # The segments carry the new content digest, so a rerun finds nothing to do.
    rows = {os.path.basename(r["path"]): r for r in segment_rows(tmp_path / "idx")}
    files = files_table(tmp_path / "idx")
    assert rows["door.wav"]["content_sha256"] == files[str(bwf)]["sha256"]
    again = index_paths([audio], tmp_path / "idx", emb, window_s=1.0, hop_s=1.0)
    assert (again.files_retagged, again.files_indexed, again.segments_deleted) == (0, 0, 0)
