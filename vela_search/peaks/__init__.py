"""Waveform peaks of indexed files: what the page draws for every hit.

Peaks are min/max pairs of the decoded 16 kHz mono signal, computed while indexing (the audio is decoded
anyway) and kept beside the index, one small file per audio content (``peaks/<sha256>.peaks``): an
overview of the whole file and, for long files, finer pairs for the zoomed view of a segment. Indexes
without them compute them on demand and cache them. See docs/format.md, "Waveform peaks".
"""

from __future__ import annotations

from vela_search.peaks.builder import FINE_RATE, OVERVIEW_BINS, PeakBuilder, Peaks, peaks_of_wave
from vela_search.peaks.files import (
    PEAKS_DIR,
    PeaksDamagedError,
    check_peaks,
    load_or_compute,
    peaks_path,
    prune_peaks,
    read_peaks,
    write_peaks,
)
from vela_search.peaks.probe import SourceFormat, probe_format

__all__ = [
    "FINE_RATE",
    "OVERVIEW_BINS",
    "PEAKS_DIR",
    "PeakBuilder",
    "Peaks",
    "PeaksDamagedError",
    "SourceFormat",
    "check_peaks",
    "load_or_compute",
    "peaks_of_wave",
    "peaks_path",
    "probe_format",
    "prune_peaks",
    "read_peaks",
    "write_peaks",
]
