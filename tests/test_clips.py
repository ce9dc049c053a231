"""Clips keep the source's own rate and channels, with exact frames; names are safe."""

from __future__ import annotations

import io

import numpy as np
import pytest
import soundfile as sf
from audio_factory import tone

from vela_search.clips import clip_filename, export_clips, span_wav_native
from vela_search.errors import QueryError


def test_a_stereo_44k_span_keeps_rate_channels_and_frames(tmp_path):
    rate = 44_100
    left, right = tone(5, rate, freq=300), tone(5, rate, freq=500)
    path = tmp_path / "st.wav"
    sf.write(path, np.stack([left, right], axis=1), rate, subtype="PCM_24")
    data, got_rate = sf.read(io.BytesIO(span_wav_native(path, 1.5, 3.25)), dtype="float32")
    info = sf.info(io.BytesIO(span_wav_native(path, 1.5, 3.25)))
    assert got_rate == rate and data.shape == (round(1.75 * rate), 2) and info.subtype == "PCM_24"
    first = round(1.5 * rate)
    assert np.abs(data[:, 1] - right[first : first + len(data)]).max() < 1e-4
    # A span past the end stops at the end; one starting past it is an error.
    tail, _ = sf.read(io.BytesIO(span_wav_native(path, 4.0, 9.0)))
    assert len(tail) == rate
    with pytest.raises(QueryError, match="past the end"):
        span_wav_native(path, 6.0, 7.0)
    with pytest.raises(QueryError, match="after start"):
        span_wav_native(path, 2.0, 1.0)


def test_clip_names_have_no_folders_or_odd_characters():
    assert clip_filename("/a/b/<x> y.flac", 12.5, 22.5, rank=3) == "03_x_y_12.5-22.5s.wav"
    assert clip_filename("/a/../..", 0, 1) == "clip_0-1s.wav"


def test_export_writes_each_hit_in_rank_order(tmp_path):
    from types import SimpleNamespace

    rate = 22_050
    path = tmp_path / "a.flac"
    sf.write(path, tone(6, rate, freq=440), rate)
    hits = [
        SimpleNamespace(path=str(path), start_s=s, end_s=s + 2.0, rank=r) for r, s in ((1, 3.0), (2, 0.0))
    ]
    written = export_clips(hits, tmp_path / "out" / "clips")
    assert [p.name for p in written] == ["01_a_3-5s.wav", "02_a_0-2s.wav"]
    assert sf.info(written[0]).frames == 2 * rate and sf.info(written[0]).samplerate == rate
    (tmp_path / "file").write_text("x")
    with pytest.raises(QueryError, match="not a folder"):
        export_clips(hits, tmp_path / "file")
