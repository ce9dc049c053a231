"""``vela-search check``: find damaged index files and, with ``--repair``, commit an index without them."""

from __future__ import annotations

import typer
from rich.markup import escape

from vela_search.cli.common import console, err_console, print_json, resolve_index

INDEX_HELP = "Index name (under $VELA_INDEX_DIR or ./indexes) or directory."


def check_command(
    index: str | None = typer.Option(None, "--index", "-i", help=INDEX_HELP),
    repair: bool = typer.Option(
        False,
        "--repair",
        help="Drop damaged shards and mark the audio files they held for re-embedding at the next "
        "`vela-search index` run; re-encode damaged compressed codes from the exact vectors.",
    ),
    json_output: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Verify every data file of an index (checksums and contents); exit 1 when damage remains."""
    from vela_search.errors import StoreError
    from vela_search.peaks import check_peaks
    from vela_search.store.repair import check_index, repair_index

    root = resolve_index(index)
    with err_console.status("checking index files …", spinner="dots"):
        report = repair_index(root) if repair else check_index(root)
        peaks_checked, peaks_damaged = check_peaks(root, remove=repair)
    report.files_checked += peaks_checked
    if json_output:
        print_json({**report.to_dict(), "peaks": {"checked": peaks_checked, "damaged": peaks_damaged}})
    else:
        _print(report)
        _print_peaks(peaks_damaged, removed=repair)
    if peaks_damaged and not repair:
        raise StoreError(
            f"{len(peaks_damaged)} damaged waveform peaks file(s) in {root}; "
            f"run `vela-search check --index {root} --repair` (they are computed again from the audio)"
        )
    # An error (not typer.Exit) so that the exit status is 1 whatever the typer version.
    if report.damaged and not report.repaired:
        raise StoreError(
            f"{len(report.damaged)} damaged file(s) in {report.index_dir}; "
            f"run `vela-search check --index {report.index_dir} --repair`"
        )
    if report.unrepairable:
        raise StoreError(
            f"{len(report.unrepairable)} damaged file(s) in {report.index_dir} cannot be repaired"
        )


def _print(report) -> None:  # noqa: ANN001 - a CheckReport
    where = escape(report.index_dir)
    if report.ok:
        note = (
            f" ({report.unverified} written before checksums were recorded: parsed, not checksummed)"
            if report.unverified
            else ""
        )
        console.print(
            f"index {where}: {report.files_checked} files checked, all intact{note}", highlight=False
        )
        return
    for damage in report.damaged:
        err_console.print(f"[red]damaged:[/] {escape(damage.path)}: {escape(damage.reason)}", highlight=False)
    if not report.repaired:
        return
    console.print(
        f"repaired {where} (generation {report.repaired_generation}): dropped {len(report.dropped_shards)} "
        f"shard(s) with {report.rows_dropped} segment(s); {len(report.files_to_reembed)} audio file(s) will "
        "be embedded again by the next `vela-search index` run",
        highlight=False,
    )
    if report.codes_rebuilt:
        console.print(
            "compressed search codes re-trained and re-encoded from the exact vectors", highlight=False
        )
    for line in report.unrepairable:
        err_console.print(f"[red]cannot repair:[/] {escape(line)}", highlight=False)


def _print_peaks(damaged: list[tuple[str, str]], *, removed: bool) -> None:
    for path, reason in damaged:
        err_console.print(f"[red]damaged:[/] {escape(path)}: {escape(reason)}", highlight=False)
    if damaged and removed:
        console.print(
            f"removed {len(damaged)} damaged waveform peaks file(s): the page computes them again",
            highlight=False,
        )
