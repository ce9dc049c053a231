"""`vela-search export`: what it prints, --index, and one-line errors (missing index, bad --dtype, a file
or a read-only folder as target, a full disk) that leave an earlier export as it was."""

from __future__ import annotations

import json
import os

import numpy as np
import pyarrow.parquet as pq
import pytest

from vela_search.cli.app import app
from vela_search.cli.common import run_app
from vela_search.store import AudioIndex


def make_index(root, n: int = 6, dim: int = 8) -> None:
    vectors = np.random.default_rng(0).standard_normal((n, dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    fingerprint = {"model": "test", "dim": dim}
    index = AudioIndex.create(root, fingerprint=fingerprint, dim=dim)
    with index.writer(fingerprint=fingerprint) as w:
        ids = w.add(vectors, [{"path": f"/a/{i}.wav", "start_s": 0.0, "end_s": 1.0} for i in range(n)])
        w.delete(ids[:2])
        w.commit()


def run(capsys, *args: str) -> tuple[int, str, str]:
    code = run_app(app, [str(a) for a in args])
    out = capsys.readouterr()
    return code, out.out, " ".join(out.err.split())


def test_export_prints_what_it_wrote(tmp_path, capsys) -> None:
    make_index(tmp_path / "idx")
    code, out, _ = run(capsys, "export", tmp_path / "idx", "--to", tmp_path / "out")
    assert code == 0
    flat = " ".join(out.split())
    assert "4 segments (8-dim fp16 vectors)" in flat and "segments.parquet" in flat
    assert pq.read_table(tmp_path / "out" / "segments.parquet").num_rows == 4

    code, out, _ = run(
        capsys, "export", tmp_path / "idx", "--to", tmp_path / "out", "--dtype", "fp32", "--json"
    )
    report = json.loads(out)
    assert code == 0 and report["segments"] == 4 and report["dtype"] == "float32" and report["dim"] == 8


def test_export_errors_are_one_line(tmp_path, capsys) -> None:
    code, _, err = run(capsys, "export", tmp_path / "missing", "--to", tmp_path / "out")
    assert code == 1 and "no index at" in err and "Traceback" not in err
    make_index(tmp_path / "idx")
    code, _, err = run(capsys, "export", tmp_path / "idx", "--to", tmp_path / "out", "--dtype", "int8")
    assert code == 1 and "--dtype must be fp16 or fp32, not 'int8'" in err
    assert not (tmp_path / "out").exists()


def test_export_takes_index_like_every_command_and_names_its_generation(tmp_path, capsys) -> None:
    make_index(tmp_path / "idx")
    code, _, err = run(capsys, "export", "--index", tmp_path / "idx", "--to", tmp_path / "out")
    assert code == 0 and "deprecated" not in err
    record = json.loads((tmp_path / "out" / "export.json").read_text())
    assert record["generation"] == AudioIndex.open(tmp_path / "idx").generation
    assert record["files"] == {"segments.parquet": 4, "files.parquet": 0}
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "export.json",
        "files.parquet",
        "segments.parquet",
    ]
    code, _, err = run(capsys, "export", tmp_path / "idx", "--to", tmp_path / "out")
    assert code == 0 and "deprecated; use --index" in err


def test_a_failed_export_is_one_line_and_leaves_the_earlier_one(tmp_path, capsys, monkeypatch) -> None:
    import errno

    from vela_search.store import export

    make_index(tmp_path / "idx")
    target = tmp_path / "a-file"
    target.write_text("x")
    code, _, err = run(capsys, "export", "--index", tmp_path / "idx", "--to", target)
    assert code == 1 and err.startswith("error: cannot export to") and "is a file" in err

    out = tmp_path / "out"
    assert run(capsys, "export", "--index", tmp_path / "idx", "--to", out)[0] == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    def full_disk(*args, **kwargs):  # noqa: ANN002, ANN003
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(export.pq, "write_table", full_disk)  # the second file fails
    code, _, err = run(capsys, "export", "--index", tmp_path / "idx", "--to", out, "--dtype", "fp32")
    assert code == 1 and "no space left on device" in err and "Traceback" not in err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # untouched, nothing left aside
    code, _, err = run(capsys, "export", "--index", tmp_path / "idx", "--to", tmp_path / "new")
    assert code == 1 and not (tmp_path / "new").exists()


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_folder_is_one_line(tmp_path, capsys) -> None:
    make_index(tmp_path / "idx")
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        code, _, err = run(capsys, "export", "--index", tmp_path / "idx", "--to", locked)
    finally:
        locked.chmod(0o755)
    assert code == 1 and "error: cannot write the export to" in err and "permission denied" in err
    assert list(locked.iterdir()) == []
