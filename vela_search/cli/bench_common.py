"""What the ``vela-search bench`` commands share: options, a phase progress bar, the report output."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated, Any

import typer

from vela_search.cli.common import (
    DEVICE_HELP,
    DTYPE_CHOICES,
    check_device,
    console,
    err_console,
    one_of,
    print_json,
)

JSON_HELP = "Write the full report as JSON to this file ('-' for stdout; the table then goes to stderr)."
DTYPE_HELP = "auto (bf16 on CUDA, fp32 on the CPU), bf16, fp16 or fp32."
BATCH_TOKENS_HELP = "Item tokens per batch (default: sized from free GPU memory; 8192 on the CPU)."

# Options the retrieval and the speed benchmarks share.
DeviceOpt = Annotated[str, typer.Option("--device", callback=check_device, help=DEVICE_HELP)]
DtypeOpt = Annotated[str, typer.Option("--dtype", callback=one_of(*DTYPE_CHOICES), help=DTYPE_HELP)]


@contextlib.contextmanager
def phase_progress(phases: dict[str, tuple[str, int]]) -> Iterator[Callable[[str, int, int], None]]:
    """A transient progress bar per phase on stderr, or plain lines at a steady interval when stderr is
    not a terminal (a benchmark run under ``> log 2>&1`` can take most of an hour); yields the
    ``(phase, done, total)`` callback that the benchmark functions take as ``progress``.

    Args:
        phases: ``{phase: (description, total)}``, in display order.
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from vela_search.cli.plain_progress import PlainProgress, use_plain_progress

    if use_plain_progress():
        with PlainProgress() as lines:
            yield lambda phase, done, total: lines.update(phases[phase][0], done, total, "items")
        return

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=err_console, transient=True) as bar:
        tasks = {phase: bar.add_task(text, total=total) for phase, (text, total) in phases.items()}

        def advance(phase: str, done: int, total: int) -> None:
            bar.update(tasks[phase], completed=done, total=total)

        yield advance


# ----------------------------------------------------------------------------------------------- output
def emit_report(payload: dict[str, Any], json_out: str | None, render: Any) -> None:
    """Render the table (stdout, or stderr when the JSON goes to stdout) and write the JSON report."""
    if json_out == "-":
        render(err_console)
        print_json(payload)
        return
    render(console)
    if json_out is not None:
        path = Path(json_out)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(payload, indent=2, ensure_ascii=False, default=str) + "\n")
        err_console.print(f"report written to {path}")
