"""Settings of a training run (with their validation), its progress events and result, and its error."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vela_search.embedding.backbone import DEFAULT_MODEL
from vela_search.errors import VelaError
from vela_search.training.lora import LoraSettings

if TYPE_CHECKING:
    from vela_search.embedding.embedder import VelaEmbedder

QUANTIZE_CHOICES = ("auto", "4bit", "8bit", "none")
SCHEDULERS = ("linear", "cosine", "constant")


class TrainingError(VelaError):
    """Training cannot start or continue (bad settings, an output directory in the way, a bad checkpoint)."""


@dataclass
class TrainConfig:
    """Settings of one training run (the CLI flags of ``vela-search train``).

    Attributes:
        data: Triplet file (CSV ``sent0,sent1,hard_neg`` or JSONL ``anchor,positive,negative``).
        output: Directory for the adapter, the training record and ``checkpoints/``.
        model: Base model: Hub id, local checkpoint directory or ``tiny``.
        demos: Demonstrations to train behind: ``none`` (default: cheapest), ``default`` or a JSONL file.
            The adapter's record keeps it, so the adapter embeds behind the same demos by default.
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
        dtype: Base weight dtype: ``auto`` (bf16 on CUDA, fp32 on CPU), ``bf16``, ``fp16``, ``fp32``.
        quantize: ``auto`` (4-bit NF4 on CUDA, none on CPU), ``4bit``, ``8bit`` or ``none``.
        revision: Hub revision of the base model.
        epochs: Passes over the training rows (ignored when ``max_steps`` is set).
        max_steps: Optimizer steps to run in total (overrides ``epochs``).
        batch_size: Triplets per contrastive batch (each anchor is contrasted with the batch's positives
            and hard negatives).
        grad_accum: Batches accumulated per optimizer step (in-batch negatives stay within one batch).
        lr: Peak learning rate of AdamW.
        weight_decay: AdamW weight decay.
        temperature: InfoNCE temperature.
        seed: Seed of the LoRA init, the data order, dropout and the held-out split.
        warmup_steps: Linear warm-up steps (None: ``warmup_ratio`` of the total).
        warmup_ratio: Warm-up as a fraction of the total steps.
        scheduler: ``linear`` or ``cosine`` decay after warm-up, or ``constant``.
        max_grad_norm: Gradient clipping norm (None or 0: no clipping).
        eval_fraction: Share of rows held out for evaluation.
        max_eval: Held-out rows at most (evaluation cost bound).
        eval_every: Evaluate every N steps (0: only before and after training).
        save_every: Checkpoint every N steps (0: only at the end or on interruption).
        keep_checkpoints: Newest checkpoints kept (0: all).
        gradient_checkpointing: Recompute activations in backward (None: on for CUDA, off on CPU).
        lora: LoRA rank, alpha and dropout.
        max_text_tokens: Rows with a text longer than this many tokens are skipped (counted as too long).
        resume: False, True (latest checkpoint under ``output``) or a checkpoint directory.
        overwrite: Start afresh in an ``output`` that already holds a run (its checkpoints are deleted).
    """

    data: str | Path
    output: str | Path
    model: str = DEFAULT_MODEL
    demos: str = "none"
    device: str = "auto"
    dtype: str = "auto"
    quantize: str | None = "auto"
    revision: str | None = None
    epochs: int = 1
    max_steps: int | None = None
    batch_size: int = 64
    grad_accum: int = 1
    lr: float = 4e-4
    weight_decay: float = 0.0
    temperature: float = 0.05
    seed: int = 0
    warmup_steps: int | None = None
    warmup_ratio: float = 0.1
    scheduler: str = "linear"
    max_grad_norm: float | None = 1.0
    eval_fraction: float = 0.05
    max_eval: int | None = 1000
    eval_every: int = 500
    save_every: int = 500
    keep_checkpoints: int = 3
    gradient_checkpointing: bool | None = None
    lora: LoraSettings = field(default_factory=LoraSettings)
    max_text_tokens: int = 256
    resume: bool | str | Path = False
    overwrite: bool = False

    def validate(self) -> None:
        """Raise :class:`TrainingError` naming the first setting that is out of range."""
        checks = [
            (self.epochs >= 1, f"--epochs must be >= 1, got {self.epochs}"),
            (
                self.max_steps is None or self.max_steps >= 1,
                f"--max-steps must be >= 1, got {self.max_steps}",
            ),
            (self.batch_size >= 2, f"--batch-size must be >= 2 (a contrastive batch), got {self.batch_size}"),
            (self.grad_accum >= 1, f"--grad-accum must be >= 1, got {self.grad_accum}"),
            (self.lr > 0 and math.isfinite(self.lr), f"--lr must be > 0, got {self.lr}"),
            (self.weight_decay >= 0, f"weight decay must be >= 0, got {self.weight_decay}"),
            (self.temperature > 0, f"--temperature must be > 0, got {self.temperature}"),
            (
                self.warmup_steps is None or self.warmup_steps >= 0,
                f"--warmup-steps must be >= 0, got {self.warmup_steps}",
            ),
            (0 <= self.warmup_ratio < 1, f"--warmup-ratio must be in [0, 1), got {self.warmup_ratio}"),
            (
                self.scheduler in SCHEDULERS,
                f"--scheduler must be one of {', '.join(SCHEDULERS)}, got {self.scheduler!r}",
            ),
            (
                self.max_grad_norm is None or self.max_grad_norm >= 0,
                f"--max-grad-norm must be >= 0, got {self.max_grad_norm}",
            ),
            (
                0 <= self.eval_fraction <= 0.5,
                f"--eval-fraction must be between 0 and 0.5, got {self.eval_fraction}",
            ),
            (self.max_eval is None or self.max_eval >= 0, f"--max-eval must be >= 0, got {self.max_eval}"),
            (self.eval_every >= 0, f"--eval-every must be >= 0, got {self.eval_every}"),
            (self.save_every >= 0, f"--save-every must be >= 0, got {self.save_every}"),
            (self.keep_checkpoints >= 0, f"--keep-checkpoints must be >= 0, got {self.keep_checkpoints}"),
            (self.max_text_tokens >= 1, f"--max-text-tokens must be >= 1, got {self.max_text_tokens}"),
            (
                _normal_quantize(self.quantize) in QUANTIZE_CHOICES,
                f"--quantize must be one of {', '.join(QUANTIZE_CHOICES)}, got {self.quantize!r}",
            ),
            (not (self.resume and self.overwrite), "--resume and --overwrite exclude each other"),
        ]
        for ok, message in checks:
            if not ok:
                raise TrainingError(message)
        try:
            LoraSettings(self.lora.r, self.lora.alpha, self.lora.dropout)
        except ValueError as exc:
            raise TrainingError(str(exc)) from exc

    def hyperparameters(self) -> dict[str, Any]:
        """The settings that shape the optimisation (recorded, and compared on resume)."""
        return {
            "batch_size": self.batch_size,
            "grad_accum": self.grad_accum,
            "lr": self.lr,
            "weight_decay": self.weight_decay,
            "temperature": self.temperature,
            "seed": self.seed,
            "warmup_steps": self.warmup_steps,
            "warmup_ratio": self.warmup_ratio,
            "scheduler": self.scheduler,
            "max_grad_norm": self.max_grad_norm,
            "eval_fraction": self.eval_fraction,
            "max_eval": self.max_eval,
            "max_text_tokens": self.max_text_tokens,
            "lora": self.lora.to_dict(),
        }


@dataclass(frozen=True)
class TrainEvent:
    """A progress report from :func:`train`.

    ``kind`` is ``start`` (``total_steps`` known; ``message`` describes the run), ``step`` (after each
    optimizer step: ``loss``, ``lr``), ``eval`` (``metrics``), ``checkpoint`` (``path``), ``notice``
    (``message``: something the user should know) or ``done``.
    """

    kind: str
    step: int
    total_steps: int
    loss: float | None = None
    lr: float | None = None
    metrics: dict[str, Any] | None = None
    path: Path | None = None
    message: str | None = None


ProgressCallback = Callable[[TrainEvent], None]


@dataclass
class TrainResult:
    """What a run did.

    Attributes:
        output: The output directory (holds the adapter when the run completed).
        steps: Optimizer steps completed (including those before a resume).
        total_steps: Steps the run was set to do.
        epochs: Passes over the training rows completed (fractional).
        final_loss: Mean training loss of the last steps (up to 10), or None before any step.
        loss_curve: Training loss of every step, step 1 first.
        eval_before: Held-out metrics of the untrained adapter (None without held-out rows).
        eval_after: Held-out metrics after training (None when interrupted or without held-out rows).
        eval_history: Every evaluation, ``{"step", "triplet_accuracy", "recall_at_1", "pairs"}``.
        wall_time_s: Seconds spent (summed over resumed parts).
        device: Where it ran.
        quantization: ``4bit``, ``8bit`` or None.
        train_rows: Training triplets used.
        eval_rows: Held-out triplets used.
        skipped: Rows skipped as malformed or too long.
        skipped_reasons: Skipped rows per reason.
        interrupted: The run stopped early (Ctrl-C); ``checkpoint`` holds its state.
        checkpoint: The last checkpoint written, if any.
        resumed_from: The checkpoint the run continued from, if any.
        notices: Things the user should know (CPU training, tiny model, ...).
        model_notice: The embedder's own warning (random-weight model), also among ``notices``.
        record: The training record (also in ``output/vela_training.json`` when complete).
        embedder: The trained embedder, ready to embed (LoRA frozen); None when interrupted.
    """

    output: Path
    steps: int
    total_steps: int
    epochs: float
    final_loss: float | None
    loss_curve: list[float]
    eval_before: dict[str, Any] | None
    eval_after: dict[str, Any] | None
    eval_history: list[dict[str, Any]]
    wall_time_s: float
    device: str
    quantization: str | None
    train_rows: int
    eval_rows: int
    skipped: int
    skipped_reasons: dict[str, int]
    interrupted: bool
    checkpoint: Path | None
    resumed_from: Path | None
    notices: list[str]
    model_notice: str | None
    record: dict[str, Any]
    embedder: VelaEmbedder | None = field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable summary (without the record and the embedder)."""
        out = {k: v for k, v in asdict(self).items() if k not in ("embedder", "record")}
        for key in ("output", "checkpoint", "resumed_from"):
            out[key] = None if out[key] is None else str(out[key])
        return out


def _normal_quantize(value: str | None) -> str:
    return "none" if value in (None, "none", "") else str(value)


def resolve_quantize(value: str | None, device: Any) -> str | None:
    """``auto`` -> 4-bit NF4 on CUDA, none on the CPU; ``none`` -> None."""
    choice = _normal_quantize(value)
    if choice == "auto":
        return "4bit" if device.type == "cuda" else None
    return None if choice == "none" else choice
