"""Where a query's time goes: candidate search, exact re-rank, tail scan, metadata rows and hits.

Builds (or reuses, with ``--index``) an automatic index of synthetic clustered vectors the way indexing
lands a library: real-looking segment rows (path, root, content digest, segment, start/end, duration,
words on a file's first row) and one files-table row per file, committed in large batches and then in
small ones, so that small shards without a codes file (the tail) sit beside the coded ones. Then it
times queries through the public ``Searcher.search_vectors`` (no model: the vectors are the queries),
one at a time, and splits each query's time by wrapping the functions that do the work:

- ``candidates``: the codes' candidate search (``store.rerank.search_candidates``);
- ``rerank``: exact inner products of the candidates from the stored fp16 vectors (``store.rerank.rerank``);
- ``tail``: exact scans of shards searched beside the codes (``AudioIndex._exact_search`` with ``only``);
- ``rows``: the hits' metadata rows (``AudioIndex.segment_rows``);
- ``hits``: turning them into ``Hit``s with their files-table rows (``make_hit``);
- ``other``: the rest (filter masks, merging, grouping).

It also reports the memory the snapshot holds for metadata (resident set before and after opening it,
and the decoded tables' Arrow bytes where the store keeps them). Example::

    nice python scripts/search_breakdown.py --vectors 100000 --dim 1024 --workdir /tmp --keep
    nice python scripts/search_breakdown.py --index /tmp/vela-breakdown-XXXX/index

The same script runs against another checkout of the package (PYTHONPATH) to compare before and after.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

FINGERPRINT = {"model": "search-breakdown (synthetic clustered vectors)"}
SEGMENTS_PER_FILE = 20  # by default: a 100 s file cut into 10 s windows with a 5 s hop


def _rows(start: int, n: int, per_file: int) -> list[dict[str, Any]]:
    """Segment rows like indexing writes them (words on each file's first segment only)."""
    out = []
    for i in range(start, start + n):
        file, segment = divmod(i, per_file)
        out.append(
            {
                "path": f"/library/recordings/session-{file // 100:05d}/take-{file:08d}.flac",
                "root": "/library/recordings",
                "content_sha256": f"{file:064x}",
                "segment": segment,
                "start_s": 5.0 * segment,
                "end_s": 5.0 * segment + 10.0,
                "duration_s": 5.0 * per_file + 5.0,
                "words": json.dumps({"name": f"take {file}"}) if segment == 0 else None,
            }
        )
    return out


def _files(start: int, stop: int, per_file: int) -> list[dict[str, Any]]:
    first, last = start // per_file, (stop - 1) // per_file
    return [
        {
            "path": f"/library/recordings/session-{f // 100:05d}/take-{f:08d}.flac",
            "size": 4_000_000,
            "mtime_ns": 1_700_000_000_000_000_000 + f,
            "sha256": f"{f:064x}",
            "duration_s": 5.0 * per_file + 5.0,
            "status": "indexed",
            "segments": per_file,
            "root": "/library/recordings",
        }
        for f in range(first, last + 1)
    ]


def build(root: Path, args: argparse.Namespace) -> None:
    """Index the synthetic library: big commits, then `args.tail` vectors in commits of `args.tail_commit`."""
    from vela_search.bench.search_index import commit_every_for
    from vela_search.bench.synthetic_vectors import ClusteredVectors, default_clusters
    from vela_search.store import AudioIndex
    from vela_search.store.writer import IndexWriter

    generator = ClusteredVectors(args.dim, default_clusters(args.vectors), seed=args.seed)
    AudioIndex.create(
        root, fingerprint=FINGERPRINT, dim=args.dim, factory="auto", max_index_memory=args.max_index_memory
    ).close()
    bulk = args.vectors - args.tail
    bounds = [*range(0, bulk, commit_every_for(args.dim)), *range(bulk, args.vectors, args.tail_commit)]
    bounds.append(args.vectors)
    with IndexWriter(root, fingerprint=FINGERPRINT) as writer:
        for start, stop in zip(bounds, bounds[1:], strict=False):
            if stop <= start:
                continue
            writer.add(generator.vectors(start, stop), _rows(start, stop - start, args.segments_per_file))
            writer.put_files(_files(start, stop, args.segments_per_file))
            writer.commit()
    np.save(root.parent / "queries.npy", generator.queries(args.queries))


def _rss() -> int:
    fields = dict(line.split(":", 1) for line in open("/proc/self/status"))
    return int(fields["RssAnon"].split()[0]) * 1024


class Timers:
    """Per-query seconds by part, filled by wrapped functions."""

    def __init__(self) -> None:
        self.current: dict[str, float] = defaultdict(float)

    def wrap(self, owner: Any, name: str, part: Callable[..., str]) -> None:
        original = getattr(owner, name)

        def timed(*a: Any, **kw: Any) -> Any:
            start = time.perf_counter()
            try:
                return original(*a, **kw)
            finally:
                self.current[part(*a, **kw)] += time.perf_counter() - start

        setattr(owner, name, timed)


def _instrument(timers: Timers) -> None:
    import vela_search.search.searcher as searcher_module
    import vela_search.store.rerank as rerank_module
    from vela_search.store.index import AudioIndex

    timers.wrap(rerank_module, "search_candidates", lambda *a, **k: "candidates")
    timers.wrap(rerank_module, "rerank", lambda *a, **k: "rerank")
    timers.wrap(
        AudioIndex,
        "_exact_search",
        lambda self, q, k, where, only=None: "tail" if only is not None else "exact",
    )
    timers.wrap(AudioIndex, "segment_rows", lambda *a, **k: "rows")
    timers.wrap(searcher_module, "make_hit", lambda *a, **k: "hits")


def measure(root: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Open the index, run the queries one at a time (grouped and not), and split their time."""
    from vela_search.search.searcher import Searcher
    from vela_search.store import AudioIndex, faiss_ops

    faiss_ops.faiss().omp_set_num_threads(args.threads)
    queries = np.load(root.parent / "queries.npy")
    timers = Timers()
    _instrument(timers)
    before = _rss()
    started = time.perf_counter()
    index = AudioIndex.open(root)
    searcher = Searcher(index, None)
    open_s = time.perf_counter() - started
    opened = _rss()
    readers = index.shard_readers()
    tables = [r.metadata_table() for r in readers] if hasattr(readers[0], "metadata_table") else []
    out: dict[str, Any] = {
        "vectors": index.num_vectors,
        "dim": index.dim,
        "shards": index.num_shards,
        "shards_without_codes_file": sum(1 for r in readers if not r.entry.get("codes")),
        "rows_without_codes_file": sum(r.count for r in readers if not r.entry.get("codes")),
        "choice": index.index_info().get("choice"),
        "open_s": round(open_s, 3),
        "rss_anon_open_mib": round((opened - before) / 2**20, 1),
        "metadata_table_bytes": sum(t.nbytes for t in tables) if tables else None,
    }
    for group in (True, False):
        for q in queries[:3]:
            searcher.search_vectors(q, k=args.k, group=group)
        parts: dict[str, list[float]] = defaultdict(list)
        for q in queries:
            timers.current.clear()
            start = time.perf_counter()
            searcher.search_vectors(q, k=args.k, group=group)
            total = time.perf_counter() - start
            for name in ("candidates", "rerank", "tail", "exact", "rows", "hits"):
                parts[name].append(1000 * timers.current.get(name, 0.0))
            parts["total"].append(1000 * total)
            parts["other"].append(1000 * total - sum(1000 * v for v in timers.current.values()))
        out["grouped" if group else "segments"] = {
            name: {"mean_ms": round(statistics.fmean(v), 3), "p50_ms": round(statistics.median(v), 3)}
            for name, v in parts.items()
        }
    out["rss_anon_after_queries_mib"] = round((_rss() - before) / 2**20, 1)
    searcher.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vectors", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=1024)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("-k", "--k", type=int, default=10)
    parser.add_argument("--tail", type=int, default=3_000, help="vectors committed last in small commits")
    parser.add_argument("--tail-commit", type=int, default=500, help="vectors per small commit")
    parser.add_argument("--segments-per-file", type=int, default=SEGMENTS_PER_FILE)
    parser.add_argument("--max-index-memory", type=int, default=32 << 20, help="bytes (small: compressed)")
    parser.add_argument("--threads", type=int, default=1, help="FAISS threads while searching")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--keep", action="store_true", help="leave the built index in place")
    parser.add_argument("--index", type=Path, default=None, help="measure an index this script built")
    args = parser.parse_args()
    if args.index is not None:
        print(json.dumps(measure(args.index, args), indent=1))
        return
    scratch = Path(tempfile.mkdtemp(prefix="vela-breakdown-", dir=args.workdir))
    try:
        started = time.perf_counter()
        build(scratch / "index", args)
        result = {"build_s": round(time.perf_counter() - started, 1), **measure(scratch / "index", args)}
        if args.keep:
            result["index"] = str(scratch / "index")
        print(json.dumps(result, indent=1))
    finally:
        if not args.keep:
            shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
