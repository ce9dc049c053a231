"""Finding a running server for an index, and asking it a query (standard library only: no FastAPI).

``vela-search serve`` writes ``serve.json`` beside each index it serves (the URL, its process id, the name
it serves the index under) and removes it when it stops. ``vela-search query`` reads it and, when that
process is alive and answers, sends the query there instead of loading the model itself.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vela_search.errors import QueryError, VelaError

if TYPE_CHECKING:
    from vela_search.search import Hit, QueryRequest

__all__ = [
    "SERVE_FILE",
    "TOKEN_ENV",
    "ask_server",
    "read_serve_file",
    "remove_serve_file",
    "write_serve_file",
]

SERVE_FILE = "serve.json"
TOKEN_ENV = "VELA_SERVE_TOKEN"
# A local server answers a query in milliseconds; a slow first query (prefix, graphs) gets this long.
_TIMEOUT_S = 60.0


def write_serve_file(root: Path, *, url: str, name: str, token_required: bool) -> Path | None:
    """Record a running server beside the index (None when the index directory is not writable)."""
    path = Path(root) / SERVE_FILE
    payload = {"url": url, "pid": os.getpid(), "name": name, "token_required": token_required}
    tmp = path.with_name(f".tmp-{SERVE_FILE}.{os.getpid()}")
    try:
        tmp.write_text(json.dumps(payload) + "\n")
        os.replace(tmp, path)
    except OSError:
        return None
    return path


def remove_serve_file(root: Path) -> None:
    """Remove the record, if it is this process's."""
    path = Path(root) / SERVE_FILE
    record = read_serve_file(root, alive_only=False)
    if record is not None and record.get("pid") == os.getpid():
        try:
            path.unlink()
        except OSError:
            pass


def read_serve_file(root: Path, *, alive_only: bool = True) -> dict[str, Any] | None:
    """The server record beside the index, or None (none, unreadable, or its process is gone)."""
    try:
        record = json.loads((Path(root) / SERVE_FILE).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or not isinstance(record.get("url"), str):
        return None
    if alive_only and not _process_alive(record.get("pid")):
        return None
    return record


def _process_alive(pid: Any) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def request_body(request: QueryRequest, index: str | None) -> tuple[str, dict[str, Any]]:
    """The endpoint and JSON body of the API call that asks ``request`` (text or indexed-file queries)."""
    options = {
        "k": request.k,
        "segments": not request.group,
        "min_score": request.min_score,
        # A plain glob stays a string (what servers before field filters take).
        "where": [*([request.path_glob] if request.path_glob else []), *request.where]
        if request.where
        else request.path_glob,
        "min_duration": request.min_duration,
        "max_duration": request.max_duration,
        "index": index,
    }
    if request.rerank is not None:  # sent only when asked: a server of an older version refuses the key
        options["rerank"] = request.rerank
    for knob in ("nprobe", "refine"):  # the same: only when asked
        if getattr(request, knob) is not None:
            options[knob] = getattr(request, knob)
    if request.exact:
        options["exact"] = True
    if request.kind == "like":
        return "/api/search/like", {
            "path": str(request.like),
            "start": request.start_s,
            "end": request.end_s,
            **options,
        }
    if request.kind == "like_segment":
        return "/api/search/like", {"segment_id": request.like_segment, **options}
    if request.kind != "text":
        raise ValueError("audio queries are uploaded, not sent as JSON")
    body = {"query": request.text, "mode": request.mode, "instruction": request.instruction, **options}
    return "/api/search", body


def ask_server(
    root: Path, request: QueryRequest, *, url: str | None = None
) -> tuple[list[Hit], str | None] | None:
    """Ask a running server for the index at ``root``: ``(hits, notice)``, or None to search locally.

    Without ``url`` the server is the one ``serve.json`` names; one that is gone or does not answer means
    None. With ``url`` the server must answer and serve this index. A server that answers from an older
    generation than the index's latest (it cannot serve the new embedder) means None too.

    Raises:
        QueryError: the server refused the query (its message, as the local path would say it), or
            the explicit ``url`` does not answer or does not serve the index.
    """
    from vela_search.search import hits_from_records

    explicit = url is not None
    name = None
    if url is None:
        record = read_serve_file(root)
        if record is None:
            return None
        if record.get("token_required") and not os.environ.get(TOKEN_ENV):
            return None  # the server needs a token this shell does not have: answer locally
        url, name = record["url"], record.get("name")
    url = url.rstrip("/")
    try:
        if name is None:
            name = _served_name(url, root)
        path, body = request_body(request, name)
        answer = _call(url + path, body)
    except _Unreachable as exc:
        if explicit:
            raise QueryError(
                f"no vela-search server answers at {url} ({exc}); start one with `vela-search serve`"
            )
        return None
    if answer.get("behind"):
        # The server answers from an older generation: it cannot serve the index's current embedder
        # (yet). The index itself is current, so the query runs here.
        return None
    return hits_from_records(answer["hits"]), answer.get("notice")


class _Unreachable(Exception):
    """No HTTP answer (refused, reset, timed out)."""


def _served_name(url: str, root: Path) -> str:
    listing = _call(url + "/api/indexes", None)
    wanted = str(Path(root).resolve())
    for entry in listing.get("indexes", []):
        if entry.get("path") == wanted:
            return str(entry["name"])
    raise QueryError(f"the server at {url} does not serve the index {wanted}; start it with --index {root}")


def _call(url: str, body: dict[str, Any] | None) -> dict[str, Any]:
    """One JSON call: the decoded answer, QueryError for a refused query, _Unreachable without an answer."""
    headers = {"Accept": "application/json"}
    data = None
    if body is not None:
        data = json.dumps(body).encode("utf-8")
        headers["Content-Type"] = "application/json"
    token = os.environ.get(TOKEN_ENV)
    if token:
        headers["Authorization"] = f"Bearer {token}"
    req = urllib.request.Request(
        url, data=data, headers=headers, method="POST" if body is not None else "GET"
    )
    try:
        with urllib.request.urlopen(req, timeout=_TIMEOUT_S) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as exc:
        try:
            message = json.loads(exc.read()).get("error")
        except (ValueError, AttributeError):
            message = None
        if 400 <= exc.code < 500 and message:
            raise QueryError(message) from None
        raise VelaError(f"the server at {url} failed ({exc.code}): {message or exc.reason}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise _Unreachable(str(getattr(exc, "reason", exc))) from None
