"""`vela-search query` end to end, on an index built by `vela-search index` with the tiny model."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from audio_factory import tone, write_audio
from cli_in_process import vela
from typer.testing import CliRunner

from vela_search.cli.app import app
from vela_search.cli.common import run_app
from vela_search.errors import QueryError

SR = 16_000
REPO = Path(__file__).resolve().parents[2]
INSTRUCTION = "find recordings with the same sound source as:"

runner = CliRunner()


@pytest.fixture(scope="module")
def collection(tmp_path_factory, tiny_model_dir):
    """Three short tones, a 40 s file of four 10 s tones, and a copy of one short tone, indexed."""
    base = tmp_path_factory.mktemp("query-cli")
    audio = base / "audio"
    for sub in ("a", "b", "copy"):
        (audio / sub).mkdir(parents=True)
    write_audio(audio / "a" / "t220.wav", tone(3, freq=220), SR)
    write_audio(audio / "a" / "t660.wav", tone(2, freq=660), SR)
    write_audio(audio / "b" / "t1320.wav", tone(4, freq=1320), SR)
    write_audio(audio / "long.wav", np.concatenate([tone(10, freq=f) for f in (220, 440, 880, 1760)]), SR)
    shutil.copyfile(audio / "a" / "t220.wav", audio / "copy" / "t220.wav")
    index = base / "idx"
    args = ["index", str(audio), "--index", str(index), "--model", "tiny", "--demos", "none"]
    result = runner.invoke(app, [*args, "--device", "cpu"])
    assert result.exit_code == 0, result.output
    return audio, index


def query(index: Path, *args: str) -> Any:
    """Run `vela-search query` in process through Typer's runner."""
    return runner.invoke(app, ["query", *args, "--index", str(index), "--device", "cpu"])


