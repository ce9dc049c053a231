"""`vela-search export`: an index's live vectors and metadata as Parquet, for vector databases."""

from __future__ import annotations

from pathlib import Path

import typer

from vela_search.cli.common import console, err_console, print_json, resolve_index


def export_command(
    index_argument: str | None = typer.Argument(
        None,
        metavar="[NAME]",
        help="Deprecated: the index as a positional argument; use --index NAME like the other commands.",
        show_default=False,
    ),
    index: str | None = typer.Option(
        None,
        "--index",
        "-i",
        help="Index name (under $VELA_INDEX_DIR or ./indexes) or directory. Default: 'default'.",
    ),
    to: Path = typer.Option(..., "--to", help="Folder for segments.parquet and files.parquet (created)."),
    dtype: str = typer.Option(
        "fp16", "--dtype", help="Vector precision: fp16 (what the default index stores) or fp32."
    ),
    json_output: bool = typer.Option(False, "--json", help="Print what was written as JSON."),
) -> None:
    """Export live vectors and their segment and file metadata as Parquet, for vector databases."""
    from vela_search.errors import VelaError
    from vela_search.store.export import export_index

    if index_argument is not None:
        if index is not None and index != index_argument:
            raise VelaError(
                f"two indexes given ({index_argument!r} and --index {index!r}): give --index only"
            )
        err_console.print(
            f"[yellow]note:[/] NAME as a positional argument is deprecated; use --index {index_argument}",
            highlight=False,
        )
        index = index_argument
    dtypes = {"fp16": "float16", "float16": "float16", "fp32": "float32", "float32": "float32"}
    if dtype not in dtypes:
        raise VelaError(f"--dtype must be fp16 or fp32, not {dtype!r}")
    with err_console.status("exporting …", spinner="dots"):
        report = export_index(resolve_index(index), to, dtype=dtypes[dtype])  # type: ignore[arg-type]
    if json_output:
        print_json(report.to_dict())
        return
    console.print(
        f"{report.segments} segments ({report.dim}-dim {dtype} vectors) → {report.segments_file}\n"
        f"{report.files} files → {report.files_file}",
        highlight=False,
        soft_wrap=True,  # paths stay whole, for copying
    )
