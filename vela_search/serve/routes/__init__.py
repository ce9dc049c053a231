"""The service's routes, one module per resource; each module exposes ``router`` (an ``APIRouter``).

:func:`vela_search.serve.app.create_app` includes them: the JSON API routers under ``/api`` behind the
token rule, the others as they are.

- ``common``: what routes share (the service of the app, the token rule, answering a query).
- ``indexes``: ``GET /api/indexes``.
- ``search``: ``POST /api/search``, ``/api/search/like`` and ``/api/search/audio``.
- ``audio``: ``GET /api/audio/{segment_id}``.
- ``media``: ``GET /api/peaks/{segment_id}`` (waveform), ``/api/clip/{segment_id}`` (the segment as WAV) and
  ``/api/file/{segment_id}`` (the whole file, as a download).
- ``health``: ``GET /healthz``.
- ``page``: the page at ``/``.
"""

from __future__ import annotations
