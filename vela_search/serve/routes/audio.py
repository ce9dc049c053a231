"""``GET /api/audio/{segment_id}``: an indexed segment's file (Range requests), or a span as WAV."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Depends, Path, Query
from fastapi.responses import FileResponse, Response

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
        **error_responses(400, 401, 404, 415, 422),
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
    source = audio_source(row)
    if start is None and end is None and not segment:
        return FileResponse(source.path, media_type=source.media_type, content_disposition_type="inline")
    data = await asyncio.to_thread(span_wav, source, start, end)
    return Response(data, media_type="audio/wav")
