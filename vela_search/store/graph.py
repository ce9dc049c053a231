"""Graph search: an HNSW graph over the fp16 vectors, for automatic indexes whose vectors and graph fit
the memory budget.

The graph kind keeps one main graph per index, ``graph-<gen>.faiss`` (a FAISS ``IDMap,HNSW32_SQfp16``:
the links and an fp16 copy of the vectors under their global ids), named by the manifest's ``codes``
entry (``kind: "graph"``, file in ``trained``), which covers every id below ``covers_below``. Ids never
change when shards are merged or compacted, so the main graph stays valid across tier merges: rows that
left (deleted, compacted away) are masked out at search time. Rows at or past ``covers_below`` (shards
committed since) are searched through a small graph per shard (``shards/<n>.codes-<gen>.faiss``, the
shard's ``codes`` entry, holding only its uncovered rows) or, below `min_coded_rows`, exactly. Once the
uncovered rows reach `FOLD_FRACTION` of the covered ones, a commit folds them into a new main graph
(the old graph read, the new rows added, written aside under the new generation), and the end of a run
(`IndexWriter.finish_maintenance`) once they reach `SETTLE_FRACTION`; once half the main
graph's rows are dead, the graph is rebuilt from the live exact vectors.

Scores come from the fp16 vectors inside the graph: the same inner products an exact scan gives.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from . import faiss_ops, fsio, manifest
from .index_choice import GRAPH_FACTORY
from .integrity import read_verified

KIND = "graph"
# Candidate list while inserting: FAISS's default of 40 builds graphs that stall below recall 0.95 on
# slowly decaying spectra at high dimension; 80 doubles the build for a better graph.
EF_CONSTRUCTION = 80
FACTORY = GRAPH_FACTORY
# Uncovered rows (committed since the main graph) folded into it once they reach this share of it.
FOLD_FRACTION = 0.1
# ... and at the end of a run (`graph_build.fold_threshold`), once they reach this share.
SETTLE_FRACTION = 0.01
# Shards with fewer uncovered rows than this are searched exactly instead of through a graph of their
# own (a graph of a few hundred rows costs ~0.1 ms a query; scanning 4,096 x 4,096 fp16 ~3 ms).
MIN_GRAPH_ROWS = 256
# The main graph is rebuilt from scratch once this share of its rows is dead (deleted or compacted away).
DEAD_FRACTION = 0.5
# Inserts of fewer floats than this run on one thread (see `add_rows`).
_SMALL_ADD_FLOATS = 1 << 22

Rows = Callable[[], Iterator[tuple[np.ndarray, np.ndarray]]]


def is_graph(data: dict) -> bool:
    """Whether a manifest's index searches through an HNSW graph."""
    return ((data.get("codes") or {}).get("kind")) == KIND


def new_graph(dim: int) -> Any:
    """An empty graph index over global ids."""
    index = faiss_ops.build(FACTORY, dim)
    hnsw = faiss_ops.faiss().downcast_index(index.index)
    hnsw.hnsw.efConstruction = EF_CONSTRUCTION
    return index


def hnsw_of(index: Any) -> Any:
    """The HNSW index inside a graph file's id map."""
    f = faiss_ops.faiss()
    return f.downcast_index(f.downcast_index(index).index)


def add_rows(index: Any, rows: Iterator[tuple[np.ndarray, np.ndarray]]) -> None:
    """Insert (vectors, ids) chunks into a graph (FAISS inserts in parallel within each chunk)."""
    for vectors, ids in rows:
        if len(ids):
            # Small inserts on one thread: on a busy machine OpenMP barriers cost more than the work.
            with faiss_ops.single_thread(vectors.size < _SMALL_ADD_FLOATS):
                index.add_with_ids(np.ascontiguousarray(vectors, dtype=np.float32), ids.astype(np.int64))


def write_graph(root: Any, name: str, index: Any) -> str:
    """Write `index` aside (temporary file, fsync, rename) as `name`; returns its checksum."""
    with fsio.atomic_file(root / name) as f:
        faiss_ops.write(index, f)
    return f.checksum


def read_graph(root: Any, data: dict) -> Any:
    """The main graph a manifest names, checked against its recorded checksum."""
    name = data["codes"]["trained"]
    return faiss_ops.read_bytes(root, name, read_verified(root, name, manifest.checksum(data, name)))


def graph_ids(index: Any) -> np.ndarray:
    """The global ids a graph holds."""
    f = faiss_ops.faiss()
    return f.vector_to_array(f.downcast_index(index).id_map)


class GraphSearcher:
    """The graphs of one snapshot: the main graph and the per-shard graphs of uncovered rows.

    Args:
        graphs: the graph indexes (global ids, disjoint).
        ef_search: the tuned efSearch (candidate list of a query).
        base_mask: boolean mask over ids of the rows the graphs may return (None: all they hold), so
            that rows which left the index, or that small shards answer exactly, are never returned.
        names: the files the graphs came from (a later snapshot reuses the ones it shares).
    """

    def __init__(
        self, graphs: list[Any], *, ef_search: int, base_mask: np.ndarray | None, names: list[str]
    ) -> None:
        self.graphs = graphs
        self.ef_search = int(ef_search)
        self.base_mask = base_mask
        self.names = names
        self._params: dict[int, Any] = {}

    @property
    def rerank_depth(self) -> int:
        """Candidates a query considers (its efSearch), for the choice between graph and filtered scan."""
        return self.ef_search

    def search(
        self, queries: np.ndarray, k: int, allowed: np.ndarray | None, *, ef: int | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """(scores, ids) of each graph's top-k, side by side (not yet merged), at efSearch `ef` (default:
        the tuned value; never below k). Rows outside `allowed` (or the base mask) are skipped inside
        FAISS; a query may come back with fewer than k when a filter hides most of its neighbourhood."""
        f = faiss_ops.faiss()
        mask = allowed if allowed is not None else self.base_mask
        ef = max(int(ef or self.ef_search), int(k))
        keep: list[Any] = []
        if mask is None:
            params = self._unfiltered_params(ef)
        else:
            bitmap = np.packbits(mask, bitorder="little")
            keep.append(bitmap)  # FAISS holds a raw pointer into it
            selector = f.IDSelectorBitmap(len(bitmap), f.swig_ptr(bitmap))
            params = f.SearchParametersHNSW(efSearch=ef, sel=selector)
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        scores, ids = [], []
        with faiss_ops.single_thread(len(queries) <= 4):
            for graph in self.graphs:
                s, i = graph.search(queries, int(k), params=params)
                scores.append(s)
                ids.append(i)
        if not scores:
            return np.empty((len(queries), 0), np.float32), np.empty((len(queries), 0), np.int64)
        out_scores, out_ids = (scores[0], ids[0]) if len(scores) == 1 else (np.hstack(scores), np.hstack(ids))
        out_scores[out_ids < 0] = -np.inf
        return out_scores, out_ids

    def _unfiltered_params(self, ef: int) -> Any:
        """Search parameters of efSearch `ef` without a selector, made once per value (a SWIG object
        costs ~10 us to make, a twentieth of a small graph's search)."""
        params = self._params.get(ef)
        if params is None:
            params = self._params[ef] = faiss_ops.faiss().SearchParametersHNSW(efSearch=ef)
        return params
