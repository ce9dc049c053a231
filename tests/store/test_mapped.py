"""Memory-mapped shard files: bounded memory, snapshots after deletion, no open files, damage found."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from vela_search.store import AudioIndex, IndexDamagedError, IndexWriter
from vela_search.store import index as index_module
from vela_search.store.repair import check_index

from .helpers import DIM, FP, REPO, unit

# 30,000 x 1,024 vectors: a 61 MB SQfp16 file, read whole (and held) by a reader that does not map it.
_BIG_ROWS, _BIG_DIM = 30_000, 1024
_BIG_FP = {**FP, "dim": _BIG_DIM}


def _manifest(root: Path) -> dict:
    return json.loads((root / "manifest.json").read_text())


def _build(root: Path, shards: int = 3, per_shard: int = 4, factory: str = "SQfp16") -> None:
    index = AudioIndex.create(root, fingerprint=FP, dim=DIM, factory=factory)
    with index.writer(fingerprint=FP) as w:
        for s in range(shards):
            w.add(unit(per_shard, seed=s), [{"path": f"/audio/s{s}.wav"} for _ in range(per_shard)])
            w.commit()
    index.close()


def _flip(path: Path, start: int, count: int = 16) -> None:
    data = bytearray(path.read_bytes())
    for i in range(start, start + count):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.fixture
def large_index_policy(monkeypatch):
    """Open snapshots as a library-size index is opened: no checksum pass over mapped files at open."""
    monkeypatch.setattr(index_module, "VERIFY_AT_OPEN_BYTES", -1)


_MEASURE = """
import json, sys
import numpy as np
import faiss
from vela_search.store import AudioIndex, index as index_module

def memory():
    fields = dict(line.split(":", 1) for line in open("/proc/self/status"))
    return {k: int(fields[k].split()[0]) * 1024 for k in ("VmRSS", "RssAnon", "RssFile")}

if sys.argv[2] == "large":
    index_module.VERIFY_AT_OPEN_BYTES = -1
query = np.random.default_rng(5).standard_normal((1, DIM)).astype(np.float32)
# Warm up what any first search starts (FAISS's worker threads), so that only the index is measured.
warm = faiss.index_factory(query.shape[1], "SQfp16", faiss.METRIC_INNER_PRODUCT)
warm.add(np.repeat(query, 64, axis=0))
warm.search(query, 5)
del warm
# ... and Arrow's Parquet reader (its allocator keeps a few MB of arenas once it has decoded a table).
import io, pyarrow as pa, pyarrow.parquet as pq
buffer = io.BytesIO()
pq.write_table(pa.table({"path": [f"/w/{i % 7}.wav" for i in range(50_000)]}), buffer, compression="zstd")
pq.read_table(pa.BufferReader(buffer.getvalue()), use_threads=False)
del buffer
before = memory()
index = AudioIndex.open(sys.argv[1])
opened = memory()
hits = index.search(query, 5)
searched = memory()
shard = index.shard_readers()[0].index()
print(json.dumps({"before": before, "opened": opened, "searched": searched, "hits": len(hits[0]),
                  "sq": isinstance(faiss.downcast_index(shard), faiss.IndexScalarQuantizer)}))
