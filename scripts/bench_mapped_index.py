"""Memory and time of opening and querying an index whose exact shards are memory-mapped.

Builds (once, in --workdir) an index of --rows random unit vectors of --dim through the real writer, a
shard of --shard-rows per commit (so at most one shard's float32 vectors are in memory), then measures,
each in a fresh process: the process's memory (VmRSS, and its anonymous and file-backed parts) before
opening, after opening, after the first query and after 10 more; the time to open; the query latency;
and the time of a full checksum pass (`vela-search check`'s). With --compare-read it measures the same
with memory-mapping turned off (every shard read into memory, as before mapping existed: needs RAM for
the whole index, twice over while it opens).

    python scripts/bench_mapped_index.py --rows 200000 --dim 4096 --workdir /tmp/vela-mapped-bench
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

_FINGERPRINT = {"model": "bench-mapped", "revision": "1", "prompt_version": "1"}

_MEASURE = r"""
import json, sys, time
import numpy as np
import faiss
from vela_search.store import AudioIndex, faiss_ops

def memory():
    fields = dict(line.split(":", 1) for line in open("/proc/self/status"))
    return {k: round(int(fields[k].split()[0]) / 1024, 1) for k in ("VmRSS", "RssAnon", "RssFile")}

root, dim, mapped = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "mapped"
faiss_ops.MAPPING_SUPPORTED = mapped
queries = np.random.default_rng(1).standard_normal((11, dim)).astype(np.float32)
queries /= np.linalg.norm(queries, axis=1, keepdims=True)
warm = faiss.index_factory(dim, "SQfp16", faiss.METRIC_INNER_PRODUCT)  # start FAISS's threads
warm.add(queries)
warm.search(queries[:1], 5)
del warm
out = {"before": memory()}
start = time.perf_counter()
index = AudioIndex.open(root)
out["open_s"] = round(time.perf_counter() - start, 3)
out["opened"] = memory()
start = time.perf_counter()
index.search(queries[:1], 10)
out["first_query_s"] = round(time.perf_counter() - start, 3)
out["after_1_query"] = memory()
times = []
for q in queries[1:]:
    start = time.perf_counter()
    index.search(q, 10)
    times.append(time.perf_counter() - start)
out["query_p50_s"] = round(float(np.median(times)), 3)
out["after_11_queries"] = memory()
print(json.dumps(out))
"""


def build(root: Path, rows: int, dim: int, shard_rows: int) -> float:
    """Write the index through the real writer, one shard per commit; returns seconds taken."""
    import numpy as np

    from vela_search.store import AudioIndex, IndexWriter

    fingerprint = {**_FINGERPRINT, "dim": dim}
    start = time.perf_counter()
    AudioIndex.create(root, fingerprint=fingerprint, dim=dim).close()
    rng = np.random.default_rng(0)
    with IndexWriter(root, fingerprint=fingerprint, max_shard_size=shard_rows) as writer:
        for first in range(0, rows, shard_rows):
            n = min(shard_rows, rows - first)
            vectors = rng.standard_normal((n, dim), dtype=np.float32)
            vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
            writer.add(vectors, [{"path": f"/bench/{(first + i) // 100}.wav"} for i in range(n)])
            writer.commit()
            del vectors
    return time.perf_counter() - start


def measure(root: Path, dim: int, mode: str) -> dict:
    """Open and query in a fresh process; `mode` is "mapped" or "read"."""
    repo = Path(__file__).resolve().parents[1]
    done = subprocess.run(
        [sys.executable, "-c", _MEASURE, str(root), str(dim), mode],
        capture_output=True,
        text=True,
        cwd=repo,
    )
    if done.returncode:
        raise SystemExit(done.stderr[-3000:])
    return json.loads(done.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--dim", type=int, default=4096)
    parser.add_argument("--shard-rows", type=int, default=25_000)
    parser.add_argument("--workdir", type=Path, required=True, help="where the index is built (reused)")
    parser.add_argument("--compare-read", action="store_true", help="also measure without memory-mapping")
    parser.add_argument("--keep", action="store_true", help="keep the index afterwards")
    args = parser.parse_args()

    from vela_search.store.repair import check_index

    root = args.workdir / f"index-{args.rows}x{args.dim}"
    report: dict = {"rows": args.rows, "dim": args.dim}
    if not (root / "manifest.json").is_file():
        shutil.rmtree(root, ignore_errors=True)
        report["build_s"] = round(build(root, args.rows, args.dim, args.shard_rows), 1)
    report["shards"] = len(list((root / "shards").glob("*.faiss")))
    report["vector_bytes"] = sum(p.stat().st_size for p in (root / "shards").glob("*.faiss"))
    report["mapped"] = measure(root, args.dim, "mapped")
    if args.compare_read:
        report["read_whole"] = measure(root, args.dim, "read")
    start = time.perf_counter()
    checked = check_index(root)
    report["check_s"] = round(time.perf_counter() - start, 2)
    report["check_ok"] = checked.ok
    print(json.dumps(report, indent=2))
    if not args.keep:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
