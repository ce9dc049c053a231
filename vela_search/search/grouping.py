"""From the store's segment hits to `Hit`s: one per file when grouped, with duplicate paths and file rows."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from vela_search.search.hits import Hit

if TYPE_CHECKING:
    from vela_search.store import SearchHit


def _file_key(row: dict) -> str:
    # Content is indexed once however many paths hold it, so the stored path identifies the file.
    return str(row.get("path") or row.get("content_sha256") or row.get("id"))


def _grouping_done(hits: list[SearchHit], k: int, fetch: int, total: int, min_score: float | None) -> bool:
    """Whether a grouped query has its answer from ``hits`` (the store's top ``fetch``)."""
    if len(hits) < fetch or fetch >= total:
        return True  # the store had no more candidates (filter or index exhausted)
    if min_score is not None and hits and hits[-1].score < min_score:
        return True  # everything further down scores lower still
    return len({_file_key(h.row) for h in hits}) >= k


class _FilesLookup:
    """The files table as lookups: path → row, content digest → every path holding it."""

    def __init__(self, table: Any) -> None:
        self.rows: dict[str, dict] = {}
        self.by_content: dict[str, list[str]] = {}
        for row in table.to_pylist():
            self.rows[row["path"]] = row
            if row.get("sha256") and row.get("status") != "failed":
                self.by_content.setdefault(row["sha256"], []).append(row["path"])

    def paths(self, path: str, content: str | None) -> list[str]:
        others = sorted(p for p in self.by_content.get(content or "", []) if p != path)
        return [path, *others]


def _make_hit(hit: SearchHit, rank: int, files: _FilesLookup, path_glob: str | None) -> Hit:
    row = hit.row
    path = str(row.get("path"))
    file_row = files.rows.get(path, {})
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
            file_row = files.rows.get(path, file_row)
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
    )
