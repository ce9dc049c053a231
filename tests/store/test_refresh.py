"""Refresh that costs what changed: a new snapshot opened with the previous one reads only the files the
new generation adds; shards, codes and tables it still names are taken from the previous snapshot."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from vela_search.store import AudioIndex, faiss_ops, manifest
from vela_search.store import index as index_module
from vela_search.store import shards as shards_module
from vela_search.store.writer import IndexWriter

from . import compressed_helpers as ch
from .helpers import DIM, FP, rows_for, unit


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The relative paths of every index file read, mapped or checksummed from now on."""
    seen: list[str] = []

    def counting(module: object, name: str, at: int) -> None:
        real = getattr(module, name)

        def wrapper(*args: object, **kwargs: object) -> object:
            seen.append(str(args[at]))
            return real(*args, **kwargs)

        monkeypatch.setattr(module, name, wrapper)

    counting(shards_module, "read_verified", 1)
    counting(shards_module, "verify_file", 1)
    counting(index_module, "read_verified", 1)
    counting(faiss_ops, "read_mapped", 1)
    return seen


def _commit(root: Path, vectors: np.ndarray, **options: object) -> None:
    with IndexWriter(root, fingerprint=options.pop("fp", FP), **options) as w:  # type: ignore[arg-type]
        start = w.manifest["next_id"]
        w.add(vectors, rows_for(start, len(vectors)))
        w.put_files([{"path": f"/audio/new-{start}.wav", "status": "indexed"}])
        w.commit()


def test_a_one_vector_commit_reads_only_the_new_files(tmp_path: Path, reads: list[str]) -> None:
    root = tmp_path / "idx"
    AudioIndex.create(root, fingerprint=FP, dim=DIM).close()
    for seed in range(3):
        _commit(root, unit(200, seed=seed), max_shard_size=200)
    old = AudioIndex.open(root)
    assert old.refreshed() is old  # nothing newer
    _commit(root, unit(1, seed=9))
    reads.clear()
    new = old.refreshed()
    assert new.generation == old.generation + 1
    added = manifest.references(new.manifest) - manifest.references(old.manifest)
    assert reads and set(reads) <= added
    assert not any(r.startswith("shards/00000") and r in manifest.references(old.manifest) for r in reads)
    # Both snapshots answer, before and after the other is closed; the new one as a fresh open does.
    q = unit(4, seed=5)
    with AudioIndex.open(root) as fresh:
        expected = [[h.id for h in row] for row in fresh.search(q, 10)]
    old_answer = [[h.id for h in row] for row in old.search(q, 10)]
    old.close()
    assert [[h.id for h in row] for row in new.search(q, 10)] == expected
    assert new.files().num_rows == 4 and old_answer
    new.close()


def test_a_compressed_snapshot_keeps_its_codes_across_a_small_commit(
    tmp_path: Path, reads: list[str], kind: str
) -> None:
    root = tmp_path / "idx"
    limits = ch.KIND_LIMITS[kind]
    ch.build_compressed(root, limits=limits)
    old = AudioIndex.open(root)
    assert old.index_info()["choice"] == ch.CHOICE[kind]
    with IndexWriter(root, fingerprint=ch.FP, choice_limits=limits, max_shard_size=700) as w:
        w.add(ch.clustered(1, seed=77), ch.rows(w.manifest["next_id"], 1, "late"))
        w.commit()
    reads.clear()
    new = old.refreshed()
    if ch.CHOICE[kind] == "compressed":
        # The old codes, copied, with the new 1-row shard's codes encoded in memory (no codes file for
        # it): nothing else is re-read but the trained template that encodes it.
        assert new._codes is not old._codes and new._uncoded == []
        assert new._codes.index.ntotal == old._codes.index.ntotal + 1
    else:
        # The same graph (the 1-row shard is scanned exactly): nothing re-read.
        assert new._graph.graphs[0] is old._graph.graphs[0] and len(new._uncoded) == 1
    added = manifest.references(new.manifest) - manifest.references(old.manifest)
    assert set(reads) <= added | {new.manifest["codes"]["trained"]}
    q = ch.clustered(3, seed=78)
    with AudioIndex.open(root) as fresh:
        assert [[h.id for h in r] for r in new.search(q, 10)] == [
            [h.id for h in r] for r in fresh.search(q, 10)
        ]
    old.close()
    new.close()
