"""Helpers shared by the commands: consoles, JSON output, index locations, loading the embedder."""

from __future__ import annotations

import json
import os
import re
import sys
from contextlib import nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.console import Console
from rich.markup import escape

if TYPE_CHECKING:
    from vela_search.embedding.embedder import VelaEmbedder

console = Console()
err_console = Console(stderr=True)

INDEX_HOME_ENV = "VELA_INDEX_DIR"
DEFAULT_INDEX_NAME = "default"


def run_app(app: typer.Typer, argv: list[str] | None = None) -> int:
    """Run ``app`` as the ``vela-search`` command and return its exit status.

    The Click main loop is run here rather than through ``app(standalone_mode=...)``: Typer 0.26+ vendors
    its own Click whose exceptions are not ``click``'s, and in non-standalone mode it *returns* the status
    of ``typer.Exit`` and of Ctrl-C instead of raising. Owning the loop keeps one behaviour for every Typer
    the project allows:

    - usage errors (unknown flag, bad value, missing option, unknown command) print Click's usage message
      on stderr and return 2;
    - a :class:`VelaError` prints ``error: <message>`` on stderr and returns its ``exit_code`` (1, or 130
      for an interrupted run, whose message is printed as it is);
    - Ctrl-C anywhere else prints ``interrupted`` and returns 130;
    - a closed stdout pipe (``vela-search query ... | head -1``) ends quietly with 1.

    Anything else is a bug and keeps its traceback.
    """
    from vela_search.errors import EXIT_INTERRUPTED, RunInterrupted, VelaError

    quiet_libraries()
    click_exceptions = _click_exceptions()
    # Typer 0.26+ has its own Exit/Abort (Click's in older versions): catch whichever this Typer raises.
    exits = (typer.Exit, getattr(click_exceptions, "Exit", typer.Exit))
    aborts = (typer.Abort, getattr(click_exceptions, "Abort", typer.Abort))
    command = typer.main.get_command(app)
    args = sys.argv[1:] if argv is None else list(argv)
    try:
        with command.make_context("vela-search", args) as ctx:
            command.invoke(ctx)
    except click_exceptions.ClickException as exc:  # usage errors and the no-argument help: exit 2
        exc.show()
        return exc.exit_code
    except exits as exc:  # --help, --version, typer.Exit(n)
        return int(getattr(exc, "exit_code", 0) or 0)
    except aborts:  # a declined prompt, as Click reports it
        err_console.print("aborted")
        return 1
    except VelaError as exc:
        if isinstance(exc, RunInterrupted):
            err_console.print(str(exc), highlight=False, soft_wrap=True, markup=False)
        else:
            err_console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
        return exc.exit_code
    except KeyboardInterrupt:
        err_console.print("interrupted")
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader went away: silence the final flush of the interpreter and stop.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1
    return 0


def quiet_libraries() -> None:
    """Keep the libraries' own warnings, logs and progress bars off the user's terminal.

    transformers, peft and torch print deprecation notices a user cannot act on (transformers' FutureWarning
    about ``is_gradient_checkpointing`` on every load of a LoRA adapter), and their own progress bars would
    tear ours. What matters reaches the user as vela-search's own ``note:``/``error:`` lines. A user who
    asks for warnings (``PYTHONWARNINGS``, ``-W``) gets them; exported variables are respected.
    """
    import warnings

    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")  # read when transformers is imported
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    if not sys.warnoptions:
        for category in (FutureWarning, DeprecationWarning, PendingDeprecationWarning, UserWarning):
            warnings.filterwarnings("ignore", category=category)


def _click_exceptions() -> Any:
    """The exceptions module of the Click that Typer runs on (vendored as ``typer._click`` since 0.26)."""
    import importlib

    # typer.BadParameter is Click's own class re-exported, so its module is the right one in every version.
    return importlib.import_module(typer.BadParameter.__module__)


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

    if model is not None:
        label = model
    elif adapter is not None:
        label = f"the base model adapter {adapter} records"
    else:
        from vela_search.embedding.backbone import DEFAULT_MODEL

        label = DEFAULT_MODEL
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


def check_device(value: str | None) -> str | None:
    """``--device`` callback: auto, cpu, cuda or cuda:N, checked when the command line is parsed.

    Checked as text, without importing torch, so a typo is a usage error at once (torch would raise a
    ``RuntimeError`` after the model started loading).
    """
    if value is None:
        return value
    normalized = value.strip().lower()
    if normalized in ("auto", "cpu", "cuda") or re.fullmatch(r"cuda:\d+", normalized):
        return normalized
    raise typer.BadParameter(f"{value!r} is not a device; use auto, cpu, cuda or cuda:N (e.g. cuda:0)")


def one_of(*choices: str) -> Any:
    """An option callback that accepts only ``choices`` (and an unset option), as a usage error otherwise.

    Used instead of an Enum type so that help and ``--json`` output keep plain strings.
    """

    def check(value: str | None) -> str | None:
        if value is None or value in choices:
            return value
        raise typer.BadParameter(f"{value!r} is not one of {', '.join(choices)}")

    return check


DTYPE_CHOICES = ("auto", "bf16", "fp16", "fp32")  # mirrors embedding.backbone.DTYPES (no torch import here)

# Options shared by the commands that load a model.
MODEL_HELP = "Hub id, local checkpoint directory, or 'tiny' (offline random model for trying things out)."
ADAPTER_HELP = "LoRA adapter directory from `vela-search train`."
DEMOS_HELP = "In-context demos: 'default' (shipped text set), 'none', or a JSONL file."
DEVICE_HELP = "auto, cpu, cuda or cuda:N."


def parse_memory_option(text: str | None) -> int | None:
    """Bytes of --max-index-memory, or None when not given (one-line error otherwise)."""
    if text is None:
        return None
    from vela_search.errors import VelaError
    from vela_search.store.index_choice import parse_size

    try:
        return parse_size(text)
    except ValueError as e:
        raise VelaError(f"--max-index-memory: {e}") from None
