"""FAISS on GPUs: which build is installed, moving shard indexes to a GPU, and searching them exactly
as the CPU would, deletions and filters included.

FAISS's classic GPU indexes (flat, IVF-Flat, IVF-PQ) accept an ID selector in their search parameters
and ignore it (faiss issues #3114 and #3924): deleted segments and rows outside a path or duration
filter would come back. `search` therefore never hands a GPU index a selector. The rule:

1. Ask the GPU for ``w = min(k + excluded rows, ntotal, GPU_MAX_K)`` candidates, without a selector, and
   keep the first k allowed ones (an exact filter by the allowed mask).
2. A query's result is final when its candidates prove it: k allowed rows were found, or ``w`` covered
   every excluded row (``w = k + excluded``) or every row, or the index ran out of candidates (an IVF
   index returns only what its probed lists hold). The k best allowed rows are then among them.
3. Every other query (a selective filter whose excluded rows push the allowed ones past ``w``, or
   ``k > GPU_MAX_K``) is searched again on the CPU index with the selector, which FAISS's CPU indexes
   apply before top-k. A GPU search that fails (GPU limits, memory) also falls back to the CPU.

cuVS-backed GPU indexes (``faiss-gpu-cuvs`` builds) may apply selectors, but the store does not depend
on it: they get the same treatment. No GPU is available where this project is tested: the GPU paths are
guarded so that the CPU build never reaches them, and the selector rule is tested with a stand-in GPU
index (a CPU index that ignores its selector), not on hardware.
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np

from . import faiss_ops

# The largest k a FAISS GPU search supports (GPU_MAX_SELECTION_K in faiss/gpu/utils/DeviceDefs.cuh).
GPU_MAX_K = 2048
# Vectors decoded per step when an SQfp16 shard is copied to the GPU (bounds the host memory it takes).
_COPY_ROWS = 65_536

_lock = threading.Lock()
_resources: Any = None
# FAISS documents a GpuResources object as unsafe to use from two threads at once, and every GPU copy
# made here uses the one process-wide object (each holds its own scratch memory: one per index or per
# thread would multiply it). Every use of it - copying an index to the GPU, searching a GPU copy -
# therefore holds this lock: searches of any two served indexes never overlap on the GPU.
_in_use = threading.RLock()


def resources_lock() -> threading.RLock:
    """The lock held while the shared GPU resources are in use (copies and searches)."""
    return _in_use


def has_gpu_support() -> bool:
    """Whether the installed FAISS is a GPU build (whatever the GPUs present)."""
    return hasattr(faiss_ops.faiss(), "StandardGpuResources")


def has_cuvs() -> bool:
    """Whether the installed FAISS is built with NVIDIA cuVS (``faiss-gpu-cuvs``)."""
    f = faiss_ops.faiss()
    return hasattr(f, "GpuIndexCagra") or "CUVS" in _compile_options()


def gpu_count() -> int:
    """How many GPUs FAISS sees (0 for a CPU build, or when CUDA cannot start)."""
    f = faiss_ops.faiss()
    if not has_gpu_support():
        return 0
    try:
        return int(f.get_num_gpus())
    except (RuntimeError, AttributeError):
        return 0


def _compile_options() -> list[str]:
    get = getattr(faiss_ops.faiss(), "get_compile_options", None)
    return get().split() if get is not None else []


def faiss_build() -> dict[str, Any]:
    """A JSON-able description of the installed FAISS build: version, compile options, GPU and cuVS
    support, and the GPUs it sees."""
    f = faiss_ops.faiss()
    return {
        "version": getattr(f, "__version__", "unknown"),
        "compile_options": _compile_options(),
        "gpu_support": has_gpu_support(),
        "cuvs": has_cuvs(),
        "gpus": gpu_count(),
    }


def _gpu_resources() -> Any:
    global _resources
    with _lock:
        if _resources is None:
            _resources = faiss_ops.faiss().StandardGpuResources()
        return _resources


def to_gpu(index: Any) -> Any:
    """A copy of the CPU index `index` on GPU 0 where FAISS sees a GPU, else `index` itself.

    - SQfp16 (exact shards): GPUs have no scalar-quantizer flat index, so it becomes a flat GPU index
      storing fp16 (the same exact search over the same fp16 values), filled a slice at a time from the
      (memory-mapped) CPU index.
    - IVF-PQ and IVF-Flat, also behind a transform such as OPQ (compressed candidate indexes): FAISS's
      cloner, with fp16 lookup tables and, where the coarse quantizer cannot move (HNSW), that
      quantizer left on the CPU; cuVS implementations where the build has them, else the classic ones.
    - Anything FAISS cannot move, or a copy that fails (e.g. GPU memory), stays on the CPU: so do the
      4-bit fast-scan and RaBitQ codes the automatic policy trains (FAISS has no GPU index of either).
    """
    if gpu_count() == 0:
        return index
    f = faiss_ops.faiss()
    try:
        concrete = f.downcast_index(index)
        with _in_use:
            if (
                isinstance(concrete, f.IndexScalarQuantizer)
                and concrete.sq.qtype == f.ScalarQuantizer.QT_fp16
            ):
                return _fp16_flat(concrete)
            return _clone(index)
    except (RuntimeError, AttributeError):
        return index


def _fp16_flat(index: Any) -> Any:
    f = faiss_ops.faiss()
    config = f.GpuIndexFlatConfig()
    config.device = 0
    config.useFloat16 = True
    gpu_index = f.GpuIndexFlat(_gpu_resources(), int(index.d), index.metric_type, config)
    n = int(index.ntotal)
    for start in range(0, n, _COPY_ROWS):
        rows = np.arange(start, min(start + _COPY_ROWS, n), dtype=np.int64)
        gpu_index.add(faiss_ops.reconstruct_rows(index, rows))
    return gpu_index


def _clone(index: Any) -> Any:
    f = faiss_ops.faiss()
    options = f.GpuClonerOptions()
    options.useFloat16 = (
        True  # IVF-Flat: fp16 storage; IVF-PQ: fp16 lookup tables (needed for many sub-quantizers)
    )
    if hasattr(options, "allowCpuCoarseQuantizer"):
        options.allowCpuCoarseQuantizer = True  # an HNSW coarse quantizer has no GPU version
    if hasattr(options, "use_cuvs"):
        options.use_cuvs = has_cuvs()
    try:
        return f.index_cpu_to_gpu(_gpu_resources(), 0, index, options)
    except RuntimeError:
        if not getattr(options, "use_cuvs", False):
            raise
        # cuVS lacks some configurations the classic GPU code has (and the reverse): try the other.
        options.use_cuvs = False
        return f.index_cpu_to_gpu(_gpu_resources(), 0, index, options)


def search(
    gpu_index: Any, cpu_index: Any, queries: np.ndarray, k: int, allowed: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray]:
    """Top-k of `queries` over the allowed rows, on the GPU copy where it can be exact (module docs).

    Args:
        gpu_index: the GPU copy of `cpu_index` (never given a selector).
        cpu_index: the CPU index, for queries the GPU cannot answer exactly.
        queries: (q, d) float32.
        k: results per query.
        allowed: boolean mask indexed by the labels the index returns (row positions for shards; the
            ids of an index built with `add_with_ids`), as a CPU selector would test them; None for all.

    Returns:
        (scores, positions), each (q, min(k, ntotal)); missing results have position -1.
    """
    n = int(cpu_index.ntotal)
    k = min(k, n)
    if k > GPU_MAX_K:
        return faiss_ops.search(cpu_index, queries, k, allowed)
    if allowed is None:
        try:
            with _in_use:
                return gpu_index.search(queries, k)
        except RuntimeError:
            return faiss_ops.search(cpu_index, queries, k, None)
    # (For a mask longer than the index, e.g. over global ids, this over-counts: more CPU, never wrong.)
    excluded = min(len(allowed) - int(np.count_nonzero(allowed)), n)
    needed = k + excluded
    width = min(needed, n, GPU_MAX_K)
    try:
        with _in_use:
            scores, positions = gpu_index.search(queries, width)
    except RuntimeError:
        return faiss_ops.search(cpu_index, queries, k, allowed)
    valid = positions >= 0
    found = faiss_ops.allowed_at(allowed, positions).sum(axis=1)
    # Proven: k allowed rows found, every row or every excluded row seen, or the candidates ran out.
    final = (found >= k) | (width >= min(needed, n)) | ~valid[:, -1]
    scores, positions = faiss_ops.keep_allowed(scores, positions, allowed, k)
    redo = np.flatnonzero(~final)
    if redo.size:
        scores[redo], positions[redo] = faiss_ops.search(cpu_index, queries[redo], k, allowed)
    return scores, positions
