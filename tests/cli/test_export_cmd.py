"""`vela-search export`: what it prints, and one-line errors for a missing index or a bad --dtype."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq

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
