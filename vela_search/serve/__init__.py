"""The long-lived search service: ``vela-search serve``.

One process loads each index's embedder once, keeps it warm, and answers a JSON API and a web page to
search and listen. It is a front over :mod:`vela_search.search` with no search logic of its own.

Modules:

- ``app``: the FastAPI application (assembles the routers, token rule, limits).
- ``routes/``: the routes, one module per resource, each exposing ``router``.
- ``http_errors``: error statuses and the JSON error handlers.
- ``uploads``: uploaded query clips (saved within the limit, checked, decoded).
- ``service``: the served indexes (kept on their latest generation) and their models.
- ``batching``: micro-batching of concurrent queries on one model thread.
- ``schemas``: request and response bodies (hits use the one record type of ``query --json``).
- ``audio_stream``: indexed audio by segment id (Range requests, or a span as WAV).
- ``discovery``: ``serve.json`` beside an index, and asking a running server (standard library only).
- ``server``: running it all under uvicorn.
- ``static/``: the page (HTML, CSS, JS; no external resources).
"""

from __future__ import annotations
