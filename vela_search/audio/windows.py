"""Cut audio into timed windows: plan them from a duration, or stream them from a file in bounded memory."""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vela_search.audio.decoders import AudioBytes, decode_error
from vela_search.audio.sources import SAMPLE_RATE, open_source, resampled

__all__ = ["AudioSegment", "Window", "iter_segments", "plan_windows"]


@dataclass(frozen=True)
class Window:
    """A time span of a file, in seconds."""

    start_s: float
    end_s: float


def _check_window_args(window_s: float, hop_s: float, single_max_s: float) -> None:
    if not (math.isfinite(window_s) and window_s > 0):
        raise ValueError(f"window_s must be > 0, got {window_s!r}")
    if not (math.isfinite(hop_s) and hop_s > 0):
        raise ValueError(f"hop_s must be > 0, got {hop_s!r}")
    if not (math.isfinite(single_max_s) and window_s <= single_max_s):
        raise ValueError(f"window_s ({window_s}) must not exceed single_max_s ({single_max_s})")


def _regular_window(k: int, window_s: float, hop_s: float) -> Window:
    # One formula for both plan_windows and the streaming path, so their floats agree exactly.
    start = k * hop_s
    return Window(start, start + window_s)


# A tail shorter than half a 16 kHz sample is float noise, not audio worth a window.
_TAIL_EPS = 0.5 / SAMPLE_RATE


def plan_windows(
    duration_s: float, window_s: float = 10.0, hop_s: float = 5.0, single_max_s: float = 30.0
) -> list[Window]:
    """The windows a file of the given duration is cut into.

    A file up to ``single_max_s`` is one window. A longer one gets windows at 0, hop, 2*hop, ... while they
    fit, plus one final window ending at the end of the file if the regular ones leave the tail uncovered.

    Raises:
        ValueError: duration < 0, window <= 0, hop <= 0, or window > single_max_s.
    """
    _check_window_args(window_s, hop_s, single_max_s)
    if not (math.isfinite(duration_s) and duration_s >= 0):
        raise ValueError(f"duration_s must be a finite number >= 0, got {duration_s!r}")
    if duration_s <= single_max_s:
        return [Window(0.0, float(duration_s))]
    windows: list[Window] = []
    k = 0
    while True:
        w = _regular_window(k, window_s, hop_s)
        if w.end_s > duration_s:
            break
        windows.append(w)
        k += 1
    if windows[-1].end_s < duration_s - _TAIL_EPS:
        windows.append(Window(duration_s - window_s, float(duration_s)))
    return windows


@dataclass
class AudioSegment:
    """A window of a file with its 16 kHz mono float32 samples."""

    start_s: float
    end_s: float
    samples: np.ndarray

    @property
    def duration_s(self) -> float:
        """Length of the window in seconds."""
        return self.end_s - self.start_s


class _Buffer:
    """The most recent part of a growing 16 kHz stream, addressed by absolute sample index."""

    def __init__(self) -> None:
        self._data = np.empty(0, dtype=np.float32)
        self._lo = 0  # index in _data of the first kept sample
        self._hi = 0  # index in _data one past the last sample
        self.start = 0  # absolute index of _data[_lo]

    @property
    def end(self) -> int:
        return self.start + self._hi - self._lo

    def append(self, x: np.ndarray) -> None:
        n = len(x)
        if self._hi + n > len(self._data):
            kept = self._hi - self._lo
            if kept + n > len(self._data):
                # 1.5x growth: amortised appends without doubling the bounded working set.
                grown = np.empty(max((kept + n) * 3 // 2, 1 << 16), dtype=np.float32)
                grown[:kept] = self._data[self._lo : self._hi]
                self._data = grown
            else:
                self._data[:kept] = self._data[self._lo : self._hi]
            self._lo, self._hi = 0, kept
        self._data[self._hi : self._hi + n] = x
        self._hi += n

    def discard_before(self, index: int) -> None:
        drop = min(max(0, index - self.start), self._hi - self._lo)
        self._lo += drop
        self.start += drop

    def copy(self, i0: int, i1: int) -> np.ndarray:
        if i0 < self.start or i1 > self.end:
            raise AssertionError(f"samples {i0}-{i1} are not buffered ({self.start}-{self.end})")
        return self._data[self._lo + i0 - self.start : self._lo + i1 - self.start].copy()


def iter_segments(
    path: str | Path | AudioBytes, *, window_s: float = 10.0, hop_s: float = 5.0, single_max_s: float = 30.0
) -> Iterator[AudioSegment]:
    """Stream the windows of `plan_windows` over a file, decoding it once with bounded memory.

    The file is read blockwise at its native rate, averaged to mono and resampled as one continuous stream;
    only about one window of 16 kHz audio (``single_max_s`` while the file may still be short) is held.
    Each segment's samples equal ``decode_audio(path, start_s=..., end_s=...)`` within resampling
    tolerance, and the windows equal ``plan_windows`` of the decoded duration.

    Raises:
        AudioDecodeError: as `decode_audio`. A problem found mid-file (a cut FLAC stream, NaN samples) is
            raised after the windows before it were yielded; callers should discard that file's segments.
        ValueError: invalid window arguments (see `plan_windows`).
    """
    _check_window_args(window_s, hop_s, single_max_s)
    win_samples = math.ceil(window_s * SAMPLE_RATE) + 1
    buf = _Buffer()
    emitted = 0
    long_file = False
    with open_source(path) as src:
        for chunk in resampled(src.blocks(), src.samplerate):
            buf.append(chunk)
            total_s = buf.end / SAMPLE_RATE
            if not long_file:
                if total_s <= single_max_s:
                    continue
                long_file = True
            while True:
                w = _regular_window(emitted, window_s, hop_s)
                if w.end_s > total_s:
                    break
                yield AudioSegment(
                    w.start_s, w.end_s, buf.copy(round(w.start_s * SAMPLE_RATE), round(w.end_s * SAMPLE_RATE))
                )
                emitted += 1
            # Keep what the next regular window needs, and always the last window's worth for the tail.
            next_start = round(_regular_window(emitted, window_s, hop_s).start_s * SAMPLE_RATE)
            buf.discard_before(min(next_start, buf.end - win_samples))
    total = buf.end
    if total == 0:
        raise decode_error(path, "contains no audio samples")
    for w in plan_windows(total / SAMPLE_RATE, window_s, hop_s, single_max_s)[emitted:]:
        i0 = max(0, round(w.start_s * SAMPLE_RATE))
        i1 = min(total, round(w.end_s * SAMPLE_RATE))
        yield AudioSegment(w.start_s, w.end_s, buf.copy(i0, i1))
