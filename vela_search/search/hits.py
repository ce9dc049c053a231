"""Search results: the `Hit` dataclass and how its path and timestamps are shown."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import PurePath
from typing import Any, TypedDict

__all__ = ["Hit", "HitRecord", "clamp_score", "format_timestamp", "hit_record", "relative_to_root"]


def clamp_score(score: float) -> float:
    """A cosine similarity clamped to [-1, 1] (stored fp16 vectors are unit-norm only to ~1e-4); NaN stays."""
    return min(1.0, max(-1.0, float(score))) if not math.isnan(score) else float(score)


class HitRecord(TypedDict):
    """A hit as JSON: what ``vela-search query --json`` prints and the HTTP API returns (one schema).

    ``notice`` is a warning that applies to every hit (the tiny random model's), otherwise None.
    """

    rank: int
    score: float
    path: str
    display_path: str
    start_s: float
    end_s: float
    duration_s: float | None
    segment_id: int
    paths: list[str]
    root: str | None
    words: dict[str, str]
    judge: float | None
    notice: str | None


@dataclass(frozen=True)
class Hit:
    """One search result: a segment of a file, or the best segment of a file when grouped.

    Attributes:
        path: the file (as stored in the index; absolute when indexed from an absolute root).
        start_s: start of the segment in seconds.
        end_s: end of the segment in seconds.
        score: cosine similarity of the query and the segment (unit vectors), in [-1, 1]; comparable only
            between results of one index and embedder.
        duration_s: duration of the whole file in seconds (None when unknown).
        segment_id: the segment's id in the index.
        rank: 1 for the best hit.
        paths: every indexed path with the same content (``path`` first), duplicates included.
        root: the directory the file was indexed from, when recorded.
        file: the file's row of the index's files table (size, mtime_ns, sha256, status, ...), or {}.
        words: the file's words (name and metadata fields, see vela_search.audio.metadata), or {} when
            they were not read for this result.
        judge: with re-ranking, the audio LLM's probability that the segment matches the query (yes
            against no); None when the hit was not judged (see :mod:`vela_search.search.rerank`).
        generation: the index generation whose snapshot produced the hit (None for a hit read back
            from its JSON record).
    """

    path: str
    start_s: float
    end_s: float
    score: float
    duration_s: float | None
    segment_id: int
    rank: int
    paths: tuple[str, ...] = ()
    root: str | None = None
    file: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)
    words: dict[str, str] = field(default_factory=dict, compare=False, repr=False)
    judge: float | None = None
    generation: int | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        # Vectors are stored as fp16, so a cosine can come back as 1.00005: clamp to the cosine's range
        # here, where every result (text, JSON, the service) is made.
        object.__setattr__(self, "score", clamp_score(self.score))

    @property
    def display_path(self) -> str:
        """``path`` relative to the indexed root when it lies inside it, else ``path`` itself."""
        return relative_to_root(self.path, self.root)

    def to_dict(self) -> dict[str, Any]:
        """The hit as JSON-able values (the form ``vela-search query --json`` prints)."""
        return {
            "rank": self.rank,
            "score": self.score,
            "path": self.path,
            "display_path": self.display_path,
            "start_s": self.start_s,
            "end_s": self.end_s,
            "duration_s": self.duration_s,
            "segment_id": self.segment_id,
            "paths": list(self.paths),
            "root": self.root,
            "words": dict(self.words),
            "judge": self.judge,
        }

    @classmethod
    def from_record(cls, record: HitRecord | dict[str, Any]) -> Hit:
        """A hit back from its JSON record (the files-table row is not part of it)."""
        return cls(
            path=record["path"],
            start_s=float(record["start_s"]),
            end_s=float(record["end_s"]) if record["end_s"] is not None else float("nan"),
            score=float(record["score"]),
            duration_s=None if record["duration_s"] is None else float(record["duration_s"]),
            segment_id=int(record["segment_id"]),
            rank=int(record["rank"]),
            paths=tuple(record["paths"]),
            root=record["root"],
            words=dict(record.get("words") or {}),
            judge=record.get("judge"),
        )


def hit_record(hit: Hit, notice: str | None) -> HitRecord:
    """The JSON record of a hit, with the notice that applies to the whole result."""
    return HitRecord(**hit.to_dict(), notice=notice)  # type: ignore[typeddict-item]


def relative_to_root(path: str, root: str | None) -> str:
    """``path`` relative to ``root`` (POSIX separators kept as stored) when inside it, else ``path``."""
    if not root:
        return path
    try:
        return PurePath(path).relative_to(PurePath(root)).as_posix()
    except ValueError:
        return path


def format_timestamp(seconds: float | None) -> str:
    """Seconds as ``mm:ss`` (``h:mm:ss`` from one hour), rounded half up to whole seconds (2.5 s shows
    00:03, as on the page: the one rounding rule of the CLI and the page); ``-`` when None."""
    if seconds is None or not math.isfinite(seconds):
        return "-"
    total = max(0, math.floor(seconds + 0.5))
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes:02d}:{secs:02d}"
