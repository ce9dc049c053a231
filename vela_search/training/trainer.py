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

The run's parts live beside this entry module: `config` (settings, events, result, validation), `loop` (the
step loop, its state and Ctrl-C handling) and `record` (the training record, the adapter files, resume
checks); `checkpoint`, `lora`, `loss` and `data` do the rest.

Example:
    >>> from vela_search.training.trainer import TrainConfig, train
    >>> result = train(TrainConfig(data="data/nli/triplets.csv", output="adapters/smoke", model="tiny",
    ...                            max_steps=50, batch_size=8))
    >>> result.eval_after["triplet_accuracy"]  # doctest: +SKIP
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
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
    _resolve_quantize,
)
from vela_search.training.config import _normal_quantize as _normal_quantize
from vela_search.training.loop import QUANTIZED_EVAL_CHUNK as QUANTIZED_EVAL_CHUNK
from vela_search.training.loop import _graceful_sigint, _Loop, _make_scheduler, _RunState, _StopRequest
from vela_search.training.lora import LoraSettings as LoraSettings
from vela_search.training.record import ADAPTER_FILES as ADAPTER_FILES
from vela_search.training.record import FINAL_LOSS_WINDOW as FINAL_LOSS_WINDOW
from vela_search.training.record import RECORD_FORMAT as RECORD_FORMAT
from vela_search.training.record import (
    _check_resumable,
    _finish_embedder,
    _prepare_output,
    _result,
    _run_identity,
    _training_record,
    _write_adapter,
)
from vela_search.training.record import _demos_spec as _demos_spec
from vela_search.training.record import _device_name as _device_name
from vela_search.training.record import _final_loss as _final_loss
from vela_search.training.record import _model_spec as _model_spec
from vela_search.training.record import _short as _short
from vela_search.training.record import _versions as _versions

if TYPE_CHECKING:
    import torch

    from vela_search.embedding.embedder import VelaEmbedder
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
    # A run killed after its final checkpoint but before its adapter was written has every step done:
    # resuming it only finishes it (final evaluation, adapter and record).
    finishing = False
    if checkpoint is not None:
        _check_resumable(checkpoint.state, run_identity, checkpoint.path)
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
            notices.append(
                f"all {total_steps} steps were done but the adapter was not written; writing it now"
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
        if finishing and state.eval_history and state.eval_history[-1]["step"] == state.step:
            state.eval_after = state.eval_history[-1]  # evaluated before the final checkpoint
        else:
            state.eval_after = {"step": state.step, **trainer.evaluate(eval_rows)}
            if not state.eval_history or state.eval_history[-1]["step"] != state.step:
                state.eval_history.append(state.eval_after)
        emit(TrainEvent("eval", state.step, total_steps, metrics=state.eval_after))
    if not finishing:
        save(state.step)
    final_record = record(complete=True)
    _write_adapter(output, peft_model, final_record)
    _finish_embedder(embedder, peft_model, output)
    emit(TrainEvent("done", state.step, total_steps, path=output))
    return result(final_record, interrupted=False)


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


def _embed_detached(embedder: VelaEmbedder, texts: list[str], *, chunk: int) -> torch.Tensor:
    """Caption embeddings, detached, behind the cached prefix.

    A training embedder (``avoid_no_grad``) runs them under enable_grad, never no_grad (see module doc).
    """
    import torch

    from vela_search.embedding.embedder import EmbedItem

    items = [EmbedItem("caption", text=t) for t in texts]
    parts = []
    for start in range(0, len(items), chunk):
        parts.append(embedder.encode(items[start : start + chunk], grad=False).detach())
    return torch.cat(parts)


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
