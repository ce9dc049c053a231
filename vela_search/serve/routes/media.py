"""``GET /api/peaks/{segment_id}``, ``/api/clip/{segment_id}`` and ``/api/file/{segment_id}``: what the
page draws and what a user takes away from a hit.

Peaks come from the index (``peaks/``), computed and cached for indexes written without them. The clip
is the segment's exact span as WAV at the file's own rate; the file is the original, as an attachment.
Like ``/api/audio``, only files the index holds are served: the path comes from the index, never from
the request.
"""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Depends, Path, Query
from fastapi.responses import FileResponse, Response

from vela_search.clips import clip_filename, span_wav_native
from vela_search.peaks import load_or_compute
from vela_search.serve.audio_stream import AudioSource, audio_source
from vela_search.serve.http_errors import error_responses
from vela_search.serve.routes.common import service_of
from vela_search.serve.schemas import MAX_SEGMENT_ID
from vela_search.serve.service import Service

__all__ = ["router"]

router = APIRouter()

SEGMENT_ID = Path(ge=0, le=MAX_SEGMENT_ID, description="The segment_id of a hit.")
INDEX = Query(None, min_length=1, max_length=255)


async def _row(service: Service, index: str | None, segment_id: int) -> tuple[Any, dict, AudioSource]:
    """The served index, the segment's row and its file, checked to be the one indexed."""
    served = service.get(index)
    generation = await asyncio.to_thread(served.refresh)
    row = await asyncio.to_thread(generation.searcher.segment, segment_id)
    source = await asyncio.to_thread(audio_source, row, generation.file_row(str(row["path"])))
    return served, row, source


def _attachment(name: str) -> dict[str, str]:
    return {"Content-Disposition": f"attachment; filename*=UTF-8''{quote(name)}"}


@router.get(
    "/peaks/{segment_id}",
    summary="Waveform peaks of a hit's file (min/max pairs, -1..1)",
    responses=error_responses(400, 401, 404, 409, 415, 422),
)
async def peaks(
    segment_id: int = SEGMENT_ID,
    index: str | None = INDEX,
    fine: bool = Query(True, description="Include the fine level (long files: pairs per second)."),
    fine_from: float = Query(0.0, ge=0, description="Fine pairs from this time (seconds)."),
    fine_to: float | None = Query(None, ge=0, description="Fine pairs up to this time (default: the end)."),
    service: Service = Depends(service_of),
) -> dict[str, Any]:
    served, row, source = await _row(service, index, segment_id)
    found = await asyncio.to_thread(load_or_compute, served.root, row.get("content_sha256"), source.path)
    return {"segment_id": segment_id, **found.to_dict(fine=fine, fine_from=fine_from, fine_to=fine_to)}


@router.get(
    "/clip/{segment_id}",
    summary="A hit's segment as WAV (exact span, the file's own sample rate where it can be read)",
    response_class=Response,
    responses={200: {"content": {"audio/wav": {}}}, **error_responses(400, 401, 404, 409, 415, 422)},
)
async def clip(
    segment_id: int = SEGMENT_ID, index: str | None = INDEX, service: Service = Depends(service_of)
) -> Response:
    _, row, source = await _row(service, index, segment_id)
    data = await asyncio.to_thread(span_wav_native, source.path, source.start_s, source.end_s)
    name = clip_filename(str(source.path), source.start_s, source.end_s)
    return Response(data, media_type="audio/wav", headers=_attachment(name))


@router.get(
    "/file/{segment_id}",
    summary="A hit's whole file, as a download",
    response_class=Response,
    responses={200: {"content": {"audio/*": {}}}, **error_responses(401, 404, 409, 422)},
)
async def whole_file(
    segment_id: int = SEGMENT_ID, index: str | None = INDEX, service: Service = Depends(service_of)
) -> FileResponse:
    _, row, source = await _row(service, index, segment_id)
    return FileResponse(source.path, media_type=source.media_type, filename=source.path.name)
