"""Damaged index files, paths outside the index folder, lost manifests and open files (library level)."""

from __future__ import annotations

import json
import resource
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from vela_search.errors import IndexFormatError, StoreError
from vela_search.store import AudioIndex, IndexDamagedError
from vela_search.store.manifest import seal
from vela_search.store.repair import check_index, repair_index

from .helpers import DIM, FP, unit


def _build(root: Path, shards: int = 3, per_shard: int = 4) -> AudioIndex:
    """An index of `shards` shards; file `/audio/s<n>.wav` has the rows of shard n."""
    index = AudioIndex.create(root, fingerprint=FP, dim=DIM)
    with index.writer(fingerprint=FP) as w:
        for s in range(shards):
            vectors = unit(per_shard, seed=s)
            rows = [
                {"path": f"/audio/s{s}.wav", "start_s": float(i), "end_s": float(i + 1)}
                for i in range(per_shard)
            ]
            w.add(vectors, rows)
            w.put_files([{"path": f"/audio/s{s}.wav", "status": "indexed", "segments": per_shard}])
            w.commit()
    index.close()
    return AudioIndex.open(root)


def _flip(path: Path, start: int, count: int = 16) -> None:
    data = bytearray(path.read_bytes())
    for i in range(start, start + count):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))


def _manifest(root: Path) -> dict:
    return json.loads((root / "manifest.json").read_text())


def test_manifest_records_a_checksum_of_every_file_it_names(tmp_path):
    root = tmp_path / "idx"
    _build(root).close()
    data = _manifest(root)
    names = {data["files"]} | {s[k] for s in data["shards"] for k in ("index", "meta")}
    assert set(data["checksums"]) == names
    assert all(v.startswith("crc32:") for v in data["checksums"].values())


def test_flipped_vector_bytes_are_an_error_naming_the_file_not_wrong_hits(tmp_path):
    root = tmp_path / "idx"
    _build(root).close()
    target = root / _manifest(root)["shards"][1]["index"]
    _flip(target, target.stat().st_size - 40)  # inside the stored vectors, header intact
    with pytest.raises(IndexDamagedError, match=r"shards/000001\.faiss is damaged: its checksum") as info:
        AudioIndex.open(root)
    assert "vela-search check" in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize(
    "which, damage, reason",
    [
        ("index", "header", "not a readable FAISS index"),
        ("meta", "truncate", "not a readable Parquet file"),
        ("files", "garbage", "not a readable Parquet file"),
    ],
)
def test_damage_without_checksums_is_still_one_line_naming_the_file(tmp_path, which, damage, reason):
    # An index written before checksums existed: its files are parsed, and parse errors name them.
    root = tmp_path / "idx"
    _build(root).close()
    data = _manifest(root)
    data.pop("checksums")
    (root / "manifest.json").write_text(json.dumps(seal(data)))
    rel = data["files"] if which == "files" else data["shards"][0][which]
    path = root / rel
    if damage == "header":
        _flip(path, 0, 4)
    elif damage == "truncate":
        path.write_bytes(path.read_bytes()[:50])
    else:
        path.write_bytes(b"this is not parquet" * 10)
    with pytest.raises(IndexDamagedError, match=f"{rel} is damaged: it is {reason}") as info:
        AudioIndex.open(root).search(unit(1), 3)
    assert info.value.path == rel and "\n" not in str(info.value)


def test_old_manifest_without_checksums_opens_and_new_commits_add_them(tmp_path):
    root = tmp_path / "idx"
    _build(root, shards=2).close()
    data = _manifest(root)
    data.pop("checksums")
    (root / "manifest.json").write_text(json.dumps(seal(data)))
    with AudioIndex.open(root) as index:
        assert index.num_vectors == 8
        with index.writer(fingerprint=FP) as w:
            w.add(unit(2, seed=9), [{"path": "/audio/new.wav"}] * 2)
            w.commit()
    checksums = _manifest(root)["checksums"]
    assert "shards/000002.faiss" in checksums and "shards/000000.faiss" not in checksums
    assert check_index(root).unverified > 0 and check_index(root).ok


