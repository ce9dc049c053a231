"""Audio input: find files, decode any common format to 16 kHz mono float32, cut long files into windows.

Decoding goes through libsndfile (via ``soundfile``: wav, flac, ogg/vorbis, opus, mp3, aiff) and falls back
to an ``ffmpeg`` pipe for everything else (m4a, aac, webm, wma) when ffmpeg is installed. Channels are
averaged to mono and the signal is resampled with soxr (high quality). Long files are streamed: the file is
read blockwise at its native rate and resampled as a stream, so memory depends on the window, not the file.

This module knows nothing about models or indexes.
"""

from __future__ import annotations

import errno
import math
import os
import re
import shutil
import stat
import struct
import subprocess
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from vela_search.errors import AudioDecodeError

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

SAMPLE_RATE: int = 16_000

AUDIO_EXTENSIONS: frozenset[str] = frozenset(
    {".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".m4a", ".aac", ".webm", ".wma", ".aif", ".aiff"}
)

# Containers libsndfile cannot open at all; without ffmpeg the error says so instead of "not audio".
_FFMPEG_ONLY_EXTENSIONS: frozenset[str] = frozenset({".m4a", ".aac", ".webm", ".wma"})

# Native frames read per block: about a second of audio (at 48 kHz x 8 channels a 1.5 MB float32 block),
# small enough that streaming memory is dominated by the window, large enough that Python overhead is not.
_BLOCK_FRAMES = 65_536


def _block_frames(samplerate: int) -> int:
    return max(4096, min(_BLOCK_FRAMES, samplerate))


# Extra 16 kHz samples decoded on each side of a requested span so that the resampler's filter has settled
# by the span's edges (50 ms already gives ~1e-7 agreement with a whole-file resample; 100 ms is a margin).
_SPAN_PAD = SAMPLE_RATE // 10

# Data-chunk sizes that streaming writers put in a header whose length they cannot know in advance.
_UNKNOWN_SIZES = frozenset({0, 0xFFFFFFFF, 0x7FFFFFFF, 0xFFFFFFFE})
_SHOULD_BE = re.compile(r"^\s*(data|SSND)\s*:\s*(\d+)\s*\(should be (\d+)\)", re.MULTILINE)


# --------------------------------------------------------------------------------------------------------
# small helpers


def ffmpeg_available() -> bool:
    """Whether an ``ffmpeg`` executable is on ``PATH`` (needed for m4a, aac, webm and wma)."""
    return _ffmpeg_path() is not None


def _ffmpeg_path() -> str | None:
    # Looked up on every call (a few stat calls) so that installing ffmpeg or changing PATH takes effect.
    return shutil.which("ffmpeg")


def _error(path: str | Path, reason: str) -> AudioDecodeError:
    return AudioDecodeError(f"cannot decode audio file '{path}': {reason}")


def _looks_like_text(head: bytes) -> bool:
    if not head:
        return False
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        # A multi-byte character may be cut at the end of the sniffed block.
        try:
            text = head[:-3].decode("utf-8")
        except UnicodeDecodeError:
            return False
    return all(ch.isprintable() or ch in "\r\n\t\f" for ch in text)


def _precheck(path: Path) -> bytes:
    """Fail early with a specific reason for missing, empty, unreadable or non-regular files.

    Returns the first bytes of the file, used to tell text from binary when no decoder accepts it.
    """
    try:
        st = os.stat(path)
    except FileNotFoundError:
        if os.path.islink(path):
            raise _error(path, "broken symbolic link") from None
        raise _error(path, "file does not exist") from None
    except PermissionError:
        raise _error(path, "permission denied") from None
    except OSError as exc:
        raise _error(path, f"cannot access file ({exc.strerror or exc})") from None
    if stat.S_ISDIR(st.st_mode):
        raise _error(path, "is a directory, not a file")
    if not stat.S_ISREG(st.st_mode):
        raise _error(path, "not a regular file")
    if st.st_size == 0:
        raise _error(path, "file is empty (0 bytes)")
    try:
        # Opening it here (rather than only inside libsndfile) turns EACCES into a clear message.
        with open(path, "rb") as fh:
            return fh.read(512)
    except PermissionError:
        raise _error(path, "permission denied (the file cannot be read)") from None
    except OSError as exc:
        raise _error(path, f"cannot read file ({exc.strerror or exc})") from None


def _libsndfile_reason(exc: sf.LibsndfileError) -> str:
    reason = exc.error_string.strip()
    reason = reason.removeprefix("Error :").strip().rstrip(".")
    return reason or f"libsndfile error {exc.code}"


def _header_problem(extra_info: str) -> str | None:
    """Truncation that libsndfile notices in the header but tolerates (it silently shortens the file)."""
    for match in _SHOULD_BE.finditer(extra_info):
        declared, present = int(match.group(2)), int(match.group(3))
        if declared not in _UNKNOWN_SIZES and present < declared:
            return (
                f"file is truncated: its header declares {declared} bytes of audio data "
                f"but only {present} are present"
            )
    if "File ended unexpectedly" in extra_info or "lacks an end-of-stream bit" in extra_info:
        return "file is truncated: the Ogg stream ends without its end-of-stream page"
    return None


# --------------------------------------------------------------------------------------------------------
# native-rate sources: blocks of mono float32 at the file's own sample rate


class _Source:
    """A decoder that yields mono float32 blocks at ``samplerate`` from a given frame onwards."""

    path: Path
    samplerate: int
    declared_frames: int | None

    def blocks(self, start: int = 0, stop: int | None = None) -> Iterator[np.ndarray]:
        raise NotImplementedError

    def close(self) -> None:
        pass

    def __enter__(self) -> _Source:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _check_finite(path: Path, block: np.ndarray, first_frame: int, samplerate: int) -> None:
    if not np.isfinite(block).all():
        bad = int(np.argmin(np.isfinite(block).all(axis=-1) if block.ndim > 1 else np.isfinite(block)))
        raise _error(
            path,
            f"contains NaN or infinite samples (first at {(first_frame + bad) / samplerate:.3f} s)",
        )


def _frame_reader(handle: sf.SoundFile) -> Callable[[np.ndarray], int]:
    """A function filling a C-contiguous float32 (frames, channels) array from the file; returns frames read.

    ``SoundFile.read`` and ``buffer_read_into`` re-seek to the current position after every call, and
    libsndfile's MP3 decoder does not survive that: the samples after each block boundary come out
    corrupted. Calling ``sf_readf_float`` directly keeps the decoder's state intact (and saves a seek per
    block for every format). Falls back to the public API if soundfile's internals ever change.
    """
    snd, ffi, raw = getattr(sf, "_snd", None), getattr(sf, "_ffi", None), getattr(handle, "_file", None)
    if snd is None or ffi is None or raw is None:
        return lambda out: handle.buffer_read_into(out, "float32")

    def read(out: np.ndarray) -> int:
        frames = snd.sf_readf_float(raw, ffi.from_buffer("float[]", out), out.shape[0])
        code = snd.sf_error(raw)
        if code:
            raise sf.LibsndfileError(code)
        return int(frames)

    return read


class _SoundFileSource(_Source):
    def __init__(self, path: Path, handle: sf.SoundFile) -> None:
        self.path = path
        self._f = handle
        self.samplerate = int(handle.samplerate)
        self.channels = int(handle.channels)
        self.declared_frames = int(handle.frames)
        self._read = _frame_reader(handle)
        # libsndfile's MP3 seek is only approximate (mpg123 fuzzy seek, off by many ms), so MP3 spans are
        # reached by decoding and discarding from the start instead.
        self._exact_seek = handle.seekable() and handle.format != "MP3"
        # FLAC and Ogg headers state the exact length; decoding fewer frames means the file was cut.
        # MP3 lengths can be estimates (VBR without a Xing header), so they are not held to it.
        self._check_length = handle.format in ("FLAC", "OGG")

    def blocks(self, start: int = 0, stop: int | None = None) -> Iterator[np.ndarray]:
        f, path, sr = self._f, self.path, self.samplerate
        block = _block_frames(sr)
        buf = np.empty((block, self.channels), dtype=np.float32)
        pos = 0
        try:
            if start > 0:
                if self._exact_seek:
                    pos = min(start, self.declared_frames)
                    f.seek(pos)
                else:
                    while pos < start:
                        got = self._read(buf[: min(block, start - pos)])
                        if got == 0:
                            break
                        pos += got
            while stop is None or pos < stop:
                want = block if stop is None else min(block, stop - pos)
                got = self._read(buf[:want])
                if got == 0:
                    break
                data = buf[:got]
                _check_finite(path, data, pos, sr)
                # A fresh array per block: consumers keep blocks while this buffer is reused.
                mono = data[:, 0].copy() if self.channels == 1 else data.mean(axis=1, dtype=np.float32)
                pos += len(data)
                yield mono
        except sf.LibsndfileError as exc:
            raise _error(
                path,
                f"decoder error at {pos / sr:.2f} s ({_libsndfile_reason(exc)}); "
                "the file is probably truncated or corrupt",
            ) from None
        declared = self.declared_frames
        if stop is None and self._check_length and start <= declared and pos < declared:
            raise _error(
                path,
                f"file is truncated: decoded {pos} of the {self.declared_frames} frames its header declares",
            )

    def close(self) -> None:
        self._f.close()


class _FfmpegSource(_Source):
    """Decode through ``ffmpeg`` into a float32 WAV stream at 16 kHz (ffmpeg resamples, we downmix)."""

    def __init__(self, path: Path, ffmpeg: str, failure: str) -> None:
        self.path = path
        self._ffmpeg = ffmpeg
        # Message for a file ffmpeg cannot open either; "{detail}" is replaced by ffmpeg's own reason.
        self._failure = failure
        self.samplerate = SAMPLE_RATE
        self.declared_frames = None
        self._procs: list[subprocess.Popen[bytes]] = []

    def blocks(self, start: int = 0, stop: int | None = None) -> Iterator[np.ndarray]:
        cmd = [self._ffmpeg, "-nostdin", "-hide_banner", "-loglevel", "error"]
        if start > 0:
            # Input seeking: ffmpeg decodes from the preceding keyframe and discards up to the exact time.
            cmd += ["-ss", f"{start / SAMPLE_RATE:.6f}"]
        cmd += ["-i", str(self.path)]
        if stop is not None:
            cmd += ["-t", f"{(stop - start) / SAMPLE_RATE:.6f}"]
        cmd += ["-map", "0:a:0", "-vn", "-ar", str(SAMPLE_RATE), "-c:a", "pcm_f32le", "-f", "wav",
                "-fflags", "+bitexact", "pipe:1"]
        # stderr goes to a file: a pipe that nobody drains could fill up and stall ffmpeg.
        with tempfile.TemporaryFile() as err:
            proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=err)
            self._procs.append(proc)
            assert proc.stdout is not None
            pos = start
            try:
                channels = self._read_wav_header(proc.stdout)
                frame_bytes = 4 * channels
                while True:
                    raw = proc.stdout.read(_block_frames(SAMPLE_RATE) * frame_bytes) if channels else b""
                    usable = len(raw) - len(raw) % frame_bytes if channels else 0
                    if usable == 0:
                        break
                    data = np.frombuffer(raw[:usable], dtype="<f4").reshape(-1, channels)
                    _check_finite(self.path, data, pos, SAMPLE_RATE)
                    mono = data[:, 0].copy() if channels == 1 else data.mean(axis=1, dtype=np.float32)
                    pos += len(mono)
                    yield mono
                rc = proc.wait()
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
            if rc != 0:
                err.seek(0)
                message = err.read().decode("utf-8", "replace").strip().splitlines()
                detail = message[-1].strip() if message else f"exit status {rc}"
                if pos == start:
                    raise _error(self.path, self._failure.replace("{detail}", detail))
                raise _error(
                    self.path,
                    f"ffmpeg failed at {pos / SAMPLE_RATE:.2f} s ({detail}); "
                    "the file is probably truncated or corrupt",
                )

    def _read_wav_header(self, stream) -> int:  # noqa: ANN001 - a binary file object
        """Parse ffmpeg's streamed WAV header up to the data chunk; returns the channel count (0: none)."""

        def take(n: int) -> bytes:
            data = stream.read(n)
            return data if len(data) == n else b""

        head = take(12)
        if not head:
            return 0  # ffmpeg failed before writing anything; its exit status says why
        if head[:4] not in (b"RIFF", b"RF64") or head[8:12] != b"WAVE":
            raise _error(self.path, "ffmpeg produced an unexpected output stream")
        channels = 0
        while True:
            chunk = take(8)
            if not chunk:
                return 0
            cid, size = chunk[:4], struct.unpack("<I", chunk[4:])[0]
            if cid == b"data":
                if channels == 0:
                    raise _error(self.path, "ffmpeg output has no format chunk")
                return channels
            body = take(size + (size & 1))
            if cid == b"fmt ":
                fmt_tag, channels, rate = struct.unpack("<HHI", body[:8])
                bits = struct.unpack("<H", body[14:16])[0]
                if bits != 32 or rate != SAMPLE_RATE or fmt_tag not in (3, 0xFFFE):
                    raise _error(self.path, "ffmpeg output is not 32-bit float at 16 kHz")

    def close(self) -> None:
        for proc in self._procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def _open_source(path: str | Path) -> _Source:
    path = Path(path)
    head = _precheck(path)
    try:
        handle = sf.SoundFile(str(path))
    except sf.LibsndfileError as exc:
        sf_reason = _libsndfile_reason(exc)
    except (OSError, RuntimeError) as exc:
        sf_reason = str(exc)
    else:
        problem = _header_problem(handle.extra_info)
        if problem is not None:
            handle.close()
            raise _error(path, problem)
        if handle.frames == 0:
            handle.close()
            raise _error(path, "contains no audio samples")
        return _SoundFileSource(path, handle)

    suffix = path.suffix.lower()
    if _looks_like_text(head):
        # Never audio, whatever the extension; no need to ask ffmpeg.
        raise _error(path, "not an audio file (it contains text)")
    if suffix in _FFMPEG_ONLY_EXTENSIONS:
        failure = "ffmpeg could not decode it ({detail})"
        no_ffmpeg = (
            f"'{suffix}' files need ffmpeg, which is not installed "
            "(install it, e.g. `apt-get install ffmpeg`)"
        )
    else:
        # Classified the same with or without ffmpeg so that messages do not depend on the machine.
        known = sf_reason.startswith(("Format not recognised", "File contains data in an unknown format"))
        base = "not a recognised audio format" if known else "corrupt or truncated header"
        failure = f"{base} (libsndfile: {sf_reason}; ffmpeg: " + "{detail})"
        no_ffmpeg = f"{base} (libsndfile: {sf_reason})"
    ffmpeg = _ffmpeg_path()
    if ffmpeg is not None:
        return _FfmpegSource(path, ffmpeg, failure)
    raise _error(path, no_ffmpeg)


