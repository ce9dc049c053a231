"""Helpers shared by the commands: consoles, JSON output, index locations, loading the embedder."""

from __future__ import annotations

import json
import os
import sys
from contextlib import nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.console import Console

if TYPE_CHECKING:
    from vela_search.embedding.embedder import VelaEmbedder

console = Console()
err_console = Console(stderr=True)

INDEX_HOME_ENV = "VELA_INDEX_DIR"
DEFAULT_INDEX_NAME = "default"


def run_app(app: typer.Typer, argv: list[str] | None = None) -> int:
    """Run ``app``; a :class:`VelaError` prints ``error: <message>`` on stderr and returns 1."""
    from vela_search.errors import VelaError

    try:
        app(args=argv, standalone_mode=False)
    except VelaError as exc:
        err_console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        return 1
    except typer.Exit as exc:
        return exc.exit_code
    except typer.Abort:
        err_console.print("aborted")
        return 130
    except KeyboardInterrupt:
        err_console.print("interrupted")
        return 130
    except Exception as exc:  # click usage errors carry their own exit code and formatting
        import click

        if isinstance(exc, click.exceptions.ClickException):
            exc.show()
            return exc.exit_code
        if isinstance(exc, click.exceptions.Exit):
            return exc.exit_code
        raise
    return 0


def index_home() -> Path:
    """Where named indexes live: ``$VELA_INDEX_DIR`` or ``./indexes``."""
    return Path(os.environ.get(INDEX_HOME_ENV) or "indexes")


def resolve_index(name_or_path: str | None) -> Path:
    """An index name (``default``) maps into :func:`index_home`; anything with a slash is a path."""
    value = name_or_path or DEFAULT_INDEX_NAME
    if os.sep in value or "/" in value or value.startswith("."):
        return Path(value).expanduser()
    return index_home() / value


def print_json(payload: Any) -> None:
    """Write one JSON document to stdout (no rich markup, stable key order)."""
    sys.stdout.write(json.dumps(payload, indent=2, ensure_ascii=False, default=str) + "\n")
    sys.stdout.flush()


def load_embedder(
    *,
    model: str | None,
    adapter: Path | None,
    demos: str | None,
    device: str,
    dtype: str = "auto",
    quantize: str | None = None,
    batch_tokens: int | None = None,
    revision: str | None = None,
    quiet: bool = False,
) -> VelaEmbedder:
    """Load the embedder with a status spinner and show the tiny-model notice where it applies."""
    from vela_search.embedding.embedder import VelaEmbedder

    label = model or "the adapter's base model"
    with err_console.status(f"loading {label} …", spinner="dots") if not quiet else nullcontext():
        embedder = VelaEmbedder.from_pretrained(
            model,
            revision=revision,
            adapter=adapter,
            demos=demos,
            device=device,
            dtype=dtype,
            quantize=None if quantize in (None, "none") else quantize,
            batch_tokens=batch_tokens,
        )
    if embedder.notice and not quiet:
        err_console.print(f"[yellow]note:[/] {embedder.notice}")
    return embedder


# Options shared by the commands that load a model.
MODEL_HELP = "Hub id, local checkpoint directory, or 'tiny' (offline random model for trying things out)."
ADAPTER_HELP = "LoRA adapter directory from `vela-search train`."
DEMOS_HELP = "In-context demos: 'default' (shipped text set), 'none', or a JSONL file."
DEVICE_HELP = "auto, cpu, cuda or cuda:N."
