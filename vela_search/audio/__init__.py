"""Audio input: find files, decode any common format to 16 kHz mono float32, cut long files into windows.

Decoding goes through libsndfile (via ``soundfile``: wav, flac, ogg/vorbis, opus, mp3, aiff) and falls back
to an ``ffmpeg`` pipe for everything else (m4a, aac, webm, wma) when ffmpeg is installed. Channels are
averaged to mono and the signal is resampled with soxr (high quality). Long files are streamed: the file is
read blockwise at its native rate and resampled as a stream, so memory depends on the window, not the file.

This package knows nothing about models or indexes. Its modules:

- ``sources``: native-rate decoders (libsndfile, ffmpeg pipe), stream resampling, file checks.
- ``decode``: whole-file and span decoding, waveform validation, durations.
- ``windows``: planning windows over a file and streaming them as segments.
- ``discovery``: finding audio files under files and directories.
"""

from __future__ import annotations

from vela_search.audio.decode import audio_duration, decode_audio, load_waveform, validate_waveform
from vela_search.audio.discovery import AUDIO_EXTENSIONS, DiscoveryResult, discover_audio_files
from vela_search.audio.sources import SAMPLE_RATE, ffmpeg_available
from vela_search.audio.windows import AudioSegment, Window, iter_segments, plan_windows

__all__ = [
    "AUDIO_EXTENSIONS",
    "SAMPLE_RATE",
    "AudioSegment",
    "DiscoveryResult",
    "Window",
    "audio_duration",
    "decode_audio",
    "discover_audio_files",
    "ffmpeg_available",
    "iter_segments",
    "load_waveform",
    "plan_windows",
    "validate_waveform",
]
