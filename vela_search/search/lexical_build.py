"""Building a generation's lexical index: from scratch, or from an older generation's build plus the delta.

A build lives in ``<index>/lexical/<key>/`` (see :mod:`vela_search.search.lexical`): the tantivy index,
``docs.parquet`` (one row per document: ``path`` and its first segment's ``segment_id``) and ``done.json``
(the generation, the number of files and the snapshot's ``next_id``), written last.

Segment ids are never reused and a file's segments are stored together, so the delta between an older
build and a newer snapshot follows from ids alone: a document whose first segment is no longer live
(tombstoned or merged away, or its file no longer ``indexed``) is deleted, and every file whose first
segment has an id at or above the older build's ``next_id`` is added, its words read from the shards that
hold such ids only. The newer build starts as a copy of the older one (tantivy's segment files are
immutable: hard links, the small metadata files copied), gets the deletions and additions in one commit,
and is renamed into place. A build of a newer generation, or one without ``docs.parquet`` (written by an
older version), is no base: the snapshot is then indexed from scratch.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import uuid
from pathlib import Path, PurePath
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from vela_search.audio.metadata import WORDS_COLUMN, words_from_json
from vela_search.audio.ucs import name_fields

if TYPE_CHECKING:
    from vela_search.store import AudioIndex
    from vela_search.store.shards import ShardReader

__all__ = ["build_folder", "file_words", "fill_documents", "lexical_schema", "usable_base"]

log = logging.getLogger("vela_search.search")

DOCS_FILE = "docs.parquet"
DONE_FILE = "done.json"
_HEAP_BYTES = 64_000_000
# Tantivy's own files of a build that change in place (copied, not linked, into a newer build).
_MUTABLE = {"meta.json", ".managed.json"}

FileWords = dict[str, tuple[dict[str, str], int]]


def lexical_schema() -> Any:
    """The tantivy schema of a lexical index (see the format document)."""
    import tantivy

    builder = tantivy.SchemaBuilder()
    builder.add_text_field("path", stored=True, tokenizer_name="raw")
    builder.add_integer_field("segment_id", stored=True, indexed=False)
    builder.add_text_field("text", stored=False, tokenizer_name="en_stem")
    builder.add_json_field("fields", stored=True, tokenizer_name="default")
    builder.add_json_field("exact", stored=False, tokenizer_name="raw")
    return builder.build()


def _writer(idx: Any) -> Any:
    # Two indexing threads at most: a search machine's cores are shared with the embedder.
    return idx.writer(heap_size=_HEAP_BYTES, num_threads=min(2, os.cpu_count() or 1))


def _add(writer: Any, words: FileWords) -> None:
    import tantivy

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


def fill_documents(idx: Any, words: FileWords) -> None:
    """Add one document per file of ``{path: (fields, first segment id)}`` and commit."""
    writer = _writer(idx)
    _add(writer, words)
    writer.commit()
    writer.wait_merging_threads()


def _live(index: AudioIndex, reader: ShardReader) -> np.ndarray:
    deleted = index.deleted_ids()
    ids = reader.ids
    return ~np.isin(ids, deleted) if len(deleted) else np.ones(len(ids), bool)


def _first_segments(index: AudioIndex, readers: list[ShardReader], min_id: int = 0) -> FileWords:
    """``{path: (fields, first segment id)}`` over the live segments of ``readers`` with id >= ``min_id``.

    Files of segments without a stored ``words`` value get their name's words; whether a file is
    ``indexed`` is left to the caller.
    """
    first: dict[str, tuple[float, int]] = {}
    stored: dict[str, dict[str, str]] = {}
    for reader in readers:
        if reader.count == 0 or int(reader.entry["max_id"]) < min_id:
            continue
        wanted = ["id", "path", "start_s"]
        table = reader.columns([*wanted, WORDS_COLUMN]) or reader.columns(wanted)
        if table is None:  # segments added through the store API without a path and start
            continue
        keep = _live(index, reader) & (reader.ids >= min_id)
        table = table.filter(pa.array(keep))
        words = table[WORDS_COLUMN].to_pylist() if WORDS_COLUMN in table.column_names else None
        starts = table["start_s"].to_numpy(zero_copy_only=False)
        ids = table["id"].to_numpy()
        for row, (path, start, seg) in enumerate(zip(table["path"].to_pylist(), starts, ids, strict=True)):
            if path not in first or start < first[path][0]:
                first[path] = (float(start), int(seg))
            if words is not None and words[row] is not None:
                stored[path] = words_from_json(words[row])
    return {path: (stored.get(path) or name_fields(path), seg) for path, (_, seg) in first.items()}


def _indexed_paths(index: AudioIndex) -> pa.ChunkedArray:
    files = index.files()
    return files.filter(pc.equal(files["status"], "indexed"))["path"]


def _only_indexed(words: FileWords, indexed: pa.ChunkedArray) -> FileWords:
    keep = pc.is_in(pa.array(list(words), pa.string()), value_set=indexed.combine_chunks()).to_numpy(False)
    return {path: value for (path, value), ok in zip(words.items(), keep, strict=True) if ok}


def file_words(index: AudioIndex) -> FileWords:
    """``{path: (fields, first segment id)}`` for every indexed file of the snapshot.

    Files indexed before words were read (rows without a ``words`` value) get their name's words.
    """
    return _only_indexed(_first_segments(index, index.shard_readers()), _indexed_paths(index))


def _live_ids(index: AudioIndex) -> np.ndarray:
    """Sorted ids of the snapshot's live segments."""
    readers = index.shard_readers()
    ids = np.concatenate([r.ids for r in readers] or [np.empty(0, np.int64)])
    deleted = index.deleted_ids()
    if len(deleted):
        ids = ids[~np.isin(ids, deleted)]
    return np.sort(ids)


