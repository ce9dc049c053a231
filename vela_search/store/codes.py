"""Compressed candidate codes beside the exact shards: training, encoding, re-training, measuring.

In automatic mode (manifest ``policy.mode == "auto"``) every shard keeps its exact fp16 vectors, and
once `index_choice.choose_index` says the collection outgrew exact search each shard (of at least
`min_coded_rows` rows; smaller ones are searched exactly) also gets ``shards/<n>.codes-<gen>.faiss``:
a clone of one trained template (``trained-<gen>.faiss``) holding the shard's vectors under their
global ids. The template is trained on a uniform random sample of every
live vector of the collection (all shards), and re-trained, with every codes file rewritten from the
exact vectors in the same commit, when the live count passes `growth_factor` x its design size. At
training time the expected recall@10 is measured and recorded in the manifest's ``codes`` entry.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np

from . import faiss_ops, fsio, layout, manifest
from .index_choice import DEFAULT_MAX_INDEX_MEMORY, ChoiceLimits, IndexChoice, choose_index
from .integrity import read_verified
from .rerank import merge_codes, rerank, search_candidates
from .shards import ShardReader

AUTO = "auto"
EXACT_FACTORY = "SQfp16"
_ENCODE_CHUNK = 8192  # rows decoded from a shard at a time while encoding (bounds memory)
_RECALL_K = 10


def auto_policy(max_index_memory: int | None) -> dict:
    """The manifest's ``policy`` entry of an automatically chosen index."""
    return {"mode": AUTO, "max_index_memory": int(max_index_memory or DEFAULT_MAX_INDEX_MEMORY)}


def is_auto(data: dict) -> bool:
    """Whether a manifest chooses its index automatically (no ``policy`` means a fixed factory)."""
    return (data.get("policy") or {}).get("mode") == AUTO


def resolve_policy(
    root: Any, factory: str | None, main: dict, max_index_memory: int | None, *, staged: bool
) -> tuple[str | None, dict | None]:
    """The concrete FAISS factory a writer passes on, and the policy its next commit records (None: as is).

    ``"auto"`` stores exact ``SQfp16`` shards and records an automatic policy: for a new staged
    generation, or for an existing exact ``SQfp16`` index, which becomes automatic at its next commit.
    `max_index_memory` alone updates an automatic index's budget.

    Raises:
        StoreError: "auto" asked of an index with another fixed factory (that needs a rebuild), or a
            memory budget given to a fixed-factory index.
    """
    from ..errors import StoreError

    if factory == AUTO:
        if staged:
            return EXACT_FACTORY, auto_policy(max_index_memory)
        if main and not is_auto(main) and main.get("factory") != EXACT_FACTORY:
            raise StoreError(
                f"index {root} has the fixed FAISS factory {main['factory']!r}; switching it to the "
                "automatic choice re-encodes every vector: "
                "`vela-search index PATH --rebuild --faiss-factory auto`"
            )
        current = (main.get("policy") or {}).get("max_index_memory") if is_auto(main) else None
        wanted = int(max_index_memory or current or DEFAULT_MAX_INDEX_MEMORY)
        return None, (None if is_auto(main) and wanted == current else auto_policy(wanted))
    if max_index_memory is not None:
        auto = is_auto(main) if not staged or factory is None else False
        if not auto:
            raise StoreError(
                "--max-index-memory sizes the automatic index choice: use it with --faiss-factory auto"
            )
        current = (main.get("policy") or {}).get("max_index_memory")
        return factory, (None if current == int(max_index_memory) else auto_policy(max_index_memory))
    if staged and factory is None and is_auto(main):
        return EXACT_FACTORY, dict(main["policy"])
    return factory, None


