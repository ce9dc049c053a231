"""Keeping an index's HNSW graph in line with its shards at each commit: build, fold, per-shard graphs.

Plain functions over a manifest being written (see `graph` for the layout): `refresh_graph` decides
whether the main graph is built from scratch (first time, repair, too many dead rows), whether the rows
committed since are folded into it (they reached `graph.FOLD_FRACTION` of it), or whether only the new large
shards get small graphs of their own. At the end of a run (``settle``) the new rows are folded sooner, once
they reach `graph.SETTLE_FRACTION` of the main graph: a small graph of its own costs a query nearly as
much as the main graph (see `fold_threshold`). Every build and fold re-tunes efSearch with rows held out
of the graph until it is measured (`tuning`), so the recorded recall is re-measured each time the
collection grew by a tenth. All files are written aside under the new generation and named by the
manifest only when it is published.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from . import faiss_ops, graph, layout, tuning
from .index_choice import ChoiceLimits, IndexChoice, graph_memory
from .shards import ShardReader

OpenReader = Callable[[dict], ShardReader]


def live_rows(
    reader: ShardReader, mask: np.ndarray, since: int = 0
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """A shard's live rows with ids at or past `since`, as (float32 vectors, ids) chunks."""
    rows = np.flatnonzero(mask & (reader.ids >= since))
    for start in range(0, len(rows), 8192):
        chunk = rows[start : start + 8192]
        yield faiss_ops.reconstruct_rows(reader.index(), chunk), reader.ids[chunk]
    reader.close()


def refresh_graph(
    root: Any,
    dim: int,
    open_reader: OpenReader,
    limits: ChoiceLimits,
    new: dict,
    generation: int,
    deleted: np.ndarray,
    choice: IndexChoice,
    *,
    force: bool = False,
    defer: bool = False,
    settle: bool = False,
) -> dict[str, str]:
    """Bring `new`'s graph in line with its shards; returns the checksums of the files written.

    With `defer` (background maintenance builds and folds later, see `graph_due`), a due build or fold
    is left out: the new rows get shard graphs (or, with no graph yet, the index is searched exactly).
    With `settle` (the end of a run), the new rows are folded at the lower threshold of `fold_threshold`.
    """
    readers = [open_reader(e) for e in new["shards"]]
    masks = tuning.live_masks(readers, deleted)
    codes = new.get("codes")
    queries = limits.measure_queries
    if not graph.is_graph(new) and defer:
        return {}
    if force or not graph.is_graph(new):
        return _build(root, dim, new, generation, readers, masks, queries)
    covers = int(codes["covers_below"])
    pairs = list(zip(readers, masks, strict=True))
    live_covered = sum(int(np.count_nonzero(m & (r.ids < covers))) for r, m in pairs)
    uncovered = [int(np.count_nonzero(m & (r.ids >= covers))) for r, m in pairs]
    if int(codes["rows"]) - live_covered > graph.DEAD_FRACTION * int(codes["rows"]) and not defer:
        return _build(root, dim, new, generation, readers, masks, queries)
    min_rows = min_graph_rows(limits)
    if sum(uncovered) >= fold_threshold(live_covered, min_rows if settle else None) and not defer:
        return _fold(root, dim, new, generation, readers, masks, queries)
    written = {}
    for entry, reader, mask, count in zip(new["shards"], readers, masks, uncovered, strict=True):
        if entry.get("codes") or count < min_rows:
            continue
        index = graph.new_graph(dim)
        graph.add_rows(index, live_rows(reader, mask, covers))
        name = layout.codes_file(int(entry["number"]), generation)
        written[name] = graph.write_graph(root, name, index)
        entry["codes"], entry["codes_rows"] = name, int(index.ntotal)
    for reader in readers:
        reader.close()
    return written


def min_graph_rows(limits: ChoiceLimits) -> int:
    """Uncovered rows a shard needs for a graph of its own (fewer are scanned exactly)."""
    return min(limits.min_coded_rows, graph.MIN_GRAPH_ROWS)


def fold_threshold(covered: int, settle_rows: int | None = None) -> float:
    """How many new rows a main graph over `covered` live rows takes in by a fold: `graph.FOLD_FRACTION`
    of it at a commit; at the end of a run (`settle_rows` given: the smallest shard graph's rows),
    `graph.SETTLE_FRACTION` of it, and never fewer rows than a graph of their own would hold.

    A fold rewrites the whole main graph, so commits fold rarely; but until then every query also walks
    the new rows' own graphs, which at a few thousand rows are searched almost exhaustively and cost
    nearly what the main graph does (at 100k x 4,096: 0.5 ms beside 0.7 ms), so a finished run folds
    what is past a hundredth.
    """
    at_commit = graph.FOLD_FRACTION * max(covered, 1)
    if settle_rows is None:
        return at_commit
    return min(at_commit, max(float(settle_rows), graph.SETTLE_FRACTION * covered))


