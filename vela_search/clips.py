"""Cutting a span out of an audio file as WAV: at the file's own sample rate and channels where
libsndfile reads the format (exact frames, no resampling), else from the 16 kHz mono decode.

Used by the service's segment download and by ``vela-search query --export-dir``.
"""

from __future__ import annotations

import io
import math
import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from vela_search.errors import QueryError

__all__ = ["clip_filename", "export_clips", "span_wav_native"]


def _check_span(start_s: float, end_s: float | None) -> None:
    if not (math.isfinite(start_s) and start_s >= 0):
        raise QueryError(f"start must be a number of seconds >= 0, got {start_s}")
    if end_s is not None and math.isfinite(end_s) and end_s <= start_s:
        raise QueryError(f"end ({end_s}) must be after start ({start_s})")


def span_wav_native(path: str | os.PathLike[str], start_s: float, end_s: float | None) -> bytes:
    """The span ``start_s``-``end_s`` of ``path`` (to its end when ``end_s`` is None) as WAV bytes.

    Raises:
        QueryError: a span that ends before it starts or starts past the end of the file.
        AudioDecodeError: the file cannot be decoded.
    """
    import soundfile as sf

    _check_span(start_s, end_s)
    stop = end_s if end_s is not None and math.isfinite(end_s) else None
    buffer = io.BytesIO()
    try:
        handle = sf.SoundFile(str(path))
    except (sf.LibsndfileError, RuntimeError):
        handle = None
    if handle is not None:
        with handle:
            rate = handle.samplerate
            first = int(round(start_s * rate))
            if first >= handle.frames:
                raise QueryError(
                    f"start {start_s:g} s is past the end of the file ({handle.frames / rate:.3f} s)"
                )
            last = handle.frames if stop is None else int(round(stop * rate))
            handle.seek(first)
            data = handle.read(min(last, handle.frames) - first, dtype="float32", always_2d=True)
            subtype = handle.subtype if sf.check_format("WAV", handle.subtype) else "PCM_16"
        sf.write(buffer, data, rate, format="WAV", subtype=subtype)
        return buffer.getvalue()
    from vela_search.audio import SAMPLE_RATE, decode_audio

    wave = decode_audio(path, start_s=start_s, end_s=stop)
    sf.write(buffer, wave, SAMPLE_RATE, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


def clip_filename(path: str, start_s: float, end_s: float, rank: int | None = None) -> str:
    """A safe file name for a clip: ``[NN_]stem_12.5-22.5s.wav`` (no folders, no odd characters)."""
    stem = re.sub(r"[^\w.-]+", "_", Path(path).stem).strip("._") or "clip"
    name = f"{stem[:80]}_{start_s:g}-{end_s:g}s.wav"
    return f"{rank:02d}_{name}" if rank is not None else name


def export_clips(hits: Iterable[Any], directory: str | os.PathLike[str]) -> list[Path]:
    """Write each hit's segment (``path``, ``start_s``, ``end_s``, ``rank``) as a WAV into ``directory``.

    Files are named ``NN_stem_START-ENDs.wav`` by rank, so a listing keeps the hits' order.

    Raises:
        QueryError: ``directory`` exists and is not a folder, or cannot be created.
        AudioDecodeError: a hit's file cannot be decoded.
    """
    folder = Path(directory).expanduser()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise QueryError(f"--export-dir {folder} is not a folder") from None
    except OSError as exc:
        raise QueryError(f"cannot create --export-dir {folder}: {exc.strerror}") from None
    written = []
    for hit in hits:
        target = folder / clip_filename(str(hit.path), hit.start_s, hit.end_s, rank=hit.rank)
        target.write_bytes(span_wav_native(hit.path, hit.start_s, hit.end_s))
        written.append(target)
    return written
