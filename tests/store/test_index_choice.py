"""The automatic index choice: a pure policy from size, dimension and memory budget."""

from __future__ import annotations

import pytest

from vela_search.store import faiss_ops
from vela_search.store.index_choice import (
    DEFAULT_MAX_INDEX_MEMORY,
    ChoiceLimits,
    choose_index,
    exact_memory,
    graph_memory,
    parse_size,
    rabitq_memory,
)


def test_small_collections_stay_exact() -> None:
    choice = choose_index(1_000, 4096)
    assert choice.kind == "exact"
    assert choice.memory_bytes == 1_000 * 4096 * 2
    assert choose_index(0, 4096).kind == "exact"
    assert choose_index(1_025, 4096).kind == "graph"  # past 2^22 elements


@pytest.mark.parametrize(
    ("n", "dim", "budget", "kind"),
    [
        (40_000, 4096, DEFAULT_MAX_INDEX_MEMORY, "graph"),
        (100_000, 4096, DEFAULT_MAX_INDEX_MEMORY, "graph"),
        (480_000, 4096, DEFAULT_MAX_INDEX_MEMORY, "graph"),  # 3.9 GiB of fp16 vectors and links
        (520_000, 4096, DEFAULT_MAX_INDEX_MEMORY, "compressed"),  # the graph no longer fits 4 GiB
        (1_000_000, 1024, DEFAULT_MAX_INDEX_MEMORY, "graph"),
        (100_000, 4096, 512 << 20, "compressed"),  # a small budget forces the codes
        (3_000_000, 1024, DEFAULT_MAX_INDEX_MEMORY, "compressed"),
    ],
)
def test_a_graph_is_chosen_while_vectors_and_graph_fit_the_budget(
    n: int, dim: int, budget: int, kind: str
) -> None:
    choice = choose_index(n, dim, budget)
    assert choice.kind == kind
    assert (graph_memory(n, dim) <= budget) == (kind == "graph")
    if kind == "graph":
        assert choice.memory_bytes == graph_memory(n, dim) > exact_memory(n, dim)
        faiss_ops.build(choice.factory, dim)  # a factory FAISS accepts
    assert choice.memory_bytes <= budget
    assert choose_index(n, dim, budget, ChoiceLimits(graph=False)).kind == "compressed"


def test_past_the_exact_threshold_a_compressed_index_is_chosen() -> None:
    choice = choose_index(1_000_000, 4096)
    assert choice.kind == "compressed"
    # RaBitQ at 4,096 dims while it fits: one bit per dimension and 8 bytes of factors a vector.
    assert choice.factory == "IVF2048_HNSW32,RaBitQ" and choice.code_bytes == 4096 // 8 + 8
    assert choice.memory_bytes == rabitq_memory(1_000_000, 4096, nlist=2048)
    assert choice.nlist * 39 <= choice.train_size  # enough training points per centroid
    # Within the budget and at most 1/8 of the fp16 vectors.
    assert choice.memory_bytes <= DEFAULT_MAX_INDEX_MEMORY
    assert choice.memory_bytes <= exact_memory(1_000_000, 4096) / 8
    assert choice.nprobe <= choice.nlist and choice.rerank >= 100
    assert choice.design_size == 1_000_000


@pytest.mark.parametrize(
    ("n", "dim", "budget", "limits"),
    [
        (3_000_000, 1024, DEFAULT_MAX_INDEX_MEMORY, ChoiceLimits()),  # below rabitq_min_dim
        (100_000, 4096, 100_000 * 4096 * 2 // 16, ChoiceLimits()),  # RaBitQ codes do not fit 1/16
        (3_000, 64, DEFAULT_MAX_INDEX_MEMORY, ChoiceLimits(exact_max_elements=1_000 * 64, graph=False)),
    ],
)
def test_pq_codes_behind_a_pca_where_rabitq_does_not_fit_or_the_dimension_is_low(
    n: int, dim: int, budget: int, limits: ChoiceLimits
) -> None:
    choice = choose_index(n, dim, budget, limits)
    assert choice.kind == "compressed" and choice.factory.endswith("x4fs")
    assert 16 * 39 <= choice.train_size  # the 4-bit codebooks' centroids get enough points too
    assert choice.memory_bytes <= budget
    faiss_ops.build(choice.factory, dim)  # a factory FAISS accepts
    if dim >= ChoiceLimits().rabitq_min_dim:
        assert rabitq_memory(n, dim, nlist=choice.nlist) > budget


def test_rabitq_codes_from_the_configured_dimension() -> None:
    limits = ChoiceLimits(exact_max_elements=1_000 * 64, graph=False, rabitq_min_dim=64)
    choice = choose_index(3_000, 64, limits=limits)
    assert choice.factory == f"IVF{choice.nlist}_HNSW32,RaBitQ" and choice.code_bytes == 64 // 8 + 8
    index = faiss_ops.build(choice.factory, 64)
    assert index.code_size == choice.code_bytes  # the estimate's code size is FAISS's


def test_a_small_budget_shrinks_the_codes() -> None:
    roomy = choose_index(1_000_000, 4096, 4 << 30)
    tight = choose_index(1_000_000, 4096, 40 << 20)
    assert tight.code_bytes < roomy.code_bytes
    assert tight.memory_bytes <= 40 << 20


def test_vectors_over_the_budget_are_compressed_even_when_few() -> None:
    assert choose_index(10_000, 4096, 1 << 20).kind == "compressed"


def test_tiny_thresholds_make_a_few_thousand_vectors_large() -> None:
    limits = ChoiceLimits(exact_max_elements=1_000 * 64, graph=False)
    assert choose_index(1_000, 64, limits=limits).kind == "exact"
    choice = choose_index(3_000, 64, limits=limits)
    assert choice.kind == "compressed"
    assert choice.nlist * 39 <= 3_000
    assert choice.factory.endswith("x4fs") and 16 * 39 <= choice.train_size  # PQ centroids: enough points
    faiss_ops.build(choice.factory, 64)  # a factory FAISS accepts


@pytest.mark.parametrize(
    ("text", "expected"),
    [("512M", 512 << 20), ("4G", 4 << 30), ("1.5GiB", 3 << 29), ("1000", 1000), ("64kb", 64 << 10), (7, 7)],
)
def test_parse_size(text: str | int, expected: int) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["4X", "", "-1G", "G", "0", "four gigs"])
def test_parse_size_refuses_non_sizes(text: str) -> None:
    with pytest.raises(ValueError, match="size"):
        parse_size(text)


@pytest.mark.parametrize(
    ("n", "dim"), [(1_000_000, 4096), (3_200_000, 4096), (50_000_000, 4096), (10_000_000, 256)]
)
def test_the_training_sample_gives_every_list_enough_points(n: int, dim: int) -> None:
    choice = choose_index(n, dim, max_index_memory=1 << 40, limits=ChoiceLimits(graph=False))
    assert choice.kind == "compressed"
    assert choice.nlist * 39 <= choice.train_size <= n
    assert choice.train_size * dim * 4 <= max(ChoiceLimits().train_max_bytes, 65_536 * dim * 4)
