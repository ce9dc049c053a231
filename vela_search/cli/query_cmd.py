"""``vela-search query``: free-text, long-text, instruction and query-by-example search."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.markup import escape
from rich.table import Table

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
    from vela_search.search import CheckedOptions, CheckedQuery, Hit, QueryRequest, Searcher
    from vela_search.store import AudioIndex

DEFAULT_K = 10  # mirrors vela_search.search.DEFAULT_K (imported lazily to keep --help instant)


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
    where: list[str] | None = typer.Option(
        None,
        "--where",
        help="Only files whose path matches this glob, e.g. 'birds/*.flac' (any folder "
        "named birds) or '/data/birds/*'; applied before top-k. Or a field filter on the files' words "
        "(repeatable, all must hold): FIELD=VALUE (whole value, e.g. library=ACME, category=AMB) or "
        "FIELD~WORDS (words in it, e.g. description~rain).",
    ),
    search_mode: str = typer.Option(
        "caption",
        "--mode",
        help="caption: by sound (the Vela vectors; the default); words: by the files' names and "
        "metadata (BM25, no model); hybrid: both, fused per file by reciprocal rank fusion.",
    ),
    min_duration: float | None = typer.Option(
        None, "--min-duration", help="Only files at least this many seconds long (applied before top-k)."
    ),
    max_duration: float | None = typer.Option(
        None,
        "--max-duration",
        help="Only files at most this many seconds long, e.g. 2 for one-shots (applied before top-k).",
    ),
    nprobe: int | None = typer.Option(
        None, "--nprobe", help="Compressed indexes: IVF lists probed first (default: the tuned value)."
    ),
    refine: int | None = typer.Option(
        None, "--refine", help="Compressed indexes: candidates re-scored exactly (default: the tuned depth)."
    ),
    exact: bool = typer.Option(
        False, "--exact", help="Scan every stored vector (exact, slower on large indexes)."
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
    rerank: int | None = typer.Option(
        None,
        "--rerank",
        metavar="N",
        help="Re-rank the top N hits (1-100; 20 is a good start) with the audio LLM's yes/no judgement of "
        "each candidate's audio against the query, combined with the vector score (costs one forward "
        "per candidate).",
    ),
    rerank_prompt: Path | None = typer.Option(
        None,
        "--rerank-prompt",
        metavar="FILE",
        help="With --rerank: the judge prompt, a JSON file (keys text, audio, yes, no, vector_weight; "
        "see README).",
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
    export_dir: Path | None = typer.Option(
        None,
        "--export-dir",
        metavar="DIR",
        help="Also write each hit's segment as a WAV file into DIR (named by rank; the file's own "
        "sample rate and channels where they can be read).",
    ),
) -> None:
    """Search the index with a text, a long passage, an instruction, an audio clip or one of its files."""
    from vela_search.errors import QueryError
    from vela_search.search import QueryRequest
    from vela_search.search.where import split_where

    if search_mode not in ("caption", "words", "hybrid"):
        raise QueryError(f"unknown --mode {search_mode!r}; use caption, words or hybrid")
    if search_mode != "caption" and (long or instruction is not None):
        raise QueryError(f"--mode {search_mode} searches a short text: drop --long and --instruction")
    path_glob, fields = split_where(where)
    request = QueryRequest(
        text=text,
        mode="long" if long else "instruction" if instruction is not None else search_mode,
        instruction=instruction,
        audio=audio,
        like=None if like is None else _absolute(like),
        start_s=start,
        end_s=end,
        k=k,
        group=not segments,
        min_score=min_score,
        path_glob=path_glob,
        where=fields,
        min_duration=min_duration,
        max_duration=max_duration,
        nprobe=nprobe,
        refine=refine,
        exact=exact,
        rerank=rerank,
        rerank_prompt=_judge_prompt(rerank_prompt, rerank),
    )
    run = QueryRun(
        index=index,
        queries=queries,
        model=model,
        adapter=adapter,
        demos=demos,
        device=device,
        server=server,
        json_output=json_output,
        paths_output=paths_output,
        export_dir=export_dir,
    )
    _run_command(request, run)


@dataclass(frozen=True)
class QueryRun:
    """How ``vela-search query`` runs a search, beside the search itself (a :class:`QueryRequest`).

    Attributes:
        index: the index name or directory (None: the default index).
        queries: ``--queries``: a file of text queries, or ``-`` for standard input (None: one query).
        model, adapter, demos: override the index's embedder (None: the index's own).
        device: where the model runs.
        server: ``--server``: the URL of a running ``vela-search serve`` (None: one found by itself).
        json_output: print JSON (one array; with ``queries``, one object per line).
        paths_output: print only the hits' paths.
        export_dir: ``--export-dir``: write the hits' segments as WAV files into this folder.
    """

    index: str | None = None
    queries: str | None = None
    model: str | None = None
    adapter: Path | None = None
    demos: str | None = None
    device: str = "auto"
    server: str | None = None
    json_output: bool = False
    paths_output: bool = False
    export_dir: Path | None = None

    @property
    def sets_embedder(self) -> bool:
        """Whether a model, adapter or demo set other than the index's own was asked for."""
        return bool(self.model or self.adapter or self.demos)


