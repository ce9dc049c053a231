"""HTTP errors of the service: which vela-search error is which status, and the JSON error handlers.

Every error is JSON (``{"error": "..."}``) with a 4xx code for what the client can fix; an unexpected
failure is a 500 with a one-line message (the traceback goes to the server's log only).
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from vela_search.errors import (
    AudioDecodeError,
    EmptyIndexError,
    FingerprintMismatchError,
    IndexNotFoundError,
    VelaError,
)
from vela_search.search.similar import UnknownFileError, UnknownSegmentError
from vela_search.serve.audio_stream import ChangedAudioError, MissingAudioError
from vela_search.serve.schemas import ErrorBody
from vela_search.serve.service import ServerBusyError, UnknownIndexError

__all__ = ["UploadTooLargeError", "error_responses", "install_error_handlers", "status_of", "too_large"]

log = logging.getLogger("vela_search.serve")

_DESCRIPTIONS = {
    400: "A request the server cannot answer as given (the message says why).",
    401: "The server needs a token.",
    404: "No such index, segment or file.",
    409: "The index cannot answer this (it holds no vectors), or the file is no longer the one indexed.",
    413: "The body is over the server's limit.",
    415: "The upload is not audio the server can decode.",
    416: "The Range is not satisfiable.",
    422: "The body or a parameter does not match the schema.",
    503: "The server is busy: retry after the Retry-After seconds.",
    504: "The search took longer than the server's time limit.",
}


class UploadTooLargeError(VelaError):
    """An upload over the server's size limit."""


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` for a route that can answer these error codes (each a JSON error)."""
    return {code: {"model": ErrorBody, "description": _DESCRIPTIONS[code]} for code in codes}


def too_large(limit: int) -> str:
    """The 413 message for a body over ``limit`` bytes."""
    return f"the upload is larger than this server's limit of {limit / 1e6:g} MB"


def status_of(exc: Exception) -> int:
    """The HTTP status of a vela-search error (400 unless it is one the client reads otherwise)."""
    if isinstance(
        exc, (UnknownIndexError, UnknownSegmentError, UnknownFileError, MissingAudioError, IndexNotFoundError)
    ):
        return 404
    if isinstance(exc, (EmptyIndexError, FingerprintMismatchError, ChangedAudioError)):
        return 409
    if isinstance(exc, UploadTooLargeError):
        return 413
    if isinstance(exc, AudioDecodeError):
        return 415
    if isinstance(exc, ServerBusyError):
        return 503
    return 400


def install_error_handlers(app: FastAPI) -> None:
    """Answer every error of ``app`` as ``{"error": message}`` with its status."""

    async def user_error(request: Request, exc: Exception) -> JSONResponse:
        status = status_of(exc)
        headers = {"Retry-After": "1"} if status == 503 else None
        return JSONResponse({"error": str(exc)}, status_code=status, headers=headers)

    async def http_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, HTTPException)
        return JSONResponse({"error": str(exc.detail)}, status_code=exc.status_code, headers=exc.headers)

    async def invalid(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        parts = []
        for error in exc.errors():
            loc = list(error.get("loc", ()))
            if loc and loc[0] in ("body", "query", "path", "header", "cookie"):
                loc = loc[1:]  # where the value was sent; the field name is what the client needs
            where = ".".join(str(p) for p in loc)
            message = str(error.get("msg"))
            if error.get("type") in ("string_too_short", "string_pattern_mismatch") and where:
                message = f"the {where} is empty" + (
                    "; give some words to search for" if where == "query" else ""
                )
            parts.append(f"{where}: {message}" if where else message)
        return JSONResponse({"error": "invalid request: " + "; ".join(parts)}, status_code=422)

    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return JSONResponse({"error": f"internal error ({type(exc).__name__}); see the server's log"}, 500)

    app.add_exception_handler(VelaError, user_error)
    app.add_exception_handler(HTTPException, http_error)
    app.add_exception_handler(RequestValidationError, invalid)
    app.add_exception_handler(Exception, unexpected)
