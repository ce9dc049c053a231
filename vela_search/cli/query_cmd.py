"""``vela-search query``: free-text, long-text, instruction and query-by-example search."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.markup import escape
from rich.table import Table

from vela_search.cli.app import app
from vela_search.cli.common import (
    ADAPTER_HELP,
    DEVICE_HELP,
    MODEL_HELP,
    check_device,
    console,
    err_console,
    print_json,
    resolve_index,
)

if TYPE_CHECKING:
    from vela_search.search import Hit, QueryRequest, Searcher

DEFAULT_K = 10  # mirrors vela_search.search.DEFAULT_K (imported lazily to keep --help instant)


@app.command()
def query(
    text: str | None = typer.Argument(
        None, help='What to search for, e.g. "dog barking then a car passes" (omit with --audio).'
    ),
    index: str | None = typer.Option(
        None, "--index", "-i", help="Index name (under $VELA_INDEX_DIR or ./indexes) or directory."
    ),
    k: int = typer.Option(
        DEFAULT_K, "-k", "--top-k", help="Number of hits (files, or segments with --segments), 1-1000."
    ),
    long: bool = typer.Option(
        False, "--long", help="Treat the text as a long passage (any length the model fits)."
    ),
    instruction: str | None = typer.Option(
        None, "--instruction", help="Instruction-conditioned query: the request that precedes the text."
    ),
    audio: Path | None = typer.Option(
        None, "--audio", help="Query by example: an audio file, embedded as audio."
    ),
    like: Path | None = typer.Option(
        None,
        "--like",
        help="More like a file of the index: search with its stored vectors (no model is loaded, so it "
        "answers at once).",
    ),
    start: float | None = typer.Option(
        None, "--start", help="With --audio or --like: span start in seconds."
    ),
    end: float | None = typer.Option(
        None,
        "--end",
        help="With --audio or --like: span end in seconds (with --audio at most 30 s after the start).",
    ),
    segments: bool = typer.Option(
        False, "--segments", help="List every matching segment, not the best per file."
    ),
    min_score: float | None = typer.Option(None, "--min-score", help="Drop hits whose score is below this."),
    where: str | None = typer.Option(
        None,
        "--where",
        help="Only files whose path matches this glob, e.g. 'birds/*.flac' (any folder "
        "named birds) or '/data/birds/*'; applied before top-k.",
    ),
    min_duration: float | None = typer.Option(
        None, "--min-duration", help="Only files at least this many seconds long (applied before top-k)."
    ),
    max_duration: float | None = typer.Option(
        None,
        "--max-duration",
        help="Only files at most this many seconds long, e.g. 2 for one-shots (applied before top-k).",
    ),
    model: str | None = typer.Option(None, "--model", help=MODEL_HELP + " Default: the index's model."),
    adapter: Path | None = typer.Option(
        None, "--adapter", help=ADAPTER_HELP + " Default: the index's adapter."
    ),
    demos: str | None = typer.Option(
        None, "--demos", help="In-context demos: 'default', 'none' or a JSONL file. Default: the index's."
    ),
    device: str = typer.Option("auto", "--device", callback=check_device, help=DEVICE_HELP),
    queries: str | None = typer.Option(
        None,
        "--queries",
        metavar="FILE",
        help="Many text queries with one model load: one per line from FILE, or '-' for standard input "
        "(a prompt at a terminal). Empty lines and lines starting with # are skipped. With --json, one "
        "JSON object per line.",
    ),
    server: str | None = typer.Option(
        None,
        "--server",
        metavar="URL",
        help="Ask this running `vela-search serve` (e.g. http://127.0.0.1:8000). Without it, a server "
        "that serves the index on this machine is found by itself (its serve.json beside the index); "
        "when none answers the query runs here.",
    ),
    json_output: bool = typer.Option(False, "--json", help="Print the hits as one JSON array of objects."),
    paths_output: bool = typer.Option(
        False,
        "--paths",
        help="Print only the hits' file paths, one per line, best first, for other programs (with "
        "--segments: path, start and end seconds, tab-separated).",
    ),
) -> None:
    """Search the index with a text, a long passage, an instruction, an audio clip or one of its files."""
    from vela_search.errors import QueryError
    from vela_search.indexing.preload import check_before_load
    from vela_search.search import (
        QueryRequest,
        Searcher,
        check_not_empty,
        check_query_fits,
        embedder_spec,
        load_index_embedder,
        load_query_clip,
        run_query,
    )
    from vela_search.store import AudioIndex

    # Everything that can be checked without the model is checked first: loading a 7B model takes a while.
    if sum([long, instruction is not None, audio is not None, like is not None]) > 1:
        raise QueryError("choose one query mode: --long, --instruction TEXT, --audio FILE or --like FILE")
    if (audio is not None or like is not None) and text is not None:
        raise QueryError("give either a text query or --audio/--like FILE, not both")
    if queries is not None and (text is not None or audio is not None or like is not None):
        raise QueryError("--queries reads the queries from a file or standard input; give no other query")
    if audio is None and like is None and (start is not None or end is not None):
        raise QueryError(
            "--start and --end choose a span of the --audio or --like file; they need --audio or --like"
        )
    if like is not None and (model is not None or adapter is not None or demos is not None):
        raise QueryError(
            "--like searches with the vectors stored in the index and loads no model: drop --model, "
            "--adapter and --demos"
        )
    if paths_output and json_output:
        raise QueryError("choose one output: --json or --paths")
    if paths_output and queries is not None:
        raise QueryError("--paths prints one query's hits; with --queries use --json (one line per query)")
    if server is not None and (queries is not None or audio is not None or model or adapter or demos):
        raise QueryError(
            "--server answers one text or --like query with the server's own model: drop --queries, "
            "--audio, --model, --adapter and --demos"
        )
    mode = "long" if long else "instruction" if instruction is not None else "caption"
    request = QueryRequest(
        text=text,
        mode=mode,
        instruction=instruction,
        audio=audio,
        like=None if like is None else _absolute(like),
        start_s=start,
        end_s=end,
        k=k,
        group=not segments,
        min_score=min_score,
        path_glob=where,
        min_duration=min_duration,
        max_duration=max_duration,
    )
    if queries is not None:
        lines = _query_source(queries)
        request.validate_options()
    else:
        request.validate()
    root = resolve_index(index)

    # A running `vela-search serve` for this index answers at once, with the model it keeps loaded.
    local_only = queries is not None or audio is not None or model or adapter or demos
    if server is not None or not local_only:
        answered = _ask_server(root, request, server)
        if answered is not None:
            hits, notice = answered
            if notice:
                err_console.print(f"[yellow]note:[/] {notice}")
            _print_hits(hits, notice, request, json_output=json_output, paths_output=paths_output)
            return

    idx = AudioIndex.open(root)
    try:
        check_not_empty(idx)
        options = request.search_options()
        if like is not None:
            searcher = Searcher(idx, None)  # stored vectors only
            hits = run_query(searcher, request)
            if searcher.notice:
                err_console.print(f"[yellow]note:[/] {searcher.notice}")
        else:
            # Decoded before the model loads, so that a bad file or span fails fast.
            clip = load_query_clip(audio, start, end) if audio is not None else None
            spec = embedder_spec(idx, model=model, adapter=adapter, demos=demos)
            check_before_load(root, spec.to_dict(), writing=False)  # no load for a mismatch
            if text is not None:  # likewise a text that cannot fit behind the prefix (tokenizer only)
                check_query_fits(idx, text, instruction, model=spec.model, revision=spec.revision)
            err_console.print(f"loading {escape(spec.describe())}", highlight=False)
            with err_console.status("loading the model …", spinner="dots"):
                embedder = load_index_embedder(idx, model=model, adapter=adapter, demos=demos, device=device)
            searcher = Searcher(idx, embedder)
            if searcher.notice:
                err_console.print(f"[yellow]note:[/] {searcher.notice}")
            if queries is not None:
                failed = _run_queries(
                    searcher,
                    lines,
                    mode,
                    instruction,
                    options,
                    json_output=json_output,
                    filtered=request.filtered,
                )
                if failed:
                    raise typer.Exit(1)
                return
            if clip is not None:
                hits = searcher.search_audio(clip, **options)
            else:
                hits = run_query(searcher, request)
    finally:
        idx.close()
    _print_hits(hits, searcher.notice, request, json_output=json_output, paths_output=paths_output)


def _absolute(path: Path) -> str:
    """A --like path as the index stores paths (absolute), so a server in another directory finds it."""
    import os

    return os.path.abspath(os.path.expanduser(str(path)))


def _ask_server(root: Path, request: QueryRequest, url: str | None) -> tuple[list[Hit], str | None] | None:
    """The hits of a running server for the index (``url``, else the one the index's serve.json names).

    Returns None when no server answers for the index (the query then runs here); with an explicit
    ``url`` a server that does not answer is an error.
    """
    from vela_search.serve.discovery import ask_server

    return ask_server(root, request, url=url)


def _print_hits(
    hits: list[Hit], notice: str | None, request: QueryRequest, *, json_output: bool, paths_output: bool
) -> None:
    from vela_search.search import hit_record

    if json_output:
        print_json([hit_record(hit, notice) for hit in hits])
    elif paths_output:
        _print_paths(hits, segments=not request.group)
    else:
        _print_table(hits, segments=not request.group, filtered=request.filtered)


def _print_table(hits: list[Hit], *, segments: bool, filtered: bool) -> None:
    from vela_search.search import format_timestamp

    if not hits:
        console.print(
            "no hits" + (" (try a looser --where, --min-score or duration filter)" if filtered else "")
        )
        return
    table = Table(caption="score: cosine similarity, higher is closer", caption_justify="left")
    table.add_column("#", justify="right", no_wrap=True)
    table.add_column("score", justify="right", no_wrap=True)
    table.add_column("file", overflow="fold")
    table.add_column("segment" if segments else "best segment", no_wrap=True)
    table.add_column("duration", justify="right", no_wrap=True)
    for hit in hits:
        name = escape(hit.display_path)
        copies = len(hit.paths) - 1
        if copies > 0:
            name += f" [dim](+{copies} {'copy' if copies == 1 else 'copies'})[/]"
        table.add_row(
            str(hit.rank),
            f"{hit.score:.4f}",
            name,
            f"{format_timestamp(hit.start_s)}–{format_timestamp(hit.end_s)}",
            format_timestamp(hit.duration_s),
        )
    console.print(table)


def _print_paths(hits: list[Hit], *, segments: bool) -> None:
    """Plain lines for pipes (no colour, no wrapping): a path per hit, or path, start and end per segment."""
    for hit in hits:
        line = f"{hit.path}\t{hit.start_s:.3f}\t{hit.end_s:.3f}" if segments else hit.path
        sys.stdout.write(line + "\n")
    sys.stdout.flush()


def _query_source(source: str) -> Iterator[str]:
    """The queries of ``--queries``: lines of a file, or of standard input (with a prompt at a terminal).

    A file is opened here, before the model loads, so that a wrong path fails at once.
    """
    from vela_search.errors import QueryError

    if source == "-":
        return _stdin_lines()
    try:
        text = Path(source).expanduser().read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise QueryError(f"cannot read queries from {source}: {exc}") from exc
    return iter(text.splitlines())


def _stdin_lines() -> Iterator[str]:
    if not sys.stdin.isatty():
        # Read bytes: a line that is not UTF-8 fails on its own (as a bad query), not the whole run.
        yield from (raw.decode("utf-8", "surrogateescape").rstrip("\r\n") for raw in sys.stdin.buffer)
        return
    err_console.print("one query per line; an empty line or Ctrl-D ends")
    while True:
        try:
            line = input("query> ")
        except EOFError:
            return
        if not line.strip():
            return
        yield line


def _run_queries(
    searcher: Searcher,
    lines: Iterator[str],
    mode: str,
    instruction: str | None,
    options: dict[str, Any],
    *,
    json_output: bool,
    filtered: bool,
) -> int:
    """Answer every query of ``lines`` with one searcher; a bad query is reported and skipped.

    Returns:
        How many queries failed.
    """
    from vela_search.errors import VelaError

    failed = 0
    for line in lines:
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        try:
            hits = searcher.search(text, mode=mode, instruction=instruction, **options)  # type: ignore[arg-type]
        except VelaError as exc:
            failed += 1
            if json_output:
                _print_json_line({"query": text, "error": str(exc)})
            else:
                shown = text if len(text) <= 60 else text[:57] + "..."
                err_console.print(
                    f"[bold red]error:[/] {escape(repr(shown))}: {escape(str(exc))}", highlight=False
                )
            continue
        if json_output:
            _print_json_line(
                {"query": text, "hits": [hit.to_dict() for hit in hits], "notice": searcher.notice}
            )
        else:
            console.print(f"[bold]{escape(text)}[/]")
            _print_table(hits, segments=not options["group"], filtered=filtered)
    return failed


def _print_json_line(payload: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(payload, ensure_ascii=False, default=str) + "\n")
    sys.stdout.flush()  # a reader of the pipe gets each answer as soon as it exists
