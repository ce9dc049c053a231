"""The indexing run's side of peaks: store a landed file's peaks, drop those of contents gone.

Peaks never fail a run: a file whose peaks cannot be written is still indexed, and its peaks are computed
on demand when the page asks for them.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from vela_search.peaks.builder import PeakBuilder
from vela_search.peaks.files import peaks_path, prune_peaks, read_peaks, write_peaks
from vela_search.peaks.probe import SourceFormat, probe_format

__all__ = ["copy_peaks", "prune_to_files", "store_peaks"]

log = logging.getLogger("vela_search.peaks")


def store_peaks(
    index_dir: str | os.PathLike[str], sha256: str | None, builder: PeakBuilder, duration_s: float, path: str
) -> None:
    """Write the peaks of a file that landed (content ``sha256``, decoded ``duration_s`` long).

    Nothing is written when the builder saw no samples (the Ray stage decodes on the workers): such
    peaks are computed on demand.
    """
    if not sha256 or builder.samples_seen == 0:
        return
    try:
        fmt = probe_format(path) if os.path.isfile(path) else SourceFormat()
        write_peaks(
            index_dir, sha256, builder.finish(duration_s, sample_rate=fmt.sample_rate, channels=fmt.channels)
        )
    except (OSError, ValueError) as exc:
        log.warning("peaks of %s not stored (computed when asked for): %s", path, exc)


def copy_peaks(index_dir: str | os.PathLike[str], from_sha256: str | None, to_sha256: str | None) -> None:
    """Store the peaks of content ``from_sha256`` for ``to_sha256`` too (the same audio, other tags).

    Missing or unreadable peaks are left to be computed on demand.
    """
    if not from_sha256 or not to_sha256 or from_sha256 == to_sha256:
        return
    try:
        write_peaks(index_dir, to_sha256, read_peaks(peaks_path(index_dir, from_sha256)))
    except (OSError, ValueError):
        pass


def prune_to_files(index_dir: str | os.PathLike[str], files: Any) -> int:
    """Delete the peaks of contents that no row of the files table (a pyarrow Table) holds as indexed."""
    table = files.select(["sha256", "status"]).to_pydict()
    live = {
        sha
        for sha, status in zip(table["sha256"], table["status"], strict=True)
        if sha and status == "indexed"
    }
    try:
        return prune_peaks(index_dir, live)
    except OSError as exc:
        log.warning("peaks of removed files not deleted: %s", exc)
        return 0
