"""The options every search takes (k, filters, grouping, accuracy knobs), checked once where they enter.

:meth:`SearchOptions.checked` is the one check; what it returns is taken as it is by everything under it
(`Searcher.search_checked`, the words and hybrid search). Code that derives options from checked ones
(a deeper candidate pool, the re-ranked top N) builds them with the constructor or ``dataclasses.replace``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from vela_search.search.validation import (
    DEFAULT_K,
    check_duration,
    check_exact,
    check_k,
    check_min_score,
    check_nprobe,
    check_refine,
    normalize_glob,
)

__all__ = ["SearchOptions"]


@dataclass(frozen=True)
class SearchOptions:
    """Checked options of one search; build it from a caller's values with :meth:`checked`.

    Attributes:
        k: hits, 1..MAX_K (files when grouped, segments otherwise).
        min_score: drop hits scoring below this.
        path_glob: the normalised path filter (see :func:`normalize_glob`).
        duration: only files whose length in seconds lies in ``(min, max)``.
        group: one hit per file (its best segment).
        nprobe: compressed indexes: IVF lists probed first (None: the trained value; widened
            automatically when a filter leaves too few candidates).
        refine: compressed indexes: candidates re-scored exactly (None: the trained depth, at least
            10 x k).
        exact: scan every stored vector (exact answers, slower on large indexes).
    """

    k: int = DEFAULT_K
    min_score: float | None = None
    path_glob: str | None = None
    duration: tuple[float | None, float | None] | None = None
    group: bool = True
    nprobe: int | None = None
    refine: int | None = None
    exact: bool = False

    @classmethod
    def checked(cls, **options: Any) -> SearchOptions:
        """The options, each checked (the one place the search methods check them).

        Raises:
            QueryError: k, min_score, duration, nprobe or refine out of bounds, an empty path filter, a
                non-boolean ``exact``.
        """
        duration = options.get("duration")
        return cls(
            k=check_k(options.get("k", DEFAULT_K)),
            min_score=check_min_score(options.get("min_score")),
            path_glob=normalize_glob(options.get("path_glob")),
            duration=None if duration is None else check_duration(duration),
            group=bool(options.get("group", True)),
            nprobe=check_nprobe(options.get("nprobe")),
            refine=check_refine(options.get("refine")),
            exact=check_exact(options.get("exact", False)),
        )

    def store_options(self) -> dict[str, Any]:
        """Keyword arguments of `AudioIndex.search` for these options."""
        ranges = {"duration_s": self.duration} if self.duration is not None else None
        return {
            "path_glob": self.path_glob,
            "ranges": ranges,
            "exact": self.exact,
            "nprobe": self.nprobe,
            "refine": self.refine,
        }
