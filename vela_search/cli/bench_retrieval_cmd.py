"""``vela-search bench clotho|audiocaps``: retrieval benchmarks, and several demo sets side by side."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from vela_search.cli.bench_common import (
    BATCH_TOKENS_HELP,
    JSON_HELP,
    DeviceOpt,
    DtypeOpt,
    emit_report,
)
from vela_search.cli.common import (
    ADAPTER_HELP,
    DEMOS_HELP,
    MODEL_HELP,
    err_console,
    load_embedder,
    one_of,
    resolve_index,
)

if TYPE_CHECKING:
    from vela_search.bench.demo_comparison import DemoComparison
    from vela_search.bench.runner import BenchmarkReport

# Options the two retrieval benchmarks share.
ModelOpt = Annotated[str | None, typer.Option("--model", help=MODEL_HELP)]
AdapterOpt = Annotated[Path | None, typer.Option("--adapter", help=ADAPTER_HELP)]
COMPARE_DEMOS_HELP = f"{DEMOS_HELP} Repeat to score several sets side by side with one model load."
DemosOpt = Annotated[list[str] | None, typer.Option("--demos", help=COMPARE_DEMOS_HELP)]
BatchTokensOpt = Annotated[int | None, typer.Option("--batch-tokens", min=1, help=BATCH_TOKENS_HELP)]
REUSE_INDEX_HELP = (
    "Reuse the vectors of an index built from the same clips; its recorded embedder is loaded unless "
    "--model/--adapter/--demos say otherwise."
)
ReuseIndexOpt = Annotated[str | None, typer.Option("--index", help=REUSE_INDEX_HELP)]
JsonOpt = Annotated[str | None, typer.Option("--json", metavar="OUT", help=JSON_HELP)]
RERANK_HELP = (
    "Also score text-to-audio after the model re-ranks each caption's top N clips (1-100) with its "
    "yes/no judgement: both sets of metrics from the same vectors (costs captions x N forwards)."
)
RerankOpt = Annotated[int | None, typer.Option("--rerank", metavar="N", help=RERANK_HELP)]
RerankPromptOpt = Annotated[
    Path | None,
    typer.Option("--rerank-prompt", metavar="FILE", help="With --rerank: the judge prompt (JSON)."),
]


# ----------------------------------------------------------------------------------------- retrieval
def clotho(
    data_dir: Path = typer.Option(Path("data/clotho"), "--data-dir", help="Folder of the Clotho v2.1 files."),
    split: str = typer.Option(
        "evaluation",
        "--split",
        callback=one_of("development", "validation", "evaluation"),
        help="development, validation or evaluation.",
    ),
    limit: int | None = typer.Option(
        None, "--limit", min=1, help="Score only the first N clips (quick runs)."
    ),
    download: bool = typer.Option(
        False, "--download", help="Fetch the official files first (needs internet)."
    ),
    model: ModelOpt = None,
    adapter: AdapterOpt = None,
    demos: DemosOpt = None,
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = "auto",
    batch_tokens: BatchTokensOpt = None,
    index: ReuseIndexOpt = None,
    json_out: JsonOpt = None,
    rerank: RerankOpt = None,
    rerank_prompt: RerankPromptOpt = None,
) -> None:
    """Text-to-audio and audio-to-text retrieval on Clotho v2.1 (evaluation: 1,045 clips x 5 captions)."""
    _run_retrieval("clotho", **locals())


def audiocaps(
    data_dir: Path = typer.Option(
        Path("data/audiocaps"),
        "--data-dir",
        help="Folder of the AudioCaps CSV and audio (see docs/benchmarks.md).",
    ),
    split: str = typer.Option(
        "test", "--split", callback=one_of("test", "val", "train"), help="test, val or train."
    ),
    limit: int | None = typer.Option(
        None, "--limit", min=1, help="Score only the first N clips (quick runs)."
    ),
    download: bool = typer.Option(
        False,
        "--download",
        help="Fetch the captions CSV first (needs internet; the audio is on YouTube only).",
    ),
    model: ModelOpt = None,
    adapter: AdapterOpt = None,
    demos: DemosOpt = None,
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = "auto",
    batch_tokens: BatchTokensOpt = None,
    index: ReuseIndexOpt = None,
    json_out: JsonOpt = None,
    rerank: RerankOpt = None,
    rerank_prompt: RerankPromptOpt = None,
) -> None:
    """Text-to-audio and audio-to-text retrieval on AudioCaps (test: 957 clips x 5 captions)."""
    _run_retrieval("audiocaps", **locals())


def _run_retrieval(
    name: str,
    *,
    data_dir: Path,
    split: str,
    limit: int | None,
    download: bool,
    model: str | None,
    adapter: Path | None,
    demos: list[str] | None,
    device: str,
    dtype: str,
    batch_tokens: int | None,
    index: str | None,
    json_out: str | None,
    rerank: int | None = None,
    rerank_prompt: Path | None = None,
) -> None:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from vela_search.bench.runner import run_retrieval_benchmark
    from vela_search.embedding.demos import DemoSet
    from vela_search.store import AudioIndex

    prompt = _check_rerank(rerank, rerank_prompt, demos)
    dataset = _dataset(name, data_dir, split, limit=limit, download=download)
    # Read before the model loads, so a wrong --demos or --index fails in a second, not after loading 16 GB.
    more_demos = [(spec, DemoSet.load(spec)) for spec in (demos or [])[1:]]
    idx = AudioIndex.open(resolve_index(index)) if index is not None else None
    try:
        embedder = _embedder(
            idx,
            model=model,
            adapter=adapter,
            demos=demos[0] if demos else None,
            device=device,
            dtype=dtype,
            batch_tokens=batch_tokens,
        )
    except BaseException:
        if idx is not None:
            idx.close()
        raise
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    try:
        with Progress(*columns, console=err_console, transient=True) as bar:
            tasks: dict[str, Any] = {}

            def progress(stage: str, done: int, total: int) -> None:
                if stage not in tasks:
                    tasks[stage] = bar.add_task(
                        stage if stage == "re-ranking" else f"embedding {stage}", total=total
                    )
                bar.update(tasks[stage], completed=done, total=total)

            if more_demos:
                sets = [(demos[0], embedder.demos), *more_demos]  # type: ignore[index]
                comparison = _compare_demos(dataset, embedder, sets, batch_tokens, idx, bar, tasks)
            else:
                report = run_retrieval_benchmark(
                    dataset, embedder, index=idx, progress=progress, rerank=rerank, rerank_prompt=prompt
                )
    finally:
        if idx is not None:
            idx.close()
    if more_demos:
        emit_report(comparison.to_dict(), json_out, lambda target: _print_comparison(comparison, target))
        return
    emit_report(report.to_dict(), json_out, lambda target: _print_retrieval(report, target))


def _dataset(name: str, data_dir: Path, split: str, *, limit: int | None, download: bool) -> Any:
    """The benchmark's clips and captions (downloaded first with --download), cut to --limit."""
    from vela_search.bench.datasets import load_dataset

    if download:
        _download(name, data_dir, split)
    dataset = load_dataset(name, data_dir, split)
    if limit is not None:
        dataset = dataset.limit(limit)
    if dataset.missing:
        err_console.print(
            f"[yellow]note:[/] {len(dataset.missing)} clip(s) listed in the {name} {split} captions have no "
            "audio file and are left out (the report counts them)"
        )
    return dataset


