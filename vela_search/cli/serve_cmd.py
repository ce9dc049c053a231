"""``vela-search serve``: the long-lived search service (JSON API and a page to search and listen)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from vela_search.cli.common import DEVICE_HELP, err_console, resolve_index

if TYPE_CHECKING:
    from vela_search.indexing.watch import WatchEvent

TOKEN_ENV = "VELA_SERVE_TOKEN"  # mirrors vela_search.serve.discovery.TOKEN_ENV (kept lazy for --help)


def serve(
    index: list[str] = typer.Option(
        None,
        "--index",
        "-i",
        help="Index to serve (name under $VELA_INDEX_DIR or ./indexes, or a directory); repeat for several, "
        "the first is the default. Default: 'default'.",
    ),
    host: str = typer.Option(
        "127.0.0.1", "--host", help="Address to listen on (other than loopback needs a token)."
    ),
    port: int = typer.Option(8000, "--port", "-p", help="Port to listen on (0: any free port)."),
    token: str | None = typer.Option(
        None,
        "--token",
        help=f"Require this token on every API call ('Authorization: Bearer TOKEN'). Default: ${TOKEN_ENV}.",
    ),
    batch_window_ms: float = typer.Option(
        2.0, "--batch-window-ms", help="How long a query waits for others to share its forward."
    ),
    max_batch: int = typer.Option(32, "--max-batch", help="Queries per forward at most (1: no batching)."),
    max_upload_mb: float = typer.Option(50.0, "--max-upload-mb", help="Largest audio upload accepted."),
    max_upload_seconds: float = typer.Option(
        600.0, "--max-upload-seconds", help="Longest audio upload accepted, in seconds."
    ),
    timeout: float = typer.Option(30.0, "--timeout", help="Seconds a search may take before it fails (504)."),
    max_queue: int = typer.Option(
        64, "--max-queue", help="Requests waiting per index at most; beyond, 503 with Retry-After at once."
    ),
    max_json_kb: float = typer.Option(64.0, "--max-json-kb", help="Largest JSON request body accepted."),
    access_log: bool = typer.Option(
        True, "--access-log/--no-access-log", help="Log one line per request (the access log, on stdout)."
    ),
    device: str = typer.Option("auto", "--device", help=DEVICE_HELP),
    watch: bool = typer.Option(
        False,
        "--watch",
        help="Also keep each index following its folders, as `index --watch` does, in this process "
        "(searches see new files as they are committed).",
    ),
    settle: float = typer.Option(
        2.0, "--settle", metavar="SECONDS", help="With --watch: add a file once unchanged this long."
    ),
    max_wait: float = typer.Option(
        30.0,
        "--max-wait",
        metavar="SECONDS",
        help="With --watch: run at the latest this long after a change.",
    ),
    watch_poll: bool = typer.Option(
        False, "--watch-poll", help="With --watch: poll for changes (network drives)."
    ),
    poll_interval: float = typer.Option(
        1.0, "--poll-interval", metavar="SECONDS", help="With --watch-poll: the polling period."
    ),
) -> None:
    """Serve indexes over HTTP: a JSON API (/docs), a page to search and listen (/), live index updates."""
    from vela_search.errors import VelaError
    from vela_search.serve.server import check_bind, check_port, run_server
    from vela_search.serve.service import ServeSettings

    token = token or os.environ.get(TOKEN_ENV) or None
    check_bind(host, token)  # before loading any model
    if max_batch < 1 or batch_window_ms < 0 or max_upload_mb <= 0 or max_upload_seconds <= 0 or timeout <= 0:
        raise VelaError("--max-batch must be >= 1, --batch-window-ms >= 0, the limits and --timeout > 0")
    if max_queue < 1 or max_json_kb <= 0:
        raise VelaError("--max-queue must be >= 1 and --max-json-kb > 0")
    if not 0 <= port <= 65535:
        raise VelaError(f"--port must be from 0 to 65535, got {port}")
    check_port(host, port)
    following = None
    if watch:
        from vela_search.cli.watch_view import watch_settings

        following = watch_settings(settle, max_wait, watch_poll, poll_interval)
    roots: list[tuple[str, Path]] = []
    for value in index or ["default"]:
        root = resolve_index(value)
        name = root.name
        if any(name == n for n, _ in roots):
            raise VelaError(f"two indexes would be served as {name!r}; give directories with other names")
        roots.append((name, root))
    settings = ServeSettings(
        host=host,
        port=port,
        token=token,
        batch_window_s=batch_window_ms / 1000,
        max_batch=max_batch,
        max_upload_bytes=int(max_upload_mb * 1_000_000),
        max_upload_seconds=max_upload_seconds,
        request_timeout_s=timeout,
        max_queue=max_queue,
        max_json_bytes=int(max_json_kb * 1024),
        access_log=access_log,
        device=device,
        watch=following,
    )

    def ready(url: str) -> None:
        names = ", ".join(name for name, _ in roots)
        err_console.print(f"serving {names} at [bold]{url}[/] (page: {url}/, API: {url}/docs); Ctrl-C stops")

    from vela_search.cli.watch_view import check_not_locked
    from vela_search.indexing.preload import require_index

    for _, root in roots:
        require_index(root)  # a missing index is said before the model loads
        if watch:
            check_not_locked(root)  # and one that another process writes
    err_console.print("loading the model …")
    run_server(roots, settings, on_ready=ready, on_watch_event=_say if watch else None)
    err_console.print("stopped")


def _say(name: str, event: WatchEvent) -> None:
    """One stderr line per thing a watcher does, prefixed with the index's name."""
    from rich.markup import escape

    from vela_search.cli.watch_view import describe_event

    line = describe_event(event)
    if line is not None:
        err_console.print(f"{escape(name)}: {line}", highlight=False)
