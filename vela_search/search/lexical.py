"""The lexical index: BM25 over each file's words (name and metadata), one tantivy index per generation.

The words live in the index's segment rows (the ``words`` column of each file's first segment, see
:mod:`vela_search.audio.metadata`); this index is derived from them and never the source of truth. It is
kept in ``<index>/lexical/<key>/``, where the key names one committed generation (its number and a digest
of the files its manifest names), so a reader of a generation always searches that generation's words.
A missing or half-built directory is (re)built, written under a temporary name and renamed into place: a
crash can leave a stray temporary folder, never an index out of step with the vectors. A new generation's
build starts from the newest older build and applies only the files that changed since (see
:mod:`vela_search.search.lexical_build`); without one it is built from the snapshot's shard rows. The two
newest builds are kept (a reader still on an older generation builds its own).

Scoring is tantivy's BM25 over ``text`` (every word of the file, English stemming); field filters use
``fields.<name>`` (words, lower-cased) for ``~`` and ``exact.<name>`` (the whole value, lower-cased) for
``=`` (see :mod:`vela_search.search.where`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vela_search.search.lexical_build import (
    build_folder,
    file_words,
    fill_documents,
    lexical_schema,
    usable_base,
)

if TYPE_CHECKING:
    from vela_search.search.where import Condition
    from vela_search.store import AudioIndex

__all__ = ["LEXICAL_DIR", "LexicalHit", "LexicalIndex", "file_words", "snapshot_key", "words_summary"]

LEXICAL_DIR = "lexical"
_KEEP_BUILDS = 2
_QUERY_WORD = re.compile(r"\w+", re.UNICODE)
_OPERATORS = {"and", "or", "not", "to", "in"}
log = logging.getLogger("vela_search.search")


@dataclass(frozen=True)
class LexicalHit:
    """A file found by its words: its path, BM25 score, stored fields and first segment's id."""

    path: str
    score: float
    fields: dict[str, str]
    segment_id: int


def snapshot_key(index: AudioIndex) -> str:
    """The name of a generation's lexical index: its number and a digest of what its manifest names."""
    m = index.manifest
    named = [
        m.get("committed_at"),
        m.get("files"),
        m.get("files_deltas"),
        m.get("deleted"),
        m.get("deleted_deltas"),
        [s.get("meta") for s in m.get("shards", [])],
    ]
    digest = hashlib.sha256(json.dumps(named, sort_keys=True, default=str).encode()).hexdigest()[:16]
    return f"{index.generation:010d}-{digest}"


def words_summary(index: AudioIndex) -> dict[str, int]:
    """``{field: files carrying it}`` over the snapshot's indexed files, most common first."""
    from collections import Counter

    counts = Counter(name for fields, _ in file_words(index).values() for name in fields)
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


