"""``vela-search demos build/show`` on generated clips (tiny model): in process, and one refusal through the
installed console script."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from cli_in_process import vela

from tests.embedding.demo_library import LABELS, write_clip, write_library
from vela_search.embedding.demos import DemoSet

CLI = str(Path(sys.executable).parent / "vela-search")


def run(*args: str) -> subprocess.CompletedProcess[str]:
    """`vela-search demos *args` in process."""
    return vela("demos", *args)


def run_script(*args: str) -> subprocess.CompletedProcess[str]:
    # VELA_CACHE_DIR (set by the tiny_model_dir fixture) makes --model tiny reuse the session's checkpoint.
    return subprocess.run(
        [CLI, "demos", *args], capture_output=True, text=True, env=dict(os.environ), timeout=300, check=False
    )


def test_build_then_show_a_labelled_folder(tmp_path, tiny_model_dir):
    library = write_library(tmp_path / "library", per_label=2)
    out = tmp_path / "demos" / "mine.jsonl"
    built = run(
        *("build", str(library), "-o", str(out), "--audio", "6", "--text", "9", "--clip-seconds", "1"),
        *("--seed", "5", "--model", "tiny", "--json"),
    )
    assert built.returncode == 0, built.stderr
    summary = json.loads(built.stdout)
    assert (summary["demos"], summary["audio"], summary["text"]) == (15, 6, 9)
    assert summary["labels"] == sorted(LABELS) and summary["room_left"] > 0
    assert (
        summary["prefix_tokens"] + summary["item_tokens"] + summary["room_left"] == summary["max_positions"]
    )
    demos = DemoSet.from_jsonl(out)
    assert summary["digest"] == demos.digest and demos.n_audio == 6
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert all(not Path(r["audio"]).is_absolute() for r in records if "audio" in r)

    shown = run("show", str(out), "--model", "tiny")
    assert shown.returncode == 0, shown.stderr
    assert demos.digest in shown.stdout.replace("\n", "")
    assert f"prefix {summary['prefix_tokens']:,} tokens" in shown.stdout
    assert "longest clip that fits" in shown.stdout and "000-" in shown.stdout
    as_json = json.loads(run("show", str(out), "--model", "tiny", "--json").stdout)
    assert as_json["prefix_tokens"] == summary["prefix_tokens"] and len(as_json["costs"]) == 15


def test_show_refuses_a_set_that_cannot_fit_with_the_numbers(tmp_path, tiny_model_dir):
    lines = []
    for k in range(11):
        write_clip(tmp_path / "clips" / f"{k}.wav", 30.0, None, seed=k)
        lines.append(json.dumps({"audio": f"clips/{k}.wav", "word": f"w{k}"}))
    demo_file = tmp_path / "big.jsonl"
    demo_file.write_text("\n".join(lines) + "\n")

    refused = run("show", str(demo_file), "--model", "tiny")
    assert refused.returncode == 1
    assert "Traceback" not in refused.stderr
    message = " ".join(refused.stderr.split())
    assert message.startswith("error: demo set") and "does not fit" in message
    # Eleven 30 s clips: the prefix alone is over the limit.
    assert "its prefix (11 demos, 11 audio) alone takes" in message
    assert "the model's limit is 8192 positions" in message


def test_label_with_model_writes_a_generated_word_per_clip(tmp_path, tiny_model_dir):
    library = tmp_path / "unlabelled"
    for k in range(3):
        write_clip(library / f"take_{k}.wav", 2.0, 0.25 * k, seed=k, freq=300 + 150 * k)
    out = tmp_path / "boot.jsonl"
    built = run(
        *("build", str(library), "-o", str(out), "--audio", "3", "--text", "2", "--clip-seconds", "1"),
        *("--label-with-model", "--model", "tiny", "--device", "cpu", "--json"),
    )
    assert built.returncode == 0, built.stderr
    summary = json.loads(built.stdout)
    assert summary["generated_words"] == 3 and summary["unlabelled_left_out"] == 0
    audio = [json.loads(x) for x in out.read_text().splitlines() if '"audio"' in x]
    assert len(audio) == 3 and all(r["word_from"] == "generated" and r["word"] for r in audio)
    assert {Path(r["source"]).name for r in audio} == {"take_0.wav", "take_1.wav", "take_2.wav"}
    assert DemoSet.from_jsonl(out).n_audio == 3


def test_bad_source_is_one_clear_line(tmp_path, tiny_model_dir):
    missing = run_script(
        "build", str(tmp_path / "nowhere"), "-o", str(tmp_path / "x.jsonl"), "--model", "tiny"
    )
    assert missing.returncode == 1 and "Traceback" not in missing.stderr
    assert "does not exist" in missing.stderr and not (tmp_path / "x.jsonl").exists()
