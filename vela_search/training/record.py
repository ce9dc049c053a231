"""The training record, the adapter written into the output directory, and the checks that guard a resume."""

from __future__ import annotations

import shutil
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vela_search.training.config import TrainConfig, TrainingError, TrainResult

if TYPE_CHECKING:
    from vela_search.embedding.embedder import VelaEmbedder
    from vela_search.training.data import Triplet, TripletData
    from vela_search.training.state import RunState

RECORD_FORMAT = 1
# Steps over which the reported final loss is averaged (single-step losses are noisy).
FINAL_LOSS_WINDOW = 10
# The peft adapter files written into the output directory.
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")


def prepare_output(output: Path, config: TrainConfig) -> Path | None:
    """Check the output directory against resume/overwrite; returns the checkpoint to resume from."""
    from vela_search.training.checkpoint import checkpoints_dir, latest_checkpoint

    if output.exists() and not output.is_dir():
        raise TrainingError(f"--output {output} exists and is not a directory")
    if config.resume:
        if config.resume is True:
            found = latest_checkpoint(output)
            if found is None:
                raise TrainingError(f"nothing to resume: no checkpoint under {checkpoints_dir(output)}")
            return found
        path = Path(config.resume).expanduser()
        if not (path / "trainer_state.json").is_file():
            raise TrainingError(f"--resume {path} is not a training checkpoint (no trainer_state.json)")
        return path
    from vela_search.embedding.embedder import ADAPTER_RECORD

    existing = [name for name in (*ADAPTER_FILES, ADAPTER_RECORD, "checkpoints") if (output / name).exists()]
    if existing:
        if not config.overwrite:
            raise TrainingError(
                f"{output} already holds a training run ({', '.join(existing)}); "
                "pass --resume to continue it, "
                "--overwrite to start again, or choose another --output"
            )
        shutil.rmtree(checkpoints_dir(output), ignore_errors=True)
        for name in (*ADAPTER_FILES, ADAPTER_RECORD):
            (output / name).unlink(missing_ok=True)
    return None


def _model_spec(model: str) -> str:
    """The base model as the record names it: ``tiny``, a Hub id, or an absolute local directory."""
    path = Path(model).expanduser()
    return str(path.resolve()) if model != "tiny" and path.is_dir() else model


def _demos_spec(demos: str) -> str:
    if demos in ("none", "default"):
        return demos
    return str(Path(demos).expanduser().resolve())


def run_identity(config: TrainConfig, embedder: VelaEmbedder, data: TripletData) -> dict[str, Any]:
    """What must not change between a checkpoint and the run that resumes it."""
    return {
        "base_model": _model_spec(config.model),
        "base_weights": embedder.fingerprint.weights,
        "demos": embedder.fingerprint.demos,
        "quantization": embedder.backbone.quantization,
        "data_digest": data.digest,
        "hyperparameters": config.hyperparameters(),
    }


def check_resumable(saved: dict[str, Any], identity: dict[str, Any], path: Path) -> None:
    """Refuse to resume from checkpoint ``path`` when its run's identity differs from this run's.

    Raises:
        TrainingError: naming every setting that differs.
    """
    before = saved.get("run", {})
    diffs = []
    for key, value in identity.items():
        if key == "hyperparameters":
            for name, now in value.items():
                then = before.get(key, {}).get(name)
                if then != now:
                    diffs.append(f"{name}: checkpoint {then!r}, now {now!r}")
        elif before.get(key) != value:
            diffs.append(f"{key}: checkpoint {_short(before.get(key))}, now {_short(value)}")
    if diffs:
        raise TrainingError(
            f"cannot resume from {path}: the settings differ ({'; '.join(diffs)}); "
            "use the checkpoint's settings "
            "or start a new run with --overwrite"
        )


