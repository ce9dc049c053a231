"""Time grouped search when one long file fills the top results (its worst case before continuation).

    python scripts/measure_grouped_search.py --long 20000 --others 10000 --dim 256

Builds an exact index through the writer: one file of `--long` segments whose vectors lie close to the
query, and `--others` segments spread over files of 10 segments each, further away. Grouped search (k files)
must look past every segment of the long file to find the other k - 1 files; ungrouped search is timed
beside it. Prints the median of `--repeat` single-query searches through `Searcher.search_vectors` and how
many store searches each made.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np


def _build(root: Path, long: int, others: int, dim: int) -> np.ndarray:
    from vela_search.store import AudioIndex
    from vela_search.store.writer import IndexWriter

    rng = np.random.default_rng(0)
    query = rng.standard_normal(dim).astype(np.float32)
    query /= np.linalg.norm(query)
    near = query + 0.3 * rng.standard_normal((long, dim)).astype(np.float32) / np.sqrt(dim)
    far = 0.5 * query + rng.standard_normal((others, dim)).astype(np.float32) / np.sqrt(dim)
    vectors = np.vstack([near, far])
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    rows = [{"path": "/audio/long.wav", "start_s": 5.0 * i} for i in range(long)]
    rows += [{"path": f"/audio/short-{i // 10:05d}.wav", "start_s": 5.0 * (i % 10)} for i in range(others)]
    fingerprint = {"model": "grouped-search (synthetic)", "dim": dim}
    AudioIndex.create(root, fingerprint=fingerprint, dim=dim).close()
    with IndexWriter(root, fingerprint=fingerprint) as writer:
        writer.add(vectors, rows)
        writer.commit()
    return query


def main() -> None:
    """Print the median latency of grouped and ungrouped search, and the store searches they made."""
    from vela_search.search import Searcher
    from vela_search.store import AudioIndex

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--long", type=int, default=20_000)
    parser.add_argument("--others", type=int, default=10_000)
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("-k", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=9)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch) / "index"
        query = _build(root, args.long, args.others, args.dim)
        searcher = Searcher(AudioIndex.open(root), None)
        calls: list[int] = []
        search = searcher.index.search

        def counted(queries: np.ndarray, k: int, **options: object) -> object:
            calls.append(k)
            return search(queries, k, **options)

        searcher.index.search = counted  # type: ignore[method-assign]
        for group in (True, False):
            times = []
            for _ in range(args.repeat):
                calls.clear()
                start = time.perf_counter()
                hits = searcher.search_vectors(query, k=args.k, group=group)[0]
                times.append(1000 * (time.perf_counter() - start))
            files = len({h.path for h in hits})
            name = "grouped" if group else "ungrouped"
            print(
                f"{name:>9}: p50 {np.median(times):8.1f} ms, {len(hits)} hits from {files} files, "
                f"store searches of depth {calls}"
            )
        searcher.close()


if __name__ == "__main__":
    main()
