"""The FastAPI application: routes, the token rule, upload limits, timeouts and JSON errors.

Routes are a thin layer: they turn a request body into a :class:`~vela_search.search.QueryRequest`,
await :class:`~vela_search.serve.service.Service`, and return hit records. Every error is JSON
(``{"error": "..."}``) with a 4xx code for what the client can fix; an unexpected failure is a 500 with
a one-line message (the traceback goes to the server's log only).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import tempfile
import time
from contextlib import asynccontextmanager
from importlib import resources
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, FastAPI, File, Form, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException

from vela_search import __version__
from vela_search.errors import (
    AudioDecodeError,
    EmptyIndexError,
    FingerprintMismatchError,
    IndexNotFoundError,
    QueryError,
    VelaError,
)
from vela_search.search import QueryRequest, hit_record
from vela_search.search.similar import UnknownSegmentError
from vela_search.serve.audio_stream import MissingAudioError, audio_source, span_wav
from vela_search.serve.routes import media
from vela_search.serve.schemas import ErrorBody, IndexList, LikeBody, SearchBody, SearchResponse
from vela_search.serve.service import ServedIndex, Service, UnknownIndexError

__all__ = ["create_app"]

log = logging.getLogger("vela_search.serve")

STATIC_DIR = Path(str(resources.files("vela_search.serve") / "static"))
_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorBody} for code in (400, 401, 404, 409, 413, 415, 422, 504)
}


class UploadTooLargeError(VelaError):
    """An upload over the server's size limit."""


def create_app(service: Service) -> FastAPI:
    """The app serving ``service``: the JSON API under /api, /healthz, the page at /, OpenAPI at /docs."""
    settings = service.settings

    @asynccontextmanager
    async def lifespan(app: FastAPI):  # type: ignore[no-untyped-def]
        await service.warm_up()
        yield
        await service.close()

    app = FastAPI(
        title="vela-search",
        version=__version__,
        description="Search a sound collection with words or sounds, and listen to the hits.",
        lifespan=lifespan,
    )
    app.state.service = service
    _install_error_handlers(app)
    _install_upload_limit(app, settings.max_upload_bytes)

    def check_token(request: Request) -> None:
        """Every API call carries the token when the server has one (header, or ?token= for <audio>)."""
        if settings.token is None:
            return
        given = request.headers.get("authorization", "")
        given = given[7:] if given.lower().startswith("bearer ") else request.query_params.get("token", "")
        if not secrets.compare_digest(given.encode(), settings.token.encode()):
            raise HTTPException(401, "this server needs a token: send 'Authorization: Bearer TOKEN'")

    api = APIRouter(prefix="/api", dependencies=[Depends(check_token)], responses=_ERRORS)

    async def answer(served: ServedIndex, request: QueryRequest, clip: Any = None) -> dict[str, Any]:
        started = time.perf_counter()
        try:
            hits = await asyncio.wait_for(service.search(served, request, clip), settings.request_timeout_s)
        except TimeoutError:
            raise HTTPException(
                504, f"the search took longer than {settings.request_timeout_s:g} s"
            ) from None
        notice = served.searcher.notice
        return {
            "index": served.name,
            "generation": served.searcher.index.generation,
            "hits": [hit_record(hit, notice) for hit in hits],
            "notice": notice,
            "took_ms": (time.perf_counter() - started) * 1000,
        }

    @api.get("/indexes", response_model=IndexList, summary="What each served index holds")
    async def indexes() -> dict[str, Any]:
        infos = [await asyncio.to_thread(s.info) for s in service.indexes.values()]
        return {"indexes": infos, "token_required": settings.token is not None}

    @api.post("/search", response_model=SearchResponse, summary="Search with a text")
    async def search(body: SearchBody) -> dict[str, Any]:
        return await answer(service.get(body.index), body.to_request())

    @api.post("/search/like", response_model=SearchResponse, summary="More like an indexed file or segment")
    async def search_like(body: LikeBody) -> dict[str, Any]:
        if (body.path is None) == (body.segment_id is None):
            raise QueryError("give either path (a file of the index) or segment_id (from a hit)")
        return await answer(service.get(body.index), body.to_request())

    @api.post("/search/audio", response_model=SearchResponse, summary="Search by an uploaded audio clip")
    async def search_audio(
        file: UploadFile = File(..., description="An audio file (wav, flac, ogg, mp3, ...)."),
        index: str | None = Form(None),
        k: int = Form(10),
        segments: bool = Form(False),
        start: float | None = Form(None),
        end: float | None = Form(None),
        min_score: float | None = Form(None),
        where: str | None = Form(None),
        min_duration: float | None = Form(None),
        max_duration: float | None = Form(None),
    ) -> dict[str, Any]:
        served = service.get(index)
        with tempfile.TemporaryDirectory(prefix="vela-upload-") as tmp:
            path = Path(tmp) / ("clip" + _safe_suffix(file.filename))
            await asyncio.to_thread(_save_upload, file, path, settings.max_upload_bytes)
            request = QueryRequest(
                audio=path,
                start_s=start,
                end_s=end,
                k=k,
                group=not segments,
                min_score=min_score,
                path_glob=where,
                min_duration=min_duration,
                max_duration=max_duration,
            ).validate()
            clip = await asyncio.to_thread(
                _load_upload, path, file.filename or "the upload", start, end, settings.max_upload_seconds
            )
            return await answer(served, request, clip)

    @api.get(
        "/audio/{segment_id}",
        summary="The audio of an indexed segment's file (Range requests), or of a span as WAV",
        response_class=Response,
        responses={200: {"content": {"audio/*": {}}}, 206: {"description": "Partial content"}},
    )
    async def audio(
        segment_id: int,
        index: str | None = Query(None),
        start: float | None = Query(
            None, description="Span start in seconds: answer with a WAV of the span."
        ),
        end: float | None = Query(None, description="Span end in seconds."),
        segment: bool = Query(False, description="Answer with the segment's own span as WAV."),
    ) -> Response:
        served = service.get(index)
        await asyncio.to_thread(served.refresh)
        row = await asyncio.to_thread(served.searcher.segment, segment_id)
        source = audio_source(row)
        if start is None and end is None and not segment:
            return FileResponse(source.path, media_type=source.media_type, content_disposition_type="inline")
        data = await asyncio.to_thread(span_wav, source, start, end)
        return Response(data, media_type="audio/wav")

    app.include_router(api)
    app.include_router(media.router, prefix="/api", dependencies=[Depends(check_token)])

    @app.get("/healthz", summary="Liveness and batching counters")
    async def healthz() -> dict[str, Any]:
        batchers = {id(s.batcher): s.batcher for s in service.indexes.values() if s.batcher is not None}
        return {
            "status": "ok",
            "version": __version__,
            "indexes": list(service.indexes),
            "uptime_s": round(time.time() - service.started, 3),
            "batches": sum(b.stats.batches for b in batchers.values()),
            "batched_items": sum(b.stats.items for b in batchers.values()),
            "largest_batch": max((b.stats.largest for b in batchers.values()), default=0),
        }

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", media_type="text/html")

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    return app


