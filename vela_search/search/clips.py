"""The audio clip a query by example is embedded from: a file or waveform, whole, first window or a span."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from vela_search.errors import QueryError

__all__ = ["AUDIO_QUERY_WINDOW_S", "MAX_AUDIO_QUERY_S", "load_query_clip"]

# A long query file is embedded over its first window, the default window of `vela-search index`.
AUDIO_QUERY_WINDOW_S = 10.0
# What the audio encoder reads at most (and the longest file `vela-search index` keeps as one segment).
MAX_AUDIO_QUERY_S = 30.0


def load_query_clip(
    source: str | Path | np.ndarray, start_s: float | None = None, end_s: float | None = None
) -> np.ndarray:
    """The 16 kHz mono clip a query by example is embedded from (see :meth:`Searcher.search_audio`).

    Raises:
        QueryError: an invalid span, or one longer than 30 s.
        AudioDecodeError: the file cannot be decoded.
    """
    from vela_search.audio import SAMPLE_RATE, audio_duration, decode_audio, load_waveform

    if start_s is not None and (not math.isfinite(start_s) or start_s < 0):
        raise QueryError(f"--start must be a number of seconds >= 0, got {start_s}")
    if end_s is not None and (not math.isfinite(end_s) or end_s <= (start_s or 0.0)):
        raise QueryError(f"--end ({end_s}) must be after --start ({start_s or 0.0})")
    span_given = start_s is not None or end_s is not None
    if span_given:
        start = start_s or 0.0
        end = end_s if end_s is not None else start + AUDIO_QUERY_WINDOW_S
        if end - start > MAX_AUDIO_QUERY_S + 1e-9:
            raise QueryError(
                f"the query span {start:g}-{end:g} s is {end - start:g} s long; the audio encoder reads at "
                f"most {MAX_AUDIO_QUERY_S:g} s, so choose a span of up to {MAX_AUDIO_QUERY_S:g} s"
            )
    if isinstance(source, np.ndarray):
        wave = load_waveform(source)
        seconds = len(wave) / SAMPLE_RATE
        if span_given:
            if start >= seconds:
                raise QueryError(f"--start {start:g} s is past the end of the {seconds:.3f} s clip")
            wave = wave[round(start * SAMPLE_RATE) : round(end * SAMPLE_RATE)]
        elif seconds > MAX_AUDIO_QUERY_S:
            wave = wave[: round(AUDIO_QUERY_WINDOW_S * SAMPLE_RATE)]
        return np.ascontiguousarray(wave)
    if span_given:
        return decode_audio(source, start_s=start, end_s=end)
    if audio_duration(source) <= MAX_AUDIO_QUERY_S:
        # Decoded whole, exactly as indexing embeds a file of up to 30 s: the same file scores ~1.0.
        return decode_audio(source)
    return decode_audio(source, start_s=0.0, end_s=AUDIO_QUERY_WINDOW_S)
