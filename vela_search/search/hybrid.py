"""Search by words and by sound together: ``words`` and ``hybrid`` modes, and field filters for any mode.

- ``words``: BM25 over each file's words (:mod:`vela_search.search.lexical`), one hit per file (its first
  segment); the score is the BM25 score divided by the best one of the query, in (0, 1].
- ``hybrid``: the Vela vector ranking (the query embedded in ``caption`` mode, one hit per file) and the
  BM25 ranking fused per file by reciprocal rank fusion: score = sum over the two rankings of
  ``1 / (RRF_K + rank)`` (RRF_K = 60, ranks from 1; a file missing from a ranking gets nothing from it).
  The words ranking contributes its top ``pool`` files (10 x k, at least 100, at most 1,000), the sound
  ranking its top 2 x k (at least 20; ``pool`` with field filters). A file found by sound keeps its best
  segment's timestamps; one found only by its words points at its first segment.
- Field filters (``where``) apply to every mode: the lexical side filters exactly; the vector side keeps
  the files that pass among its top ``pool`` (the vector modes search ``pool`` files, then filter).
"""

from __future__ import annotations

import dataclasses
import threading
from typing import TYPE_CHECKING

import numpy as np

from vela_search.search.hits import Hit
from vela_search.search.lexical import LexicalHit, LexicalIndex, snapshot_key
from vela_search.search.options import SearchOptions
from vela_search.search.validation import MAX_K, check_not_empty

if TYPE_CHECKING:
    from vela_search.search.searcher import Searcher
    from vela_search.search.where import Condition
    from vela_search.store import AudioIndex

__all__ = ["BUILD_ON_QUERY_FILES", "RRF_K", "WORD_MODES", "attach_words", "lexical_for", "search_with_words"]

WORD_MODES = ("words", "hybrid")
RRF_K = 60
_ALLOW_CAP = 1_000_000
# A vector-mode query builds a missing lexical index (to show the hits' words) up to this many files.
BUILD_ON_QUERY_FILES = 100_000
_cache: dict[tuple[str, str], LexicalIndex] = {}
_cache_lock = threading.Lock()


def lexical_for(index: AudioIndex) -> LexicalIndex:
    """The lexical index of this snapshot (opened or built once per process and generation)."""
    key = (str(index.root), snapshot_key(index))
    with _cache_lock:
        found = _cache.get(key)
        if found is None:
            found = LexicalIndex.for_index(index)
            for old in [k for k in _cache if k[0] == key[0]]:
                del _cache[old]
            _cache[key] = found
    return found


def _pool(k: int) -> int:
    return min(MAX_K, max(100, 10 * k))


def search_with_words(
    searcher: Searcher,
    text: str,
    *,
    mode: str,
    where: list[Condition],
    k: int,
    path_glob: str | None = None,
    duration: tuple[float | None, float | None] | None = None,
    min_score: float | None = None,
    vector: np.ndarray | None = None,
    nprobe: int | None = None,
    refine: int | None = None,
    exact: bool = False,
) -> list[Hit]:
    """A text query in ``words``/``hybrid`` mode, or a vector-mode text query with field filters.

    The query and its options were checked where the request entered (:meth:`QueryRequest.validate`;
    ``path_glob`` normalised as :class:`SearchOptions` holds it): they are not checked again here.
    ``vector``: the query's embedding when the caller made it already (the service's micro-batches);
    ``nprobe``, ``refine``, ``exact``: the vector search's accuracy knobs, as in :meth:`Searcher.search`.

    Raises:
        QueryError, EmptyIndexError: as :meth:`Searcher.search`.
    """
    index = searcher.index
    lex = lexical_for(index)
    pool = _pool(k)
    lexical: list[LexicalHit] = []
    if mode in WORD_MODES:
        lexical = _filtered(index, lex.search(text, where, pool), path_glob, duration)
    by_sound: list[Hit] = []
    if mode != "words":
        vmode = "caption" if mode == "hybrid" else mode
        # The sound ranking's depth: 2 x k (at least 20) for fusion, which keeps hybrid's vector search
        # close to a plain one's cost (docs/benchmarks.md); the full pool when field filters follow.
        depth = pool if where else min(MAX_K, max(2 * k, 20))
        # The request was checked where it entered: the Searcher's trusted calls, no second check.
        options = SearchOptions(
            k=depth, path_glob=path_glob, duration=duration, nprobe=nprobe, refine=refine, exact=exact
        )
        if vector is None:
            from vela_search.embedding.embedder import EmbedItem

            check_not_empty(index)  # before the model runs
            vector = searcher.embed([EmbedItem(vmode, text=text)])
        by_sound = searcher.search_checked(vector, options)[0]
        if where:
            allowed = {h.path for h in lex.search(None, where, _ALLOW_CAP)}
            by_sound = [h for h in by_sound if h.path in allowed]
    if mode == "words":
        best = lexical[0].score if lexical else 1.0
        ranked = [(h.score / best, h.path) for h in lexical]
    elif mode == "hybrid":
        ranked = _fuse([h.path for h in by_sound], [h.path for h in lexical])
    else:
        ranked = [(h.score, h.path) for h in by_sound]
    if min_score is not None:
        ranked = [(s, p) for s, p in ranked if s >= min_score]
    by_path = {h.path: h for h in by_sound}
    first_ids = {h.path: h.segment_id for h in lexical}
    chosen = ranked[:k]
    words_only = [first_ids[p] for _, p in chosen if p not in by_path]
    rows = dict(zip(words_only, searcher.index.segment_rows(words_only), strict=True))
    fields = {h.path: h.fields for h in lexical}
    missing = [p for _, p in chosen if p not in fields]
    fields.update(lex.fields_of(missing) if missing else {})
    hits = []
    for rank, (score, path) in enumerate(chosen, start=1):
        hit = by_path.get(path) or _lexical_hit(path, first_ids[path], rows.get(first_ids[path], {}))
        hits.append(dataclasses.replace(hit, score=score, rank=rank, words=fields.get(path, {})))
    return hits


