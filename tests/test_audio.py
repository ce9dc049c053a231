"""Tests of vela_search.audio: decoding, broken input, windows, streaming segments and discovery."""

from __future__ import annotations

import builtins
import os
import re
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import soxr
from audio_factory import (
    BROKEN_FILE_ERRORS,
    SOUNDFILE_FORMATS,
    install_fake_ffmpeg,
    noise,
    tone,
    write_audio,
    write_broken_files,
    write_fake_ffmpeg_file,
    write_long_tone,
)

from vela_search.audio import (
    AUDIO_EXTENSIONS,
    SAMPLE_RATE,
    AudioSegment,
    Window,
    audio_duration,
    decode_audio,
    discover_audio_files,
    discovery,
    ffmpeg_available,
    iter_segments,
    load_waveform,
    plan_windows,
    validate_waveform,
)
from vela_search.errors import AudioDecodeError, VelaError

SAMPLES_DIR = Path(__file__).resolve().parent.parent / "data" / "samples"


def reference_16k(wave: np.ndarray, sr: int) -> np.ndarray:
    """What decoding should give for samples written at ``sr``: channel mean, soxr-resampled."""
    mono = wave if wave.ndim == 1 else wave.mean(axis=1)
    mono = mono.astype(np.float32)
    return mono if sr == SAMPLE_RATE else soxr.resample(mono, sr, SAMPLE_RATE)


