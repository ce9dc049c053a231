"""Every index kind the automatic policy can choose, beside the vector libraries alone, on one data set.

One run generates ``n`` vectors (``--data hard``: a slowly decaying spectrum over all dimensions, see
`synthetic_vectors.hard_vectors`; or today's clustered set) and fresh queries, and measures, one query at
a time on one thread, recall@k against exact fp16 ground truth, CPU time per query (process CPU time,
so any thread a library starts is counted), wall-clock p50, memory and the pages each query had to read
back from disk (major page faults: the store's mapped vectors are read from the page cache, which the
host may have reclaimed; CPU time counts only part of such a read), for:

* the store with the default policy (a graph while vectors and graph fit the budget), at its tuned
  setting and along a ladder of efSearch values (``refine``), plus its exact scan;
* the store forced to compressed codes by a small ``--max-index-memory``, at its tuned setting and along
  the ladder of (nprobe, re-rank depth) it tunes over;
* the peers, on the same vectors (hnswlib HNSW M16 float32, usearch HNSW f16 connectivity 16, both
  built with a candidate list of 128; FAISS HNSW32 over fp16 without the store, built as the store
  builds its graph), each along an efSearch ladder; they are an optional extra
  (``pip install 'vela-search[bench]'``), and a missing one is reported, not fatal.

The store's times are end to end (``AudioIndex.search``: candidates, exact scores, hit metadata).
"""

from __future__ import annotations

import importlib.util
import resource
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vela_search.bench.search_index import ReferenceTopK, commit_every_for, segment_rows
from vela_search.bench.synthetic_vectors import vectors_for
from vela_search.bench.timing import percentile

__all__ = ["PEERS", "all_peers", "CompareRow", "CompareRun", "compare_search", "missing_peers"]

PEERS = {"hnswlib": "hnswlib", "usearch": "usearch"}  # peer name -> module to import
PEER_EF = (16, 24, 32, 48, 64, 96, 128, 192)
STORE_EF = (16, 24, 32, 48, 64, 96, 128)
_FINGERPRINT_MODEL = "bench-search (synthetic vectors)"
# Queries run untimed before each row (every system alike): the first few of a row otherwise pay for
# caches the previous row left cold (the first row measured read 5-15% slower with 3).
_WARMUP = 20
# The peers' insertion candidate lists (hnswlib's ef_construction, usearch's expansion_add; usearch's
# default), with 16 links per node (hnswlib's M, usearch's connectivity).
_EF_CONSTRUCTION = 128
# The default small budget is this share of the fp16 vectors: the compressed kind must stay within 1/8 of
# the best peer's memory, and every peer holds at least the vectors.
_SMALL_SHARE = 10


@dataclass
class CompareRow:
    """One system at one setting."""

    system: str  # "vela graph", "vela compressed", "vela exact", "hnswlib", "usearch", "faiss"
    setting: str  # e.g. "ef 32", "nprobe 64 refine 500", "tuned ef 32"
    tuned: bool  # the store's own tuned setting (what a query gets by default)
    recall_at_k: float
    cpu_ms_per_query: float
    wall_ms_p50: float
    memory_bytes: int
    build_s: float
    major_faults_per_query: float = 0.0  # pages read back from disk per query (see the module docstring)


