"""Search at library scale: build an index of synthetic clustered vectors through the real writer, then
measure its compressed search beside exact search of the same store.

The vectors come from :class:`~vela_search.bench.synthetic_vectors.ClusteredVectors` (clusters with low
intrinsic dimension, queries drawn fresh from the same mixture), in chunks, so a million 4,096-d vectors
never sit in memory at once. They enter the index the way indexing lands them: ``AudioIndex.create`` then
``IndexWriter.add`` and ``commit`` every few thousand vectors, so the automatic index choice trains,
re-trains and encodes exactly as it would for a real library, and the build time includes all of it.

The reference top-k is computed by brute force while the vectors are generated (inner products with the
vectors rounded to fp16, as the exact shards store them). Both searches are measured against it one query
at a time: the store's default search (compressed candidates re-ranked exactly, when the index chose
codes) and ``search(..., exact=True)`` (a scan of the exact fp16 shards), and the default search under
range filters keeping 0.1%, 1%, 10% and 100% of the rows (each against its own filtered reference). Recall
counts a hit when a
returned id is one of the reference top-k, or ties the k-th reference score within float rounding.
"""

from __future__ import annotations

import resource
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vela_search.bench.synthetic_vectors import ClusteredVectors, default_clusters
from vela_search.bench.timing import percentile
from vela_search.errors import VelaError

__all__ = [
    "IndexSearchRun",
    "ReferenceTopK",
    "SearchSide",
    "commit_every_for",
    "measure_index_search",
    "segment_rows",
]

# Marks the benchmark's index so its fingerprint can never be mistaken for a real embedder's.
_FINGERPRINT_MODEL = "bench-search (synthetic clustered vectors)"
# The writer buffers a commit's vectors as float32: bound that buffer to ~256 MiB.
_COMMIT_BYTES = 256 << 20
# Segments per synthetic file (its path in the metadata), like a long recording cut into windows.
_SEGMENTS_PER_FILE = 1000
# Scores this close to the k-th reference score count as ties (fp16 vectors, fp32 sums in another order).
_TIE_TOLERANCE = 1e-5
_WARMUP_QUERIES = 3
# The filtered cases: a numeric `sel` column (id mod 1000) with a range that keeps this share of the rows.
FILTER_SHARES = {"0.1%": 1, "1%": 10, "10%": 100, "100%": 1000}


@dataclass
class SearchSide:
    """One way of searching the store, measured one query at a time against the reference top-k."""

    mode: str  # "compressed" (codes + exact re-rank), "exact" (fp16 scan) or "fixed" (a forced factory);
    # the filtered cases add " filter 1%" (a range filter keeping that share of the rows)
    queries: int
    recall_at_k: float
    latency_ms_p50: float
    latency_ms_p99: float