def _safe_suffix(filename: str | None) -> str:
    """The upload's extension when it looks like one (decoders of some formats go by it), else none."""
    suffix = Path(filename or "").suffix.lower()
    return suffix if 1 < len(suffix) <= 6 and suffix[1:].isalnum() else ""


def _save_upload(upload: UploadFile, path: Path, limit: int) -> None:
    written = 0
    with path.open("wb") as out:
        while chunk := upload.file.read(1 << 20):
            written += len(chunk)
            if written > limit:
                raise UploadTooLargeError(_too_large(limit))
            out.write(chunk)
    if written == 0:
        raise AudioDecodeError("the uploaded file is empty")


def _load_upload(path: Path, name: str, start: float | None, end: float | None, max_seconds: float) -> Any:
    from vela_search.audio import audio_duration
    from vela_search.search import load_query_clip

    try:
        seconds = audio_duration(path)
        if seconds > max_seconds:
            raise UploadTooLargeError(
                f"the uploaded audio is {seconds:.1f} s long; this server takes clips of up to "
                f"{max_seconds:g} s"
            )
        if start is not None and start >= seconds:
            raise QueryError(f"start {start:g} s is past the end of the {seconds:.3f} s clip")
        return load_query_clip(path, start, end)
    except AudioDecodeError as exc:
        # The message names the upload as the client knows it, not the server's temporary file.
        message = str(exc).replace(f"'{path}'", repr(name)).replace(str(path), repr(name))
        raise AudioDecodeError(message) from None


def _too_large(limit: int) -> str:
    return f"the upload is larger than this server's limit of {limit / 1e6:g} MB"


def _status(exc: Exception) -> int:
    if isinstance(exc, (UnknownIndexError, UnknownSegmentError, MissingAudioError, IndexNotFoundError)):
        return 404
    if isinstance(exc, (EmptyIndexError, FingerprintMismatchError)):
        return 409
    if isinstance(exc, UploadTooLargeError):
        return 413
    if isinstance(exc, AudioDecodeError):
        return 415
    return 400


def _install_error_handlers(app: FastAPI) -> None:
    async def user_error(request: Request, exc: Exception) -> JSONResponse:
        return JSONResponse({"error": str(exc)}, status_code=_status(exc))

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
            parts.append(f"{where}: {error.get('msg')}" if where else str(error.get("msg")))
        return JSONResponse({"error": "invalid request: " + "; ".join(parts)}, status_code=422)

    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return JSONResponse({"error": f"internal error ({type(exc).__name__}); see the server's log"}, 500)

    app.add_exception_handler(VelaError, user_error)
    app.add_exception_handler(HTTPException, http_error)
    app.add_exception_handler(RequestValidationError, invalid)
    app.add_exception_handler(Exception, unexpected)


def _install_upload_limit(app: FastAPI, limit: int) -> None:
    """Refuse request bodies over ``limit`` bytes before they are spooled (declared or streamed)."""

    @app.middleware("http")
    async def body_limit(request: Request, call_next):  # type: ignore[no-untyped-def]
        declared = request.headers.get("content-length")
        # Multipart framing adds a little around the file itself.
        if declared is not None and declared.isdigit() and int(declared) > limit + 64 * 1024:
            return JSONResponse({"error": _too_large(limit)}, status_code=413)
        return await call_next(request)
