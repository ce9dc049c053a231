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

from . import faiss_ops, fsio, graph, graph_build, layout, manifest, tuning
from .index_choice import DEFAULT_MAX_INDEX_MEMORY, ChoiceLimits, IndexChoice, choose_index
from .integrity import read_verified
from .rerank import merge_codes, rerank, search_candidates, shard_scorer
from .shards import ShardReader

AUTO = "auto"
EXACT_FACTORY = "SQfp16"
_ENCODE_CHUNK = 8192  # rows decoded from a shard at a time while encoding (bounds memory)
_RECALL_K = tuning.RECALL_K
# Re-tune the probes and re-rank depth (without re-training) once the live count grew by half since the
# last measurement: recall at fixed settings falls as lists fill up.
_RETUNE_GROWTH = 1.5


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
        is_graph = codes.get("kind") == graph.KIND
        # The settings each kind tunes, then what both record of their measured recall.
        tuned = ("ef_search",) if is_graph else ("trained_on", "nprobe", "rerank")
        shared = ("memory_bytes", "design_size", *tuned, "recall_at_10", "recall_queries")
        out.update(choice="graph" if is_graph else "compressed", factory=codes["factory"])
        out.update({key: codes.get(key) for key in shared})
        out.update(
            measured_size=codes.get("measured_size", codes.get("design_size")),
            measured_at=codes.get("measured_at"),
        )
    elif data["factory"] == EXACT_FACTORY:
        out.update(choice="exact", factory=EXACT_FACTORY, memory_bytes=live * int(data["dim"]) * 2)
    else:
        out.update(choice="fixed", factory=data["factory"])
    return out


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
        # Set at the end of a run (`IndexWriter.finish_maintenance`): the next commit folds a graph's new
        # rows into the main graph at the lower `graph.SETTLE_FRACTION` (see `settle_due`).
        self.settle_graph = False

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
            Checksums of the written file by path (empty for a graph: its publishing commit gives the
            shard's rows a graph of their own, or folds them in).
        """
        if graph.is_graph(new):
            return {}
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
        if not new.get("codes") or graph.is_graph(new) or len(ids) < self.limits.min_coded_rows:
            return {}  # a graph's new rows are added (or get graphs of their own) in `refresh`
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
        if choice.kind == "exact" or (choice.kind == "graph") != graph.is_graph(new):
            if codes:  # exact again, or another kind: nothing of the old one is kept
                new["codes"] = codes = None
                for entry in new["shards"]:
                    entry.pop("codes", None)
                    entry.pop("codes_rows", None)
        if choice.kind == "exact":
            return {}
        if choice.kind == "graph":
            force, self.force_retrain = self.force_retrain, False
            settle, self.settle_graph = self.settle_graph, False
            # Background maintenance builds and folds the graph later; a commit adds shard graphs only
            # (the end of a run, which waits for its maintenance anyway, folds now).
            defer = self.defer_training and not force and not settle
            return self._refresh_graph(
                new, generation, deleted, choice, force=force, defer=defer, settle=settle
            )
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
        if live > _RETUNE_GROWTH * int(codes.get("measured_size") or codes["design_size"]):
            self._retune(new, generation, deleted)
        return written

    def _retune(self, new: dict, generation: int, deleted: np.ndarray) -> None:
        """Measure recall again at the current size and re-pick the probes and re-rank depth."""
        readers = [self._open(e) for e in new["shards"]]
        masks = tuning.live_masks(readers, deleted)
        encoded = [r.codes_index() for r in readers if r.entry.get("codes")]
        new["codes"].update(self._tune(encoded, readers, masks, generation))
        for reader in readers:
            reader.close()

    def _refresh_graph(
        self,
        new: dict,
        generation: int,
        deleted: np.ndarray,
        choice: IndexChoice,
        *,
        force: bool,
        defer: bool,
        settle: bool = False,
    ) -> dict[str, str]:
        return graph_build.refresh_graph(
            self.root,
            self.dim,
            self._open,
            self.limits,
            new,
            generation,
            deleted,
            choice,
            force=force,
            defer=defer,
            settle=settle,
        )

    def settle_due(self, data: dict) -> bool:
        """Whether the committed manifest `data` is a graph whose rows committed since its main graph are
        worth folding at the end of a run (see `graph_build.graph_due` with ``settle``)."""
        if not is_auto(data) or not graph.is_graph(data):
            return False
        live = sum(int(s["count"]) for s in data["shards"]) - int(data.get("num_deleted") or 0)
        return graph_build.graph_due(data["codes"], live, settle_rows=graph_build.min_graph_rows(self.limits))

    def training_wanted(self, data: dict, deleted: int) -> bool:
        """Whether the committed manifest `data` (with `deleted` tombstones) is due a (re-)training:
        its collection outgrew exact search or its codes' design size, or its budget chooses others;
        for a graph, whether it is due a build or a fold (see `graph_build.refresh_graph`)."""
        if not is_auto(data):
            return False
        live = sum(int(s["count"]) for s in data["shards"]) - int(deleted)
        budget = int(data["policy"].get("max_index_memory") or DEFAULT_MAX_INDEX_MEMORY)
        kind = choose_index(live, self.dim, budget, self.limits).kind
        if kind == "exact":
            return False
        codes = data.get("codes")
        if kind == "graph" or graph.is_graph(data):
            return kind != "graph" or graph_build.graph_due(codes, live)
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
        if choice.kind == "graph":
            if not graph.is_graph(new):  # another kind before: nothing of it is kept
                new["codes"] = None
                for entry in new["shards"]:
                    entry.pop("codes", None)
            return self._refresh_graph(new, generation, deleted, choice, force=False, defer=False)
        return self._train(new, generation, deleted, choice)

    def _train(self, new: dict, generation: int, deleted: np.ndarray, choice: IndexChoice) -> dict[str, str]:
        """Train a template on a uniform sample of all live vectors, rewrite every shard's codes from the
        exact vectors, and tune the probes and re-rank depth from recall@10 on held-out queries."""
        readers = [self._open(e) for e in new["shards"]]
        masks = tuning.live_masks(readers, deleted)
        live = int(sum(int(m.sum()) for m in masks))
        rng = np.random.default_rng(generation)
        # The held-out queries' sources first, then a training sample without them.
        n_queries = min(self.limits.measure_queries, max(live // 10, 1))
        picks = rng.choice(live, size=min(live, choice.train_size + n_queries), replace=False)
        _, sample = tuning.gather(readers, masks, np.sort(picks[n_queries:]))
        template = faiss_ops.build(choice.factory, self.dim)
        faiss_ops.train(template, sample, choice.factory, cap=len(sample))
        faiss_ops.drop_pca_training_state(template)  # else each codes file carries 64 MB at 4,096 dims
        del sample
        trained = layout.trained_index(generation)
        with fsio.atomic_file(self.root / trained) as f:
            faiss_ops.write(template, f)
        written = {trained: f.checksum}
        self._template = (trained, template)
        # Every large shard encoded from its exact vectors (small ones stay exact: a codes file carries
        # the template's fixed parts).
        encoded = []
        for entry, reader in zip(new["shards"], readers, strict=True):
            entry.pop("codes", None)
            if reader.count >= self.limits.min_coded_rows:
                name, checksum, index = self._encode(
                    template, int(entry["number"]), generation, _rows_of(reader), reader.count
                )
                entry["codes"], written[name] = name, checksum
                encoded.append(index)
            reader.close()
        new["codes"] = {
            "factory": choice.factory,
            "trained": trained,
            "design_size": live,
            "trained_on": int(len(picks) - n_queries),
            "memory_bytes": choice.memory_bytes,
            **self._tune(encoded, readers, masks, generation, picks[:n_queries]),
        }
        return written

    def _tune(
        self,
        encoded: list[Any],
        readers: list[ShardReader],
        masks: list[np.ndarray],
        seed: int,
        picks: np.ndarray | None = None,
    ) -> dict[str, Any]:
        """The cheapest (nprobe, re-rank depth) of `tuning.CODES_LADDER` whose recall@10 on held-out
        perturbed queries reaches the target, searching as queries do: candidates from the merged codes
        re-ranked exactly, beside an exact search of the shards without codes."""
        own, queries = tuning.held_out_queries(readers, masks, seed, self.limits.measure_queries, picks)
        live = int(sum(int(m.sum()) for m in masks))
        done = {"measured_size": live, "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        if not encoded or len(queries) == 0:  # every shard is small: searched exactly
            first = tuning.CODES_LADDER[0]
            return {"nprobe": first[0], "rerank": first[1], "recall_at_10": 1.0, "recall_queries": 0, **done}
        truth = tuning.exact_truth(readers, masks, queries)
        uncoded = tuning.RunningTopK(queries, _RECALL_K + 1)  # what searches find exactly in small shards
        for reader, mask in zip(readers, masks, strict=True):
            if not reader.entry.get("codes"):
                for vectors, ids in graph_build.live_rows(reader, mask):
                    uncoded.add(vectors, ids)
        merged = merge_codes(encoded)
        live_ids = np.concatenate([r.ids[m] for r, m in zip(readers, masks, strict=True)])
        allowed = np.zeros(int(live_ids.max()) + 1, dtype=bool)
        allowed[live_ids] = True
        deepest = max(r for _, r in tuning.CODES_LADDER)
        candidates: dict[int, np.ndarray] = {}
        score_among = shard_scorer(readers)

        def measure(setting: tuple[int, int]) -> float:
            nprobe, depth = setting
            if nprobe not in candidates:
                candidates[nprobe] = search_candidates(
                    merged, queries, deepest, nprobe=nprobe, allowed=allowed
                )
            cands = candidates[nprobe][:, : max(depth, 10 * _RECALL_K)]
            exact_scores, exact_ids = uncoded.result()
            found = []
            for start in range(0, len(queries), 16):  # bounds the re-ranked vectors held at once
                part = slice(start, start + 16)
                scores, ids = rerank(queries[part], cands[part], score_among, _RECALL_K + 1)
                both = tuning.RunningTopK(queries[part], _RECALL_K + 1)
                both.add_results(exact_scores[part], exact_ids[part])
                both.add_results(scores, ids)
                found.append(both.result()[1])
            return tuning.recall_at_k(np.vstack(found), truth, own)

        (nprobe, depth), recall = tuning.pick_setting(tuning.CODES_LADDER, measure)
        tuned = {"nprobe": nprobe, "rerank": depth, "recall_at_10": recall, "recall_queries": len(queries)}
        return {**tuned, **done}


def _rows_of(reader: ShardReader) -> Callable[[int, int], tuple[np.ndarray, np.ndarray]]:
    """Rows a..b of a shard: its exact vectors and global ids."""
    return lambda a, b: (faiss_ops.reconstruct_rows(reader.index(), np.arange(a, b)), reader.ids[a:b])
