"""``vela-search bench``: Clotho and AudioCaps retrieval; speed, pipeline and store benchmarks."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from vela_search.cli.app import app
from vela_search.cli.common import (
    ADAPTER_HELP,
    DEMOS_HELP,
    DEVICE_HELP,
    MODEL_HELP,
    console,
    err_console,
    load_embedder,
    print_json,
    resolve_index,
)

if TYPE_CHECKING:
    from vela_search.bench.runner import BenchmarkReport
    from vela_search.bench.speed import SpeedReport

bench_app = typer.Typer(
    help="Benchmarks: Clotho and AudioCaps retrieval (R@k, mAP@10, modality gap) and embedding/search speed.",
    no_args_is_help=True,
)
app.add_typer(bench_app, name="bench")

JSON_HELP = "Write the full report as JSON to this file ('-' for stdout; the table then goes to stderr)."
DTYPE_HELP = "auto (bf16 on CUDA, fp32 on the CPU), bf16, fp16 or fp32."
BATCH_TOKENS_HELP = "Item tokens per batch (default: sized from free GPU memory; 8192 on the CPU)."

# Options the two retrieval benchmarks share.
ModelOpt = Annotated[str | None, typer.Option("--model", help=MODEL_HELP)]
AdapterOpt = Annotated[Path | None, typer.Option("--adapter", help=ADAPTER_HELP)]
DemosOpt = Annotated[str | None, typer.Option("--demos", help=DEMOS_HELP)]
DeviceOpt = Annotated[str, typer.Option("--device", help=DEVICE_HELP)]
DtypeOpt = Annotated[str, typer.Option("--dtype", help=DTYPE_HELP)]
BatchTokensOpt = Annotated[int | None, typer.Option("--batch-tokens", min=1, help=BATCH_TOKENS_HELP)]
REUSE_INDEX_HELP = "Reuse the vectors of an index built from the same clips with the same embedder."
ReuseIndexOpt = Annotated[str | None, typer.Option("--index", help=REUSE_INDEX_HELP)]
JsonOpt = Annotated[str | None, typer.Option("--json", metavar="OUT", help=JSON_HELP)]


# ----------------------------------------------------------------------------------------- retrieval
@bench_app.command("clotho")
def clotho(
    data_dir: Path = typer.Option(Path("data/clotho"), "--data-dir", help="Folder of the Clotho v2.1 files."),
    split: str = typer.Option("evaluation", "--split", help="development, validation or evaluation."),
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
) -> None:
    """Text-to-audio and audio-to-text retrieval on Clotho v2.1 (evaluation: 1,045 clips x 5 captions)."""
    _run_retrieval("clotho", **locals())


@bench_app.command("audiocaps")
def audiocaps(
    data_dir: Path = typer.Option(
        Path("data/audiocaps"),
        "--data-dir",
        help="Folder of the AudioCaps CSV and audio (see docs/benchmarks.md).",
    ),
    split: str = typer.Option("test", "--split", help="test, val or train."),
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
    demos: str | None,
    device: str,
    dtype: str,
    batch_tokens: int | None,
    index: str | None,
    json_out: str | None,
) -> None:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from vela_search.bench.datasets import load_dataset
    from vela_search.bench.runner import run_retrieval_benchmark
    from vela_search.store import AudioIndex

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
    # Opened before the model loads, so a wrong --index fails in a second, not after loading 16 GB.
    idx = AudioIndex.open(resolve_index(index)) if index is not None else None
    try:
        embedder = load_embedder(
            model=model, adapter=adapter, demos=demos, device=device, dtype=dtype, batch_tokens=batch_tokens
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
                    tasks[stage] = bar.add_task(f"embedding {stage}", total=total)
                bar.update(tasks[stage], completed=done, total=total)

            report = run_retrieval_benchmark(dataset, embedder, index=idx, progress=progress)
    finally:
        if idx is not None:
            idx.close()
    _emit(report.to_dict(), json_out, lambda target: _print_retrieval(report, target))


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
    names = [f"R@{k}" for k in RECALL_KS] + ["mAP@10", "median_rank", "mean_rank"]
    for metric in names:
        row = [metric.replace("_", " ")]
        for direction in ("t2a", "a2t"):
            key = f"{direction}_{metric}"
            row.append(f"{report.metrics[key]:.2f}")
            row.append(f"{report.paper[key]:.1f}" if key in report.paper else "–")
        table.add_row(*row)
    target.print(table)
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


# ---------------------------------------------------------------------------------------------- speed
@bench_app.command("speed")
def speed(
    model: str = typer.Option(
        "auto",
        "--model",
        help="auto (shape:qwen2-audio-7b on a GPU, tiny on the CPU), tiny, shape:qwen2-audio-7b (random "
        "weights in the real 7B shapes, no download), a Hub id or a local directory.",
    ),
    adapter: Path | None = typer.Option(None, "--adapter", help=ADAPTER_HELP),
    clip_seconds: list[float] = typer.Option(
        [10.0], "--clip-seconds", help="Clip length in seconds (<= 30); repeat for several."
    ),
    clips: int = typer.Option(32, "--clips", min=1, help="Synthetic clips per measurement."),
    naive_clips: int = typer.Option(
        4, "--naive-clips", min=0, help="Of those, clips run through the naive loop."
    ),
    demos: list[str] = typer.Option(
        ["default"],
        "--demos",
        help="default, none, paper (35 audio x 5 s + 65 text demos, ~7.9k tokens) or a JSONL file; "
        "repeat for several.",
    ),
    queries: int = typer.Option(32, "--queries", min=1, help="Text queries for the latency measurement."),
    naive_queries: int = typer.Option(3, "--naive-queries", min=0, help="Of those, queries run naively."),
    search_vectors: int = typer.Option(
        100_000, "--search-vectors", min=0, help="Synthetic vectors for the search latency (0 skips it)."
    ),
    search_k: int = typer.Option(10, "--search-k", min=1, help="Top-k of the search."),
    device: str = typer.Option("auto", "--device", help=DEVICE_HELP),
    dtype: str = typer.Option("auto", "--dtype", help=DTYPE_HELP),
    quantize: str | None = typer.Option(
        None,
        "--quantize",
        help="4bit or 8bit (bitsandbytes); shape models are quantized through a temporary checkpoint.",
    ),
    batch_tokens: int | None = typer.Option(None, "--batch-tokens", min=1, help=BATCH_TOKENS_HELP),
    peak_tflops: float | None = typer.Option(
        None,
        "--peak-tflops",
        help="The chip's dense matrix peak in TFLOP/s, if it is not in the built-in table.",
    ),
    threads: int | None = typer.Option(
        None, "--threads", min=1, help="CPU threads for torch (default: torch's); fewer help on a busy CPU."
    ),
    json_out: str | None = typer.Option(None, "--json", metavar="OUT", help=JSON_HELP),
) -> None:
    """Embedding clips/s and query latency against the naive Vela loop, FLOP rate, and search latency."""
    from vela_search.bench.speed import SpeedConfig, run_speed_benchmark

    if model == "auto":
        import torch

        model = "shape:qwen2-audio-7b" if device != "cpu" and torch.cuda.is_available() else "tiny"
        err_console.print(f"model: {model}")
    config = SpeedConfig(
        model=model,
        adapter=str(adapter) if adapter is not None else None,
        demos=tuple(demos),
        clip_seconds=tuple(clip_seconds),
        clips=clips,
        naive_clips=naive_clips,
        queries=queries,
        naive_queries=naive_queries,
        search_vectors=search_vectors,
        search_k=search_k,
        device=device,
        dtype=dtype,
        quantize=None if quantize in (None, "none") else quantize,
        batch_tokens=batch_tokens,
        peak_tflops=peak_tflops,
        threads=threads,
    )
    config.validate()
    with err_console.status("starting …", spinner="dots") as status:
        report = run_speed_benchmark(config, progress=lambda message: status.update(f"{message} …"))
    _emit(report.to_dict(), json_out, lambda target: _print_speed(report, target))
    if report.parity_ok is False:
        err_console.print(
            "[bold red]error:[/] the fast path's vectors differ from the naive loop's beyond the fp32 "
            "tolerance (see parity in the report)"
        )
        raise typer.Exit(1)


@bench_app.command("pipeline")
def pipeline(
    paths: list[Path] = typer.Argument(..., help="Audio files or folders to measure on (held in memory)."),
    model: str = typer.Option("tiny", "--model", help=MODEL_HELP),
    demos: str | None = typer.Option(None, "--demos", help=DEMOS_HELP),
    device: str = typer.Option("auto", "--device", help=DEVICE_HELP),
    window: float = typer.Option(10.0, "--window", help="Window length in seconds for files over 30 s."),
    hop: float = typer.Option(5.0, "--hop", help="Hop between windows in seconds."),
    decode_workers: int | None = typer.Option(None, "--decode-workers", min=1, help="Decoding threads."),
    threads: int | None = typer.Option(
        None, "--threads", min=1, help="CPU threads for torch (with --ray: in each actor too)."
    ),
    ray: bool = typer.Option(
        False, "--ray", help="Index the files in one process and on Ray (a local Ray) and compare."
    ),
    ray_address: str | None = typer.Option(
        None, "--ray-address", metavar="ADDRESS", help="With --ray: a running cluster instead of a local Ray."
    ),
    workers: int | None = typer.Option(None, "--workers", min=1, help="With --ray: embedding actors."),
    json_out: str | None = typer.Option(None, "--json", metavar="OUT", help=JSON_HELP),
) -> None:
    """How well indexing hides decoding behind embedding: decode-only, embed-only and end-to-end times.

    With --ray: the same files indexed in one process and on Ray, clips/s, the overhead ratio and where
    the Ray run's time goes.
    """
    from vela_search.indexing.profile import measure_pipeline_overlap

    if ray or ray_address is not None:
        from vela_search.indexing.cluster import import_ray

        import_ray()
    if threads is not None:
        import torch

        torch.set_num_threads(threads)
    embedder = load_embedder(model=model, adapter=None, demos=demos, device=device)
    if ray or ray_address is not None:
        _ray_pipeline(
            paths,
            embedder,
            model=model,
            address=ray_address,
            workers=workers,
            window=window,
            hop=hop,
            decode_workers=decode_workers,
            threads=threads,
            json_out=json_out,
        )
        return
    with err_console.status("measuring decode-only, embed-only and end-to-end …", spinner="dots"):
        timing = measure_pipeline_overlap(
            [str(p) for p in paths], embedder, window_s=window, hop_s=hop, decode_workers=decode_workers
        )
    payload = {**timing.to_dict(), "model": model, "notice": embedder.notice}

    def render(target: Any) -> None:
        table = Table(title=f"indexing pipeline: {timing.files} files, {timing.segments} segments")
        table.add_column("measurement")
        table.add_column("seconds", justify="right")
        table.add_row("decode only", f"{timing.decode_s:.2f}")
        table.add_row("embed only (pre-decoded)", f"{timing.embed_s:.2f}")
        table.add_row("index end to end", f"{timing.end_to_end_s:.2f}")
        table.add_row("end to end / max(decode, embed)", f"{timing.overlap_ratio:.2f}")
        target.print(table)

    _emit(payload, json_out, render)


def _ray_pipeline(
    paths: list[Path],
    embedder: Any,
    *,
    model: str,
    address: str | None,
    workers: int | None,
    window: float,
    hop: float,
    decode_workers: int | None,
    threads: int | None,
    json_out: str | None,
) -> None:
    from vela_search.indexing.profile import measure_ray_overhead

    with err_console.status("indexing in one process, then on Ray …", spinner="dots"):
        result = measure_ray_overhead(
            [str(p) for p in paths],
            embedder,
            address=address,
            workers=workers,
            window_s=window,
            hop_s=hop,
            decode_workers=decode_workers,
            threads=threads,
        )
    payload = {**result.to_dict(), "model": model, "notice": embedder.notice, "threads": threads}

    def render(target: Any) -> None:
        timing = result.ray_timing
        table = Table(
            title=f"one process vs Ray ({result.workers} worker(s)): {result.files} files, "
            f"{result.segments} segments"
        )
        table.add_column("measurement")
        table.add_column("value", justify="right")
        table.add_row("one process", f"{result.single_s:.2f} s ({result.single_clips_per_s:.1f} clips/s)")
        table.add_row("Ray", f"{result.ray_s:.2f} s ({result.ray_clips_per_s:.1f} clips/s)")
        table.add_row("overhead ratio (Ray / one process)", f"{result.overhead_ratio:.2f}")
        table.add_row("  once the actors are up", f"{result.overhead_ratio_ready_pool:.2f}")
        table.add_row("Ray start (once per session)", f"{result.ray_start_s:.2f} s")
        table.add_row("Ray: until an actor was ready", f"{timing['first_actor_ready_s']:.2f} s")
        table.add_row("  of which loading the model", f"{timing['load_s'] / max(1, result.workers):.2f} s")
        table.add_row("Ray: until the first vectors", f"{timing['first_result_s']:.2f} s")
        table.add_row("Ray: decoding (all tasks)", f"{timing['decode_s']:.2f} s")
        table.add_row("Ray: embedding (all actors)", f"{timing['embed_s']:.2f} s")
        table.add_row("Ray: landing and commits (driver)", f"{timing['land_s']:.2f} s")
        for worker in timing["per_worker"]:
            table.add_row(f"  {worker['worker']}", f"{worker['segments_per_s']:.1f} clips/s")
        target.print(table)

    _emit(payload, json_out, render)


@bench_app.command("store")
def store(
    files: int = typer.Option(20_000, "--files", min=1, help="Synthetic files to land."),
    dim: int = typer.Option(4096, "--dim", min=1, help="Vector dimension (4096 for Qwen2-Audio-7B)."),
    segments_per_file: int = typer.Option(1, "--segments-per-file", min=1, help="Vectors per file."),
    commit_every: int = typer.Option(256, "--commit-every", min=1, help="Commit after this many segments."),
    moves: int = typer.Option(
        0, "--moves", min=0, help="Then move this many files (relinked, not embedded)."
    ),
    workdir: Path | None = typer.Option(None, "--workdir", help="Where the temporary index goes."),
    json_out: str | None = typer.Option(None, "--json", metavar="OUT", help=JSON_HELP),
) -> None:
    """The index writer's time per file at library scale, without a model (random vectors)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from vela_search.bench.store_speed import measure_store

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=err_console, transient=True) as bar:
        tasks = {"land": bar.add_task("landing files", total=files)}
        if moves:
            tasks["move"] = bar.add_task("moving files", total=moves)

        def advance(phase: str, done: int, total: int) -> None:
            bar.update(tasks[phase], completed=done, total=total)

        run = measure_store(
            files,
            dim=dim,
            segments_per_file=segments_per_file,
            commit_every=commit_every,
            moves=moves,
            workdir=workdir,
            progress=advance,
        )

    def render(target: Any) -> None:
        table = Table(
            title=f"index writer: {run.files:,} files, {run.segments_per_file} segment(s) each, "
            f"dim {run.dim}, {run.commits} commits"
        )
        table.add_column("files landed", justify="right")
        table.add_column("ms per file (last tenth)", justify="right")
        for landed, ms in run.curve:
            table.add_row(f"{landed:,}", f"{ms:.3f}")
        target.print(table)
        target.print(f"total {run.total_s:.2f} s, {run.ms_per_file:.3f} ms per file")
        if run.ms_per_move is not None:
            target.print(f"then {run.moves:,} moved files: {run.ms_per_move:.3f} ms per move")

    _emit(run.to_dict(), json_out, render)