def query_json(index: Path, *args: str) -> list[dict]:
    result = query(index, *args, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def table_rows(stdout: str) -> list[list[str]]:
    """Cells of the body rows of the rich table."""
    rows = []
    for line in stdout.splitlines():
        cells = [c.strip() for c in line.split("│")[1:-1]]
        if len(cells) == 5 and cells[0].isdigit():
            rows.append(cells)
    return rows


def fmt(seconds: float) -> str:
    minutes, secs = divmod(round(seconds), 60)
    return f"{minutes:02d}:{secs:02d}"


# --------------------------------------------------------------------------------------------- the modes


MODES = {
    "caption": ["dog barking then a car passes"],
    "long": ["--long", "First rain on a roof, then thunder, then a dog barks while traffic passes. " * 20],
    "instruction": ["--instruction", INSTRUCTION, "a kettle whistling"],
    "audio": ["--audio", "{audio}/b/t1320.wav"],
}


@pytest.mark.parametrize("mode", sorted(MODES))
def test_each_mode_table_and_json_agree(collection, mode):
    audio, index = collection
    args = [a.replace("{audio}", str(audio)) for a in MODES[mode]]
    table = query(index, *args)
    assert table.exit_code == 0, table.output
    hits = query_json(index, *args)
    assert len(hits) == 4  # four distinct contents; the copy is listed with its original
    assert [h["rank"] for h in hits] == [1, 2, 3, 4]
    assert all(a["score"] >= b["score"] for a, b in zip(hits, hits[1:], strict=False))
    assert len({h["path"] for h in hits}) == 4
    expected = [
        [
            str(h["rank"]),
            f"{h['score']:.4f}",
            h["display_path"],
            f"{fmt(h['start_s'])}–{fmt(h['end_s'])}",
            fmt(h["duration_s"]),
        ]
        for h in hits
    ]
    rows = table_rows(table.stdout)
    for row, want in zip(rows, expected, strict=True):
        assert row[0] == want[0] and row[1] == want[1] and row[3:] == want[3:]
        assert row[2].startswith(want[2])  # the file cell may add "(+1 copy)"
    for h in hits:
        assert h["notice"] == "tiny random model: results carry no meaning"
        assert h["root"] == str(audio)
        assert Path(h["path"]).relative_to(audio).as_posix() == h["display_path"]


def start(args: list[str], env: dict[str, str]) -> subprocess.Popen:
    """Start `python -m vela_search ARGS` (all of them run at once: each spends seconds importing)."""
    return subprocess.Popen(
        [sys.executable, "-m", "vela_search", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_each_mode_in_a_real_subprocess(collection):
    """The installed command's exit statuses and streams: one query mode and two errors as real processes
    (all at once); the other modes print the same way in process (the process adds nothing for them)."""
    audio, index = collection
    path = str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")
    env = dict(os.environ, COLUMNS="120", PYTHONPATH=path)
    procs = {}
    in_process = {}
    for mode, args in MODES.items():
        args = [a.replace("{audio}", str(audio)) for a in args]
        cmd = ["query", *args, "--index", str(index), "--device", "cpu", "-k", "2", "--json"]
        if mode == "audio":
            procs[mode] = start(cmd, env)
        else:
            in_process[mode] = cmd
    errors = {
        "missing": ["query", "dog", "--index", str(index.parent / "missing")],
        "empty": ["query", "  ", "--index", str(index)],
    }
    for name, args in errors.items():
        procs[name] = start(args, env)
    out = {name: (p.communicate(timeout=300), p.returncode) for name, p in procs.items()}
    for mode, cmd in in_process.items():
        done = vela(*cmd)
        out[mode] = (done.stdout, done.stderr), done.returncode
    for mode in MODES:
        (stdout, stderr), code = out[mode]
        assert code == 0, stderr
        hits = json.loads(stdout)
        assert len(hits) == 2
        assert "tiny random model" in stderr
    (stdout, _), _ = out["audio"]
    first = json.loads(stdout)[0]
    assert first["path"] == str(audio / "b" / "t1320.wav") and first["score"] >= 0.999
    for name, needle in (("missing", "vela-search index"), ("empty", "empty")):
        (stdout, stderr), code = out[name]
        assert code == 1
        assert stderr.startswith("error: ") and needle in " ".join(stderr.split())
        assert stdout == ""


# ------------------------------------------------------------------------------------ query by example


def test_query_by_example_returns_the_clip_first(collection, tmp_path):
    audio, index = collection
    hits = query_json(index, "--audio", str(audio / "a" / "t660.wav"))
    assert hits[0]["path"] == str(audio / "a" / "t660.wav")
    assert hits[0]["score"] >= 0.999
    assert all(h["score"] < 0.999 for h in hits[1:])
    # The same audio in another lossless format decodes to the same samples.
    flac = write_audio(tmp_path / "same.flac", tone(2, freq=660), SR)
    hits = query_json(index, "--audio", str(flac))
    assert hits[0]["path"] == str(audio / "a" / "t660.wav")
    assert hits[0]["score"] >= 0.999


def test_duplicates_are_listed_with_their_original(collection):
    audio, index = collection
    hit = query_json(index, "--audio", str(audio / "copy" / "t220.wav"), "-k", "1")[0]
    assert hit["score"] >= 0.999
    assert sorted(hit["paths"]) == sorted([str(audio / "a" / "t220.wav"), str(audio / "copy" / "t220.wav")])
    table = query(index, "--audio", str(audio / "copy" / "t220.wav"), "-k", "1")
    assert "(+1 copy)" in table.stdout


# ---------------------------------------------------------------------------------------------- grouping


def test_grouping_gives_one_hit_per_file_with_the_best_segment(collection):
    audio, index = collection
    long = str(audio / "long.wav")
    hits = query_json(index, "--audio", long, "--start", "20", "--end", "30")
    assert len({h["path"] for h in hits}) == len(hits) == 4
    assert (hits[0]["path"], hits[0]["start_s"], hits[0]["end_s"]) == (long, 20.0, 30.0)
    assert hits[0]["score"] >= 0.999
    assert hits[0]["duration_s"] == pytest.approx(40.0)
    segments = query_json(index, "--audio", long, "--start", "20", "--end", "30", "--segments", "-k", "20")
    spans = [(h["start_s"], h["end_s"]) for h in segments if h["path"] == long]
    assert len(spans) == 7 and spans[0] == (20.0, 30.0)
    assert len(segments) == 10  # 7 windows of the long file + 3 short files
    best_other = [h for h in hits if h["path"] != long]
    seg_other = [h for h in segments if h["path"] != long]
    assert [h["score"] for h in best_other] == pytest.approx([h["score"] for h in seg_other])


# ------------------------------------------------------------------------------------------------ filters


def test_where_filters_by_path_before_top_k(collection):
    audio, index = collection
    hits = query_json(index, "dog barking", "--where", "*/a/*", "-k", "1")
    assert len(hits) == 1 and Path(hits[0]["path"]).parent == audio / "a"
    hits = query_json(index, "dog barking", "--where", "a/*")  # relative: any folder named a
    assert sorted(h["display_path"] for h in hits) == ["a/t220.wav", "a/t660.wav"]
    assert query_json(index, "dog barking", "--where", "*.mp3") == []
    empty = query(index, "dog barking", "--where", "*.mp3")
    assert empty.exit_code == 0 and "no hits" in empty.stdout


def test_like_answers_from_the_stored_vectors_without_a_model(collection, monkeypatch):
    import vela_search.search as search

    audio, index = collection
    example = query_json(index, "--audio", str(audio / "a" / "t660.wav"), "-k", "3")

    def no_model(*args, **kwargs):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(search, "load_index_embedder", no_model)
    like = query_json(index, "--like", str(audio / "a" / "t660.wav"), "-k", "3")
    assert [h["path"] for h in like] == [h["path"] for h in example]
    assert [h["score"] for h in like] == pytest.approx([h["score"] for h in example], abs=2e-3)
    assert like[0]["notice"] == "tiny random model: results carry no meaning"
    spans = query(index, "--like", str(audio / "long.wav"), "--start", "20", "--end", "30", "--paths")
    assert spans.exit_code == 0 and spans.stdout.splitlines()  # a long file's windows, a span of them


def test_accuracy_knobs_reach_the_search(collection, monkeypatch):
    from vela_search.store import AudioIndex

    audio, index = collection
    seen = []
    search = AudioIndex.search

    def spy(self, queries, k, **options):  # noqa: ANN001, ANN202
        seen.append({name: options.get(name) for name in ("nprobe", "refine", "exact")})
        return search(self, queries, k, **options)

    monkeypatch.setattr(AudioIndex, "search", spy)
    like = ["--like", str(audio / "a" / "t660.wav"), "-k", "3"]
    plain = query_json(index, *like)
    tuned = query_json(index, *like, "--nprobe", "4", "--refine", "50", "--exact")
    assert seen[-1] == {"nprobe": 4, "refine": 50, "exact": True}
    assert [h["path"] for h in tuned] == [h["path"] for h in plain]  # an exact index answers the same


def test_paths_output_lists_the_hits_for_other_programs(collection):
    _, index = collection
    for extra in ([], ["--segments"], ["--where", "a/*"]):
        hits = query_json(index, "a low hum", "-k", "4", *extra)
        result = query(index, "a low hum", "-k", "4", "--paths", *extra)
        assert result.exit_code == 0, result.output
        lines = result.stdout.splitlines()
        if "--segments" in extra:
            expected = [f"{h['path']}\t{h['start_s']:.3f}\t{h['end_s']:.3f}" for h in hits]
        else:
            expected = [h["path"] for h in hits]
        assert lines == expected and len(lines) == len(hits) > 0
        assert all(Path(line.split("\t")[0]).is_file() for line in lines)  # absolute, usable as they are


def test_duration_options_keep_files_of_that_length(collection):
    audio, index = collection
    short = query_json(index, "a low hum", "--max-duration", "3", "-k", "10")
    assert {Path(h["path"]).name for h in short} == {"t220.wav", "t660.wav"}
    assert all(h["duration_s"] <= 3 for h in short)
    long = query_json(index, "a low hum", "--min-duration", "30", "-k", "10")
    assert [Path(h["path"]).name for h in long] == ["long.wav"]
    like = query_json(index, "--like", str(audio / "long.wav"), "--max-duration", "3.5", "-k", "10")
    assert like and all(h["duration_s"] <= 3.5 for h in like)
    none = query(index, "a low hum", "--min-duration", "100")
    assert none.exit_code == 0 and "no hits" in none.stdout


def test_min_score_drops_weaker_hits(collection):
    audio, index = collection
    every = query_json(index, "--audio", str(audio / "long.wav"), "--start", "20", "--end", "30")
    threshold = (every[1]["score"] + every[2]["score"]) / 2
    kept = query_json(
        index,
        "--audio",
        str(audio / "long.wav"),
        "--start",
        "20",
        "--end",
        "30",
        "--min-score",
        f"{threshold}",
    )
    assert [h["path"] for h in kept] == [h["path"] for h in every[:2]]


# ------------------------------------------------------------------------------------------------- errors


def run_cli(capsys, *args: str) -> tuple[int, str, str]:
    """Run the command line as `vela-search` does (errors become one line and exit status 1)."""
    code = run_app(app, list(args))
    captured = capsys.readouterr()
    return code, captured.out, " ".join(captured.err.split())


def test_missing_index(tmp_path, capsys):
    missing = tmp_path / "nothing-here"
    code, out, err = run_cli(capsys, "query", "dog", "--index", str(missing))
    assert code == 1 and out == ""
    assert err.startswith("error: ") and str(missing) in err and "vela-search index" in err


def test_empty_index(tmp_path, capsys, tiny_model_dir):
    empty_dir = tmp_path / "nothing"
    empty_dir.mkdir()
    (empty_dir / "broken.wav").write_bytes(b"")
    index = tmp_path / "idx"
    runner.invoke(app, ["index", str(empty_dir), "--index", str(index), "--model", "tiny", "--demos", "none"])
    code, out, err = run_cli(capsys, "query", "dog", "--index", str(index))
    assert code == 1 and out == ""
    assert "holds no vectors" in err and "vela-search index" in err


@pytest.mark.parametrize("text", ["", "   ", "\n"])
def test_empty_query(collection, capsys, text):
    _, index = collection
    code, out, err = run_cli(capsys, "query", text, "--index", str(index))
    assert code == 1 and "the query is empty" in err
    code, _, err = run_cli(capsys, "query", "--index", str(index))
    assert code == 1 and "the query is empty" in err


def test_over_long_query(collection, capsys):
    _, index = collection
    text = "dog barking then a car passes " * 2000  # well over 8192 tokens
    code, out, err = run_cli(capsys, "query", "--long", text, "--index", str(index), "--device", "cpu")
    assert code == 1 and out == ""
    assert "tokens" in err and "8192 positions" in err and "never truncated" in err


def test_a_query_that_cannot_fit_is_refused_before_the_model_loads(collection, capsys, monkeypatch):
    import vela_search.search as search

    _, index = collection
    room = json.loads((index / "embedder.json").read_text())["embedders"][-1]["query_room"]
    assert (
        room == {"prefix_tokens": room["prefix_tokens"], "max_positions": 8192} and room["prefix_tokens"] > 0
    )

    def no_model(*args, **kwargs):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(search, "load_index_embedder", no_model)
    text = "dog barking then a car passes " * 2000
    code, out, err = run_cli(capsys, "query", "--long", text, "--index", str(index), "--device", "cpu")
    assert code == 1 and out == ""
    assert (
        "at least" in err and f"at most {8192 - room['prefix_tokens']} fit" in err and "8192 positions" in err
    )


def test_short_queries_do_not_read_the_tokenizer_early_and_long_ones_that_fit_run(collection, monkeypatch):
    import vela_search.embedding.backbone as backbone

    _, index = collection
    real = backbone.load_tokenizer
    calls = []
    monkeypatch.setattr(backbone, "load_tokenizer", lambda *a, **k: calls.append(a) or real(*a, **k))
    assert len(query_json(index, "a low hum", "-k", "2")) == 2
    assert calls == []  # a few bytes always fit: nothing is read before the model
    text = "dog barking then a car passes " * 300  # more bytes than positions left, far fewer tokens
    assert len(text.encode()) > 8192 and len(query_json(index, "--long", text, "-k", "2")) == 2
    assert len(calls) == 1


def test_without_a_recorded_room_the_check_after_loading_still_refuses(collection, tmp_path, capsys):
    _, index = collection
    copy = tmp_path / "idx"
    shutil.copytree(index, copy)
    record = json.loads((copy / "embedder.json").read_text())
    for entry in record["embedders"]:
        entry.pop("query_room", None)  # as an index written before the room was recorded
    (copy / "embedder.json").write_text(json.dumps(record))
    text = "dog barking then a car passes " * 2000
    code, out, err = run_cli(capsys, "query", "--long", text, "--index", str(copy), "--device", "cpu")
    assert code == 1 and out == ""
    assert "at least" not in err and "tokens but at most" in err and "never truncated" in err


def test_mismatched_embedder(collection, capsys):
    _, index = collection
    code, out, err = run_cli(capsys, "query", "dog", "--index", str(index), "--demos", "default")
    assert code == 1 and out == ""
    assert "different embedder" in err and "demos (index: none" in err and "--rebuild" in err


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["dog", "-k", "0"], "1 to 1000"),
        (["dog", "-k", "1001"], "1 to 1000"),
        (["dog", "--start", "3"], "need --audio"),
        (["dog", "--audio", "x.wav"], "not both"),
        (["--long", "--instruction", "find:", "dog"], "choose one query mode"),
        (["--audio", "{audio}/long.wav", "--start", "0", "--end", "40"], "at most 30 s"),
        (["--audio", "{audio}/nope.wav"], "does not exist"),
        (["dog", "--paths", "--json"], "choose one output"),
        (["dog", "--min-duration", "5", "--max-duration", "2"], "above the maximum"),
        (["dog", "--min-duration", "-1"], "minimum duration"),
        (["dog", "--like", "{audio}/long.wav"], "not both"),
        (["--like", "{audio}/long.wav", "--audio", "{audio}/long.wav"], "choose one query mode"),
        (["--like", "{audio}/long.wav", "--model", "tiny"], "loads no model"),
        (["--like", "{audio}/nope.wav"], "is not in this index"),
        (["--queries", "-", "--paths"], "with --queries use --json"),
        (["dog", "--nprobe", "0"], "nprobe must be an integer from 1"),
        (["dog", "--refine", "100000"], "refine must be an integer from 1"),
    ],
)
def test_bad_options(collection, capsys, args, needle):
    audio, index = collection
    args = [a.replace("{audio}", str(audio)) for a in args]
    code, out, err = run_cli(capsys, "query", *args, "--index", str(index), "--device", "cpu")
    assert code == 1 and out == ""
    assert err.startswith("error: ") and needle in err


