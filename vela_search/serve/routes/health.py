"""``GET /healthz``: liveness and batching counters (no token: it holds no data)."""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, Depends

from vela_search import __version__
from vela_search.serve.routes.common import service_of
from vela_search.serve.service import Service

__all__ = ["router"]

router = APIRouter()


@router.get("/healthz", summary="Liveness and batching counters")
async def healthz(service: Service = Depends(service_of)) -> dict[str, Any]:
    batchers = {id(b): b for b in service.models.batchers()}
    behind = {name: s.note for name, s in service.indexes.items() if s.note is not None}
    return {
        "status": "degraded" if behind else "ok",
        "behind": behind,
        "version": __version__,
        "indexes": list(service.indexes),
        "uptime_s": round(time.time() - service.started, 3),
        "batches": sum(b.stats.batches for b in batchers.values()),
        "batched_items": sum(b.stats.items for b in batchers.values()),
        "largest_batch": max((b.stats.largest for b in batchers.values()), default=0),
    }