def _short(value: Any) -> str:
    text = repr(value)
    return text[:20] + "…'" if len(text) > 24 else text


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in ("vela-search", "torch", "transformers", "peft", "bitsandbytes", "accelerate"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            continue
    return out


def device_name(embedder: VelaEmbedder) -> str:
    """The embedder's device as the record names it (a CUDA device with its GPU's name)."""
    import torch

    device = embedder.backbone.device
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return str(device)


def training_record(
    config: TrainConfig,
    embedder: VelaEmbedder,
    base_fingerprint: Any,
    data: TripletData,
    state: RunState,
    identity: dict[str, Any],
    train_rows: list[Triplet],
    eval_rows: list[Triplet],
    skipped_reasons: dict[str, int],
    warmup: int,
    gradient_checkpointing: bool,
    started: float,
    complete: bool,
    *,
    trainable: int,
) -> dict[str, Any]:
    """The ``vela_training.json`` record: what ``VelaEmbedder.from_pretrained(adapter=...)`` reads back
    (``base_model``, ``demos``, ``prompt_version``) and how the adapter was made."""
    from vela_search.embedding import prompts

    return {
        "format": RECORD_FORMAT,
        "complete": complete,
        "base_model": identity["base_model"],
        "revision": config.revision,
        "demos": _demos_spec(config.demos),
        "prompt_version": prompts.PROMPT_VERSION,
        "base_fingerprint": base_fingerprint.to_dict(),
        "quantization": embedder.backbone.quantization,
        "dtype": str(embedder.backbone.dtype).replace("torch.", ""),
        "device": device_name(embedder),
        "data": {
            "path": str(Path(data.source).expanduser().resolve()),
            "digest": data.digest,
            "train_rows": len(train_rows),
            "eval_rows": len(eval_rows),
            "skipped": sum(skipped_reasons.values()),
            "skipped_reasons": skipped_reasons,
        },
        "hyperparameters": {
            **config.hyperparameters(),
            "warmup_steps_resolved": warmup,
            "epochs": config.epochs,
            "max_steps": config.max_steps,
            "gradient_checkpointing": gradient_checkpointing,
        },
        "trainable_parameters": trainable,
        "steps": state.step,
        "total_steps": state.total_steps,
        "epochs": state.step / state.steps_per_epoch,
        "final_loss": final_loss(state.loss_curve),
        "loss_curve": state.loss_curve,
        "eval": {"before": state.eval_before, "after": state.eval_after, "history": state.eval_history},
        "wall_time_s": state.wall_before + time.monotonic() - started,
        "versions": _versions(),
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def final_loss(curve: list[float]) -> float | None:
    """The loss reported as final: the mean of the last FINAL_LOSS_WINDOW steps (None before any)."""
    tail = curve[-FINAL_LOSS_WINDOW:]
    return sum(tail) / len(tail) if tail else None


def write_adapter(output: Path, peft_model: Any, record: dict[str, Any]) -> None:
    """Adapter files and record into ``output``, each replaced by a rename (nothing else is touched)."""
    import os
    import tempfile

    from vela_search.embedding.embedder import ADAPTER_RECORD
    from vela_search.training.checkpoint import write_json

    output.mkdir(parents=True, exist_ok=True)
    # Saved aside first: peft also writes (or edits an existing) README.md model card, which does not belong
    # in a directory the user may keep other files in.
    staging = Path(tempfile.mkdtemp(prefix=".adapter-", dir=output))
    try:
        peft_model.save_pretrained(str(staging))
        for name in ADAPTER_FILES:
            os.replace(staging / name, output / name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    write_json(output / ADAPTER_RECORD, record)


def finish_embedder(embedder: VelaEmbedder, peft_model: Any, output: Path) -> None:
    """Leave the trained embedder ready for inference, identified like the saved adapter reloaded."""
    from vela_search.embedding.backbone import adapter_digest
    from vela_search.training.lora import freeze_lora

    freeze_lora(peft_model)
    peft_model.eval()
    embedder.backbone.adapter_path = output.resolve()
    embedder.backbone.adapter_digest = adapter_digest(output)
    embedder.refresh_prefix()


def train_result(
    output: Path,
    state: RunState,
    train_rows: list[Triplet],
    eval_rows: list[Triplet],
    skipped_reasons: dict[str, int],
    embedder: VelaEmbedder,
    started: float,
    notices: list[str],
    record: dict[str, Any],
    resumed: Any,
    last_checkpoint: Path | None,
    quantize: str | None,
    *,
    interrupted: bool,
) -> TrainResult:
    """What :func:`~vela_search.training.trainer.train` returns, from the run's state and record."""
    return TrainResult(
        output=output,
        steps=state.step,
        total_steps=state.total_steps,
        epochs=state.step / state.steps_per_epoch,
        final_loss=final_loss(state.loss_curve),
        loss_curve=list(state.loss_curve),
        eval_before=state.eval_before,
        eval_after=state.eval_after,
        eval_history=list(state.eval_history),
        wall_time_s=state.wall_before + time.monotonic() - started,
        device=device_name(embedder),
        quantization=quantize,
        train_rows=len(train_rows),
        eval_rows=len(eval_rows),
        skipped=sum(skipped_reasons.values()),
        skipped_reasons=skipped_reasons,
        interrupted=interrupted,
        checkpoint=last_checkpoint,
        resumed_from=resumed.path if resumed is not None else None,
        notices=notices,
        model_notice=embedder.notice,
        record=record,
        embedder=None if interrupted else embedder,
    )
