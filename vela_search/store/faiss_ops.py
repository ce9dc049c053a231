"""FAISS behind a lazy import: building, training, (de)serialising and masked search of one index."""

from __future__ import annotations

import contextlib
import io
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any, NamedTuple

import numpy as np

from ..errors import StoreError
from .integrity import damaged

# IVF probes this many lists (at most nlist) by default; FAISS's own default of 1 loses most neighbours.
DEFAULT_NPROBE = 16
# FAISS warns when k-means gets fewer points than this per centroid.
MIN_POINTS_PER_CENTROID = 39
# Training uses at most this many vectors per centroid (FAISS subsamples beyond 256 anyway).
_TRAIN_POINTS_PER_CENTROID = 256
# Trainings on fewer floats than this run on one thread (see single_thread).
_SMALL_TRAINING_FLOATS = 1 << 24

# FAISS maps files only on Linux (faiss/impl/mapped_io.cpp); elsewhere every index file is read whole.
MAPPING_SUPPORTED = sys.platform.startswith("linux")
# The four-byte tags that start FAISS files of the types it memory-maps: IndexFlatCodes (flat vectors,
# scalar-quantizer codes such as SQfp16, PQ codes). Other types (IVF, HNSW, ...) are read into memory.
_MAPPABLE_TAGS = {b"IxFI", b"IxF2", b"IxFl", b"IxSQ", b"IxPq"}

_faiss: Any = None


class IndexTrainingError(StoreError):
    """A FAISS index factory needs training and there are too few vectors, or training failed."""


def faiss() -> Any:
    """The faiss module, imported on first use so that importing the store stays cheap."""
    global _faiss
    if _faiss is None:
        import faiss as module

        _faiss = module
    return _faiss


def _message(error: Exception) -> str:
    # FAISS errors carry a C++ location prefix; keep the human part.
    text = str(error)
    return text.split("Error: ", 1)[-1].strip() if "Error: " in text else text.strip()


def build(factory: str, dim: int) -> Any:
    """A new, empty inner-product index from a FAISS index-factory string.

    Raises:
        StoreError: the factory string is invalid for this dimension.
    """
    f = faiss()
    try:
        return f.index_factory(int(dim), factory, f.METRIC_INNER_PRODUCT)
    except RuntimeError as e:
        raise StoreError(f"invalid FAISS index factory {factory!r} for dim {dim}: {_message(e)}") from e


def _ivf(index: Any) -> Any | None:
    f = faiss()
    try:
        return f.downcast_index(f.extract_index_ivf(index))
    except RuntimeError:
        return None


def training_vectors_needed(index: Any) -> int:
    """How many vectors training `index` needs (0 when it needs no training)."""
    if index.is_trained:
        return 0
    need = 1
    ivf = _ivf(index)
    if ivf is not None:
        need = max(need, int(ivf.nlist))
    concrete = ivf if ivf is not None else faiss().downcast_index(index)
    pq = getattr(concrete, "pq", None)
    if pq is not None:
        need = max(need, int(pq.ksub))
    return need


def train(index: Any, vectors: np.ndarray, factory: str, *, cap: int | None = None) -> None:
    """Train `index` on `vectors` (a deterministic uniform subsample when there are many).

    Args:
        cap: most vectors used (default: 256 per centroid, beyond which FAISS subsamples anyway).

    Raises:
        IndexTrainingError: too few vectors (the message says how many are needed) or training failed.
    """
    need = training_vectors_needed(index)
    n = len(vectors)
    if n < need:
        raise IndexTrainingError(
            f"FAISS index factory {factory!r} must be trained on at least {need} vectors, but only {n} "
            f"are available; add more data before the first commit, choose a smaller factory "
            f"(fewer IVF lists or PQ bits), or use the default exact 'SQfp16'"
        )
    cap = cap or max(need, 1) * _TRAIN_POINTS_PER_CENTROID
    if n > cap:
        pick = np.sort(np.random.default_rng(0).choice(n, size=cap, replace=False))
        vectors = vectors[pick]
    ivf = _ivf(index)
    concrete = ivf if ivf is not None else faiss().downcast_index(index)
    if getattr(concrete, "do_polysemous_training", False):
        # The factory turns it on for PQ, but searches never use Hamming filtering (polysemous_ht
        # stays 0), and its annealing took 10 s of a 0.2 s training on 2,000 x 64 vectors.
        concrete.do_polysemous_training = False
    try:
        with single_thread(vectors.size < _SMALL_TRAINING_FLOATS):
            index.train(np.ascontiguousarray(vectors, dtype=np.float32))
    except RuntimeError as e:
        raise IndexTrainingError(
            f"training FAISS index factory {factory!r} on {len(vectors)} vectors failed: {_message(e)}"
        ) from e


