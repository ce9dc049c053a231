"""``vela-search bench search``: the store's search of a synthetic library built by the writer; with
``--data``, every index kind the policy can choose beside the vector libraries alone."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from vela_search.cli.bench_common import JSON_HELP, emit_report, phase_progress
from vela_search.cli.common import one_of

# The targets on the 2-core reference machine (docs/benchmarks.md).
_TARGET_RECALL = 0.95
_TARGET_P50_MS = 50.0
_TARGET_MEMORY_FRACTION = 1 / 8


def _made_folder(value: Path | None) -> Path | None:
    """The --workdir folder, made if missing (the documented commands name one that may not exist yet)."""
    if value is None:
        return None
    try:
        value.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise typer.BadParameter(f"cannot use {value} as a work folder: {e.strerror or e}") from None
    return value


# The peers `--data` can measure (bench.search_compare.all_peers(), not imported here: it imports NumPy).
_PEER_NAMES = ("faiss", "hnswlib", "usearch")


def _peer_list(value: str) -> tuple[str, ...]:
    """The --peers names, each one of `_PEER_NAMES`, in the order given."""
    names = tuple(dict.fromkeys(n.strip() for n in value.split(",") if n.strip()))
    unknown = [n for n in names if n not in _PEER_NAMES]
    if unknown or not names:
        raise typer.BadParameter(f"{value!r}: give one or more of {', '.join(_PEER_NAMES)}, comma-separated")
    return names


def search_index(
    vectors: int = typer.Option(200_000, "--vectors", min=1, help="Synthetic vectors to index."),
    dim: int = typer.Option(4096, "--dim", min=2, help="Vector dimension (4096 for Qwen2-Audio-7B)."),
    queries: int = typer.Option(200, "--queries", min=1, help="Fresh queries (recall and latency)."),
    k: int = typer.Option(10, "-k", "--k", min=1, max=1000, help="Hits per query (recall@k)."),
    exact_queries: int = typer.Option(
        20, "--exact-queries", min=1, help="Of the queries, how many also run as an exact scan."
    ),
    max_index_memory: str | None = typer.Option(
        None,
        "--max-index-memory",
        metavar="SIZE",
        help="Memory budget of the automatic choice, e.g. 512M or 1G (default: the store's, 4G; with "
        "--data, the small budget that forces the compressed kind, default 1/10 of the fp16 vectors).",
    ),
    factory: str = typer.Option(
        "auto", "--factory", help="'auto' (the store's automatic choice) or a FAISS factory to force."
    ),
    workdir: Path | None = typer.Option(
        None,
        "--workdir",
        callback=_made_folder,
        help="Where the index is built (made if missing; the index is removed after).",
    ),
    keep: bool = typer.Option(
        False, "--keep", help="Keep the built index (with --data: every store built) in --workdir."
    ),
    seed: int = typer.Option(0, "--seed", help="Seed of the vectors and queries."),
    data: str | None = typer.Option(
        None,
        "--data",
        callback=one_of("hard", "clustered"),
        help="Compare every index kind (and hnswlib, usearch, FAISS alone) on this data set: 'hard' "
        "(variance ~ i^-0.5 over all dims, rotated, clustered) or 'clustered' (today's set). With --json "
        "OUT, each row is also appended to OUT.rows.jsonl as soon as it is measured.",
    ),
    peers: str = typer.Option(
        ",".join(_PEER_NAMES), "--peers", help="With --data: the peers to measure, comma-separated."
    ),
    no_peers: bool = typer.Option(False, "--no-peers", help="With --data: skip hnswlib, usearch and FAISS."),
    no_default: bool = typer.Option(
        False, "--no-default", help="With --data: skip the store under the default budget (measure the rest)."
    ),
    no_compressed: bool = typer.Option(
        False, "--no-compressed", help="With --data: skip the store forced to compressed codes."
    ),
    json_out: str | None = typer.Option(None, "--json", metavar="OUT", help=JSON_HELP),
) -> None:
    """Build an index of synthetic clustered vectors through the writer; recall@k, latency and memory of
    its search, with the exact search of the same store and filtered searches (0.1%, 1%, 10%, 100% of the
    rows) beside it."""
    from vela_search.bench.search_index import measure_index_search
    from vela_search.cli.common import parse_memory_option

    budget = parse_memory_option(max_index_memory)
    if data is not None:
        sides = (() if no_peers else _peer_list(peers), not no_default, not no_compressed)
        _compare(vectors, dim, data, queries, k, budget, sides, workdir, seed, json_out, keep)
        return
    phases = {"build": ("indexing vectors", vectors), "search": ("searching", 2)}
    with phase_progress(phases) as advance:
        run = measure_index_search(
            vectors,
            dim=dim,
            queries=queries,
            k=k,
            exact_queries=exact_queries,
            max_index_memory=budget,
            factory=factory,
            workdir=workdir,
            keep=keep,
            seed=seed,
            progress=advance,
        )

    emit_report(run.to_dict(), json_out, lambda target: _render(run, target))


def _compare(
    vectors: int,
    dim: int,
    data: str,
    queries: int,
    k: int,
    small: int | None,
    sides: tuple[tuple[str, ...], bool, bool],
    workdir: Path | None,
    seed: int,
    json_out: str | None,
    keep: bool,
) -> None:
    """``--data``: every kind of the policy and the peers (``--max-index-memory`` is the small budget
    that forces the compressed kind)."""
    from vela_search.bench.search_compare import compare_search, missing_peers

    peers, default, compressed = sides
    missing = [name for name in missing_peers() if name in peers]
    if missing:
        typer.echo(
            f"note: {', '.join(missing)} not installed: measured without them; "
            "`pip install 'vela-search[bench]'` adds the peers",
            err=True,
        )
    phases = {"generate": ("generating vectors", vectors), "build": ("indexing vectors", vectors)}
    phases["peers"] = ("peers", 1)
    with phase_progress(phases) as advance:
        run = compare_search(
            vectors,
            dim=dim,
            data=data,
            queries=queries,
            k=k,
            small_memory=small,
            peer_names=peers,
            workdir=workdir,
            seed=seed,
            progress=advance,
            report=_row_log(json_out),
            default=default,
            compressed=compressed,
            keep=keep,
        )
    emit_report(run.to_dict(), json_out, lambda target: _render_compare(run, target))


def _binary_size(n: int) -> str:
    for unit in ("B", "KiB", "MiB"):
        if n < 1024 * 10 or unit == "MiB":
            return f"{n:,.0f} {unit}"
        n /= 1024
    return f"{n:,.0f} MiB"


def _row_log(json_out: str | None) -> Any:
    """Where each row goes as soon as it is measured: appended as a JSON line to ``OUT.rows.jsonl`` beside
    the ``--json`` file (a long run's results survive an interruption), or nowhere."""
    import json
    from dataclasses import asdict

    if json_out in (None, "-"):
        return None
    path = Path(f"{json_out}.rows.jsonl")

    def log(row: Any) -> None:
        with path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(asdict(row)) + "\n")

    return log


