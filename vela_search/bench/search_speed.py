"""Search latency of the speed benchmark: exact top-k over synthetic unit vectors (torch, and FAISS where
it is installed)."""

from __future__ import annotations

import importlib.util
import os
import statistics
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from vela_search.bench.timing import dtype_name, percentile, timed
from vela_search.errors import VelaError

__all__ = ["SearchRun", "measure_search"]


@dataclass
class SearchRun:
    """Exact top-k latency over synthetic vectors."""

    vectors: int
    dim: int
    k: int
    torch_device: str
    torch_dtype: str
    torch_latency_ms_median: float
    torch_latency_ms_p90: float
    faiss_latency_ms_median: float | None = None
    faiss_latency_ms_p90: float | None = None
    faiss_note: str | None = None


def measure_search(
    n_vectors: int, dim: int, k: int, *, device: Any, seed: int = 0, queries: int = 20
) -> SearchRun:
    """Single-query exact top-k latency over ``n_vectors`` random unit vectors.

    torch: the vectors as one fp16 matrix on a GPU (fp32 on the CPU), one matmul and ``topk`` per query,
    indices copied back to the host. faiss (only where it is importable): the store's exact ``SQfp16`` index
    on the CPU, searched through :func:`vela_search.store.faiss_ops.search`.

    Raises:
        VelaError: The vectors do not fit: more than half of the host's memory (CPU runs) or more than the
            GPU's free memory.
    """
    import torch

    k = min(k, n_vectors)
    on_gpu = device.type == "cuda"
    dtype = torch.float16 if on_gpu else torch.float32
    need = n_vectors * dim * (2 if on_gpu else 4)
    if not on_gpu:
        _check_host_memory(need, f"{n_vectors:,} x {dim} search vectors")
    generator = torch.Generator(device=device).manual_seed(seed)
    try:
        matrix = torch.empty(n_vectors, dim, dtype=dtype, device=device)
    except torch.OutOfMemoryError as exc:
        raise VelaError(
            f"{n_vectors:,} x {dim} search vectors ({need / 2**30:.1f} GiB) do not fit in {device}'s free "
            "memory; use fewer --search-vectors"
        ) from exc
    step = max(1, (1 << 26) // dim)
    for start in range(0, n_vectors, step):
        block = torch.randn(min(step, n_vectors - start), dim, generator=generator, device=device)
        matrix[start : start + len(block)] = torch.nn.functional.normalize(block, dim=1).to(dtype)
    probes = torch.randn(queries, dim, generator=generator, device=device)
    probes = torch.nn.functional.normalize(probes, dim=1)

    def search_one(q: Any) -> np.ndarray:
        return torch.topk(matrix @ q.to(dtype), k).indices.cpu().numpy()

    for q in probes[:3]:
        search_one(q)
    latencies = [1000 * timed(lambda q=q: search_one(q), device)[1] for q in probes]
    run = SearchRun(
        vectors=n_vectors,
        dim=dim,
        k=k,
        torch_device=str(device),
        torch_dtype=dtype_name(dtype),
        torch_latency_ms_median=statistics.median(latencies),
        torch_latency_ms_p90=percentile(latencies, 90),
    )
    if importlib.util.find_spec("faiss") is None:
        run.faiss_note = "faiss is not installed here; only the torch search was timed"
        return run
    try:
        _check_host_memory(n_vectors * dim * 6, f"the FAISS copy of {n_vectors:,} x {dim} vectors")
    except VelaError as exc:
        run.faiss_note = f"FAISS search skipped: {exc}"
        return run
    host = np.ascontiguousarray(matrix.float().cpu().numpy())
    host_probes = np.ascontiguousarray(probes.float().cpu().numpy())
    median, p90, note = _faiss_latency(host, host_probes, k)
    run.faiss_latency_ms_median, run.faiss_latency_ms_p90, run.faiss_note = median, p90, note
    return run


def _faiss_latency(vectors: np.ndarray, probes: np.ndarray, k: int) -> tuple[float, float, str]:
    """Median and p90 single-query latency (ms) of the store's exact FAISS index on the CPU."""
    from vela_search.store import faiss_ops

    index = faiss_ops.build("SQfp16", vectors.shape[1])
    index.add(vectors)
    for q in probes[:3]:
        faiss_ops.search(index, q[None], k, None)
    latencies = []
    for q in probes:
        start = time.perf_counter()
        faiss_ops.search(index, q[None], k, None)
        latencies.append(1000 * (time.perf_counter() - start))
    threads = faiss_ops.faiss().omp_get_max_threads()
    note = f"FAISS SQfp16 (exact) on the CPU, {threads} threads"
    return statistics.median(latencies), percentile(latencies, 90), note


def _check_host_memory(nbytes: int, what: str) -> None:
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return
    if nbytes > total // 2:
        raise VelaError(
            f"{what} need {nbytes / 2**30:.1f} GiB, more than half of this machine's "
            f"{total / 2**30:.1f} GiB; use fewer --search-vectors"
        )
