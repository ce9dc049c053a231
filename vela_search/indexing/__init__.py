"""Indexing an audio collection: files → windows → embeddings → committed shards, incremental and resumable.

The entry point is :func:`index_paths` (:func:`index_paths_on_ray` spreads decoding and embedding over a Ray
cluster); :func:`preview_index` says what a run would do without running it,
:func:`compact_index` and :func:`index_info` maintain and describe an index, and
:func:`measure_pipeline_overlap` times how well decoding hides behind embedding, and
:class:`IndexWatcher` keeps an index following its folders (``index --watch``).
"""

from __future__ import annotations

from vela_search.indexing.cluster import index_paths_on_ray
from vela_search.indexing.maintenance import CompactReport, compact_index, index_info
from vela_search.indexing.options import (
    DEFAULT_COMMIT_EVERY,
    DEFAULT_FACTORY,
    DEFAULT_HOP_S,
    DEFAULT_WINDOW_S,
    IndexOptions,
    Segmentation,
    SegmentationMismatchError,
)
from vela_search.indexing.pipeline import index_paths
from vela_search.indexing.preview import IndexPreview, preview_index
from vela_search.indexing.profile import PipelineTiming, measure_pipeline_overlap
from vela_search.indexing.report import IndexProgress, IndexReport
from vela_search.indexing.spec import EmbedderSpec, choose_spec, recorded_spec
from vela_search.indexing.watch import IndexWatcher, WatchEvent, WatchSettings

__all__ = [
    "DEFAULT_COMMIT_EVERY",
    "DEFAULT_FACTORY",
    "DEFAULT_HOP_S",
    "DEFAULT_WINDOW_S",
    "CompactReport",
    "EmbedderSpec",
    "IndexOptions",
    "IndexPreview",
    "IndexProgress",
    "IndexReport",
    "IndexWatcher",
    "PipelineTiming",
    "Segmentation",
    "SegmentationMismatchError",
    "WatchEvent",
    "WatchSettings",
    "choose_spec",
    "compact_index",
    "index_info",
    "index_paths",
    "index_paths_on_ray",
    "measure_pipeline_overlap",
    "preview_index",
    "recorded_spec",
]
