"""Audio input: find files, decode any common format to 16 kHz mono float32, cut long files into windows.

Decoding goes through libsndfile (via ``soundfile``: wav, flac, ogg/vorbis, opus, mp3, aiff) and through
PyAV (FFmpeg's libraries inside the ``av`` wheels) for everything else (m4a, aac, webm, wma), with an
``ffmpeg`` executable as the fallback where PyAV is not installed. Channels are
averaged to mono and the signal is resampled with soxr (high quality). Long files are streamed: the file is
read blockwise at its native rate and resampled as a stream, so memory depends on the window, not the file.

This package knows nothing about models or indexes. Its modules:

- ``decoders``: what every decoder shares: the source contract, in-memory audio, decode errors.
- ``sources``: opening a file with the right decoder (libsndfile, PyAV, ffmpeg pipe), stream
  resampling, file checks.
- ``pyav_source``: the PyAV decoder (priming and end padding of compressed formats).
- ``decode``: whole-file and span decoding, waveform validation, durations.
- ``windows``: planning windows over a file and streaming them as segments.
- ``discovery``: finding audio files under files and directories.
"""

from __future__ import annotations

from vela_search.audio.decode import audio_duration, decode_audio, load_waveform, validate_waveform
from vela_search.audio.decoders import AudioBytes
from vela_search.audio.discovery import AUDIO_EXTENSIONS, DiscoveryResult, discover_audio_files
from vela_search.audio.pyav_source import pyav_available
from vela_search.audio.sources import SAMPLE_RATE, ffmpeg_available
from vela_search.audio.windows import AudioSegment, Window, iter_segments, plan_windows

__all__ = [
    "AUDIO_EXTENSIONS",
    "SAMPLE_RATE",
    "AudioBytes",
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
    "pyav_available",
    "validate_waveform",
]
