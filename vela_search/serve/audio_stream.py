"""Serving indexed audio by segment id: the whole file (HTTP Range for seeking) or one span as WAV.

Only files the index holds can be served: the client names a segment id, the path comes from the index.
No path from a request ever reaches the file system.
"""

from __future__ import annotations

import io
import math
import mimetypes
from pathlib import Path

from vela_search.errors import QueryError

__all__ = ["AudioSource", "audio_source", "span_wav"]

# Types the standard table may lack on a minimal system.
_AUDIO_TYPES = {
    ".wav": "audio/wav",
    ".flac": "audio/flac",
    ".ogg": "audio/ogg",
    ".oga": "audio/ogg",
    ".opus": "audio/ogg",
    ".mp3": "audio/mpeg",
    ".m4a": "audio/mp4",
    ".aac": "audio/aac",
    ".webm": "audio/webm",
    ".aif": "audio/aiff",
    ".aiff": "audio/aiff",
}


class AudioSource:
    """A segment's file on disk and its span."""

    def __init__(self, path: Path, start_s: float, end_s: float) -> None:
        self.path = path
        self.start_s = start_s
        self.end_s = end_s

    @property
    def media_type(self) -> str:
        suffix = self.path.suffix.lower()
        return (
            _AUDIO_TYPES.get(suffix) or mimetypes.guess_type(self.path.name)[0] or "application/octet-stream"
        )


class MissingAudioError(QueryError):
    """The index holds the segment but its file is no longer readable on disk."""


def audio_source(row: dict) -> AudioSource:
    """The file and span of a segment row, checked to be a readable regular file.

    Raises:
        MissingAudioError: the file is gone or not a regular file.
    """
    path = Path(str(row["path"]))
    if not path.is_file():
        raise MissingAudioError(f"the audio file of segment {row.get('id')} is no longer on disk: {path}")
    end = row.get("end_s")
    return AudioSource(path, float(row.get("start_s") or 0.0), float(end) if end is not None else math.nan)


def span_wav(source: AudioSource, start_s: float | None, end_s: float | None) -> bytes:
    """The span ``start_s``-``end_s`` of the file (defaults: the segment's), decoded, as 16 kHz mono WAV.

    Raises:
        QueryError: a span that is not inside the file or ends before it starts.
        AudioDecodeError: the file cannot be decoded.
    """
    import soundfile as sf

    from vela_search.audio import SAMPLE_RATE, decode_audio

    start = source.start_s if start_s is None else start_s
    end = source.end_s if end_s is None else end_s
    if not (math.isfinite(start) and start >= 0):
        raise QueryError(f"start must be a number of seconds >= 0, got {start}")
    if math.isfinite(end) and end <= start:
        raise QueryError(f"end ({end}) must be after start ({start})")
    wave = decode_audio(source.path, start_s=start, end_s=end if math.isfinite(end) else None)
    buffer = io.BytesIO()
    sf.write(buffer, wave, SAMPLE_RATE, format="WAV", subtype="PCM_16")
    return buffer.getvalue()