@contextlib.contextmanager
def single_thread(enabled: bool = True) -> Iterator[None]:
    """Run FAISS on one OpenMP thread (of the calling thread) within the block, when `enabled`.

    For small work only: PQ-codebook k-means runs thousands of tiny parallel regions, and a one-query
    search a few; on a busy 2-core machine their barriers cost more than the work (a 0.3 s training
    took 9 s, a 2 ms candidate search 11 ms).
    """
    f = faiss()
    if not enabled:
        yield
        return
    before = f.omp_get_max_threads()
    f.omp_set_num_threads(1)
    try:
        yield
    finally:
        f.omp_set_num_threads(before)


def drop_pca_training_state(index: Any) -> None:
    """Free a trained PCA's full eigenvector matrix, which FAISS keeps only for training.

    Applying the PCA needs only its projection (d_out x d_in), but the index also stores every
    eigenvector (d_in x d_in: 64 MB at 4,096 dims) and would copy it into each clone and file.
    """
    f = faiss()
    concrete = f.downcast_index(index)
    if not isinstance(concrete, f.IndexPreTransform):
        return
    for i in range(concrete.chain.size()):
        transform = f.downcast_VectorTransform(concrete.chain.at(i))
        if isinstance(transform, f.PCAMatrix):
            transform.PCAMat.resize(0)


def clone(index: Any) -> Any:
    """A deep copy of `index` (used to start a shard from the trained, empty index)."""
    return faiss().clone_index(index)


def write(index: Any, out: IO[bytes]) -> None:
    """Serialise `index` into a binary file object."""
    faiss().write_index(index, faiss().PyCallbackIOWriter(out.write))


def read(source: IO[bytes]) -> Any:
    """Deserialise an index from a binary file object positioned at its start."""
    f = faiss()
    index = f.read_index(f.PyCallbackIOReader(source.read))
    ivf = _ivf(index)
    if ivf is not None:
        ivf.nprobe = min(int(ivf.nlist), DEFAULT_NPROBE)
    return index


def _unreadable(error: Exception) -> str:
    # Drop FAISS's C++ location ("Error in <function> at <file>:<line>: ").
    why = re.sub(r"^Error in .*? at \S+:\d+: ", "", _message(error))
    return f"it is not a readable FAISS index ({why})"


def mappable(path: Path) -> bool:
    """Whether the FAISS file at `path` is of a type FAISS memory-maps here (reads its first 4 bytes).

    False also when the file cannot be read: the ordinary whole-file read then reports why.
    """
    if not MAPPING_SUPPORTED or not hasattr(faiss(), "IO_FLAG_MMAP_IFC"):
        return False
    try:
        os_path = str(path)
        os_path.encode("utf-8")  # FAISS takes the name as UTF-8 text
        with open(path, "rb") as f:
            return f.read(4) in _MAPPABLE_TAGS
    except (OSError, UnicodeError):
        return False


def read_mapped(root: Path, relpath: str) -> Any:
    """Open the index file `relpath` memory-mapped (a `mappable` type): its vectors stay on disk.

    The mapping keeps the file's data readable after the file is deleted, and FAISS closes the file
    descriptor once the mapping exists. The file's structure is checked (header, and that it is long
    enough for the vectors it declares); its checksum is not (see `integrity.verify_file`).

    Raises:
        IndexDamagedError: the file is missing, truncated or not a FAISS index (the message names it).
        StoreError: the process is out of file descriptors.
    """
    f = faiss()
    path = Path(root) / relpath
    try:
        return f.read_index(str(path), f.IO_FLAG_MMAP_IFC)
    except RuntimeError as e:
        if not path.exists():
            raise damaged(root, relpath, "it is missing") from None
        if "Too many open files" in str(e):
            raise StoreError(f"cannot open {path}: too many open files") from None
        raise damaged(root, relpath, _unreadable(e)) from None


def read_bytes(root: Path, relpath: str, data: bytes) -> Any:
    """Deserialise the index file `relpath` from its bytes.

    Raises:
        IndexDamagedError: the bytes are not a FAISS index (the message names the file).
    """
    try:
        return read(io.BytesIO(data))
    except (RuntimeError, ValueError) as e:
        raise damaged(root, relpath, _unreadable(e)) from None


