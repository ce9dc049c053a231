"""Search by words and by sound together: ``words`` and ``hybrid`` modes, and field filters for any mode.

- ``words``: BM25 over each file's words (:mod:`vela_search.search.lexical`), one hit per file (its first
  segment); the score is the BM25 score divided by the best one of the query, in (0, 1].
- ``hybrid``: the Vela vector ranking (the query embedded in ``caption`` mode, one hit per file) and the
  BM25 ranking fused per file by reciprocal rank fusion: score = sum over the two rankings of
  ``1 / (RRF_K + rank)`` (RRF_K = 60, ranks from 1; a file missing from a ranking gets nothing from it).
  The words ranking contributes its top ``pool`` files (10 x k, at least 100, at most 1,000), the sound
  ranking its top 2 x k (at least 20; ``pool`` with field filters). A file found by sound keeps its best
  segment's timestamps; one found only by its words points at its first segment.
- Field filters (``where``) apply to every mode, exactly: the lexical side filters in the engine; the
  vector side scores the matching files' stored vectors directly when they are few (``SCAN_FILES``), and
  otherwise searches the sound ranking deeper until enough of its files match (see
  :func:`filtered_by_sound`).
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from vela_search.search.hits import Hit
from vela_search.search.lexical import LexicalHit, LexicalIndex, snapshot_key
from vela_search.search.options import SearchOptions
from vela_search.search.validation import MAX_K, check_not_empty

if TYPE_CHECKING:
    from vela_search.search.searcher import Searcher
    from vela_search.search.where import Condition
    from vela_search.store import AudioIndex

__all__ = [
    "BUILD_ON_QUERY_FILES",
    "RRF_K",
    "SCAN_FILES",
    "WORD_MODES",
    "attach_words",
    "filtered_by_sound",
    "lexical_for",
    "prepare_words",
    "scan_files",
    "search_with_words",
]

WORD_MODES = ("words", "hybrid")
RRF_K = 60
# A field filter matching at most this many files is answered by scoring their stored vectors directly.
SCAN_FILES = 10_000
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


def prepare_words(index: AudioIndex) -> bool:
    """Make the words index of ``index``'s generation ready where that is cheap: opened when built, or
    brought up from an older build by a delta (a server's background refresh calls this, so that a words
    query of a new generation does not wait for it). Never builds one from scratch.

    Returns:
        Whether the generation's words index is ready in this process.
    """
    if (str(index.root), snapshot_key(index)) in _cache:
        return True
    if LexicalIndex.exists(index) or LexicalIndex.updatable(index):
        lexical_for(index)
        return True
    return False


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

        embedded: list[np.ndarray] = []

        # The request was checked where it entered: the Searcher's trusted calls, no second check.
        def query_vector() -> np.ndarray:
            if vector is not None:
                return vector
            if not embedded:  # once, however many depths the filtered search tries
                from vela_search.embedding.embedder import EmbedItem

                check_not_empty(index)  # before the model runs
                embedded.append(searcher.embed([EmbedItem(vmode, text=text)])[0])
            return embedded[0]

        def sound(depth: int) -> list[Hit]:
            options = SearchOptions(
                k=depth, path_glob=path_glob, duration=duration, nprobe=nprobe, refine=refine, exact=exact
            )
            return searcher.search_checked(query_vector(), options)[0]

        # The sound ranking's depth: 2 x k (at least 20) for fusion, which keeps hybrid's vector search
        # close to a plain one's cost (docs/benchmarks.md); k for a vector mode with field filters.
        want = min(MAX_K, max(2 * k, 20)) if mode == "hybrid" else k
        if where:
            scope = _Scope(index, lex, where, path_glob, duration)
            by_sound = filtered_by_sound(sound, query_vector, scope, want)
        else:
            by_sound = sound(want)
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


@dataclasses.dataclass
class _Scope:
    """The files a field-filtered search may return: those meeting ``where`` (and the glob and length)."""

    index: AudioIndex
    lex: LexicalIndex
    where: list[Condition]
    path_glob: str | None
    duration: tuple[float | None, float | None] | None


def filtered_by_sound(
    sound: Callable[[int], list[Hit]], query_vector: Callable[[], np.ndarray], scope: _Scope, want: int
) -> list[Hit]:
    """The ``want`` best files by sound among those meeting the field filters, exactly.

    Few matching files (at most ``SCAN_FILES``): their stored vectors are scored directly. More: the
    sound ranking is searched deeper (x4 each round, up to ``MAX_K`` files) until ``want`` of its files
    meet the filters; were that not enough, the matching files are scored directly after all.

    Args:
        sound: the sound ranking's top ``n`` files (path glob and length filters applied).
        query_vector: the query's vector (embedded on first use).
        scope: the filters.
        want: how many files.
    """
    matching = scope.lex.count(scope.where)
    if matching == 0:
        return []
    if matching > SCAN_FILES:
        depth = min(MAX_K, max(4 * want, 100))
        while True:
            found = sound(depth)
            passing = scope.lex.passing([p for h in found for p in h.paths], scope.where)
            kept = [h for h in found if passing.intersection(h.paths)]
            if len(kept) >= want or len(found) < depth:
                return kept[:want]
            if depth >= MAX_K:
                break
            depth = min(MAX_K, 4 * depth)
    allowed = _filtered(
        scope.index, scope.lex.search(None, scope.where, matching), scope.path_glob, scope.duration
    )
    return scan_files(scope.index, query_vector(), allowed, want)


def scan_files(index: AudioIndex, query: np.ndarray, files: list[LexicalHit], want: int) -> list[Hit]:
    """The ``want`` best of ``files`` by their best segment's inner product with ``query``.

    A file's segments are stored together: its ids run from its first segment's id for as many segments
    as its files row counts.
    """
    if not files:
        return []
    table = index.files()
    table = table.filter(pc.is_in(table["path"], pa.array([f.path for f in files], pa.string())))
    counts = dict(zip(table["path"].to_pylist(), table["segments"].to_pylist(), strict=True))
    sizes = np.array([max(1, int(counts.get(f.path) or 1)) for f in files])
    ids = np.concatenate(
        [np.arange(f.segment_id, f.segment_id + n) for f, n in zip(files, sizes, strict=True)]
    )
    live = ~np.isin(ids, index.deleted_ids())
    scores = np.full(len(ids), -np.inf, dtype=np.float32)
    if live.any():
        scores[live] = index.vectors(ids[live]) @ np.asarray(query, np.float32)
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    best = np.maximum.reduceat(scores, starts)
    order = sorted(range(len(files)), key=lambda i: (-best[i], files[i].path))[:want]
    chosen = [int(starts[i] + np.argmax(scores[starts[i] : starts[i] + sizes[i]])) for i in order]
    rows = index.segment_rows([int(ids[c]) for c in chosen])
    return [
        _lexical_hit(files[i].path, int(ids[c]), row, score=float(best[i]))
        for i, c, row in zip(order, chosen, rows, strict=True)
    ]


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


def _lexical_hit(path: str, segment_id: int, row: dict, score: float = 0.0) -> Hit:
    """A hit on one segment of a file found without the store's search (its first, for words only)."""
    duration = row.get("duration_s")
    return Hit(
        path=path,
        start_s=float(row.get("start_s") or 0.0),
        end_s=float(row["end_s"]) if row.get("end_s") is not None else float("nan"),
        score=score,
        duration_s=None if duration is None else float(duration),
        segment_id=segment_id,
        rank=0,
        paths=(path,),
        root=row.get("root"),
    )


def attach_words(index: AudioIndex, hits: list[Hit], *, build_limit: int = BUILD_ON_QUERY_FILES) -> list[Hit]:
    """The hits with their files' words (what ``query`` and the page show under each hit).

    The words come from the generation's lexical index; a vector-mode query builds it from scratch only
    for a library of at most ``build_limit`` files (seconds), so that a first query of a large index is
    never held up by it: there the hits come back without words until a words or hybrid query has built
    it. Bringing an older generation's build up to date (a delta) is always done.
    """
    if not hits or all(h.words for h in hits):
        return hits
    key = (str(index.root), snapshot_key(index))
    built = key in _cache or LexicalIndex.exists(index) or LexicalIndex.updatable(index)
    if not built and index.files().num_rows > build_limit:
        return hits
    fields = lexical_for(index).fields_of([h.path for h in hits])
    return [h if h.words else dataclasses.replace(h, words=fields.get(h.path, {})) for h in hits]
