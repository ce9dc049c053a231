"""The FastAPI application: the route modules, the token rule, body limits and JSON errors.

Routes live in :mod:`vela_search.serve.routes`, one module per resource; this module assembles them.
A new resource is a module exposing ``router`` and one line in :data:`API_ROUTERS` (behind the token
rule, under ``/api``) or :data:`OPEN_ROUTERS`.
"""

from __future__ import annotations

from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI
from fastapi.staticfiles import StaticFiles

from vela_search import __version__
from vela_search.serve.http_errors import install_error_handlers
from vela_search.serve.limits import BodyLimit
from vela_search.serve.routes import audio, health, indexes, media, page, search
from vela_search.serve.routes.common import check_token
from vela_search.serve.routes.page import STATIC_DIR
from vela_search.serve.service import Service

__all__ = ["API_ROUTERS", "OPEN_ROUTERS", "STATIC_DIR", "create_app"]

# The JSON API: under /api, every call needs the token when the server has one.
API_ROUTERS = [
    indexes.router,
    search.router,
    audio.router,
    media.router,
]
# Routes that hold no data: no token.
OPEN_ROUTERS = [
    health.router,
    page.router,
]


def create_app(service: Service) -> FastAPI:
    """The app serving ``service``: the JSON API under /api, /healthz, the page at /, OpenAPI at /docs."""

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
    install_error_handlers(app)
    app.add_middleware(
        BodyLimit, upload_limit=service.settings.max_upload_bytes, json_limit=service.settings.max_json_bytes
    )
    for router in API_ROUTERS:
        app.include_router(router, prefix="/api", dependencies=[Depends(check_token)])
    for router in OPEN_ROUTERS:
        app.include_router(router)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    return app