def _fuse(*rankings: list[str]) -> list[tuple[float, str]]:
    scores: dict[str, float] = {}
    for ranking in rankings:
        for rank, path in enumerate(ranking, start=1):
            scores[path] = scores.get(path, 0.0) + 1.0 / (RRF_K + rank)
    # Ties (same fused score) keep the path order, so results are deterministic.
    return sorted(((s, p) for p, s in scores.items()), key=lambda sp: (-sp[0], sp[1]))


def _filtered(
    index: AudioIndex,
    hits: list[LexicalHit],
    path_glob: str | None,
    duration: tuple[float | None, float | None] | None,
) -> list[LexicalHit]:
    if path_glob is None and duration is None:
        return hits
    from vela_search.search.validation import normalize_glob
    from vela_search.store.shards import compile_glob

    pattern = compile_glob(normalize_glob(path_glob)) if path_glob else None  # type: ignore[arg-type]
    lengths = {}
    if duration is not None:
        files = index.files()
        lengths = dict(zip(files["path"].to_pylist(), files["duration_s"].to_pylist(), strict=True))
    out = []
    for hit in hits:
        if pattern is not None and not pattern.match(hit.path):
            continue
        if duration is not None:
            length, (low, high) = lengths.get(hit.path), duration
            if length is None or (low is not None and length < low) or (high is not None and length > high):
                continue
        out.append(hit)
    return out


def _lexical_hit(path: str, segment_id: int, row: dict) -> Hit:
    """A hit for a file found by its words only: its first segment."""
    duration = row.get("duration_s")
    return Hit(
        path=path,
        start_s=float(row.get("start_s") or 0.0),
        end_s=float(row["end_s"]) if row.get("end_s") is not None else float("nan"),
        score=0.0,
        duration_s=None if duration is None else float(duration),
        segment_id=segment_id,
        rank=0,
        paths=(path,),
        root=row.get("root"),
    )


def attach_words(index: AudioIndex, hits: list[Hit], *, build_limit: int = BUILD_ON_QUERY_FILES) -> list[Hit]:
    """The hits with their files' words (what ``query`` and the page show under each hit).

    The words come from the generation's lexical index; a vector-mode query builds it only for a library
    of at most ``build_limit`` files (seconds), so that a first query of a large index is never held up
    by it: there the hits come back without words until a words or hybrid query has built it.
    """
    if not hits or all(h.words for h in hits):
        return hits
    key = (str(index.root), snapshot_key(index))
    built = key in _cache or LexicalIndex.exists(index)
    if not built and index.files().num_rows > build_limit:
        return hits
    fields = lexical_for(index).fields_of([h.path for h in hits])
    return [h if h.words else dataclasses.replace(h, words=fields.get(h.path, {})) for h in hits]
