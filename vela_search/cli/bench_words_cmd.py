"""``vela-search bench words``: vector-only, words (BM25) and hybrid search latency over a synthetic
library whose files carry UCS-style names and descriptions."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from vela_search.cli.bench_common import JSON_HELP, emit_report, phase_progress

# The target: hybrid p50 at most this many times vector-only p50.
_TARGET_HYBRID_RATIO = 1.5


def words(
    files: int = typer.Option(100_000, "--files", min=1, help="Synthetic files (one vector each)."),
    dim: int = typer.Option(256, "--dim", min=2, help="Vector dimension."),
    queries: int = typer.Option(200, "--queries", min=1, help="Queries per side (one or two words each)."),
    k: int = typer.Option(10, "-k", "--k", min=1, max=1000, help="Hits (files) per query."),
    commit_every: int = typer.Option(50_000, "--commit-every", min=1, help="Files per commit."),
    workdir: Path | None = typer.Option(None, "--workdir", help="Where the index is built (removed after)."),
    keep: bool = typer.Option(False, "--keep", help="Keep the built index in --workdir."),
    seed: int = typer.Option(0, "--seed", help="Seed of the vectors, words and queries."),
    json_out: str | None = typer.Option(None, "--json", metavar="OUT", help=JSON_HELP),
) -> None:
    """Build a store of synthetic files with words; p50/p99 of vector-only, words and hybrid search and the
    lexical index's size and build time."""
    from vela_search.bench.words import measure_words

    phases = {"build": ("indexing files", files), "search": ("searching", 1)}
    with phase_progress(phases) as advance:
        run = measure_words(
            files,
            dim=dim,
            queries=queries,
            k=k,
            commit_every=commit_every,
            workdir=workdir,
            keep=keep,
            seed=seed,
            progress=advance,
        )

    def render(target: Any) -> None:
        target.print(
            f"{run.files:,} files x {run.dim} ({run.factory}): built in {run.build_s:.1f} s; lexical index "
            f"built in {run.lexical_build_s:.1f} s, {run.lexical_bytes / 2**20:.1f} MiB beside "
            f"{run.vector_bytes / 2**20:.1f} MiB of shards and tables; after a commit of "
            f"{run.lexical_update_files:,} new and {run.lexical_update_files:,} removed files, the next "
            f"generation's lexical index made in {run.lexical_update_s:.1f} s ({run.lexical_update_mode})",
            highlight=False,
        )
        table = Table(title=f"top-{run.k} files, one query at a time")
        for column in ("search", "queries", "p50 ms", "p99 ms", "hits"):
            table.add_column(column, justify="right")
        for side in run.sides:
            table.add_row(
                side.mode,
                str(side.queries),
                f"{side.latency_ms_p50:.2f}",
                f"{side.latency_ms_p99:.2f}",
                f"{side.mean_hits:g}",
            )
        target.print(table)
        by_mode = {s.mode: s.latency_ms_p50 for s in run.sides}
        ratio = by_mode["hybrid"] / by_mode["vector"] if by_mode["vector"] else float("inf")
        verdict = "met" if ratio <= _TARGET_HYBRID_RATIO else "missed"
        target.print(f"hybrid p50 / vector p50 = {ratio:.2f} (target <= {_TARGET_HYBRID_RATIO}: {verdict})")
        for note in run.notes:
            target.print(f"note: {note}", highlight=False)

    emit_report(run.to_dict(), json_out, render)
