""" "More like this file": a query vector read back from the index instead of embedded by the model.

A file the index holds already has its vectors stored, and they are exactly what query-by-example would
compute for it (same embedder, same windows). Reading them back needs no model, so a similar-sounds search
from a file of the library answers in milliseconds instead of after loading a 7B model.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import numpy as np

from vela_search.errors import QueryError

if TYPE_CHECKING:
    from vela_search.store import AudioIndex

__all__ = [
    "UnknownFileError",
    "UnknownSegmentError",
    "segment_row",
    "stored_file_vector",
    "stored_segment_vector",
]


class UnknownFileError(QueryError):
    """A query by example named a file the index does not hold (HTTP 404)."""


class UnknownSegmentError(QueryError):
    """A segment id that no live segment of the index has."""


def stored_file_vector(
    index: AudioIndex,
    path: str | os.PathLike[str],
    *,
    start_s: float | None = None,
    end_s: float | None = None,
) -> np.ndarray:
    """The query vector of an indexed file: its stored segment vector, or the normalised mean of its
    segments' vectors for a file cut into windows (those overlapping ``start_s``-``end_s`` when given).

    A path recorded as a copy uses the vectors stored under the path that holds its content.

    Raises:
        QueryError: the file is not in the index (or failed to index), no segment overlaps the span, or
            the span is invalid.
    """
    wanted = os.path.abspath(os.path.expanduser(str(path)))
    if start_s is not None and start_s < 0:
        raise QueryError(f"--start must be a number of seconds >= 0, got {start_s}")
    if start_s is not None and end_s is not None and end_s <= start_s:
        raise QueryError(f"--end ({end_s}) must be after --start ({start_s})")
    owner = _owner_path(index, wanted)
    ids = index.ids_with_path(owner)
    if ids.size == 0:
        raise QueryError(f"{wanted} has no stored segments in this index; rerun `vela-search index`")
    if start_s is not None or end_s is not None:
        rows = index.segment_rows(ids)
        lo = start_s if start_s is not None else 0.0
        hi = end_s if end_s is not None else float("inf")
        keep = [r["end_s"] > lo and r["start_s"] < hi for r in rows]
        if not any(keep):
            span = f"{lo:g}-{hi:g} s" if end_s is not None else f"{lo:g} s to the end"
            length = max(float(r["end_s"]) for r in rows)
            raise QueryError(f"no segment of {wanted} overlaps {span} (its segments end at {length:g} s)")
        ids = ids[np.asarray(keep)]
    vectors = index.vectors(ids)
    mean = vectors.mean(axis=0)
    return (mean / np.linalg.norm(mean)).astype(np.float32)


def _owner_path(index: AudioIndex, path: str) -> str:
    """The path whose segments hold ``path``'s content (itself, or the original of a copy)."""
    import pyarrow.compute as pc

    files = index.files()
    row = files.filter(pc.equal(files["path"], path)).to_pylist()
    if not row:
        raise UnknownFileError(
            f"{path} is not in this index: index it first, or search with the file itself as an audio "
            "clip (it embeds the file)"
        )
    status, sha = row[0]["status"], row[0]["sha256"]
    if status == "failed":
        raise QueryError(f"{path} could not be indexed ({row[0]['error']}), so it has no stored vectors")
    if status == "indexed":
        return path
    owners = files.filter(pc.and_(pc.equal(files["sha256"], sha), pc.equal(files["status"], "indexed")))
    if owners.num_rows == 0:
        raise QueryError(
            f"{path} is recorded as a copy, but the file holding its content is not in the index"
        )
    return str(owners["path"][0].as_py())


def segment_row(index: AudioIndex, segment_id: int) -> dict:
    """The metadata row of a live segment (not deleted) of ``index``.

    Raises:
        UnknownSegmentError: no live segment has this id (never indexed, or its file changed or vanished).
    """
    wanted = int(segment_id)
    deleted = index.deleted_ids()
    position = np.searchsorted(deleted, wanted)
    if position < len(deleted) and deleted[position] == wanted:
        raise UnknownSegmentError(
            f"segment {wanted} is no longer in the index (its file changed or was removed)"
        )
    try:
        return index.segment_rows([wanted])[0]
    except KeyError:
        raise UnknownSegmentError(f"no segment with id {wanted} in this index") from None


def stored_segment_vector(index: AudioIndex, segment_id: int) -> np.ndarray:
    """The stored (unit) vector of a live segment, as a query vector.

    Raises:
        QueryError: no live segment has this id.
    """
    segment_row(index, segment_id)
    vector = index.vectors([int(segment_id)])[0]
    return (vector / np.linalg.norm(vector)).astype(np.float32)