@dataclass
class CompareRun:
    """What ``bench search --data ...`` measured."""

    data: str
    vectors: int
    dim: int
    k: int
    queries: int
    seed: int
    small_memory: int
    choices: dict[str, Any]  # index_info() of each store
    rows: list[CompareRow]
    peak_rss_bytes: int
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form."""
        return asdict(self)


def all_peers() -> tuple[str, ...]:
    """Every peer a comparison can measure: FAISS alone (it comes with the package), then `PEERS`."""
    return ("faiss", *PEERS)


def missing_peers() -> list[str]:
    """The peers whose package is not installed (``pip install 'vela-search[bench]'`` adds them)."""
    return [name for name, module in PEERS.items() if importlib.util.find_spec(module) is None]


def _time_queries(
    search: Callable[[np.ndarray], list[int]], queries: np.ndarray, reference: ReferenceTopK
) -> tuple[float, float, float, float]:
    """(recall, CPU ms per query, wall p50 ms, major page faults per query) of `search` over the
    queries, one at a time."""
    for q in queries[:_WARMUP]:
        search(q)
    walls, recalls = [], []
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_majflt
    cpu = time.process_time()
    for i, q in enumerate(queries):
        start = time.perf_counter()
        found = search(q)
        walls.append(1000 * (time.perf_counter() - start))
        recalls.append(reference.recall(i, found))
    cpu_ms = 1000 * (time.process_time() - cpu) / max(len(queries), 1)
    faults = (resource.getrusage(resource.RUSAGE_SELF).ru_majflt - faults) / max(len(queries), 1)
    recall = round(float(np.mean(recalls)), 4)
    return recall, round(cpu_ms, 3), round(percentile(walls, 50), 3), round(faults, 2)


def _build_store(
    root: Path,
    held: np.ndarray,
    budget: int | None,
    progress: Callable[[str, int, int], None] | None,
    limits: Any = None,
) -> float:
    """An automatic index of the held vectors, committed and finished as an index run would; returns the
    writer's time."""
    from vela_search.store import AudioIndex

    fingerprint = {"model": _FINGERPRINT_MODEL, "dim": held.shape[1]}
    start = time.perf_counter()
    AudioIndex.create(root, fingerprint=fingerprint, dim=held.shape[1], max_index_memory=budget).close()
    every = commit_every_for(held.shape[1])
    with AudioIndex.open(root, shards=False).writer(fingerprint=fingerprint, choice_limits=limits) as writer:
        for begin in range(0, len(held), every):
            stop = min(len(held), begin + every)
            writer.add(held[begin:stop].astype(np.float32), segment_rows(begin, stop - begin))
            writer.commit()
            if progress is not None:
                progress("build", stop, len(held))
        writer.finish_maintenance()  # what an index run does last (a graph folds its newest rows)
    return time.perf_counter() - start


def _store_memory(root: Path, index: Any) -> int:
    """Bytes the store's search holds: graph files, the merged codes index or the fp16 vectors."""
    info = index.index_info()
    shards = index.manifest["shards"]
    if info.get("choice") == "graph":
        names = {index.manifest["codes"]["trained"], *(s["codes"] for s in shards if s.get("codes"))}
        covers = int(index.manifest["codes"]["covers_below"])  # shards below it are in the main graph
        exact = sum(int(s["count"]) for s in shards if not s.get("codes") and s["max_id"] >= covers)
        exact *= index.dim * 2
        return sum((root / n).stat().st_size for n in names) + exact
    merged = index.codes_memory_bytes()
    if info.get("choice") == "compressed" and merged is not None:
        return merged  # every shard's codes, merged (the files repeat the template's fixed parts)
    return int(index.num_vectors) * index.dim * 2


def _store_rows(
    root: Path, queries: np.ndarray, reference: ReferenceTopK, k: int, build_s: float
) -> tuple[list[CompareRow], dict[str, Any]]:
    from vela_search.store import AudioIndex
    from vela_search.store.tuning import CODES_LADDER

    rows = []
    with AudioIndex.open(root) as index:
        info = index.index_info()
        memory = _store_memory(root, index)
        kind = info.get("choice", "exact")
        settings: list[tuple[str, dict[str, Any], bool]] = [(_tuned_label(info), {}, True)]
        if kind == "graph":
            settings += [(f"ef {ef}", {"refine": ef}, False) for ef in STORE_EF]
        elif kind == "compressed":
            settings += [
                (f"nprobe {p} refine {r}", {"nprobe": p, "refine": r}, False) for p, r in CODES_LADDER
            ]
        for label, knobs, tuned in settings:

            def search(q: np.ndarray, knobs: dict[str, Any] = knobs) -> list[int]:
                return [hit.id for hit in index.search(q[None], k, **knobs)[0]]

            recall, cpu, wall, faults = _time_queries(search, queries, reference)
            build = round(build_s, 1)
            rows.append(CompareRow(f"vela {kind}", label, tuned, recall, cpu, wall, memory, build, faults))
            if tuned:  # the same search without the hits' metadata rows: the vector search alone

                def ids_only(q: np.ndarray) -> list[int]:
                    return [i for i in index.search_ids(q[None], k)[1][0].tolist() if i >= 0]

                recall, cpu, wall, faults = _time_queries(ids_only, queries, reference)
                label = f"{label}, ids only"
                system = f"vela {kind} ids"
                rows.append(CompareRow(system, label, tuned, recall, cpu, wall, memory, build, faults))
        if kind == "graph":  # the exact scan of the same store, on a few queries (it reads every vector)
            few = queries[: min(30, len(queries))]

            def exact(q: np.ndarray) -> list[int]:
                return [hit.id for hit in index.search(q[None], k, exact=True)[0]]

            recall, cpu, wall, faults = _time_queries(exact, few, reference)
            fp16 = int(index.num_vectors) * index.dim * 2
            label = f"scan ({len(few)} queries)"
            rows.append(CompareRow("vela exact", label, False, recall, cpu, wall, fp16, 0.0, faults))
    return rows, info


