"""Native-rate decoders: open audio with libsndfile, PyAV or an ``ffmpeg`` pipe and stream mono blocks.

Also the checks that turn a missing, empty, unreadable, truncated or non-audio file into an
`AudioDecodeError` with a specific reason, and the stream resampler to 16 kHz that `decode` and `windows`
share.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import shutil
import stat
import struct
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from vela_search.audio.decoders import AudioBytes, NativeSource, check_finite, decode_error
from vela_search.audio.pyav_source import open_pyav, pyav_available

if TYPE_CHECKING:
    import soundfile as sf

__all__ = [
    "SAMPLE_RATE",
    "FfmpegSource",
    "SoundFileSource",
    "ffmpeg_available",
    "native_stderr_captured",
    "open_source",
    "resampled",
]

SAMPLE_RATE: int = 16_000


def _soundfile():  # noqa: ANN202
    # Imported on first decode, not at import time: the embedder validates in-memory arrays through this
    # package on machines that have no libsndfile (e.g. a bare GPU image).
    import soundfile

    return soundfile


def _soxr():  # noqa: ANN202
    import soxr

    return soxr


# Containers libsndfile cannot open at all; without PyAV or ffmpeg the error says so instead of "not audio".
_FFMPEG_ONLY_EXTENSIONS: frozenset[str] = frozenset({".m4a", ".aac", ".webm", ".wma"})

# Native frames read per block: about a second of audio (at 48 kHz x 8 channels a 1.5 MB float32 block),
# small enough that streaming memory is dominated by the window, large enough that Python overhead is not.
_BLOCK_FRAMES = 65_536


def _block_frames(samplerate: int) -> int:
    return max(4096, min(_BLOCK_FRAMES, samplerate))


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


def _precheck(path: Path | AudioBytes) -> bytes:
    """Fail early with a specific reason for missing, empty, unreadable or non-regular files.

    Returns the first bytes of the file, used to tell text from binary when no decoder accepts it.
    """
    if isinstance(path, AudioBytes):
        if not path.data:
            raise decode_error(path, "file is empty (0 bytes)")
        return path.data[:512]
    try:
        st = os.stat(path)
    except FileNotFoundError:
        if os.path.islink(path):
            raise decode_error(path, "broken symbolic link") from None
        raise decode_error(path, "file does not exist") from None
    except PermissionError:
        raise decode_error(path, "permission denied") from None
    except OSError as exc:
        raise decode_error(path, f"cannot access file ({exc.strerror or exc})") from None
    if stat.S_ISDIR(st.st_mode):
        raise decode_error(path, "is a directory, not a file")
    if not stat.S_ISREG(st.st_mode):
        raise decode_error(path, "not a regular file")
    if st.st_size == 0:
        raise decode_error(path, "file is empty (0 bytes)")
    try:
        # Opening it here (rather than only inside libsndfile) turns EACCES into a clear message.
        with open(path, "rb") as fh:
            return fh.read(512)
    except PermissionError:
        raise decode_error(path, "permission denied (the file cannot be read)") from None
    except OSError as exc:
        raise decode_error(path, f"cannot read file ({exc.strerror or exc})") from None


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


def _frame_reader(handle: sf.SoundFile) -> Callable[[np.ndarray], int]:
    """A function filling a C-contiguous float32 (frames, channels) array from the file; returns frames read.

    ``SoundFile.read`` and ``buffer_read_into`` re-seek to the current position after every call, and
    libsndfile's MP3 decoder does not survive that: the samples after each block boundary come out
    corrupted. Calling ``sf_readf_float`` directly keeps the decoder's state intact (and saves a seek per
    block for every format). Falls back to the public API if soundfile's internals ever change.
    """
    snd, ffi, raw = (
        getattr(_soundfile(), "_snd", None),
        getattr(_soundfile(), "_ffi", None),
        getattr(handle, "_file", None),
    )
    if snd is None or ffi is None or raw is None:
        return lambda out: handle.buffer_read_into(out, "float32")

    def read(out: np.ndarray) -> int:
        frames = snd.sf_readf_float(raw, ffi.from_buffer("float[]", out), out.shape[0])
        code = snd.sf_error(raw)
        if code:
            raise _soundfile().LibsndfileError(code)
        return int(frames)

    return read


class SoundFileSource(NativeSource):
    """Decode through libsndfile (wav, flac, ogg/vorbis, opus, mp3, aiff) at the file's own rate."""

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
                check_finite(path, data, pos, sr)
                # A fresh array per block: consumers keep blocks while this buffer is reused.
                mono = data[:, 0].copy() if self.channels == 1 else data.mean(axis=1, dtype=np.float32)
                pos += len(data)
                yield mono
        except _soundfile().LibsndfileError as exc:
            raise decode_error(
                path,
                f"decoder error at {pos / sr:.2f} s ({_libsndfile_reason(exc)}); "
                "the file is probably truncated or corrupt",
            ) from None
        declared = self.declared_frames
        if stop is None and self._check_length and start <= declared and pos < declared:
            raise decode_error(
                path,
                f"file is truncated: decoded {pos} of the {self.declared_frames} frames its header declares",
            )

    def close(self) -> None:
        self._f.close()