def _render_compare(run: Any, target: Any) -> None:
    """The comparison as text: one row per system and setting, then each system's cheapest row at
    recall >= 0.95 and its cost against the best peer's."""
    from vela_search.bench.search_compare import best_at

    target.print(
        f"{run.data} set, {run.vectors:,} x {run.dim}, {run.queries} fresh queries, top-{run.k}, one "
        f"thread; compressed forced by a budget of {_binary_size(run.small_memory)}",
        highlight=False,
    )
    table = Table(title="recall / CPU time per query / memory")
    columns = ("system", "setting", f"recall@{run.k}", "CPU ms/query", "p50 ms", "disk reads/query")
    for column in (*columns, "memory MiB", "build s"):
        table.add_column(column, justify="left" if column in ("system", "setting") else "right")
    for row in run.rows:
        table.add_row(
            row.system,
            row.setting,
            f"{row.recall_at_k:.4f}",
            f"{row.cpu_ms_per_query:.3f}",
            f"{row.wall_ms_p50:.3f}",
            f"{row.major_faults_per_query:.2f}",
            f"{row.memory_bytes / 2**20:,.1f}",
            f"{row.build_s:.1f}",
        )
    target.print(table)
    best = best_at(run.rows, _TARGET_RECALL)
    peers = [r for name, r in best.items() if not name.startswith("vela")]
    top = min(peers, key=lambda r: r.cpu_ms_per_query) if peers else None
    for name, row in best.items():
        ratio = f", {row.cpu_ms_per_query / top.cpu_ms_per_query:.2f}x the best peer" if top else ""
        target.print(
            f"at recall >= {_TARGET_RECALL}: {name} {row.setting}: {row.cpu_ms_per_query:.3f} ms CPU{ratio}",
            highlight=False,
        )
    for label, choice in run.choices.items():
        target.print(f"store ({label}): {choice}", highlight=False)
    for note in run.notes:
        target.print(f"note: {note}", highlight=False)


def _render(run: Any, target: Any) -> None:
    """The run as text on ``target`` (a rich console): the build, the search table, memory and targets."""
    choice = run.choice
    target.print(
        f"{run.vectors:,} x {run.dim} synthetic vectors ({run.clusters} clusters, seed {run.seed}): "
        f"built in {run.build_s:.1f} s ({run.commits} commits, {run.shards} shards; generating them "
        f"{run.generate_s:.1f} s more), {run.faiss_threads} FAISS threads",
        highlight=False,
    )
    detail = ""
    if choice.get("choice") == "compressed":
        detail = (
            f", nprobe {choice.get('nprobe')}, re-rank {choice.get('rerank')}, "
            f"recall@10 measured at training {choice.get('recall_at_10')}"
        )
    target.print(f"search index: {run.factory}{detail}", highlight=False)
    table = Table(title=f"top-{run.k} of {run.vectors:,} x {run.dim}, one query at a time")
    for column in ("search", "queries", f"recall@{run.k}", "p50 ms", "p99 ms"):
        table.add_column(column, justify="right" if column != "search" else "left")
    for side in (run.default, run.exact, *run.filtered):
        if side is not None:
            table.add_row(
                side.mode,
                str(side.queries),
                f"{side.recall_at_k:.4f}",
                f"{side.latency_ms_p50:.2f}",
                f"{side.latency_ms_p99:.2f}",
            )
    target.print(table)
    target.print(
        f"index memory {run.index_memory_bytes / 2**20:,.1f} MiB = {run.memory_fraction:.4f} of the "
        f"fp16 vectors ({run.fp16_bytes / 2**20:,.1f} MiB); "
        f"peak RSS {run.peak_rss_bytes / 2**30:.2f} GiB",
        highlight=False,
    )
    if run.default.mode == "compressed":
        met = (
            run.default.recall_at_k >= _TARGET_RECALL,
            run.default.latency_ms_p50 <= _TARGET_P50_MS,
            run.memory_fraction <= _TARGET_MEMORY_FRACTION,
        )
        verdict = ", ".join(
            f"{name} {'met' if ok else 'MISSED'}"
            for name, ok in zip(("recall >= 0.95", "p50 <= 50 ms", "memory <= 1/8"), met, strict=True)
        )
        target.print(f"targets: {verdict}", highlight=False)
    for note in run.notes:
        target.print(f"note: {note}", highlight=False)
