"""``GET /api/audio/{segment_id}``: an indexed segment's file (Range requests), or a span as WAV."""

from __future__ import annotations

import asyncio
import json

from fastapi import APIRouter, Depends, Path, Query
from fastapi.responses import FileResponse, Response
from starlette.types import Message, Receive, Scope, Send

from vela_search.serve.audio_stream import audio_source, span_wav
from vela_search.serve.http_errors import error_responses
from vela_search.serve.routes.common import service_of
from vela_search.serve.schemas import MAX_SECONDS, MAX_SEGMENT_ID
from vela_search.serve.service import Service

__all__ = ["router"]

router = APIRouter()


@router.get(
    "/audio/{segment_id}",
    summary="The audio of an indexed segment's file (Range requests), or of a span as WAV",
    response_class=Response,
    responses={
        200: {"content": {"audio/*": {}}},
        206: {"description": "Partial content"},
        **error_responses(400, 401, 404, 409, 415, 416, 422),
    },
)
async def audio(
    segment_id: int = Path(ge=0, le=MAX_SEGMENT_ID, description="The segment_id of a hit."),
    index: str | None = Query(None, min_length=1, max_length=255),
    start: float | None = Query(
        None, ge=0, le=MAX_SECONDS, description="Span start in seconds: answer with a WAV of the span."
    ),
    end: float | None = Query(None, ge=0, le=MAX_SECONDS, description="Span end in seconds."),
    segment: bool = Query(False, description="Answer with the segment's own span as WAV."),
    service: Service = Depends(service_of),
) -> Response:
    served = service.get(index)
    generation = await asyncio.to_thread(served.refresh)
    row = await asyncio.to_thread(generation.searcher.segment, segment_id)
    source = await asyncio.to_thread(audio_source, row, generation.file_row(str(row["path"])))
    if start is None and end is None and not segment:
        return AudioFileResponse(source.path, media_type=source.media_type, content_disposition_type="inline")
    data = await asyncio.to_thread(span_wav, source, start, end)
    return Response(data, media_type="audio/wav")


class AudioFileResponse(FileResponse):
    """A file with Range support whose Range errors (malformed 400, unsatisfiable 416) are JSON errors."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        replaced = False

        async def json_errors(message: Message) -> None:
            nonlocal replaced
            if message["type"] == "http.response.start" and message["status"] in (400, 416):
                replaced = True
                if message["status"] == 400:
                    error = "the Range header is malformed; send 'Range: bytes=START-END'"
                else:
                    error = "the Range is outside the file; ask for bytes within its Content-Length"
                body = json.dumps({"error": error}).encode()
                kept = [(k, v) for k, v in message["headers"] if k.lower() in (b"content-range",)]
                headers = [
                    *kept,
                    (b"content-type", b"application/json"),
                    (b"content-length", b"%d" % len(body)),
                ]
                await send({**message, "headers": headers})
                await send({"type": "http.response.body", "body": body})
            elif not replaced:
                await send(message)

        await super().__call__(scope, receive, json_errors)
