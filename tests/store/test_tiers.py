"""Tiered merging: the policy on sizes, and commits that merge shards (same results, crashes harmless)."""

from __future__ import annotations

import math
import random
import signal

import numpy as np
import pytest

from vela_search.store import AudioIndex, layout
from vela_search.store import manifest as manifest_module
from vela_search.store.tiers import TierPolicy, merge_start, tier

from .helpers import FP, brute_force, rows_for, run_python, unit


def _land(sizes: list[int], new: int, max_size: int, policy: TierPolicy = TierPolicy()) -> list[int]:
    """The shard sizes after a commit of `new` rows, as the writer makes them (deletions aside)."""
    pieces = [max_size] * (new // max_size) + ([new % max_size] if new % max_size else [])
    sizes = sizes + pieces
    start = merge_start(sizes, max_size=max_size, policy=policy)
    if start is None:
        return sizes
    full, rest = divmod(sum(sizes[start:]), max_size)
    return sizes[:start] + [max_size] * full + ([rest] if rest else [])


def _run(commit_sizes: list[int], max_size: int = 100_000) -> tuple[list[int], int]:
    sizes: list[int] = []
    peak = 0
    for new in commit_sizes:
        sizes = _land(sizes, new, max_size)
        peak = max(peak, len(sizes))
        assert max(sizes) <= max_size
    return sizes, peak


def test_tier_is_the_floor_of_the_log_in_base_fanout():
    assert [tier(n) for n in (0, 1, 3, 4, 15, 16, 255, 256, 1023, 1024)] == [0, 0, 0, 1, 1, 2, 3, 4, 4, 5]
    assert tier(8, fanout=2) == 3


def test_shard_count_grows_like_the_log_of_the_commits():
    # A million files committed 256 at a time: ~3,900 commits without merging would be as many shards.
    sizes, peak = _run([256] * 3907)
    assert sum(sizes) == 256 * 3907
    assert sizes.count(100_000) >= 8 and len(sizes) <= 24 and peak <= 28
    # Ragged commits (a file's segments are never split over two commits) stay bounded too.
    rng = random.Random(1)
    for low, high in ((200, 320), (1, 600)):
        commits = [rng.randint(low, high) for _ in range(4000)]
        sizes, peak = _run(commits)
        non_full = [s for s in sizes if s < 100_000]
        assert len(non_full) <= 3 * 2 * math.ceil(math.log(100_000, 4)), non_full
        assert peak <= len(sizes) + 10
    # Without a size cap, sixteen times the commits add a bounded number of shards (logarithmic growth).
    small, _ = _run([10] * 1000, max_size=10**9)
    large, _ = _run([10] * 16000, max_size=10**9)
    assert len(large) <= len(small) + 2 * 2 * 3


def test_full_shards_stay_put_and_nothing_merges_below_min_items():
    assert merge_start([100] * 12, max_size=100) is None  # all full
    assert merge_start([3] * 8, max_size=100) is None  # at most min_items items: left alone
    assert merge_start([3] * 9, max_size=100) == 0  # the longest tail of one tier merges
    # A full shard ends the mergeable tail: only what came after it merges.
    assert merge_start([5] * 6 + [100] + [5, 5, 5, 5], max_size=100) == 7
    assert merge_start([5] * 6 + [100] + [5, 5, 5], max_size=100) is None
    # A bigger shard behind small ones is not rewritten for them: small ones merge among themselves.
    assert merge_start([60] * 5 + [64, 1, 1, 1], max_size=100) is None
    assert merge_start([60] * 5 + [64, 1, 1, 1, 1], max_size=100) == 6


def test_a_merge_cascades_and_never_exceeds_the_maximum():
    # Three shards of tier 2 wait; four of tier 1 merge into a fourth of tier 2, and the tier merges on.
    start = merge_start([16, 16, 16, 4, 4, 4, 4], max_size=1000, policy=TierPolicy(min_items=0))
    assert start == 0  # 4 x 4 = 16 completes tier 2, so all seven merge
    assert _land([40, 40, 40], 40, max_size=100, policy=TierPolicy(min_items=0)) == [100, 60]


def _hits(index: AudioIndex, queries: np.ndarray, k: int = 15, **kw) -> list[list[tuple[int, float]]]:
    return [[(h.id, round(h.score, 5)) for h in hits] for hits in index.search(queries, k, **kw)]


def _commit_many(root, commits: int, per: int, *, policy, deletes: bool = True) -> None:
    with AudioIndex.open(root).writer(fingerprint=FP, merge_policy=policy) as w:
        for c in range(commits):
            ids = w.add(unit(per, seed=c), rows_for(c * per, per, folder=f"f{c % 3}"))
            w.put_files([{"path": f"/audio/{c}.wav", "status": "indexed", "segments": per}])
            if deletes and c % 3 == 1:
                w.delete(ids[:2].tolist() + [c * per - 1])  # new rows and one of an earlier commit
            w.commit()


def test_commits_merge_shards_and_search_is_unchanged(tmp_path):
    merged, plain = tmp_path / "merged", tmp_path / "plain"
    for root, policy in ((merged, TierPolicy()), (plain, None)):
        AudioIndex.create(root, fingerprint=FP, dim=16)
        _commit_many(root, 30, 5, policy=policy)
    a, b = AudioIndex.open(merged), AudioIndex.open(plain)
    assert b.num_shards == 30 and a.num_shards <= 12
    assert a.num_vectors == b.num_vectors
    # Merged shards dropped their deleted rows and those tombstones.
    assert a.deleted_ids().size < b.deleted_ids().size
    assert sum(s["count"] for s in a.manifest["shards"]) == a.num_vectors + a.deleted_ids().size
    queries = unit(5, seed=99)
    assert _hits(a, queries) == _hits(b, queries)
    assert _hits(a, queries, path_glob="*/f1/*") == _hits(b, queries, path_glob="*/f1/*")
    assert _hits(a, queries, ranges={"start_s": (1, 3)}) == _hits(b, queries, ranges={"start_s": (1, 3)})
    assert a.files().equals(b.files())
    ids_a, vecs_a = a.all_vectors()
    ids_b, vecs_b = b.all_vectors()
    assert sorted(ids_a.tolist()) == sorted(ids_b.tolist())
    # Shards stay in id order, each a contiguous id range.
    shards = a.manifest["shards"]
    assert all(x["max_id"] < y["min_id"] for x, y in zip(shards, shards[1:], strict=False))


def test_full_shards_are_not_rewritten(tmp_path):
    root = tmp_path / "idx"
    AudioIndex.create(root, fingerprint=FP, dim=16)
    with AudioIndex.open(root).writer(fingerprint=FP, max_shard_size=10) as w:
        for c in range(12):
            w.add(unit(10, seed=c), rows_for(0, 10))
            w.commit()
        first = [dict(s) for s in w.manifest["shards"]]
        w.add(unit(3), rows_for(0, 3))
        w.commit()
    assert [s["count"] for s in first] == [10] * 12
    assert AudioIndex.open(root).manifest["shards"][:12] == first


def test_a_merge_is_retained_one_commit_then_collected(tmp_path):
    root = tmp_path / "idx"
    AudioIndex.create(root, fingerprint=FP, dim=16)
    with AudioIndex.open(root).writer(fingerprint=FP) as w:
        for c in range(8):
            w.add(unit(2, seed=c), rows_for(0, 2))
            w.commit()
        before = AudioIndex.open(root)
        old = {s["index"] for s in before.manifest["shards"]}
        w.add(unit(2, seed=8), rows_for(0, 2))
        w.commit()  # the ninth shard of one tier: all nine merge into one
        data = w.manifest
        merged_away = old - {s["index"] for s in data["shards"]}
        assert len(data["shards"]) == 1 and len(merged_away) == 8
        assert merged_away <= set(data["retained"])
        assert all((root / p).exists() for p in merged_away)  # a reader of the previous generation
        assert len(before.search(unit(1), 20)[0]) == 16  # the open snapshot keeps answering
        w.put_files([{"path": "/x.wav", "status": "indexed"}])
        w.commit()
    assert not any((root / p).exists() for p in merged_away)


def test_a_crash_during_a_merging_commit_leaves_the_last_generation(tmp_path, monkeypatch):
    root = tmp_path / "idx"
    AudioIndex.create(root, fingerprint=FP, dim=16)
    with AudioIndex.open(root).writer(fingerprint=FP) as w:
        for c in range(8):
            w.add(unit(3, seed=c), rows_for(c * 3, 3))
            w.delete([c * 3])
            w.commit()
    before = AudioIndex.open(root)
    expected = _hits(before, unit(4, seed=5))

    def killed(path, data):
        raise KeyboardInterrupt("killed before the manifest")

    monkeypatch.setattr(manifest_module, "write", killed)
    with pytest.raises(KeyboardInterrupt), AudioIndex.open(root).writer(fingerprint=FP) as w:
        w.add(unit(3, seed=8), rows_for(24, 3))
        w.commit()
    monkeypatch.undo()
    leftovers = set(layout.owned_files(root)) - manifest_module.references(before.manifest)
    assert leftovers  # the merged shard was written, never committed
    after = AudioIndex.open(root)
    assert after.generation == before.generation and _hits(after, unit(4, seed=5)) == expected
    with AudioIndex.open(root).writer(fingerprint=FP) as w:
        w.add(unit(3, seed=8), rows_for(24, 3))
        w.commit()
        data = w.manifest
    keep = manifest_module.references(data) | set(data["retained"])
    assert set(layout.owned_files(root)) <= keep  # garbage collection took the leftovers
    assert len(data["shards"]) < 9


INTERRUPTED_RUN = """
    import os, sys
    import numpy as np
    from vela_search.store import AudioIndex
    fp = {"model": "tiny", "revision": "r1", "prompt_version": "1", "dim": 16}
    rng = np.random.default_rng(0)
    with AudioIndex.open(sys.argv[1]).writer(fingerprint=fp) as w:
        for c in range(int(sys.argv[2])):
            v = rng.standard_normal((4, 16)).astype(np.float32)
            v /= np.linalg.norm(v, axis=1, keepdims=True)
            w.add(v, [{"path": "/r/%d.wav" % c}] * 4)
            w.put_files([{"path": "/r/%d.wav" % c, "status": "indexed", "segments": 4}])
            w.commit()
        print("landed", flush=True)
        sys.stdin.readline()  # killed here: no compaction, no close
"""


def test_an_interrupted_run_leaves_few_shards_and_answers_exactly(tmp_path):
    root = tmp_path / "idx"
    AudioIndex.create(root, fingerprint=FP, dim=16)
    commits = 80
    run = run_python(INTERRUPTED_RUN, str(root), str(commits))
    assert run.stdout.readline().strip() == "landed", run.stderr.read()
    run.send_signal(signal.SIGKILL)
    run.communicate(timeout=30)
    with AudioIndex.open(root) as index:
        assert index.generation == commits and index.num_vectors == 4 * commits
        assert index.num_shards <= 12  # 80 commits, one shard each without merging
        rng = np.random.default_rng(0)
        vectors = []
        for _ in range(commits):
            v = rng.standard_normal((4, 16)).astype(np.float32)
            vectors.append(v / np.linalg.norm(v, axis=1, keepdims=True))
        vectors = np.concatenate(vectors)
        queries = unit(3, seed=7)
        want_ids, _ = brute_force(np.arange(len(vectors)), vectors, queries, 10)
        assert [[h.id for h in hits] for hits in index.search(queries, 10)] == want_ids.tolist()
        assert index.files().num_rows == commits


def test_a_merge_past_the_shard_size_is_written_in_full_shards_and_a_remainder(tmp_path):
    merged, plain = tmp_path / "merged", tmp_path / "plain"
    for root, policy in ((merged, TierPolicy(min_items=0)), (plain, None)):
        AudioIndex.create(root, fingerprint=FP, dim=16)
        with AudioIndex.open(root).writer(fingerprint=FP, max_shard_size=10, merge_policy=policy) as w:
            for c in range(14):
                ids = w.add(unit(7, seed=c), rows_for(c * 7, 7))
                w.delete(ids[:1])
                w.commit()
    a, b = AudioIndex.open(merged), AudioIndex.open(plain)
    counts = [s["count"] for s in a.manifest["shards"]]
    assert max(counts) <= 10 and counts.count(10) >= 5 and len(counts) < 14
    queries = unit(4, seed=3)
    assert _hits(a, queries, k=40) == _hits(b, queries, k=40)
    assert a.num_vectors == b.num_vectors == 14 * 6