""".replace("DIM", str(_BIG_DIM))


@pytest.fixture(scope="module")
def big_index(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("mapped") / "idx"
    vectors = np.random.default_rng(0).standard_normal((_BIG_ROWS, _BIG_DIM)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    # Forced fp16 shards: the automatic policy would hold this size as a graph, in memory by design.
    AudioIndex.create(root, fingerprint=_BIG_FP, dim=_BIG_DIM, factory="SQfp16").close()
    with IndexWriter(root, fingerprint=_BIG_FP) as w:
        w.add(vectors, [{"path": f"/a/{i % 50}.wav"} for i in range(_BIG_ROWS)])
        w.commit()
    return root


@pytest.mark.parametrize("policy", ["small", "large"])
def test_opening_and_searching_a_mapped_shard_keeps_its_vectors_out_of_process_memory(big_index, policy):
    # small: the snapshot streams the file through its checksum at open; large: structure only.
    # Neither keeps the vectors in the process's own (anonymous) memory.
    size = (big_index / "shards/000000.faiss").stat().st_size
    assert size > 60e6
    env = dict(os.environ, PYTHONPATH=str(REPO))
    done = subprocess.run(
        [sys.executable, "-c", _MEASURE, str(big_index), policy], capture_output=True, text=True, env=env
    )
    assert done.returncode == 0, done.stderr[-2000:]
    m = json.loads(done.stdout)
    assert m["sq"] and m["hits"] == 5
    # A reader that read the file into memory held all of it (61 MB) in anonymous memory.
    # (The rest is metadata: ids and the hits' rows, a few MB whatever the vectors' size.)
    assert m["opened"]["RssAnon"] - m["before"]["RssAnon"] < size / 4, m
    assert m["searched"]["RssAnon"] - m["before"]["RssAnon"] < size / 4, m
    # Opening touches next to no page of the file; the exact search reads them as file cache pages,
    # which the system can drop at any time.
    assert m["opened"]["VmRSS"] - m["before"]["VmRSS"] < size / 4, m


def test_a_snapshot_answers_from_its_mapped_files_after_commits_delete_them(tmp_path, large_index_policy):
    root = tmp_path / "idx"
    _build(root, shards=4)
    snapshot = AudioIndex.open(root)
    assert all(r.mapped_bytes > 0 for r in snapshot.shard_readers())  # mapped, not read or checksummed
    query = unit(3, seed=7)
    expected = [[(h.id, h.score) for h in q] for q in snapshot.search(query, 6)]
    old = [root / e["index"] for e in _manifest(root)["shards"]]
    with AudioIndex.open(root).writer(fingerprint=FP) as w:  # two compactions collect every old shard
        w.compact()
        w.add(unit(1, seed=8), [{"path": "/audio/x.wav"}])
        w.commit()
        w.compact(target_shard_size=1)
    assert not any(path.exists() for path in old)
    assert [[(h.id, h.score) for h in q] for q in snapshot.search(query, 6)] == expected
    ids, vectors = snapshot.all_vectors()  # reads every vector, from the mappings of deleted files
    assert len(ids) == 16 and np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-3)


def test_mapped_shards_hold_no_file_descriptors(tmp_path, large_index_policy):
    root = tmp_path / "idx"
    _build(root, shards=12)
    fds = Path("/proc/self/fd")
    if not fds.is_dir():
        pytest.skip("needs /proc")
    before = len(list(fds.iterdir()))
    snapshot = AudioIndex.open(root)
    assert all(r.mapped_bytes > 0 for r in snapshot.shard_readers())
    snapshot.search(unit(1), 3)
    assert len(list(fds.iterdir())) == before
    snapshot.close()


def test_flipped_bytes_in_a_mapped_file_are_found_by_check_and_before_any_copy(tmp_path, large_index_policy):
    root = tmp_path / "idx"
    _build(root, shards=3)
    target = root / _manifest(root)["shards"][1]["index"]
    _flip(target, target.stat().st_size - 40)  # inside the stored vectors, header intact
    pattern = r"shards/000001\.faiss is damaged: its checksum"
    # A library-size snapshot checks structure, not checksums, at open: it opens and searches.
    with AudioIndex.open(root) as snapshot:
        assert len(snapshot.search(unit(1), 3)[0]) == 3
        with pytest.raises(IndexDamagedError, match=pattern) as info:
            snapshot.all_vectors()  # reads the file whole: checked first
        assert "\n" not in str(info.value) and "--repair" in str(info.value)
    report = check_index(root)
    assert [(d.path, d.shard) for d in report.damaged] == [("shards/000001.faiss", 1)]
    assert report.damaged[0].reason.startswith("its checksum is crc32:")
    with IndexWriter(root, fingerprint=FP) as w:
        with pytest.raises(IndexDamagedError, match=pattern):
            w.read_segments(np.array([4]))  # copying vectors out of it: checked first
        with pytest.raises(IndexDamagedError, match=pattern):
            w.compact()  # merging it would re-checksum the damage
    assert check_index(root).damaged  # nothing was merged or replaced


def test_a_small_snapshot_still_finds_flipped_bytes_when_it_opens(tmp_path):
    root = tmp_path / "idx"
    _build(root, shards=2)
    target = root / _manifest(root)["shards"][0]["index"]
    _flip(target, target.stat().st_size - 40)
    with pytest.raises(IndexDamagedError, match=r"shards/000000\.faiss is damaged: its checksum"):
        AudioIndex.open(root)


@pytest.mark.parametrize("cut", [10, 60, 1000])
def test_a_truncated_mapped_file_is_one_line_at_open(tmp_path, large_index_policy, cut):
    root = tmp_path / "idx"
    _build(root, shards=2)
    rel = _manifest(root)["shards"][1]["index"]
    path = root / rel
    data = path.read_bytes()
    path.write_bytes(data[: max(len(data) - cut, 5)])
    with pytest.raises(
        IndexDamagedError, match=rf"{rel} is damaged: it is not a readable FAISS index"
    ) as info:
        AudioIndex.open(root)
    assert info.value.path == rel and "\n" not in str(info.value)
    assert [d.path for d in check_index(root).damaged] == [rel]


def test_index_types_faiss_cannot_map_are_read_whole_and_checksummed(tmp_path, large_index_policy):
    root = tmp_path / "idx"
    _build(root, shards=1, per_shard=8, factory="IVF2,Flat")
    target = root / _manifest(root)["shards"][0]["index"]
    with AudioIndex.open(root) as snapshot:
        assert snapshot.shard_readers()[0].mapped_bytes == 0  # read into memory and checked
    _flip(target, target.stat().st_size - 20)
    with pytest.raises(IndexDamagedError, match="its checksum"):
        AudioIndex.open(root)


def test_the_writer_checks_each_shard_it_copies_from_once(tmp_path, large_index_policy, monkeypatch):
    # Reruns reuse stored vectors file after file, back and forth between shards: one pass per shard.
    from vela_search.store import shards

    root = tmp_path / "idx"
    _build(root, shards=2)
    checked: list[str] = []
    verify = shards.verify_file

    def counted(root_, relpath, expected, **kwargs):  # noqa: ANN001, ANN202
        checked.append(relpath)
        return verify(root_, relpath, expected, **kwargs)

    monkeypatch.setattr(shards, "verify_file", counted)
    with IndexWriter(root, fingerprint=FP) as w:
        for _ in range(3):
            for ids in ([0, 1], [5], [2]):
                vectors, _ = w.read_segments(np.array(ids))
                assert vectors.shape == (len(ids), DIM)
    assert sorted(checked) == ["shards/000000.faiss", "shards/000001.faiss"]
