"""Serving indexed audio by segment id: the whole file (HTTP Range for seeking) or one span as WAV.

Only files the index holds can be served: the client names a segment id, the path comes from the index.
No path from a request ever reaches the file system, and a file is served only while it is the one that
was indexed (same place, size and modification time).
"""

from __future__ import annotations

import io
import math
import mimetypes
import stat
from pathlib import Path

from vela_search.errors import QueryError

__all__ = ["AudioSource", "ChangedAudioError", "MissingAudioError", "audio_source", "span_wav"]

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
    """The index holds the segment but its file is no longer readable on disk (HTTP 404)."""


class ChangedAudioError(QueryError):
    """The segment's path no longer holds the file that was indexed (HTTP 409)."""


def audio_source(row: dict, recorded: dict | None) -> AudioSource:
    """The file and span of a segment row, served only while it is the file that was indexed.

    ``recorded`` is the file's row of the index's files table (its size, mtime and root at indexing).
    The path must still resolve, through any links, to a regular file inside the recorded root, with the
    recorded size and modification time: a file replaced after indexing, or a link swapped in that points
    elsewhere, is not served. The source names the resolved path, so what is streamed is what was checked.

    Raises:
        MissingAudioError: the file is gone or not a regular file.
        ChangedAudioError: the path now leads outside the indexed folder, or to other content.
    """
    path = Path(str(row["path"]))
    segment = row.get("id")
    try:
        real = path.resolve(strict=True)
        st = real.stat()
    except (OSError, RuntimeError):
        raise MissingAudioError(f"the audio file of segment {segment} is no longer on disk: {path}") from None
    if not stat.S_ISREG(st.st_mode):
        raise MissingAudioError(f"the audio file of segment {segment} is no longer a regular file: {path}")
    if recorded is None:
        raise ChangedAudioError(f"segment {segment}'s file {path} is not recorded as indexed")
    root = recorded.get("root")
    if root and "://" not in str(root):
        inside = Path(str(root)).resolve()
        if real != inside and inside not in real.parents:
            raise ChangedAudioError(
                f"segment {segment}'s file {path} now leads outside the indexed folder {root}; not served"
            )
    if (recorded.get("size"), recorded.get("mtime_ns")) != (st.st_size, st.st_mtime_ns) and (
        recorded.get("size") is not None
    ):
        raise ChangedAudioError(
            f"segment {segment}'s file {path} changed since it was indexed (size or modification time); "
            "index it again to serve it"
        )
    end = row.get("end_s")
    return AudioSource(real, float(row.get("start_s") or 0.0), float(end) if end is not None else math.nan)


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
