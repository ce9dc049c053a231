"""Peaks files beside an index: ``peaks/<sha256[:2]>/<sha256>.peaks``, one per audio content.

Content-addressed, so each is written once (a file indexed again with the same bytes keeps its peaks) and
duplicates share one. They are not part of a generation: the store never reads them, old readers ignore
the folder, and a missing or damaged one is computed again from the audio. A file is a 4-byte magic
``VPK1``, a little-endian uint32 header length, a JSON header and the int8 pairs (overview, then fine);
the header records the pairs' CRC-32 so that ``vela-search check`` can find damage.
"""

from __future__ import annotations

import json
import os
import struct
import uuid
import zlib
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from vela_search.errors import IndexFormatError
from vela_search.peaks.builder import Peaks, peaks_of_wave
from vela_search.peaks.probe import probe_format

__all__ = [
    "PEAKS_DIR",
    "PeaksDamagedError",
    "check_peaks",
    "load_or_compute",
    "peaks_path",
    "prune_peaks",
    "read_peaks",
    "write_peaks",
]

PEAKS_DIR = "peaks"
MAGIC = b"VPK1"
VERSION = 1
_SUFFIX = ".peaks"


class PeaksDamagedError(IndexFormatError):
    """A peaks file that cannot be read back (it is computed again from the audio when needed)."""


def peaks_path(index_dir: str | os.PathLike[str], sha256: str) -> Path:
    """Where the peaks of the content ``sha256`` live in the index ``index_dir``."""
    if len(sha256) < 8 or not all(c in "0123456789abcdef" for c in sha256):
        raise ValueError(f"not a hex sha256: {sha256!r}")
    return Path(index_dir) / PEAKS_DIR / sha256[:2] / f"{sha256}{_SUFFIX}"


def _encode(peaks: Peaks) -> bytes:
    payload = peaks.overview.astype(np.int8).tobytes() + peaks.fine.astype(np.int8).tobytes()
    header = {
        "version": VERSION,
        "duration_s": peaks.duration_s,
        "sample_rate": peaks.sample_rate,
        "channels": peaks.channels,
        "overview": len(peaks.overview),
        "fine": len(peaks.fine),
        "fine_rate": peaks.fine_rate,
        "crc32": zlib.crc32(payload),
    }
    head = json.dumps(header, separators=(",", ":")).encode()
    return MAGIC + struct.pack("<I", len(head)) + head + payload


def write_peaks(index_dir: str | os.PathLike[str], sha256: str, peaks: Peaks) -> Path:
    """Write the peaks of ``sha256`` unless they are there already; returns their path.

    Written to a temporary name and renamed, so that a reader never sees half a file. Not fsynced: a
    peaks file lost in a crash is computed again.
    """
    final = peaks_path(index_dir, sha256)
    if final.is_file():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}-{final.name}")
    try:
        tmp.write_bytes(_encode(peaks))
        os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)
    return final


def read_peaks(path: str | os.PathLike[str]) -> Peaks:
    """Read one peaks file.

    Raises:
        PeaksDamagedError: a file that is truncated, of another format, or whose pairs fail their CRC.
    """
    data = Path(path).read_bytes()
    try:
        if data[:4] != MAGIC:
            raise ValueError("not a peaks file (bad magic)")
        (size,) = struct.unpack("<I", data[4:8])
        header = json.loads(data[8 : 8 + size])
        if int(header["version"]) > VERSION:
            raise ValueError(f"written by a newer version (peaks version {header['version']})")
        payload = data[8 + size :]
        n, m = int(header["overview"]), int(header["fine"])
        if len(payload) != 2 * (n + m):
            raise ValueError(f"holds {len(payload)} bytes of pairs, its header says {2 * (n + m)}")
        if zlib.crc32(payload) != int(header["crc32"]):
            raise ValueError("its pairs do not match their CRC-32")
        pairs = np.frombuffer(payload, np.int8).reshape(-1, 2)
        return Peaks(
            duration_s=float(header["duration_s"]),
            overview=pairs[:n].copy(),
            fine=pairs[n:].copy(),
            fine_rate=int(header["fine_rate"]),
            sample_rate=int(header["sample_rate"]),
            channels=int(header["channels"]),
        )
    except (ValueError, KeyError, TypeError, struct.error) as exc:
        raise PeaksDamagedError(f"peaks file {path} is damaged: {exc}") from None


def _all_peaks(index_dir: Path) -> Iterable[Path]:
    folder = index_dir / PEAKS_DIR
    return sorted(folder.glob(f"??/*{_SUFFIX}")) if folder.is_dir() else []


def check_peaks(
    index_dir: str | os.PathLike[str], *, remove: bool = False
) -> tuple[int, list[tuple[str, str]]]:
    """Read back every peaks file of an index: (files checked, [(relative path, reason)] of damaged ones).

    With ``remove``, damaged files are deleted (they are computed again from the audio when needed).
    """
    root = Path(index_dir)
    damaged = []
    paths = list(_all_peaks(root))
    for path in paths:
        try:
            read_peaks(path)
        except (PeaksDamagedError, OSError) as exc:
            damaged.append((path.relative_to(root).as_posix(), str(exc).split(" is damaged: ")[-1]))
            if remove:
                path.unlink(missing_ok=True)
    return len(paths), damaged


def prune_peaks(index_dir: str | os.PathLike[str], live: set[str]) -> int:
    """Delete the peaks of contents not in ``live`` (sha256 of the indexed files); returns how many."""
    removed = 0
    for path in _all_peaks(Path(index_dir)):
        if path.name[: -len(_SUFFIX)] not in live:
            path.unlink(missing_ok=True)
            removed += 1
    return removed


def load_or_compute(
    index_dir: str | os.PathLike[str], sha256: str | None, audio: str | os.PathLike[str]
) -> Peaks:
    """The stored peaks of a content, or (index written without them, or damaged) computed and cached.

    Raises:
        AudioDecodeError: the peaks must be computed and the audio cannot be decoded.
    """
    from vela_search.audio import decode_audio

    path = peaks_path(index_dir, sha256) if sha256 else None
    if path is not None and path.is_file():
        try:
            return read_peaks(path)
        except PeaksDamagedError:
            path.unlink(missing_ok=True)
    fmt = probe_format(audio)
    peaks = peaks_of_wave(decode_audio(audio), sample_rate=fmt.sample_rate, channels=fmt.channels)
    if sha256:
        try:
            write_peaks(index_dir, sha256, peaks)
        except OSError:
            pass  # a read-only index: the peaks are still answered, just not cached
    return peaks