class LexicalIndex:
    """BM25 search over the words of one snapshot's files (see the module docstring)."""

    def __init__(self, idx: Any, key: str) -> None:
        self._idx = idx
        self.key = key
        self._searcher = idx.searcher()

    @classmethod
    def for_index(cls, index: AudioIndex) -> LexicalIndex:
        """The lexical index of ``index``'s generation, built (and stored beside it) when missing."""
        import tantivy

        key = snapshot_key(index)
        folder = index.root / LEXICAL_DIR / key
        if (folder / "done.json").exists():
            try:
                return cls(tantivy.Index.open(str(folder)), key)
            except ValueError:
                shutil.rmtree(folder, ignore_errors=True)  # damaged: rebuilt below
        return cls(build_lexical(index, folder), key)

    @staticmethod
    def exists(index: AudioIndex) -> bool:
        """Whether the lexical index of ``index``'s generation is built on disk."""
        return (index.root / LEXICAL_DIR / snapshot_key(index) / "done.json").exists()

    @staticmethod
    def updatable(index: AudioIndex) -> bool:
        """Whether an older build can be brought to ``index``'s generation by a delta (no full build)."""
        return usable_base(index.root / LEXICAL_DIR, index, snapshot_key(index)) is not None

    @classmethod
    def in_memory(cls, words: dict[str, tuple[dict[str, str], int]]) -> LexicalIndex:
        """A lexical index of ``{path: (fields, first segment id)}`` held in memory (benchmarks, tests)."""
        import tantivy

        idx = tantivy.Index(lexical_schema())
        fill_documents(idx, words)
        idx.reload()
        return cls(idx, "memory")

    @property
    def num_files(self) -> int:
        """Files in the index."""
        return int(self._searcher.num_docs)

    def search(self, text: str | None, where: list[Condition], limit: int) -> list[LexicalHit]:
        """Files matching ``text`` (BM25, best first) and every condition of ``where``.

        Args:
            text: query words (any text: syntax characters are ignored); None ranks every file that
                passes ``where`` equally.
            where: field conditions, all of which a file must meet.
            limit: at most this many hits.
        """
        import tantivy

        must = [self._condition(c) for c in where]
        if text is not None:
            words = [w.lower() for w in _QUERY_WORD.findall(text) if w.lower() not in _OPERATORS]
            if not words:
                return []
            must.insert(0, self._idx.parse_query(" ".join(words), ["text"]))
        if not must:
            return []
        query = (
            must[0]
            if len(must) == 1
            else tantivy.Query.boolean_query([(tantivy.Occur.Must, q) for q in must])
        )
        if text is None:
            query = tantivy.Query.const_score_query(query, 1.0)
        found = self._searcher.search(query, limit)
        hits = []
        for score, address in found.hits:
            doc = self._searcher.doc(address)
            fields = doc["fields"][0] if doc["fields"] else {}
            fields = {k: str(v) for k, v in fields.items()}
            hits.append(LexicalHit(doc["path"][0], float(score), fields, int(doc["segment_id"][0])))
        # Equal scores in path order, not the engine's document order: an index built in another order
        # (a resumed run) answers the same.
        hits.sort(key=lambda hit: (-round(hit.score, 6), hit.path))
        return hits

    def count(self, where: list[Condition]) -> int:
        """How many files meet every condition of ``where`` (no documents read)."""
        import tantivy

        if not where:
            return self.num_files
        must = [(tantivy.Occur.Must, self._condition(c)) for c in where]
        return int(self._searcher.search(tantivy.Query.boolean_query(must), 1, count=True).count)

    def passing(self, paths: list[str], where: list[Condition]) -> set[str]:
        """Those of ``paths`` whose files meet every condition of ``where`` (one query)."""
        import tantivy

        if not paths:
            return set()
        schema = self._idx.schema
        any_path = tantivy.Query.boolean_query(
            [(tantivy.Occur.Should, tantivy.Query.term_query(schema, "path", p)) for p in set(paths)]
        )
        must = [(tantivy.Occur.Must, q) for q in [any_path, *(self._condition(c) for c in where)]]
        found = self._searcher.search(tantivy.Query.boolean_query(must), len(set(paths)))
        return {self._searcher.doc(address)["path"][0] for _, address in found.hits}

    def fields_of(self, paths: list[str]) -> dict[str, dict[str, str]]:
        """The stored fields of these files (those the index has)."""
        import tantivy

        out = {}
        for path in paths:
            query = tantivy.Query.term_query(self._idx.schema, "path", path)
            for _, address in self._searcher.search(query, 1).hits:
                doc = self._searcher.doc(address)
                out[path] = {k: str(v) for k, v in (doc["fields"][0] if doc["fields"] else {}).items()}
        return out

    def _condition(self, condition: Condition) -> Any:
        value = condition.value.lower()
        if condition.op == "=":
            escaped = value.replace("\\", "\\\\").replace('"', '\\"')
            return self._idx.parse_query(f'exact.{condition.field}:"{escaped}"', ["text"])
        words = _QUERY_WORD.findall(value)
        return self._idx.parse_query(f'fields.{condition.field}:"{" ".join(words)}"', ["text"])


def build_lexical(index: AudioIndex, folder: Path) -> Any:
    """Build ``folder`` for the snapshot (from an older build and the delta where one can be used, see
    :mod:`vela_search.search.lexical_build`) and drop older builds.

    Returns:
        The opened tantivy index.
    """
    import tantivy

    stats = build_folder(index, folder)
    log.info("lexical index of generation %d built: %s", index.generation, stats)
    _drop_old_builds(folder.parent, keep=folder.name)
    return tantivy.Index.open(str(folder))


def _drop_old_builds(parent: Path, keep: str) -> None:
    for stray in parent.glob(".tmp-*"):  # left by a builder that died
        pid = stray.name.split("-")[1]
        if pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)):
            shutil.rmtree(stray, ignore_errors=True)
    builds = sorted(p.name for p in parent.iterdir() if p.is_dir() and not p.name.startswith("."))
    newest = set(builds[-_KEEP_BUILDS:]) | {keep}
    for name in builds:
        if name not in newest:
            shutil.rmtree(parent / name, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True
