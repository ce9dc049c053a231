#!/usr/bin/env python
"""What the waveform peaks cost an index: size and indexing time with and without them.

Indexes the given audio into fresh temporary indexes after one warm-up run, alternating runs with peaks
(as `vela-search index` writes them) and runs with the peaks hook switched off (in alternating order),
and prints the median time, the index size and the peaks' own share (bytes, and seconds spent computing
and writing them).

Usage: python scripts/peaks_cost.py data/samples --model tiny --runs 3
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from unittest import mock


def folder_bytes(path: Path, sub: str | None = None) -> int:
    base = path / sub if sub else path
    return sum(p.stat().st_size for p in base.rglob("*") if p.is_file()) if base.exists() else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("audio", nargs="+")
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()

    from vela_search.embedding.embedder import VelaEmbedder
    from vela_search.indexing import pipeline, run
    from vela_search.peaks import PEAKS_DIR, PeakBuilder

    emb = VelaEmbedder.from_pretrained(args.model, demos="none", device="cpu")
    spent = {"peaks_s": 0.0}
    store, add = run.store_peaks, PeakBuilder.add

    def timed_store(*a, **k):  # noqa: ANN002, ANN003
        t = time.perf_counter()
        store(*a, **k)
        spent["peaks_s"] += time.perf_counter() - t

    def timed_add(self, *a, **k):  # noqa: ANN001, ANN002, ANN003
        t = time.perf_counter()
        add(self, *a, **k)
        spent["peaks_s"] += time.perf_counter() - t

    results: dict[str, list[float]] = {"with": [], "without": []}
    sizes: dict[str, tuple[int, int]] = {}
    with tempfile.TemporaryDirectory() as tmp:  # a warm-up run: the first run pays one-off costs
        pipeline.index_paths(args.audio, Path(tmp) / "idx", emb)
    for i in range(args.runs):
        for kind in ("with", "without") if i % 2 == 0 else ("without", "with"):
            with tempfile.TemporaryDirectory() as tmp:
                index = Path(tmp) / "idx"
                patches = (
                    [
                        mock.patch.object(run, "store_peaks", timed_store),
                        mock.patch.object(PeakBuilder, "add", timed_add),
                    ]
                    if kind == "with"
                    else [
                        mock.patch.object(run, "store_peaks", lambda *a, **k: None),
                        mock.patch.object(PeakBuilder, "add", lambda *a, **k: None),
                    ]
                )
                for p in patches:
                    p.start()
                started = time.perf_counter()
                pipeline.index_paths(args.audio, index, emb)
                results[kind].append(time.perf_counter() - started)
                for p in patches:
                    p.stop()
                sizes[kind] = (folder_bytes(index), folder_bytes(index, PEAKS_DIR))
    for kind in ("with", "without"):
        total, peaks = sizes[kind]
        print(
            f"{kind:7s} peaks: median {statistics.median(results[kind]):.2f} s over {args.runs} runs "
            f"({', '.join(f'{t:.2f}' for t in results[kind])}); index {total / 1024:.1f} KiB, "
            f"peaks {peaks / 1024:.1f} KiB"
        )
    print(f"time inside the peaks code: {spent['peaks_s'] / args.runs:.3f} s per run")


if __name__ == "__main__":
    main()
