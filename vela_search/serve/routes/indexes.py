"""``GET /api/indexes``: what each served index holds."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Depends

from vela_search.serve.http_errors import error_responses
from vela_search.serve.routes.common import service_of
from vela_search.serve.schemas import IndexList
from vela_search.serve.service import Service

__all__ = ["router"]

router = APIRouter()


@router.get(
    "/indexes",
    response_model=IndexList,
    summary="What each served index holds",
    responses=error_responses(401),
)
async def indexes(service: Service = Depends(service_of)) -> dict[str, Any]:
    infos = [await asyncio.to_thread(s.info) for s in service.indexes.values()]
    return {"indexes": infos, "token_required": service.settings.token is not None}