def describe(data: dict) -> dict[str, Any]:
    """The search choice a manifest records, for `info`: exact, compressed (with its factory) or fixed."""
    policy = data.get("policy") or {"mode": "fixed"}
    codes = data.get("codes")
    live = int(data.get("num_vectors") or 0)
    out: dict[str, Any] = {
        "mode": policy.get("mode", "fixed"),
        "max_index_memory": policy.get("max_index_memory"),
    }
    if codes:
        out.update(
            choice="compressed",
            factory=codes["factory"],
            memory_bytes=codes.get("memory_bytes"),
            design_size=codes.get("design_size"),
            trained_on=codes.get("trained_on"),
            nprobe=codes.get("nprobe"),
            rerank=codes.get("rerank"),
            recall_at_10=codes.get("recall_at_10"),
            measured_at=codes.get("measured_at"),
        )
    elif data["factory"] == EXACT_FACTORY:
        out.update(choice="exact", factory=EXACT_FACTORY, memory_bytes=live * int(data["dim"]) * 2)
    else:
        out.update(choice="fixed", factory=data["factory"])
    return out


def _live_masks(readers: list[ShardReader], deleted: np.ndarray) -> list[np.ndarray]:
    return [~np.isin(r.ids, deleted) for r in readers]


def _gather(
    readers: list[ShardReader], masks: list[np.ndarray], picks: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Ids and exact vectors of the live vectors with the given ranks (0..live-1, in shard order)."""
    live_counts = np.array([int(m.sum()) for m in masks])
    starts = np.concatenate([[0], np.cumsum(live_counts)])
    shard_of = np.searchsorted(starts, picks, side="right") - 1
    ids = np.empty(len(picks), np.int64)
    vectors = np.empty((len(picks), 0), np.float32)
    for s in np.unique(shard_of).tolist():
        which = np.flatnonzero(shard_of == s)
        rows = np.flatnonzero(masks[s])[picks[which] - starts[s]]
        got = faiss_ops.reconstruct_rows(readers[s].index(), rows)
        if vectors.shape[1] == 0:
            vectors = np.empty((len(picks), got.shape[1]), np.float32)
        vectors[which] = got
        ids[which] = readers[s].ids[rows]
        readers[s].close()  # one shard's exact vectors in memory at a time
    return ids, vectors


class CodesKeeper:
    """The writer's side of the codes: encodes new shards and decides, at each commit, whether to train.

    Args:
        root: index directory.
        dim: vector dimension.
        open_reader: opens a shard entry of the generation being written.
        limits: the policy's thresholds (tests shrink them).
    """

    def __init__(
        self,
        root: Any,
        dim: int,
        open_reader: Callable[[dict], ShardReader],
        limits: ChoiceLimits | None,
        *,
        policy: dict | None = None,
    ) -> None:
        self.root = root
        self.dim = int(dim)
        self.limits = limits or ChoiceLimits()
        self._open = open_reader
        self._template: tuple[str, Any] | None = None
        self.force_retrain = False  # set by repair: rewrite every codes file at the next commit
        self.pending_policy = policy  # recorded by the next commit (None: keep the manifest's)
        # Background maintenance: refresh never trains (`training_wanted` says when it is due, and
        # `train` runs it later, off the commit path; see `vela_search.store.background`).
        self.defer_training = False

    def template(self, new: dict) -> Any:
        """The trained, empty template named by `new["codes"]` (read once)."""
        name = new["codes"]["trained"]
        if self._template is None or self._template[0] != name:
            data = read_verified(self.root, name, manifest.checksum(new, name))
            self._template = (name, faiss_ops.read_bytes(self.root, name, data))
        return self._template[1]

    def _encode(
        self, template: Any, number: int, generation: int, reader: Any, rows: int
    ) -> tuple[str, str, Any]:
        """Write the codes of one shard's `rows` vectors, read in chunks from `reader`.

        Returns:
            (path, checksum, the encoded index).
        """
        index = faiss_ops.clone(template)
        for start in range(0, rows, _ENCODE_CHUNK):
            vectors, ids = reader(start, min(start + _ENCODE_CHUNK, rows))
            index.add_with_ids(np.ascontiguousarray(vectors, dtype=np.float32), ids)
        name = layout.codes_file(number, generation)
        with fsio.atomic_file(self.root / name) as f:
            faiss_ops.write(index, f)
        return name, f.checksum, index

    def encode_shard(self, new: dict, entry: dict, reader: ShardReader, generation: int) -> dict[str, str]:
        """Give a stored shard codes from `new`'s template, reading its vectors in chunks (background work).

        Returns:
            Checksums of the written file by path.
        """
        name, checksum, _ = self._encode(
            self.template(new), int(entry["number"]), generation, _rows_of(reader), int(entry["count"])
        )
        entry["codes"] = name
        return {name: checksum}

    def encode_new_shard(
        self, new: dict, entry: dict, vectors: np.ndarray, ids: np.ndarray, generation: int
    ) -> dict[str, str]:
        """Give a shard just written by this generation its codes, when the index has codes.

        Returns:
            Checksums of the written file by path (empty when the index has no codes).
        """
        if not new.get("codes") or len(ids) < self.limits.min_coded_rows:
            return {}
        name, checksum, _ = self._encode(
            self.template(new),
            int(entry["number"]),
            generation,
            lambda a, b: (vectors[a:b], ids[a:b]),
            len(ids),
        )
        entry["codes"] = name
        return {name: checksum}

    def refresh(self, new: dict, generation: int, deleted: np.ndarray) -> dict[str, str]:
        """Bring `new`'s codes in line with the policy before it is published.

        Drops the codes when exact search suffices again; trains them (all shards, one commit) when
        the collection outgrew exact search or grew past `growth_factor` x the design size, when the
        budget now chooses other codes, or when repair asked; encodes shards that lack codes (e.g.
        written by a path that does not know them).

        Returns:
            Checksums of the files written, by path.
        """
        if self.pending_policy is not None:
            new["policy"], self.pending_policy = self.pending_policy, None
        if not is_auto(new):
            return {}
        new.setdefault("codes", None)
        live = sum(int(s["count"]) for s in new["shards"]) - int(deleted.size)
        budget = int(new["policy"].get("max_index_memory") or DEFAULT_MAX_INDEX_MEMORY)
        choice = choose_index(live, self.dim, budget, self.limits)
        codes = new.get("codes")
        if choice.kind == "exact":
            if codes:
                new["codes"] = None
                for entry in new["shards"]:
                    entry.pop("codes", None)
            return {}
        outgrown = codes is None or live > self.limits.growth_factor * int(codes["design_size"])
        # A new memory budget (or policy) would choose other codes for the same design size.
        changed = codes is not None and (
            choose_index(int(codes["design_size"]), self.dim, budget, self.limits).factory != codes["factory"]
        )
        if (outgrown or changed) and self.defer_training and not self.force_retrain:
            if codes is None:
                return {}  # searched exactly until the background training publishes codes
        elif outgrown or changed or self.force_retrain:
            self.force_retrain = False
            return self._train(new, generation, deleted, choice)
        written = {}
        template = self.template(new)
        for entry in new["shards"]:
            if not entry.get("codes") and int(entry["count"]) >= self.limits.min_coded_rows:
                reader = self._open(entry)
                name, checksum, _ = self._encode(
                    template, int(entry["number"]), generation, _rows_of(reader), int(entry["count"])
                )
                reader.close()
                entry["codes"], written[name] = name, checksum
        return written

    def training_wanted(self, data: dict, deleted: int) -> bool:
        """Whether the committed manifest `data` (with `deleted` tombstones) is due a (re-)training:
        its collection outgrew exact search or its codes' design size, or its budget chooses others."""
        if not is_auto(data):
            return False
        live = sum(int(s["count"]) for s in data["shards"]) - int(deleted)
        budget = int(data["policy"].get("max_index_memory") or DEFAULT_MAX_INDEX_MEMORY)
        if choose_index(live, self.dim, budget, self.limits).kind == "exact":
            return False
        codes = data.get("codes")
        if codes is None or live > self.limits.growth_factor * int(codes["design_size"]):
            return True
        return (
            choose_index(int(codes["design_size"]), self.dim, budget, self.limits).factory != codes["factory"]
        )

    def train(self, new: dict, generation: int, deleted: np.ndarray) -> dict[str, str]:
        """Train the codes of `new` now, as `refresh` does when a training is due (for background work).

        Args:
            new: the manifest to train for (its shards' and its ``codes`` entries are set here).
            generation: names the files written.
            deleted: sorted tombstoned ids of `new`.

        Returns:
            Checksums of the files written, by path (empty when exact search suffices).
        """
        live = sum(int(s["count"]) for s in new["shards"]) - int(deleted.size)
        budget = int((new.get("policy") or {}).get("max_index_memory") or DEFAULT_MAX_INDEX_MEMORY)
        choice = choose_index(live, self.dim, budget, self.limits)
        if not is_auto(new) or choice.kind == "exact":
            return {}
        return self._train(new, generation, deleted, choice)

    def _train(self, new: dict, generation: int, deleted: np.ndarray, choice: IndexChoice) -> dict[str, str]:
        """Train a template on a uniform sample of all live vectors, rewrite every shard's codes from the
        exact vectors, and measure recall@10 against exact search over the whole collection."""
        readers = [self._open(e) for e in new["shards"]]
        masks = _live_masks(readers, deleted)
        live = int(sum(int(m.sum()) for m in masks))
        rng = np.random.default_rng(generation)
        n_queries = min(self.limits.measure_queries, max(live // 10, 1))
        picks = rng.choice(live, size=min(live, choice.train_size + n_queries), replace=False)
        query_ids, queries = _gather(readers, masks, np.sort(picks[:n_queries]))
        _, sample = _gather(readers, masks, np.sort(picks[n_queries:]))
        template = faiss_ops.build(choice.factory, self.dim)
        faiss_ops.train(template, sample, choice.factory, cap=len(sample))
        faiss_ops.drop_pca_training_state(template)  # else each codes file carries 64 MB at 4,096 dims
        del sample
        trained = layout.trained_index(generation)
        with fsio.atomic_file(self.root / trained) as f:
            faiss_ops.write(template, f)
        written = {trained: f.checksum}
        self._template = (trained, template)
        # Encode every large shard from its exact vectors (small ones stay exact: a codes file carries
        # the template's fixed parts); on the way, the exact top-k of the queries.
        truth = _RunningTopK(queries, _RECALL_K + 1)
        uncoded = _RunningTopK(queries, _RECALL_K + 1)  # what searches find exactly in small shards
        encoded = []
        for entry, reader, mask in zip(new["shards"], readers, masks, strict=True):
            rows = _rows_of(reader)
            small = reader.count < self.limits.min_coded_rows

            def exact_rows(
                a: int, b: int, rows: Any = rows, mask: np.ndarray = mask, small: bool = small
            ) -> tuple[np.ndarray, np.ndarray]:
                vectors, ids = rows(a, b)
                truth.add(vectors[mask[a:b]], ids[mask[a:b]])
                if small:
                    uncoded.add(vectors[mask[a:b]], ids[mask[a:b]])
                return vectors, ids

            entry.pop("codes", None)
            if small:
                for start in range(0, reader.count, _ENCODE_CHUNK):
                    exact_rows(start, min(start + _ENCODE_CHUNK, reader.count))
            else:
                name, checksum, index = self._encode(
                    template, int(entry["number"]), generation, exact_rows, reader.count
                )
                entry["codes"], written[name] = name, checksum
                encoded.append(index)
            reader.close()
        recall = self._measure(encoded, readers, masks, queries, query_ids, (truth, uncoded), choice)
        new["codes"] = {
            "factory": choice.factory,
            "trained": trained,
            "design_size": live,
            "trained_on": int(len(picks) - n_queries),
            "memory_bytes": choice.memory_bytes,
            "nprobe": choice.nprobe,
            "rerank": choice.rerank,
            "recall_at_10": recall,
            "recall_queries": int(n_queries),
            "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        return written

    def _measure(
        self,
        encoded: list[Any],
        readers: list[ShardReader],
        masks: list[np.ndarray],
        queries: np.ndarray,
        query_ids: np.ndarray,
        truths: tuple[_RunningTopK, _RunningTopK],
        choice: IndexChoice,
    ) -> float:
        """recall@10 of compressed search with re-ranking (and exact search of the shards without codes)
        vs exact search over everything, the queries' own vectors left out."""
        truth, uncoded = truths
        if not encoded:
            return 1.0  # every shard is small: searched exactly
        merged = merge_codes(encoded)
        live_ids = np.concatenate([r.ids[m] for r, m in zip(readers, masks, strict=True)])
        allowed = np.zeros(int(live_ids.max()) + 1, dtype=bool)
        allowed[live_ids] = True
        depth = max(choice.rerank, 10 * (_RECALL_K + 1))
        candidates = search_candidates(merged, queries, depth, nprobe=choice.nprobe, allowed=allowed)
        shard_ids = [r.ids for r in readers]

        def vectors_of(ids: np.ndarray) -> np.ndarray:
            out = np.empty((len(ids), self.dim), np.float32)
            for reader, own in zip(readers, shard_ids, strict=True):
                inside = np.isin(ids, own)
                if inside.any():
                    out[inside] = faiss_ops.reconstruct_rows(
                        reader.index(), np.searchsorted(own, ids[inside])
                    )
                    reader.close()
            return out

        scores, found = rerank(queries, candidates, vectors_of, _RECALL_K + 1)
        uncoded.add_results(scores, found)
        _, found = uncoded.result()
        _, exact = truth.result()
        hits = 0
        for own, got, want in zip(query_ids.tolist(), found, exact, strict=True):
            got = [i for i in got.tolist() if i != own and i >= 0][:_RECALL_K]
            want = [i for i in want.tolist() if i != own and i >= 0][:_RECALL_K]
            hits += len(set(got) & set(want)) / max(len(want), 1)
        return round(hits / max(len(queries), 1), 4)


def _rows_of(reader: ShardReader) -> Callable[[int, int], tuple[np.ndarray, np.ndarray]]:
    """Rows a..b of a shard: its exact vectors and global ids."""
    return lambda a, b: (faiss_ops.reconstruct_rows(reader.index(), np.arange(a, b)), reader.ids[a:b])


class _RunningTopK:
    """Exact top-k inner products of a few queries, fed the collection chunk by chunk."""

    def __init__(self, queries: np.ndarray, k: int) -> None:
        self.queries = queries
        self.k = k
        self.scores = np.full((len(queries), 0), -np.inf, np.float32)
        self.ids = np.full((len(queries), 0), -1, np.int64)

    def add(self, vectors: np.ndarray, ids: np.ndarray) -> None:
        if len(ids) == 0:
            return
        scores = np.hstack([self.scores, self.queries @ vectors.T])
        all_ids = np.hstack([self.ids, np.broadcast_to(ids, (len(self.queries), len(ids)))])
        order = np.lexsort((all_ids, -scores), axis=-1)[:, : self.k]
        self.scores = np.take_along_axis(scores, order, axis=1)
        self.ids = np.take_along_axis(all_ids, order, axis=1)

    def add_results(self, scores: np.ndarray, ids: np.ndarray) -> None:
        """Merge per-query (scores, ids) lists found elsewhere (-1 ids are ignored)."""
        scores = np.where(ids >= 0, scores, -np.inf).astype(np.float32)
        scores = np.hstack([self.scores, scores])
        all_ids = np.hstack([self.ids, ids])
        order = np.lexsort((all_ids, -scores), axis=-1)[:, : self.k]
        self.scores = np.take_along_axis(scores, order, axis=1)
        self.ids = np.take_along_axis(all_ids, order, axis=1)

    def result(self) -> tuple[np.ndarray, np.ndarray]:
        return self.scores, self.ids
