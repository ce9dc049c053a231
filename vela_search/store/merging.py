"""Rewriting adjacent shards as fewer ones: the one merge routine of inline and background maintenance.

A merge reads its input shards one at a time (verified whole first, so damaged vectors never receive a
fresh checksum), squeezes out their tombstoned rows, and hands the survivors, in id order, to a
``write`` callback each time an output shard fills. Who calls it decides where the output goes and when
it is published: the writer inside a commit (inline maintenance) or a background job that publishes its
own generation later (see `vela_search.store.background`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pyarrow as pa

from . import faiss_ops
from .shards import ShardReader
from .table_log import contains
from .tables import concat_metadata

# write(vectors, metadata) -> the shard entries written for those rows
WriteShards = Callable[[np.ndarray, pa.Table], list[dict]]


def merge_shards(
    entries: list[dict],
    *,
    dim: int,
    size: int,
    deleted: np.ndarray,
    open_reader: Callable[[dict], ShardReader],
    shard_ids: Callable[[dict], np.ndarray],
    write: WriteShards,
    extra: tuple[np.ndarray, pa.Table] | None = None,
) -> tuple[list[dict], np.ndarray]:
    """Rewrite adjacent shards `entries` (then the `extra` rows) as shards of at most `size` rows.

    Args:
        entries: the input shards, in id order.
        dim: vector dimension.
        size: rows per output shard (the last one may hold fewer).
        deleted: sorted tombstoned ids; those rows are left out.
        open_reader: opens an input shard.
        shard_ids: the sorted ids of an input shard.
        write: writes rows as output shards, returning their entries.
        extra: new rows (vectors, metadata) appended after the inputs' rows.

    Returns:
        The output shard entries, and the ids of the rows left out (whose tombstones can go).
    """
    # Rows are decoded a piece at a time into one buffer, and a shard is written each time it fills:
    # a merge holds one output shard and one input, however long the merged tail.
    total = sum(int(e["count"]) for e in entries) + (len(extra[0]) if extra else 0)
    buffer = np.empty((max(1, min(size, total)), dim), dtype=np.float32)
    tables: list[pa.Table] = []
    out: list[dict] = []
    dropped: list[np.ndarray] = []
    at = 0

    def append(vectors: Any, table: pa.Table, gone: np.ndarray | None) -> None:
        nonlocal at
        pos = 0
        while pos < table.num_rows:
            take = min(size - at, table.num_rows - pos)
            piece = buffer[at : at + take]
            if isinstance(vectors, np.ndarray):
                piece[:] = vectors[pos : pos + take]
            else:
                faiss_ops.reconstruct_all(vectors, out=piece, start=pos)
            rows = table.slice(pos, take)
            keep = None if gone is None else ~gone[pos : pos + take]
            if keep is not None and not keep.all():  # squeeze out the deleted rows
                buffer[at : at + int(keep.sum())] = piece[keep]
                rows = rows.filter(pa.array(keep))
            tables.append(rows)
            at, pos = at + rows.num_rows, pos + take
            if at == size:
                out.extend(write(buffer, concat_metadata(tables)))
                tables.clear()
                at = 0

    for entry in entries:
        reader = open_reader(entry)
        try:
            ids = shard_ids(entry)
            gone = contains(deleted, ids)
            # Checked before copying: a merge would otherwise give damaged vectors a new checksum.
            append(reader.index(verify=True), reader.metadata(), gone)
        finally:
            reader.close()
        dropped.append(ids[gone])
    if extra is not None:
        append(extra[0], extra[1], None)
    if at:
        out.extend(write(buffer[:at], concat_metadata(tables)))
    gone_ids = np.concatenate(dropped) if dropped else np.empty(0, np.int64)
    return out, gone_ids.astype(np.int64, copy=False)