def test_errors_surface_as_query_errors_in_the_runner(collection):
    _, index = collection
    result = query(index, "   ")
    assert result.exit_code == 1 and isinstance(result.exception, QueryError)


# ------------------------------------------------------------------------------------ many queries


def test_queries_from_a_file_answer_like_single_queries(collection, tmp_path):
    _, index = collection
    texts = ["a low hum", "a high whistle", "dog barking then a car passes"]
    listing = tmp_path / "queries.txt"
    listing.write_text("# sound design pulls\n" + "\n".join([texts[0], "", *texts[1:]]) + "\n")
    result = query(index, "--queries", str(listing), "-k", "3", "--json")
    assert result.exit_code == 0, result.output
    answers = [json.loads(line) for line in result.stdout.splitlines()]
    assert [a["query"] for a in answers] == texts  # comment and empty line skipped, order kept
    for answer in answers:
        single = query_json(index, answer["query"], "-k", "3")
        assert [h["path"] for h in answer["hits"]] == [h["path"] for h in single]
        assert [h["score"] for h in answer["hits"]] == pytest.approx([h["score"] for h in single], abs=1e-5)
        assert "tiny random model" in answer["notice"]
        # one record schema: each hit as `query --json` prints it, notice included
        assert [sorted(h) for h in answer["hits"]] == [sorted(h) for h in single]
        assert all(h["notice"] == answer["notice"] for h in answer["hits"])


