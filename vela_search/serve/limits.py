"""Body limits counted on the stream: a request body is refused with 413 as soon as it passes its limit.

``Content-Length`` is only a claim (and a chunked body has none), so the limit is enforced on the bytes
actually received: the ASGI ``receive`` channel is wrapped and raises a 413 the moment the running count
passes the limit, before the route (or the multipart parser spooling an upload) sees a byte beyond it.
Uploads (multipart) have the server's upload limit; every other body (JSON) a small one of its own, so a
text query can never make the server read megabytes.
"""

from __future__ import annotations

import json
from typing import Any

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["DEFAULT_JSON_LIMIT", "MULTIPART_FRAMING", "BodyLimit", "BodyTooLargeError"]

DEFAULT_JSON_LIMIT = 64 * 1024
# Multipart framing (boundaries, part headers, the small form fields) around the uploaded file itself.
MULTIPART_FRAMING = 64 * 1024


class BodyTooLargeError(HTTPException):
    """The request body passed its limit (an HTTP 413; FastAPI lets it through its body parsing)."""

    def __init__(self, message: str) -> None:
        super().__init__(413, message)


class BodyLimit:
    """ASGI middleware: at most ``upload_limit`` bytes of file per multipart body, ``json_limit`` per other.

    Args:
        app: the application.
        upload_limit: the largest audio upload, in bytes (multipart framing is allowed on top).
        json_limit: the largest other body (JSON), in bytes.
    """

    def __init__(self, app: ASGIApp, *, upload_limit: int, json_limit: int = DEFAULT_JSON_LIMIT) -> None:
        self.app = app
        self.upload_limit = upload_limit
        self.json_limit = json_limit

    def limit_of(self, scope: Scope) -> tuple[int, str]:
        """The byte limit of this request's body and the message that refuses it."""
        headers = dict(scope.get("headers") or [])
        content_type = headers.get(b"content-type", b"").decode("latin-1").lower()
        if content_type.startswith("multipart/"):
            limit = self.upload_limit
            return (
                limit + MULTIPART_FRAMING,
                f"the upload is larger than this server's limit of {limit / 1e6:g} MB",
            )
        return (
            self.json_limit,
            f"the request body is larger than this server's limit of {self.json_limit} bytes",
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit, message = self.limit_of(scope)
        declared = dict(scope.get("headers") or []).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > limit:
            await _refuse(send, message)
            return
        received = 0
        started = False

        async def counted() -> Message:
            nonlocal received
            incoming = await receive()
            if incoming["type"] == "http.request":
                received += len(incoming.get("body", b""))
                if received > limit:
                    raise BodyTooLargeError(message)
            return incoming

        async def watched(outgoing: Message) -> None:
            nonlocal started
            started = started or outgoing["type"] == "http.response.start"
            await send(outgoing)

        try:
            await self.app(scope, counted, watched)
        except BodyTooLargeError:
            # Raised where no handler sees it (a middleware reading the body): answer here if we still can.
            if started:
                raise
            await _refuse(send, message)


async def _refuse(send: Send, message: str) -> None:
    body: Any = json.dumps({"error": message}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})
