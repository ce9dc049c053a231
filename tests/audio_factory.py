"""Generated audio for tests: tones, noise, files in every format soundfile writes, broken files, fake ffmpeg.

Import from tests as ``from audio_factory import tone, write_audio, ...`` (pytest puts ``tests/`` on
``sys.path`` because the folder is not a package).
Everything here is deterministic and needs only numpy and soundfile.
"""

from __future__ import annotations

import os
import stat
import struct
import sys
import textwrap
from pathlib import Path

import numpy as np
import soundfile as sf

# Extension -> (libsndfile container, subtype) for the formats soundfile can write on these machines.
FORMATS: dict[str, tuple[str, str]] = {
    "wav": ("WAV", "PCM_16"),
    "flac": ("FLAC", "PCM_16"),
    "ogg": ("OGG", "VORBIS"),
    "oga": ("OGG", "VORBIS"),
    "opus": ("OGG", "OPUS"),
    "mp3": ("MP3", "MPEG_LAYER_III"),
    "aiff": ("AIFF", "PCM_16"),
    "aif": ("AIFF", "PCM_16"),
}

# Formats that decode_audio reads without ffmpeg, one per codec.
SOUNDFILE_FORMATS: tuple[str, ...] = ("wav", "flac", "ogg", "opus", "mp3", "aiff")

OPUS_RATES = frozenset({8000, 12000, 16000, 24000, 48000})

# Frames per write call: one-call writes of long OGG/Opus files crash libsndfile.
_WRITE_CHUNK = 16_384


def tone(
    seconds: float, sr: int = 16000, freq: float = 440.0, channels: int = 1, amplitude: float = 0.5
) -> np.ndarray:
    """A sine tone, float32, shape (n,) for mono or (n, channels); channel c is at freq * (1 + c / 2)."""
    t = np.arange(round(seconds * sr), dtype=np.float64) / sr
    cols = [amplitude * np.sin(2 * np.pi * freq * (1 + c / 2) * t) for c in range(channels)]
    wave = np.stack(cols, axis=1).astype(np.float32)
    return wave[:, 0].copy() if channels == 1 else wave


def noise(
    seconds: float, sr: int = 16000, seed: int = 0, amplitude: float = 0.1, channels: int = 1
) -> np.ndarray:
    """Gaussian noise, float32, clipped to [-1, 1], shape (n,) or (n, channels)."""
    rng = np.random.default_rng(seed)
    n = round(seconds * sr)
    wave = np.clip(rng.standard_normal((n, channels)) * amplitude, -1, 1).astype(np.float32)
    return wave[:, 0].copy() if channels == 1 else wave


def _format_of(path: Path, fmt: str | None, subtype: str | None) -> tuple[str, str]:
    ext = (fmt or path.suffix.lstrip(".")).lower()
    if ext not in FORMATS:
        raise ValueError(f"cannot write '{ext}' with soundfile (known: {sorted(FORMATS)})")
    container, default_subtype = FORMATS[ext]
    return container, subtype or default_subtype


def write_audio(
    path: str | Path, wave: np.ndarray, sr: int, fmt: str | None = None, subtype: str | None = None
) -> Path:
    """Write samples (shape (n,) or (n, channels)) as wav/flac/ogg/opus/mp3/aiff, in chunks.

    Args:
        path: destination; its extension picks the format unless ``fmt`` is given.
        wave: float samples in [-1, 1].
        sr: sample rate (Opus only accepts 8, 12, 16, 24 or 48 kHz).
        fmt: format key of `FORMATS` (default: from the extension).
        subtype: libsndfile subtype, e.g. "FLOAT" for a float WAV (default: per format).
    """
    path = Path(path)
    container, sub = _format_of(path, fmt, subtype)
    if sub == "OPUS" and sr not in OPUS_RATES:
        raise ValueError(f"Opus cannot be written at {sr} Hz (use one of {sorted(OPUS_RATES)})")
    wave = np.asarray(wave, dtype=np.float32)
    channels = 1 if wave.ndim == 1 else wave.shape[1]
    with sf.SoundFile(path, "w", samplerate=sr, channels=channels, format=container, subtype=sub) as f:
        for i in range(0, len(wave), _WRITE_CHUNK):
            f.write(wave[i : i + _WRITE_CHUNK])
    return path