def _embedder(
    idx: Any,
    *,
    model: str | None,
    adapter: Path | None,
    demos: str | None,
    device: str,
    dtype: str,
    batch_tokens: int | None,
) -> Any:
    """The embedder to benchmark: the given one, or with --index the index's own unless overridden."""
    if idx is None:
        return load_embedder(
            model=model, adapter=adapter, demos=demos, device=device, dtype=dtype, batch_tokens=batch_tokens
        )
    # Like `query`: the index's recorded embedder, unless --model/--adapter/--demos override it.
    from vela_search.search import load_index_embedder

    with err_console.status("loading the index's model …", spinner="dots"):
        embedder = load_index_embedder(
            idx,
            model=model,
            adapter=adapter,
            demos=demos,
            device=device,
            dtype=dtype,
            batch_tokens=batch_tokens,
        )
    if embedder.notice:
        err_console.print(f"[yellow]note:[/] {embedder.notice}")
    return embedder


def _check_rerank(rerank: int | None, prompt: Path | None, demos: list[str] | None) -> Any:
    """The judge prompt of ``--rerank`` (read now: a bad file fails before the model loads), or None."""
    from vela_search.errors import QueryError
    from vela_search.search.rerank import check_rerank

    check_rerank(rerank)
    if prompt is not None and rerank is None:
        raise QueryError("--rerank-prompt sets the judge of --rerank N: give --rerank too")
    if rerank is not None and demos and len(demos) > 1:
        raise QueryError("--rerank scores one demo set: give one --demos")
    if prompt is None:
        return None
    from vela_search.embedding.judge_prompt import load_judge_prompt

    return load_judge_prompt(prompt)


def _compare_demos(
    dataset: Any,
    embedder: Any,
    sets: list[tuple[str, Any]],
    batch_tokens: int | None,
    idx: Any,
    bar: Any,
    tasks: dict[str, Any],
) -> DemoComparison:
    """Score each ``--demos`` set over the one loaded backbone."""
    from vela_search.bench.demo_comparison import compare_demo_sets

    def progress(name: str, stage: str, done: int, total: int) -> None:
        key = f"{stage} ({name})"
        if key not in tasks:
            tasks[key] = bar.add_task(f"embedding {key}", total=total)
        bar.update(tasks[key], completed=done, total=total)

    return compare_demo_sets(
        dataset, embedder.backbone, sets, batch_tokens=batch_tokens, index=idx, progress=progress
    )


