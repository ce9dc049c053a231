"""The files and deleted tables as base plus deltas: what readers see, what a commit writes, and damage."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from vela_search.store import AudioIndex, layout, table_log
from vela_search.store import manifest as manifest_module
from vela_search.store.repair import check_index, repair_index

from .helpers import FP, rows_for, unit

CLI = str(Path(sys.executable).with_name("vela-search"))


@pytest.fixture
def small_tables(monkeypatch):
    """Deltas from the first rows on (tables of a few thousand rows are otherwise rewritten whole)."""
    monkeypatch.setattr(table_log, "SMALL_TABLE_ROWS", 0)


@pytest.fixture
def deltas_only(monkeypatch, small_tables):
    """Deltas at every commit, never a new base (unless a table is reset)."""
    monkeypatch.setattr(table_log, "REBASE_FRACTION", 1e9)


def _row(path: str, n: int) -> dict:
    return {"path": path, "size": n, "status": "indexed", "segments": n % 5}


def test_many_commits_read_back_as_the_changes_applied(tmp_path, deltas_only):
    root = tmp_path / "idx"
    index = AudioIndex.create(root, fingerprint=FP, dim=16)
    rng = np.random.default_rng(3)
    model: dict[str, dict] = {}
    with index.writer(fingerprint=FP) as w:
        for c in range(40):
            for n in rng.integers(0, 60, size=6).tolist():
                path = f"/a/{n}.wav"
                if n % 4 == 0 and path in model:
                    w.remove_files([path])
                    del model[path]
                else:
                    model[path] = _row(path, c * 100 + n)
                    w.put_files([model[path]])
            w.commit()
            if c == 20:  # the writer's own view, mid-run
                assert w.files().sort_by("path").to_pylist() == [model[p] | _nulls() for p in sorted(model)]
        deltas = w.manifest["files_deltas"]
    want = [model[p] | _nulls() for p in sorted(model)]
    assert 1 <= len(deltas) <= 10  # 40 commits' deltas, merged by size tiers
    with AudioIndex.open(root) as reader:
        assert reader.files().to_pylist() == want
    with index.writer(fingerprint=FP) as w:  # a new writer reads base and deltas too
        assert w.files().sort_by("path").to_pylist() == want
    # What `info` and `export` show is the merged table too.
    from vela_search.indexing import index_info
    from vela_search.store.export import export_index

    assert index_info(root)["files"]["total"] == len(model)
    export_index(root, tmp_path / "export")
    assert pq.read_table(tmp_path / "export" / "files.parquet").to_pylist() == want


def _nulls() -> dict:
    return {"mtime_ns": None, "sha256": None, "duration_s": None, "error": None, "root": None}


def test_deleted_ids_read_back_through_deltas_and_merges(tmp_path, deltas_only):
    root = tmp_path / "idx"
    index = AudioIndex.create(root, fingerprint=FP, dim=16)
    deleted: set[int] = set()
    with index.writer(fingerprint=FP) as w:
        for c in range(30):
            ids = w.add(unit(4, seed=c), rows_for(c * 4, 4))
            w.delete([int(ids[0])] + ([c * 4 - 3] if c else []))
            deleted |= {int(ids[0])} | ({c * 4 - 3} if c else set())
            w.commit()
        data = w.manifest
    with AudioIndex.open(root) as reader:
        stored = {int(i) for s in reader._shards for i in s.ids}
        # Tombstones of rows that merges dropped are gone; the others remain.
        assert set(reader.deleted_ids().tolist()) == deleted & stored
        assert reader.num_vectors == 120 - len(deleted)
        assert data["deleted_deltas"] and len(data["deleted_deltas"]) <= 8
        assert data["num_deleted"] == len(deleted & stored)
        hits = reader.search(unit(1), 200)[0]
        assert {h.id for h in hits} == set(range(120)) - deleted


def test_deltas_are_merged_into_a_new_base_once_they_outgrow_a_fraction_of_it(tmp_path, small_tables):
    root = tmp_path / "idx"
    index = AudioIndex.create(root, fingerprint=FP, dim=16)
    with index.writer(fingerprint=FP) as w:
        w.put_files([_row(f"/base/{i}.wav", i) for i in range(400)])
        w.commit()
        base = w.manifest["files"]
        assert base and w.manifest["files_deltas"] == []  # more than a quarter of nothing: a base
        bases = {base}
        for c in range(30):
            w.put_files([_row(f"/new/{c}-{i}.wav", i) for i in range(10)])
            w.commit()
            bases.add(w.manifest["files"])
            rows = sum(d["rows"] for d in w.manifest["files_deltas"])
            base_rows = pq.read_metadata(root / w.manifest["files"]).num_rows
            assert rows <= 0.25 * base_rows  # past a quarter of the base, the deltas become the base
    assert len(bases) == 3  # 400 rows; 400 + 110 = 510 (rebased at 110 > 100); then at 130 > 127
    assert AudioIndex.open(root).files().num_rows == 700


def test_a_commit_writes_its_changes_not_the_whole_table(tmp_path):
    root = tmp_path / "idx"
    index = AudioIndex.create(root, fingerprint=FP, dim=16)
    with index.writer(fingerprint=FP) as w:
        w.put_files([_row(f"/lib/{i:05d}.wav", i) for i in range(20_000)])
        w.commit()
        written = []  # table rows each commit wrote
        paths = {f"/lib/{i:05d}.wav" for i in range(20_000)}
        for c in range(120):
            before = set(os.listdir(root))
            put = [f"/lib/{(c * 37 + i) % 20_000:05d}.wav" for i in range(8)]
            w.put_files([_row(p, c) for p in put])
            gone = f"/lib/{(c * 53 + 11) % 20_000:05d}.wav"
            w.remove_files([gone])
            paths = (paths | set(put)) - {gone}
            w.commit()
            new = [n for n in set(os.listdir(root)) - before if layout.is_owned(n)]
            written.append(sum(pq.read_metadata(root / n).num_rows for n in new))
    # Each commit writes its 9 changes, sometimes merged with earlier deltas (tiers): never the 20,000.
    assert max(written) < 1000
    assert sum(written) < 120 * 9 * 5
    first, last = sum(written[:40]), sum(written[-40:])
    assert last <= 2 * first + 100  # flat: later commits write no more than early ones
    with AudioIndex.open(root) as reader:
        assert set(reader.files()["path"].to_pylist()) == paths


def test_a_crash_between_the_delta_and_the_manifest_leaves_the_old_generation(tmp_path, monkeypatch):
    monkeypatch.setattr(table_log, "SMALL_TABLE_ROWS", 0)
    monkeypatch.setattr(table_log, "REBASE_FRACTION", 1e9)
    root = tmp_path / "idx"
    index = AudioIndex.create(root, fingerprint=FP, dim=16)
    with index.writer(fingerprint=FP) as w:
        w.put_files([_row("/a.wav", 1)])
        w.commit()
    before = AudioIndex.open(root)

    def killed(path, data):
        raise KeyboardInterrupt("killed before the manifest")

    monkeypatch.setattr(manifest_module, "write", killed)
    with pytest.raises(KeyboardInterrupt), index.writer(fingerprint=FP) as w:
        w.put_files([_row("/b.wav", 2)])
        w.remove_files(["/a.wav"])
        w.commit()
    monkeypatch.setattr(manifest_module, "write", _real_write)
    assert (root / layout.files_delta(2)).exists()  # written, never committed
    with AudioIndex.open(root) as after:
        assert after.generation == 1 and after.files().to_pylist() == before.files().to_pylist()
    with index.writer(fingerprint=FP) as w:
        w.put_files([_row("/c.wav", 3)])
        assert w.commit() == 2  # the generation number is reused: nothing ever named the leftover
        assert [r["path"] for r in w.files().to_pylist()] == ["/a.wav", "/c.wav"]


_real_write = manifest_module.write


def _flip(path: Path) -> None:
    data = bytearray(path.read_bytes())
    for i in range(len(data) // 2, len(data) // 2 + 8):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))


def _cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run([CLI, *map(str, args)], capture_output=True, text=True, env=env, timeout=120)


@pytest.mark.parametrize("kind", ["files", "deleted"])
def test_a_damaged_delta_is_found_by_check_and_repaired(tmp_path, deltas_only, kind):
    root = tmp_path / "idx"
    index = AudioIndex.create(root, fingerprint=FP, dim=16)
    with index.writer(fingerprint=FP) as w:
        for c in range(3):
            # Each file's first row is of an older version of it, tombstoned.
            shas = ["old", str(c)]
            w.add(unit(2, seed=c), [{"path": f"/a/{c}.wav", "content_sha256": sha} for sha in shas])
            w.put_files([{"path": f"/a/{c}.wav", "status": "indexed", "sha256": str(c), "segments": 1}])
            w.delete([2 * c])
            w.commit()
    data = json.loads((root / "manifest.json").read_text())
    target = data[f"{kind}_deltas"][1]["path"]
    _flip(root / target)
    done = _cli("check", "--index", root)
    assert done.returncode == 1 and target in done.stderr and "Traceback" not in done.stderr
    assert [d.path for d in check_index(root).damaged] == [target]
    report = repair_index(root)
    assert report.repaired and check_index(root).ok
    with AudioIndex.open(root) as reader:
        if kind == "files":  # an unreadable files table is emptied: the next run rescans every file
            assert reader.files().num_rows == 0
        else:  # tombstones rebuilt from the files table: the old versions' rows stay deleted
            assert reader.deleted_ids().tolist() == [0, 2, 4]
            assert {h.id for h in reader.search(unit(1), 10)[0]} == {1, 3, 5}
