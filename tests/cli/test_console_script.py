"""The installed ``vela-search`` console script, run as a user runs it: a separate process per command.

In-process runners (Typer's ``CliRunner``) take another path through Click than the console script does,
so exit codes, usage errors and Ctrl-C are checked here on the real entry point: the exit status, data on
stdout only (``--json`` parses from stdout alone), messages on stderr, and never a traceback.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from audio_factory import write_broken_files
from cli_in_process import vela
from indexing.helpers import generation, small_collection

REPO = Path(__file__).resolve().parents[2]
SCRIPT = Path(sys.executable).with_name("vela-search")
TINY = ["--model", "tiny", "--demos", "none", "--device", "cpu"]
TRIPLETS = REPO / "data" / "nli" / "triplets.csv"


@pytest.fixture(scope="module")
def script() -> Path:
    assert SCRIPT.is_file(), f"the console script is not installed next to {sys.executable}: pip install -e ."
    return SCRIPT


@pytest.fixture(scope="module")
def no_torch_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """An environment where importing torch fails: what runs in it provably never loads torch."""
    shadow = tmp_path_factory.mktemp("no-torch")
    (shadow / "torch").mkdir()
    (shadow / "torch" / "__init__.py").write_text('raise ImportError("torch was imported")\n')
    return {**_env(), "PYTHONPATH": str(shadow)}


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", COLUMNS="100")
    return env


def run(
    *args: str | Path, env: dict[str, str] | None = None, timeout: float = 300
) -> subprocess.CompletedProcess:
    """Run the console script; no output of any run may hold a traceback."""
    proc = subprocess.run(
        [str(SCRIPT), *map(str, args)],
        capture_output=True,
        text=True,
        env=env or _env(),
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )
    assert "Traceback" not in proc.stdout + proc.stderr, f"{args}:\n{proc.stderr}"
    return proc


def in_process(*args: str | Path) -> subprocess.CompletedProcess:
    """The console script's entry point in this process (tests/cli_in_process.py), held to the same rule:
    no traceback in any output."""
    proc = vela(*args)
    assert "Traceback" not in proc.stdout + proc.stderr, f"{args}:\n{proc.stderr}"
    return proc


# --------------------------------------------------------------------------------- usage errors: exit 2
USAGE_ERRORS = [
    [],  # no command: the help, as a usage error
    ["--bogus"],
    ["quer", "dog"],  # misspelled command
    ["query", "dog", "--bogus"],
    ["query", "-k", "abc", "dog"],
    ["query", "dog", "--device", "gpu9"],
    ["query", "dog", "--json", "true"],
    ["index", "x", "--commit-every", "0"],
    ["index", "x", "--dtype", "f32"],
    ["index", "x", "--quantize", "2bit"],
    ["index", "x", "--window"],  # option without its value
    ["info", "--json", "true"],
    ["compact", "--index"],
    ["check", "--repair", "yes"],
    ["train", "--data", "x"],  # --output missing
    ["train", "--data", "x", "-o", "y", "--scheduler", "steep"],
    ["train", "--data", "x", "-o", "y", "--device", "tpu"],
    ["bench"],
    ["bench", "clotho", "--split", "nope"],
    ["bench", "audiocaps", "--limit", "0"],
    ["bench", "speed", "--device", "cuda:x"],
    ["bench", "pipeline"],  # PATHS missing
    ["bench", "store", "--files", "0"],
    ["bench", "nope"],
]


def test_usage_errors_print_usage_exit_2_and_load_no_torch(script, no_torch_env):
    with ThreadPoolExecutor(4) as pool:
        procs = list(pool.map(lambda args: run(*args, env=no_torch_env, timeout=60), USAGE_ERRORS))
    for args, proc in zip(USAGE_ERRORS, procs, strict=True):
        assert proc.returncode == 2, (args, proc.returncode, proc.stderr)
        assert proc.stdout == "", (args, proc.stdout)
        if args[-1:] in (["--window"], ["--index"]):  # Click names the option alone when its value is missing
            assert f"Error: Option '{args[-1]}' requires an argument" in proc.stderr
        else:
            assert "Usage: vela-search" in proc.stderr, (args, proc.stderr)


HELP = [[], ["index"], ["info"], ["compact"], ["check"], ["query"], ["train"], ["bench"]] + [
    ["bench", name] for name in ("clotho", "audiocaps", "speed", "pipeline", "store")
]


def test_help_and_version_of_every_command(script, no_torch_env):
    with ThreadPoolExecutor(4) as pool:
        procs = list(pool.map(lambda cmd: run(*cmd, "--help", env=no_torch_env, timeout=60), HELP))
    for cmd, proc in zip(HELP, procs, strict=True):
        assert proc.returncode == 0 and proc.stderr == "", (cmd, proc.stderr)
        assert proc.stdout.startswith(f"Usage: vela-search {' '.join(cmd)}".rstrip()), (cmd, proc.stdout)
        assert "<bool>" not in proc.stdout, (cmd, proc.stdout)  # flags read as flags
    assert "  --json " in procs[1].stdout and "  --strict " in procs[1].stdout
    version = run("--version", env=no_torch_env)
    assert version.returncode == 0 and version.stdout.startswith("vela-search ") and version.stderr == ""


def test_user_errors_are_one_line_and_exit_1(script, tmp_path, no_torch_env):
    empty = tmp_path / "empty"
    empty.mkdir()
    cases = [
        (["info", "--index", tmp_path / "none"], "no index at"),
        (["check", "--index", tmp_path / "none"], "no index at"),
        (["query", "dog", "--index", tmp_path / "none"], "no index at"),
        (["index", empty, "--index", tmp_path / "new"], "no audio files found in"),
        (["index", tmp_path / "typo", "--index", tmp_path / "new2"], "does not exist"),
        (["bench", "clotho", "--data-dir", empty], "captions not found"),
        (["bench", "audiocaps", "--data-dir", empty], "AudioCaps"),
    ]
    with ThreadPoolExecutor(4) as pool:
        procs = list(pool.map(lambda case: run(*case[0], env=no_torch_env, timeout=60), cases))
    for (args, message), proc in zip(cases, procs, strict=True):
        assert proc.returncode == 1, (args, proc.stderr)
        assert proc.stdout == "" and proc.stderr.startswith("error: ") and message in proc.stderr, (
            args,
            proc,
        )
        assert len(proc.stderr.strip().splitlines()) == 1, (args, proc.stderr)
    # Nothing found: no empty index left behind.
    assert not (tmp_path / "new").exists() and not (tmp_path / "new2").exists()


def test_user_errors_after_the_model_imports(tmp_path):
    """Errors found once torch is loaded: the same entry point, in process (the exit status and the one
    line are what is checked; the console script's own imports are checked above)."""
    # A Hub model that is neither cached nor reachable: the error names it, not the default model.
    empty = tmp_path / "empty"
    empty.mkdir()
    other = in_process("bench", "pipeline", empty, "--model", "someone/other", "--device", "cpu")
    assert other.returncode == 1 and "hf download someone/other" in other.stderr, other.stderr
    assert "Qwen2-Audio" not in other.stderr
    train = in_process("train", "--data", tmp_path / "none.csv", "-o", tmp_path / "out", "--device", "cpu")
    assert train.returncode == 1 and train.stdout == "" and "none.csv" in train.stderr, train


# --------------------------------------------------------------------- working commands, with a model
def _wait_then_interrupt(proc: subprocess.Popen, ready, what: str) -> tuple[str, str]:  # noqa: ANN001
    """Wait until ``ready()``, press Ctrl-C (SIGINT) once, and return the run's stdout and stderr."""
    try:
        deadline = time.monotonic() + 240
        while not ready():
            if proc.poll() is not None:
                out, err = proc.communicate()
                raise AssertionError(f"the run ended ({proc.returncode}) before {what}:\n{err}")
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            time.sleep(0.02)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return out, err


def test_index_ctrl_c_exits_130_then_resumes_and_strict_exits_1(script, tiny_model_dir, tmp_path):
    audio = tmp_path / "audio"
    clips = 48  # enough that the run is still embedding when Ctrl-C comes, even on a busy machine
    small_collection(audio, clips)
    idx = tmp_path / "idx"
    proc = subprocess.Popen(
        [str(SCRIPT), "index", str(audio), "--index", str(idx), *TINY, "--commit-every", "1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(),
    )
    # Generation 2 records the run's roots and segmentation; 3 and later hold files (one per commit).
    out, err = _wait_then_interrupt(proc, lambda: generation(idx) >= 3, "a first commit of files")
    assert proc.returncode == 130, err
    assert "Traceback" not in out + err
    last = err.strip().splitlines()[-1]
    assert last.startswith("interrupted: ") and "run the same command again" in last, err

    # The rerun resumes; a broken file and a missing path make --strict exit 1, with the report on stdout.
    write_broken_files(audio / "broken")
    (audio / "broken" / "notes.mp3").write_text("meeting notes, saved with the wrong name\n" * 50)
    rerun = run("index", audio, tmp_path / "missing", "--index", idx, *TINY, "--strict", "--json")
    assert rerun.returncode == 1, rerun.stderr
    report = json.loads(rerun.stdout)
    assert report["files_skipped"] >= 2 and report["files_skipped"] + report["files_indexed"] == clips
    assert report["files_failed"] > 0
    assert any(p["path"].endswith("missing") for p in report["problems"])
    assert "(--strict)" in rerun.stderr
    # The MP3 decoder's complaint about the text file stays off the terminal and is kept with the failure.
    assert "MPEG" not in rerun.stderr
    reason = next(f["reason"] for f in report["failures"] if f["path"].endswith("notes.mp3"))
    assert "contains text" in reason and "Illegal Audio-MPEG-Header" in reason

    # What the resumed index answers: the same entry point in process (what is printed and the exit
    # status; the process boundary was the point above).
    info = in_process("info", "--index", idx, "--json")
    assert info.returncode == 0 and json.loads(info.stdout)["vectors"] == clips
    check = in_process("check", "--index", idx, "--json")
    assert check.returncode == 0 and isinstance(json.loads(check.stdout), dict), check.stderr
    compact = in_process("compact", "--index", idx, "--json")
    assert compact.returncode == 0 and "generation" in json.loads(compact.stdout)

    # --queries: every line answered on stdout as JSON; a failing line makes the exit status 1.
    queries = tmp_path / "queries.txt"
    queries.write_text("a low hum\n# skipped\n" + "hum " * 20_000 + "\nbirds\n")
    answered = in_process("query", "--queries", queries, "--index", idx, "--device", "cpu", "--json")
    assert answered.returncode == 1, answered.stderr
    lines = [json.loads(line) for line in answered.stdout.splitlines()]
    assert [("error" in line) for line in lines] == [False, True, False]
    assert lines[0]["hits"] and lines[0]["query"] == "a low hum"


def test_train_ctrl_c_exits_130_with_a_resume_hint(script, tiny_model_dir, tmp_path):
    out_dir = tmp_path / "adapter"
    proc = subprocess.Popen(
        [str(SCRIPT), "train", "--data", str(TRIPLETS), "-o", str(out_dir), "--model", "tiny"]
        + ["--device", "cpu", "--batch-size", "4", "--eval-fraction", "0.02", "--eval-every", "0"]
        + ["--save-every", "1", "--max-steps", "200"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(),
    )
    first = out_dir / "checkpoints" / "step-1"
    out, err = _wait_then_interrupt(proc, first.is_dir, "a first checkpoint")
    assert proc.returncode == 130, err
    assert "Traceback" not in out + err
    assert "interrupted" in err and "--resume" in err


def test_bench_store_and_pipeline_write_json_to_stdout(tiny_model_dir, tmp_path):
    # What is printed where, not the process: run in process (tests/cli_in_process.py).
    store = vela("bench", "store", "--files", "40", "--dim", "8", "--workdir", tmp_path, "--json", "-")
    assert store.returncode == 0, store.stderr
    assert "Traceback" not in store.stdout + store.stderr
    assert json.loads(store.stdout)["files"] == 40
    assert "index writer" in store.stderr  # the table moves to stderr when JSON takes stdout

    small_collection(tmp_path / "audio", 2)
    pipeline = vela(
        "bench", "pipeline", tmp_path / "audio", "--demos", "none", "--device", "cpu", "--json", "-"
    )
    assert pipeline.returncode == 0, pipeline.stderr
    assert "Traceback" not in pipeline.stdout + pipeline.stderr
    assert json.loads(pipeline.stdout)["files"] == 2
    assert "1.00 is perfect" in pipeline.stderr
