"""`vela-search query --rerank N`: the judged hits, the table's judge column, the checks before loading."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from audio_factory import tone, write_audio
from typer.testing import CliRunner

from vela_search.cli.app import app
from vela_search.errors import QueryError

SR = 16_000
runner = CliRunner()


@pytest.fixture(scope="module")
def index(tmp_path_factory, tiny_model_dir) -> Path:
    base = tmp_path_factory.mktemp("rerank-cli")
    (base / "audio").mkdir()
    for i, freq in enumerate((220, 440, 660, 990, 1320)):
        write_audio(base / "audio" / f"t{freq}.wav", tone(1 + i * 0.5, freq=freq), SR)
    root = base / "idx"
    args = ["index", str(base / "audio"), "--index", str(root), "--model", "tiny", "--demos", "none"]
    result = runner.invoke(app, [*args, "--device", "cpu"])
    assert result.exit_code == 0, result.output
    return root


def query(index: Path, *args: str):
    return runner.invoke(app, ["query", *args, "--index", str(index), "--device", "cpu"])


def final(hit: dict) -> float:
    return hit["judge"] + 0.5 * hit["score"]


def test_rerank_judges_the_top_n_and_orders_them_by_the_rule(index):
    plain = json.loads(query(index, "a bell rings", "--json").stdout)
    result = query(index, "a bell rings", "--rerank", "3", "--json")
    assert result.exit_code == 0, result.output
    hits = json.loads(result.stdout)
    judged = [h for h in hits[:3]]
    assert all(h["judge"] is not None for h in judged) and all(h["judge"] is None for h in hits[3:])
    assert [final(h) for h in judged] == sorted((final(h) for h in judged), reverse=True)
    # The same three files are re-ordered; the rest keep the vector order.
    assert {h["path"] for h in judged} == {h["path"] for h in plain[:3]}
    assert [h["path"] for h in hits[3:]] == [h["path"] for h in plain[3:]]
    assert [h["rank"] for h in hits] == list(range(1, len(hits) + 1))


def test_the_table_shows_the_judge_column(index):
    result = query(index, "rain, no thunder", "--rerank", "2", "-k", "3")
    assert result.exit_code == 0, result.output
    assert "judge" in result.stdout and "–" in result.stdout  # the third hit was not judged


def test_like_and_queries_rerank_too(index, tmp_path):
    like = query(
        index, "--like", str(next((index.parent / "audio").glob("t440.wav"))), "--rerank", "2", "--json"
    )
    assert like.exit_code == 0, like.output
    assert all(h["judge"] is not None for h in json.loads(like.stdout)[:2])
    lines = tmp_path / "q.txt"
    lines.write_text("a dog barks\nwind\n")
    many = query(index, "--queries", str(lines), "--rerank", "2", "--json")
    assert many.exit_code == 0, many.output
    answers = [json.loads(line) for line in many.stdout.splitlines()]
    assert len(answers) == 2 and all(a["hits"][0]["judge"] is not None for a in answers)


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--rerank", "0"], "rerank must be"),
        (["--rerank", "101"], "rerank must be"),
        (["--rerank-prompt", "p.json"], "give --rerank too"),
        (["--rerank", "3", "--rerank-prompt", "/nowhere/p.json"], "cannot read the judge prompt"),
    ],
)
def test_bad_rerank_options_fail_before_the_model_loads(index, monkeypatch, args, needle):
    def no_model(*a, **k):
        raise AssertionError("the model must not load")

    monkeypatch.setattr("vela_search.search.load_index_embedder", no_model)
    result = query(index, "rain", *args)
    assert result.exit_code == 1
    assert isinstance(result.exception, QueryError) and needle in str(result.exception)
