"""Time one exact SQfp16 query over N x dim vectors: the measurement behind `ChoiceLimits.exact_max_elements`.

    python scripts/measure_exact_scan.py --dim 4096 --sizes 20000 50000

Vectors are random (an exact scan costs the same whatever they hold) and added in blocks of 10,000, so
memory stays at N x dim x 2 bytes plus one block.
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def main() -> None:
    """Print the median single-query latency of an SQfp16 scan for each size."""
    import faiss

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dim", type=int, default=4096)
    parser.add_argument("--sizes", type=int, nargs="+", default=[20_000, 50_000])
    parser.add_argument("--queries", type=int, default=9)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    for n in args.sizes:
        index = faiss.index_factory(args.dim, "SQfp16", faiss.METRIC_INNER_PRODUCT)
        for start in range(0, n, 10_000):
            index.add(rng.standard_normal((min(10_000, n - start), args.dim), dtype=np.float32))
        queries = rng.standard_normal((args.queries + 1, args.dim), dtype=np.float32)
        index.search(queries[:1], 10)  # warm-up
        times = []
        for i in range(1, args.queries + 1):
            started = time.perf_counter()
            index.search(queries[i : i + 1], 10)
            times.append(time.perf_counter() - started)
        print(
            f"{n} x {args.dim} ({n * args.dim:.2e} numbers, {n * args.dim * 2 / 1e6:.0f} MB fp16): "
            f"p50 {1000 * float(np.median(times)):.1f} ms per query"
        )


if __name__ == "__main__":
    main()
