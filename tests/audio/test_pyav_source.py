"""Decoding without an ffmpeg executable: m4a/aac/webm/wma through PyAV, encoded here by PyAV itself."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import soxr
from audio_factory import PYAV_FORMATS, alignment_lag, write_audio, write_pyav

from vela_search.audio import (
    SAMPLE_RATE,
    AudioBytes,
    Window,
    audio_duration,
    decode_audio,
    ffmpeg_available,
    iter_segments,
    plan_windows,
    pyav_available,
)
from vela_search.errors import AudioDecodeError


def sweep(seconds: float, sr: int, channels: int = 2, amplitude: float = 0.3) -> np.ndarray:
    """A rising sine sweep (200 Hz to 4 kHz): lossy codecs keep it, and it lines up at one lag only."""
    t = np.arange(round(seconds * sr)) / sr
    f0, f1 = 200.0, 4000.0
    phase = 2 * np.pi * (f0 * t + (f1 - f0) * t**2 / (2 * seconds))
    cols = [amplitude * np.sin(phase + c) for c in range(channels)]
    wave = np.stack(cols, axis=1).astype(np.float32)
    return wave[:, 0].copy() if channels == 1 else wave


def reference_16k(wave: np.ndarray, sr: int) -> np.ndarray:
    mono = (wave if wave.ndim == 1 else wave.mean(axis=1)).astype(np.float32)
    return soxr.resample(mono, sr, SAMPLE_RATE)


@pytest.fixture(autouse=True)
def no_ffmpeg(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No ffmpeg or ffprobe executable, whether or not the machine has them."""
    empty = tmp_path / "empty_bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    real_which = shutil.which

    def which(name: str, *args: object, **kwargs: object) -> str | None:
        return None if name in ("ffmpeg", "ffprobe") else real_which(name, *args, **kwargs)

    monkeypatch.setattr(shutil, "which", which)
    assert not ffmpeg_available()


@pytest.mark.parametrize("fmt", ["m4a", "webm"])
def test_exact_length_and_timing(tmp_path: Path, fmt: str) -> None:
    sr = PYAV_FORMATS[fmt][2]
    wave = sweep(2.5, sr)
    path = write_pyav(tmp_path / f"clip.{fmt}", wave, sr)

    out = decode_audio(path)

    # The encoder's priming (m4a edit list, Opus pre-skip) and end padding are gone: exactly 2.5 s, in time.
    assert out.dtype == np.float32 and out.ndim == 1 and out.flags["C_CONTIGUOUS"]
    assert len(out) == 2.5 * SAMPLE_RATE
    assert audio_duration(path) == 2.5
    ref = reference_16k(wave, sr)
    assert alignment_lag(out, ref) == 0
    inner = slice(SAMPLE_RATE // 10, len(ref) - SAMPLE_RATE // 10)
    assert np.corrcoef(out[inner], ref[inner])[0, 1] > 0.95


def test_raw_aac_keeps_the_priming_it_cannot_record(tmp_path: Path) -> None:
    # ADTS has no field for the encoder delay: the decoded audio starts with FFmpeg's 1024 priming samples
    # and ends on a whole AAC frame (1024 samples), as README says.
    sr = 44_100
    wave = sweep(2.5, sr)
    path = write_pyav(tmp_path / "clip.aac", wave, sr)
    out = decode_audio(path)
    frames = -(-(len(wave) + 1024) // 1024)
    assert len(out) == round(frames * 1024 * SAMPLE_RATE / sr)
    assert alignment_lag(out, reference_16k(wave, sr)) == round(1024 * SAMPLE_RATE / sr)


def test_wma_decodes(tmp_path: Path) -> None:
    sr = 44_100
    wave = sweep(2.5, sr)
    out = decode_audio(write_pyav(tmp_path / "clip.wma", wave, sr))
    assert abs(len(out) - 2.5 * SAMPLE_RATE) <= 2048 * SAMPLE_RATE / sr  # within one WMA frame
    assert 0.1 < float(np.sqrt(np.mean(out**2))) < 0.3


def test_spans_and_windows_match_the_whole_decode(tmp_path: Path) -> None:
    sr = 44_100
    path = write_pyav(tmp_path / "talk.m4a", sweep(40.0, sr, amplitude=0.2), sr)
    full = decode_audio(path)
    assert len(full) == 40 * SAMPLE_RATE
    segments = list(iter_segments(path))
    assert [Window(s.start_s, s.end_s) for s in segments] == plan_windows(40.0)
    for seg in segments:
        i0 = round(seg.start_s * SAMPLE_RATE)
        np.testing.assert_array_equal(seg.samples, full[i0 : i0 + len(seg.samples)])
    for start, end in [(0.0, 1.0), (12.5, 20.0), (37.3, None)]:
        span = decode_audio(path, start_s=start, end_s=end)
        i0 = round(start * SAMPLE_RATE)
        i1 = len(full) if end is None else round(end * SAMPLE_RATE)
        assert len(span) == i1 - i0
        assert np.abs(span - full[i0:i1]).max() < 1e-4, (start, end)


@pytest.mark.parametrize("name", ["clip.m4a", "clip.wav"])
def test_audio_in_memory_decodes_like_the_file(tmp_path: Path, name: str) -> None:
    sr = 44_100
    wave = sweep(3.0, sr)
    path = tmp_path / name
    write_pyav(path, wave, sr) if path.suffix == ".m4a" else write_audio(path, wave, sr)
    held = AudioBytes(name="row 7 of train", data=path.read_bytes())  # no extension: content decides
    np.testing.assert_array_equal(decode_audio(held), decode_audio(path))
    assert audio_duration(held) == pytest.approx(3.0, abs=1e-4)
    assert [s.end_s for s in iter_segments(held)] == [pytest.approx(3.0, abs=1e-4)]
    with pytest.raises(AudioDecodeError, match=r"'empty row': file is empty"):
        decode_audio(AudioBytes(name="empty row", data=b""))


def test_what_pyav_cannot_decode_is_named(tmp_path: Path) -> None:
    bad = tmp_path / "clip.m4a"
    bad.write_bytes(b"\x00\x00\x00\x18ftypM4A " + np.random.default_rng(4).bytes(2048))
    with pytest.raises(AudioDecodeError, match=r"PyAV could not decode it \(Invalid data"):
        decode_audio(bad)
    garbage = tmp_path / "garbage.flac"
    garbage.write_bytes(np.random.default_rng(3).bytes(4096))
    with pytest.raises(AudioDecodeError, match=r"not a recognised audio format \(libsndfile: .*; PyAV: "):
        decode_audio(garbage)


def test_without_pyav_or_ffmpeg_the_error_names_both(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_pyav(tmp_path / "podcast.m4a", sweep(1.0, 44_100), 44_100)
    assert pyav_available()
    monkeypatch.setitem(sys.modules, "av", None)  # `import av` now fails, as where it is not installed
    assert not pyav_available()
    with pytest.raises(AudioDecodeError) as err:
        decode_audio(path)
    message = str(err.value)
    assert "podcast.m4a" in message
    assert "'.m4a' files need PyAV or ffmpeg, and neither is installed" in message
    assert "pip install av" in message
    # libsndfile formats do not need either.
    wav = write_audio(tmp_path / "a.wav", sweep(1.0, 16_000), 16_000)
    assert len(decode_audio(wav)) == SAMPLE_RATE