def write_long_tone(
    path: str | Path,
    seconds: float,
    sr: int = 8000,
    freq: float = 440.0,
    amplitude: float = 0.05,
    fmt: str | None = None,
    ramp: bool = True,
    chunk_s: float = 60.0,
) -> Path:
    """Write a long mono tone without holding it in memory (low amplitude so FLAC compresses it well).

    With ``ramp`` the amplitude rises linearly from ``amplitude / 2`` to ``amplitude`` over the file, so a
    window's level tells where in the file it came from.
    """
    path = Path(path)
    container, sub = _format_of(path, fmt, None)
    total = round(seconds * sr)
    step = round(chunk_s * sr)
    with sf.SoundFile(path, "w", samplerate=sr, channels=1, format=container, subtype=sub) as f:
        for i0 in range(0, total, step):
            idx = np.arange(i0, min(total, i0 + step), dtype=np.float64)
            gain = amplitude * (0.5 + 0.5 * idx / total) if ramp else amplitude
            chunk = (gain * np.sin(2 * np.pi * freq * idx / sr)).astype(np.float32)
            for j in range(0, len(chunk), _WRITE_CHUNK):
                f.write(chunk[j : j + _WRITE_CHUNK])
    return path


# Kind -> a fragment of the AudioDecodeError message decode_audio gives for it.
BROKEN_FILE_ERRORS: dict[str, str] = {
    "zero_byte": "empty (0 bytes)",
    "truncated": "truncated",
    "truncated_flac": "truncated",
    "truncated_ogg": "truncated",
    "not_audio": "not an audio file (it contains text)",
    "garbage": "not a recognised audio format",
    "bad_header": "corrupt or truncated header",
    "no_samples": "contains no audio samples",
    "nan": "NaN or infinite",
    "inf": "NaN or infinite",
    # "PyAV could not decode it" with PyAV installed, "need PyAV or ffmpeg" without either
    "needs_ffmpeg": "PyAV",
}


def write_broken_files(directory: str | Path) -> dict[str, Path]:
    """Write one broken file per kind of `BROKEN_FILE_ERRORS` into ``directory``; returns kind -> path."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    out: dict[str, Path] = {}

    out["zero_byte"] = d / "zero_byte.wav"
    out["zero_byte"].write_bytes(b"")

    whole = write_audio(d / "_whole.wav", tone(2.0, 16000), 16000)
    data = whole.read_bytes()
    whole.unlink()
    out["truncated"] = d / "truncated.wav"
    out["truncated"].write_bytes(data[: 44 + (len(data) - 44) // 2])  # header intact, half the samples

    whole = write_audio(d / "_whole.flac", noise(3.0, 16000, seed=1), 16000)
    data = whole.read_bytes()
    whole.unlink()
    out["truncated_flac"] = d / "truncated.flac"
    out["truncated_flac"].write_bytes(data[: len(data) // 2])

    whole = write_audio(d / "_whole.ogg", noise(3.0, 16000, seed=2), 16000)
    data = whole.read_bytes()
    whole.unlink()
    out["truncated_ogg"] = d / "truncated.ogg"
    out["truncated_ogg"].write_bytes(data[: len(data) // 2])

    out["not_audio"] = d / "notes.wav"
    out["not_audio"].write_text("These are meeting notes, not audio.\n" * 20, encoding="utf-8")

    out["garbage"] = d / "garbage.flac"
    out["garbage"].write_bytes(np.random.default_rng(3).bytes(4096))

    out["bad_header"] = d / "bad_header.wav"
    out["bad_header"].write_bytes(b"RIFF" + struct.pack("<I", 36) + b"WAVEfmt " + struct.pack("<I", 16))

    out["no_samples"] = d / "no_samples.wav"
    sf.write(out["no_samples"], np.zeros((0, 1), dtype=np.float32), 16000)

    out["nan"] = write_audio(d / "nan.wav", np.full(16000, np.nan, dtype=np.float32), 16000, subtype="FLOAT")

    wave = tone(1.0, 16000)
    wave[8000:8010] = np.inf
    out["inf"] = write_audio(d / "inf.wav", wave, 16000, subtype="FLOAT")

    out["needs_ffmpeg"] = d / "clip.m4a"
    out["needs_ffmpeg"].write_bytes(b"\x00\x00\x00\x18ftypM4A " + np.random.default_rng(4).bytes(2048))
    return out


# ---------------------------------------------------------------------------------------------------------
# A stand-in for ffmpeg, to test the ffmpeg pipe where the real one is not installed.

FAKE_MAGIC = b"VELAFAKE"

_FAKE_FFMPEG = '''\
#!{python}
"""Minimal ffmpeg stand-in: decodes FAKE_MAGIC-prefixed soundfile data to a streamed float32 WAV."""
import io, struct, sys
import numpy as np, soundfile as sf, soxr

args = sys.argv[1:]
def opt(name, default=None):
    return args[args.index(name) + 1] if name in args else default

src = opt("-i")
data = open(src, "rb").read()
if not data.startswith({magic!r}):
    sys.stderr.write(src + ": Invalid data found when processing input\\n")
    sys.exit(1)
wave, sr = sf.read(io.BytesIO(data[{n}:]), dtype="float32", always_2d=True)
ss = float(opt("-ss", 0.0))
wave = wave[round(ss * sr):]
if opt("-t") is not None:
    wave = wave[: round(float(opt("-t")) * sr)]
rate = int(opt("-ar", sr))
if rate != sr:
    wave = np.stack([soxr.resample(wave[:, c], sr, rate) for c in range(wave.shape[1])], axis=1)
ch = wave.shape[1]
out = sys.stdout.buffer
# Sizes unknown on a pipe, as ffmpeg writes them; a LIST chunk before the data, as ffmpeg may add.
out.write(b"RIFF" + struct.pack("<I", 0xFFFFFFFF) + b"WAVE")
out.write(b"fmt " + struct.pack("<IHHIIHH", 16, 3, ch, rate, rate * 4 * ch, 4 * ch, 32))
out.write(b"LIST" + struct.pack("<I", 5) + b"INFOx" + b"\\0")
out.write(b"data" + struct.pack("<I", 0xFFFFFFFF))
out.write(np.ascontiguousarray(wave, dtype="<f4").tobytes())
'''


def install_fake_ffmpeg(bin_dir: str | Path) -> Path:
    """Write an executable ``ffmpeg`` into ``bin_dir`` that decodes files made by `write_fake_ffmpeg_file`.

    Put ``bin_dir`` first on ``PATH`` (``monkeypatch.setenv``) to route non-soundfile formats through it.
    """
    bin_dir = Path(bin_dir)
    bin_dir.mkdir(parents=True, exist_ok=True)
    exe = bin_dir / "ffmpeg"
    script = _FAKE_FFMPEG.format(python=sys.executable, magic=FAKE_MAGIC, n=len(FAKE_MAGIC))
    exe.write_text(textwrap.dedent(script), encoding="utf-8")
    exe.chmod(exe.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return exe


def write_fake_ffmpeg_file(path: str | Path, wave: np.ndarray, sr: int) -> Path:
    """A file (e.g. ``x.m4a``) that libsndfile rejects but the fake ffmpeg decodes to ``wave``."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp.flac")
    write_audio(tmp, wave, sr, fmt="flac", subtype="PCM_24")
    path.write_bytes(FAKE_MAGIC + tmp.read_bytes())
    os.unlink(tmp)
    return path