@dataclass
class IndexSearchRun:
    """What ``bench search`` measured: the build, the index's memory, and both searches."""

    vectors: int
    dim: int
    k: int
    clusters: int
    seed: int
    factory: str  # what the index uses to search: the compressed factory, SQfp16, or the forced one
    choice: dict[str, Any]  # AudioIndex.index_info() after the build
    build_s: float  # writer time: add + commit, including training and encoding the codes
    generate_s: float  # generating the synthetic vectors (not part of build_s)
    commits: int
    shards: int
    fp16_bytes: int  # the exact vectors: vectors x dim x 2
    index_memory_bytes: int  # what the default search holds: merged codes (or the forced/exact shards)
    memory_fraction: float  # index_memory_bytes / fp16_bytes
    default: SearchSide
    exact: SearchSide | None  # None when the index has no exact shards (a forced lossy factory)
    filtered: list[SearchSide]  # the default search under filters of 0.1%, 1%, 10% and 100% of the rows
    peak_rss_bytes: int
    faiss_threads: int
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form."""
        return asdict(self)


def commit_every_for(dim: int) -> int:
    """Vectors per commit so that the writer's float32 buffer stays near 256 MiB (at least 1,000)."""
    return max(1000, _COMMIT_BYTES // (4 * int(dim)))


class ReferenceTopK:
    """Brute-force top-k inner products of the queries, fed the stored vectors chunk by chunk."""

    def __init__(self, queries: np.ndarray, k: int) -> None:
        self.queries = queries
        self.keep = k + 8  # a few more, to see ties at the k-th score
        self.k = k
        self.scores = np.full((len(queries), 0), -np.inf, np.float32)
        self.ids = np.full((len(queries), 0), -1, np.int64)

    def add(self, vectors: np.ndarray, ids: np.ndarray) -> None:
        stored = vectors.astype(np.float16).astype(np.float32)  # what the exact shards hold
        scores = np.hstack([self.scores, self.queries @ stored.T])
        all_ids = np.hstack([self.ids, np.broadcast_to(ids, (len(self.queries), len(ids)))])
        top = np.argpartition(-scores, min(self.keep, scores.shape[1]) - 1, axis=1)[:, : self.keep]
        self.scores = np.take_along_axis(scores, top, axis=1)
        self.ids = np.take_along_axis(all_ids, top, axis=1)

    def recall(self, i: int, found: list[int]) -> float:
        """Share of the reference top-k that `found` (query i's results) recovers, ties counted."""
        order = np.argsort(-self.scores[i], kind="stable")
        scores, ids = self.scores[i][order], self.ids[i][order]
        k = min(self.k, int(np.isfinite(scores).sum()))
        if k == 0:
            return 1.0
        good = set(ids[:k].tolist()) | set(ids[scores >= scores[k - 1] - _TIE_TOLERANCE].tolist())
        return min(1.0, sum(1 for j in found[:k] if j in good) / k)


def segment_rows(start: int, n: int) -> list[dict[str, Any]]:
    """Segment metadata of vectors start..start+n: synthetic files of 1,000 windows each."""
    return [
        {
            "path": f"/synthetic/file-{(start + i) // _SEGMENTS_PER_FILE:07d}.wav",
            "segment": (start + i) % _SEGMENTS_PER_FILE,
            "start_s": 5.0 * ((start + i) % _SEGMENTS_PER_FILE),
            "sel": (start + i) % 1000,
        }
        for i in range(n)
    ]


def _measure_side(
    index: Any,
    queries: np.ndarray,
    k: int,
    reference: ReferenceTopK,
    *,
    exact: bool,
    mode: str,
    ranges: dict[str, tuple[float, float]] | None = None,
) -> SearchSide:
    """Recall and single-query latency of one way of searching `index` (under a range filter)."""
    for q in queries[:_WARMUP_QUERIES]:
        index.search(q[None], k, exact=exact, ranges=ranges)
    latencies, recalls = [], []
    for i, q in enumerate(queries):
        start = time.perf_counter()
        hits = index.search(q[None], k, exact=exact, ranges=ranges)[0]
        latencies.append(1000 * (time.perf_counter() - start))
        recalls.append(reference.recall(i, [h.id for h in hits]))
    return SearchSide(
        mode=mode,
        queries=len(queries),
        recall_at_k=round(float(np.mean(recalls)), 4),
        latency_ms_p50=round(percentile(latencies, 50), 3),
        latency_ms_p99=round(percentile(latencies, 99), 3),
    )


def _codes_memory(index: Any) -> int:
    """Bytes the default search of a compressed index holds: the merged candidate index (codes, ids, coarse
    quantizer, transform), plus the fp16 vectors of shards too small to have codes (searched exactly)."""
    from vela_search.store import faiss_ops
    from vela_search.store.rerank import merge_codes

    readers = index.shard_readers()
    coded = [reader.codes_index() for reader in readers if reader.entry.get("codes")]
    uncoded = sum(int(r.entry["count"]) for r in readers if not r.entry.get("codes")) * index.dim * 2
    return (int(faiss_ops.faiss().serialize_index(merge_codes(coded)).size) if coded else 0) + uncoded


def _shards_bytes(root: Path, manifest: dict) -> int:
    """Bytes of the shards' FAISS files (the whole searched index when there are no codes)."""
    return sum((root / entry["index"]).stat().st_size for entry in manifest["shards"])


def measure_index_search(
    n_vectors: int,
    *,
    dim: int = 4096,
    queries: int = 200,
    k: int = 10,
    exact_queries: int = 20,
    max_index_memory: int | None = None,
    factory: str = "auto",
    workdir: str | Path | None = None,
    keep: bool = False,
    seed: int = 0,
    progress: Callable[[str, int, int], None] | None = None,
) -> IndexSearchRun:
    """Build an index of ``n_vectors`` synthetic clustered vectors through the writer and measure search.

    Args:
        n_vectors: vectors to index.
        dim: their dimension.
        queries: fresh queries for the default search (recall and latency).
        k: results per query (recall@k).
        exact_queries: how many of the queries also run through the exact scan (it reads every vector).
        max_index_memory: memory budget of the automatic choice (bytes; default: the store's).
        factory: "auto" (the store's automatic choice) or a FAISS factory to force.
        workdir: where the index goes (default: the system's temporary directory).
        keep: leave the index there (its path is in the notes) instead of removing it.
        seed: seed of the vectors and queries.
        progress: called as ``(phase, done, total)``: ``build`` after each commit, ``search`` per side.

    Raises:
        VelaError: a count below 1, or queries/k larger than the collection.
    """
    from vela_search.store import AudioIndex, faiss_ops

    _check_search_settings(n_vectors, dim, queries, k)
    generator = ClusteredVectors(dim, default_clusters(n_vectors), seed=seed)
    probes = generator.queries(queries)
    reference = ReferenceTopK(probes, k)
    # The filtered cases' references: the same top-k among the rows each filter keeps.
    filtered_refs = {share: ReferenceTopK(probes, k) for share in FILTER_SHARES}
    scratch = Path(tempfile.mkdtemp(prefix="vela-bench-search-", dir=workdir))
    try:
        root = scratch / "index"
        fingerprint = {"model": _FINGERPRINT_MODEL, "dim": dim}
        started = time.perf_counter()
        AudioIndex.create(
            root, fingerprint=fingerprint, dim=dim, factory=factory, max_index_memory=max_index_memory
        ).close()
        create_s = time.perf_counter() - started
        with AudioIndex.open(root, shards=False).writer(fingerprint=fingerprint) as writer:
            build = _build(writer, generator, n_vectors, reference, filtered_refs, progress)
            mark = time.perf_counter()
            writer.finish_maintenance()  # what an index run does last (a graph folds its newest rows)
            build.build_s += time.perf_counter() - mark
        with AudioIndex.open(root) as index:
            measured = _measure(index, root, probes, k, exact_queries, reference, filtered_refs, progress)
        if keep:
            measured.notes.append(f"index kept at {root}")
        fp16 = n_vectors * dim * 2
        return IndexSearchRun(
            vectors=n_vectors,
            dim=dim,
            k=k,
            clusters=generator.clusters,
            seed=seed,
            factory=str(measured.factory),
            choice=measured.choice,
            build_s=round(create_s + build.build_s, 2),
            generate_s=round(build.generate_s, 2),
            commits=build.commits,
            shards=measured.shards,
            fp16_bytes=fp16,
            index_memory_bytes=measured.memory,
            memory_fraction=round(measured.memory / fp16, 5),
            default=measured.default,
            exact=measured.exact,
            filtered=measured.filtered,
            peak_rss_bytes=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
            faiss_threads=int(faiss_ops.faiss().omp_get_max_threads()),
            notes=measured.notes,
        )
    finally:
        if not keep:
            shutil.rmtree(scratch, ignore_errors=True)


def _check_search_settings(n_vectors: int, dim: int, queries: int, k: int) -> None:
    for name, value in (("vectors", n_vectors), ("dim", dim), ("queries", queries), ("k", k)):
        if value < 1:
            raise VelaError(f"{name} must be at least 1, got {value}")
    if k > n_vectors:
        raise VelaError(f"k ({k}) must not exceed the number of vectors ({n_vectors})")
    if dim < 2:
        raise VelaError(f"dim must be at least 2, got {dim}")


@dataclass
class _Build:
    build_s: float = 0.0  # adding and committing (the index's own work)
    generate_s: float = 0.0  # making the synthetic vectors and rows (not the index's)
    commits: int = 0


def _build(
    writer: Any,
    generator: ClusteredVectors,
    n_vectors: int,
    reference: ReferenceTopK,
    filtered_refs: dict[str, ReferenceTopK],
    progress: Callable[[str, int, int], None] | None,
) -> _Build:
    """Add the vectors commit by commit as indexing would, feeding the reference top-k as they go."""
    build = _Build()
    every = commit_every_for(generator.dim)
    for start in range(0, n_vectors, every):
        stop = min(n_vectors, start + every)
        mark = time.perf_counter()
        vectors = generator.vectors(start, stop)
        rows = segment_rows(start, stop - start)
        build.generate_s += time.perf_counter() - mark
        mark = time.perf_counter()
        ids = writer.add(vectors, rows)
        writer.commit()
        build.build_s += time.perf_counter() - mark
        reference.add(vectors, ids)
        for share, below in FILTER_SHARES.items():
            keep_rows = ids % 1000 < below
            filtered_refs[share].add(vectors[keep_rows], ids[keep_rows])
        build.commits += 1
        del vectors, rows
        if progress is not None:
            progress("build", stop, n_vectors)
    return build


@dataclass
class _Measured:
    choice: dict[str, Any]
    factory: Any
    shards: int
    memory: int
    default: SearchSide
    exact: SearchSide | None
    filtered: list[SearchSide]
    notes: list[str]


def _measure(
    index: Any,
    root: Path,
    probes: np.ndarray,
    k: int,
    exact_queries: int,
    reference: ReferenceTopK,
    filtered_refs: dict[str, ReferenceTopK],
    progress: Callable[[str, int, int], None] | None,
) -> _Measured:
    """The built index: its default search, exact scan and filtered cases, against the references."""
    notes: list[str] = []
    info = index.index_info()
    # Shards too small for codes are searched exactly; with none coded, search is all exact.
    coded = any(entry.get("codes") for entry in index.manifest["shards"])
    compressed = info.get("choice") == "compressed" and coded
    has_exact = info.get("choice") != "fixed" or index.factory == "SQfp16"
    memory = _codes_memory(index) if compressed else _shards_bytes(root, index.manifest)
    mode = "compressed" if compressed else "exact" if has_exact else "fixed"
    if info.get("choice") == "compressed" and not coded:
        notes.append("the codes are trained but every shard is too small for codes: all exact")
    elif not compressed and has_exact:
        notes.append(
            "the automatic choice kept exact search at this size: lower --max-index-memory or add "
            "--vectors to reach the compressed index"
        )
    default = _measure_side(index, probes, k, reference, exact=False, mode=mode)
    if progress is not None:
        progress("search", 1, 2)
    exact = None
    if has_exact:
        exact_probes = probes[: max(1, min(exact_queries, len(probes)))]
        exact = _measure_side(index, exact_probes, k, reference, exact=True, mode="exact")
    else:
        notes.append(f"the forced factory {index.factory!r} keeps no exact vectors: no exact search")
    filtered = [
        _measure_side(
            index,
            probes,
            k,
            filtered_refs[share],
            exact=False,
            mode=f"{mode} filter {share}",
            ranges={"sel": (0, below - 1)},
        )
        for share, below in FILTER_SHARES.items()
    ]
    if progress is not None:
        progress("search", 2, 2)
    factory = info.get("factory") if compressed else index.factory
    return _Measured(info, factory, index.num_shards, memory, default, exact, filtered, notes)