def reconstruct_all(index: Any, out: np.ndarray | None = None, start: int = 0) -> np.ndarray:
    """Decode every stored vector (exact for SQfp16 up to fp16 rounding; approximate for PQ).

    Args:
        index: the FAISS index.
        out: optional C-contiguous float32 array (rows, d) to decode rows ``start:start + rows`` into
            (saves a copy, and lets a large index be decoded a piece at a time).
        start: the first row decoded into `out`.
    """
    n, d = int(index.ntotal), int(index.d)
    if n == 0 or (out is not None and len(out) == 0):
        return np.empty((0, d), dtype=np.float32) if out is None else out
    ivf = _ivf(index)
    if ivf is not None:
        ivf.make_direct_map()
    try:
        return index.reconstruct_n(start, len(out), out) if out is not None else index.reconstruct_n(0, n)
    except RuntimeError as e:
        raise StoreError(f"this index type cannot return its stored vectors: {_message(e)}") from e


def reconstruct_rows(index: Any, positions: np.ndarray) -> np.ndarray:
    """Decode the stored vectors at the given row positions (as exact as :func:`reconstruct_all`)."""
    positions = np.ascontiguousarray(positions, dtype=np.int64)
    if positions.size == 0:
        return np.empty((0, int(index.d)), dtype=np.float32)
    ivf = _ivf(index)
    if ivf is not None:
        ivf.make_direct_map()
    try:
        return index.reconstruct_batch(positions)
    except RuntimeError as e:
        raise StoreError(f"this index type cannot return its stored vectors: {_message(e)}") from e


def _search_params(index: Any, k: int, selector: Any) -> Any:
    # IVF and HNSW indexes accept only their own parameter classes, which also carry nprobe/efSearch.
    f = faiss()
    concrete = f.downcast_index(index)
    if isinstance(concrete, f.IndexIVF):
        return f.SearchParametersIVF(sel=selector, nprobe=int(concrete.nprobe))
    if isinstance(concrete, f.IndexHNSW):
        return f.SearchParametersHNSW(sel=selector, efSearch=max(int(concrete.hnsw.efSearch), k))
    return f.SearchParameters(sel=selector)


def search(
    index: Any, queries: np.ndarray, k: int, allowed: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray]:
    """Top-k of `queries` over the rows of the CPU index `index` where `allowed` is True.

    Excluded rows are removed before top-k, with an IDSelectorBitmap; an index type that rejects
    selectors is searched instead for k + (number of excluded rows) candidates, which always contain
    the k best allowed rows the index would return (see `keep_allowed`). GPU indexes go through
    `gpu.search`, which never trusts them with a selector they might ignore.

    Args:
        index: the CPU index to search.
        queries: (q, d) float32.
        k: how many results per query.
        allowed: boolean mask over the index's rows, or None for all rows.

    Returns:
        (scores, positions), each (q, min(k, ntotal)); missing results have position -1.
    """
    f = faiss()
    n = int(index.ntotal)
    k = min(k, n)
    if allowed is None:
        if isinstance(f.downcast_index(index), f.IndexHNSW):
            # HNSW returns at most efSearch results; widen it for large k.
            return index.search(queries, k, params=_search_params(index, k, None))
        return index.search(queries, k)
    try:
        selector = bitmap_selector(allowed)
        scores, positions = index.search(queries, k, params=_search_params(index, k, selector))
    except RuntimeError:
        pass
    else:
        return _widen_probes(index, queries, k, selector, allowed, scores, positions)
    wide = min(n, k + int(n - np.count_nonzero(allowed)))
    scores, positions = index.search(queries, wide)
    return keep_allowed(scores, positions, allowed, k)