@pytest.fixture
def no_ffmpeg(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Make ffmpeg invisible, whether or not the machine has it."""
    empty = tmp_path / "empty_bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))


@pytest.fixture
def fake_ffmpeg(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    exe = install_fake_ffmpeg(tmp_path / "fake_bin")
    monkeypatch.setenv("PATH", f"{exe.parent}{os.pathsep}{os.environ.get('PATH', '')}")
    return exe


# ---------------------------------------------------------------------------------------------------------
# constants


def test_constants() -> None:
    assert SAMPLE_RATE == 16_000
    expected = ".wav .flac .ogg .oga .opus .mp3 .m4a .aac .webm .wma .aif .aiff".split()
    assert set(expected) <= AUDIO_EXTENSIONS
    assert all(e.startswith(".") and e == e.lower() for e in AUDIO_EXTENSIONS)


# ---------------------------------------------------------------------------------------------------------
# decoding


@pytest.mark.parametrize("fmt", SOUNDFILE_FORMATS)
def test_every_format_decodes_to_16k_mono_float32(tmp_path: Path, fmt: str) -> None:
    sr = 48_000 if fmt == "opus" else 44_100
    wave = tone(2.5, sr=sr, freq=440, channels=2, amplitude=0.4)
    path = write_audio(tmp_path / f"clip.{fmt}", wave, sr)

    out = decode_audio(path)

    assert out.dtype == np.float32 and out.ndim == 1 and out.flags["C_CONTIGUOUS"]
    assert abs(len(out) - 2.5 * SAMPLE_RATE) <= 1, len(out)
    assert audio_duration(path) == pytest.approx(2.5, abs=1e-3)
    ref = reference_16k(wave, sr)
    n = min(len(ref), len(out))
    if fmt in ("wav", "flac", "aiff"):
        assert np.abs(out[:n] - ref[:n]).max() < 1e-3  # 16-bit quantisation only
    else:
        # Lossy codecs: same waveform, time-aligned (decoder delay handled), within codec noise.
        inner = slice(SAMPLE_RATE // 10, n - SAMPLE_RATE // 10)
        corr = np.corrcoef(out[inner], ref[inner])[0, 1]
        assert corr > 0.95, corr


def test_mp3_blockwise_decode_matches_one_shot_read(tmp_path: Path) -> None:
    # soundfile's own block reads re-seek between calls, which corrupts libsndfile's MP3 decoding after each
    # block boundary (0.24 max error on this file); the streamed decode must equal a one-call read.
    path = write_audio(tmp_path / "tone.mp3", tone(20.0, sr=44_100, amplitude=0.2), 44_100)
    one_call, sr = sf.read(str(path), dtype="float32")
    np.testing.assert_allclose(decode_audio(path), reference_16k(one_call, sr), atol=1e-5)


def test_eight_channel_48k(tmp_path: Path) -> None:
    wave = np.stack([tone(3.0, sr=48_000, freq=100 * (c + 1), amplitude=0.1)[:] for c in range(8)], axis=1)
    path = write_audio(tmp_path / "surround.wav", wave, 48_000, subtype="FLOAT")
    assert sf.info(str(path)).channels == 8

    out = decode_audio(path)

    assert out.dtype == np.float32 and out.ndim == 1 and len(out) == 3 * SAMPLE_RATE
    np.testing.assert_allclose(out, reference_16k(wave, 48_000), atol=1e-5)


def test_mono_16k_is_read_unchanged(tmp_path: Path) -> None:
    wave = noise(1.0, sr=SAMPLE_RATE, seed=7)
    path = write_audio(tmp_path / "n.wav", wave, SAMPLE_RATE, subtype="FLOAT")
    np.testing.assert_array_equal(decode_audio(path), wave)


def test_non_ascii_file_names(tmp_path: Path) -> None:
    folder = tmp_path / "Grabación ñandú"
    folder.mkdir()
    names = ["鳥の声 🐦.flac", "Straßenlärm – Zürich.ogg", "пёс.wav"]
    for name in names:
        write_audio(folder / name, tone(1.5, sr=22_050), 22_050)

    found = discover_audio_files([folder]).files
    assert sorted(p.name for p in found) == sorted(names)
    for path in found:
        assert abs(len(decode_audio(path)) - 1.5 * SAMPLE_RATE) <= 1
        assert audio_duration(path) == pytest.approx(1.5, abs=1e-3)
        assert [s.end_s for s in iter_segments(path)] == [pytest.approx(1.5, abs=1e-3)]


def test_shipped_samples_decode() -> None:
    clips = discover_audio_files([SAMPLES_DIR]).files
    assert 4 <= len(clips) <= 6
    assert {p.suffix for p in clips} >= {".wav", ".flac", ".ogg"}
    assert sum(p.stat().st_size for p in SAMPLES_DIR.iterdir()) < 1_000_000
    for path in clips:
        wave = decode_audio(path)
        assert 2.0 <= len(wave) / SAMPLE_RATE <= 5.0
        assert 0.01 < float(np.sqrt(np.mean(wave**2))) < 0.5  # audible, not clipped


# ---------------------------------------------------------------------------------------------------------
# broken input


@pytest.fixture(scope="module")
def broken(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return write_broken_files(tmp_path_factory.mktemp("broken"))


@pytest.mark.parametrize("kind", sorted(BROKEN_FILE_ERRORS))
def test_broken_files_raise_specific_errors(broken: dict[str, Path], kind: str, no_ffmpeg: None) -> None:
    path = broken[kind]
    with pytest.raises(AudioDecodeError) as err:
        decode_audio(path)
    message = str(err.value)
    assert BROKEN_FILE_ERRORS[kind] in message
    assert path.name in message
    assert isinstance(err.value, VelaError)
    # The streaming path reports the same problem.
    with pytest.raises(AudioDecodeError, match="cannot decode audio file"):
        list(iter_segments(path))


def test_broken_file_messages(broken: dict[str, Path], no_ffmpeg: None) -> None:
    def message(kind: str) -> str:
        with pytest.raises(AudioDecodeError) as err:
            decode_audio(broken[kind])
        return str(err.value)

    assert "declares 64000 bytes of audio data but only 32000 are present" in message("truncated")
    assert "flac decoder lost sync" in message("truncated_flac")
    assert "first at 0.500 s" in message("inf")
    assert "need ffmpeg, which is not installed" in message("needs_ffmpeg")


@pytest.mark.parametrize(
    "kind", ["zero_byte", "truncated", "truncated_ogg", "not_audio", "garbage", "no_samples"]
)
def test_audio_duration_rejects_broken_headers(broken: dict[str, Path], kind: str, no_ffmpeg: None) -> None:
    with pytest.raises(AudioDecodeError, match=re.escape(BROKEN_FILE_ERRORS[kind])):
        audio_duration(broken[kind])


def test_missing_file_and_directory(tmp_path: Path) -> None:
    with pytest.raises(AudioDecodeError, match="does not exist"):
        decode_audio(tmp_path / "nope.wav")
    with pytest.raises(AudioDecodeError, match="is a directory"):
        decode_audio(tmp_path)


def test_unreadable_file_is_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_audio(tmp_path / "locked.wav", tone(0.5), SAMPLE_RATE)
    real_open = builtins.open

    def guarded_open(file, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003
        if Path(file) == path:
            raise PermissionError(13, "Permission denied", str(file))
        return real_open(file, *args, **kwargs)

    # Tests run as root, for whom chmod does not block reads: simulate the EACCES instead.
    monkeypatch.setattr(builtins, "open", guarded_open)
    with pytest.raises(AudioDecodeError, match="permission denied"):
        decode_audio(path)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files regardless of permissions")
def test_unreadable_file_real_permissions(tmp_path: Path) -> None:
    path = write_audio(tmp_path / "locked.wav", tone(0.5), SAMPLE_RATE)
    path.chmod(0)
    try:
        with pytest.raises(AudioDecodeError, match="permission denied"):
            decode_audio(path)
    finally:
        path.chmod(0o644)


def test_validate_waveform() -> None:
    wave = np.linspace(-0.5, 0.5, 1000)[::2]  # float64, not contiguous
    out = validate_waveform(wave, "x")
    assert out.dtype == np.float32 and out.flags["C_CONTIGUOUS"]
    np.testing.assert_allclose(out, wave, rtol=1e-6)

    with pytest.raises(AudioDecodeError, match="no audio samples"):
        validate_waveform(np.zeros(0, np.float32), "empty-array")
    with pytest.raises(AudioDecodeError, match=r"NaN or infinite samples \(all of them\)"):
        validate_waveform(np.full(100, np.nan, np.float32), "nan-array")
    partial = np.zeros(100, np.float32)
    partial[3] = np.inf
    with pytest.raises(AudioDecodeError, match=r"1 of 100"):
        validate_waveform(partial, "inf-array")
    with pytest.raises(AudioDecodeError, match="1-D mono"):
        validate_waveform(np.zeros((100, 2), np.float32), "stereo-array")
    with pytest.raises(AudioDecodeError, match="float samples"):
        validate_waveform(np.zeros(100, np.int16), "int-array")


def test_load_waveform(tmp_path: Path) -> None:
    wave = noise(0.5, seed=1)
    np.testing.assert_array_equal(load_waveform(wave), wave)
    path = write_audio(tmp_path / "w.wav", wave, SAMPLE_RATE, subtype="FLOAT")
    np.testing.assert_array_equal(load_waveform(path), wave)
    np.testing.assert_array_equal(load_waveform(str(path)), wave)
    with pytest.raises(AudioDecodeError):
        load_waveform(np.array([np.nan], np.float32))


# ---------------------------------------------------------------------------------------------------------
# spans


@pytest.mark.parametrize(("sr", "fmt"), [(44_100, "wav"), (48_000, "flac"), (22_050, "ogg"), (44_100, "mp3")])
def test_span_matches_whole_file_decode(tmp_path: Path, sr: int, fmt: str) -> None:
    wave = noise(6.0, sr=sr, seed=2, channels=2)
    path = write_audio(tmp_path / f"s.{fmt}", wave, sr)
    full = decode_audio(path)
    for start, end in [(0.0, 1.0), (1.23456, 3.5), (2.0, 6.0), (4.5, None)]:
        span = decode_audio(path, start_s=start, end_s=end)
        i0 = round(start * SAMPLE_RATE)
        i1 = len(full) if end is None else round(end * SAMPLE_RATE)
        assert len(span) == i1 - i0
        assert np.abs(span - full[i0:i1]).max() < 1e-4, (start, end)


def test_span_arguments(tmp_path: Path) -> None:
    path = write_audio(tmp_path / "a.wav", tone(2.0), SAMPLE_RATE)
    assert len(decode_audio(path, start_s=1.5, end_s=9.0)) == SAMPLE_RATE // 2  # cut at the end of the file
    with pytest.raises(AudioDecodeError, match="no audio in the span"):
        decode_audio(path, start_s=3.0, end_s=4.0)
    with pytest.raises(ValueError, match="start_s"):
        decode_audio(path, start_s=-1.0)
    with pytest.raises(ValueError, match="end_s"):
        decode_audio(path, start_s=1.0, end_s=1.0)


# ---------------------------------------------------------------------------------------------------------
# windows


def test_plan_windows_twenty_minutes() -> None:
    windows = plan_windows(20 * 60.0)
    assert len(windows) == 239
    assert windows[0] == Window(0.0, 10.0)
    assert windows[1] == Window(5.0, 15.0)
    assert windows[-1] == Window(1190.0, 1200.0)
    assert [w.start_s for w in windows] == [5.0 * k for k in range(239)]
    assert all(w.end_s - w.start_s == 10.0 for w in windows)


def test_plan_windows_edges() -> None:
    assert plan_windows(12.0) == [Window(0.0, 12.0)]
    assert plan_windows(30.0) == [Window(0.0, 30.0)]
    assert plan_windows(0.5) == [Window(0.0, 0.5)]
    # Just over the single-window limit: regular windows, then a tail window ending at the end.
    windows = plan_windows(30.5)
    assert [w.start_s for w in windows] == [0.0, 5.0, 10.0, 15.0, 20.0, 20.5]
    assert windows[-1] == Window(20.5, 30.5)
    # Tail already covered: no extra window.
    assert plan_windows(35.0)[-1] == Window(25.0, 35.0) and len(plan_windows(35.0)) == 6
    # Hop equal to the window, tail uncovered.
    assert plan_windows(35.0, window_s=10, hop_s=10) == [
        Window(0, 10),
        Window(10, 20),
        Window(20, 30),
        Window(25.0, 35.0),
    ]
    # Custom single-window limit.
    assert plan_windows(25.0, window_s=10, hop_s=5, single_max_s=20)[-1] == Window(15.0, 25.0)
    assert plan_windows(1203.3)[-1] == Window(1203.3 - 10.0, 1203.3)
    assert len(plan_windows(1203.3)) == 240


@pytest.mark.parametrize(
    "kwargs",
    [
        {"window_s": 0},
        {"window_s": -1},
        {"hop_s": 0},
        {"hop_s": -5},
        {"window_s": 40, "single_max_s": 30},
        {"window_s": float("nan")},
    ],
)
def test_plan_windows_rejects_bad_arguments(kwargs: dict[str, float], tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        plan_windows(100.0, **kwargs)
    with pytest.raises(ValueError):
        next(iter_segments(tmp_path / "never-opened.wav", **kwargs))


def test_plan_windows_rejects_bad_duration() -> None:
    with pytest.raises(ValueError):
        plan_windows(-1.0)
    with pytest.raises(ValueError):
        plan_windows(float("nan"))


def test_window_is_frozen() -> None:
    w = Window(1.0, 2.0)
    with pytest.raises(AttributeError):
        w.start_s = 3.0  # type: ignore[misc]
    assert AudioSegment(0.0, 1.0, np.zeros(16000, np.float32)).duration_s == 1.0


# ---------------------------------------------------------------------------------------------------------
# streaming segments

LONG_S = 20 * 60.0


@pytest.fixture(scope="module")
def long_flac(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_long_tone(tmp_path_factory.mktemp("long") / "twenty_minutes.flac", LONG_S, sr=8000)


def test_iter_segments_long_file(long_flac: Path) -> None:
    full = decode_audio(long_flac)
    assert len(full) == LONG_S * SAMPLE_RATE
    segments = list(iter_segments(long_flac))

    assert [Window(s.start_s, s.end_s) for s in segments] == plan_windows(LONG_S)
    assert len(segments) == 239
    levels = []
    for seg in segments:
        assert seg.samples.dtype == np.float32 and seg.samples.shape == (10 * SAMPLE_RATE,)
        i0 = round(seg.start_s * SAMPLE_RATE)
        # The streamed resampling is the whole-file resampling, sample for sample.
        np.testing.assert_array_equal(seg.samples, full[i0 : i0 + len(seg.samples)])
        levels.append(float(np.sqrt(np.mean(seg.samples**2))))
    # The tone's level ramps up over the file, so the windows came out in time order from the right place.
    assert all(b > a for a, b in zip(levels, levels[1:]))
    for seg in (segments[0], segments[117], segments[-1]):
        span = decode_audio(long_flac, start_s=seg.start_s, end_s=seg.end_s)
        assert np.abs(span - seg.samples).max() < 1e-5


def test_iter_segments_memory_is_bounded(long_flac: Path) -> None:
    decoded_bytes = LONG_S * SAMPLE_RATE * 4  # 76.8 MB if decoded in one piece
    tracemalloc.start()
    try:
        count = 0
        for seg in iter_segments(long_flac):
            count += 1
            del seg
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert count == 239
    assert peak < decoded_bytes / 8, f"peak {peak / 1e6:.1f} MB"


def test_iter_segments_tail_window_matches_spans(tmp_path: Path) -> None:
    sr = 44_100
    wave = noise(61.3, sr=sr, seed=5, channels=2, amplitude=0.2)
    path = write_audio(tmp_path / "tail.ogg", wave, sr)
    segments = list(iter_segments(path, window_s=10.0, hop_s=5.0))
    duration = len(decode_audio(path)) / SAMPLE_RATE
    assert duration == pytest.approx(61.3, abs=1e-4)
    assert [Window(s.start_s, s.end_s) for s in segments] == plan_windows(duration)
    assert segments[-1].start_s == pytest.approx(51.3, abs=1e-4)
    for seg in segments:
        span = decode_audio(path, start_s=seg.start_s, end_s=seg.end_s)
        assert len(span) == len(seg.samples)
        assert np.abs(span - seg.samples).max() < 1e-4


def test_iter_segments_mp3_uses_exact_positions(tmp_path: Path) -> None:
    # libsndfile's MP3 seek is approximate; spans must still line up with the streamed windows.
    sr = 22_050
    path = write_audio(tmp_path / "long.mp3", noise(40.0, sr=sr, seed=6, amplitude=0.2), sr)
    segments = list(iter_segments(path, window_s=8.0, hop_s=8.0))
    assert [s.start_s for s in segments] == [0.0, 8.0, 16.0, 24.0, 32.0]
    for seg in segments[1:4]:
        span = decode_audio(path, start_s=seg.start_s, end_s=seg.end_s)
        assert np.abs(span - seg.samples).max() < 1e-4


def test_iter_segments_short_file_is_one_segment(tmp_path: Path) -> None:
    path = write_audio(tmp_path / "short.flac", tone(30.0, sr=32_000, amplitude=0.1), 32_000)
    segments = list(iter_segments(path))
    assert len(segments) == 1
    assert (segments[0].start_s, segments[0].end_s) == (0.0, 30.0)
    np.testing.assert_array_equal(segments[0].samples, decode_audio(path))


def test_iter_segments_custom_windows(tmp_path: Path) -> None:
    path = write_audio(tmp_path / "mid.wav", noise(47.0, sr=SAMPLE_RATE, seed=8), SAMPLE_RATE)
    full = decode_audio(path)
    segments = list(iter_segments(path, window_s=20.0, hop_s=15.0, single_max_s=25.0))
    assert [(s.start_s, s.end_s) for s in segments] == [(0.0, 20.0), (15.0, 35.0), (27.0, 47.0)]
    for seg in segments:
        i0 = round(seg.start_s * SAMPLE_RATE)
        np.testing.assert_array_equal(seg.samples, full[i0 : i0 + 20 * SAMPLE_RATE])


def test_iter_segments_nan_midway_raises(tmp_path: Path) -> None:
    wave = tone(50.0, sr=SAMPLE_RATE, amplitude=0.1)
    wave[40 * SAMPLE_RATE] = np.nan
    path = write_audio(tmp_path / "bad.wav", wave, SAMPLE_RATE, subtype="FLOAT")
    seen = []
    with pytest.raises(AudioDecodeError, match=r"NaN or infinite samples \(first at 40.000 s\)"):
        for seg in iter_segments(path):
            seen.append(seg.start_s)
    assert seen and max(seen) < 40.0


# ---------------------------------------------------------------------------------------------------------
# ffmpeg fallback (a stand-in executable, since the real one may be missing)


def test_ffmpeg_available_follows_path(no_ffmpeg: None) -> None:
    assert ffmpeg_available() is False


def test_ffmpeg_pipe_decodes_and_streams(tmp_path: Path, fake_ffmpeg: Path) -> None:
    assert ffmpeg_available()
    sr = 44_100
    wave = noise(40.0, sr=sr, seed=9, channels=2, amplitude=0.2)
    path = write_fake_ffmpeg_file(tmp_path / "podcast.m4a", wave, sr)
    with pytest.raises(sf.LibsndfileError):
        sf.info(str(path))

    out = decode_audio(path)
    assert out.dtype == np.float32 and len(out) == 40 * SAMPLE_RATE
    assert np.abs(out - reference_16k(wave, sr)).max() < 1e-4
    assert audio_duration(path) == pytest.approx(40.0, abs=1e-3)

    segments = list(iter_segments(path))
    assert [Window(s.start_s, s.end_s) for s in segments] == plan_windows(40.0)
    for seg in segments:
        i0 = round(seg.start_s * SAMPLE_RATE)
        np.testing.assert_array_equal(seg.samples, out[i0 : i0 + len(seg.samples)])
    span = decode_audio(path, start_s=12.5, end_s=20.0)
    assert np.abs(span - out[200_000:320_000]).max() < 1e-4


def test_ffmpeg_failure_messages(tmp_path: Path, fake_ffmpeg: Path, broken: dict[str, Path]) -> None:
    with pytest.raises(AudioDecodeError, match=r"ffmpeg could not decode it \(.*Invalid data"):
        decode_audio(broken["needs_ffmpeg"])
    # Same classification as without ffmpeg, with ffmpeg's reason added.
    with pytest.raises(AudioDecodeError, match=r"not a recognised audio format \(libsndfile: .*; ffmpeg: "):
        decode_audio(broken["garbage"])
    with pytest.raises(AudioDecodeError, match="not an audio file"):
        decode_audio(broken["not_audio"])


# ---------------------------------------------------------------------------------------------------------
# discovery


def make_tree(root: Path) -> None:
    (root / "a" / "deep" / "deeper").mkdir(parents=True)
    (root / "b").mkdir()
    (root / ".cache").mkdir()
    for rel in [
        "a/one.wav",
        "a/deep/two.FLAC",
        "a/deep/deeper/three.Mp3",
        "b/four.ogg",
        "top.opus",
        ".cache/hidden_dir.wav",
        "a/.hidden.wav",
    ]:
        (root / rel).write_bytes(b"x")
    (root / "a" / "notes.txt").write_text("not audio")
    (root / "b" / "cover.jpg").write_bytes(b"x")


def test_discovery_nested_sorted_hidden_skipped(tmp_path: Path) -> None:
    make_tree(tmp_path)
    result = discover_audio_files([tmp_path])
    rel = [p.relative_to(tmp_path).as_posix() for p in result.files]
    assert rel == sorted(rel, key=lambda r: str(tmp_path / r))
    assert set(rel) == {"a/one.wav", "a/deep/two.FLAC", "a/deep/deeper/three.Mp3", "b/four.ogg", "top.opus"}
    assert result.problems == []
    assert all(p.is_absolute() for p in result.files)


def test_discovery_symlinks_and_loops(tmp_path: Path) -> None:
    make_tree(tmp_path)
    (tmp_path / "a" / "deep" / "loop").symlink_to(tmp_path / "a")  # back to an ancestor
    (tmp_path / "b" / "self").symlink_to(tmp_path / "b" / "self")  # a link to itself
    (tmp_path / "b" / "dangling.wav").symlink_to(tmp_path / "missing.wav")
    (tmp_path / "b" / "alias.wav").symlink_to(tmp_path / "a" / "one.wav")
    outside = tmp_path.parent / f"{tmp_path.name}_outside"
    outside.mkdir()
    (outside / "far.wav").write_bytes(b"x")
    (tmp_path / "b" / "linked_dir").symlink_to(outside)

    result = discover_audio_files([tmp_path])

    rel = {p.relative_to(tmp_path).as_posix() for p in result.files}
    assert "b/alias.wav" in rel and "b/linked_dir/far.wav" in rel
    assert not any("loop" in r for r in rel)
    problems = {p.relative_to(tmp_path).as_posix(): why for p, why in result.problems}
    assert "symbolic link loop" in problems["a/deep/loop"]
    assert "symbolic link loop" in problems["b/self"]
    assert problems["b/dangling.wav"] == "broken symbolic link"


def test_discovery_unreadable_directory_is_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make_tree(tmp_path)
    locked = tmp_path / "a" / "deep"
    real_scandir = os.scandir

    def scandir(path):  # noqa: ANN001, ANN202
        if Path(path) == locked:
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)

    # Root ignores directory permissions, so the EACCES is simulated.
    monkeypatch.setattr(discovery.os, "scandir", scandir)
    result = discover_audio_files([tmp_path])
    rel = {p.relative_to(tmp_path).as_posix() for p in result.files}
    assert rel == {"a/one.wav", "b/four.ogg", "top.opus"}
    assert result.problems == [(locked, "permission denied: the directory cannot be listed")]


@pytest.mark.skipif(os.geteuid() == 0, reason="root lists directories regardless of permissions")
def test_discovery_unreadable_directory_real_permissions(tmp_path: Path) -> None:
    make_tree(tmp_path)
    locked = tmp_path / "a"
    locked.chmod(0)
    try:
        result = discover_audio_files([tmp_path])
    finally:
        locked.chmod(0o755)
    assert (locked, "permission denied: the directory cannot be listed") in result.problems


def test_discovery_roots_files_missing_and_duplicates(tmp_path: Path) -> None:
    make_tree(tmp_path)
    single = tmp_path / "a" / "one.wav"
    result = discover_audio_files(
        [single, tmp_path / "b", str(tmp_path / "b"), tmp_path / "nope", tmp_path / "a" / "notes.txt"]
    )
    assert result.files == [single, tmp_path / "b" / "four.ogg"]
    problems = dict(result.problems)
    assert problems[tmp_path / "nope"] == "does not exist"
    assert "not a supported audio file extension" in problems[tmp_path / "a" / "notes.txt"]


def test_discovery_relative_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make_tree(tmp_path)
    monkeypatch.chdir(tmp_path)
    result = discover_audio_files(["b"])
    assert result.files == [tmp_path / "b" / "four.ogg"]


def test_a_file_name_that_is_not_utf8_is_reported_not_found(tmp_path):
    from vela_search.audio import discover_audio_files

    good = tmp_path / "good.wav"
    good.write_bytes(b"")
    bad = tmp_path / os.fsdecode(b"bad\xff.wav")
    bad.write_bytes(b"")
    found = discover_audio_files([tmp_path])
    assert found.files == [good]
    assert [(str(p), r.split(":")[0]) for p, r in found.problems] == [
        (str(tmp_path / "bad\\xff.wav"), "file name is not valid UTF-8")
    ]
    str(found.problems[0][0]).encode("utf-8")  # shown escaped: printable, storable
