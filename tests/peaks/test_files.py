"""Peaks files: written by indexing once per content, read back, checked, removed with their file,
and computed on demand (then cached) for an index written without them."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from audio_factory import tone, write_audio

from vela_search.peaks import (
    PEAKS_DIR,
    PeaksDamagedError,
    check_peaks,
    load_or_compute,
    peaks_of_wave,
    peaks_path,
    read_peaks,
    write_peaks,
)
from vela_search.store import AudioIndex

SR = 16_000


@pytest.fixture(scope="module")
def indexed(tmp_path_factory, emb):
    from vela_search.indexing.pipeline import index_paths

    base = tmp_path_factory.mktemp("peaks")
    audio = base / "audio"
    audio.mkdir()
    write_audio(audio / "a.wav", tone(2, SR, freq=300), SR)
    write_audio(audio / "b.flac", tone(3, SR, freq=600) * 0.5, SR)
    shutil.copy(audio / "a.wav", audio / "a-copy.wav")  # a duplicate shares its peaks
    index_paths([audio], base / "idx", emb)
    return audio, base / "idx"


def shas(index_dir) -> dict[str, str]:
    with AudioIndex.open(index_dir, shards=False) as index:
        table = index.files().to_pydict()
    return {
        p.rsplit("/", 1)[-1]: s
        for p, s, st in zip(table["path"], table["sha256"], table["status"])
        if st == "indexed"
    }


def test_indexing_writes_peaks_once_per_content(indexed):
    audio, idx = indexed
    written = sorted((idx / PEAKS_DIR).glob("??/*.peaks"))
    assert len(written) == 2
    for name, sha in shas(idx).items():
        peaks = read_peaks(peaks_path(idx, sha))
        assert peaks.sample_rate == SR and peaks.channels == 1
        expected = peaks_of_wave(
            tone(2 if name.startswith("a") else 3, SR, freq=300 if name.startswith("a") else 600)
            * (1 if name.startswith("a") else 0.5)
        )
        assert abs(peaks.duration_s - expected.duration_s) < 0.01
        assert np.abs(peaks.overview.astype(int) - expected.overview.astype(int)).max() <= 2
    assert check_peaks(idx) == (2, [])


def test_written_once_and_damage_is_found(tmp_path):
    peaks = peaks_of_wave(tone(2, SR, freq=300))
    path = write_peaks(tmp_path, "ab" * 32, peaks)
    stamp = path.stat().st_mtime_ns
    write_peaks(tmp_path, "ab" * 32, peaks_of_wave(tone(2, SR, freq=900)))
    assert path.stat().st_mtime_ns == stamp
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x55
    path.write_bytes(bytes(data))
    with pytest.raises(PeaksDamagedError, match="CRC"):
        read_peaks(path)
    checked, damaged = check_peaks(tmp_path)
    assert checked == 1 and damaged[0][0] == f"{PEAKS_DIR}/ab/{'ab' * 32}.peaks"
    path.write_bytes(b"VPK1\x05\x00")
    with pytest.raises(PeaksDamagedError):
        read_peaks(path)


def test_old_index_computes_and_caches(indexed, tmp_path):
    audio, idx = indexed
    old = tmp_path / "old"
    shutil.copytree(idx, old, ignore=shutil.ignore_patterns(PEAKS_DIR, "writer.lock"))
    sha = shas(old)["b.flac"]
    assert not peaks_path(old, sha).exists()
    # An old reader sees the same index: the store knows nothing of the peaks folder.
    with AudioIndex.open(old) as index:
        assert index.num_vectors > 0
    computed = load_or_compute(old, sha, audio / "b.flac")
    assert peaks_path(old, sha).is_file()
    assert np.array_equal(read_peaks(peaks_path(old, sha)).overview, computed.overview)
    assert np.array_equal(computed.overview, read_peaks(peaks_path(idx, sha)).overview)


def test_removed_with_their_file(indexed, tmp_path, emb):
    from vela_search.indexing.pipeline import index_paths

    audio, idx = indexed
    own_audio, own = tmp_path / "audio", tmp_path / "idx"
    shutil.copytree(audio, own_audio)
    index_paths([own_audio], own, emb)
    before = shas(own)
    assert peaks_path(own, before["b.flac"]).is_file()
    (own_audio / "b.flac").unlink()
    index_paths([own_audio], own, emb)
    assert not peaks_path(own, before["b.flac"]).exists()
    kept = {sha for name, sha in before.items() if name != "b.flac"}
    assert len(kept) == 1 and peaks_path(own, kept.pop()).is_file()


def test_check_finds_damaged_peaks_and_repair_removes_them(indexed, tmp_path, capsys):
    from vela_search.cli.check_cmd import check_command
    from vela_search.errors import StoreError

    _, idx = indexed
    own = tmp_path / "idx"
    shutil.copytree(idx, own, ignore=shutil.ignore_patterns("writer.lock"))
    check_command(index=str(own), repair=False, json_output=True)
    assert '"checked": 2' in capsys.readouterr().out
    victim = sorted((own / PEAKS_DIR).glob("??/*.peaks"))[0]
    victim.write_bytes(victim.read_bytes()[:-3])
    with pytest.raises(StoreError, match="1 damaged waveform peaks file"):
        check_command(index=str(own), repair=False, json_output=False)
    check_command(index=str(own), repair=True, json_output=False)
    assert not victim.exists()
    check_command(index=str(own), repair=False, json_output=False)


def test_a_file_decoded_elsewhere_gets_no_empty_peaks(tmp_path):
    from vela_search.peaks import PeakBuilder
    from vela_search.peaks.indexing import store_peaks

    store_peaks(tmp_path, "ef" * 32, PeakBuilder(), 12.0, str(tmp_path / "gone.wav"))
    assert not peaks_path(tmp_path, "ef" * 32).exists()
    builder = PeakBuilder()
    builder.add(0.0, tone(1, SR, freq=440))
    store_peaks(tmp_path, "ef" * 32, builder, 1.0, str(tmp_path / "gone.wav"))
    assert read_peaks(peaks_path(tmp_path, "ef" * 32)).sample_rate == 0  # the source is not on disk
