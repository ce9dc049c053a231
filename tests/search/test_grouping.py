"""The files lookup of a snapshot: rows by path and paths by content, as the files table says."""

from __future__ import annotations

from vela_search.search import grouping
from vela_search.search.grouping import FilesLookup
from vela_search.store.tables import to_files_table


def _table():
    rows = [
        {
            "path": f"/lib/{i}.wav",
            "size": 100 + i,
            "sha256": f"{i % 5:064x}" if i % 6 else None,
            "duration_s": float(i),
            "status": "failed" if i % 7 == 3 else "indexed",
            "root": "/lib" if i % 2 else None,
        }
        for i in range(40)
    ]
    return to_files_table(rows)


def test_rows_and_paths_match_the_files_table(monkeypatch) -> None:
    table = _table()
    lookup = FilesLookup(table)
    rows = {r["path"]: r for r in table.to_pylist()}
    holders: dict[str, list[str]] = {}
    for r in rows.values():
        if r["sha256"] and r["status"] != "failed":
            holders.setdefault(r["sha256"], []).append(r["path"])
    monkeypatch.setattr(grouping, "_CACHED_FILE_ROWS", 8)
    lookup.prefetch(list(rows)[:5] + ["/lib/missing.wav"])
    lookup.prefetch(list(rows)[5:12])  # evicts the oldest: at most 8 kept
    assert len(lookup._cache) <= 8
    for path, row in rows.items():
        assert lookup.row(path) == row
        expected = [path, *sorted(p for p in holders.get(row["sha256"] or "", []) if p != path)]
        assert lookup.paths(path, row["sha256"]) == expected
    assert lookup.row("/lib/missing.wav") == {}
    assert FilesLookup(table.slice(0, 0)).row("/lib/1.wav") == {}
