"""What every native-rate decoder shares: the source contract, in-memory audio, and the decode errors.

A decoder (libsndfile and the ``ffmpeg`` pipe in :mod:`vela_search.audio.sources`, PyAV in
:mod:`vela_search.audio.pyav_source`) opens one file or :class:`AudioBytes` and streams mono float32 blocks
at the file's own sample rate as a :class:`NativeSource`. Every failure is an `AudioDecodeError` that names
the file, made by :func:`decode_error`, and no decoder lets a NaN or infinite sample through
(:func:`check_finite`).
"""

from __future__ import annotations

import abc
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vela_search.errors import AudioDecodeError

__all__ = ["AudioBytes", "NativeSource", "check_finite", "decode_error"]


@dataclass(frozen=True)
class AudioBytes:
    """An encoded audio file held in memory (e.g. the audio bytes of a dataset row), decoded like a file.

    Attributes:
        name: what errors call it; its extension, if any, names the format as a file's would.
        data: the file's bytes.
    """

    name: str
    data: bytes

    def __str__(self) -> str:
        return self.name


def decode_error(path: str | Path | AudioBytes, reason: str) -> AudioDecodeError:
    """The error for a file (or in-memory audio) that cannot be decoded, with the specific reason."""
    return AudioDecodeError(f"cannot decode audio file '{path}': {reason}")


class NativeSource(abc.ABC):
    """A decoder that yields mono float32 blocks at ``samplerate`` from a given frame onwards."""

    path: Path
    samplerate: int
    declared_frames: int | None

    @abc.abstractmethod
    def blocks(self, start: int = 0, stop: int | None = None) -> Iterator[np.ndarray]:
        """Mono float32 blocks from frame ``start`` up to ``stop`` (the end when None)."""

    def close(self) -> None:
        """Release the file or process behind the source."""

    def __enter__(self) -> NativeSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def check_finite(path: str | Path, block: np.ndarray, first_frame: int, samplerate: int) -> None:
    """Refuse a block (frames, or frames x channels) that holds a NaN or infinite sample.

    Raises:
        AudioDecodeError: naming the time of the first bad frame.
    """
    if not np.isfinite(block).all():
        bad = int(np.argmin(np.isfinite(block).all(axis=-1) if block.ndim > 1 else np.isfinite(block)))
        raise decode_error(
            path,
            f"contains NaN or infinite samples (first at {(first_frame + bad) / samplerate:.3f} s)",
        )
