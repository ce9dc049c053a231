"""Search: a query (caption, long text, instruction or audio clip) → the index's embedder → store → hits.

A :class:`Searcher` holds one index snapshot and the embedder that built it, checked by fingerprint, and is
meant to be reused: the model, the demonstrations' key/value prefix and the store's (GPU) copies of the
shards are loaded once, so only the first query pays for them. By default hits are grouped per file (the
best segment of each file, with its timestamps); ``group=False`` lists every matching segment.

Modules:

- ``searcher``: the :class:`Searcher` (text, audio and vector queries, over-fetch for grouping).
- ``hits``: the :class:`Hit` result and its display helpers.
- ``grouping``: turning the store's segment hits into per-file hits with duplicate paths.
- ``request``: a :class:`QueryRequest`, checked once where it enters (:class:`CheckedQuery`), and
  :func:`run_query`, shared by the CLI and the HTTP service.
- ``validation``: checks that need no model (k, mode, text, path filter, an empty index).
- ``rerank``: the audio LLM judges the top N hits against the query; the order combines both scores.
- ``clips``: the audio clip a query by example is embedded from.
- ``index_embedder``: which embedder an index needs, and refusing one that does not match.
"""

from __future__ import annotations

from vela_search.search.clips import AUDIO_QUERY_WINDOW_S, MAX_AUDIO_QUERY_S, load_query_clip
from vela_search.search.hits import Hit, HitRecord, format_timestamp, hit_record, relative_to_root
from vela_search.search.index_embedder import check_compatible, embedder_spec, load_index_embedder
from vela_search.search.request import (
    CheckedOptions,
    CheckedQuery,
    QueryRequest,
    hits_from_records,
    run_query,
)
from vela_search.search.rerank import DEFAULT_RERANK, MAX_RERANK, check_rerank, rerank_hits
from vela_search.search.searcher import Searcher
from vela_search.search.validation import (
    DEFAULT_K,
    MAX_K,
    TEXT_MODES,
    check_duration,
    check_fits,
    check_k,
    check_min_score,
    check_not_empty,
    check_query_fits,
    check_text_query,
    normalize_glob,
)

__all__ = [
    "AUDIO_QUERY_WINDOW_S",
    "DEFAULT_K",
    "DEFAULT_RERANK",
    "MAX_AUDIO_QUERY_S",
    "MAX_K",
    "MAX_RERANK",
    "TEXT_MODES",
    "CheckedOptions",
    "CheckedQuery",
    "Hit",
    "HitRecord",
    "QueryRequest",
    "Searcher",
    "check_compatible",
    "check_duration",
    "check_fits",
    "check_k",
    "check_min_score",
    "check_not_empty",
    "check_rerank",
    "check_query_fits",
    "check_text_query",
    "embedder_spec",
    "format_timestamp",
    "hit_record",
    "hits_from_records",
    "load_index_embedder",
    "load_query_clip",
    "normalize_glob",
    "relative_to_root",
    "rerank_hits",
    "run_query",
]