def test_queries_from_standard_input_with_a_bad_one(collection):
    _, index = collection
    stdin = "a low hum\n" + "dog barking " * 3000 + "\na high whistle\n"
    result = runner.invoke(
        app, ["query", "--queries", "-", "--index", str(index), "--device", "cpu", "--json"], input=stdin
    )
    assert result.exit_code == 1  # one query failed; the others were answered
    answers = [json.loads(line) for line in result.stdout.splitlines()]
    assert [len(a.get("hits", [])) for a in answers] == [4, 0, 4]
    assert "tokens" in answers[1]["error"] and "hits" not in answers[1]

    tables = runner.invoke(
        app, ["query", "--queries", "-", "--index", str(index), "--device", "cpu"], input="a low hum\n"
    )
    assert tables.exit_code == 0 and "a low hum" in tables.stdout and "score" in tables.stdout


@pytest.mark.parametrize(
    ("args", "needle"),
    [(["dog", "--queries", "-"], "give no other query"), (["--queries", "{tmp}/missing.txt"], "cannot read")],
)
def test_bad_queries_option(collection, capsys, tmp_path, args, needle):
    _, index = collection
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    code, out, err = run_cli(capsys, "query", *args, "--index", str(index), "--device", "cpu")
    assert code == 1 and out == "" and needle in err


