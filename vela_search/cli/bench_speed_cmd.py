"""``vela-search bench speed|pipeline|store``: embedding and search speed, indexing overlap, index writer."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.table import Table

from vela_search.cli.bench_common import (
    BATCH_TOKENS_HELP,
    JSON_HELP,
    DeviceOpt,
    DtypeOpt,
    emit_report,
    phase_progress,
)
from vela_search.cli.common import (
    ADAPTER_HELP,
    DEMOS_HELP,
    MODEL_HELP,
    err_console,
    load_embedder,
    one_of,
)
from vela_search.errors import VelaError

if TYPE_CHECKING:
    from vela_search.bench.speed import SpeedReport


# ---------------------------------------------------------------------------------------------- speed
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
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = "auto",
    quantize: str | None = typer.Option(
        None,
        "--quantize",
        callback=one_of("4bit", "8bit", "none"),
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
    emit_report(report.to_dict(), json_out, lambda target: _print_speed(report, target))
    if report.parity_ok is False:
        err_console.print(
            "[bold red]error:[/] the fast path's vectors differ from the naive loop's beyond the fp32 "
            "tolerance (see parity in the report)"
        )
        raise typer.Exit(1)


def pipeline(
    paths: list[Path] = typer.Argument(..., help="Audio files or folders to measure on (held in memory)."),
    model: str = typer.Option("tiny", "--model", help=MODEL_HELP),
    demos: str | None = typer.Option(None, "--demos", help=DEMOS_HELP),
    device: DeviceOpt = "auto",
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
    exact_max_vectors: int | None = typer.Option(
        None,
        "--exact-max-vectors",
        min=1,
        help="With --ray: compressed codes above this many vectors (the run crosses re-training "
        "thresholds), and a second Ray run with inline maintenance to compare the workers' idle time.",
    ),
    commit_every: int | None = typer.Option(
        None, "--commit-every", min=1, help="With --ray: commit after this many segments (default: 256)."
    ),
    base_vectors: int = typer.Option(
        0,
        "--base-vectors",
        min=0,
        help="With --ray: start each run from an index already holding this many random vectors (a "
        "library the run adds to; with --exact-max-vectors above it, a training over all of them).",
    ),
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
            exact_max_vectors=exact_max_vectors,
            commit_every=commit_every,
            base_vectors=base_vectors,
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
        # What the ratio means: 1.00 when decoding is fully hidden, (decode + embed) / max when not at all.
        serial = (timing.decode_s + timing.embed_s) / max(timing.decode_s, timing.embed_s, 1e-9)
        target.print(
            f"ratio: 1.00 is perfect (decoding fully hidden behind embedding); {serial:.2f} would mean no "
            "overlap (decode, then embed); end to end also scans, hashes and commits, so a little above "
            "1.00 is good",
            highlight=False,
        )

    emit_report(payload, json_out, render)


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
    exact_max_vectors: int | None,
    commit_every: int | None,
    base_vectors: int,
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
            exact_max_vectors=exact_max_vectors,
            commit_every=commit_every,
            base_vectors=base_vectors,
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
        table.add_row(
            "  of which commits (longest)", f"{timing['commit_s']:.2f} s ({timing['commit_max_s']:.2f} s)"
        )
        table.add_row("Ray: workers idle (background maintenance)", f"{timing['idle_fraction']:.1%}")
        inline = result.ray_inline_timing
        if inline is not None:
            table.add_row("Ray, inline maintenance", f"{result.ray_inline_s:.2f} s")
            table.add_row(
                "  commits (longest)", f"{inline['commit_s']:.2f} s ({inline['commit_max_s']:.2f} s)"
            )
            table.add_row("  workers idle (inline maintenance)", f"{inline['idle_fraction']:.1%}")
        if result.codes_design_size is not None:
            table.add_row("codes last trained on", f"{result.codes_design_size} vectors")
        for worker in timing["per_worker"]:
            table.add_row(f"  {worker['worker']}", f"{worker['segments_per_s']:.1f} clips/s")
        target.print(table)

    emit_report(payload, json_out, render)


def store(
    files: int = typer.Option(20_000, "--files", min=1, help="Synthetic files to land."),
    dim: int = typer.Option(4096, "--dim", min=1, help="Vector dimension (4096 for Qwen2-Audio-7B)."),
    segments_per_file: int = typer.Option(1, "--segments-per-file", min=1, help="Vectors per file."),
    commit_every: int = typer.Option(256, "--commit-every", min=1, help="Commit after this many segments."),
    moves: int = typer.Option(
        0, "--moves", min=0, help="Then move this many files (relinked, not embedded)."
    ),
    workdir: Path | None = typer.Option(None, "--workdir", help="Where the temporary index goes."),
    maintenance: str = typer.Option(
        "both",
        "--maintenance",
        help="Tier merges and codes re-training: 'background' (off the commit path, as `index` runs), "
        "'inline' (inside commits), or 'both' (each at the same scale, to compare commit latency).",
    ),
    exact_max_vectors: int | None = typer.Option(
        None,
        "--exact-max-vectors",
        min=1,
        help="Give the index compressed codes above this many vectors (default: the automatic "
        "choice's limit), so that a short run crosses the re-training thresholds.",
    ),
    json_out: str | None = typer.Option(None, "--json", metavar="OUT", help=JSON_HELP),
) -> None:
    """The index writer's time per file and commit latency at library scale, without a model (random
    vectors)."""
    from vela_search.bench.store_speed import measure_store

    if maintenance not in ("background", "inline", "both"):
        raise VelaError(f"--maintenance must be background, inline or both, not {maintenance!r}")
    runs = {}
    for mode in ("background", "inline") if maintenance == "both" else (maintenance,):
        phases = {"land": (f"landing files ({mode} maintenance)", files)}
        if moves:
            phases["move"] = ("moving files", moves)
        with phase_progress(phases) as advance:
            runs[mode] = measure_store(
                files,
                dim=dim,
                segments_per_file=segments_per_file,
                commit_every=commit_every,
                moves=moves,
                workdir=workdir,
                progress=advance,
                maintenance=mode,
                exact_max_vectors=exact_max_vectors,
            )
    run = next(iter(runs.values()))

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
        target.print(
            f"last tenth vs first: {run.last_tenth_ms:.3f} / {run.first_tenth_ms:.3f} ms per file = "
            f"{run.last_vs_first:.2f}x; shards after the landing (not compacted, as an interrupted run "
            f"leaves them): {run.shards_at_end}, at most {run.peak_shards} (shards of up to "
            f"{run.max_shard_size:,} vectors)"
        )
        if run.ms_per_move is not None:
            target.print(f"then {run.moves:,} moved files: {run.ms_per_move:.3f} ms per move")
        _print_commit_latency(runs, target)

    # The first run's fields at the top (as before), the inline run beside them when both ran.
    payload = run.to_dict()
    if len(runs) > 1:
        payload["inline"] = runs["inline"].to_dict()
    emit_report(payload, json_out, render)


def _print_commit_latency(runs: dict[str, Any], target: Any) -> None:
    """Commit latency per maintenance mode (`bench store`)."""
    first = next(iter(runs.values()))
    latency = Table(title=f"commit latency ({first.commits} commits)")
    for column in ("maintenance", "p50 ms", "p99 ms", "max ms", "total s", "finish s", "trainings"):
        latency.add_column(column, justify="right")
    for mode, each in runs.items():
        latency.add_row(
            mode,
            f"{each.commit_p50_ms:.1f}",
            f"{each.commit_p99_ms:.1f}",
            f"{each.commit_max_ms:.1f}",
            f"{each.total_s:.2f}",
            f"{each.finish_s:.2f}",
            str(each.trainings),
        )
    target.print(latency)


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
