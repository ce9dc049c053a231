"""What the routes share: the app's :class:`Service`, the token rule and answering one query.

Routes reach the service through ``request.app.state.service`` (set by ``create_app``), so a route module
holds no state of its own and a new module needs only ``router`` and a line in ``create_app``.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from typing import Any

from fastapi import Request
from starlette.exceptions import HTTPException

from vela_search.search import CheckedQuery, hit_record
from vela_search.serve.service import ServedIndex, Service

__all__ = ["answer", "check_token", "service_of"]


async def _disconnected(http: Request) -> None:
    """Return once the client has gone (the body is read: the next message is the disconnect)."""
    while (await http.receive())["type"] != "http.disconnect":
        pass


def service_of(request: Request) -> Service:
    """The service the app answers for (a FastAPI dependency)."""
    return request.app.state.service


def check_token(request: Request) -> None:
    """Every API call carries the token when the server has one (header, or ?token= for <audio>)."""
    token = service_of(request).settings.token
    if token is None:
        return
    given = request.headers.get("authorization", "")
    given = given[7:] if given.lower().startswith("bearer ") else request.query_params.get("token", "")
    if not secrets.compare_digest(given.encode(), token.encode()):
        raise HTTPException(401, "this server needs a token: send 'Authorization: Bearer TOKEN'")


async def answer(
    service: Service,
    served: ServedIndex,
    query: CheckedQuery,
    clip: Any = None,
    http: Request | None = None,
) -> dict[str, Any]:
    """Run ``query`` (checked where it came in) on ``served`` within the server's time limit; the
    response body of a search.

    When the client of ``http`` goes away first, the search is cancelled: work not started yet (its
    embedding, waiting for a batch) never runs.
    """
    started = time.perf_counter()
    timeout = service.settings.request_timeout_s
    search = asyncio.ensure_future(asyncio.wait_for(service.search(served, query, clip), timeout))
    gone = asyncio.ensure_future(_disconnected(http)) if http is not None else None
    try:
        await asyncio.wait([search] + ([gone] if gone else []), return_when=asyncio.FIRST_COMPLETED)
    finally:
        if gone is not None:
            gone.cancel()
    if not search.done():
        search.cancel()
        raise HTTPException(499, "the client went away")
    try:
        generation, hits = search.result()
    except TimeoutError:
        raise HTTPException(504, f"the search took longer than {timeout:g} s") from None
    notice = generation.searcher.notice
    return {
        "index": served.name,
        "generation": generation.number,
        "hits": [hit_record(hit, notice) for hit in hits],
        "notice": notice,
        "behind": served.note,
        "took_ms": (time.perf_counter() - started) * 1000,
    }
