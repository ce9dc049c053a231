"""An index written in format version 1 (tests/fixtures/v1-index, made by the version-1 code) opens,
answers, takes writes (becoming version 2 without rewriting its files) and passes `check`; a version-1
reader refuses version 2."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from fixtures import make_v1_index as v1

from vela_search.errors import IndexFormatError
from vela_search.store import AudioIndex, table_log
from vela_search.store import manifest as manifest_module
from vela_search.store.repair import check_index

from .helpers import brute_force

CLI = str(Path(sys.executable).with_name("vela-search"))


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A copy of the version-1 fixture index."""
    shutil.copytree(v1.FIXTURE, tmp_path / "v1")
    return tmp_path / "v1"


def _live() -> np.ndarray:
    return np.array([i for i in range(24) if i not in v1.DELETED])


def _search_ids(index: AudioIndex, queries: np.ndarray, k: int = 6, **kw) -> list[list[int]]:
    return [[h.id for h in hits] for hits in index.search(queries, k, **kw)]


def test_the_fixture_is_format_version_1():
    data = json.loads((v1.FIXTURE / "manifest.json").read_text())
    assert data["format_version"] == 1 and "files_deltas" not in data and "deleted_deltas" not in data


def test_a_version_1_index_opens_and_answers(root):
    with AudioIndex.open(root) as index:
        assert index.manifest["format_version"] == 1
        assert (index.num_vectors, index.num_shards, index.dim) == (22, 3, 8)
        assert index.deleted_ids().tolist() == v1.DELETED
        assert [r["path"] for r in index.files().to_pylist()] == [f["path"] for f in v1.files_rows()]
        queries = np.random.default_rng(5).standard_normal((4, 8)).astype(np.float32)
        want, _ = brute_force(_live(), v1.vectors()[_live()], queries, 6)
        assert _search_ids(index, queries) == want.tolist()
        hits = index.search(queries[0], 30, path_glob="/v1/b.wav")[0]
        assert sorted(h.id for h in hits) == [16, 17, 18, 19]
        assert index.segment_rows([3])[0]["path"] == "/v1/a.wav"
    assert check_index(root).ok


def test_a_version_1_index_becomes_version_2_at_its_next_commit_without_a_rewrite(root, monkeypatch):
    monkeypatch.setattr(table_log, "SMALL_TABLE_ROWS", 0)  # so that this small table gets a delta
    before = json.loads((root / "manifest.json").read_text())
    old_files = {p: (root / p).read_bytes() for p in manifest_module.references(before)}
    extra = np.random.default_rng(9).standard_normal((2, 8)).astype(np.float32)
    extra /= np.linalg.norm(extra, axis=1, keepdims=True)
    with AudioIndex.open(root).writer(fingerprint=v1.FINGERPRINT) as w:
        ids = w.add(extra, [{"path": "/v1/f.wav", "content_sha256": "f"}] * 2)
        w.put_files([{"path": "/v1/f.wav", "status": "indexed", "sha256": "f", "segments": 2}])
        w.commit()
    after = json.loads((root / "manifest.json").read_text())
    assert after["format_version"] == 2 and ids.tolist() == [24, 25]
    # Every version-1 file is still named, byte for byte: the new commit only added files.
    assert after["files"] == before["files"] and after["deleted"] == before["deleted"]
    assert [d["path"] for d in after["files_deltas"]] == ["files-delta-4.parquet"]
    for path, data in old_files.items():
        assert (root / path).read_bytes() == data
    live = np.concatenate([_live(), [24, 25]])
    vectors = np.concatenate([v1.vectors(), extra])
    queries = np.random.default_rng(6).standard_normal((3, 8)).astype(np.float32)
    want, _ = brute_force(live, vectors[live], queries, 8)
    with AudioIndex.open(root) as index:
        assert _search_ids(index, queries, 8) == want.tolist()
        assert index.files().num_rows == 6 and index.deleted_ids().tolist() == v1.DELETED
    with AudioIndex.open(root).writer(fingerprint=v1.FINGERPRINT) as w:
        w.compact()  # the deleted rows go, with their tombstones
    with AudioIndex.open(root) as index:
        assert index.num_shards == 1 and index.deleted_ids().size == 0
        assert _search_ids(index, queries, 8) == want.tolist()
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([CLI, "check", "--index", str(root)], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
    from vela_search.indexing import index_info

    assert index_info(root)["format_version"] == 2


def test_a_version_1_reader_refuses_a_version_2_index(root, monkeypatch):
    with AudioIndex.open(root).writer(fingerprint=v1.FINGERPRINT) as w:
        w.put_files([{"path": "/v1/g.wav", "status": "failed", "error": "empty"}])
        w.commit()
    monkeypatch.setattr(manifest_module, "FORMAT_VERSION", 1)  # what a version-1 vela-search knows
    with pytest.raises(IndexFormatError, match="format version 2; this vela-search reads versions up to 1"):
        AudioIndex.open(root)
