"""Background decoding: order, bounded buffering, failures mid-file, and the overlap measurement."""

from __future__ import annotations

import time

import numpy as np
import pytest
from audio_factory import noise, write_audio, write_long_tone

from vela_search.audio import iter_segments
from vela_search.indexing import measure_pipeline_overlap
from vela_search.indexing.prefetch import Failed, Segment, SegmentPrefetcher

from .helpers import SR, small_collection


def test_files_come_back_in_order_with_several_workers(tmp_path):
    paths = [str(p) for p in small_collection(tmp_path, 12, seconds=0.5)]
    long = str(write_long_tone(tmp_path / "long.flac", 95.0, sr=8000))
    paths.insert(3, long)
    missing = str(tmp_path / "missing.wav")
    paths.insert(7, missing)
    with SegmentPrefetcher(paths, workers=3, budget=4, head_allowance=2) as prefetcher:
        got = [list(prefetcher.messages(i)) for i in range(len(paths))]
    for path, messages in zip(paths, got, strict=True):
        if path == missing:
            assert len(messages) == 1 and isinstance(messages[0], Failed)
            assert "does not exist" in str(messages[0].error)
            continue
        expected = list(iter_segments(path))
        assert [(m.segment.start_s, m.segment.end_s) for m in messages] == [
            (s.start_s, s.end_s) for s in expected
        ]
        assert all(
            np.array_equal(m.segment.samples, s.samples) for m, s in zip(messages, expected, strict=True)
        )


def test_buffering_stays_within_the_budget_while_the_consumer_is_slow(tmp_path):
    paths = [str(write_long_tone(tmp_path / "hour.flac", 600.0, sr=8000))]
    paths += [str(p) for p in small_collection(tmp_path / "short", 6, seconds=0.5)]
    budget, allowance = 3, 2
    with SegmentPrefetcher(paths, workers=2, budget=budget, head_allowance=allowance) as prefetcher:
        peak = 0
        for i in range(len(paths)):
            for message in prefetcher.messages(i):
                assert isinstance(message, Segment)
                time.sleep(0.001)  # a slow embedder: the decoders run ahead until they must wait
                with prefetcher._cond:
                    buffered = sum(prefetcher._counts.values())
                peak = max(peak, buffered)
    assert 0 < peak <= budget + allowance


def test_a_file_that_breaks_mid_stream_ends_with_failed_after_its_good_windows(tmp_path):
    path = write_long_tone(tmp_path / "cut.flac", 120.0, sr=8000)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    after = write_audio(tmp_path / "z.wav", noise(1.0, SR), SR)
    with SegmentPrefetcher([str(path), str(after)], workers=2) as prefetcher:
        first = list(prefetcher.messages(0))
        second = list(prefetcher.messages(1))
    assert len(first) > 1 and all(isinstance(m, Segment) for m in first[:-1])
    assert isinstance(first[-1], Failed) and "truncated" in str(first[-1].error)
    assert len(second) == 1 and isinstance(second[0], Segment)


def test_consuming_out_of_order_is_refused(tmp_path):
    paths = [str(p) for p in small_collection(tmp_path, 2, seconds=0.2)]
    with SegmentPrefetcher(paths) as prefetcher, pytest.raises(ValueError, match="being consumed"):
        next(iter(prefetcher.messages(1)))


def test_measure_pipeline_overlap_reports_the_three_timings(tmp_path, emb):
    small_collection(tmp_path / "audio", 6, seconds=0.5)
    timing = measure_pipeline_overlap([tmp_path / "audio"], emb)
    assert timing.files == 6 and timing.segments == 6
    assert timing.decode_s > 0 and timing.embed_s > 0 and timing.end_to_end_s > 0
    assert timing.overlap_ratio == pytest.approx(timing.end_to_end_s / max(timing.decode_s, timing.embed_s))
