"""Shard readers of a snapshot: hits' rows from tables decoded in memory at open (no file read per query),
kept by old snapshots after commits delete their files, shared by refreshed ones; small shards searched
through codes encoded at open, never by an exact scan."""

from __future__ import annotations

import builtins
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from vela_search.search.searcher import Searcher
from vela_search.store import AudioIndex
from vela_search.store.shards import ShardReader
from vela_search.store.tiers import TierPolicy
from vela_search.store.writer import IndexWriter

from . import compressed_helpers as ch


@pytest.fixture
def compressed_with_tail(tmp_path: Path) -> Path:
    """A compressed index (coded shards of up to 700 rows) plus a 40-row shard too small for codes."""
    root = tmp_path / "idx"
    ch.build_compressed(root)
    ch.add_commit(root, ch.clustered(40, seed=50), folder="tail")
    return root


@pytest.fixture
def file_reads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every Parquet read and every file opened from Python from now on."""
    seen: list[str] = []

    def counting(owner: object, name: str) -> None:
        real = getattr(owner, name)

        def wrapper(*args: object, **kwargs: object) -> object:
            seen.append(f"{name}{args[:1]!r}")
            return real(*args, **kwargs)

        monkeypatch.setattr(owner, name, wrapper)

    for name in ("read", "read_row_group", "read_row_groups", "iter_batches", "__init__"):
        counting(pq.ParquetFile, name)
    counting(pq, "read_table")
    counting(builtins, "open")
    counting(Path, "read_bytes")
    return seen


def test_searches_read_no_file_once_the_snapshot_is_open(compressed_with_tail, file_reads):
    with AudioIndex.open(compressed_with_tail) as index:
        searcher = Searcher(index, None)
        assert index._codes is not None and not any(r.entry.get("codes") for r in index.shard_readers()[-1:])
        queries = ch.clustered(4, seed=60)
        file_reads.clear()
        found = index.search(queries, 10)
        index.search(queries, 10, exact=True)
        index.search(queries, 10, ranges={"duration_s": (2.0, 5.0)}, path_glob="*/f1/*")
        index.segment_rows([0, 5, 2_999])
        grouped = searcher.search_vectors(queries, k=5)
        segments = searcher.search_vectors(queries, k=5, group=False)
        assert file_reads == []
    assert all(len(row) == 10 and row[0].row["path"].startswith("/audio/") for row in found)
    assert all(len(hits) == 5 for hits in grouped + segments)
    assert {h.path for hits in grouped for h in hits} <= {
        f"/audio/{f}/{i}.wav" for f in ("f0", "f1", "f2", "tail") for i in range(11)
    }


def test_an_old_snapshot_keeps_its_rows_after_commits_merge_and_delete_its_files(tmp_path: Path):
    root = tmp_path / "idx"
    ch.build_compressed(root)
    for c in range(4):
        ch.add_commit(root, ch.clustered(30, seed=70 + c), folder=f"late{c}")
    old = AudioIndex.open(root)
    queries = ch.clustered(3, seed=71)
    before = [[(h.id, h.row) for h in row] for row in old.search(queries, 10)]
    with IndexWriter(root, fingerprint=ch.FP, choice_limits=ch.LIMITS) as w:
        w.delete([h_id for h_id, _ in before[0][:3]])
        w.compact(target_shard_size=5_000)  # every shard rewritten into one
    ch.add_commit(root, ch.clustered(5, seed=75), folder="later")  # collects the files `old` named
    old_files = {e["meta"] for e in old.manifest["shards"]}
    assert not any((root / name).exists() for name in old_files)
    assert [[(h.id, h.row) for h in row] for row in old.search(queries, 10)] == before
    assert old.segment_rows([before[1][0][0]])[0] == before[1][0][1]
    with AudioIndex.open(root) as new:
        assert new.num_shards == 2
        assert not {h.id for h in new.search(queries, 10)[0]} & {h_id for h_id, _ in before[0][:3]}
    old.close()


def test_a_refreshed_snapshot_shares_the_decoded_tables_and_keeps_them_after_the_old_one_closes(
    compressed_with_tail,
):
    old = AudioIndex.open(compressed_with_tail)
    ch.add_commit(compressed_with_tail, ch.clustered(20, seed=80), folder="new")
    new = old.refreshed()
    shared = [r for r in new.shard_readers() if any(r is o for o in old.shard_readers())]
    assert len(shared) == old.num_shards  # only the new shard was read
    tables = [r.metadata_table() for r in shared]
    old.close()
    assert [r.metadata_table() for r in shared] == tables and all(
        a is b for a, b in zip((r.metadata_table() for r in shared), tables, strict=True)
    )
    with AudioIndex.open(compressed_with_tail) as fresh:
        q = ch.clustered(3, seed=81)
        expected = [[(h.id, h.row) for h in row] for row in fresh.search(q, 10)]
    assert [[(h.id, h.row) for h in row] for row in new.search(q, 10)] == expected
    new.close()


def test_a_default_search_scans_no_shard_exactly_and_still_finds_small_shards_rows(
    compressed_with_tail, monkeypatch
):
    scans: list[int] = []
    real = ShardReader.search

    def counting(self: ShardReader, queries: object, k: int, allowed: object) -> object:
        if allowed is None:  # a scan of the whole shard (re-ranks and filters use `search_rows`)
            scans.append(self.count)
        return real(self, queries, k, allowed)

    monkeypatch.setattr(ShardReader, "search", counting)
    with AudioIndex.open(compressed_with_tail) as index:
        tail = index.shard_readers()[-1]
        assert tail.count == 40 and not tail.entry.get("codes")
        mine = index.vectors(tail.ids[[3, 17]])
        found = index.search(mine, 5)
        assert [row[0].id for row in found] == tail.ids[[3, 17]].tolist()
        filtered = index.search(mine, 5, path_glob="*/tail/*")
        assert all(h.row["path"].startswith("/audio/tail/") for row in filtered for h in row)
        assert scans == []  # the bound: no exact scan on the default path, whatever the tail's size
        index.search(mine, 5, exact=True)
        assert sorted(scans) == sorted(r.count for r in index.shard_readers())


def test_codes_of_small_shards_that_a_tier_merge_replaces_are_removed_from_the_refreshed_codes(tmp_path):
    root = tmp_path / "idx"
    ch.build_compressed(root)
    policy = TierPolicy(fanout=2, min_items=0)
    ch.add_commit(root, ch.clustered(20, seed=90), folder="a", merge_policy=policy)
    first = AudioIndex.open(root)
    ch.add_commit(root, ch.clustered(20, seed=91), folder="b", merge_policy=policy)  # merges the two
    second = first.refreshed()
    gone = {r.entry["meta"] for r in first.shard_readers()} - {
        r.entry["meta"] for r in second.shard_readers()
    }
    assert gone  # the merge removed shards whose codes the first snapshot held
    assert second._codes is not None and second._codes.index.ntotal == sum(
        r.count for r in second.shard_readers()
    )
    q = ch.clustered(5, seed=92)
    with AudioIndex.open(root) as fresh:
        assert sorted(fresh._codes.names) == sorted(second._codes.names)
        expected = [[h.id for h in row] for row in fresh.search(q, 10)]
    assert [[h.id for h in row] for row in second.search(q, 10)] == expected
    first.close()
    second.close()