def usable_base(parent: Path, index: AudioIndex, key: str) -> tuple[Path, dict] | None:
    """The newest finished build that can be brought to ``index``'s snapshot by a delta, if any."""
    next_id = int(index.manifest.get("next_id") or 0)
    best: tuple[Path, dict] | None = None
    for folder in parent.iterdir() if parent.is_dir() else ():
        if folder.name.startswith(".") or folder.name == key:
            continue
        try:
            done = json.loads((folder / DONE_FILE).read_text())
        except (OSError, ValueError):
            continue
        base_next = done.get("next_id")
        if not isinstance(base_next, int) or base_next > next_id or not (folder / DOCS_FILE).is_file():
            continue
        if best is None or base_next > best[1]["next_id"]:
            best = (folder, done)
    return best


def _copy_build(base: Path, tmp: Path) -> None:
    """Hard-link tantivy's immutable files of ``base`` into ``tmp``; copy the ones it rewrites."""
    for item in base.iterdir():
        if item.name in (DOCS_FILE, DONE_FILE) or item.name.startswith(".tantivy"):
            continue
        if item.name in _MUTABLE:
            shutil.copy2(item, tmp / item.name)
            continue
        try:
            os.link(item, tmp / item.name)
        except OSError:
            shutil.copy2(item, tmp / item.name)


def _apply_delta(index: AudioIndex, base: Path, done: dict, tmp: Path) -> tuple[pa.Table, dict[str, Any]]:
    """Bring a copy of the ``base`` build in ``tmp`` to the snapshot; returns the new documents table."""
    import tantivy

    _copy_build(base, tmp)
    docs = pq.read_table(base / DOCS_FILE)
    indexed = _indexed_paths(index)
    alive = np.isin(docs["segment_id"].to_numpy(), _live_ids(index))
    alive &= pc.is_in(docs["path"], value_set=indexed.combine_chunks()).to_numpy(zero_copy_only=False)
    added = _only_indexed(_first_segments(index, index.shard_readers(), int(done["next_id"])), indexed)
    dead = docs["path"].filter(pa.array(~alive)).to_pylist()
    idx = tantivy.Index.open(str(tmp))
    writer = _writer(idx)
    for path in {*dead, *added}:
        writer.delete_documents_by_term("path", path)
    _add(writer, added)
    writer.commit()
    writer.wait_merging_threads()
    kept = docs.filter(pa.array(alive))
    kept = kept.filter(pc.invert(pc.is_in(kept["path"], pa.array(list(added), pa.string()))))
    new = _docs_table(added)
    stats = {"mode": "delta", "base": base.name, "added": len(added), "deleted": len(dead)}
    return pa.concat_tables([kept.select(["path", "segment_id"]), new]), stats


def _docs_table(words: FileWords) -> pa.Table:
    segments = pa.array([segment for _, segment in words.values()], pa.int64())
    return pa.table({"path": pa.array(list(words), pa.string()), "segment_id": segments})


def build_folder(index: AudioIndex, folder: Path) -> dict[str, Any]:
    """Build the lexical index of ``index``'s snapshot into ``folder`` (temporary folder, then rename).

    From the newest usable older build plus the delta when there is one, else from scratch. Another
    process that renamed its build into place first wins (its build is the same).

    Returns:
        What the build did: ``mode`` (``full`` or ``delta``), ``base`` (the older build's name or None),
        ``added`` and ``deleted`` documents, and ``files`` in the result.
    """
    import tantivy

    parent = folder.parent
    parent.mkdir(parents=True, exist_ok=True)
    tmp = parent / f".tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        base = usable_base(parent, index, folder.name)
        built = None
        if base is not None:
            try:
                built = _apply_delta(index, base[0], base[1], tmp)
            except (OSError, ValueError, KeyError, pa.ArrowException) as exc:  # a damaged older build
                log.warning("lexical build %s not usable (%s): building from scratch", base[0].name, exc)
                shutil.rmtree(tmp, ignore_errors=True)
                tmp.mkdir()
        if built is not None:
            docs, stats = built
        else:
            words = file_words(index)
            fill_documents(tantivy.Index(lexical_schema(), path=str(tmp)), words)
            docs = _docs_table(words)
            stats = {"mode": "full", "base": None, "added": len(words), "deleted": 0}
        stats["files"] = docs.num_rows
        pq.write_table(docs.sort_by("path"), tmp / DOCS_FILE)
        next_id = index.manifest.get("next_id")
        done = {"generation": index.generation, "files": docs.num_rows, "next_id": next_id}
        (tmp / DONE_FILE).write_text(json.dumps({**done, "built": stats}))
        if folder.is_dir() and not (folder / DONE_FILE).is_file():
            shutil.rmtree(folder, ignore_errors=True)  # unfinished (not written by a build): replaced
        try:
            os.rename(tmp, folder)
        except OSError:  # another reader built it first: use theirs
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return stats