def test_check_and_repair_drop_the_damaged_shard_and_mark_its_files_for_reembedding(tmp_path):
    root = tmp_path / "idx"
    _build(root).close()
    target = root / _manifest(root)["shards"][1]["index"]
    _flip(target, target.stat().st_size - 40)
    report = check_index(root)
    assert [(d.path, d.kind, d.shard) for d in report.damaged] == [("shards/000001.faiss", "shard", 1)]
    repaired = repair_index(root)
    assert repaired.repaired and repaired.dropped_shards == [1] and repaired.rows_dropped == 4
    assert repaired.files_to_reembed == ["/audio/s1.wav"]
    assert check_index(root).ok
    with AudioIndex.open(root) as index:
        assert index.num_vectors == 8
        # The lost file is no longer recorded as indexed, so the next `index` run embeds it again.
        assert sorted(index.files()["path"].to_pylist()) == ["/audio/s0.wav", "/audio/s2.wav"]
        hits = index.search(unit(4, seed=1), 4)
        assert all(h.row["path"] != "/audio/s1.wav" for q in hits for h in q)


def test_repair_of_an_unreadable_shard_metadata_file_finds_its_files_from_the_files_table(tmp_path):
    root = tmp_path / "idx"
    _build(root).close()
    (root / _manifest(root)["shards"][2]["meta"]).write_bytes(b"garbage")
    repaired = repair_index(root)
    assert repaired.files_to_reembed == ["/audio/s2.wav"]
    with AudioIndex.open(root) as index:
        assert index.num_vectors == 8 and "/audio/s2.wav" not in index.files()["path"].to_pylist()


def test_repair_of_a_damaged_deleted_table_keeps_deleted_rows_deleted(tmp_path):
    root = tmp_path / "idx"
    index = _build(root)
    with index.writer(fingerprint=FP) as w:
        w.delete([0, 1])
        w.commit()
    index.close()
    (root / _manifest(root)["deleted"]).write_bytes(b"garbage")
    repaired = repair_index(root)
    # No content digests in these rows: without a trustworthy tombstone list, nothing can stay live
    # that might have been deleted, so every row of an unknown state is tombstoned and its file re-embedded.
    with AudioIndex.open(root) as index:
        assert 0 in index.deleted_ids() and 1 in index.deleted_ids() and index.num_vectors == 0
        assert index.files().num_rows == 0
    assert repaired.files_to_reembed == ["/audio/s0.wav", "/audio/s1.wav", "/audio/s2.wav"]


@pytest.mark.parametrize(
    "bad", ["../other/shards/000000.faiss", "/etc/passwd", "../../../../etc/passwd", "shards/../../x.faiss"]
)
def test_paths_outside_the_index_folder_are_refused(tmp_path, bad):
    root = tmp_path / "idx"
    other = tmp_path / "other"
    _build(root).close()
    _build(other).close()
    data = _manifest(root)
    data["shards"][0]["index"] = bad
    (root / "manifest.json").write_text(json.dumps(seal(data)))
    with pytest.raises(IndexFormatError, match="not a file of this index folder"):
        AudioIndex.open(root)
    with pytest.raises(IndexFormatError, match="not a file of this index folder"):
        AudioIndex.open(root, shards=False)
    from vela_search.store import IndexWriter

    with pytest.raises(IndexFormatError, match="not a file of this index folder"):
        IndexWriter(root, fingerprint=FP)


def test_a_lost_manifest_is_not_replaced_by_a_new_index_that_deletes_the_old_data(tmp_path):
    root = tmp_path / "idx"
    _build(root).close()
    before = sorted(p.name for p in (root / "shards").iterdir())
    (root / "manifest.json").unlink()
    with pytest.raises(StoreError, match="no manifest.json: its manifest was deleted or lost"):
        AudioIndex.create(root, fingerprint=FP, dim=DIM)
    assert sorted(p.name for p in (root / "shards").iterdir()) == before


