"""The settings of an indexing run, in one object, and the segmentation an index records.

:class:`IndexOptions` is what ``vela-search index`` (with or without ``--ray``) and the library entry points
pass down to :func:`~vela_search.indexing.pipeline.run_index`: one object instead of a dozen keyword
arguments forwarded by hand through every layer. :class:`Segmentation` is the part of it that decides which
segments a file gives (window, hop, and the length up to which a file is one segment); an index records it
in its manifest (docs/format.md, "Build record"), later runs reuse it, and a run that would cut files
differently into an existing index is refused with the fix (``--rebuild``), as another embedder is.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from vela_search.audio import plan_windows
from vela_search.errors import VelaError
from vela_search.indexing.report import ProgressCallback

if TYPE_CHECKING:
    from vela_search.store.index_choice import ChoiceLimits

DEFAULT_WINDOW_S = 10.0
DEFAULT_HOP_S = 5.0
DEFAULT_COMMIT_EVERY = 256
DEFAULT_COMMIT_INTERVAL_S = 60.0
DEFAULT_FACTORY = "auto"  # exact SQfp16 while it fits and is fast, then compressed codes + re-rank
# A file up to this long is one segment (what the audio encoder reads at once).
SINGLE_SEGMENT_MAX_S = 30.0
# The manifest key of the segmentation.
SEGMENTATION_KEY = "segmentation"


class SegmentationMismatchError(VelaError):
    """A run would cut files into other segments than the index holds (use ``--rebuild``)."""


@dataclass(frozen=True)
class Segmentation:
    """How files are cut into segments: ``window_s``/``hop_s`` for files longer than ``single_max_s``."""

    window_s: float = DEFAULT_WINDOW_S
    hop_s: float = DEFAULT_HOP_S
    single_max_s: float = SINGLE_SEGMENT_MAX_S

    def to_dict(self) -> dict[str, float]:
        """As recorded in the manifest."""
        return {k: float(v) for k, v in asdict(self).items()}

    @classmethod
    def from_manifest(cls, data: dict[str, Any] | None) -> Segmentation | None:
        """The segmentation a manifest records, or None (an index from before it was recorded)."""
        raw = (data or {}).get(SEGMENTATION_KEY)
        if not isinstance(raw, dict):
            return None
        try:
            return cls(float(raw["window_s"]), float(raw["hop_s"]), float(raw["single_max_s"]))
        except (KeyError, TypeError, ValueError):
            return None

    def flags(self) -> str:
        """The command-line flags that give this segmentation."""
        return f"--window {self.window_s:g} --hop {self.hop_s:g}"


@dataclass(frozen=True)
class IndexOptions:
    """The settings of one indexing run (the same for the in-process and the Ray paths).

    Attributes:
        window_s: window length for files longer than 30 s; None: the index's recorded one (10 s for a new
            index).
        hop_s: hop between windows; None: the index's recorded one (5 s for a new index).
        commit_every: commit after at least this many new segments (at the next file boundary).
        commit_interval_s: also commit when this much time has passed since the last commit.
        prune: remove files that are gone from disk (only under the run's roots).
        rebuild: re-embed every file into a staged generation that replaces the current one when complete.
        factory: "auto" or a FAISS index-factory string, for a new index or a rebuild.
        max_index_memory: memory budget in bytes of an automatic index's search index.
        compact: merge small shards at the end when there are many.
        maintenance: "background" (tier merges and codes re-training off the commit path, finished
            before the run ends) or "inline" (inside the commit that makes them due).
        choice_limits: thresholds of the automatic index choice (benchmarks and tests shrink them).
        progress: called with an :class:`~vela_search.indexing.report.IndexProgress` as the run advances.
        settle_s: leave files written to less than this many seconds ago for a later run (a file still
            being copied is not embedded half-written; ``index --watch`` sets it); 0: take every file.
        keep_missing_roots: a given folder that is missing is left as it is (an unmounted drive whose
            files must not be pruned; ``index --watch`` sets it) instead of having its files removed.
    """

    window_s: float | None = None
    hop_s: float | None = None
    commit_every: int = DEFAULT_COMMIT_EVERY
    commit_interval_s: float = DEFAULT_COMMIT_INTERVAL_S
    prune: bool = True
    rebuild: bool = False
    factory: str | None = None
    max_index_memory: int | None = None
    compact: bool = True
    maintenance: str = "background"
    choice_limits: ChoiceLimits | None = None
    progress: ProgressCallback | None = None
    settle_s: float = 0.0
    keep_missing_roots: bool = False

    def validate(self) -> None:
        """Check window, hop and commit interval before anything slow happens.

        Raises:
            VelaError: naming the bad option.
        """
        validate_options(self.window_s, self.hop_s, self.commit_every)
        if self.maintenance not in ("inline", "background"):
            raise VelaError(f"maintenance must be 'inline' or 'background', not {self.maintenance!r}")

    def segmentation(
        self, recorded: Segmentation | None, *, default: Segmentation | None = None, index_dir: str = ""
    ) -> Segmentation:
        """The segmentation of this run into a generation that records ``recorded`` (None: nothing yet).

        Unset window and hop take the recorded values, else ``default`` (a fresh rebuild: the current
        generation's), else 10 s and 5 s. A rebuild may change them; any other run must cut files as the
        index does.

        Raises:
            SegmentationMismatchError: a given window or hop differs from the recorded one (not a rebuild).
        """
        base = recorded or default or Segmentation()
        wanted = Segmentation(
            self.window_s if self.window_s is not None else base.window_s,
            self.hop_s if self.hop_s is not None else base.hop_s,
            SINGLE_SEGMENT_MAX_S,
        )
        validate_options(wanted.window_s, wanted.hop_s, self.commit_every)
        if recorded is not None and wanted != recorded and not self.rebuild:
            raise SegmentationMismatchError(
                f"index {index_dir} cuts files with {recorded.flags()}; this run asks for {wanted.flags()}, "
                "which would give other segments beside the stored ones. Leave out --window/--hop to use "
                f"the index's, or re-segment the whole collection with `vela-search index --rebuild "
                f"{wanted.flags()}` (same --index); the current index keeps answering queries until the "
                "rebuild completes."
            )
        return wanted


def validate_options(window_s: float | None, hop_s: float | None, commit_every: int) -> None:
    """Check window, hop (None: not given) and commit interval before anything slow happens.

    Raises:
        VelaError: naming the bad option.
    """
    if window_s is not None and not (math.isfinite(window_s) and 0 < window_s <= SINGLE_SEGMENT_MAX_S):
        raise VelaError(
            f"--window must be more than 0 and at most {SINGLE_SEGMENT_MAX_S:g} seconds, got {window_s:g}"
        )
    if hop_s is not None and not (math.isfinite(hop_s) and 0 < hop_s):
        raise VelaError(f"--hop must be a positive number of seconds, got {hop_s:g}")
    if window_s is not None and hop_s is not None:
        if hop_s > window_s:
            raise VelaError(
                f"--hop ({hop_s:g} s) must not exceed --window ({window_s:g} s): audio would be skipped"
            )
        plan_windows(60.0, window_s, hop_s, SINGLE_SEGMENT_MAX_S)
    if commit_every < 1:
        raise VelaError(f"--commit-every must be at least 1 segment, got {commit_every}")
