"""The README's export recipes, run as written: `vela-search export`, then LanceDB (local mode) and Qdrant,
all in process, searched with a query vector from the same embedder, against vela-search's own top-10."""

from __future__ import annotations

import contextlib
import json
import re
from pathlib import Path

import numpy as np
import pytest
from cli_in_process import vela
from indexing.helpers import small_collection

from vela_search.indexing import index_paths
from vela_search.store import AudioIndex

README = Path(__file__).resolve().parent.parent / "README.md"
# The README's model id, swapped for the offline tiny model the index is built with here.
REAL_MODEL = '"Qwen/Qwen2-Audio-7B-Instruct", device="auto"'
TINY_MODEL = '"tiny", demos="none", device="cpu"'


def recipe(name: str) -> str:
    """The README's Python block that starts with ``# recipe: <name>``."""
    blocks = re.findall(r"```python\n(# recipe: ([\w-]+)\n.*?)```", README.read_text(encoding="utf-8"), re.S)
    found = [code for code, label in blocks if label == name]
    assert len(found) == 1, f"README has {len(found)} recipes named {name!r}"
    return found[0]


@pytest.fixture(scope="module")
def exported(tmp_path_factory, tiny_model_dir) -> tuple[Path, Path]:
    """An index of 12 clips built with the tiny model and exported (fp32) by the command line."""
    from vela_search.embedding.embedder import VelaEmbedder

    work = tmp_path_factory.mktemp("recipes")
    small_collection(work / "audio", 12)
    emb = VelaEmbedder.from_pretrained("tiny", demos="none", device="cpu")
    index_paths([work / "audio"], work / "idx", emb)
    with contextlib.chdir(work):  # run from the folder the recipes start in, as the README does
        done = vela("export", "--index", work / "idx", "--to", work / "export", "--dtype", "fp32", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["segments"] == 12
    return work, work / "idx"


def run_recipe(name: str, cwd: Path, monkeypatch, **given) -> dict:
    monkeypatch.chdir(cwd)
    code = recipe(name)
    if name == "query-vector":
        assert REAL_MODEL in code
        code = code.replace(REAL_MODEL, TINY_MODEL)
    namespace = dict(given)
    exec(compile(code, f"README:{name}", "exec"), namespace)  # noqa: S102 - the README's own code
    return namespace


def test_lancedb_and_qdrant_recipes_return_vela_searchs_top_10(exported, monkeypatch, capsys) -> None:
    pytest.importorskip("lancedb")
    pytest.importorskip("qdrant_client")
    work, idx = exported
    query = run_recipe("query-vector", work, monkeypatch)["query"]
    assert query.shape == (AudioIndex.open(idx).dim,)
    with AudioIndex.open(idx) as index:
        want = index.search(query, 10)[0]
    want_ids = [h.id for h in want]
    assert len(want_ids) == 10

    lance = run_recipe("lancedb", work, monkeypatch, query=query)
    assert [h["id"] for h in lance["hits"]] == want_ids
    np.testing.assert_allclose(
        [1 - h["_distance"] for h in lance["hits"]], [h.score for h in want], atol=1e-5
    )

    qdrant = run_recipe("qdrant", work, monkeypatch, query=query)
    assert [h.id for h in qdrant["hits"]] == want_ids
    np.testing.assert_allclose([h.score for h in qdrant["hits"]], [h.score for h in want], atol=1e-5)
    assert [h.payload["path"] for h in qdrant["hits"]] == [h.row["path"] for h in want]
    printed = capsys.readouterr().out.splitlines()
    assert len(printed) == 20 and all(str(work / "audio") in line for line in printed)


def test_query_vector_recipe_refuses_vectors_of_another_embedder(exported, monkeypatch) -> None:
    import pyarrow.parquet as pq

    work, _ = exported
    other = work / "other"
    (other / "export").mkdir(parents=True)
    table = pq.read_table(work / "export" / "segments.parquet")
    meta = dict(table.schema.metadata)
    fingerprint = json.loads(meta[b"vela_search.fingerprint"])
    meta[b"vela_search.fingerprint"] = json.dumps({**fingerprint, "adapter": "sha256:0000"}).encode()
    pq.write_table(table.replace_schema_metadata(meta), other / "export" / "segments.parquet")
    with pytest.raises(SystemExit, match="another embedder"):
        run_recipe("query-vector", other, monkeypatch)