def _run_command(request: QueryRequest, run: QueryRun) -> None:
    """Check the request where it enters, then answer it from a running server or here, and print it."""
    # Everything that can be checked without the model is checked first: loading a 7B model takes a while.
    _check_flags(request, run)
    if run.queries is not None:
        lines = _query_source(run.queries)  # opened now: a wrong path fails before the model loads
        options = request.validate_options()  # once; each line's query is checked as it is read
        if _answer_lines_here(resolve_index(run.index), request, options, lines, run):
            raise typer.Exit(1)
        return
    checked = request.validate()
    root = resolve_index(run.index)
    # A running `vela-search serve` for this index answers at once, with the model it keeps loaded.
    if _server_can_answer(request, run) and _answer_from_server(root, request, run):
        return
    hits, notice = _answer_here(root, checked, run)
    _print_hits(hits, notice, request, run)


def _server_can_answer(request: QueryRequest, run: QueryRun) -> bool:
    """Whether a server may answer: one text or --like query, with the index's own embedder."""
    # A server re-ranks with its own (default) judge prompt: a prompt file is read here.
    return (
        run.queries is None
        and request.audio is None
        and not run.sets_embedder
        and request.rerank_prompt is None
    )


def _answer_from_server(root: Path, request: QueryRequest, run: QueryRun) -> bool:
    """Print the answer of a running server for the index (``--server``, else the one it records).

    Returns:
        False when no server answers for the index (the query then runs here); with ``--server`` a
        server that does not answer is an error.
    """
    from vela_search.serve.discovery import ask_server

    answered = ask_server(root, request, url=run.server)
    if answered is None:
        return False
    hits, notice = answered
    _print_notice(notice)
    _print_hits(hits, notice, request, run)
    return True


def _answer_here(root: Path, checked: CheckedQuery, run: QueryRun) -> tuple[list[Hit], str | None]:
    """The hits of one checked query, searched in this process, and the notice that applies to them."""
    from vela_search.search import run_query

    with _open_index(root) as idx:
        checked = _with_clip(checked)
        searcher = _searcher(idx, checked.request, run)
        hits = run_query(searcher, checked)
        if searcher.embedder is None:
            _print_notice(searcher.notice)  # no model load announced it
    return hits, searcher.notice


def _answer_lines_here(
    root: Path, template: QueryRequest, options: CheckedOptions, lines: Iterator[str], run: QueryRun
) -> int:
    """Answer every text query of ``lines`` with one model load, as ``template`` asks for each.

    ``options`` are the template's options, checked once for every line.

    Returns:
        How many queries failed.
    """
    with _open_index(root) as idx:
        searcher = _searcher(idx, template, run)
        return _answer_lines(searcher, template, options, lines, run)


@contextmanager
def _open_index(root: Path) -> Iterator[AudioIndex]:
    """The index at ``root``, refused when it holds no vectors; closed when the search is done."""
    from vela_search.search import check_not_empty
    from vela_search.store import AudioIndex

    idx = AudioIndex.open(root)
    try:
        check_not_empty(idx)
        yield idx
    finally:
        idx.close()


