"""``vela-search train``: fine-tune the LLM's LoRA adapter on text triplets (thin wrapper of ``train()``)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from vela_search.cli.common import (
    DEVICE_HELP,
    DTYPE_CHOICES,
    MODEL_HELP,
    check_device,
    console,
    err_console,
    one_of,
    print_json,
)
from vela_search.errors import EXIT_INTERRUPTED

# Light by design (stdlib + dataclasses; torch loads inside `train()`): the defaults live in one place.
from vela_search.training.trainer import TrainConfig

if TYPE_CHECKING:
    from vela_search.training.trainer import TrainEvent, TrainResult

_D = TrainConfig(data="", output="")


def train_command(
    data: Path = typer.Option(
        ..., "--data", help="Triplets: CSV sent0,sent1,hard_neg or JSONL anchor,positive,negative."
    ),
    output: Path = typer.Option(
        ..., "--output", "-o", help="Directory for the adapter, its record and checkpoints/."
    ),
    model: str = typer.Option(_D.model, "--model", help=MODEL_HELP),
    demos: str = typer.Option(
        _D.demos,
        "--demos",
        help="Demos to train behind: 'none' (cheapest), 'default' or a JSONL file; kept in the record.",
    ),
    device: str = typer.Option(_D.device, "--device", callback=check_device, help=DEVICE_HELP),
    dtype: str = typer.Option(
        _D.dtype,
        "--dtype",
        callback=one_of(*DTYPE_CHOICES),
        help="Base weights: auto (bf16 on CUDA, fp32 on CPU), bf16, fp16, fp32.",
    ),
    quantize: str = typer.Option(
        _D.quantize,
        "--quantize",
        callback=one_of("auto", "4bit", "8bit", "none"),
        help="auto (4bit on CUDA, none on CPU), 4bit, 8bit or none.",
    ),
    epochs: int = typer.Option(_D.epochs, "--epochs", help="Passes over the training rows."),
    max_steps: int | None = typer.Option(
        None, "--max-steps", help="Optimizer steps in total (overrides --epochs)."
    ),
    batch_size: int = typer.Option(_D.batch_size, "--batch-size", help="Triplets per contrastive batch."),
    grad_accum: int = typer.Option(
        _D.grad_accum, "--grad-accum", help="Batches accumulated per optimizer step."
    ),
    lr: float = typer.Option(_D.lr, "--lr", help="Peak learning rate (AdamW)."),
    temperature: float = typer.Option(_D.temperature, "--temperature", help="InfoNCE temperature."),
    seed: int = typer.Option(
        _D.seed, "--seed", help="Seed of LoRA init, data order, dropout and the held-out split."
    ),
    warmup_steps: int | None = typer.Option(
        None, "--warmup-steps", help="Warm-up steps (default: --warmup-ratio)."
    ),
    warmup_ratio: float = typer.Option(
        _D.warmup_ratio, "--warmup-ratio", help="Warm-up as a share of all steps."
    ),
    scheduler: str = typer.Option(
        _D.scheduler,
        "--scheduler",
        callback=one_of("linear", "cosine", "constant"),
        help="Decay after warm-up: linear, cosine or constant.",
    ),
    max_grad_norm: float = typer.Option(
        _D.max_grad_norm or 0.0, "--max-grad-norm", help="Gradient clipping (0: off)."
    ),
    eval_fraction: float = typer.Option(_D.eval_fraction, "--eval-fraction", help="Share of rows held out."),
    max_eval: int = typer.Option(_D.max_eval or 0, "--max-eval", help="Held-out rows at most."),
    eval_every: int = typer.Option(
        _D.eval_every, "--eval-every", help="Evaluate every N steps (0: before/after only)."
    ),
    save_every: int = typer.Option(
        _D.save_every, "--save-every", help="Checkpoint every N steps (0: at the end only)."
    ),
    keep_checkpoints: int = typer.Option(
        _D.keep_checkpoints, "--keep-checkpoints", help="Newest checkpoints kept (0: all)."
    ),
    gradient_checkpointing: bool | None = typer.Option(
        None,
        "--gradient-checkpointing/--no-gradient-checkpointing",
        help="Trade compute for memory (default: on CUDA).",
    ),
    lora_r: int = typer.Option(_D.lora.r, "--lora-r", help="LoRA rank."),
    lora_alpha: int = typer.Option(_D.lora.alpha, "--lora-alpha", help="LoRA alpha."),
    lora_dropout: float = typer.Option(_D.lora.dropout, "--lora-dropout", help="LoRA dropout."),
    max_text_tokens: int = typer.Option(
        _D.max_text_tokens, "--max-text-tokens", help="Skip rows with a longer text."
    ),
    resume: bool = typer.Option(
        False, "--resume", help="Continue from the latest checkpoint under --output."
    ),
    overwrite: bool = typer.Option(
        False, "--overwrite", help="Start afresh in an --output that holds a run."
    ),
    json_out: bool = typer.Option(False, "--json", help="Print the result as JSON on stdout."),
) -> None:
    """Fine-tune the LLM's LoRA adapter on text triplets (contrastive InfoNCE; QLoRA on CUDA).

    Use the result with `vela-search index PATH --index NAME --adapter OUTPUT --rebuild`.
    """
    from vela_search.training.lora import LoraSettings
    from vela_search.training.trainer import TrainingError, train

    try:
        lora = LoraSettings(r=lora_r, alpha=lora_alpha, dropout=lora_dropout)
    except ValueError as exc:
        raise TrainingError(str(exc)) from exc
    config = TrainConfig(
        data=data,
        output=output,
        model=model,
        demos=demos,
        device=device,
        dtype=dtype,
        quantize=quantize,
        epochs=epochs,
        max_steps=max_steps,
        batch_size=batch_size,
        grad_accum=grad_accum,
        lr=lr,
        temperature=temperature,
        seed=seed,
        warmup_steps=warmup_steps,
        warmup_ratio=warmup_ratio,
        scheduler=scheduler,
        max_grad_norm=max_grad_norm or None,
        eval_fraction=eval_fraction,
        max_eval=max_eval,
        eval_every=eval_every,
        save_every=save_every,
        keep_checkpoints=keep_checkpoints,
        gradient_checkpointing=gradient_checkpointing,
        lora=lora,
        max_text_tokens=max_text_tokens,
        resume=resume,
        overwrite=overwrite,
    )
    with _ProgressView(enabled=not json_out) as view:
        result = train(config, progress=view.handle)

    if json_out:
        print_json(result.to_dict())
    else:
        _print_summary(result)
    if result.interrupted:
        raise typer.Exit(EXIT_INTERRUPTED)


class _ProgressView:
    """Rich progress bar with the running loss; evaluations, checkpoints and notices print above it."""

    def __init__(self, *, enabled: bool) -> None:
        from vela_search.cli.plain_progress import PlainProgress, use_plain_progress

        self.enabled = enabled
        self.progress: Any = None
        self.task: Any = None
        # Not a terminal (a log, CI): a plain line at a steady interval instead of the bar (stderr only, so
        # also with --json).
        self.plain = PlainProgress() if use_plain_progress() else None

    def __enter__(self) -> _ProgressView:
        if self.plain is not None:
            self.plain.__enter__()
            self.plain.update("preparing")
        return self

    def _start(self) -> None:
        # Started on the run's first event, so an early error prints nothing but its own line.
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self.progress = Progress(
            TextColumn("[bold]training[/]"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=err_console,
        )
        self.progress.__enter__()

    def __exit__(self, *exc: object) -> None:
        if self.plain is not None:
            self.plain.__exit__(*exc)
        if self.progress is not None:
            self.progress.__exit__(*exc)

    def handle(self, event: TrainEvent) -> None:
        if self.plain is not None and event.kind in ("start", "step"):
            loss = f"loss {event.loss:.4f}" if event.loss is not None else ""
            self.plain.update("training", event.step, event.total_steps, "steps", loss)
            if not self.enabled or event.kind == "step":
                return
        if event.kind == "notice":
            # Notices matter with --json too: they go to stderr either way.
            target = self.progress.console if self.progress is not None else err_console
            target.print(f"[yellow]note:[/] {event.message}", highlight=False)
            return
        if not self.enabled:
            return
        if self.progress is None and self.plain is None:
            self._start()
        out = self.progress.console if self.progress is not None else err_console
        if event.kind == "start":
            out.print(event.message, highlight=False)
            if self.progress is None:
                return
            self.task = self.progress.add_task(
                "train", total=event.total_steps, completed=event.step, loss="-"
            )
        elif event.kind == "step" and self.task is not None:
            self.progress.update(self.task, completed=event.step, loss=f"{event.loss:.4f}")
        elif event.kind == "eval" and event.metrics:
            m = event.metrics
            out.print(
                f"step {event.step}: held-out triplet accuracy {m['triplet_accuracy']:.3f}, "
                f"R@1 {m['recall_at_1']:.3f} ({m['pairs']} pairs)",
                highlight=False,
            )
        elif event.kind == "checkpoint":
            out.print(f"[dim]checkpoint {event.path}[/]", highlight=False)


def _print_summary(result: TrainResult) -> None:
    from rich.table import Table

    table = Table(title="interrupted" if result.interrupted else "training done", show_header=False)
    table.add_column(style="bold")
    table.add_column()
    table.add_row("steps", f"{result.steps} / {result.total_steps} ({result.epochs:.2f} epochs)")
    table.add_row("final loss", _loss_text(result))
    before, after = result.eval_before, result.eval_after
    for key, label in (
        ("triplet_accuracy", "held-out triplet accuracy"),
        ("recall_at_1", "held-out R@1 (text)"),
    ):
        if before or after:
            table.add_row(label, f"{_metric(before, key)} -> {_metric(after, key)}")
    table.add_row("triplets", f"{result.train_rows} training, {result.eval_rows} held out")
    if result.skipped:
        reasons = ", ".join(f"{k.replace('_', ' ')}: {v}" for k, v in sorted(result.skipped_reasons.items()))
        table.add_row("skipped rows", f"{result.skipped} ({reasons})")
    if result.resumed_from is not None:
        # The run's state carries the time of the parts before the resume: say that the sum is shown.
        table.add_row(
            "time (all parts)", f"{result.wall_time_s:.1f} s, resumed from {result.resumed_from.name}"
        )
    else:
        table.add_row("time", f"{result.wall_time_s:.1f} s")
    table.add_row("device", result.device + (f", {result.quantization}" if result.quantization else ""))
    table.add_row("output", str(result.output if not result.interrupted else result.checkpoint))
    console.print(table)
    if result.interrupted:
        err_console.print(
            f"interrupted: continue with the same command and --resume (state in {result.checkpoint})"
        )
    else:
        console.print(
            "refresh an index with it: "
            f"vela-search index PATH --index NAME --adapter {result.output} --rebuild",
            highlight=False,
        )
    if result.model_notice:
        err_console.print(f"[yellow]note:[/] {result.model_notice}", highlight=False)


def _loss_text(result: TrainResult) -> str:
    """The smoothed final loss, labelled, beside the last step's loss that the progress bar showed."""
    if result.final_loss is None or not result.loss_curve:
        return "-"
    from vela_search.training.record import FINAL_LOSS_WINDOW

    averaged = min(FINAL_LOSS_WINDOW, len(result.loss_curve))
    if averaged == 1:
        return f"{result.final_loss:.4f} (the only step)"
    return (
        f"{result.final_loss:.4f} (mean of the last {averaged} steps; last step: {result.loss_curve[-1]:.4f})"
    )


def _metric(metrics: dict[str, Any] | None, key: str) -> str:
    return "-" if not metrics else f"{metrics[key]:.3f}"
