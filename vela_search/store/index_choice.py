"""The automatic index choice: exact fp16 search while it is fast, an HNSW graph over the fp16 vectors
while vectors and graph fit the memory budget, else compressed codes with exact re-ranking.

A pure policy (no I/O, no FAISS): given the live vector count, the dimension and a memory budget, it
says whether exact `SQfp16` search is enough, whether a graph fits, or which compressed candidate index
to train (an IVF index with an HNSW coarse quantizer and either 1-bit RaBitQ codes of every dimension
or 4-bit PQ codes behind a PCA rotation). How many lists a query probes, how many candidates are
re-ranked and the graph's efSearch are then tuned from measured recall (see `tuning`). The thresholds
are fields of `ChoiceLimits`, so tests can make a few thousand vectors "large".
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass

# 4 GiB: a machine that searches a 1M x 4096 library (8 GB of fp16 vectors) holds its codes in memory.
DEFAULT_MAX_INDEX_MEMORY = 4 << 30

_ID_BYTES = 8  # an IVF list stores one int64 id per vector beside its code
_FAST_SCAN_CENTROIDS = 16  # a 4-bit sub-quantizer's centroids, each trained on `points_per_centroid` points
_RABITQ_FACTORS = 8  # bytes a RaBitQ code carries beside its bits (FAISS's per-vector scale factors)
# Links per graph node (2 x this on the bottom level); see `graph`.
GRAPH_M = 32
GRAPH_FACTORY = f"IDMap,HNSW{GRAPH_M}_SQfp16"
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(i?b?)\s*$", re.IGNORECASE)
_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


@dataclass(frozen=True)
class ChoiceLimits:
    """The thresholds of the policy (the defaults are for real collections; tests shrink them).

    Attributes:
        exact_max_elements: exact search is kept while vectors x dim stays at or below this. Measured on
            this project's 2-core reference machine (docs/benchmarks.md, "Index kinds"): an exact
            query costs ~9 ms of CPU over 12,000 x 512 fp16 vectors (6.1M elements), a graph query
            over 100,000 x 4,096 a fraction of that; 2^22 elements (1,024 vectors of 4,096) keeps an
            exact query near 6 ms, and a graph below that size is built in well under a second.
        graph: choose the graph kind when it fits the budget (tests turn it off to reach the
            compressed kind at small sizes).
        points_per_centroid: training vectors per k-means centroid (FAISS warns below 39).
        max_nlist: most IVF lists.
        min_nlist: fewest IVF lists.
        max_code_bytes: most PQ bytes per vector (query cost grows with it).
        dims_per_subquantizer: dimensions per code byte after the rotation (two 4-bit sub-quantizers
            of half as many each); the rotation keeps code_bytes x this many dimensions (PCA with a
            random rotation, cheap to train at 4,096).
        min_rerank: fewest candidates re-ranked with exact inner products per query.
        rabitq_min_dim: from this many dimensions on, the codes are RaBitQ (one bit per dimension, no
            rotation) wherever they fit the budget, PQ behind a PCA otherwise. A PCA to 256 dimensions
            keeps ~1/4 of the variance of a slowly decaying 4,096-d spectrum, so its candidates need a
            deep re-rank; RaBitQ's estimate sees every dimension (docs/benchmarks.md, "RaBitQ codes").
        min_coded_rows: shards with fewer rows get no codes file, but codes made in memory at open (each codes
            file carries the template's fixed parts, ~5 MB at 4,096 dims behind a PCA, 16 MB of RaBitQ's
            1,024 full-dimension centroids; scanning 4,096 rows takes ~3 ms).
        growth_factor: re-train the codes once the live count exceeds the design size by this factor.
        train_max: at most this many vectors are sampled for training (bounds its time and memory),
            or more at small dimensions, up to `train_max_bytes` of float32. The list count is bounded
            so that this sample still gives every centroid `points_per_centroid` points.
        measure_base: vectors of the collection searched when recall@10 is measured at training time.
        measure_queries: held-out queries of that measurement (and of a graph's: rows held out of it).
    """

    exact_max_elements: int = 4_194_304
    points_per_centroid: int = 39
    max_nlist: int = 16_384
    min_nlist: int = 4
    max_code_bytes: int = 64
    dims_per_subquantizer: int = 4
    min_rerank: int = 100
    rabitq_min_dim: int = 2048
    min_coded_rows: int = 4_096
    growth_factor: float = 4.0
    train_max: int = 65_536
    train_max_bytes: int = 2 << 30
    measure_base: int = 20_000
    measure_queries: int = 200
    graph: bool = True


@dataclass(frozen=True)
class IndexChoice:
    """What the policy chose for a collection.

    Attributes:
        kind: "exact" (SQfp16 scan), "graph" (HNSW over fp16 vectors) or "compressed" (codes for
            candidates, exact re-rank).
        factory: the FAISS factory of the graph or compressed candidate index ("" for exact).
        nlist: IVF lists (0 for exact).
        code_bytes: code bytes per vector (0 for exact).
        nprobe: lists probed per query (0 for exact).
        rerank: candidates re-ranked per query (0 for exact).
        train_size: vectors sampled to train it (0 for exact).
        memory_bytes: estimated memory of the searched index (fp16 vectors when exact).
        design_size: the live count it was chosen for.
    """

    kind: str
    factory: str
    nlist: int
    code_bytes: int
    nprobe: int
    rerank: int
    train_size: int
    memory_bytes: int
    design_size: int

    def to_dict(self) -> dict:
        """JSON-able form."""
        return asdict(self)


def parse_size(text: str | int) -> int:
    """Bytes from a size such as ``512M``, ``4G``, ``1.5GiB`` or ``1000000`` (binary units).

    Raises:
        ValueError: not a positive size (one line saying what is accepted).
    """
    if isinstance(text, int):
        value = text
    else:
        match = _SIZE.match(str(text))
        if not match or (match.group(3) and not match.group(2) and match.group(3).lower() != "b"):
            raise ValueError(f"{text!r} is not a size: give bytes or a number with K, M, G or T (e.g. 4G)")
        value = int(float(match.group(1)) * _UNITS[match.group(2).lower()])
    if value < 1:
        raise ValueError(f"a memory size must be positive, not {text!r}")
    return value


def _power_of_two_at_most(x: float) -> int:
    return 1 << max(0, int(math.floor(math.log2(max(x, 1.0)))))


def exact_memory(n: int, dim: int) -> int:
    """Bytes of the fp16 vectors of `n` vectors of `dim`."""
    return int(n) * int(dim) * 2


def graph_memory(n: int, dim: int, m: int = GRAPH_M) -> int:
    """Estimated bytes of a graph over `n` vectors of `dim`: fp16 vectors, 2m bottom-level links per node
    (int32), the upper levels' ~1/m share, level and offset entries, and the int64 id map."""
    links = 2 * m * 4 + 4 * m * 4 // max(m - 1, 1)
    return int(n) * (int(dim) * 2 + links + 4 + 8 + 8)


def compressed_memory(n: int, dim: int, *, nlist: int, code_bytes: int, rotated_dim: int) -> int:
    """Estimated bytes of a compressed candidate index: codes and ids, the coarse quantizer (centroids
    and HNSW links), the PQ codebooks and the rotation matrix."""
    codes = int(n) * (code_bytes + _ID_BYTES)
    quantizer = nlist * rotated_dim * 4 + nlist * 32 * 2 * 4
    codebooks = rotated_dim * 256 * 4
    rotation = dim * rotated_dim * 4 if rotated_dim < dim else 0
    return codes + quantizer + codebooks + rotation


def rabitq_memory(n: int, dim: int, *, nlist: int) -> int:
    """Estimated bytes of a RaBitQ candidate index: one bit per dimension and the scale factors a vector,
    its id, and the coarse quantizer (full-dimension centroids and HNSW links)."""
    codes = int(n) * (rabitq_code_bytes(dim) + _ID_BYTES)
    return codes + nlist * int(dim) * 4 + nlist * 32 * 2 * 4


def rabitq_code_bytes(dim: int) -> int:
    """Bytes of one RaBitQ code of `dim` dimensions (FAISS's 1-bit layout)."""
    return (int(dim) + 7) // 8 + _RABITQ_FACTORS


def choose_index(
    n: int, dim: int, max_index_memory: int = DEFAULT_MAX_INDEX_MEMORY, limits: ChoiceLimits | None = None
) -> IndexChoice:
    """Choose exact search, a graph or a compressed candidate index for `n` live vectors of `dim`.

    Exact while the fp16 vectors fit the budget and n x dim is at most `limits.exact_max_elements`.
    Then a graph (HNSW over the fp16 vectors) while `graph_memory` fits the budget.
    Otherwise an IVF index with about 4 sqrt(n) lists (at most n / points_per_centroid, so each centroid
    trains on enough points) and an HNSW coarse quantizer, holding RaBitQ codes (one bit per dimension)
    from `limits.rabitq_min_dim` dimensions on while they fit the budget, else PQ codes as large as the
    budget and 1/8 of the fp16 vectors allow (at most `max_code_bytes`; 4-bit fast-scan codes, two
    sub-quantizers per byte), behind a PCA rotation to code_bytes x dims_per_subquantizer dimensions when
    that is below `dim`.
    """
    limits = limits or ChoiceLimits()
    n, dim = int(n), int(dim)
    fp16 = exact_memory(n, dim)
    if n < 1 or (fp16 <= max_index_memory and n * dim <= limits.exact_max_elements):
        return IndexChoice("exact", "", 0, 0, 0, 0, 0, fp16, n)
    if limits.graph and graph_memory(n, dim) <= max_index_memory:
        return IndexChoice("graph", GRAPH_FACTORY, 0, 0, 0, 0, 0, graph_memory(n, dim), n)
    ppc = limits.points_per_centroid
    train_max = max(limits.train_max, limits.train_max_bytes // (4 * dim))
    # Every list needs `ppc` training points from a sample of at most `train_max`: FAISS warns (once per
    # training, on the terminal) and clusters worse below that.
    # 4 sqrt(n), the low end of FAISS's guideline: more, smaller lists make the PQ residuals smaller. At
    # 1M x 1,024 on the hard set, 2,048 lists reached recall 0.962 with 32 probes and 200 candidates where
    # 1,024 lists needed 64 probes and 300 candidates for 0.973 (docs/benchmarks.md, "The compressed
    # kind: a cheaper re-rank, a finer IVF").
    nlist = _power_of_two_at_most(min(4 * math.sqrt(n), n / ppc, train_max / ppc, limits.max_nlist))
    nlist = max(nlist, min(limits.min_nlist, _power_of_two_at_most(n / ppc)))
    nprobe = min(nlist, max(16, nlist // 32))
    rabitq = rabitq_memory(n, dim, nlist=nlist)
    if dim >= limits.rabitq_min_dim and rabitq <= max_index_memory:
        # k-means alone to train (RaBitQ has no codebooks): points_per_centroid for each list.
        train_size = min(n, train_max, nlist * ppc)
        factory, code_bytes = f"IVF{nlist}_HNSW32,RaBitQ", rabitq_code_bytes(dim)
        return IndexChoice(
            "compressed", factory, nlist, code_bytes, nprobe, limits.min_rerank, train_size, rabitq, n
        )
    ceiling = min(limits.max_code_bytes, dim * 2 // 8 - _ID_BYTES, dim)  # codes + ids <= 1/8 of fp16
    per_vector = max_index_memory / n - _ID_BYTES
    code_bytes = _power_of_two_at_most(min(ceiling, max(per_vector, 1)))
    while True:
        rotated = min(dim, code_bytes * limits.dims_per_subquantizer)
        while code_bytes > 1 and rotated % (2 * code_bytes):  # two 4-bit sub-quantizers per code byte
            code_bytes //= 2
        memory = compressed_memory(n, dim, nlist=nlist, code_bytes=code_bytes, rotated_dim=rotated)
        if memory <= max_index_memory or code_bytes <= 1:
            break
        code_bytes //= 2  # the fixed parts (quantizer, rotation) did not fit: smaller codes
    rotation = f"PCAR{rotated}," if rotated < dim else ""
    # 4-bit PQ codes scanned with FAISS's fast-scan SIMD kernels, two sub-quantizers per byte: at 1M x
    # 1,024 on the hard set, PQ128x4fs found the candidates of recall 0.96 ~5x faster than 8-bit PQ64 in
    # the same 64 bytes a vector (docs/benchmarks.md, "The compressed kind's codes").
    factory = f"{rotation}IVF{nlist}_HNSW32,PQ{2 * code_bytes}x4fs"
    train_size = min(n, train_max, max(nlist, _FAST_SCAN_CENTROIDS) * ppc * 2)
    return IndexChoice(
        "compressed", factory, nlist, code_bytes, nprobe, limits.min_rerank, train_size, memory, n
    )