# ---------------------------------------------------------------------------------------------------------
# Formats libsndfile cannot write (or read), encoded with PyAV (FFmpeg's libraries inside the `av` wheels).

# Extension -> (encoder, container format or None for the extension's default, sample rate).
PYAV_FORMATS: dict[str, tuple[str, str | None, int]] = {
    "m4a": ("aac", None, 44_100),
    "aac": ("aac", "adts", 44_100),
    "webm": ("libopus", None, 48_000),
    "wma": ("wmav2", None, 44_100),
}


def write_pyav(path: str | Path, wave: np.ndarray, sr: int, fmt: str | None = None) -> Path:
    """Encode samples (shape (n,) or (n, channels)) as m4a/aac/webm/wma with PyAV.

    Args:
        path: destination; its extension picks the encoder and container (`PYAV_FORMATS`) unless ``fmt``.
        wave: float samples in [-1, 1].
        sr: sample rate (webm/Opus: 48 kHz).
        fmt: key of `PYAV_FORMATS` (default: from the extension).
    """
    import av

    path = Path(path)
    codec, container_format, _ = PYAV_FORMATS[(fmt or path.suffix.lstrip(".")).lower()]
    wave = np.asarray(wave, dtype=np.float32)
    planar = wave[None, :] if wave.ndim == 1 else wave.T
    layout = {1: "mono", 2: "stereo"}[planar.shape[0]]
    with av.open(str(path), "w", format=container_format) as container:
        stream = container.add_stream(codec, rate=sr)
        stream.layout = layout
        if codec == "wmav2":
            stream.bit_rate = 128_000
        for i in range(0, planar.shape[1], _WRITE_CHUNK):
            # PyAV re-frames and converts the samples to what the encoder takes.
            frame = av.AudioFrame.from_ndarray(
                np.ascontiguousarray(planar[:, i : i + _WRITE_CHUNK]), format="fltp", layout=layout
            )
            frame.sample_rate, frame.pts = sr, i
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return path


def alignment_lag(decoded: np.ndarray, reference: np.ndarray, max_lag: int = 4000) -> int:
    """The shift (in samples) that best lines ``decoded`` up with ``reference``: decoded[i + lag] ~ ref[i]."""
    n = min(len(decoded), len(reference)) - 2 * max_lag
    ref = reference[max_lag : max_lag + n]
    lags = range(-max_lag, max_lag + 1)
    scores = [float(np.dot(ref, decoded[max_lag + k : max_lag + k + n])) for k in lags]
    return int(np.argmax(scores)) - max_lag