class FfmpegSource(NativeSource):
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
        cmd += [
            "-map",
            "0:a:0",
            "-vn",
            "-ar",
            str(SAMPLE_RATE),
            "-c:a",
            "pcm_f32le",
            "-f",
            "wav",
            "-fflags",
            "+bitexact",
            "pipe:1",
        ]
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
                    check_finite(self.path, data, pos, SAMPLE_RATE)
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
                    raise decode_error(self.path, self._failure.replace("{detail}", detail))
                raise decode_error(
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
            raise decode_error(self.path, "ffmpeg produced an unexpected output stream")
        channels = 0
        while True:
            chunk = take(8)
            if not chunk:
                return 0
            cid, size = chunk[:4], struct.unpack("<I", chunk[4:])[0]
            if cid == b"data":
                if channels == 0:
                    raise decode_error(self.path, "ffmpeg output has no format chunk")
                return channels
            body = take(size + (size & 1))
            if cid == b"fmt ":
                fmt_tag, channels, rate = struct.unpack("<HHI", body[:8])
                bits = struct.unpack("<H", body[14:16])[0]
                if bits != 32 or rate != SAMPLE_RATE or fmt_tag not in (3, 0xFFFE):
                    raise decode_error(self.path, "ffmpeg output is not 32-bit float at 16 kHz")

    def close(self) -> None:
        for proc in self._procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


# One capture of file descriptor 2 at a time: it is shared by the whole process.
_NATIVE_STDERR_LOCK = threading.Lock()


@contextlib.contextmanager
def native_stderr_captured() -> Iterator[list[str]]:
    """Keep what C decoders write to file descriptor 2 off the terminal and return it as lines.

    libsndfile's MP3 decoder (mpg123) prints "Note: Illegal Audio-MPEG-Header ... Trying to resync" straight
    to fd 2 while it probes a file that is not MP3 (text saved as .mp3), which no Python-level redirect
    catches and which breaks the progress display. Only the short open is wrapped; lines from the terminal
    display (escape sequences) that land in the window are dropped, not recorded.
    """
    said: list[str] = []
    with _NATIVE_STDERR_LOCK, tempfile.TemporaryFile() as sink:
        try:
            sys.stderr.flush()
            saved = os.dup(2)
        except (OSError, ValueError, AttributeError):  # no fd 2 (a daemon): nothing to keep off
            yield said
            return
        os.dup2(sink.fileno(), 2)
        try:
            yield said
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            text = sink.read().decode("utf-8", errors="replace")
            said.extend(line.strip() for line in text.splitlines() if line.strip() and "\x1b" not in line)


def open_source(path: str | Path | AudioBytes) -> NativeSource:
    """Open a file (or in-memory audio) with libsndfile, else PyAV, else an ``ffmpeg`` executable."""
    in_memory = isinstance(path, AudioBytes)
    if not in_memory:
        path = Path(path)
    head = _precheck(path)
    with native_stderr_captured() as decoder_said:
        try:
            handle = _soundfile().SoundFile(io.BytesIO(path.data) if in_memory else str(path))
        except _soundfile().LibsndfileError as exc:
            sf_reason = _libsndfile_reason(exc)
        except (OSError, RuntimeError, TypeError) as exc:
            sf_reason = str(exc)
        else:
            sf_reason = None
    if sf_reason is None:
        problem = _header_problem(handle.extra_info)
        if problem is not None:
            handle.close()
            raise decode_error(path, problem)
        if handle.frames == 0:
            handle.close()
            raise decode_error(path, "contains no audio samples")
        return SoundFileSource(path, handle)  # type: ignore[arg-type]

    # What the decoder printed while it tried belongs with the failure, not on the terminal.
    said = " / ".join(dict.fromkeys(decoder_said))
    said = f"; the decoder said: {said[:300]}{'…' if len(said) > 300 else ''}" if said else ""
    suffix = Path(str(path)).suffix.lower()
    if _looks_like_text(head):
        # Never audio, whatever the extension; no need to ask another decoder.
        raise decode_error(path, f"not an audio file (it contains text){said}")
    # Classified the same whichever decoders are installed, so that messages do not depend on the machine.
    if suffix in _FFMPEG_ONLY_EXTENSIONS:
        base, sf_part = None, ""
    else:
        known = sf_reason.startswith(("Format not recognised", "File contains data in an unknown format"))
        base = "not a recognised audio format" if known else "corrupt or truncated header"
        sf_part = f"libsndfile: {sf_reason}; "

    pyav_reason = None
    if pyav_available():
        opened = open_pyav(path)  # type: ignore[arg-type]
        if not isinstance(opened, str):
            return opened
        pyav_reason = opened
    ffmpeg = None if in_memory else _ffmpeg_path()
    if ffmpeg is not None:
        tried = "" if pyav_reason is None else f"PyAV: {pyav_reason}; "
        if base is None:
            failure = f"PyAV and ffmpeg could not decode it ({tried}ffmpeg: " + "{detail})"
            if pyav_reason is None:
                failure = "ffmpeg could not decode it ({detail})"
        else:
            failure = f"{base} ({sf_part}{tried}ffmpeg: " + "{detail})"
        return FfmpegSource(path, ffmpeg, failure)  # type: ignore[arg-type]
    if pyav_reason is not None:
        if base is None:
            raise decode_error(path, f"PyAV could not decode it ({pyav_reason})")
        raise decode_error(path, f"{base} ({sf_part}PyAV: {pyav_reason}){said}")
    if base is None:
        raise decode_error(
            path,
            f"'{suffix}' files need PyAV or ffmpeg, and neither is installed "
            "(install one: `pip install av`, or e.g. `apt-get install ffmpeg`)",
        )
    raise decode_error(path, f"{base} (libsndfile: {sf_reason}){said}")


def resampled(blocks: Iterator[np.ndarray], samplerate: int) -> Iterator[np.ndarray]:
    """Turn native-rate mono blocks into a 16 kHz stream, identical to resampling the whole signal at once."""
    if samplerate == SAMPLE_RATE:
        yield from blocks
        return
    stream = _soxr().ResampleStream(samplerate, SAMPLE_RATE, 1, dtype="float32", quality="HQ")
    for block in blocks:
        out = stream.resample_chunk(block, last=False)
        if out.size:
            yield out
    out = stream.resample_chunk(np.zeros(0, dtype=np.float32), last=True)
    if out.size:
        yield out