def _resampled(blocks: Iterator[np.ndarray], samplerate: int) -> Iterator[np.ndarray]:
    """Turn native-rate mono blocks into a 16 kHz stream, identical to resampling the whole signal at once."""
    if samplerate == SAMPLE_RATE:
        yield from blocks
        return
    stream = soxr.ResampleStream(samplerate, SAMPLE_RATE, 1, dtype="float32", quality="HQ")
    for block in blocks:
        out = stream.resample_chunk(block, last=False)
        if out.size:
            yield out
    out = stream.resample_chunk(np.zeros(0, dtype=np.float32), last=True)
    if out.size:
        yield out


# --------------------------------------------------------------------------------------------------------
# decoding


def validate_waveform(wave: np.ndarray, source: str) -> np.ndarray:
    """Check a decoded 16 kHz mono waveform.

    Args:
        wave: 1-D array of float samples.
        source: what the samples came from (a path or a label), used in error messages.

    Returns:
        The samples as a contiguous float32 array.

    Raises:
        AudioDecodeError: if the array is not 1-D float, is empty, or holds NaN or infinite samples.
    """
    arr = np.asarray(wave)
    if arr.ndim != 1:
        raise _error(source, f"expected a 1-D mono waveform, got an array of shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.floating):
        raise _error(source, f"expected float samples, got dtype {arr.dtype}")
    if arr.size == 0:
        raise _error(source, "contains no audio samples")
    finite = np.isfinite(arr)
    if not finite.all():
        bad = int(arr.size - np.count_nonzero(finite))
        if bad == arr.size:
            raise _error(source, "contains NaN or infinite samples (all of them)")
        raise _error(source, f"contains NaN or infinite samples ({bad} of {arr.size})")
    return np.ascontiguousarray(arr, dtype=np.float32)


def _span_indices(start_s: float | None, end_s: float | None) -> tuple[int, int | None]:
    start = 0.0 if start_s is None else float(start_s)
    if not math.isfinite(start) or start < 0:
        raise ValueError(f"start_s must be a finite number >= 0, got {start_s!r}")
    if end_s is None:
        return round(start * SAMPLE_RATE), None
    end = float(end_s)
    if not math.isfinite(end) or end <= start:
        raise ValueError(f"end_s must be a finite number > start_s ({start}), got {end_s!r}")
    return round(start * SAMPLE_RATE), round(end * SAMPLE_RATE)


def decode_audio(path: str | Path, *, start_s: float | None = None, end_s: float | None = None) -> np.ndarray:
    """Decode an audio file to 16 kHz mono float32.

    Channels are averaged and the signal is resampled with soxr. With a span, only that part is decoded
    (plus a short margin so the resampler matches a whole-file decode); a span reaching past the end is cut
    at the end of the file.

    Args:
        path: the audio file.
        start_s: start of the span in seconds (default: the beginning).
        end_s: end of the span in seconds (default: the end of the file).

    Returns:
        A contiguous float32 array of samples at 16 kHz.

    Raises:
        AudioDecodeError: the file is missing, empty, unreadable, truncated, not audio, needs ffmpeg that is
            not installed, decodes to no samples, or holds NaN/inf samples.
        ValueError: the span is invalid (negative start, end not after start).
    """
    i0, i1 = _span_indices(start_s, end_s)
    with _open_source(path) as src:
        sr = src.samplerate
        # The chunk must start on an instant that falls exactly on both sample grids, so that its first
        # resampled sample is sample m0 of a whole-file decode.
        g = math.gcd(sr, SAMPLE_RATE)
        q, g_native = SAMPLE_RATE // g, sr // g
        m0 = max(0, i0 - _SPAN_PAD) // q * q
        native_start = m0 // q * g_native
        native_stop = None
        if i1 is not None:
            native_stop = -(-(i1 + _SPAN_PAD) // q) * g_native
            if src.declared_frames is not None and native_stop >= src.declared_frames:
                native_stop = None  # read to the end so the file-end handling matches a whole-file decode
        pieces = list(_resampled(src.blocks(native_start, native_stop), sr))
        declared = src.declared_frames
    if not pieces:
        wave = np.zeros(0, dtype=np.float32)
    else:
        wave = np.concatenate(pieces) if len(pieces) > 1 else pieces[0]
    lo = i0 - m0
    hi = len(wave) if i1 is None else min(len(wave), i1 - m0)
    if lo >= hi:
        if start_s is None or i0 == 0:
            raise _error(path, "contains no audio samples")
        span = f"{i0 / SAMPLE_RATE:.3f}-{'end' if i1 is None else f'{i1 / SAMPLE_RATE:.3f}'} s"
        length = "" if declared is None else f" (the audio is {declared / sr:.3f} s long)"
        raise _error(path, f"no audio in the span {span}{length}")
    return validate_waveform(wave[lo:hi] if (lo, hi) != (0, len(wave)) else wave, str(path))


def load_waveform(source: str | Path | np.ndarray) -> np.ndarray:
    """A 16 kHz mono float32 waveform from a file path or from an array already at 16 kHz mono.

    Raises:
        AudioDecodeError: as `decode_audio` for paths, as `validate_waveform` for arrays.
    """
    if isinstance(source, np.ndarray):
        return validate_waveform(source, "<waveform array>")
    return decode_audio(source)


def audio_duration(path: str | Path) -> float:
    """Duration of an audio file in seconds, read from the header when the format allows it.

    Formats that only ffmpeg reads are measured with ffprobe when present, else by decoding.

    Raises:
        AudioDecodeError: the file cannot be decoded (same reasons as `decode_audio`).
    """
    with _open_source(path) as src:
        if isinstance(src, _SoundFileSource):
            return src.declared_frames / src.samplerate
    ffprobe = shutil.which("ffprobe")
    if ffprobe is not None:
        try:
            out = subprocess.run(
                [ffprobe, "-v", "error", "-select_streams", "a:0", "-show_entries", "format=duration",
                 "-of", "default=noprint_wrappers=1:nokey=1", str(path)],
                capture_output=True, text=True, timeout=60, check=False,
            )
            duration = float(out.stdout.strip().splitlines()[0])
            if duration > 0 and math.isfinite(duration):
                return duration
        except (ValueError, IndexError, OSError, subprocess.SubprocessError):
            pass  # fall back to counting decoded samples
    with _open_source(path) as src:
        frames = sum(len(b) for b in src.blocks())
    if frames == 0:
        raise _error(path, "contains no audio samples")
    return frames / src.samplerate


# --------------------------------------------------------------------------------------------------------
# windows and streaming segments


@dataclass(frozen=True)
class Window:
    """A time span of a file, in seconds."""

    start_s: float
    end_s: float


def _check_window_args(window_s: float, hop_s: float, single_max_s: float) -> None:
    if not (math.isfinite(window_s) and window_s > 0):
        raise ValueError(f"window_s must be > 0, got {window_s!r}")
    if not (math.isfinite(hop_s) and hop_s > 0):
        raise ValueError(f"hop_s must be > 0, got {hop_s!r}")
    if not (math.isfinite(single_max_s) and window_s <= single_max_s):
        raise ValueError(f"window_s ({window_s}) must not exceed single_max_s ({single_max_s})")


def _regular_window(k: int, window_s: float, hop_s: float) -> Window:
    # One formula for both plan_windows and the streaming path, so their floats agree exactly.
    start = k * hop_s
    return Window(start, start + window_s)


# A tail shorter than half a 16 kHz sample is float noise, not audio worth a window.
_TAIL_EPS = 0.5 / SAMPLE_RATE


def plan_windows(
    duration_s: float, window_s: float = 10.0, hop_s: float = 5.0, single_max_s: float = 30.0
) -> list[Window]:
    """The windows a file of the given duration is cut into.

    A file up to ``single_max_s`` is one window. A longer one gets windows at 0, hop, 2*hop, ... while they
    fit, plus one final window ending at the end of the file if the regular ones leave the tail uncovered.

    Raises:
        ValueError: duration < 0, window <= 0, hop <= 0, or window > single_max_s.
    """
    _check_window_args(window_s, hop_s, single_max_s)
    if not (math.isfinite(duration_s) and duration_s >= 0):
        raise ValueError(f"duration_s must be a finite number >= 0, got {duration_s!r}")
    if duration_s <= single_max_s:
        return [Window(0.0, float(duration_s))]
    windows: list[Window] = []
    k = 0
    while True:
        w = _regular_window(k, window_s, hop_s)
        if w.end_s > duration_s:
            break
        windows.append(w)
        k += 1
    if windows[-1].end_s < duration_s - _TAIL_EPS:
        windows.append(Window(duration_s - window_s, float(duration_s)))
    return windows


@dataclass
class AudioSegment:
    """A window of a file with its 16 kHz mono float32 samples."""

    start_s: float
    end_s: float
    samples: np.ndarray

    @property
    def duration_s(self) -> float:
        """Length of the window in seconds."""
        return self.end_s - self.start_s


class _Buffer:
    """The most recent part of a growing 16 kHz stream, addressed by absolute sample index."""

    def __init__(self) -> None:
        self._data = np.empty(0, dtype=np.float32)
        self._lo = 0  # index in _data of the first kept sample
        self._hi = 0  # index in _data one past the last sample
        self.start = 0  # absolute index of _data[_lo]

    @property
    def end(self) -> int:
        return self.start + self._hi - self._lo

    def append(self, x: np.ndarray) -> None:
        n = len(x)
        if self._hi + n > len(self._data):
            kept = self._hi - self._lo
            if kept + n > len(self._data):
                # 1.5x growth: amortised appends without doubling the bounded working set.
                grown = np.empty(max((kept + n) * 3 // 2, 1 << 16), dtype=np.float32)
                grown[:kept] = self._data[self._lo : self._hi]
                self._data = grown
            else:
                self._data[:kept] = self._data[self._lo : self._hi]
            self._lo, self._hi = 0, kept
        self._data[self._hi : self._hi + n] = x
        self._hi += n

    def discard_before(self, index: int) -> None:
        drop = min(max(0, index - self.start), self._hi - self._lo)
        self._lo += drop
        self.start += drop

    def copy(self, i0: int, i1: int) -> np.ndarray:
        if i0 < self.start or i1 > self.end:
            raise AssertionError(f"samples {i0}-{i1} are not buffered ({self.start}-{self.end})")
        return self._data[self._lo + i0 - self.start : self._lo + i1 - self.start].copy()


def iter_segments(
    path: str | Path, *, window_s: float = 10.0, hop_s: float = 5.0, single_max_s: float = 30.0
) -> Iterator[AudioSegment]:
    """Stream the windows of `plan_windows` over a file, decoding it once with bounded memory.

    The file is read blockwise at its native rate, averaged to mono and resampled as one continuous stream;
    only about one window of 16 kHz audio (``single_max_s`` while the file may still be short) is held.
    Each segment's samples equal ``decode_audio(path, start_s=..., end_s=...)`` within resampling
    tolerance, and the windows equal ``plan_windows`` of the decoded duration.

    Raises:
        AudioDecodeError: as `decode_audio`. A problem found mid-file (a cut FLAC stream, NaN samples) is
            raised after the windows before it were yielded; callers should discard that file's segments.
        ValueError: invalid window arguments (see `plan_windows`).
    """
    _check_window_args(window_s, hop_s, single_max_s)
    win_samples = math.ceil(window_s * SAMPLE_RATE) + 1
    buf = _Buffer()
    emitted = 0
    long_file = False
    with _open_source(path) as src:
        for chunk in _resampled(src.blocks(), src.samplerate):
            buf.append(chunk)
            total_s = buf.end / SAMPLE_RATE
            if not long_file:
                if total_s <= single_max_s:
                    continue
                long_file = True
            while True:
                w = _regular_window(emitted, window_s, hop_s)
                if w.end_s > total_s:
                    break
                yield AudioSegment(w.start_s, w.end_s, buf.copy(round(w.start_s * SAMPLE_RATE),
                                                                round(w.end_s * SAMPLE_RATE)))
                emitted += 1
            # Keep what the next regular window needs, and always the last window's worth for the tail.
            next_start = round(_regular_window(emitted, window_s, hop_s).start_s * SAMPLE_RATE)
            buf.discard_before(min(next_start, buf.end - win_samples))
    total = buf.end
    if total == 0:
        raise _error(path, "contains no audio samples")
    for w in plan_windows(total / SAMPLE_RATE, window_s, hop_s, single_max_s)[emitted:]:
        i0 = max(0, round(w.start_s * SAMPLE_RATE))
        i1 = min(total, round(w.end_s * SAMPLE_RATE))
        yield AudioSegment(w.start_s, w.end_s, buf.copy(i0, i1))


# --------------------------------------------------------------------------------------------------------
# discovery


@dataclass
class DiscoveryResult:
    """Audio files found under some roots, and the paths that could not be searched."""

    files: list[Path]
    problems: list[tuple[Path, str]]


def discover_audio_files(roots: Sequence[str | Path]) -> DiscoveryResult:
    """Find audio files (by extension, case-insensitive) under files and directories.

    Directories are searched recursively in sorted order, following symbolic links; a link back to one of
    its own ancestors is reported as a loop and not entered. Hidden entries (names starting with ".") are
    skipped. Missing roots, unreadable directories and broken links are reported in ``problems``, never
    raised. Paths are absolute (symbolic links are kept, not resolved), sorted and unique.
    """
    found: set[Path] = set()
    problems: list[tuple[Path, str]] = []
    for root in roots:
        top = Path(os.path.abspath(root))
        try:
            st = os.stat(top)
        except FileNotFoundError:
            problems.append((top, "broken symbolic link" if os.path.islink(top) else "does not exist"))
            continue
        except OSError as exc:
            problems.append((top, _os_reason(exc)))
            continue
        if stat.S_ISDIR(st.st_mode):
            _walk(top, (st.st_dev, st.st_ino), found, problems)
        elif stat.S_ISREG(st.st_mode):
            if top.suffix.lower() in AUDIO_EXTENSIONS:
                found.add(top)
            else:
                problems.append((top, f"not a supported audio file extension ('{top.suffix}')"))
        else:
            problems.append((top, "not a regular file or directory"))
    problems.sort(key=lambda item: (str(item[0]), item[1]))
    return DiscoveryResult(files=sorted(found, key=str), problems=problems)


def _os_reason(exc: OSError) -> str:
    if isinstance(exc, PermissionError):
        return "permission denied"
    if exc.errno == errno.ELOOP:
        return "symbolic link loop"
    return exc.strerror or str(exc)


def _walk(top: Path, top_key: tuple[int, int], found: set[Path], problems: list[tuple[Path, str]]) -> None:
    # Iterative depth-first walk; each entry carries its chain of ancestor directories (device, inode) so
    # that a link pointing back up the chain is caught as a loop while aliases elsewhere are still walked.
    stack: list[tuple[Path, dict[tuple[int, int], Path]]] = [(top, {top_key: top})]
    while stack:
        directory, ancestors = stack.pop()
        try:
            with os.scandir(directory) as it:
                entries = sorted(it, key=lambda e: e.name)
        except PermissionError:
            problems.append((directory, "permission denied: the directory cannot be listed"))
            continue
        except OSError as exc:
            problems.append((directory, f"cannot list directory: {_os_reason(exc)}"))
            continue
        subdirs: list[tuple[Path, dict[tuple[int, int], Path]]] = []
        for entry in entries:
            if entry.name.startswith("."):
                continue
            path = directory / entry.name
            try:
                st = os.stat(path)  # follows links
            except FileNotFoundError:
                problems.append((path, "broken symbolic link"))
                continue
            except OSError as exc:
                problems.append((path, _os_reason(exc)))
                continue
            if stat.S_ISDIR(st.st_mode):
                key = (st.st_dev, st.st_ino)
                if key in ancestors:
                    problems.append((path, f"symbolic link loop: points back to '{ancestors[key]}'"))
                    continue
                subdirs.append((path, {**ancestors, key: path}))
            elif stat.S_ISREG(st.st_mode) and path.suffix.lower() in AUDIO_EXTENSIONS:
                found.add(path)
        stack.extend(reversed(subdirs))
