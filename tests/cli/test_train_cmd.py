"""`vela-search train`: in process (Typer runner, run_app) and as a real process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from cli_in_process import vela
from typer.testing import CliRunner

from vela_search.cli.app import app
from vela_search.cli.common import run_app
from vela_search.embedding.embedder import ADAPTER_RECORD
from vela_search.embedding.tiny import TINY_RECIPE_VERSION

runner = CliRunner()
REPO = Path(__file__).resolve().parents[2]
SHIPPED = REPO / "data" / "nli" / "triplets.csv"
FAST = [
    "--model",
    "tiny",
    "--device",
    "cpu",
    "--batch-size",
    "4",
    "--eval-fraction",
    "0.05",
    "--eval-every",
    "0",
]


def test_train_json(tiny_model_dir, tmp_path):
    out = tmp_path / "adapter"
    result = runner.invoke(
        app,
        [
            "train",
            "--data",
            str(SHIPPED),
            "--output",
            str(out),
            *FAST,
            "--max-steps",
            "4",
            "--save-every",
            "2",
            "--lr",
            "3e-3",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert payload["steps"] == 4 and payload["total_steps"] == 4 and len(payload["loss_curve"]) == 4
    assert payload["interrupted"] is False and payload["output"] == str(out)
    assert payload["eval_before"]["pairs"] == payload["eval_rows"] == 30
    assert payload["model_notice"] == "tiny random model: results carry no meaning"
    assert {"adapter_config.json", "adapter_model.safetensors", ADAPTER_RECORD} <= {
        p.name for p in out.iterdir()
    }
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-2", "step-4"]
    record = json.loads((out / ADAPTER_RECORD).read_text())
    assert (
        record["base_model"] == "tiny"
        and record["demos"] == "none"
        and record["hyperparameters"]["lr"] == 3e-3
    )


def test_train_summary_table_and_resume(tiny_model_dir, tmp_path):
    out = tmp_path / "adapter"
    args = ["train", "--data", str(SHIPPED), "--output", str(out), *FAST]
    first = runner.invoke(app, [*args, "--max-steps", "2"], env={"COLUMNS": "200"})
    assert first.exit_code == 0, first.output
    text = first.output
    for expected in (
        "training done",
        "steps",
        "2 / 2",
        "final loss",
        "held-out triplet accuracy",
        "held-out R@1",
        "time",
        "output",
        str(out),
        "--rebuild",
        "tiny random model: results carry no meaning",
    ):
        assert expected in text, expected
    # The smoothed loss is labelled and shown beside the last step's, which the progress bar showed.
    assert "(mean of the last 2 steps; last step: " in text
    again = runner.invoke(app, [*args, "--max-steps", "4", "--resume", "--json"])
    assert again.exit_code == 0, again.output
    payload = json.loads(again.stdout)
    assert payload["steps"] == 4 and payload["resumed_from"].endswith("step-2")
    more = runner.invoke(app, [*args, "--max-steps", "6", "--resume"], env={"COLUMNS": "200"})
    assert more.exit_code == 0, more.output
    assert "time (all parts)" in more.output and "resumed from step-4" in more.output


def test_bad_rows_are_reported(tiny_model_dir, tmp_path):
    lines = SHIPPED.read_text().splitlines()[:30]
    data = tmp_path / "mixed.csv"
    data.write_text("\n".join([*lines, "only one column", 'x,"",z']) + "\n")
    result = runner.invoke(
        app, ["train", "--data", str(data), "--output", str(tmp_path / "o"), *FAST, "--max-steps", "1"]
    )
    assert result.exit_code == 0, result.output
    assert "skipped rows" in result.output and "2 (" in result.output
    assert "empty text: 1" in result.output and "missing field: 1" in result.output


def test_no_valid_rows_prints_one_error_line(tiny_model_dir, tmp_path, capsys):
    data = tmp_path / "empty.csv"
    data.write_text("sent0,sent1,hard_neg\n,,\n")
    code = run_app(app, ["train", "--data", str(data), "--output", str(tmp_path / "o"), *FAST])
    err = capsys.readouterr().err
    assert code == 1
    assert err.startswith("error:") and "no valid triplets" in err and "Traceback" not in err


def test_bad_option_is_a_clean_error(tiny_model_dir, tmp_path, capsys):
    code = run_app(
        app, ["train", "--data", str(SHIPPED), "--output", str(tmp_path), *FAST, "--quantize", "2bit"]
    )
    err = capsys.readouterr().err
    assert code == 2 and "Invalid value for '--quantize': '2bit' is not one of" in err


def test_interrupted_run_exits_130_with_a_resume_hint(tiny_model_dir, tmp_path, monkeypatch):
    import vela_search.training.trainer as trainer

    real = trainer.train

    def interrupted_after_one_step(config, *, progress=None):
        def stop(event):
            if progress:
                progress(event)
            if event.kind == "step":
                raise KeyboardInterrupt

        return real(config, progress=stop)

    monkeypatch.setattr(trainer, "train", interrupted_after_one_step)
    result = runner.invoke(app, ["train", "--data", str(SHIPPED), "--output", str(tmp_path), *FAST])
    assert result.exit_code == 130
    assert "interrupted" in result.output and "--resume" in result.output
    assert (tmp_path / "checkpoints" / "step-1" / "trainer_state.json").is_file()


def test_module_import_stays_light():
    code = (
        "import sys, vela_search.cli.train_cmd; "
        "heavy = [m for m in ('torch', 'transformers', 'peft') if m in sys.modules]; print(heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    assert out.stdout.strip() == "[]"


def test_help_lists_the_options():
    result = runner.invoke(app, ["train", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    for option in (
        "--data",
        "--output",
        "--quantize",
        "--max-steps",
        "--grad-accum",
        "--temperature",
        "--eval-every",
        "--save-every",
        "--gradient-checkpointing",
        "--resume",
        "--json",
    ):
        assert option in result.output, option


def test_end_to_end_process(tiny_model_dir, tmp_path):
    """`vela-search train` (in process), its adapter used with no other flag, then by the installed script."""
    from vela_search.embedding.embedder import VelaEmbedder

    out = tmp_path / "adapter"
    proc = vela("train", "--data", SHIPPED, "--output", out, *FAST, "--max-steps", "2", "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["steps"] == 2
    assert "tiny random model" in proc.stderr
    used = VelaEmbedder.from_pretrained(adapter=str(out))
    assert [used.fingerprint.model, used.demos_spec, used.fingerprint.adapter is not None] == [
        f"tiny@recipe-{TINY_RECIPE_VERSION}",
        "none",
        True,
    ]
    # The installed command on an index built with the adapter: library warnings (transformers'
    # FutureWarning on loading a LoRA adapter) stay off the terminal.
    from indexing.helpers import small_collection

    small_collection(tmp_path / "clips", 1)
    script = Path(sys.executable).with_name("vela-search")
    env = {name: value for name, value in os.environ.items() if name != "PYTHONPATH"}
    indexed = subprocess.run(
        [
            str(script),
            "index",
            str(tmp_path / "clips"),
            "--index",
            str(tmp_path / "idx"),
            "--adapter",
            str(out),
        ]
        + ["--device", "cpu", "--json"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert indexed.returncode == 0, indexed.stderr
    assert "Warning" not in indexed.stderr and "warnings.warn" not in indexed.stderr, indexed.stderr


def test_train_prints_plain_progress_lines_without_a_terminal(
    tiny_model_dir, tmp_path, capsys, monkeypatch, plain_progress_states
):
    monkeypatch.setenv("VELA_PROGRESS_INTERVAL", "0.1")  # stderr under capsys is not a terminal
    args = ["train", "--data", str(SHIPPED), "--output", str(tmp_path / "o"), *FAST, "--max-steps", "3"]
    assert run_app(app, args) == 0
    err = capsys.readouterr().err
    assert [line for line in err.splitlines() if " elapsed" in line], err
    assert "\r" not in err
    # The printed lines come at an interval; the training state fed to them does not depend on timing.
    training = [state for state in plain_progress_states if state.startswith("training: ")]
    assert training and "3/3 steps (100%)" in training[-1], training
