"""Export of an index as Parquet: exact round trip, and the same top-10 through DuckDB and LanceDB."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from vela_search.store import AudioIndex
from vela_search.store.export import export_index, read_export_metadata

from .helpers import DIM, FP, rows_for, unit


def build(index: AudioIndex) -> tuple[np.ndarray, np.ndarray]:
    """Three shards (one with an extra metadata column), some segments deleted, a files table.

    Returns the ids and vectors as added, and the deleted ids.
    """
    all_ids, deleted = [], []
    with index.writer(fingerprint=FP) as w:
        for shard, n in enumerate((40, 25, 30)):
            rows = rows_for(shard * 100, n, folder="abc"[shard])
            if shard == 1:
                rows = [{**r, "speaker": f"s{i % 3}"} for i, r in enumerate(rows)]
            all_ids.append(w.add(unit(n, seed=shard), rows))
            w.commit()
        ids = np.concatenate(all_ids)
        deleted = ids[::7]
        w.delete(deleted)
        w.put_files([{"path": f"/audio/a/{i}.wav", "status": "indexed", "size": 10 + i} for i in range(7)])
        w.put_files([{"path": "/audio/x.m4a", "status": "failed", "error": "cannot decode"}])
        w.commit()
    return ids, deleted


@pytest.mark.parametrize("dtype", ["float16", "float32"])
def test_round_trip_equals_the_live_index(index, root, tmp_path, dtype):
    ids, deleted = build(index)
    snapshot = AudioIndex.open(root)
    report = export_index(root, tmp_path / "out", dtype=dtype)

    segments = pq.read_table(tmp_path / "out" / "segments.parquet")
    live_ids, live_vectors = snapshot.all_vectors()
    assert report.segments == len(live_ids) == len(ids) - len(deleted) == segments.num_rows
    assert segments["id"].to_pylist() == live_ids.tolist()
    assert not set(deleted.tolist()) & set(segments["id"].to_pylist())

    vector_type = segments.schema.field("vector").type
    assert pa.types.is_fixed_size_list(vector_type) and vector_type.list_size == DIM
    assert vector_type.value_type == (pa.float16() if dtype == "float16" else pa.float32())
    exported = np.stack(segments["vector"].to_numpy(zero_copy_only=False)).astype(np.float32)
    # The default index stores fp16, so both precisions give back exactly what it holds.
    np.testing.assert_array_equal(exported, live_vectors)

    # Every metadata column, across shards with different columns (missing ones are null).
    want = snapshot.segment_rows(live_ids)
    got = segments.drop(["vector"]).to_pylist()
    for g, w in zip(got, want, strict=True):
        assert g == {**{k: None for k in g}, **w}
    assert {"speaker", "path", "start_s", "end_s"} <= set(segments.column_names)

    files = pq.read_table(tmp_path / "out" / "files.parquet")
    assert files.to_pylist() == snapshot.files().to_pylist()
    assert report.files == 8

    for name in ("segments.parquet", "files.parquet"):
        facts = read_export_metadata(tmp_path / "out" / name)
        assert facts["fingerprint"] == FP and facts["dim"] == DIM and facts["dtype"] == dtype
        assert facts["metric"] == "inner_product" and facts["generation"] == snapshot.generation


def test_empty_index_exports_empty_tables(index, root, tmp_path):
    export_index(index, tmp_path / "out")
    segments = pq.read_table(tmp_path / "out" / "segments.parquet")
    assert segments.num_rows == 0 and segments.column_names[:2] == ["id", "vector"]
    with pytest.raises(ValueError, match="float16 or float32"):
        export_index(index, tmp_path / "out", dtype="int8")  # type: ignore[arg-type]


def test_duckdb_reads_the_export_and_ranks_as_the_index(index, root, tmp_path):
    duckdb = pytest.importorskip("duckdb")
    build(index)
    export_index(root, tmp_path / "out", dtype="float32")
    query = unit(1, seed=42)[0]
    want = [h.id for h in AudioIndex.open(root).search(query, 10)[0]]
    path = str(tmp_path / "out" / "segments.parquet")
    rows = duckdb.sql(
        f"SELECT id FROM read_parquet('{path}') "
        f"ORDER BY array_inner_product(vector::FLOAT[{DIM}], $q::FLOAT[{DIM}]) DESC, id LIMIT 10",
        params={"q": query.tolist()},
    ).fetchall()
    assert [r[0] for r in rows] == want


@pytest.mark.parametrize("dtype", ["float16", "float32"])
def test_lancedb_search_on_the_export_gives_the_same_top_10(index, root, tmp_path, dtype):
    lancedb = pytest.importorskip("lancedb")
    build(index)
    export_index(root, tmp_path / "out", dtype=dtype)
    snapshot = AudioIndex.open(root)
    db = lancedb.connect(str(tmp_path / "lance"))
    table = db.create_table("sounds", data=pq.read_table(tmp_path / "out" / "segments.parquet"))
    for seed in range(5):
        query = unit(1, seed=100 + seed)[0]
        want = snapshot.search(query, 10)[0]
        got = table.search(query).distance_type("dot").limit(10).to_list()
        assert [g["id"] for g in got] == [h.id for h in want]
        # LanceDB's dot distance is 1 - inner product (with fp16 vectors it rounds the query to fp16 too).
        atol = 1e-3 if dtype == "float16" else 1e-5
        np.testing.assert_allclose([1 - g["_distance"] for g in got], [h.score for h in want], atol=atol)
        assert [g["path"] for g in got] == [h.row["path"] for h in want]
