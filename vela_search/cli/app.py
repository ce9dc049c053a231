"""The Typer application: every command registered in one place, and the console-script entry point.

Registration runs one way: this module imports the command functions (and the ``bench`` and ``demos``
groups) from their modules and adds them to :data:`app`, in the order ``vela-search --help`` lists them;
no command module imports the app. The command modules import their heavy libraries inside the commands,
so building the app (and ``vela-search --help``) stays instant.
"""

from __future__ import annotations

import sys

import typer

from vela_search import __version__
from vela_search.cli.bench_cmd import bench_app
from vela_search.cli.check_cmd import check_command
from vela_search.cli.common import run_app
from vela_search.cli.demos_cmd import demos_app
from vela_search.cli.export_cmd import export_command
from vela_search.cli.index_cmd import compact_command, index_command, info_command
from vela_search.cli.query_cmd import query
from vela_search.cli.serve_cmd import serve
from vela_search.cli.train_cmd import train_command

__all__ = ["app", "main"]

app = typer.Typer(
    name="vela-search",
    help="Audio-text search over your sound collection with Vela embeddings (Qwen2-Audio).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # Click's plain help: flags read as flags (`--json`, not `--json <bool>` as Typer's rich panels show).
    rich_markup_mode=None,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"vela-search {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version."
    ),
) -> None:
    """Audio-text search over your sound collection with Vela embeddings (Qwen2-Audio)."""


app.command("check")(check_command)
app.command("export")(export_command)
app.command("index")(index_command)
app.command("info")(info_command)
app.command("compact")(compact_command)
app.command("query")(query)
app.command("serve")(serve)
app.command("train")(train_command)
app.add_typer(bench_app, name="bench")
app.add_typer(demos_app, name="demos")


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: run the app; user errors print one line and exit 1."""
    sys.exit(run_app(app, argv))
