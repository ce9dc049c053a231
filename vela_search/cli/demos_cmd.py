"""``vela-search demos``: build a demonstration set from a library of clips, and show what a set costs."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from vela_search.cli.common import DEVICE_HELP, console, err_console, load_embedder, print_json

if TYPE_CHECKING:
    from vela_search.embedding.backbone import Backbone
    from vela_search.embedding.demo_budget import DemoBudget
    from vela_search.embedding.demo_builder import BuildResult

demos_app = typer.Typer(
    help="In-context demonstrations: build a set from labelled clips (paper mix: 35 audio + 65 text), "
    "show its token cost.",
    no_args_is_help=True,
)

COUNT_MODEL_HELP = (
    "The model whose tokenizer counts the tokens (Hub id, local directory or 'tiny'; default "
    "Qwen/Qwen2-Audio-7B-Instruct). Only its config and processor are read, unless --label-with-model."
)
ITEM_SECONDS_HELP = "The set must leave room for an audio item this long (the index window; at most 30)."
ItemSecondsOpt = Annotated[float, typer.Option("--item-seconds", min=0.1, max=30.0, help=ITEM_SECONDS_HELP)]


@demos_app.command("build")
def build(
    source: Path = typer.Argument(
        ..., help="A folder of clips in one sub-folder per word, or a CSV/JSONL of file + word rows."
    ),
    output: Path = typer.Option(
        ..., "--output", "-o", help="The demo JSONL to write; clips go into <name>_clips/ beside it."
    ),
    n_audio: int = typer.Option(35, "--audio", min=0, help="Audio demos (the paper: 35)."),
    n_text: int = typer.Option(65, "--text", min=0, help="Text demos (the paper: 65)."),
    clip_seconds: float = typer.Option(
        5.0, "--clip-seconds", min=0.1, max=30.0, help="Cut each clip to its loudest N seconds."
    ),
    item_seconds: ItemSecondsOpt = 10.0,
    seed: int = typer.Option(0, "--seed", help="Seeds the choice and order (same seed, same files)."),
    text_demos: Path | None = typer.Option(
        None,
        "--text-demos",
        help="A demo JSONL to take the text demos from (default: the source's captions, else the shipped "
        "set).",
    ),
    audio_dir: Path | None = typer.Option(
        None, "--audio-dir", help="Folder the file names of a CSV/JSONL are relative to (default: its own)."
    ),
    file_column: str | None = typer.Option(
        None, "--file-column", help="The table's file column (default: audio, file, filename or path)."
    ),
    word_column: str | None = typer.Option(
        None, "--word-column", help="The table's word column (default: word, label or category)."
    ),
    label_with_model: bool = typer.Option(
        False,
        "--label-with-model",
        help="Give clips without a word the model's own one-word answer (generated; loads the weights).",
    ),
    model: str | None = typer.Option(None, "--model", help=COUNT_MODEL_HELP),
    device: str = typer.Option("auto", "--device", help=DEVICE_HELP),
    force: bool = typer.Option(False, "--force", help="Replace an existing output and its clip folder."),
    json_output: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
) -> None:
    """Choose, trim and write a demo set: labels spread, within the token budget, seeded."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from vela_search.embedding.demo_builder import build_demo_set, read_demo_source
    from vela_search.embedding.demos import DemoSet

    demo_source = read_demo_source(
        source, audio_dir=audio_dir, file_column=file_column, word_column=word_column
    )
    texts = DemoSet.from_jsonl(text_demos) if text_demos is not None else None
    labeller = None
    if label_with_model:
        from vela_search.embedding.demo_labeller import ModelLabeller

        embedder = load_embedder(model=model, adapter=None, demos="default", device=device)
        backbone = embedder.backbone
        labeller = ModelLabeller(embedder).label
    else:
        backbone = _counting_backbone(model)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn())
    with Progress(*columns, console=err_console, transient=True) as bar:
        tasks: dict[str, Any] = {}

        def progress(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = bar.add_task(f"{stage} clips", total=total)
            bar.update(tasks[stage], completed=done, total=total)

        result = build_demo_set(
            demo_source,
            output,
            backbone,
            n_audio=n_audio,
            n_text=n_text,
            clip_seconds=clip_seconds,
            item_seconds=item_seconds,
            seed=seed,
            text_demos=texts,
            labeller=labeller,
            force=force,
            progress=progress,
        )
    if json_output:
        print_json({**result.to_dict(), "notice": _notice(backbone)})
        return
    _print_build(result, backbone)


@demos_app.command("show")
def show(
    file: str = typer.Argument(..., help="A demo JSONL, or 'default' for the shipped set."),
    model: str | None = typer.Option(None, "--model", help=COUNT_MODEL_HELP),
    item_seconds: ItemSecondsOpt = 10.0,
    json_output: bool = typer.Option(False, "--json", help="Print the costs as JSON."),
) -> None:
    """Tokens per demo, the whole prefix, the longest clip that fits behind it, and the digest."""
    from vela_search.embedding.demo_budget import measure_demo_set
    from vela_search.embedding.demos import DemoSet
    from vela_search.embedding.embedder import VelaEmbedder

    demos = DemoSet.load(file)
    backbone = _counting_backbone(model)
    budget = measure_demo_set(VelaEmbedder(backbone, demos, demos_spec=file), item_seconds=item_seconds)
    budget.require_fit(
        "use fewer or shorter demos (vela-search demos build --audio/--text/--clip-seconds), or a shorter "
        "--item-seconds (index with --window at most the longest clip that fits)"
    )
    if json_output:
        print_json({**budget.to_dict(), "notice": _notice(backbone)})
        return
    _print_costs(budget)
    _print_budget(budget)
    notice = _notice(backbone)
    if notice:
        console.print(f"[yellow]note:[/] {notice}")


def _counting_backbone(model: str | None) -> Backbone:
    from vela_search.embedding.backbone import DEFAULT_MODEL, load_backbone_without_weights

    with err_console.status(f"reading the tokenizer of {model or DEFAULT_MODEL} …", spinner="dots"):
        return load_backbone_without_weights(model or DEFAULT_MODEL)


def _notice(backbone: Backbone) -> str | None:
    if backbone.is_tiny:
        return "token counts of the tiny model's tokenizer: the real model's text counts differ"
    return None


def _print_costs(budget: DemoBudget) -> None:
    counts = f"{budget.n_demos} demos ({budget.n_audio} audio, {budget.n_text} text)"
    table = Table(title=f"{budget.source}: {counts}")
    for column, justify in (("#", "right"), ("kind", "left"), ("word", "left"), ("demo", "left")):
        table.add_column(column, justify=justify)  # type: ignore[arg-type]
    table.add_column("tokens", justify="right")
    for cost in budget.costs:
        content = cost.content if len(cost.content) <= 60 else cost.content[:57] + "…"
        if cost.seconds is not None:
            content = f"{Path(cost.content).name} ({cost.seconds:.2f} s)"
        table.add_row(str(cost.position), cost.kind, cost.word, content, str(cost.tokens))
    console.print(table)


def _print_budget(budget: DemoBudget) -> None:
    console.print(
        f"prefix {budget.prefix_tokens:,} tokens (system turn {budget.header_tokens}) of "
        f"{budget.max_positions:,} positions; a {budget.item_seconds:g} s clip takes {budget.item_tokens} "
        f"tokens, leaving {budget.room_left:,}; the longest clip that fits behind it: "
        f"{budget.longest_clip_s:.2f} s"
    )
    console.print(f"digest (enters the embedder fingerprint): {budget.digest}")


def _print_build(result: BuildResult, backbone: Backbone) -> None:
    budget = result.budget
    console.print(
        f"wrote {result.output} ({budget.n_demos} demos: {budget.n_audio} audio, {budget.n_text} text) and "
        f"{budget.n_audio} clips in {result.clip_dir}"
    )
    labels = (
        ", ".join(result.labels_used)
        if len(result.labels_used) <= 12
        else (", ".join(result.labels_used[:12]) + f", … ({len(result.labels_used)} in all)")
    )
    if budget.n_audio:
        console.print(f"labels: {len(result.labels_used)} of {result.labels_available} available ({labels})")
    if result.generated:
        console.print(f"{result.generated} word(s) generated by the model (word_from: generated)")
    if result.unlabelled_left_out:
        console.print(
            f"[yellow]note:[/] {result.unlabelled_left_out} clip(s) without a label left out "
            "(--label-with-model labels them)"
        )
    for clip, reason in result.skipped[:5]:
        console.print(f"[yellow]skipped:[/] {clip}: {reason}")
    if len(result.skipped) > 5:
        console.print(f"… and {len(result.skipped) - 5} more skipped (all are listed with --json)")
    _print_budget(budget)
    notice = _notice(backbone)
    if notice:
        console.print(f"[yellow]note:[/] {notice}")