def test_a_reader_holds_no_open_files_and_keeps_its_snapshot_after_collection(tmp_path):
    root = tmp_path / "idx"
    _build(root, shards=5).close()
    snapshot = AudioIndex.open(root)
    expected = snapshot.search(unit(2, seed=3), 5)
    with AudioIndex.open(root).writer(fingerprint=FP) as w:  # two compactions collect every old shard
        w.compact()
        w.add(unit(1, seed=8), [{"path": "/audio/x.wav"}])
        w.commit()
        w.compact(target_shard_size=1)
    assert not (root / "shards/000000.faiss").exists()
    assert [[h.id for h in q] for q in snapshot.search(unit(2, seed=3), 5)] == [
        [h.id for h in q] for q in expected
    ]


_LOW_FD_LIMIT = 40


def _low_fd_limit() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (_LOW_FD_LIMIT, _LOW_FD_LIMIT))


def test_many_shards_open_and_search_under_a_low_open_file_limit(tmp_path):
    root = tmp_path / "idx"
    index = AudioIndex.create(root, fingerprint=FP, dim=DIM)
    with index.writer(fingerprint=FP, max_shard_size=1) as w:
        w.add(unit(3 * _LOW_FD_LIMIT, seed=1), [{"path": f"/a/{i}.wav"} for i in range(3 * _LOW_FD_LIMIT)])
        w.commit()
    assert len(_manifest(root)["shards"]) == 3 * _LOW_FD_LIMIT
    code = (
        "import sys, numpy as np\n"
        "from vela_search.store import AudioIndex\n"
        "with AudioIndex.open(sys.argv[1]) as index:\n"
        f"    q = np.ones({DIM}, np.float32) / np.sqrt({DIM})\n"
        "    print(len(index.search(q, 5)[0]))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(root)], preexec_fn=_low_fd_limit, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "5"


def test_index_files_are_readable_by_others(tmp_path):
    root = tmp_path / "idx"
    _build(root, shards=1).close()
    for path in [root / "manifest.json", *root.glob("files-*.parquet"), *(root / "shards").iterdir()]:
        assert path.stat().st_mode & 0o044 == 0o044, path


def test_copy_of_an_index_elsewhere_still_opens(tmp_path):
    # Confinement is lexical (the store's own names, relative): a moved index keeps working.
    root = tmp_path / "idx"
    _build(root, shards=2).close()
    shutil.copytree(root, tmp_path / "moved")
    with AudioIndex.open(tmp_path / "moved") as index:
        assert index.num_vectors == 8 and len(index.search(np.ones(DIM, np.float32), 3)[0]) == 3


def test_a_description_of_the_index_reads_no_shard(tmp_path):
    root = tmp_path / "idx"
    _build(root, shards=2).close()
    (root / "shards/000001.faiss").unlink()  # what `info` needs does not include the shards
    with AudioIndex.open(root, shards=False) as index:
        assert index.num_shards == 2 and index.files().num_rows == 2
        with pytest.raises(StoreError, match="opened without its shards"):
            index.search(unit(1), 1)
    from vela_search.indexing import index_info

    assert index_info(root)["vectors"] == 8


def test_staged_rebuilds_and_trained_indexes_record_checksums_too(tmp_path):
    root = tmp_path / "idx"
    _build(root, shards=2).close()
    other = {**FP, "revision": "r2"}
    from vela_search.store import IndexWriter

    with IndexWriter(root, fingerprint=other, staged=True, factory="IVF2,Flat") as w:
        w.add(unit(8, seed=4), [{"path": f"/b/{i}.wav"} for i in range(8)])
        w.commit()
        w.promote()
    data = _manifest(root)
    assert data["trained"] and data["trained"] in data["checksums"]
    report = check_index(root)
    assert report.ok and report.unverified == 0
    assert report.files_checked == 3  # one shard (vectors, metadata) and the trained index
