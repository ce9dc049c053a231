"""Decode an audio file (whole or a span) to 16 kHz mono float32, validate waveforms, read durations."""

from __future__ import annotations

import math
import shutil
import subprocess
from pathlib import Path

import numpy as np

from vela_search.audio.decoders import AudioBytes, decode_error
from vela_search.audio.sources import SAMPLE_RATE, FfmpegSource, SoundFileSource, open_source, resampled

__all__ = ["audio_duration", "decode_audio", "load_waveform", "validate_waveform"]

# Extra 16 kHz samples decoded on each side of a requested span so that the resampler's filter has settled
# by the span's edges (50 ms already gives ~1e-7 agreement with a whole-file resample; 100 ms is a margin).
_SPAN_PAD = SAMPLE_RATE // 10


def validate_waveform(wave: np.ndarray, source: str) -> np.ndarray:
    """Check a decoded 16 kHz mono waveform.

    Args:
        wave: 1-D array of float samples.
        source: what the samples came from (a path or a label), used in error messages.

    Returns:
        The samples as a contiguous float32 array.

    Raises:
        AudioDecodeError: if the array is not 1-D float, is empty, or holds NaN or infinite samples.
    """
    arr = np.asarray(wave)
    if arr.ndim != 1:
        raise decode_error(source, f"expected a 1-D mono waveform, got an array of shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.floating):
        raise decode_error(source, f"expected float samples, got dtype {arr.dtype}")
    if arr.size == 0:
        raise decode_error(source, "contains no audio samples")
    finite = np.isfinite(arr)
    if not finite.all():
        bad = int(arr.size - np.count_nonzero(finite))
        if bad == arr.size:
            raise decode_error(source, "contains NaN or infinite samples (all of them)")
        raise decode_error(source, f"contains NaN or infinite samples ({bad} of {arr.size})")
    return np.ascontiguousarray(arr, dtype=np.float32)


def _span_indices(start_s: float | None, end_s: float | None) -> tuple[int, int | None]:
    start = 0.0 if start_s is None else float(start_s)
    if not math.isfinite(start) or start < 0:
        raise ValueError(f"start_s must be a finite number >= 0, got {start_s!r}")
    if end_s is None:
        return round(start * SAMPLE_RATE), None
    end = float(end_s)
    if not math.isfinite(end) or end <= start:
        raise ValueError(f"end_s must be a finite number > start_s ({start}), got {end_s!r}")
    return round(start * SAMPLE_RATE), round(end * SAMPLE_RATE)


def decode_audio(
    path: str | Path | AudioBytes, *, start_s: float | None = None, end_s: float | None = None
) -> np.ndarray:
    """Decode an audio file (or `AudioBytes` held in memory) to 16 kHz mono float32.

    Channels are averaged and the signal is resampled with soxr. With a span, only that part is decoded
    (plus a short margin so the resampler matches a whole-file decode); a span reaching past the end is cut
    at the end of the file.

    Args:
        path: the audio file.
        start_s: start of the span in seconds (default: the beginning).
        end_s: end of the span in seconds (default: the end of the file).

    Returns:
        A contiguous float32 array of samples at 16 kHz.

    Raises:
        AudioDecodeError: the file is missing, empty, unreadable, truncated, not audio, needs PyAV or ffmpeg
            and neither is installed, decodes to no samples, or holds NaN/inf samples.
        ValueError: the span is invalid (negative start, end not after start).
    """
    i0, i1 = _span_indices(start_s, end_s)
    with open_source(path) as src:
        sr = src.samplerate
        # The chunk must start on an instant that falls exactly on both sample grids, so that its first
        # resampled sample is sample m0 of a whole-file decode.
        g = math.gcd(sr, SAMPLE_RATE)
        q, g_native = SAMPLE_RATE // g, sr // g
        m0 = max(0, i0 - _SPAN_PAD) // q * q
        native_start = m0 // q * g_native
        native_stop = None
        if i1 is not None:
            native_stop = -(-(i1 + _SPAN_PAD) // q) * g_native
            if src.declared_frames is not None and native_stop >= src.declared_frames:
                native_stop = None  # read to the end so the file-end handling matches a whole-file decode
        pieces = list(resampled(src.blocks(native_start, native_stop), sr))
        declared = src.declared_frames
    if not pieces:
        wave = np.zeros(0, dtype=np.float32)
    else:
        wave = np.concatenate(pieces) if len(pieces) > 1 else pieces[0]
    lo = i0 - m0
    hi = len(wave) if i1 is None else min(len(wave), i1 - m0)
    if lo >= hi:
        if start_s is None or i0 == 0:
            raise decode_error(path, "contains no audio samples")
        span = f"{i0 / SAMPLE_RATE:.3f}-{'end' if i1 is None else f'{i1 / SAMPLE_RATE:.3f}'} s"
        length = "" if declared is None else f" (the audio is {declared / sr:.3f} s long)"
        raise decode_error(path, f"no audio in the span {span}{length}")
    return validate_waveform(wave[lo:hi] if (lo, hi) != (0, len(wave)) else wave, str(path))


def load_waveform(source: str | Path | np.ndarray) -> np.ndarray:
    """A 16 kHz mono float32 waveform from a file path or from an array already at 16 kHz mono.

    Raises:
        AudioDecodeError: as `decode_audio` for paths, as `validate_waveform` for arrays.
    """
    if isinstance(source, np.ndarray):
        return validate_waveform(source, "<waveform array>")
    return decode_audio(source)


def audio_duration(path: str | Path | AudioBytes) -> float:
    """Duration of an audio file in seconds, read from the header when the format allows it.

    Formats libsndfile cannot read are measured by decoding them (with ffprobe when only ffmpeg reads them).

    Raises:
        AudioDecodeError: the file cannot be decoded (same reasons as `decode_audio`).
    """
    with open_source(path) as src:
        if isinstance(src, SoundFileSource):
            return src.declared_frames / src.samplerate
        through_ffmpeg = isinstance(src, FfmpegSource)
    ffprobe = shutil.which("ffprobe") if through_ffmpeg else None
    if ffprobe is not None:
        try:
            out = subprocess.run(
                [
                    ffprobe,
                    "-v",
                    "error",
                    "-select_streams",
                    "a:0",
                    "-show_entries",
                    "format=duration",
                    "-of",
                    "default=noprint_wrappers=1:nokey=1",
                    str(path),
                ],
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )
            duration = float(out.stdout.strip().splitlines()[0])
            if duration > 0 and math.isfinite(duration):
                return duration
        except (ValueError, IndexError, OSError, subprocess.SubprocessError):
            pass  # fall back to counting decoded samples
    with open_source(path) as src:
        frames = sum(len(b) for b in src.blocks())
    if frames == 0:
        raise decode_error(path, "contains no audio samples")
    return frames / src.samplerate
