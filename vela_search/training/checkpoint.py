"""Training checkpoints: everything needed to continue a run exactly where it stopped.

Layout, one directory per saved step::

    <output>/checkpoints/step-<N>/
        adapter_config.json, adapter_model.safetensors   the LoRA weights after step N (a usable adapter)
        vela_training.json                               the training record so far (so --adapter works)
        optimizer.pt, scheduler.pt                       AdamW moments and the learning-rate schedule
        rng.pt                                           torch CPU/CUDA generator states (LoRA dropout)
        trainer_state.json                               step, loss curve, evaluations, the run's settings

The data order needs no saved state: it is a function of the seed and the step. A checkpoint is written
into a temporary directory and renamed into place, so an interrupted save never leaves a half checkpoint
that ``--resume`` would pick up.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

CHECKPOINTS_DIR = "checkpoints"
STATE_FILE = "trainer_state.json"
_STEP_DIR = re.compile(r"^step-(\d+)$")


@dataclass
class Checkpoint:
    """A checkpoint read back from disk."""

    path: Path
    step: int
    state: dict[str, Any]
    adapter: dict[str, torch.Tensor]
    optimizer: dict[str, Any]
    scheduler: dict[str, Any]
    rng: dict[str, Any]


def checkpoints_dir(output: Path) -> Path:
    return Path(output) / CHECKPOINTS_DIR


def list_checkpoints(output: Path) -> list[tuple[int, Path]]:
    """Complete checkpoints under ``output``, oldest first."""
    root = checkpoints_dir(output)
    if not root.is_dir():
        return []
    found = []
    for child in root.iterdir():
        match = _STEP_DIR.match(child.name)
        if match and (child / STATE_FILE).is_file():
            found.append((int(match.group(1)), child))
    return sorted(found)


def latest_checkpoint(output: Path) -> Path | None:
    """The most recent complete checkpoint under ``output``, or None."""
    found = list_checkpoints(output)
    return found[-1][1] if found else None


def rng_state() -> dict[str, Any]:
    """The torch generator states that training consumes (LoRA dropout)."""
    state: dict[str, Any] = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["cpu"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(
    output: Path,
    step: int,
    *,
    peft_model: Any,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    state: dict[str, Any],
    record: dict[str, Any],
    keep: int = 0,
) -> Path:
    """Write checkpoint ``step`` atomically and prune older ones.

    Args:
        output: The run's output directory.
        step: Optimizer steps completed.
        peft_model: The model whose adapter is saved.
        optimizer: The optimizer.
        scheduler: The learning-rate scheduler.
        state: JSON-serialisable trainer state (step, loss curve, ...).
        record: The training record to place beside the adapter.
        keep: How many checkpoints to keep (the newest); 0 keeps all.

    Returns:
        The checkpoint directory.
    """
    from vela_search.embedding.embedder import ADAPTER_RECORD

    root = checkpoints_dir(output)
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step-{step}"
    staging = Path(tempfile.mkdtemp(prefix=f".step-{step}-", dir=root))
    try:
        peft_model.save_pretrained(str(staging))
        (staging / "README.md").unlink(missing_ok=True)  # peft's generic model card
        torch.save(optimizer.state_dict(), staging / "optimizer.pt")
        torch.save(scheduler.state_dict(), staging / "scheduler.pt")
        torch.save(rng_state(), staging / "rng.pt")
        write_json(staging / ADAPTER_RECORD, record)
        # The state file goes last: its presence marks a complete checkpoint.
        write_json(staging / STATE_FILE, {**state, "step": step})
        if final.exists():
            shutil.rmtree(final)
        os.replace(staging, final)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    if keep > 0:
        for _, old in list_checkpoints(output)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    return final


def load_checkpoint(path: Path) -> Checkpoint:
    """Read a checkpoint directory written by :func:`save_checkpoint`.

    Raises:
        FileNotFoundError: A file of the checkpoint is missing.
        ValueError: The state file is not valid JSON.
    """
    from safetensors.torch import load_file

    path = Path(path)
    state_path = path / STATE_FILE
    if not state_path.is_file():
        raise FileNotFoundError(f"{path} is not a training checkpoint (no {STATE_FILE})")
    try:
        state = json.loads(state_path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{state_path} is not valid JSON: {exc}") from exc
    adapter = load_file(str(path / "adapter_model.safetensors"))
    # Optimizer/scheduler/RNG states are plain tensors and numbers: the safe loader suffices.
    optimizer = torch.load(path / "optimizer.pt", map_location="cpu", weights_only=True)
    scheduler = torch.load(path / "scheduler.pt", map_location="cpu", weights_only=True)
    rng = torch.load(path / "rng.pt", map_location="cpu", weights_only=True)
    return Checkpoint(
        path=path,
        step=int(state["step"]),
        state=state,
        adapter=adapter,
        optimizer=optimizer,
        scheduler=scheduler,
        rng=rng,
    )


def write_json(path: Path, payload: dict[str, Any]) -> None:
    """Write JSON atomically (temporary file + rename)."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(payload, indent=2, ensure_ascii=False) + "\n")
    os.replace(tmp, path)
