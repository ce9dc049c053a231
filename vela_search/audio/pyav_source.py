"""Native-rate decoding through PyAV: FFmpeg's own libraries, shipped inside the ``av`` wheels.

This is the decoder for what libsndfile cannot read (m4a/mp4 AAC, raw ADTS AAC, webm, wma, ...), so no
``ffmpeg`` executable is needed. Frames are converted to float and averaged to mono here; resampling to
16 kHz is left to the same soxr stream as for libsndfile, so both decoders give the same samples.

Timing: samples are counted from the first decoded one. FFmpeg drops the encoder's priming where the
container records it (the edit list of mp4/m4a, Opus pre-skip in webm/ogg), and for mp4 the padding after
the end is cut here at the duration the container declares, so an m4a decodes to exactly the samples that
were encoded. A raw ADTS ``.aac`` stream has no field for the priming: its decoded audio keeps it (1024
samples for FFmpeg's encoder, 2112 for Apple's), so its timestamps run late by that much.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from vela_search.audio.decoders import AudioBytes, NativeSource, check_finite, decode_error

__all__ = ["pyav_available"]

# Containers whose declared stream duration excludes the encoder's end padding (the mp4 edit list).
_TRIM_TO_DURATION_FORMATS = ("mov", "mp4", "m4a")
# At most this many decoded samples beyond the declared duration are taken for padding and cut; more
# means the declaration is not about padding, and nothing is cut.
_MAX_END_PADDING = 4096


def _av() -> Any | None:
    try:
        import av
    except ImportError:
        return None
    return av


def pyav_available() -> bool:
    """Whether PyAV (the ``av`` package) can be imported, i.e. formats beyond libsndfile's decode."""
    return _av() is not None


def _mono(frame: Any) -> np.ndarray:
    """A decoded frame as mono float32 (channel mean); integer samples are scaled to [-1, 1)."""
    data = frame.to_ndarray()
    channels = len(frame.layout.channels)
    # Planar formats come as (channels, n), packed ones as (1, n * channels).
    data = data if frame.format.is_planar else data.reshape(-1, channels).T
    if np.issubdtype(data.dtype, np.integer):
        scale = float(2 ** (8 * data.dtype.itemsize - 1))
        data = data.astype(np.float32) / scale
    data = data.astype(np.float32, copy=False)
    return data[0].copy() if channels == 1 else data.mean(axis=0, dtype=np.float32)


class PyAVSource(NativeSource):
    """Decode the first audio stream of a container with PyAV."""

    def __init__(self, path: Path | str, container: Any, stream: Any) -> None:
        self.path = path  # type: ignore[assignment] - a label for in-memory audio
        self._container = container
        self._stream = stream
        self.samplerate = int(stream.codec_context.sample_rate or stream.rate)
        self.declared_frames = None
        self._end = self._declared_end(container, stream)

    def _declared_end(self, container: Any, stream: Any) -> int | None:
        if not any(name in container.format.name.split(",") for name in _TRIM_TO_DURATION_FORMATS):
            return None
        if stream.duration is None or stream.time_base is None:
            return None
        return round(Fraction(stream.duration) * stream.time_base * self.samplerate)

    def blocks(self, start: int = 0, stop: int | None = None) -> Iterator[np.ndarray]:
        # Decoded from the beginning and counted (one pass per open source): compressed formats seek to
        # packets, not samples, and counting makes a span equal the same samples of a whole-file decode.
        av = _av()
        assert av is not None
        sr = self.samplerate
        pos = 0
        pending: list[np.ndarray] = []
        try:
            for frame in self._container.decode(self._stream):
                mono = _mono(frame)
                pending.append(mono)
                if self._end is not None:
                    # Hold back what may be end padding until the stream ends.
                    held = sum(len(p) for p in pending)
                    if held <= _MAX_END_PADDING:
                        continue
                    mono = np.concatenate(pending)
                    keep = len(mono) - _MAX_END_PADDING
                    mono, pending = mono[:keep], [mono[keep:]]
                else:
                    pending = []
                yield from self._cut(mono, pos, start, stop)
                pos += len(mono)
                if stop is not None and pos >= stop:
                    return
        except av.error.FFmpegError as exc:
            raise decode_error(
                self.path,
                f"decoder error at {pos / sr:.2f} s ({exc.strerror or exc}); "
                "the file is probably truncated or corrupt",
            ) from None
        if pending:
            tail = np.concatenate(pending)
            total = pos + len(tail)
            if self._end is not None and 0 <= total - self._end <= _MAX_END_PADDING:
                tail = tail[: max(0, self._end - pos)]
            yield from self._cut(tail, pos, start, stop)

    def _cut(self, mono: np.ndarray, pos: int, start: int, stop: int | None) -> Iterator[np.ndarray]:
        lo = max(0, start - pos)
        hi = len(mono) if stop is None else min(len(mono), stop - pos)
        if hi > lo:
            piece = mono[lo:hi]
            check_finite(self.path, piece, pos + lo, self.samplerate)
            yield piece

    def close(self) -> None:
        self._container.close()


def open_pyav(source: Path | AudioBytes) -> PyAVSource | str:
    """Open ``source`` with PyAV: the source, or FFmpeg's reason when it cannot be opened as audio.

    Raises:
        ImportError: PyAV is not installed.
    """
    av = _av()
    if av is None:
        raise ImportError("av")
    target: Any = io.BytesIO(source.data) if isinstance(source, AudioBytes) else str(source)
    label: Path | str = source.name if isinstance(source, AudioBytes) else source
    try:
        container = av.open(target, mode="r")
    except av.error.FFmpegError as exc:
        return str(exc.strerror or exc)
    except (OSError, ValueError) as exc:
        return str(exc)
    if not container.streams.audio:
        container.close()
        return "no audio stream in it"
    stream = container.streams.audio[0]
    if not (stream.codec_context.sample_rate or stream.rate):
        container.close()
        return "its audio stream has no sample rate"
    return PyAVSource(label, container, stream)