def test_terminal_prompt_ends_on_an_empty_line_or_end_of_input(monkeypatch):
    import io

    from vela_search.cli import query_cmd

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.setattr(sys, "stdin", Terminal())
    typed = iter(["rain on a tin roof", "door slam", "", "never read"])
    monkeypatch.setattr("builtins.input", lambda prompt: next(typed))
    assert list(query_cmd._query_source("-")) == ["rain on a tin roof", "door slam"]

    def end_of_input(prompt: str) -> str:
        raise EOFError

    monkeypatch.setattr("builtins.input", end_of_input)
    assert list(query_cmd._query_source("-")) == []


def test_export_dir_writes_the_hits_segments(collection, tmp_path):
    import soundfile as sf

    _, index = collection
    out = tmp_path / "clips"
    hits = query_json(
        index, "--like", str(collection[0] / "long.wav"), "--segments", "-k", "3", "--export-dir", str(out)
    )
    written = sorted(out.iterdir())
    assert [p.name[:3] for p in written] == ["01_", "02_", "03_"]
    for hit, path in zip(hits, written, strict=True):
        assert path.name.startswith(f"{hit['rank']:02d}_{Path(hit['path']).stem}_")
        assert abs(sf.info(path).duration - (hit["end_s"] - hit["start_s"])) < 1e-3
    (tmp_path / "q.txt").write_text("tone\n")
    result = query(index, "--queries", str(tmp_path / "q.txt"), "--export-dir", str(out))
    assert isinstance(result.exception, QueryError) and "--export-dir writes one query's hits" in str(
        result.exception
    )
