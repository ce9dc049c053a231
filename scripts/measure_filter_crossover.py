"""Time a filtered query on a compressed index both ways: the codes with widening probes, and an exact
scan of the matching rows only: the measurement behind `FILTER_SCAN_FRACTION`.

    python scripts/measure_filter_crossover.py --vectors 100000 --dim 256 --budget 4M

The index is built through the writer from synthetic clustered vectors (as `bench search` does) with a
memory budget small enough for compressed codes; each share of the rows is kept by a range filter on a
numeric column, and each way is timed one query at a time (median) and scored against brute force.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

SHARES = [0.001, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5]


def _build(root: Path, n: int, dim: int, budget: int) -> tuple[np.ndarray, np.ndarray]:
    from vela_search.bench.synthetic_vectors import ClusteredVectors, default_clusters
    from vela_search.store import AudioIndex

    generator = ClusteredVectors(dim, default_clusters(n), seed=0)
    fingerprint = {"model": "filter-crossover (synthetic)", "dim": dim}
    AudioIndex.create(root, fingerprint=fingerprint, dim=dim, max_index_memory=budget).close()
    with AudioIndex.open(root, shards=False).writer(fingerprint=fingerprint) as writer:
        for start in range(0, n, 20_000):
            stop = min(n, start + 20_000)
            rows = [{"path": f"/s/{i // 1000}.wav", "sel": i % 10_000} for i in range(start, stop)]
            writer.add(generator.vectors(start, stop), rows)
            writer.commit()
    vectors = generator.vectors(0, n).astype(np.float16).astype(np.float32)
    return vectors, generator.queries(20)


def _time(index: object, queries: np.ndarray, k: int, ranges: dict, fraction: float) -> tuple[float, list]:
    from vela_search.store import index as index_module

    index_module.FILTER_SCAN_FRACTION = fraction
    found, times = [], []
    for q in queries:
        start = time.perf_counter()
        found.append([h.id for h in index.search(q[None], k, ranges=ranges)[0]])  # type: ignore[attr-defined]
        times.append(1000 * (time.perf_counter() - start))
    return float(np.median(times)), found


def main() -> None:
    """Print, per share of matching rows, the median latency and recall@k of both ways."""
    from vela_search.cli.common import parse_memory_option
    from vela_search.store import AudioIndex

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vectors", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--budget", default="4M")
    parser.add_argument("-k", type=int, default=10)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch) / "index"
        vectors, queries = _build(root, args.vectors, args.dim, parse_memory_option(args.budget))
        with AudioIndex.open(root) as index:
            print(f"{args.vectors:,} x {args.dim}: {index.index_info().get('factory')}")
            print("share  matching  codes ms  codes recall  scan ms  scan recall")
            sel = np.arange(args.vectors) % 10_000
            for share in SHARES:
                below = max(1, round(share * 10_000))
                ranges = {"sel": (0, below - 1)}
                ids = np.flatnonzero(sel < below)
                truth = [ids[np.argsort(-(vectors[ids] @ q), kind="stable")[: args.k]] for q in queries]
                row = [f"{share:5.1%}", f"{len(ids):8,}"]
                for fraction in (0.0, 1.0):
                    _time(index, queries[:2], args.k, ranges, fraction)  # warm-up
                    ms, found = _time(index, queries, args.k, ranges, fraction)
                    recall = np.mean([len(set(f) & set(t.tolist())) / len(t) for f, t in zip(found, truth)])
                    row += [f"{ms:8.2f}", f"{recall:12.3f}"]
                print("  ".join(row))


if __name__ == "__main__":
    main()
