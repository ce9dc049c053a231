"""Peaks from streamed (overlapping) windows match peaks of the whole waveform, at both levels."""

from __future__ import annotations

import numpy as np
from audio_factory import tone

from vela_search.peaks import FINE_RATE, OVERVIEW_BINS, PeakBuilder, peaks_of_wave

SR = 16_000


def test_overlapping_windows_give_the_peaks_of_the_whole_wave():
    wave = np.concatenate([tone(40, SR, freq=220) * 0.2, tone(40, SR, freq=440) * 0.9])
    builder = PeakBuilder()
    for start in range(0, 80, 5):  # 10 s windows, 5 s hop
        builder.add(start, wave[start * SR : (start + 10) * SR])
    streamed, whole = builder.finish(80.0, sample_rate=44_100, channels=2), peaks_of_wave(wave)
    assert np.array_equal(streamed.overview, whole.overview)
    assert np.array_equal(streamed.fine, whole.fine)
    assert streamed.overview.shape == (OVERVIEW_BINS, 2)
    assert streamed.fine.shape == (80 * FINE_RATE, 2)
    assert (streamed.sample_rate, streamed.channels) == (44_100, 2)
    # The quiet first half and the loud second half are where they are (int8, full scale 127).
    half, quiet, loud = OVERVIEW_BINS // 2, wave[: 40 * SR].max() * 127, wave[40 * SR :].max() * 127
    assert abs(streamed.overview[:half, 1].max() - quiet) <= 1
    assert abs(streamed.overview[half:, 1].max() - loud) <= 1
    assert abs(streamed.overview[half:, 0].min() + loud) <= 1
    assert loud > 3 * quiet


def test_short_files_have_no_fine_level():
    peaks = peaks_of_wave(tone(3, SR, freq=220))
    assert len(peaks.fine) == 0
    assert len(peaks.overview) == OVERVIEW_BINS
    assert abs(peaks.duration_s - 3.0) < 1e-6
    body = peaks.to_dict()
    assert body["fine_rate"] is None and len(body["overview"]) == OVERVIEW_BINS
    assert -1.0 <= min(p[0] for p in body["overview"]) and max(p[1] for p in body["overview"]) <= 1.0


def test_fine_pairs_are_sliced_to_the_asked_span():
    wave = tone(90, SR, freq=220)
    body = peaks_of_wave(wave).to_dict(fine_from=30.0, fine_to=45.5)
    assert body["fine_start_s"] == 30.0
    assert len(body["fine"]) == round(15.5 * FINE_RATE)
    assert len(peaks_of_wave(wave).to_dict(fine=False)["fine"]) == 0
    assert len(peaks_of_wave(wave).to_dict()["fine"]) == 90 * FINE_RATE