def search_rows(index: Any, queries: np.ndarray, k: int, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Top-k of `queries` among the row positions `rows` of a flat CPU index (exact vectors or SQ
    codes, see `is_flat`), by a scan under a selector of them: `search` without its handling of index
    types that probe or walk a graph, which a re-rank pays once per shard per query.

    Returns:
        (scores, positions), each (q, min(k, len(rows))).
    """
    k = min(int(k), len(rows))
    f = faiss()
    mask = np.zeros(int(index.ntotal), dtype=bool)
    mask[rows] = True
    params = f.SearchParameters(sel=bitmap_selector(mask))
    return index.search(queries, k, params=params)


class FlatRows(NamedTuple):
    """A flat CPU index's stored rows, which `score_codes` can score apart from the index."""

    kind: tuple  # (index type, scalar-quantizer type or -1, dim, metric): rows of one kind score alike
    codes: np.ndarray  # (rows, code bytes) uint8: a view of FAISS's own buffer, valid while the index lives


def flat_rows(index: Any) -> FlatRows | None:
    """The stored rows of `index` without a copy, or None where they cannot be scored apart from it:
    flat float vectors and scalar-quantizer codes that decode without trained ranges (fp16, bf16) can,
    under inner products (the store's metric: higher scores first).
    """
    f = faiss()
    concrete = f.downcast_index(index)
    if concrete.metric_type != f.METRIC_INNER_PRODUCT:
        return None
    untrained = {getattr(f.ScalarQuantizer, name, None) for name in ("QT_fp16", "QT_bf16")} - {None}
    if isinstance(concrete, f.IndexFlat):
        kind: tuple = ("flat", -1, int(concrete.d), int(concrete.metric_type))
    elif type(concrete) is f.IndexScalarQuantizer and concrete.sq.qtype in untrained:
        kind = ("sq", int(concrete.sq.qtype), int(concrete.d), int(concrete.metric_type))
    else:
        return None
    n, size = int(concrete.ntotal), int(concrete.code_size)
    if n == 0:
        return FlatRows(kind, np.empty((0, size), np.uint8))
    return FlatRows(kind, f.rev_swig_ptr(concrete.codes.data(), n * size).reshape(n, size))


def score_codes(kind: tuple, codes: np.ndarray, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Score every query against every row of `codes`, rows of flat indexes of one `kind` (see
    `flat_rows`), in one FAISS call with its own SIMD kernels: the scores the indexes' own searches
    give, for rows gathered from many of them (a re-rank's few hundred rows of many shards).

    Returns:
        (scores, positions), each (q, len(codes)): every row, best first (positions into `codes`).
    """
    f = faiss()
    family, qtype, dim, metric = kind
    scratch = f.IndexFlat(dim, metric) if family == "flat" else f.IndexScalarQuantizer(dim, qtype, metric)
    scratch.add_sa_codes(np.ascontiguousarray(codes, dtype=np.uint8))
    return scratch.search(np.ascontiguousarray(queries, dtype=np.float32), len(codes))


def is_flat(index: Any) -> bool:
    """Whether `index` scans every row it holds (a flat index of vectors or of scalar-quantized codes)."""
    return isinstance(faiss().downcast_index(index), faiss().IndexFlatCodes)


def _widen_probes(
    index: Any, queries: np.ndarray, k: int, selector: Any, allowed: np.ndarray, scores: Any, positions: Any
) -> tuple[np.ndarray, np.ndarray]:
    """An IVF index applies a filter only inside the lists it probes: search the queries that came back
    with fewer than min(k, allowed rows) results again with 4x the probes, up to every list, so that a
    filter never silently returns fewer hits than match."""
    f = faiss()
    concrete = f.downcast_index(index)
    if not isinstance(concrete, f.IndexIVF):
        return scores, positions
    want = min(k, int(np.count_nonzero(allowed)))
    nprobe, nlist = int(concrete.nprobe), int(concrete.nlist)
    short = np.flatnonzero((positions >= 0).sum(axis=1) < want)
    while short.size and nprobe < nlist:
        nprobe = min(nlist, nprobe * 4)
        params = f.SearchParametersIVF(sel=selector, nprobe=nprobe)
        scores[short], positions[short] = index.search(queries[short], k, params=params)
        short = short[(positions[short] >= 0).sum(axis=1) < want]
    return scores, positions


def bitmap_selector(allowed: np.ndarray) -> Any:
    """A FAISS selector of the rows where `allowed` is True (keeps its bitmap alive with it)."""
    f = faiss()
    bitmap = np.packbits(allowed, bitorder="little")
    selector = f.IDSelectorBitmap(len(bitmap), f.swig_ptr(bitmap))  # its size in bytes
    selector.bitmap_owner = bitmap  # FAISS holds a raw pointer: the array must live as long as it
    return selector


def allowed_at(allowed: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Whether each result label is allowed: False for -1 (no result) and for labels past the mask."""
    inside = (labels >= 0) & (labels < len(allowed))
    return inside & allowed[np.where(inside, labels, 0)]


def keep_allowed(
    scores: np.ndarray, positions: np.ndarray, allowed: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """The first k allowed candidates of each row of a best-first candidate list.

    Args:
        scores, positions: (q, w) candidates, best first, position -1 for none.
        allowed: boolean mask indexed by the labels the index returns (row positions for shards).
        k: results to keep per query.

    Returns:
        (scores, positions), each (q, min(k, w)); missing results have position -1 and score -inf.
    """
    ok = allowed_at(allowed, positions)
    order = np.argsort(~ok, axis=1, kind="stable")[:, :k]
    scores = np.take_along_axis(scores, order, axis=1)
    positions = np.take_along_axis(positions, order, axis=1)
    keep = np.take_along_axis(ok, order, axis=1)
    positions[~keep] = -1
    scores[~keep] = -np.inf
    return scores, positions
