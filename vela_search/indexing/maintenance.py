"""Index upkeep beside the pipeline: merging small shards and describing an index."""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from vela_search.indexing.plan import recorded_roots
from vela_search.indexing.spec import recorded_room, recorded_spec

DEFAULT_TARGET_SHARD_SIZE = 100_000


@dataclass
class CompactReport:
    """Shards and generation before and after :func:`compact_index`."""

    index_dir: str
    shards_before: int
    shards_after: int
    deleted_before: int
    deleted_after: int
    generation: int
    changed: bool

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def compact_index(
    index_dir: str | os.PathLike[str], *, target_shard_size: int = DEFAULT_TARGET_SHARD_SIZE
) -> CompactReport:
    """Merge runs of small shards of the index (dropping tombstoned rows); search results do not change.

    Raises:
        IndexNotFoundError: no index there.
        IndexLockedError: another process is writing it.
    """
    from vela_search.store import AudioIndex, IndexWriter

    index_dir = Path(index_dir)
    with AudioIndex.open(index_dir, shards=False) as current:
        fingerprint = dict(current.fingerprint)
    with IndexWriter(index_dir, fingerprint=fingerprint) as writer:
        before = writer.manifest
        shards_before, deleted_before = len(before["shards"]), int(before.get("num_deleted", 0))
        generation = writer.compact(target_shard_size=target_shard_size)
        after = writer.manifest
        return CompactReport(
            index_dir=str(index_dir),
            shards_before=shards_before,
            shards_after=len(after["shards"]),
            deleted_before=deleted_before,
            deleted_after=int(after.get("num_deleted", 0)),
            generation=generation,
            changed=generation != int(before["generation"]),
        )


def index_info(index_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """A JSON-able description of the index: manifest facts, shards, files by status, the embedder.

    Raises:
        IndexNotFoundError: no index there.
    """
    from vela_search.store import AudioIndex
    from vela_search.store.codes import describe as describe_search
    from vela_search.store.gpu import faiss_build, gpu_count

    index_dir = Path(index_dir)
    # The manifest and the files table only: describing an index reads no shard.
    with AudioIndex.open(index_dir, shards=False) as index:
        data = index.manifest
        files = index.files()
        statuses = Counter(files["status"].to_pylist()) if files.num_rows else Counter()
        spec = recorded_spec(index_dir, data["fingerprint"])
        room = recorded_room(index_dir, data["fingerprint"])
        staging = index.staging
        info: dict[str, Any] = {
            "index_dir": str(index_dir),
            "format_version": data["format_version"],
            "generation": data["generation"],
            "committed_at": data.get("committed_at"),
            "fingerprint": data["fingerprint"],
            "dim": data["dim"],
            "metric": data["metric"],
            "factory": data["factory"],
            "search": describe_search(data),
            "vectors": data["num_vectors"],
            "deleted": data.get("num_deleted", 0),
            "shards": [{"number": s["number"], "vectors": s["count"]} for s in data["shards"]],
            "files": {
                "total": files.num_rows,
                **{k: statuses.get(k, 0) for k in ("indexed", "duplicate", "failed")},
            },
            "segments_in_files": int(sum(v or 0 for v in files["segments"].to_pylist()))
            if files.num_rows
            else 0,
            # The manifest's record survives a repair that empties the files table.
            "roots": sorted(set(recorded_roots(files)) | set(data.get("roots") or [])),
            "segmentation": data.get("segmentation"),
            "embedder": spec.to_dict() if spec is not None else None,
            "query_room": (
                {
                    "tokens": room.tokens,
                    "prefix_tokens": room.prefix_tokens,
                    "max_positions": room.max_positions,
                }
                if room is not None
                else None
            ),
            "staged_rebuild": None,
            # The FAISS that searches run on here (not a property of the index): build and GPUs.
            "faiss_build": faiss_build(),
            "gpus": gpu_count(),
        }
        if staging is not None:
            info["staged_rebuild"] = {
                "generation": staging["generation"],
                "fingerprint": staging["fingerprint"],
                "vectors": staging["num_vectors"],
                "shards": len(staging["shards"]),
                "embedder": (
                    s.to_dict() if (s := recorded_spec(index_dir, staging["fingerprint"])) else None
                ),
            }
        return info