def _tuned_label(info: dict[str, Any]) -> str:
    if info.get("choice") == "graph":
        return f"tuned ef {info.get('ef_search')} (measured {info.get('recall_at_10')})"
    if info.get("choice") == "compressed":
        measured = info.get("recall_at_10")
        return f"tuned nprobe {info.get('nprobe')} refine {info.get('rerank')} (measured {measured})"
    return "exact"


def _chunks(held: np.ndarray, size: int = 8192) -> Iterable[tuple[int, np.ndarray]]:
    for start in range(0, len(held), size):
        yield start, held[start : start + size].astype(np.float32)


def _peer_hnswlib(held: np.ndarray) -> tuple[Callable[[np.ndarray, int, int], list[int]], int]:
    import hnswlib

    n, dim = held.shape
    index = hnswlib.Index(space="ip", dim=dim)
    index.init_index(max_elements=n, M=16, ef_construction=_EF_CONSTRUCTION)
    for start, chunk in _chunks(held):
        index.add_items(chunk, np.arange(start, start + len(chunk)))
    index.set_num_threads(1)

    def search(q: np.ndarray, k: int, ef: int) -> list[int]:
        index.set_ef(max(ef, k))
        return index.knn_query(q[None], k=k, num_threads=1)[0][0].tolist()

    # float32 vectors, 2 x M bottom-level links, a label and a header per element
    return search, n * (dim * 4 + 2 * 16 * 4 + 4 + 8 + 8)


def _peer_usearch(held: np.ndarray) -> tuple[Callable[[np.ndarray, int, int], list[int]], int]:
    from usearch.index import Index

    n, dim = held.shape
    index = Index(ndim=dim, metric="ip", dtype="f16", connectivity=16, expansion_add=_EF_CONSTRUCTION)
    for start, chunk in _chunks(held):
        index.add(np.arange(start, start + len(chunk)), chunk)

    def search(q: np.ndarray, k: int, ef: int) -> list[int]:
        index.expansion_search = max(ef, k)
        return index.search(q, k, threads=1).keys.tolist()

    return search, int(index.memory_usage)


