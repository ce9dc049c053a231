"""AudioIndex: opening, tables, and search against a brute-force oracle."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from vela_search.errors import EmptyIndexError, IndexFormatError, IndexNotFoundError, StoreError
from vela_search.store import FILES_SCHEMA, FORMAT_VERSION, AudioIndex, SearchHit

from .helpers import DIM, FP, brute_force, glob_mask, rows_for, unit


def same_row(got: dict, given: dict, id_: int) -> bool:
    """A stored row equals the given one plus its id (columns other rows had read back as None)."""
    return {k: v for k, v in got.items() if v is not None} == dict(given, id=id_)


def _build(index: AudioIndex, batches: int = 4, per: int = 60) -> tuple[np.ndarray, np.ndarray, list[dict]]:
    """Commit `batches` shards; return all ids, vectors and rows."""
    ids, vecs, rows = [], [], []
    with index.writer(fingerprint=FP) as w:
        for b in range(batches):
            v = unit(per, seed=b)
            r = rows_for(b * per, per, folder="ab"[b % 2])
            if b == 1:
                r[0]["paths"] = ["/audio/b/x.wav", "/elsewhere/dup.wav"]
            ids.append(w.add(v, r))
            vecs.append(v)
            rows.extend(r)
            w.commit()
    return np.concatenate(ids), np.concatenate(vecs), rows


def test_create_open_round_trip(index: AudioIndex, root):
    assert AudioIndex.exists(root)
    assert (index.generation, index.num_vectors, index.num_shards) == (0, 0, 0)
    assert index.fingerprint == FP and index.dim == DIM and index.factory == "SQfp16"
    assert index.manifest["format_version"] == FORMAT_VERSION
    v = unit(5)
    rows = [
        {"path": f"/x/{i}.wav", "start_s": i * 5.0, "end_s": i * 5.0 + 10, "tags": ["a", "b"]}
        for i in range(5)
    ]
    with index.writer(fingerprint=FP) as w:
        ids = w.add(v, rows)
        w.put_files(
            [
                {
                    "path": "/x/0.wav",
                    "size": 10,
                    "mtime_ns": 5,
                    "sha256": "ab",
                    "duration_s": 1.5,
                    "status": "indexed",
                    "segments": 1,
                    "root": "/x",
                }
            ]
        )
        assert w.commit() == 1
    assert ids.tolist() == [0, 1, 2, 3, 4]
    r = AudioIndex.open(root)
    assert (r.generation, r.num_vectors, r.num_shards) == (1, 5, 1)
    assert r.files().schema == FILES_SCHEMA
    assert r.files().to_pylist()[0]["duration_s"] == 1.5
    assert r.segment_rows([3, 0]) == [dict(rows[3], id=3), dict(rows[0], id=0)]
    got_ids, got_vecs = r.all_vectors()
    assert got_ids.tolist() == ids.tolist()
    np.testing.assert_allclose(got_vecs, v, atol=1e-3)
    hits = r.search(v[2], k=1)
    assert isinstance(hits[0][0], SearchHit)
    assert hits[0][0].id == 2 and hits[0][0].row["path"] == "/x/2.wav"
    assert hits[0][0].score == pytest.approx(1.0, abs=1e-3)


def test_open_missing_and_create_twice(tmp_path, index, root):
    with pytest.raises(IndexNotFoundError, match="no index at"):
        AudioIndex.open(tmp_path / "nothing")
    assert not AudioIndex.exists(tmp_path / "nothing")
    with pytest.raises(StoreError, match="already exists"):
        AudioIndex.create(root, fingerprint=FP, dim=DIM)
    again = AudioIndex.open_or_create(root, fingerprint=FP, dim=DIM)
    assert again.generation == 0
    fresh = AudioIndex.open_or_create(tmp_path / "fresh", fingerprint=FP, dim=8)
    assert fresh.dim == 8
    with pytest.raises(StoreError, match="invalid FAISS index factory"):
        AudioIndex.open_or_create(tmp_path / "bad", fingerprint=FP, dim=8, factory="IVF4,PQ3")


def test_bad_factory_and_bad_manifest(tmp_path, root, index):
    with pytest.raises(StoreError, match="invalid FAISS index factory 'nonsense'"):
        AudioIndex.create(tmp_path / "bad", fingerprint=FP, dim=DIM, factory="nonsense")
    manifest = root / "manifest.json"
    manifest.write_text(
        manifest.read_text().replace(f'"format_version": {FORMAT_VERSION}', '"format_version": 99')
    )
    with pytest.raises(IndexFormatError, match="format version 99"):
        AudioIndex.open(root)
    manifest.write_text("{not json")
    with pytest.raises(IndexFormatError, match="not valid JSON"):
        AudioIndex.open(root)


def test_empty_index_search_and_bad_queries(index):
    with pytest.raises(EmptyIndexError):
        index.search(unit(1), k=3)
    with pytest.raises(ValueError, match="shape"):
        index.search(np.zeros((1, DIM + 1), np.float32), k=3)
    with pytest.raises(ValueError, match="k must be"):
        index.search(unit(1), k=0)


def test_search_equals_brute_force_over_shards_with_deletions(index, root):
    ids, vecs, rows = _build(index)
    rng = np.random.default_rng(7)
    deleted = rng.choice(ids, size=40, replace=False)
    with index.writer(fingerprint=FP) as w:
        w.delete(deleted.tolist() + [10_000])  # unknown ids are ignored
        w.commit()
    r = AudioIndex.open(root)
    assert r.num_shards == 4
    assert r.num_vectors == len(ids) - 40
    assert sorted(r.deleted_ids().tolist()) == sorted(deleted.tolist())
    live = ~np.isin(ids, deleted)
    queries = unit(8, seed=99)
    k = 15
    want_ids, want_scores = brute_force(ids[live], vecs[live], queries, k)
    got = r.search(queries, k)
    for hits, wi, ws in zip(got, want_ids, want_scores, strict=True):
        assert [h.id for h in hits] == wi.tolist()
        np.testing.assert_allclose([h.score for h in hits], ws, atol=1e-5)
        assert all(same_row(h.row, rows[h.id], h.id) for h in hits)
    # Unrounded fp32 scores agree within fp16 precision.
    for q, hits in zip(queries, got, strict=True):
        exact = vecs[np.searchsorted(ids, [h.id for h in hits])] @ q
        np.testing.assert_allclose([h.score for h in hits], exact, atol=2e-3)
    # Querying with a deleted vector never returns it.
    assert all(h.id != deleted[0] for h in r.search(vecs[np.searchsorted(ids, deleted[0])], k=5)[0])
    got_ids, _ = r.all_vectors()
    assert got_ids.tolist() == ids[live].tolist()


@pytest.mark.parametrize("pattern", ["/audio/b/*", "*/3.wav", "/elsewhere/*", "/nomatch/*"])
def test_path_filter_applies_before_top_k(index, root, pattern):
    ids, vecs, rows = _build(index)
    with index.writer(fingerprint=FP) as w:
        w.delete(ids[::9].tolist())
        w.commit()
    r = AudioIndex.open(root)
    live = ~np.isin(ids, ids[::9]) & glob_mask(rows, pattern)
    queries = unit(5, seed=3)
    k = 10
    got = r.search(queries, k, path_glob=pattern)
    want_ids, want_scores = brute_force(ids[live], vecs[live], queries, k)
    for hits, wi, ws in zip(got, want_ids, want_scores, strict=True):
        assert len(hits) == min(k, int(live.sum()))
        assert [h.id for h in hits] == wi.tolist()
        np.testing.assert_allclose([h.score for h in hits], ws, atol=1e-5)


@pytest.mark.parametrize("low_high", [(10.0, 30.0), (None, 5.0), (55.0, None), (100.0, 200.0)])
def test_numeric_ranges_apply_before_top_k(index, root, low_high):
    ids, vecs, rows = _build(index)
    with index.writer(fingerprint=FP) as w:
        w.delete(ids[::7].tolist())
        w.commit()
    r = AudioIndex.open(root)
    low, high = low_high
    starts = np.array([row["start_s"] for row in rows])
    inside = (starts >= (low if low is not None else -np.inf)) & (
        starts <= (high if high is not None else np.inf)
    )
    live = ~np.isin(ids, ids[::7]) & inside & glob_mask(rows, "/audio/a/*")
    queries = unit(3, seed=4)
    got = r.search(queries, 10, path_glob="/audio/a/*", ranges={"start_s": low_high})
    want_ids, _ = brute_force(ids[live], vecs[live], queries, 10)
    for hits, wi in zip(got, want_ids, strict=True):
        assert len(hits) == min(10, int(live.sum())) and [h.id for h in hits] == wi.tolist()
    # A column the rows do not have: nothing is inside its range.
    assert r.search(queries, 10, ranges={"loudness": (0.0, None)}) == [[], [], []]


def test_k_larger_than_index(index, root):
    with index.writer(fingerprint=FP) as w:
        w.add(unit(3), rows_for(0, 3))
        w.commit()
    hits = AudioIndex.open(root).search(unit(2, seed=5), k=50)
    assert [len(h) for h in hits] == [3, 3]


def test_files_table_upsert_and_remove(index, root):
    with index.writer(fingerprint=FP) as w:
        w.put_files(
            [
                {"path": "/a.wav", "status": "indexed", "size": 1},
                {"path": "/b.wav", "status": "failed", "error": "truncated"},
            ]
        )
        w.put_files(pa.table({"path": ["/a.wav"], "status": ["duplicate"]}))
        assert w.files().num_rows == 2
        w.remove_files(["/b.wav"])
        assert w.files()["path"].to_pylist() == ["/a.wav"]
        with pytest.raises(ValueError, match="status"):
            w.put_files([{"path": "/c.wav", "status": "weird"}])
        with pytest.raises(ValueError, match="unknown files columns: colour"):
            w.put_files([{"path": "/c.wav", "status": "indexed", "colour": "red"}])
        w.commit()
    files = AudioIndex.open(root).files().to_pylist()
    assert [(f["path"], f["status"], f["size"]) for f in files] == [("/a.wav", "duplicate", None)]


def test_segment_rows_unknown_id(index, root):
    with index.writer(fingerprint=FP) as w:
        w.add(unit(3), rows_for(0, 3))
        w.commit()
    with pytest.raises(KeyError):
        AudioIndex.open(root).segment_rows([0, 77])


@pytest.mark.parametrize("repeat", [1, 30])  # 4 ids, then 120: each row by itself, then grouped by shard
def test_segment_rows_over_shards_give_each_id_a_row_of_its_own(index, root, repeat):
    for start in (0, 3, 6):  # three shards
        with index.writer(fingerprint=FP) as w:
            w.add(unit(3, seed=start), rows_for(start, 3))
            w.commit()
    with AudioIndex.open(root) as opened:
        assert all(r.loaded_rows is not None for r in opened.shard_readers())  # rows from memory
        ids = [7, 1, 7, 4] * repeat
        got = opened.segment_rows(ids)
        assert [r["id"] for r in got] == ids
        assert got[0] == got[2] and got[0] is not got[2]
        got[0]["path"] = "changed"
        assert got[2]["path"] == rows_for(6, 3)[1]["path"]
        # A search of several queries: hits that share an id do not share a row.
        v = unit(9, seed=3)
        hits = opened.search(np.vstack([v[0], v[0]]), 2)
        assert [h.id for h in hits[0]] == [h.id for h in hits[1]]
        assert hits[0][0].row == hits[1][0].row and hits[0][0].row is not hits[1][0].row


def test_segment_rows_reads_across_row_groups(index, root, monkeypatch):
    from vela_search.store import shards, tables

    monkeypatch.setattr(shards, "ROW_GROUP_SIZE", 7)
    monkeypatch.setattr(tables, "ROW_GROUP_SIZE", 7)
    rows = rows_for(0, 50)
    with index.writer(fingerprint=FP) as w:
        w.add(unit(50), rows)
        w.commit()
    r = AudioIndex.open(root)
    assert r._shards[0].parquet.num_row_groups == 8
    want = [49, 0, 13, 14, 6, 7, 13]
    assert r.segment_rows(want) == [dict(rows[i], id=i) for i in want]


def test_open_retries_when_a_commit_collects_the_files_it_just_read_about(index, root, monkeypatch):
    from vela_search.store import index as index_module

    stale = None
    with index.writer(fingerprint=FP) as w:
        for c in range(3):
            w.add(unit(3, seed=c), rows_for(0, 3))
            w.put_files([{"path": f"/{c}.wav", "status": "indexed"}])
            w.commit()
            if c == 0:
                stale = AudioIndex.open(root).manifest
    real_read = index_module.manifest.read
    calls = []

    def read_stale_first(path):
        calls.append(path)
        return stale if len(calls) == 1 else real_read(path)

    monkeypatch.setattr(index_module.manifest, "read", read_stale_first)
    assert AudioIndex.open(root).generation == 3
    monkeypatch.setattr(index_module.manifest, "read", real_read)
    (root / AudioIndex.open(root).manifest["files"]).unlink()
    with pytest.raises(IndexFormatError, match="files-3.parquet is damaged: it is missing"):
        AudioIndex.open(root)


def test_segment_rows_across_shards_in_any_order_with_repeats(index: AudioIndex):
    ids, _, rows = _build(index)
    opened = AudioIndex.open(index.root)
    assert opened.num_shards == 4
    wanted = [int(ids[190]), int(ids[5]), int(ids[130]), int(ids[5]), int(ids[61]), int(ids[190])]
    got = opened.segment_rows(wanted)
    assert all(same_row(row, rows[i], i) for row, i in zip(got, wanted, strict=True))
    got[1]["path"] = "changed"  # each row is a dict of its own, repeats included
    assert got[3]["path"] == rows[5]["path"]
    opened.close()
