"""The lexical index: BM25 over each file's words (name and metadata), one tantivy index per generation.

The words live in the index's segment rows (the ``words`` column of each file's first segment, see
:mod:`vela_search.audio.metadata`); this index is derived from them and never the source of truth. It is
kept in ``<index>/lexical/<key>/``, where the key names one committed generation (its number and a digest
of the files its manifest names), so a reader of a generation always searches that generation's words.
A missing or half-built directory is (re)built from the snapshot, written under a temporary name and
renamed into place: a crash can leave a stray temporary folder, never an index out of step with the
vectors. The two newest builds are kept (a reader still on an older generation rebuilds its own).

Scoring is tantivy's BM25 over ``text`` (every word of the file, English stemming); field filters use
``fields.<name>`` (words, lower-cased) for ``~`` and ``exact.<name>`` (the whole value, lower-cased) for
``=`` (see :mod:`vela_search.search.where`).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import TYPE_CHECKING, Any

import numpy as np

from vela_search.audio.metadata import WORDS_COLUMN, words_from_json
from vela_search.audio.ucs import name_fields

if TYPE_CHECKING:
    from vela_search.search.where import Condition
    from vela_search.store import AudioIndex

__all__ = ["LEXICAL_DIR", "LexicalHit", "LexicalIndex", "file_words", "snapshot_key", "words_summary"]

LEXICAL_DIR = "lexical"
_KEEP_BUILDS = 2
_HEAP_BYTES = 64_000_000
_QUERY_WORD = re.compile(r"\w+", re.UNICODE)
_OPERATORS = {"and", "or", "not", "to", "in"}
_lock = threading.Lock()


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


def file_words(index: AudioIndex) -> dict[str, tuple[dict[str, str], int]]:
    """``{path: (fields, first segment id)}`` for every indexed file of the snapshot.

    Files indexed before words were read (rows without a ``words`` value) get their name's words.
    """
    deleted = index.deleted_ids()
    first: dict[str, tuple[float, int]] = {}
    for table in index.shard_metadata(["id", "path", "start_s"]):
        ids = table["id"].to_numpy()
        live = ~np.isin(ids, deleted) if len(deleted) else np.ones(len(ids), bool)
        starts = table["start_s"].to_numpy(zero_copy_only=False)
        for path, start, seg, ok in zip(table["path"].to_pylist(), starts, ids, live, strict=True):
            if ok and (path not in first or start < first[path][0]):
                first[path] = (float(start), int(seg))
    stored: dict[str, dict[str, str]] = {}
    for table in index.shard_metadata(["id", "path", WORDS_COLUMN]):
        ids = table["id"].to_numpy()
        live = ~np.isin(ids, deleted) if len(deleted) else np.ones(len(ids), bool)
        for path, words, ok in zip(
            table["path"].to_pylist(), table[WORDS_COLUMN].to_pylist(), live, strict=True
        ):
            if ok and words is not None:
                stored[path] = words_from_json(words)
    files = index.files()
    out: dict[str, tuple[dict[str, str], int]] = {}
    for path, state in zip(files["path"].to_pylist(), files["status"].to_pylist(), strict=True):
        if state == "indexed" and path in first:
            out[path] = (stored.get(path) or name_fields(path), first[path][1])
    return out


def words_summary(index: AudioIndex) -> dict[str, int]:
    """``{field: files carrying it}`` over the snapshot's indexed files, most common first."""
    from collections import Counter

    counts = Counter(name for fields, _ in file_words(index).values() for name in fields)
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def _schema() -> Any:
    import tantivy

    builder = tantivy.SchemaBuilder()
    builder.add_text_field("path", stored=True, tokenizer_name="raw")
    builder.add_integer_field("segment_id", stored=True, indexed=False)
    builder.add_text_field("text", stored=False, tokenizer_name="en_stem")
    builder.add_json_field("fields", stored=True, tokenizer_name="default")
    builder.add_json_field("exact", stored=False, tokenizer_name="raw")
    return builder.build()


def _fill(idx: Any, words: dict[str, tuple[dict[str, str], int]]) -> None:
    import tantivy

    # Two indexing threads at most: a search machine's cores are shared with the embedder.
    writer = idx.writer(heap_size=_HEAP_BYTES, num_threads=min(2, os.cpu_count() or 1))
    for path, (fields, segment_id) in words.items():
        writer.add_document(
            tantivy.Document(
                path=path,
                segment_id=segment_id,
                # The file's stem too, so that "Take3" finds "..._Take3.wav" as well as "take 3" does.
                text=" ".join(fields.values()) + " " + PurePath(path.rsplit("/", 1)[-1]).stem,
                fields=fields,
                exact={k: v.lower() for k, v in fields.items()},
            )
        )
    writer.commit()
    writer.wait_merging_threads()


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

    @classmethod
    def in_memory(cls, words: dict[str, tuple[dict[str, str], int]]) -> LexicalIndex:
        """A lexical index of ``{path: (fields, first segment id)}`` held in memory (benchmarks, tests)."""
        import tantivy

        idx = tantivy.Index(_schema())
        _fill(idx, words)
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
    """Build ``folder`` from the snapshot (temporary folder, then rename) and drop older builds.

    Returns:
        The opened tantivy index.
    """
    import tantivy

    parent = folder.parent
    parent.mkdir(parents=True, exist_ok=True)
    tmp = parent / f".tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        idx = tantivy.Index(_schema(), path=str(tmp))
        words = file_words(index)
        _fill(idx, words)
        (tmp / "done.json").write_text(json.dumps({"generation": index.generation, "files": len(words)}))
        with _lock:
            try:
                os.rename(tmp, folder)
            except OSError:  # another reader built it first: use theirs
                shutil.rmtree(tmp, ignore_errors=True)
        _drop_old_builds(parent, keep=folder.name)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
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