def _peer_faiss(held: np.ndarray) -> tuple[Callable[[np.ndarray, int, int], list[int]], int]:
    from vela_search.store import faiss_ops, graph

    n, dim = held.shape
    f = faiss_ops.faiss()
    index = f.index_factory(dim, "HNSW32_SQfp16", f.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction = graph.EF_CONSTRUCTION
    for _, chunk in _chunks(held):
        index.add(chunk)

    def search(q: np.ndarray, k: int, ef: int) -> list[int]:
        params = f.SearchParametersHNSW(efSearch=max(ef, k))
        with faiss_ops.single_thread():
            return index.search(q[None], k, params=params)[1][0].tolist()

    return search, int(f.serialize_index(index).size)


_PEER_BUILDERS = {"hnswlib": _peer_hnswlib, "usearch": _peer_usearch, "faiss": _peer_faiss}


def _peer_rows(
    name: str, held: np.ndarray, queries: np.ndarray, reference: ReferenceTopK, k: int
) -> list[CompareRow]:
    start = time.perf_counter()
    search, memory = _PEER_BUILDERS[name](held)
    build_s = round(time.perf_counter() - start, 1)
    rows = []
    for ef in PEER_EF:
        recall, cpu, wall, faults = _time_queries(lambda q, ef=ef: search(q, k, ef), queries, reference)
        rows.append(CompareRow(name, f"ef {ef}", False, recall, cpu, wall, memory, build_s, faults))
    return rows


def _measure_store(
    scratch: Path,
    label: str,
    budget: int | None,
    held: np.ndarray,
    probes: np.ndarray,
    reference: ReferenceTopK,
    k: int,
    choices: dict[str, Any],
    progress: Callable[[str, int, int], None] | None,
    report: Callable[[CompareRow], None] | None,
    limits: Any,
    keep: bool,
) -> list[CompareRow]:
    root = scratch / label.replace(" ", "-")
    build_s = _build_store(root, held, budget, progress, limits)
    rows, choices[label] = _store_rows(root, probes, reference, k, build_s)
    if not keep:
        shutil.rmtree(root, ignore_errors=True)
    for row in rows if report is not None else ():
        report(row)
    return rows


def _measure_peers(
    held: np.ndarray,
    probes: np.ndarray,
    reference: ReferenceTopK,
    k: int,
    notes: list[str],
    progress: Callable[[str, int, int], None] | None,
    report: Callable[[CompareRow], None] | None,
    names: Sequence[str],
) -> list[CompareRow]:
    missing = set(missing_peers()) & set(names)
    if missing:
        notes.append(f"peers not installed: {', '.join(sorted(missing))} (pip install 'vela-search[bench]')")
    rows: list[CompareRow] = []
    for name in names:
        if name not in missing:
            got = _peer_rows(name, held, probes, reference, k)
            rows += got
            for row in got if report is not None else ():
                report(row)
            if progress is not None:
                progress("peers", 1, 1)
    return rows


def compare_search(
    n_vectors: int,
    *,
    dim: int = 4096,
    data: str = "hard",
    queries: int = 200,
    k: int = 10,
    small_memory: int | None = None,
    peer_names: Sequence[str] | None = None,
    workdir: str | Path | None = None,
    seed: int = 0,
    progress: Callable[[str, int, int], None] | None = None,
    report: Callable[[CompareRow], None] | None = None,
    choice_limits: Any = None,
    default: bool = True,
    compressed: bool = True,
    keep: bool = False,
) -> CompareRun:
    """Measure every kind of the policy and the peers on the same vectors (see the module docstring).

    Args:
        small_memory: the budget that forces the compressed kind (default: 1/10 of the fp16 vectors,
            below 1/8 of what any peer holds, since each holds at least the vectors).
        peer_names: which of `all_peers()` to measure beside the store (default: all; e.g. only the
            best one in a long run; empty: none). Missing packages are noted and skipped.
        report: called with each row as soon as it is measured (a long run shows its results as it goes).
        choice_limits: thresholds of the policy (`store.index_choice.ChoiceLimits`; tests shrink them).
        default: also build and measure the store under the default budget (False: only the forced
            compressed kind, e.g. in a second process beside a run that measures the rest).
        compressed: also build and measure the store forced to compressed codes by `small_memory`.
        keep: leave the stores built in a ``vela-bench-compare-*`` folder of `workdir` (noted in the
            report), e.g. to profile them afterwards.
    """
    generator = vectors_for(data, dim, n_vectors, seed)
    probes = generator.queries(queries)
    reference = ReferenceTopK(probes, k)
    held = np.empty((n_vectors, dim), np.float16)  # the vectors as the store keeps them, for every side
    for start, chunk in generator.chunks(n_vectors, 8192):
        held[start : start + len(chunk)] = chunk
        reference.add(chunk, np.arange(start, start + len(chunk)))
        if progress is not None:
            progress("generate", start + len(chunk), n_vectors)
    small = int(small_memory or max(1 << 20, n_vectors * dim * 2 // _SMALL_SHARE))
    notes: list[str] = []
    rows: list[CompareRow] = []
    choices: dict[str, Any] = {}
    scratch = Path(tempfile.mkdtemp(prefix="vela-bench-compare-", dir=workdir))
    try:
        # The default policy, then the peers, then the forced compressed kind (slowest to build).
        sides = (held, probes, reference, k, choices, progress, report, choice_limits, keep)
        if default:
            rows += _measure_store(scratch, "default", None, *sides)
        names = all_peers() if peer_names is None else tuple(peer_names)
        if names:
            rows += _measure_peers(held, probes, reference, k, notes, progress, report, names)
        if compressed:
            rows += _measure_store(scratch, "small budget", small, *sides)
    finally:
        if keep:
            notes.append(f"stores kept in {scratch}")
        else:
            shutil.rmtree(scratch, ignore_errors=True)
    return CompareRun(
        data=data,
        vectors=n_vectors,
        dim=dim,
        k=k,
        queries=queries,
        seed=seed,
        small_memory=small,
        choices=choices,
        rows=rows,
        peak_rss_bytes=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        notes=notes,
    )


def best_at(rows: list[CompareRow], recall: float) -> dict[str, CompareRow]:
    """Per system, its cheapest row (CPU per query) reaching `recall`."""
    out: dict[str, CompareRow] = {}
    for row in rows:
        if row.recall_at_k >= recall and (
            row.system not in out or row.cpu_ms_per_query < out[row.system].cpu_ms_per_query
        ):
            out[row.system] = row
    return out