def _with_clip(checked: CheckedQuery) -> CheckedQuery:
    """An audio query with its clip decoded: before the model loads, so a bad file or span fails fast."""
    from vela_search.search import load_query_clip

    request = checked.request
    if request.kind != "audio":
        return checked
    return checked.with_clip(load_query_clip(request.audio, request.start_s, request.end_s))  # type: ignore[arg-type]


def _searcher(idx: AudioIndex, request: QueryRequest, run: QueryRun) -> Searcher:
    """A searcher of ``idx`` for ``request``: stored vectors alone for --like, else the index's embedder."""
    # Imported from the package when called: tests replace `load_index_embedder` there.
    from vela_search.indexing.preload import check_before_load
    from vela_search.search import Searcher, check_query_fits, embedder_spec, load_index_embedder

    if (request.kind == "like" or request.mode == "words") and request.rerank is None:
        return Searcher(idx, None)  # stored vectors, or words alone
    spec = embedder_spec(idx, model=run.model, adapter=run.adapter, demos=run.demos)
    check_before_load(idx.root, spec.to_dict(), writing=False)  # a mismatch is refused with no load
    if request.text is not None:  # a text that cannot fit behind the prefix fails now (tokenizer only)
        check_query_fits(idx, request.text, request.instruction, model=spec.model, revision=spec.revision)
    err_console.print(f"loading {escape(spec.describe())}", highlight=False)
    with err_console.status("loading the model …", spinner="dots"):
        embedder = load_index_embedder(
            idx, model=run.model, adapter=run.adapter, demos=run.demos, device=run.device
        )
    searcher = Searcher(idx, embedder)
    _print_notice(searcher.notice)
    return searcher


def _check_flags(request: QueryRequest, run: QueryRun) -> None:
    """Refuse flags that do not go together, naming them (the request checks its own values).

    Raises:
        QueryError: naming the flags to drop.
    """
    from vela_search.errors import QueryError

    by_example = request.audio is not None or request.like is not None
    if run.export_dir is not None and run.queries is not None:
        raise QueryError("--export-dir writes one query's hits: drop it or --queries")
    modes = [request.mode == "long", request.instruction is not None, request.audio is not None]
    if sum([*modes, request.like is not None]) > 1:
        raise QueryError("choose one query mode: --long, --instruction TEXT, --audio FILE or --like FILE")
    if by_example and request.text is not None:
        raise QueryError("give either a text query or --audio/--like FILE, not both")
    if run.queries is not None and (request.text is not None or by_example):
        raise QueryError("--queries reads the queries from a file or standard input; give no other query")
    if not by_example and (request.start_s is not None or request.end_s is not None):
        raise QueryError(
            "--start and --end choose a span of the --audio or --like file; they need --audio or --like"
        )
    if request.like is not None and run.sets_embedder:
        raise QueryError(
            "--like searches with the vectors stored in the index and loads no model: drop --model, "
            "--adapter and --demos"
        )
    if run.paths_output and run.json_output:
        raise QueryError("choose one output: --json or --paths")
    if run.paths_output and run.queries is not None:
        raise QueryError("--paths prints one query's hits; with --queries use --json (one line per query)")
    if run.server is not None and not _server_can_answer(request, run):
        raise QueryError(
            "--server answers one text or --like query with the server's own model: drop --queries, "
            "--audio, --model, --adapter and --demos"
        )


def _judge_prompt(path: Path | None, rerank: int | None) -> Any:
    """The --rerank-prompt file, read now so that a bad file fails before the model loads."""
    if path is None:
        return None
    from vela_search.embedding.judge_prompt import load_judge_prompt
    from vela_search.errors import QueryError

    if rerank is None:
        raise QueryError("--rerank-prompt sets the judge of --rerank N: give --rerank too")
    return load_judge_prompt(path)


def _absolute(path: Path) -> str:
    """A --like path as the index stores paths (absolute), so a server in another directory finds it."""
    import os

    return os.path.abspath(os.path.expanduser(str(path)))


def _print_notice(notice: str | None) -> None:
    if notice:
        err_console.print(f"[yellow]note:[/] {notice}")


