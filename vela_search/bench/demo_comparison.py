"""Comparing demonstration sets on a retrieval benchmark with one model load.

Every set gets its own :class:`~vela_search.embedding.embedder.VelaEmbedder` over the **same** loaded
backbone (the demo prefix is the only thing that differs), and :func:`run_retrieval_benchmark` scores each
in turn. All sets are checked against the dataset's longest clip before anything is embedded, so a set
that does not fit fails in seconds, not after the others have run.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from vela_search.bench.runner import MAX_CLIP_SECONDS, SAMPLE_RATE, ProgressCallback, run_retrieval_benchmark
from vela_search.errors import AudioDecodeError, TokenBudgetError

if TYPE_CHECKING:
    from vela_search.bench.datasets import RetrievalDataset
    from vela_search.bench.runner import BenchmarkReport
    from vela_search.embedding.backbone import Backbone
    from vela_search.embedding.demos import DemoSet
    from vela_search.embedding.embedder import VelaEmbedder
    from vela_search.store import AudioIndex

__all__ = ["DemoComparison", "DemoRun", "compare_demo_sets"]


@dataclass
class DemoRun:
    """One demo set's benchmark run."""

    demos: str  # the --demos value
    n_demos: int
    n_audio_demos: int
    prefix_tokens: int
    report: BenchmarkReport

    def to_dict(self) -> dict[str, Any]:
        return {
            "demos": self.demos,
            "n_demos": self.n_demos,
            "n_audio_demos": self.n_audio_demos,
            "prefix_tokens": self.prefix_tokens,
            "report": self.report.to_dict(),
        }


@dataclass
class DemoComparison:
    """The runs of several demo sets on one dataset, in the order given."""

    dataset: str
    split: str
    runs: list[DemoRun]

    def to_dict(self) -> dict[str, Any]:
        return {"dataset": self.dataset, "split": self.split, "runs": [r.to_dict() for r in self.runs]}


def compare_demo_sets(
    dataset: RetrievalDataset,
    backbone: Backbone,
    demo_sets: Sequence[tuple[str, DemoSet]],
    *,
    batch_tokens: int | None = None,
    index: AudioIndex | None = None,
    progress: Callable[[str, str, int, int], None] | None = None,
) -> DemoComparison:
    """Score ``dataset`` behind each demo set, sharing one loaded backbone.

    Args:
        dataset: The clips and captions.
        backbone: The loaded model (e.g. ``VelaEmbedder.from_pretrained(...).backbone``).
        demo_sets: ``(name, set)`` pairs, e.g. the ``--demos`` values and ``DemoSet.load`` of each.
        batch_tokens: As for :class:`VelaEmbedder`.
        index: An index to reuse vectors from where its fingerprint matches a set's.
        progress: Called as ``progress(name, stage, done, total)``.

    Raises:
        TokenBudgetError: A set leaves no room for the dataset's longest clip (checked before any run).
    """
    from vela_search.embedding.embedder import EmbedItem, VelaEmbedder

    embedders = [
        (name, VelaEmbedder(backbone, demos, batch_tokens=batch_tokens, demos_spec=name))
        for name, demos in demo_sets
    ]
    longest = _longest_clip_samples(dataset)
    probe = EmbedItem("audio", wave=np.zeros(longest, dtype=np.float32))
    for name, embedder in embedders:
        try:
            embedder.check_budget([probe])
        except TokenBudgetError as exc:
            raise TokenBudgetError(
                f"demo set {name} leaves no room for the longest clip of {dataset.name} "
                f"({longest / SAMPLE_RATE:.1f} s): {exc}"
            ) from None
    runs = []
    for name, embedder in embedders:
        step: ProgressCallback | None = functools.partial(progress, name) if progress is not None else None
        report = run_retrieval_benchmark(dataset, embedder, index=index, progress=step)
        runs.append(_run(name, embedder, report))
        embedder.refresh_prefix()  # free this set's cached prefix before the next one is built
    return DemoComparison(dataset=dataset.name, split=dataset.split, runs=runs)


def _run(name: str, embedder: VelaEmbedder, report: BenchmarkReport) -> DemoRun:
    return DemoRun(
        demos=name,
        n_demos=len(embedder.demos),
        n_audio_demos=embedder.demos.n_audio,
        prefix_tokens=embedder.prefix_length,
        report=report,
    )


def _longest_clip_samples(dataset: RetrievalDataset) -> int:
    """The longest clip in samples, capped at 30 s (clips that cannot be read are left to the run)."""
    from vela_search.audio import audio_duration

    longest = 0.0
    for path in dataset.audio_paths:
        try:
            longest = max(longest, audio_duration(path))
        except AudioDecodeError:
            continue
    return max(1, round(min(longest, MAX_CLIP_SECONDS) * SAMPLE_RATE))