def graph_due(codes: dict | None, live: int, *, settle_rows: int | None = None) -> bool:
    """Whether an index with `live` vectors and these ``codes`` is due a graph build or fold (estimated
    from the counts the manifest records, without reading shards); with `settle_rows`, at the end of a
    run (see `fold_threshold`)."""
    if not codes or codes.get("kind") != graph.KIND:
        return True
    rows = int(codes["rows"])
    grown = live - int(codes.get("measured_size") or rows)
    dead = rows - min(live, rows)
    return grown >= fold_threshold(rows, settle_rows) or dead > graph.DEAD_FRACTION * rows


def _covered_below(readers: list[ShardReader]) -> int:
    return max((int(r.ids.max()) + 1 for r in readers if r.count), default=0)


def _build(
    root: Any,
    dim: int,
    new: dict,
    generation: int,
    readers: list[ShardReader],
    masks: list[np.ndarray],
    queries: int,
) -> dict[str, str]:
    """A main graph over every live row, from the exact vectors."""
    held = tuning.held_out_rows(readers, masks, seed=generation, count=queries)
    index = graph.new_graph(dim)
    for reader, mask, out in zip(readers, masks, held, strict=True):
        graph.add_rows(index, live_rows(reader, mask & ~out))
    return _publish_main(root, new, generation, readers, masks, held, index, built=generation)


def _fold(
    root: Any,
    dim: int,
    new: dict,
    generation: int,
    readers: list[ShardReader],
    masks: list[np.ndarray],
    queries: int,
) -> dict[str, str]:
    """The main graph with the live rows committed since it was written added (a new file)."""
    covers = int(new["codes"]["covers_below"])
    held = tuning.held_out_rows(readers, masks, seed=generation, count=queries, since=covers)
    index = graph.read_graph(root, new)
    graph.hnsw_of(index).hnsw.efConstruction = graph.EF_CONSTRUCTION
    for reader, mask, out in zip(readers, masks, held, strict=True):
        graph.add_rows(index, live_rows(reader, mask & ~out, covers))
    built = int(new["codes"].get("built", generation))
    return _publish_main(root, new, generation, readers, masks, held, index, built=built)


def _publish_main(
    root: Any,
    new: dict,
    generation: int,
    readers: list[ShardReader],
    masks: list[np.ndarray],
    held: list[np.ndarray],
    index: Any,
    *,
    built: int,
) -> dict[str, str]:
    """Tune the main graph's efSearch on the rows `held` out of it, take them in, write the graph and
    record it (every row is in it: no shard graphs)."""
    ef, recall, measured = tune_graph(index, readers, masks, held)
    for reader, out in zip(readers, held, strict=True):
        graph.add_rows(index, live_rows(reader, out))
    name = layout.graph_file(generation)
    written = {name: graph.write_graph(root, name, index)}
    live = int(sum(int(m.sum()) for m in masks))
    for entry in new["shards"]:
        entry.pop("codes", None)
        entry.pop("codes_rows", None)
    new["codes"] = {
        "kind": graph.KIND,
        "factory": graph.FACTORY,
        "trained": name,
        "built": built,
        "rows": int(index.ntotal),
        "covers_below": _covered_below(readers),
        "design_size": live,
        "trained_on": live,
        "memory_bytes": graph_memory(int(index.ntotal), int(index.d)),
        "ef_search": int(ef),
        "nprobe": 0,
        "rerank": 0,
        "recall_at_10": recall,
        "recall_queries": measured,
        "measured_size": live,
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    for reader in readers:
        reader.close()
    return written


def tune_graph(
    index: Any, readers: list[ShardReader], masks: list[np.ndarray], held: list[np.ndarray]
) -> tuple[int, float, int]:
    """(efSearch, its recall@10, queries used): the smallest efSearch of `tuning.EF_LADDER` whose recall
    reaches `tuning.TARGET_RECALL` with the live rows `held` out of `index` as queries, against exact
    search of the other live rows, searching `index` (holding those) the way queries do."""
    n_held = int(sum(int(h.sum()) for h in held))
    if n_held == 0:
        return tuning.EF_LADDER[0], 1.0, 0
    own, probes = tuning.gather(readers, held, np.arange(n_held))
    indexed = [m & ~h for m, h in zip(masks, held, strict=True)]
    truth = tuning.exact_truth(readers, indexed, probes)
    live = np.concatenate([r.ids[m] for r, m in zip(readers, indexed, strict=True)])
    mask = np.zeros(int(live.max()) + 1, dtype=bool)
    mask[live] = True
    searcher = graph.GraphSearcher([index], ef_search=tuning.EF_LADDER[0], base_mask=mask, names=[])

    def measure(ef: int) -> float:
        _, found = searcher.search(probes, tuning.RECALL_K, None, ef=ef)
        return tuning.recall_at_k(found, truth, own)

    ef, recall = tuning.pick_setting(tuning.EF_LADDER, measure)
    return int(ef), float(recall), n_held
