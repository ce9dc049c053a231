"""``POST /api/search``, ``/api/search/like`` and ``/api/search/audio``: the three kinds of query.

Each turns its body into a :class:`~vela_search.search.QueryRequest`, checks it there (the request's one
check, ``validate``, beside the body's schema) and answers with
:func:`~vela_search.serve.routes.common.answer`.
"""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, File, Form, Request, UploadFile

from vela_search.search import QueryRequest
from vela_search.search.rerank import MAX_RERANK
from vela_search.search.validation import DEFAULT_K, MAX_K, MAX_NPROBE, MAX_REFINE
from vela_search.serve.http_errors import error_responses
from vela_search.serve.routes.common import answer, service_of
from vela_search.serve.schemas import MAX_SECONDS, LikeBody, SearchBody, SearchResponse
from vela_search.serve.service import Service
from vela_search.serve.uploads import load_upload, safe_suffix, save_upload

__all__ = ["router"]

router = APIRouter()


@router.post(
    "/search",
    response_model=SearchResponse,
    summary="Search with a text",
    responses=error_responses(400, 401, 404, 409, 413, 422, 503, 504),
)
async def search(body: SearchBody, http: Request, service: Service = Depends(service_of)) -> dict[str, Any]:
    return await answer(service, service.get(body.index), body.to_request().validate(), http=http)


@router.post(
    "/search/like",
    response_model=SearchResponse,
    summary="More like an indexed file or segment",
    responses=error_responses(400, 401, 404, 409, 413, 422, 503, 504),
)
async def search_like(
    body: LikeBody, http: Request, service: Service = Depends(service_of)
) -> dict[str, Any]:
    return await answer(service, service.get(body.index), body.to_request().validate(), http=http)


@router.post(
    "/search/audio",
    response_model=SearchResponse,
    summary="Search by an uploaded audio clip",
    responses=error_responses(400, 401, 404, 409, 413, 415, 422, 503, 504),
)
async def search_audio(
    http: Request,
    file: UploadFile = File(..., description="An audio file (wav, flac, ogg, mp3, ...)."),
    index: str = Form(None, min_length=1, max_length=255),
    k: int = Form(DEFAULT_K, ge=1, le=MAX_K),
    segments: bool = Form(False),
    start: float = Form(None, ge=0, le=MAX_SECONDS),
    end: float = Form(None, ge=0, le=MAX_SECONDS),
    min_score: float = Form(None, ge=-1, le=1),
    where: str = Form(None, min_length=1, max_length=4096, pattern=r"\S"),
    min_duration: float = Form(None, ge=0, le=MAX_SECONDS),
    max_duration: float = Form(None, ge=0, le=MAX_SECONDS),
    # (Form fields are not nullable: a form has no null, an absent field is the default.)
    rerank: int = Form(None, ge=1, le=MAX_RERANK),
    nprobe: int = Form(None, ge=1, le=MAX_NPROBE),
    refine: int = Form(None, ge=1, le=MAX_REFINE),
    exact: bool = Form(False),
    service: Service = Depends(service_of),
) -> dict[str, Any]:
    settings = service.settings
    served = service.get(index)
    with tempfile.TemporaryDirectory(prefix="vela-upload-") as tmp:
        path = Path(tmp) / ("clip" + safe_suffix(file.filename))
        await asyncio.to_thread(save_upload, file, path, settings.max_upload_bytes)
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
            rerank=rerank,
            nprobe=nprobe,
            refine=refine,
            exact=exact,
        ).validate()
        clip = await asyncio.to_thread(
            load_upload, path, file.filename or "the upload", start, end, settings.max_upload_seconds
        )
        return await answer(service, served, request, clip, http=http)
