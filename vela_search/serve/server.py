"""Running the service under uvicorn: the bind rule, serve.json beside each index, clean shutdown."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import signal
import socket
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from vela_search.errors import VelaError
from vela_search.serve.discovery import remove_serve_file, write_serve_file
from vela_search.serve.service import ServeSettings, Service

if TYPE_CHECKING:
    from vela_search.indexing.watch import WatchEvent

__all__ = ["check_bind", "check_port", "is_loopback", "run_server"]

_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def is_loopback(host: str) -> bool:
    """Whether ``host`` is reachable from this machine only (127.0.0.0/8, ::1, localhost)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_bind(host: str, token: str | None) -> None:
    """Refuse to expose the index beyond this machine without a token.

    Raises:
        VelaError: ``host`` is not a loopback address and no token is set.
    """
    if not is_loopback(host) and not token:
        raise VelaError(
            f"--host {host} makes the index and its audio reachable from other machines; set a token "
            "with --token TOKEN or the VELA_SERVE_TOKEN environment variable (clients then send "
            "'Authorization: Bearer TOKEN'), or serve on 127.0.0.1"
        )


def check_port(host: str, port: int) -> None:
    """Refuse a port that another process listens on (port 0, any free port, always passes).

    Raises:
        VelaError: the address cannot be bound.
    """
    if port == 0:
        return
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise VelaError(
                f"could not listen on {host}:{port} ({exc.strerror}; is the port in use?)"
            ) from None


def run_server(
    roots: list[tuple[str, Path]],
    settings: ServeSettings,
    *,
    on_ready: Callable[[str], None] | None = None,
    on_watch_event: Callable[[str, WatchEvent], None] | None = None,
) -> None:
    """Load the indexes' models, serve until Ctrl-C or SIGTERM, then stop cleanly.

    Args:
        roots: ``(name, directory)`` of each index, the default first.
        settings: bind address, token, batching and limits.
        on_ready: called with the server's URL once it accepts connections.
        on_watch_event: with ``settings.watch``, called with ``(index name, event)`` as the watchers work.

    Raises:
        VelaError: a non-loopback bind without a token; errors opening an index or loading a model.
    """
    import uvicorn

    from vela_search.serve.app import create_app

    check_bind(settings.host, settings.token)
    check_port(settings.host, settings.port)  # before the model loads: a busy port fails at once
    service = Service.open(roots, settings)
    if settings.watch is not None:
        from vela_search.serve.folder_watch import FolderWatchers

        service.watchers = FolderWatchers(roots, service.models, settings.watch, on_event=on_watch_event)
        service.watchers.start()  # stopped by the app's shutdown (Service.close), before the models
    config = uvicorn.Config(
        create_app(service),
        host=settings.host,
        port=settings.port,
        log_level="warning",
        timeout_keep_alive=5,
        timeout_graceful_shutdown=5,
        access_log=settings.access_log,
    )
    if settings.access_log:
        # uvicorn sets its access logger to the (quiet) log level above: requests are still logged.
        logging.getLogger("uvicorn.access").setLevel(logging.INFO)
    server = uvicorn.Server(config)

    async def announce() -> None:
        while not server.started:
            if server.should_exit:
                return
            await asyncio.sleep(0.02)
        port = server.servers[0].sockets[0].getsockname()[1]
        host = "127.0.0.1" if settings.host in ("0.0.0.0", "::", "") else settings.host
        url = f"http://{'[' + host + ']' if ':' in host else host}:{port}"
        for name, root in roots:
            write_serve_file(root, url=url, name=name, token_required=settings.token is not None)
        if on_ready is not None:
            on_ready(url)

    async def main() -> None:
        watcher = asyncio.create_task(announce())
        try:
            await server.serve()
        finally:
            watcher.cancel()

    # uvicorn stops gracefully on SIGINT/SIGTERM, then re-raises the signal to the handler that was there
    # before it started: these record it instead, so that the shutdown ends here, cleanly, with status 0.
    stops: list[int] = []
    previous = {sig: signal.signal(sig, lambda number, frame: stops.append(number)) for sig in _STOP_SIGNALS}
    try:
        asyncio.run(main())
    except SystemExit as exc:  # uvicorn exits when it cannot bind (it logged the reason)
        if server.started:
            raise
        raise VelaError(f"could not listen on {settings.host}:{settings.port} (is the port in use?)") from exc
    finally:
        if service.watchers is not None:
            service.watchers.stop()  # when the app's shutdown did not run (idempotent otherwise)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        for _name, root in roots:
            remove_serve_file(root)
