"""Manifest integrity: its own checksum, verified at open (with the previous generation offered for
recovery), and every shard's id range and row count cross-checked against its data."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from vela_search.errors import IndexFormatError
from vela_search.store import AudioIndex, layout, manifest
from vela_search.store.integrity import IndexDamagedError
from vela_search.store.repair import check_index
from vela_search.store.writer import IndexWriter

from .helpers import DIM, FP, rows_for, unit


def _build(root: Path) -> None:
    AudioIndex.create(root, fingerprint=FP, dim=DIM).close()
    for seed in range(2):
        with IndexWriter(root, fingerprint=FP, max_shard_size=50) as w:
            w.add(unit(50, seed=seed), rows_for(w.manifest["next_id"], 50))
            w.commit()


def test_a_damaged_manifest_is_one_line_naming_the_previous_one(tmp_path: Path) -> None:
    root = tmp_path / "idx"
    _build(root)
    data = json.loads((root / layout.MANIFEST).read_text())
    assert ":" in data[manifest.SELF_CHECKSUM]
    previous = json.loads((root / layout.PREVIOUS_MANIFEST).read_text())
    assert previous["generation"] == data["generation"] - 1
    data["num_vectors"] += 1  # one edited field, the checksum left as it was
    (root / layout.MANIFEST).write_text(json.dumps(data))
    with pytest.raises(IndexFormatError) as error:
        AudioIndex.open(root)
    message = str(error.value)
    assert "\n" not in message and "does not match its checksum" in message
    assert layout.PREVIOUS_MANIFEST in message
    # The offered recovery works: the previous generation opens and answers.
    (root / layout.MANIFEST).write_text((root / layout.PREVIOUS_MANIFEST).read_text())
    with AudioIndex.open(root) as index:
        assert index.generation == previous["generation"] and index.num_vectors == 50


def test_an_old_manifest_without_a_checksum_still_opens(tmp_path: Path) -> None:
    root = tmp_path / "idx"
    _build(root)
    data = json.loads((root / layout.MANIFEST).read_text())
    del data[manifest.SELF_CHECKSUM]
    (root / layout.MANIFEST).write_text(json.dumps(data))
    with AudioIndex.open(root) as index:
        assert index.num_vectors == 100


def test_an_edited_max_id_is_reported_and_the_deleted_row_stays_deleted(tmp_path: Path) -> None:
    root = tmp_path / "idx"
    _build(root)
    data = json.loads((root / layout.MANIFEST).read_text())
    first = data["shards"][0]
    victim = int(first["max_id"])
    with IndexWriter(root, fingerprint=FP) as w:
        w.delete([victim])
        w.commit()
    data = json.loads((root / layout.MANIFEST).read_text())
    data["shards"][0]["max_id"] = victim - 1  # the tombstone now lies outside the shard's stated range
    (root / layout.MANIFEST).write_text(json.dumps(manifest.seal(data)))
    report = check_index(root)
    assert not report.ok
    assert any("manifest says" in d.reason and str(victim - 1) in d.reason for d in report.damaged)
    try:
        with AudioIndex.open(root) as index:
            hits = index.search(unit(20, seed=0), 100)
    except IndexDamagedError as e:
        assert "manifest says" in str(e)
    else:
        assert victim not in {h.id for row in hits for h in row}