def _fmt(value: float | None, spec: str = ".1f", suffix: str = "") -> str:
    return "–" if value is None else f"{value:{spec}}{suffix}"


def _print_speed(report: SpeedReport, target: Any) -> None:
    target.print(
        f"[bold]{report.model}[/] on {report.device} ({report.device_name}, {report.threads} torch threads), "
        f"{report.dtype}"
        + (f", {report.quantize}" if report.quantize else "")
        + (f"; peak {report.peak_tflops:g} TFLOP/s ({report.peak_source})" if report.peak_tflops else "")
    )
    for run in report.runs:
        counts = f"{run.n_demos} demos, {run.n_audio_demos} audio"
        title = f"demos {run.demos} ({counts}): prefix {run.prefix_tokens} tokens"
        table = Table(
            title=title,
            caption="naive: demos + item in one full forward per item; parity: max |fast - naive|",
            caption_justify="left",
        )
        for column in ("clip", "tokens", "clips/s", "naive", "× naive", "parity", "TFLOP/clip"):
            table.add_column(column, justify="right", no_wrap=True)
        rate_header = "TFLOP/s" + (" (% peak)" if report.peak_tflops else "")
        table.add_column(rate_header, justify="right", no_wrap=True)
        for clip in run.audio:
            if clip.skipped:
                table.add_row(f"{clip.clip_seconds:g} s", str(clip.item_tokens), "does not fit", *[""] * 5)
                continue
            rate = _fmt(clip.achieved_tflops, ".3g")
            if clip.fraction_of_peak is not None:
                rate += f" ({100 * clip.fraction_of_peak:.1f}%)"
            table.add_row(
                f"{clip.clip_seconds:g} s",
                str(clip.item_tokens),
                _fmt(clip.clips_per_s),
                _fmt(clip.naive_clips_per_s, ".2f"),
                _fmt(clip.speedup_vs_naive, ".1f", "×"),
                _fmt(clip.parity_max_abs_diff, ".1e"),
                _fmt(None if clip.flops_per_clip is None else clip.flops_per_clip / 1e12, ".3g"),
                rate,
            )
        target.print(table)
        for clip in run.audio:
            if clip.skipped:
                target.print(f"[yellow]{clip.clip_seconds:g} s clips skipped:[/] {clip.skipped}")
        if run.text is not None:
            text = run.text
            line = (
                f"text query: {text.latency_ms_median:.1f} ms median, {text.latency_ms_p90:.1f} ms p90 "
                f"({text.queries_per_s:.1f}/s one at a time, {text.batch_texts_per_s:.1f}/s batched)"
            )
            if text.eager_latency_ms_median is not None:
                line += f"; CUDA graphs on, without them {text.eager_latency_ms_median:.1f} ms"
            elif text.query_graphs.get("disabled_reason"):
                line += f"; CUDA graphs off ({text.query_graphs['disabled_reason']})"
            if text.naive_latency_ms_median is not None:
                line += f"; naive {text.naive_latency_ms_median:.1f} ms ({text.speedup_vs_naive:.1f}×)"
            target.print(line)
        if run.parity_ok is not None:
            verdict = "[green]ok[/]" if run.parity_ok else "[bold red]FAILED[/]"
            target.print(f"parity with the naive loop (fp32, tolerance {run.parity_tolerance:g}): {verdict}")
    if report.search is not None:
        s = report.search
        line = (
            f"search, top-{s.k} of {s.vectors:,} x {s.dim} vectors: torch ({s.torch_device}, "
            f"{s.torch_dtype}) {s.torch_latency_ms_median:.2f} ms median"
        )
        if s.faiss_latency_ms_median is not None:
            line += f"; {s.faiss_note}: {s.faiss_latency_ms_median:.2f} ms median"
        elif s.faiss_note:
            line += f" ({s.faiss_note})"
        target.print(line)
    if report.search_skipped:
        target.print(f"[yellow]search skipped:[/] {report.search_skipped}")
    target.print(f"wall time {report.wall_s:.1f} s")
    if report.notice:
        target.print(f"[yellow]note:[/] {report.notice}")


# ----------------------------------------------------------------------------------------------- output
def _emit(payload: dict[str, Any], json_out: str | None, render: Any) -> None:
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