def _print_comparison(comparison: DemoComparison, target: Any) -> None:
    from vela_search.bench.metrics import RECALL_KS

    first = comparison.runs[0].report
    table = Table(
        title=f"{comparison.dataset} {comparison.split}: {first.n_clips} clips, {first.n_captions} captions, "
        f"{len(comparison.runs)} demo sets",
        caption="R@k and mAP@10 in %, ranks 1-based; modality gap: distance between the audio and caption "
        "centroids (smaller: closer spaces)",
        caption_justify="left",
    )
    table.add_column("metric")
    for run in comparison.runs:
        # A file's name heads its column (the full path is in the JSON report).
        table.add_column(Path(run.demos).name or run.demos, justify="right", overflow="fold")
    table.add_column("paper", justify="right")
    rows: list[list[str]] = [
        ["demos (audio)", *(f"{r.n_demos} ({r.n_audio_demos})" for r in comparison.runs), "100 (35)"],
        ["prefix tokens", *(f"{r.prefix_tokens:,}" for r in comparison.runs), "–"],
    ]
    names = [f"R@{k}" for k in RECALL_KS] + ["mAP@10", "median_rank", "mean_rank"]
    for direction in ("t2a", "a2t"):
        for metric in names:
            key = f"{direction}_{metric}"
            paper = first.paper.get(key)
            rows.append(
                [
                    f"{direction} {metric.replace('_', ' ')}",
                    *(f"{r.report.metrics[key]:.2f}" for r in comparison.runs),
                    "–" if paper is None else f"{paper:.1f}",
                ]
            )
    rows.append(["modality gap", *(f"{r.report.modality_gap:.4f}" for r in comparison.runs), "–"])
    for row in rows:
        table.add_row(*row)
    target.print(table)
    wall = sum(r.report.wall_s for r in comparison.runs)
    target.print(f"{len(comparison.runs)} sets scored with one model load in {wall:.1f} s on {first.device}")
    if first.notice:
        target.print(f"[yellow]note:[/] {first.notice}")


def _download(name: str, data_dir: Path, split: str) -> None:
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

    from vela_search.bench.download import AUDIOCAPS_AUDIO_NOTE, download_dataset

    columns = (TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn())
    with Progress(*columns, console=err_console, transient=True) as bar:
        tasks: dict[str, Any] = {}

        def progress(file_name: str, done: int, total: int | None) -> None:
            if file_name not in tasks:
                tasks[file_name] = bar.add_task(file_name, total=total)
            bar.update(tasks[file_name], completed=done, total=total)

        download_dataset(name, data_dir, split=split, progress=progress)
    if name == "audiocaps":
        err_console.print(f"[yellow]note:[/] {AUDIOCAPS_AUDIO_NOTE}")


def _print_retrieval(report: BenchmarkReport, target: Any) -> None:
    from vela_search.bench.metrics import RECALL_KS

    table = Table(
        title=f"{report.dataset} {report.split}: {report.n_clips} clips, {report.n_captions} captions",
        caption="R@k and mAP@10 in %, ranks 1-based; paper: the Vela paper's reported value",
        caption_justify="left",
    )
    table.add_column("metric")
    table.add_column("text → audio", justify="right")
    table.add_column("paper", justify="right")
    table.add_column("audio → text", justify="right")
    table.add_column("paper", justify="right")
    reranked = report.rerank
    if reranked:
        table.add_column(f"text → audio, top {reranked['n']} re-ranked", justify="right")
    names = [f"R@{k}" for k in RECALL_KS] + ["mAP@10", "median_rank", "mean_rank"]
    for metric in names:
        row = [metric.replace("_", " ")]
        for direction in ("t2a", "a2t"):
            key = f"{direction}_{metric}"
            row.append(f"{report.metrics[key]:.2f}")
            row.append(f"{report.paper[key]:.1f}" if key in report.paper else "–")
        if reranked:
            row.append(f"{reranked['metrics'][f't2a_{metric}']:.2f}")
        table.add_row(*row)
    target.print(table)
    if reranked:
        target.print(
            f"re-ranking: {reranked['judged']:,} judgements in {reranked['wall_s']:.1f} s "
            f"({reranked['ms_per_candidate']:.1f} ms per candidate, decoding included); prompt "
            f"{reranked['prompt_digest']}, order = judge + {reranked['vector_weight']:g} x cosine"
            + (
                f"; {reranked['undecodable']} undecodable candidate(s) kept their rank"
                if reranked["undecodable"]
                else ""
            )
        )
    counts = [f"modality gap {report.modality_gap:.4f}"]
    if report.n_missing:
        counts.append(f"{report.n_missing} clip(s) without audio left out")
    if report.n_unreadable:
        counts.append(f"{report.n_unreadable} unreadable clip(s) left out")
    if report.n_truncated:
        counts.append(f"{report.n_truncated} clip(s) over 30 s embedded on their first 30 s")
    if report.n_from_index:
        counts.append(f"{report.n_from_index} clip vector(s) taken from the index")
    speed = f"{report.clips_per_s:.1f} clips/s, " if report.clips_per_s else ""
    counts.append(f"{speed}{report.captions_per_s:.1f} captions/s, {report.wall_s:.1f} s on {report.device}")
    target.print("; ".join(counts))
    if report.notice:
        target.print(f"[yellow]note:[/] {report.notice}")
