"""The Typer application and the entry point that turns user errors into clean messages."""

from __future__ import annotations

import sys

import typer

from vela_search import __version__

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


def _register_commands() -> None:
    # Importing the modules registers their commands on `app`.
    from vela_search.cli import (  # noqa: F401
        bench_cmd,
        bench_search_cmd,
        bench_serve_cmd,
        bench_words_cmd,
        check_cmd,
        demos_cmd,
        export_cmd,
        index_cmd,
        query_cmd,
        serve_cmd,
        train_cmd,
    )


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: run the app; user errors print one line and exit 1."""
    from vela_search.cli.common import run_app

    _register_commands()
    sys.exit(run_app(app, argv))
