"""Text-only contrastive training of the LLM's LoRA adapter (QLoRA on CUDA).

The embedder itself is trained: LoRA layers are put on its language model in place, and every training
text is embedded with :meth:`VelaEmbedder.encode` in caption mode, i.e. with exactly the inference prompt
and, when demos are used, behind the same demonstration prefix. Each step embeds a batch of
(anchor, positive, hard negative) triplets and minimises SimCSE's InfoNCE over in-batch positives and hard
negatives.

The prefix (system turn plus demos) is computed once per contrastive batch, with autograd, from the
current weights, and every text's attention backpropagates into its keys/values: LoRA changes the k/v
projections that produce them, so the gradient equals that of a plain forward of prefix + text for every
text (tests/training/test_prefix_gradient.py), at the cost of one prefix forward per batch, not one per
text. With ``demos="none"`` the prefix is just the system turn.

bitsandbytes pitfall: a 4-bit model that ever ran a forward in which nothing required grad (under
``torch.no_grad()``, or with every weight frozen) fails in training afterwards ("a view of a leaf Variable
that requires grad is being used in an in-place operation"). The training instance therefore sets
``avoid_no_grad`` before its first forward and runs inference (evaluation, the prefix) under
``torch.enable_grad()``, detaching the results; on a quantized model that builds a graph, so evaluation
goes in small chunks, while an unquantized model freezes its LoRA weights for it and builds none.

The run's parts live beside this entry module: `config` (settings, events, result, validation), `state`
(what advances with each step), `loop` (the step loop and Ctrl-C handling), `evaluation` (held-out
metrics) and `record` (the training record, the adapter files, resume checks); `checkpoint`, `lora`, `loss`
and `data` do the rest. This module puts them together in order: load, plan, step, write.

Example:
    >>> from vela_search.training.trainer import TrainConfig, train
    >>> result = train(TrainConfig(data="data/nli/triplets.csv", output="adapters/smoke", model="tiny",
    ...                            max_steps=50, batch_size=8))
    >>> result.eval_after["triplet_accuracy"]  # doctest: +SKIP
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

# `from ... import X as X` marks a re-export: those names were importable from here before the split.
from vela_search.embedding.backbone import DEFAULT_MODEL as DEFAULT_MODEL
from vela_search.errors import TrainingDataError
from vela_search.errors import VelaError as VelaError
from vela_search.training.config import QUANTIZE_CHOICES as QUANTIZE_CHOICES
from vela_search.training.config import SCHEDULERS as SCHEDULERS
from vela_search.training.config import (
    ProgressCallback,
    TrainConfig,
    TrainEvent,
    TrainingError,
    TrainResult,
    resolve_quantize,
)
from vela_search.training.evaluation import evaluate as evaluate
from vela_search.training.loop import QUANTIZED_EVAL_CHUNK as QUANTIZED_EVAL_CHUNK
from vela_search.training.loop import StopRequest, TrainLoop, graceful_sigint, make_scheduler
from vela_search.training.lora import LoraSettings as LoraSettings
from vela_search.training.record import ADAPTER_FILES as ADAPTER_FILES
from vela_search.training.record import FINAL_LOSS_WINDOW as FINAL_LOSS_WINDOW
from vela_search.training.record import RECORD_FORMAT as RECORD_FORMAT
from vela_search.training.record import (
    check_resumable,
    finish_embedder,
    prepare_output,
    run_identity,
    train_result,
    training_record,
    write_adapter,
)
from vela_search.training.state import RunState

if TYPE_CHECKING:
    import torch

    from vela_search.embedding.embedder import VelaEmbedder
    from vela_search.training.checkpoint import Checkpoint
    from vela_search.training.data import Triplet, TripletData

# Skip reason for texts longer than `max_text_tokens` (joins the data reader's reasons in the report).
TOO_LONG = "too_long"


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
    from vela_search.training.checkpoint import load_checkpoint
    from vela_search.training.data import load_triplet_data

    config.validate()
    emit = progress or (lambda event: None)
    started = time.monotonic()
    output = Path(config.output).expanduser()
    resume_path = prepare_output(output, config)

    data = load_triplet_data(
        config.data, eval_fraction=config.eval_fraction, seed=config.seed, max_eval=config.max_eval
    )
    checkpoint = load_checkpoint(resume_path) if resume_path is not None else None
    model = _load_model(config)
    notices = list(model.notices)
    rows = _usable_rows(model.embedder, data, config.max_text_tokens)
    schedule = _schedule(config, len(rows.train))
    identity = run_identity(config, model.embedder, data)
    # A run killed after its final checkpoint but before its adapter was written has every step done:
    # resuming it only finishes it (final evaluation, adapter and record).
    finishing = checkpoint is not None and _check_checkpoint(
        checkpoint, identity, output, schedule.total_steps, notices
    )
    for message in notices:
        emit(TrainEvent("notice", 0, schedule.total_steps, message=message))

    run = _Run(config, output, data, model, rows, schedule, identity, checkpoint, started, emit, notices)
    run.begin()
    if run.steps():
        return run.stop()
    return run.finish(finishing=finishing)


@dataclass
class _Model:
    """The embedder being trained, where it runs, and what to tell about it."""

    embedder: VelaEmbedder
    device: torch.device
    quantize: str | None
    gradient_checkpointing: bool
    base_fingerprint: Any
    notices: list[str]


@dataclass(frozen=True)
class _Rows:
    """The training and held-out triplets that fit, and why the others were skipped."""

    train: list[Triplet]
    eval: list[Triplet]
    skipped_reasons: dict[str, int]


@dataclass(frozen=True)
class _Schedule:
    """How many steps the run makes, per epoch and in all, and how many of them warm up."""

    steps_per_epoch: int
    total_steps: int
    warmup: int


def _load_model(config: TrainConfig) -> _Model:
    """Load the embedder to train on the configured device, ready for training forwards."""
    from vela_search.embedding.backbone import resolve_device
    from vela_search.embedding.embedder import VelaEmbedder

    device = resolve_device(config.device)
    quantize = resolve_quantize(config.quantize, device)
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
    return _Model(embedder, device, quantize, gradient_checkpointing, embedder.fingerprint, notices)


def _usable_rows(embedder: VelaEmbedder, data: TripletData, max_text_tokens: int) -> _Rows:
    """The rows without a text over ``max_text_tokens``.

    Raises:
        TrainingDataError: no training row is left.
    """
    train_rows, eval_rows, too_long = _drop_long_rows(embedder, data, max_text_tokens)
    skipped_reasons = dict(data.skipped_reasons)
    if too_long:
        skipped_reasons[TOO_LONG] = too_long
    if not train_rows:
        raise TrainingDataError(
            f"no training triplets left in {data.source} after skipping {too_long} row(s) with a text over "
            f"{max_text_tokens} tokens; raise --max-text-tokens"
        )
    return _Rows(train_rows, eval_rows, skipped_reasons)


def _schedule(config: TrainConfig, train_rows: int) -> _Schedule:
    """The run's steps from its settings and the number of training rows.

    Raises:
        TrainingError: fewer rows than one step needs.
    """
    per_step = config.batch_size * config.grad_accum
    steps_per_epoch = train_rows // per_step
    if steps_per_epoch == 0:
        raise TrainingError(
            f"{train_rows} training triplets are fewer than one step needs "
            f"(batch size {config.batch_size} "
            f"x grad accum {config.grad_accum} = {per_step}); lower --batch-size or --grad-accum"
        )
    total_steps = config.max_steps or config.epochs * steps_per_epoch
    warmup = (
        config.warmup_steps
        if config.warmup_steps is not None
        else math.ceil(config.warmup_ratio * total_steps)
    )
    return _Schedule(steps_per_epoch, total_steps, warmup)


def _check_checkpoint(
    checkpoint: Checkpoint, identity: dict[str, Any], output: Path, total_steps: int, notices: list[str]
) -> bool:
    """Check that ``checkpoint`` belongs to this run; add what changes to ``notices``.

    Returns:
        Whether the checkpoint did every step already, so that resuming only finishes the run.

    Raises:
        TrainingError: other settings, or a run that is done or went past this run's steps.
    """
    check_resumable(checkpoint.state, identity, checkpoint.path)
    finishing = False
    if checkpoint.step >= total_steps:
        if _adapter_written(output, checkpoint.step):
            raise TrainingError(
                f"the run in {output} already did {checkpoint.step} of {total_steps} steps; "
                "raise --max-steps or "
                "--epochs to train further"
            )
        if checkpoint.step > total_steps:
            raise TrainingError(
                f"the checkpoint {checkpoint.path} is at step {checkpoint.step}, past this run's "
                f"{total_steps} steps; raise --max-steps or --epochs to at least {checkpoint.step}"
            )
        finishing = True
        notices.append(f"all {total_steps} steps were done but the adapter was not written; writing it now")
    previous_total = checkpoint.state.get("total_steps")
    if previous_total != total_steps:
        notices.append(
            f"the learning-rate schedule now spans {total_steps} steps "
            f"(the checkpoint's run planned {previous_total})"
        )
    return finishing


class _Run:
    """One run once its model, rows and schedule are known: the optimizer, the steps and what they write."""

    def __init__(
        self,
        config: TrainConfig,
        output: Path,
        data: TripletData,
        model: _Model,
        rows: _Rows,
        schedule: _Schedule,
        identity: dict[str, Any],
        checkpoint: Checkpoint | None,
        started: float,
        emit: ProgressCallback,
        notices: list[str],
    ) -> None:
        import torch

        from vela_search.training.lora import attach_lora, trainable_parameters

        self.config, self.output, self.data, self.model, self.rows = config, output, data, model, rows
        self.schedule, self.identity, self.checkpoint, self.started = schedule, identity, checkpoint, started
        self.emit, self.notices = emit, notices
        torch.manual_seed(config.seed)
        self.peft_model = attach_lora(
            model.embedder, config.lora, gradient_checkpointing=model.gradient_checkpointing
        )
        self.params = [p for _, p in trainable_parameters(self.peft_model)]
        self.optimizer = torch.optim.AdamW(self.params, lr=config.lr, weight_decay=config.weight_decay)
        self.scheduler = make_scheduler(
            config.scheduler, self.optimizer, schedule.warmup, schedule.total_steps
        )
        self.state = RunState(total_steps=schedule.total_steps, steps_per_epoch=schedule.steps_per_epoch)
        if checkpoint is not None:
            self._restore(checkpoint)
        self.last_checkpoint: Path | None = None
        self.unsafe_stop = False

    def _restore(self, checkpoint: Checkpoint) -> None:
        from vela_search.training.lora import load_lora_state

        try:
            load_lora_state(self.peft_model, checkpoint.adapter)
            self.optimizer.load_state_dict(checkpoint.optimizer)
            self.scheduler.load_state_dict(checkpoint.scheduler)
        except (ValueError, KeyError, RuntimeError) as exc:
            raise TrainingError(f"checkpoint {checkpoint.path} does not fit this model: {exc}") from exc
        self.state.restore(checkpoint.state)

    def begin(self) -> None:
        """Announce the run, build the loop, and evaluate the starting weights of a new run."""
        from vela_search.training.checkpoint import restore_rng

        state, total, rows, model = self.state, self.state.total_steps, self.rows, self.model
        self.emit(
            TrainEvent(
                "start",
                state.step,
                total,
                message=(
                    f"{len(rows.train)} training / {len(rows.eval)} held-out triplets, "
                    f"{state.steps_per_epoch} steps per "
                    f"epoch, {self._trainable():,} LoRA parameters on {model.device}"
                    + (f", {model.quantize}" if model.quantize else "")
                ),
            )
        )
        self.loop = TrainLoop(
            model.embedder,
            self.peft_model,
            self.optimizer,
            self.scheduler,
            self.params,
            self.config,
            rows.train,
            state,
        )
        self.loop.refresh_prefix()
        if self.checkpoint is None and rows.eval:
            state.eval_before = {"step": 0, **self.loop.evaluate(rows.eval)}
            state.eval_history.append(state.eval_before)
            self.emit(TrainEvent("eval", 0, total, metrics=state.eval_before))
        if self.checkpoint is not None:
            # Last, right before the next step: LoRA dropout continues exactly where the run stopped.
            restore_rng(self.checkpoint.rng)

    def steps(self) -> bool:
        """Step until the schedule ends or a Ctrl-C stops the run; returns whether it was interrupted."""
        state, total = self.state, self.state.total_steps
        stop = StopRequest()
        with graceful_sigint(stop):
            try:
                while state.step < total:
                    if stop.requested:
                        return True
                    loss = self.loop.step()
                    self.emit(TrainEvent("step", state.step, total, loss=loss, lr=state.lr_curve[-1]))
                    if state.step < total:
                        self._between_steps()
            except KeyboardInterrupt:
                self.unsafe_stop = self.loop.updating
                return True
        return False

    def _between_steps(self) -> None:
        state, config, eval_rows = self.state, self.config, self.rows.eval
        if eval_rows and config.eval_every and state.step % config.eval_every == 0:
            metrics = {"step": state.step, **self.loop.evaluate(eval_rows)}
            state.eval_history.append(metrics)
            self.emit(TrainEvent("eval", state.step, state.total_steps, metrics=metrics))
        if config.save_every and state.step % config.save_every == 0:
            self._save(state.step)

    def stop(self) -> TrainResult:
        """End an interrupted run: a checkpoint to resume from (unless a weight update was cut)."""
        state = self.state
        if self.unsafe_stop:
            self.notices.append(
                "interrupted during a weight update: no checkpoint written for this step"
                + (f"; the last one is {self.last_checkpoint}" if self.last_checkpoint else "")
            )
        elif self.last_checkpoint is None or self.last_checkpoint.name != f"step-{state.step}":
            self._save(state.step)
        self.emit(
            TrainEvent(
                "notice",
                state.step,
                state.total_steps,
                message=f"interrupted after step {state.step} of {state.total_steps}; continue with --resume",
            )
        )
        return self._result(self._record(complete=False), interrupted=True)

    def finish(self, *, finishing: bool) -> TrainResult:
        """Evaluate the final weights, write the adapter and its record, and leave the embedder ready."""
        state, eval_rows = self.state, self.rows.eval
        if eval_rows:
            if finishing and state.eval_history and state.eval_history[-1]["step"] == state.step:
                state.eval_after = state.eval_history[-1]  # evaluated before the final checkpoint
            else:
                state.eval_after = {"step": state.step, **self.loop.evaluate(eval_rows)}
                if not state.eval_history or state.eval_history[-1]["step"] != state.step:
                    state.eval_history.append(state.eval_after)
            self.emit(TrainEvent("eval", state.step, state.total_steps, metrics=state.eval_after))
        if not finishing:
            self._save(state.step)
        final_record = self._record(complete=True)
        write_adapter(self.output, self.peft_model, final_record)
        finish_embedder(self.model.embedder, self.peft_model, self.output)
        self.emit(TrainEvent("done", state.step, state.total_steps, path=self.output))
        return self._result(final_record, interrupted=False)

    def _trainable(self) -> int:
        return sum(p.numel() for p in self.params)

    def _record(self, complete: bool) -> dict[str, Any]:
        return training_record(
            self.config,
            self.model.embedder,
            self.model.base_fingerprint,
            self.data,
            self.state,
            self.identity,
            self.rows.train,
            self.rows.eval,
            self.rows.skipped_reasons,
            self.schedule.warmup,
            self.model.gradient_checkpointing,
            self.started,
            complete,
            trainable=self._trainable(),
        )

    def _result(self, run_record: dict[str, Any], *, interrupted: bool) -> TrainResult:
        return train_result(
            self.output,
            self.state,
            self.rows.train,
            self.rows.eval,
            self.rows.skipped_reasons,
            self.model.embedder,
            self.started,
            self.notices,
            run_record,
            self.checkpoint,
            self.last_checkpoint,
            self.model.quantize,
            interrupted=interrupted,
        )

    def _save(self, step: int) -> Path:
        from vela_search.training.checkpoint import save_checkpoint

        state = self.state
        wall_time_s = state.wall_before + time.monotonic() - self.started
        self.last_checkpoint = save_checkpoint(
            self.output,
            step,
            peft_model=self.peft_model,
            optimizer=self.optimizer,
            scheduler=self.scheduler,
            state=state.to_json(self.identity, wall_time_s=wall_time_s),
            record=self._record(complete=False),
            keep=self.config.keep_checkpoints,
        )
        self.emit(TrainEvent("checkpoint", step, state.total_steps, path=self.last_checkpoint))
        return self.last_checkpoint


def _adapter_written(output: Path, step: int) -> bool:
    """Whether ``output`` holds the finished adapter of a run that did ``step`` steps."""
    import json

    from vela_search.embedding.embedder import ADAPTER_RECORD

    if not all((output / name).is_file() for name in ADAPTER_FILES):
        return False
    try:
        record = json.loads((output / ADAPTER_RECORD).read_text())
    except (OSError, json.JSONDecodeError):
        return False
    return isinstance(record, dict) and record.get("complete") is True and record.get("steps") == step


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
            lengths = [
                len(ids)
                for ids in tokenizer(texts, add_special_tokens=False, split_special_tokens=True)["input_ids"]
            ]
            for i, row in enumerate(part):
                if max(lengths[3 * i : 3 * i + 3]) <= limit:
                    kept.append(row)
        return kept

    train_rows, eval_rows = keep(data.train), keep(data.eval)
    dropped = len(data.train) - len(train_rows) + len(data.eval) - len(eval_rows)
    return train_rows, eval_rows, dropped
