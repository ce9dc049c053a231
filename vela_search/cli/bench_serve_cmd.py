"""``vela-search bench serve``: the service under concurrent loopback load, batching on and off."""

from __future__ import annotations

from typing import Any

import typer
from rich.table import Table

from vela_search.cli.bench_common import JSON_HELP, emit_report
from vela_search.cli.common import DEVICE_HELP, err_console, resolve_index


def serve_load(
    index: str | None = typer.Option(None, "--index", "-i", help="Index to serve (name or directory)."),
    clients: int = typer.Option(8, "--clients", min=1, help="Concurrent clients of the loaded runs."),
    queries: int = typer.Option(20, "--queries", min=1, help="Text queries per client."),
    k: int = typer.Option(10, "-k", min=1, max=1000, help="Hits per query."),
    device: str = typer.Option("auto", "--device", help=DEVICE_HELP),
    json_out: str | None = typer.Option(None, "--json", metavar="OUT", help=JSON_HELP),
    commits: bool = typer.Option(
        False, "--commits", help="Also load a copy of the index while a writer commits to it every second."
    ),
) -> None:
    """Latency (p50/p99), queries/s and errors of `vela-search serve` through HTTP, batching on and off."""
    from vela_search.bench.serve_load import run_serve_benchmark
    from vela_search.store import AudioIndex

    root = resolve_index(index)
    with AudioIndex.open(root) as idx:  # a missing or empty index fails before any server starts
        from vela_search.search import check_not_empty

        check_not_empty(idx)
    with err_console.status("starting …", spinner="dots") as status:
        report = run_serve_benchmark(
            root,
            clients=clients,
            queries=queries,
            k=k,
            device=device,
            progress=status.update,
            commits=commits,
        )

    def render(target: Any) -> None:
        table = Table(title=f"vela-search serve, {report['model']}, {report['device']}: {root}")
        for column in (
            "batching",
            "clients x queries",
            "queries/s",
            "p50 ms",
            "p99 ms",
            "errors",
            "forwards",
        ):
            table.add_column(column, justify="right")
        for run in report["runs"]:
            table.add_row(
                ("on" if run["batching"] else "off")
                + (f", {run['commits']} commits" if run["commits"] else ""),
                f"{run['clients']} x {run['per_client']}",
                f"{run['queries_per_s']:.1f}",
                f"{run['p50_ms']:.1f}",
                f"{run['p99_ms']:.1f}",
                str(run["errors"]),
                str(run["batches"]),
            )
        target.print(table)
        if report["speedup"] is not None:
            target.print(f"batched throughput under load: {report['speedup']:.2f}x one query per forward")
        if report.get("p99_with_commits_ratio") is not None:
            ratio = report["p99_with_commits_ratio"]
            target.print(f"p99 with a commit every second: {ratio:.2f}x p99 without")
        for run in report["runs"]:
            for sample in run["error_samples"]:
                target.print(f"[red]error:[/] {sample}")

    emit_report(report, json_out, render)
    if report["errors"]:
        raise typer.Exit(1)
