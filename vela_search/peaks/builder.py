"""Computing peaks from a stream of decoded windows (overlapping or not) or from a whole waveform.

The builder keeps min/max pairs at a high rate (``RAW_RATE`` per second, a few MB for hours of audio)
while the windows stream in, and reduces them when the file ends: ``OVERVIEW_BINS`` pairs for the whole
file and, for files longer than ``FINE_MIN_S``, ``FINE_RATE`` pairs per second for the zoomed view.
Values are stored as int8 (full scale 127): a waveform drawing needs no more.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

__all__ = ["FINE_MIN_S", "FINE_RATE", "OVERVIEW_BINS", "RAW_RATE", "PeakBuilder", "Peaks", "peaks_of_wave"]

SAMPLE_RATE = 16_000  # the decoded stream's rate (vela_search.audio.SAMPLE_RATE)
RAW_RATE = 200  # pairs per second kept while decoding (80 samples each)
OVERVIEW_BINS = 400  # pairs for the whole file
FINE_RATE = 20  # pairs per second of the fine level: 600 pairs for a 30 s zoomed view
FINE_MIN_S = 60.0  # shorter files need no fine level: the overview has >= 6.7 pairs per second


@dataclass
class Peaks:
    """Peaks of one file: ``overview`` (n, 2) and ``fine`` (m, 2) int8 min/max pairs, and its format.

    ``fine`` is empty for short files. ``sample_rate`` and ``channels`` describe the source file (0 when
    unknown); the peaks themselves come from the 16 kHz mono decode.
    """

    duration_s: float
    overview: np.ndarray
    fine: np.ndarray = field(default_factory=lambda: np.empty((0, 2), np.int8))
    fine_rate: int = FINE_RATE
    sample_rate: int = 0
    channels: int = 0

    def to_dict(self, *, fine: bool = True, fine_from: float = 0.0, fine_to: float | None = None) -> dict:
        """JSON-ready: pairs as lists of ``[min, max]`` floats in -1..1.

        The fine level is sliced to ``fine_from``-``fine_to`` seconds (a zoomed view needs only its
        span; an hour of fine pairs is ~1 MB of JSON); ``fine_start_s`` is the time of its first pair.
        """
        scale = 1 / 127
        first = max(0, int(math.floor(fine_from * self.fine_rate))) if len(self.fine) else 0
        last = len(self.fine) if fine_to is None else max(first, int(math.ceil(fine_to * self.fine_rate)))
        part = self.fine[first:last] if fine else self.fine[:0]
        return {
            "duration_s": self.duration_s,
            "sample_rate": self.sample_rate,
            "channels": self.channels,
            "overview": np.round(self.overview.astype(np.float32) * scale, 3).tolist(),
            "fine_rate": self.fine_rate if len(self.fine) else None,
            "fine_start_s": first / self.fine_rate,
            "fine": np.round(part.astype(np.float32) * scale, 3).tolist(),
        }


def _reduce(mins: np.ndarray, maxs: np.ndarray, bins: int) -> np.ndarray:
    """``bins`` min/max pairs over the raw pairs (fewer when there are fewer raw pairs), as int8."""
    n = len(mins)
    if n == 0:
        return np.zeros((0, 2), np.int8)
    if bins >= n:
        lo, hi = mins, maxs
    else:
        edges = np.linspace(0, n, bins + 1).astype(np.int64)[:-1]
        lo, hi = np.minimum.reduceat(mins, edges), np.maximum.reduceat(maxs, edges)
    pairs = np.stack([lo, hi], axis=1)
    return np.round(np.clip(pairs, -1.0, 1.0) * 127).astype(np.int8)


class PeakBuilder:
    """Accumulates raw min/max pairs from decoded windows; :meth:`finish` gives the :class:`Peaks`.

    Windows may overlap (hop shorter than the window): only samples past what was seen are taken.
    """

    def __init__(self) -> None:
        self._step = SAMPLE_RATE // RAW_RATE
        self._pos = 0  # samples taken so far
        self._tail = np.empty(0, np.float32)
        self._mins: list[np.ndarray] = []
        self._maxs: list[np.ndarray] = []

    def add(self, start_s: float, samples: np.ndarray) -> None:
        """Take the new part of a window that starts at ``start_s`` (16 kHz mono samples)."""
        offset = int(round(start_s * SAMPLE_RATE))
        skip = self._pos - offset
        if skip >= len(samples):
            return
        new = np.asarray(samples[max(skip, 0) :], np.float32)
        if skip < 0:  # a gap (cannot happen with contiguous windows): silence
            new = np.concatenate([np.zeros(-skip, np.float32), new])
        self._pos += len(new)
        data = np.concatenate([self._tail, new]) if len(self._tail) else new
        whole = len(data) // self._step * self._step
        if whole:
            blocks = data[:whole].reshape(-1, self._step)
            self._mins.append(blocks.min(axis=1))
            self._maxs.append(blocks.max(axis=1))
        self._tail = data[whole:].copy()

    @property
    def samples_seen(self) -> int:
        """How many samples were taken (0: nothing decoded here, e.g. windows embedded elsewhere)."""
        return self._pos

    def finish(self, duration_s: float | None = None, *, sample_rate: int = 0, channels: int = 0) -> Peaks:
        """The peaks of everything added (``duration_s`` defaults to the samples seen)."""
        mins, maxs = list(self._mins), list(self._maxs)
        if len(self._tail):
            mins.append(self._tail.min(keepdims=True))
            maxs.append(self._tail.max(keepdims=True))
        lo = np.concatenate(mins) if mins else np.empty(0, np.float32)
        hi = np.concatenate(maxs) if maxs else np.empty(0, np.float32)
        duration = float(duration_s if duration_s is not None else self._pos / SAMPLE_RATE)
        fine = np.empty((0, 2), np.int8)
        if duration > FINE_MIN_S:
            fine = _reduce(lo, hi, max(1, math.ceil(len(lo) * FINE_RATE / RAW_RATE)))
        return Peaks(
            duration_s=duration,
            overview=_reduce(lo, hi, OVERVIEW_BINS),
            fine=fine,
            sample_rate=int(sample_rate),
            channels=int(channels),
        )


def peaks_of_wave(wave: np.ndarray, *, sample_rate: int = 0, channels: int = 0) -> Peaks:
    """Peaks of a whole 16 kHz mono waveform (the on-demand path for indexes written without peaks)."""
    builder = PeakBuilder()
    builder.add(0.0, wave)
    return builder.finish(sample_rate=sample_rate, channels=channels)
