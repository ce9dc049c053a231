"""The source format of an audio file (its own sample rate and channels), read from its header."""

from __future__ import annotations

import os
from dataclasses import dataclass

__all__ = ["SourceFormat", "probe_format"]


@dataclass(frozen=True)
class SourceFormat:
    """A file's sample rate and channel count; 0 where its header cannot be read."""

    sample_rate: int = 0
    channels: int = 0


def probe_format(path: str | os.PathLike[str]) -> SourceFormat:
    """The sample rate and channels of ``path`` (libsndfile, else PyAV when installed; zeros if neither)."""
    import soundfile as sf

    try:
        info = sf.info(str(path))
        return SourceFormat(int(info.samplerate), int(info.channels))
    except (sf.LibsndfileError, RuntimeError, OSError, TypeError):
        pass
    try:
        import av
    except ImportError:
        return SourceFormat()
    try:
        with av.open(str(path)) as container:
            stream = container.streams.audio[0]
            return SourceFormat(int(stream.sample_rate or 0), int(stream.channels or 0))
    except (av.FFmpegError, IndexError, OSError):
        return SourceFormat()
