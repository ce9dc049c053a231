"""From the store's segment hits to `Hit`s: drawing enough segments to fill k files when grouped (without
restarting the search), one hit per file, with duplicate paths and file rows."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from vela_search.search.hits import Hit

if TYPE_CHECKING:
    from vela_search.store import AudioIndex, SearchHit


# Grouped search asks the store for k * this many segments at a time: a file contributes several
# overlapping windows, and most of them score alike.
OVERFETCH = 8
# Files-table rows a lookup keeps made (as dicts) for later hits of the same files.
_CACHED_FILE_ROWS = 4096


def file_key(row: dict) -> str:
    """What identifies a hit's file when grouping: content is indexed once however many paths hold it,
    so the stored path."""
    return str(row.get("path") or row.get("content_sha256") or row.get("id"))


def draw_grouped(
    index: AudioIndex, queries: np.ndarray, k: int, min_score: float | None, store_options: dict[str, Any]
) -> list[list[SearchHit]]:
    """Segment hits of each query, best first, holding the best segment of up to k distinct files.

    The store is asked for ``k * OVERFETCH`` segments per query (all queries in one search); while a
    query's segments name fewer than k files (one long file filling them), it is asked again for as many
    segments with the files found so far left out: a continuation, in which no segment is fetched twice
    and no search restarts deeper. Each round is one store search of the same size that adds at least
    one file, so the worst case is k rounds (every round filled by a single new file); one long file at
    the top costs one extra round.
    """
    fetch = min(index.num_vectors, k * OVERFETCH)
    found = index.search(queries, fetch, **store_options)
    return [_continue(index, q, hits, fetch, k, min_score, store_options) for q, hits in zip(queries, found)]


def _continue(
    index: AudioIndex,
    query: np.ndarray,
    hits: list[SearchHit],
    fetch: int,
    k: int,
    min_score: float | None,
    store_options: dict[str, Any],
) -> list[SearchHit]:
    last, keys = hits, {file_key(h.row) for h in hits}
    while len(keys) < k and len(last) >= fetch:
        if min_score is not None and last[-1].score < min_score:
            break  # everything further down scores lower still
        seen = frozenset(str(h.row["path"]) for h in hits if h.row.get("path") is not None)
        last = index.search(query, fetch, exclude_paths=seen, **store_options)[0]
        new = {file_key(h.row) for h in last} - keys
        if not new:
            break  # rows without a path cannot be left out: nothing more to draw
        keys |= new
        hits = hits + last
    return sorted(hits, key=lambda h: (-h.score, h.id))


class FilesLookup:
    """The files table of one snapshot as lookups: path → row, content digest → every path holding it.

    Built once per snapshot from three columns of the in-memory table (no file is read); a row becomes a
    dict only when a hit asks for it, so building costs ~1 s per million files, answering a hit microseconds.
    """

    def __init__(self, table: Any) -> None:
        from vela_search.store.row_columns import RowColumns

        self._rows = RowColumns(table)
        self._cache: dict[str, dict] = {}  # rows made by `prefetch` (a snapshot's rows never change)
        paths = table["path"].to_pylist() if table.num_rows else []
        self._position = {path: i for i, path in enumerate(paths)}  # the last row of a path wins
        self.by_content: dict[str, list[str]] = {}
        if paths:
            digests, statuses = table["sha256"].to_pylist(), table["status"].to_pylist()
            for path, digest, status in zip(paths, digests, statuses, strict=True):
                if digest and status != "failed":
                    self.by_content.setdefault(digest, []).append(path)

    def prefetch(self, paths: list[str]) -> None:
        """Make the rows of ``paths`` at once (one pass over the columns instead of one per hit)."""
        wanted = list(dict.fromkeys(p for p in paths if p in self._position and p not in self._cache))
        if not wanted:
            return
        rows = self._rows.rows(np.array([self._position[p] for p in wanted], dtype=np.int64))
        while len(self._cache) + len(wanted) > _CACHED_FILE_ROWS and self._cache:
            self._cache.pop(next(iter(self._cache), ""), None)  # the oldest first
        self._cache.update(zip(wanted, rows, strict=True))

    def row(self, path: str) -> dict:
        """The files-table row of ``path`` ({} when the table has none)."""
        cached = self._cache.get(path)
        if cached is not None:
            return cached
        at = self._position.get(path)
        return {} if at is None else self._rows.rows(np.array([at]))[0]

    def paths(self, path: str, content: str | None) -> list[str]:
        """``path`` first, then every other indexed path with the same content."""
        others = sorted(p for p in self.by_content.get(content or "", []) if p != path)
        return [path, *others]


def make_hit(
    hit: SearchHit, rank: int, files: FilesLookup, path_glob: str | None, generation: int | None = None
) -> Hit:
    """The `Hit` of a store hit: its file's row, every path holding the same content (a path matching
    the filter first), and the generation of the snapshot it came from."""
    row = hit.row
    path = str(row.get("path"))
    file_row = files.row(path)
    content = row.get("content_sha256") or file_row.get("sha256")
    paths = files.paths(path, content)
    for extra in row.get("paths") or []:
        if extra not in paths:
            paths.append(extra)
    if path_glob:
        # The filter may have matched a duplicate's path rather than the stored one: show that one.
        from vela_search.store.shards import compile_glob

        pattern = compile_glob(path_glob)
        matching = [p for p in paths if pattern.match(p)]
        if matching and matching[0] != path:
            path = matching[0]
            paths = [path, *(p for p in paths if p != path)]
            file_row = files.row(path) or file_row
    duration = row.get("duration_s")
    if duration is None:
        duration = file_row.get("duration_s")
    root = row.get("root") or file_row.get("root")
    return Hit(
        path=path,
        start_s=float(row.get("start_s") or 0.0),
        end_s=float(row["end_s"]) if row.get("end_s") is not None else float("nan"),
        score=float(hit.score),
        duration_s=None if duration is None else float(duration),
        segment_id=int(hit.id),
        rank=rank,
        paths=tuple(paths),
        root=None if root is None else str(root),
        file=dict(file_row),
        generation=generation,
    )
