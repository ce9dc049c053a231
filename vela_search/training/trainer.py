"""Text-only contrastive training of the LLM's LoRA adapter (QLoRA on CUDA).

The embedder itself is trained: LoRA layers are put on its language model in place, and every training
text is embedded with :meth:`VelaEmbedder.encode` in caption mode, i.e. with exactly the inference prompt
and, when demos are used, behind the same demonstration prefix. Each step embeds a batch of
(anchor, positive, hard negative) triplets and minimises SimCSE's InfoNCE over in-batch positives and hard
negatives.

The prefix (system turn plus demos) is computed once per step from the current weights and gets no
gradient: only the item tokens carry gradient into the LoRA weights, as the prefix's keys/values are a
shared constant at inference too. With ``demos="none"`` the prefix is just the system turn.

bitsandbytes pitfall: a 4-bit model that ever ran a forward in which nothing required grad (under
``torch.no_grad()``, or with every weight frozen) fails in training afterwards ("a view of a leaf Variable
that requires grad is being used in an in-place operation"). The training instance therefore sets
``avoid_no_grad`` before its first forward and runs inference (evaluation, the prefix) under
``torch.enable_grad()``, detaching the results; on a quantized model that builds a graph, so evaluation
goes in small chunks, while an unquantized model freezes its LoRA weights for it and builds none.

Example:
    >>> from vela_search.training.trainer import TrainConfig, train
    >>> result = train(TrainConfig(data="data/nli/triplets.csv", output="adapters/smoke", model="tiny",
    ...                            max_steps=50, batch_size=8))
    >>> result.eval_after["triplet_accuracy"]  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import math
import random
import shutil
import signal
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vela_search.embedding.backbone import DEFAULT_MODEL
from vela_search.errors import TrainingDataError, VelaError
from vela_search.training.lora import LoraSettings

if TYPE_CHECKING:
    import torch

    from vela_search.embedding.embedder import VelaEmbedder
    from vela_search.training.data import Triplet, TripletData

RECORD_FORMAT = 1
QUANTIZE_CHOICES = ("auto", "4bit", "8bit", "none")
SCHEDULERS = ("linear", "cosine", "constant")
# Skip reason for texts longer than `max_text_tokens` (joins the data reader's reasons in the report).
TOO_LONG = "too_long"
# Texts per evaluation forward on a quantized model, where evaluation has to build a graph (see _Loop).
QUANTIZED_EVAL_CHUNK = 16
# Steps over which the reported final loss is averaged (single-step losses are noisy).
FINAL_LOSS_WINDOW = 10
# The peft adapter files written into the output directory.
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")


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


# ---------------------------------------------------------------------------------------------- train
def train(config: TrainConfig, *, progress: ProgressCallback | None = None) -> TrainResult:
    """Train a LoRA adapter on triplets and write it, with its training record, to ``config.output``.

    A first Ctrl-C (SIGINT) finishes the current step, saves a checkpoint and returns with
    ``interrupted=True``; ``resume=True`` then continues from it (same step count, loss curve, learning
    rate and data order).

    Args:
        config: The run's settings.
        progress: Called with a :class:`TrainEvent` at start, after every step, evaluation and checkpoint.

    Returns:
        The run's result.

    Raises:
        TrainingDataError: The data file is unreadable or has no valid row.
        TrainingError: Bad settings, an existing run in ``output`` without ``resume``/``overwrite``, a
            checkpoint that does not match the settings, or a loss that became NaN.
        ModelLoadError: The model cannot be loaded.
    """
    import torch

    from vela_search.embedding.backbone import resolve_device
    from vela_search.embedding.embedder import VelaEmbedder
    from vela_search.training.checkpoint import load_checkpoint, restore_rng
    from vela_search.training.data import load_triplet_data

    config.validate()
    emit = progress or (lambda event: None)
    started = time.monotonic()
    output = Path(config.output).expanduser()
    resume_path = _prepare_output(output, config)

    data = load_triplet_data(
        config.data, eval_fraction=config.eval_fraction, seed=config.seed, max_eval=config.max_eval
    )
    checkpoint = load_checkpoint(resume_path) if resume_path is not None else None

    device = resolve_device(config.device)
    quantize = _resolve_quantize(config.quantize, device)
    gradient_checkpointing = (
        config.gradient_checkpointing if config.gradient_checkpointing is not None else device.type == "cuda"
    )
    notices: list[str] = []
    if device.type == "cpu":
        precision = (
            f"{quantize} base weights"
            if quantize
            else f"{config.dtype if config.dtype != 'auto' else 'fp32'} base weights"
        )
        notices.append(
            f"training on the CPU ({precision}, fp32 LoRA): fine for the tiny model, far too slow for the 7B "
            "model; use a CUDA GPU (4-bit QLoRA by default)"
        )

    embedder = VelaEmbedder.from_pretrained(
        config.model,
        demos=config.demos,
        device=str(device),
        dtype=config.dtype,
        quantize=quantize,
        revision=config.revision,
        # One forward per contrastive batch: smaller sub-batches save no memory here (every graph is kept
        # until backward) and multiply kernel launches, which dominated a 7B step at the default of 32.
        max_batch_items=3 * config.batch_size,
    )
    # Before any forward: a 4-bit instance that ran under no_grad cannot train (bitsandbytes).
    embedder.avoid_no_grad = True
    if embedder.notice:
        notices.append(embedder.notice)
    base_fingerprint = embedder.fingerprint

    train_rows, eval_rows, too_long = _drop_long_rows(embedder, data, config.max_text_tokens)
    skipped_reasons = dict(data.skipped_reasons)
    if too_long:
        skipped_reasons[TOO_LONG] = too_long
    if not train_rows:
        raise TrainingDataError(
            f"no training triplets left in {data.source} after skipping {too_long} row(s) with a text over "
            f"{config.max_text_tokens} tokens; raise --max-text-tokens"
        )
    per_step = config.batch_size * config.grad_accum
    steps_per_epoch = len(train_rows) // per_step
    if steps_per_epoch == 0:
        raise TrainingError(
            f"{len(train_rows)} training triplets are fewer than one step needs "
            f"(batch size {config.batch_size} "
            f"x grad accum {config.grad_accum} = {per_step}); lower --batch-size or --grad-accum"
        )
    total_steps = config.max_steps or config.epochs * steps_per_epoch
    warmup = (
        config.warmup_steps
        if config.warmup_steps is not None
        else math.ceil(config.warmup_ratio * total_steps)
    )

    run_identity = _run_identity(config, embedder, data)
    if checkpoint is not None:
        _check_resumable(checkpoint.state, run_identity, checkpoint.path)
        if checkpoint.step >= total_steps:
            raise TrainingError(
                f"the run in {output} already did {checkpoint.step} of {total_steps} steps; "
                "raise --max-steps or "
                "--epochs to train further"
            )
        previous_total = checkpoint.state.get("total_steps")
        if previous_total != total_steps:
            notices.append(
                f"the learning-rate schedule now spans {total_steps} steps "
                f"(the checkpoint's run planned {previous_total})"
            )

    for message in notices:
        emit(TrainEvent("notice", 0, total_steps, message=message))

    torch.manual_seed(config.seed)
    from vela_search.training.lora import attach_lora, load_lora_state, trainable_parameters

    peft_model = attach_lora(embedder, config.lora, gradient_checkpointing=gradient_checkpointing)
    params = [p for _, p in trainable_parameters(peft_model)]
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    scheduler = _make_scheduler(config.scheduler, optimizer, warmup, total_steps)

    state = _RunState(total_steps=total_steps, steps_per_epoch=steps_per_epoch)
    if checkpoint is not None:
        try:
            load_lora_state(peft_model, checkpoint.adapter)
            optimizer.load_state_dict(checkpoint.optimizer)
            scheduler.load_state_dict(checkpoint.scheduler)
        except (ValueError, KeyError, RuntimeError) as exc:
            raise TrainingError(f"checkpoint {checkpoint.path} does not fit this model: {exc}") from exc
        state.restore(checkpoint.state)

    def record(complete: bool) -> dict[str, Any]:
        return _training_record(
            config,
            embedder,
            base_fingerprint,
            data,
            state,
            run_identity,
            train_rows,
            eval_rows,
            skipped_reasons,
            warmup,
            gradient_checkpointing,
            started,
            complete,
            trainable=sum(p.numel() for p in params),
        )

    emit(
        TrainEvent(
            "start",
            state.step,
            total_steps,
            message=(
                f"{len(train_rows)} training / {len(eval_rows)} held-out triplets, "
                f"{steps_per_epoch} steps per "
                f"epoch, {sum(p.numel() for p in params):,} LoRA parameters on {device}"
                + (f", {quantize}" if quantize else "")
            ),
        )
    )

    trainer = _Loop(embedder, peft_model, optimizer, scheduler, params, config, train_rows, state)
    trainer.refresh_prefix()
    if checkpoint is None and eval_rows:
        state.eval_before = {"step": 0, **trainer.evaluate(eval_rows)}
        state.eval_history.append(state.eval_before)
        emit(TrainEvent("eval", 0, total_steps, metrics=state.eval_before))
    if checkpoint is not None:
        # Last, right before the next step: LoRA dropout continues exactly where the run stopped.
        restore_rng(checkpoint.rng)

    last_checkpoint: Path | None = None

    def result(run_record: dict[str, Any], *, interrupted: bool) -> TrainResult:
        return _result(
            output,
            state,
            train_rows,
            eval_rows,
            skipped_reasons,
            embedder,
            started,
            notices,
            run_record,
            checkpoint,
            last_checkpoint,
            quantize,
            interrupted=interrupted,
        )

    def save(step: int) -> Path:
        nonlocal last_checkpoint
        from vela_search.training.checkpoint import save_checkpoint

        last_checkpoint = save_checkpoint(
            output,
            step,
            peft_model=peft_model,
            optimizer=optimizer,
            scheduler=scheduler,
            state=state.to_json(run_identity, wall_time_s=state.wall_before + time.monotonic() - started),
            record=record(complete=False),
            keep=config.keep_checkpoints,
        )
        emit(TrainEvent("checkpoint", step, total_steps, path=last_checkpoint))
        return last_checkpoint

    interrupted = False
    unsafe_stop = False
    stop = _StopRequest()
    with _graceful_sigint(stop):
        try:
            while state.step < total_steps:
                if stop.requested:
                    interrupted = True
                    break
                loss = trainer.step()
                emit(TrainEvent("step", state.step, total_steps, loss=loss, lr=state.lr_curve[-1]))
                if state.step < total_steps:
                    if eval_rows and config.eval_every and state.step % config.eval_every == 0:
                        metrics = {"step": state.step, **trainer.evaluate(eval_rows)}
                        state.eval_history.append(metrics)
                        emit(TrainEvent("eval", state.step, total_steps, metrics=metrics))
                    if config.save_every and state.step % config.save_every == 0:
                        save(state.step)
        except KeyboardInterrupt:
            interrupted = True
            unsafe_stop = trainer.updating

    if interrupted:
        if unsafe_stop:
            notices.append(
                "interrupted during a weight update: no checkpoint written for this step"
                + (f"; the last one is {last_checkpoint}" if last_checkpoint else "")
            )
        elif last_checkpoint is None or last_checkpoint.name != f"step-{state.step}":
            save(state.step)
        emit(
            TrainEvent(
                "notice",
                state.step,
                total_steps,
                message=f"interrupted after step {state.step} of {total_steps}; continue with --resume",
            )
        )
        return result(record(complete=False), interrupted=True)

    if eval_rows:
        state.eval_after = {"step": state.step, **trainer.evaluate(eval_rows)}
        if not state.eval_history or state.eval_history[-1]["step"] != state.step:
            state.eval_history.append(state.eval_after)
        emit(TrainEvent("eval", state.step, total_steps, metrics=state.eval_after))
    save(state.step)
    final_record = record(complete=True)
    _write_adapter(output, peft_model, final_record)
    _finish_embedder(embedder, peft_model, output)
    emit(TrainEvent("done", state.step, total_steps, path=output))
    return result(final_record, interrupted=False)


def evaluate(embedder: VelaEmbedder, triplets: Sequence[Triplet], *, chunk: int = 192) -> dict[str, Any]:
    """Held-out metrics of an embedder on triplets (caption mode, as in training).

    Args:
        embedder: The embedder (in training: with its current weights).
        triplets: Held-out rows.
        chunk: Texts embedded per call (bounds memory when the forward builds a graph).

    Returns:
        ``{"triplet_accuracy", "recall_at_1", "pairs"}``: how often the anchor is closer to its positive
        than to its hard negative, and text-to-text R@1 of anchors against all held-out positives.
    """
    from vela_search.training.loss import recall_at_1, triplet_accuracy

    if not triplets:
        raise ValueError("evaluation needs at least one triplet")
    vectors = _embed_detached(
        embedder,
        [t.anchor for t in triplets] + [t.positive for t in triplets] + [t.negative for t in triplets],
        chunk=max(1, chunk),
    )
    n = len(triplets)
    a, p, neg = vectors[:n], vectors[n : 2 * n], vectors[2 * n :]
    return {"triplet_accuracy": triplet_accuracy(a, p, neg), "recall_at_1": recall_at_1(a, p), "pairs": n}


# --------------------------------------------------------------------------------------------- the loop
@dataclass
class _RunState:
    """What advances with each step and goes into checkpoints."""

    total_steps: int
    steps_per_epoch: int
    step: int = 0
    loss_curve: list[float] = field(default_factory=list)
    lr_curve: list[float] = field(default_factory=list)
    eval_before: dict[str, Any] | None = None
    eval_after: dict[str, Any] | None = None
    eval_history: list[dict[str, Any]] = field(default_factory=list)
    wall_before: float = 0.0

    def restore(self, saved: dict[str, Any]) -> None:
        self.step = int(saved["step"])
        self.loss_curve = list(saved["loss_curve"])
        self.lr_curve = list(saved.get("lr_curve", []))
        self.eval_before = saved.get("eval_before")
        self.eval_history = list(saved.get("eval_history", []))
        self.wall_before = float(saved.get("wall_time_s", 0.0))

    def to_json(self, identity: dict[str, Any], *, wall_time_s: float) -> dict[str, Any]:
        return {
            "step": self.step,
            "total_steps": self.total_steps,
            "steps_per_epoch": self.steps_per_epoch,
            "loss_curve": self.loss_curve,
            "lr_curve": self.lr_curve,
            "eval_before": self.eval_before,
            "eval_history": self.eval_history,
            "wall_time_s": wall_time_s,
            "run": identity,
        }


class _Loop:
    """One optimizer step at a time over a seeded, step-addressable data order."""

    def __init__(
        self,
        embedder: VelaEmbedder,
        peft_model: Any,
        optimizer: Any,
        scheduler: Any,
        params: list[Any],
        config: TrainConfig,
        rows: list[Triplet],
        state: _RunState,
    ) -> None:
        self.embedder = embedder
        self.model = peft_model
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.params = params
        self.config = config
        self.rows = rows
        self.state = state
        self.updating = False
        self._order_epoch = -1
        self._order: list[int] = []

    def batch(self, step: int, micro: int) -> list[Triplet]:
        """The triplets of micro-batch ``micro`` of (0-based) step ``step``: a function of seed and step."""
        epoch, within = divmod(step, self.state.steps_per_epoch)
        if epoch != self._order_epoch:
            self._order = list(range(len(self.rows)))
            random.Random(f"vela-train:{self.config.seed}:{epoch}").shuffle(self._order)
            self._order_epoch = epoch
        size = self.config.batch_size
        start = (within * self.config.grad_accum + micro) * size
        return [self.rows[i] for i in self._order[start : start + size]]

    def step(self) -> float:
        """Run one optimizer step; returns its loss (mean over the accumulated batches)."""
        import torch

        from vela_search.embedding.embedder import EmbedItem
        from vela_search.training.loss import info_nce_loss

        self._train_mode(True)
        accum = self.config.grad_accum
        total = 0.0
        for micro in range(accum):
            rows = self.batch(self.state.step, micro)
            texts = [t.anchor for t in rows] + [t.positive for t in rows] + [t.negative for t in rows]
            with torch.enable_grad():
                vectors = self.embedder.encode([EmbedItem("caption", text=t) for t in texts], grad=True)
                n = len(rows)
                loss = info_nce_loss(
                    vectors[:n], vectors[n : 2 * n], vectors[2 * n :], temperature=self.config.temperature
                )
                (loss / accum).backward()
            total += float(loss.detach())
        mean_loss = total / accum
        if not math.isfinite(mean_loss):
            raise TrainingError(
                f"the training loss became {mean_loss} at step {self.state.step + 1}; "
                "lower --lr or raise --temperature"
            )
        self.updating = True
        if self.config.max_grad_norm:
            torch.nn.utils.clip_grad_norm_(self.params, self.config.max_grad_norm)
        lr = self.scheduler.get_last_lr()[0]
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.state.step += 1
        self.state.loss_curve.append(mean_loss)
        self.state.lr_curve.append(lr)
        self.updating = False
        self.refresh_prefix()
        return mean_loss

    def refresh_prefix(self) -> None:
        """Recompute the shared prefix's keys/values from the current weights, as inference would.

        Done in eval mode (no LoRA dropout).
        """
        with self._inference():
            self.embedder.refresh_prefix(now=True)

    def evaluate(self, rows: list[Triplet]) -> dict[str, Any]:
        """Held-out metrics with the current weights."""
        quantized = self.embedder.backbone.quantization is not None
        chunk = QUANTIZED_EVAL_CHUNK if quantized else 3 * self.config.batch_size
        with self._inference():
            return evaluate(self.embedder, rows, chunk=chunk)

    @contextlib.contextmanager
    def _inference(self) -> Iterator[None]:
        """Eval mode; LoRA frozen so that forwards build no graph, except on a quantized model.

        A bitsandbytes 4-bit model breaks in training once it ran a forward in which nothing required grad
        (under ``no_grad`` or with every weight frozen alike), so there the graph is built and dropped, in
        small chunks.
        """
        from vela_search.training.lora import lora_frozen

        self._train_mode(False)
        if self.embedder.backbone.quantization is None:
            with lora_frozen(self.params):
                yield
        else:
            yield

    def _train_mode(self, on: bool) -> None:
        if on:
            self.model.train()
            # Frozen and unused by text training; eval mode keeps them deterministic if ever run.
            core = self.embedder.backbone.core
            core.audio_tower.eval()
            core.multi_modal_projector.eval()
        else:
            self.model.eval()


def _embed_detached(embedder: VelaEmbedder, texts: list[str], *, chunk: int) -> torch.Tensor:
    """Caption embeddings without a graph, computed under enable_grad (never no_grad: see module doc)."""
    import torch

    from vela_search.embedding.embedder import EmbedItem

    items = [EmbedItem("caption", text=t) for t in texts]
    parts = []
    with torch.enable_grad():
        for start in range(0, len(items), chunk):
            parts.append(embedder.encode(items[start : start + chunk], grad=True).detach())
    return torch.cat(parts)


# ------------------------------------------------------------------------------------------- helpers
def _normal_quantize(value: str | None) -> str:
    return "none" if value in (None, "none", "") else str(value)


def _resolve_quantize(value: str | None, device: Any) -> str | None:
    """``auto`` -> 4-bit NF4 on CUDA, none on the CPU; ``none`` -> None."""
    choice = _normal_quantize(value)
    if choice == "auto":
        return "4bit" if device.type == "cuda" else None
    return None if choice == "none" else choice


def _prepare_output(output: Path, config: TrainConfig) -> Path | None:
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


def _drop_long_rows(
    embedder: VelaEmbedder, data: TripletData, limit: int
) -> tuple[list[Triplet], list[Triplet], int]:
    """Training and held-out rows without those holding a text over ``limit`` tokens; and how many went."""
    tokenizer = embedder.backbone.processor.tokenizer

    def keep(rows: list[Triplet]) -> list[Triplet]:
        kept: list[Triplet] = []
        chunk = 4096
        for start in range(0, len(rows), chunk):
            part = rows[start : start + chunk]
            texts = [text for t in part for text in (t.anchor, t.positive, t.negative)]
            lengths = [len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]
            for i, row in enumerate(part):
                if max(lengths[3 * i : 3 * i + 3]) <= limit:
                    kept.append(row)
        return kept

    train_rows, eval_rows = keep(data.train), keep(data.eval)
    dropped = len(data.train) - len(train_rows) + len(data.eval) - len(eval_rows)
    return train_rows, eval_rows, dropped


def _make_scheduler(name: str, optimizer: Any, warmup: int, total: int) -> Any:
    from transformers import get_scheduler

    schedule = "constant_with_warmup" if name == "constant" else name
    return get_scheduler(schedule, optimizer, num_warmup_steps=min(warmup, total), num_training_steps=total)


def _model_spec(model: str) -> str:
    """The base model as the record names it: ``tiny``, a Hub id, or an absolute local directory."""
    path = Path(model).expanduser()
    return str(path.resolve()) if model != "tiny" and path.is_dir() else model


def _demos_spec(demos: str) -> str:
    if demos in ("none", "default"):
        return demos
    return str(Path(demos).expanduser().resolve())


def _run_identity(config: TrainConfig, embedder: VelaEmbedder, data: TripletData) -> dict[str, Any]:
    """What must not change between a checkpoint and the run that resumes it."""
    return {
        "base_model": _model_spec(config.model),
        "base_weights": embedder.fingerprint.weights,
        "demos": embedder.fingerprint.demos,
        "quantization": embedder.backbone.quantization,
        "data_digest": data.digest,
        "hyperparameters": config.hyperparameters(),
    }


def _check_resumable(saved: dict[str, Any], identity: dict[str, Any], path: Path) -> None:
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


def _device_name(embedder: VelaEmbedder) -> str:
    import torch

    device = embedder.backbone.device
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return str(device)


def _training_record(
    config: TrainConfig,
    embedder: VelaEmbedder,
    base_fingerprint: Any,
    data: TripletData,
    state: _RunState,
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
        "device": _device_name(embedder),
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
        "final_loss": _final_loss(state.loss_curve),
        "loss_curve": state.loss_curve,
        "eval": {"before": state.eval_before, "after": state.eval_after, "history": state.eval_history},
        "wall_time_s": state.wall_before + time.monotonic() - started,
        "versions": _versions(),
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def _final_loss(curve: list[float]) -> float | None:
    tail = curve[-FINAL_LOSS_WINDOW:]
    return sum(tail) / len(tail) if tail else None


def _write_adapter(output: Path, peft_model: Any, record: dict[str, Any]) -> None:
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


def _finish_embedder(embedder: VelaEmbedder, peft_model: Any, output: Path) -> None:
    """Leave the trained embedder ready for inference, identified like the saved adapter reloaded."""
    from vela_search.embedding.backbone import adapter_digest
    from vela_search.training.lora import freeze_lora

    freeze_lora(peft_model)
    peft_model.eval()
    embedder.backbone.adapter_path = output.resolve()
    embedder.backbone.adapter_digest = adapter_digest(output)
    embedder.refresh_prefix()


def _result(
    output: Path,
    state: _RunState,
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
    return TrainResult(
        output=output,
        steps=state.step,
        total_steps=state.total_steps,
        epochs=state.step / state.steps_per_epoch,
        final_loss=_final_loss(state.loss_curve),
        loss_curve=list(state.loss_curve),
        eval_before=state.eval_before,
        eval_after=state.eval_after,
        eval_history=list(state.eval_history),
        wall_time_s=state.wall_before + time.monotonic() - started,
        device=_device_name(embedder),
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


class _StopRequest:
    requested = False


@contextlib.contextmanager
def _graceful_sigint(stop: _StopRequest) -> Iterator[None]:
    """First Ctrl-C: finish the current step, then stop; a second one interrupts at once."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGINT)

    def handler(signum: int, frame: Any) -> None:
        if stop.requested:
            raise KeyboardInterrupt
        stop.requested = True

    signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