def _print_hits(hits: list[Hit], notice: str | None, request: QueryRequest, run: QueryRun) -> None:
    """One query's hits as ``run`` asks: JSON records, paths, or a table."""
    from vela_search.search import hit_record

    if run.json_output:
        print_json([hit_record(hit, notice) for hit in hits])
    elif run.paths_output:
        _print_paths(hits, segments=not request.group)
    else:
        _print_table(hits, segments=not request.group, filtered=request.filtered, mode=request.mode)
    if run.export_dir is not None:
        from vela_search.clips import export_clips

        written = export_clips(hits, run.export_dir)
        err_console.print(
            f"wrote {len(written)} segment(s) to {escape(str(run.export_dir))}", highlight=False
        )


def _print_table(hits: list[Hit], *, segments: bool, filtered: bool, mode: str = "caption") -> None:
    from vela_search.search import format_timestamp
    from vela_search.search.where import metadata_line

    if not hits:
        console.print(
            "no hits" + (" (try a looser --where, --min-score or duration filter)" if filtered else "")
        )
        return
    judged = any(hit.judge is not None for hit in hits)
    caption = "score: cosine similarity, higher is closer"
    if judged:
        caption += "; judge: the model's probability that the audio matches (order: judge + weight x score)"
    if mode == "hybrid":
        caption = "score: reciprocal rank fusion of sound and words, higher is closer"
    elif mode == "words":
        caption = "score: BM25 of the files' words over the best one's, higher is closer"
    table = Table(caption=caption, caption_justify="left")
    table.add_column("#", justify="right", no_wrap=True)
    table.add_column("score", justify="right", no_wrap=True)
    if judged:
        table.add_column("judge", justify="right", no_wrap=True)
    table.add_column("file", overflow="fold")
    table.add_column("segment" if segments else "best segment", no_wrap=True)
    table.add_column("duration", justify="right", no_wrap=True)
    for hit in hits:
        name = escape(hit.display_path)
        copies = len(hit.paths) - 1
        if copies > 0:
            name += f" [dim](+{copies} {'copy' if copies == 1 else 'copies'})[/]"
        line = metadata_line(hit.words)
        if line:
            name += f"\n[dim]{escape(line)}[/]"
        judge = [] if not judged else ["–" if hit.judge is None else f"{hit.judge:.3f}"]
        table.add_row(
            str(hit.rank),
            f"{hit.score:.4f}",
            *judge,
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


def _answer_lines(
    searcher: Searcher, template: QueryRequest, options: CheckedOptions, lines: Iterator[str], run: QueryRun
) -> int:
    """Answer every query of ``lines`` with one searcher; a bad query is reported and skipped.

    Each line is a text query with the options of ``template`` (``options``, checked already), checked
    where it is read.

    Returns:
        How many queries failed.
    """
    from vela_search.errors import VelaError
    from vela_search.search import run_query

    failed = 0
    for line in lines:
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        try:
            hits = run_query(searcher, replace(template, text=text).validate(options))
        except VelaError as exc:
            failed += 1
            _print_line_error(text, exc, run)
            continue
        _print_line_hits(text, hits, searcher.notice, template, run)
    return failed


def _print_line_hits(
    text: str, hits: list[Hit], notice: str | None, request: QueryRequest, run: QueryRun
) -> None:
    """The answer to one line of --queries: a JSON line (the records of one query's --json), or a table."""
    from vela_search.search import hit_record

    if run.json_output:
        _print_json_line({"query": text, "hits": [hit_record(hit, notice) for hit in hits], "notice": notice})
    else:
        console.print(f"[bold]{escape(text)}[/]")
        _print_table(hits, segments=not request.group, filtered=request.filtered)


def _print_line_error(text: str, exc: Exception, run: QueryRun) -> None:
    if run.json_output:
        _print_json_line({"query": text, "error": str(exc)})
    else:
        shown = text if len(text) <= 60 else text[:57] + "..."
        err_console.print(f"[bold red]error:[/] {escape(repr(shown))}: {escape(str(exc))}", highlight=False)


def _print_json_line(payload: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(payload, ensure_ascii=False, default=str) + "\n")
    sys.stdout.flush()  # a reader of the pipe gets each answer as soon as it exists
