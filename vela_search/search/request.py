"""One query, whatever asks it: the request, its model-free checks, and running it on a `Searcher`.

The command line (``vela-search query``) and the HTTP service (``vela-search serve``) both describe a
search as a :class:`QueryRequest` and answer it with :func:`run_query`, so a query means the same thing,
is refused with the same message and returns the same hits (:func:`hit_record`) on either path. A request
is checked once, where it enters: :meth:`QueryRequest.validate` turns it into a :class:`CheckedQuery`,
which :func:`run_query` and the `Searcher` methods under it take as it is (a plain request given to
:func:`run_query`, as Python callers give one, is validated there).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from vela_search.errors import QueryError
from vela_search.search.hits import Hit, HitRecord, hit_record
from vela_search.search.hybrid import WORD_MODES, attach_words, search_with_words
from vela_search.search.options import SearchOptions
from vela_search.search.rerank import check_rerank
from vela_search.search.validation import DEFAULT_K, check_not_empty, check_text_query
from vela_search.search.where import parse_where

if TYPE_CHECKING:
    from vela_search.embedding.embedder import EmbedItem
    from vela_search.embedding.judge import JudgeReference
    from vela_search.embedding.judge_prompt import JudgePrompt
    from vela_search.search.searcher import Searcher
    from vela_search.search.where import Condition

__all__ = [
    "CheckedOptions",
    "CheckedQuery",
    "HitRecord",
    "QueryRequest",
    "hit_record",
    "hits_from_records",
    "run_query",
]


@dataclass(frozen=True)
class QueryRequest:
    """A search: exactly one of a text, an audio clip, an indexed file or an indexed segment, and options.

    Attributes:
        text: a text query (with ``mode`` and, in instruction mode, ``instruction``).
        mode: ``caption``, ``long`` or ``instruction`` (the Vela vector modes), ``words`` (BM25 over the
            files' names and metadata) or ``hybrid`` (both fused; see :mod:`vela_search.search.hybrid`).
        instruction: the request that precedes the text in instruction mode.
        audio: query by example: an audio file or a 16 kHz mono waveform, embedded as audio.
        like: more like this indexed file (its stored vectors; no model).
        like_segment: more like this indexed segment id (its stored vector; no model).
        start_s, end_s: the span of ``audio`` or ``like``.
        k: hits, 1..MAX_K (files when grouped, segments otherwise).
        group: one hit per file (its best segment); False lists every segment.
        min_score: drop hits scoring below this.
        path_glob: only files whose path matches this glob (see :func:`normalize_glob`).
        min_duration, max_duration: only files of this length in seconds (None: open end).
        where: field filters on the files' words, ``FIELD=VALUE`` or ``FIELD~WORDS`` (text queries).
        rerank: judge the top this-many hits with the audio LLM and re-order them (None: vector order
            only; see :mod:`vela_search.search.rerank`).
        rerank_prompt: the judge prompt (a JSON file or a JudgePrompt; None: the default). Set by the
            command line and the server's own settings, never from a request body.
        nprobe: compressed indexes: IVF lists probed first (None: the tuned value), 1..MAX_NPROBE.
        refine: compressed indexes: candidates re-scored exactly (None: the tuned depth), 1..MAX_REFINE.
        exact: scan every stored vector instead of the compressed codes.
    """

    text: str | None = None
    mode: str = "caption"
    instruction: str | None = None
    audio: str | Path | np.ndarray | None = None
    like: str | Path | None = None
    like_segment: int | None = None
    start_s: float | None = None
    end_s: float | None = None
    k: int = DEFAULT_K
    group: bool = True
    min_score: float | None = None
    path_glob: str | None = None
    min_duration: float | None = None
    max_duration: float | None = None
    where: tuple[str, ...] = ()
    rerank: int | None = None
    rerank_prompt: str | Path | JudgePrompt | None = None
    nprobe: int | None = None
    refine: int | None = None
    exact: bool = False

    @property
    def kind(self) -> str:
        """``text``, ``audio``, ``like`` or ``like_segment``."""
        if self.audio is not None:
            return "audio"
        if self.like is not None:
            return "like"
        if self.like_segment is not None:
            return "like_segment"
        return "text"

    @property
    def needs_model(self) -> bool:
        """Whether the query is embedded by the model (text and audio) rather than read from the index."""
        return self.kind in ("text", "audio") and self.mode != "words"

    @property
    def duration(self) -> tuple[float | None, float | None] | None:
        if self.min_duration is None and self.max_duration is None:
            return None
        return (self.min_duration, self.max_duration)

    @property
    def filtered(self) -> bool:
        """Whether a filter may have removed hits (for the "no hits" hint)."""
        return self.path_glob is not None or self.min_score is not None or self.duration is not None

    def validate(self, options: CheckedOptions | None = None) -> CheckedQuery:
        """Every check that needs no model and no index, so that a bad query fails before any slow work.

        Args:
            options: this request's options when they were checked already (:meth:`validate_options`:
                ``query --queries`` checks them once, then each line's query as it is read).

        Returns:
            The request, checked: what :func:`run_query` takes without checking it again.

        Raises:
            QueryError: no query or more than one, an empty text, an unknown mode, an instruction outside
                instruction mode, a span without a clip, k out of bounds, a bad score or duration filter,
                an empty path filter.
        """
        given = sum(x is not None for x in (self.audio, self.like, self.like_segment))
        if given > 1:
            raise QueryError("give one query by example: an audio clip, an indexed file or a segment")
        if given and self.text is not None:
            raise QueryError("give either a text query or an audio clip / indexed file, not both")
        if self.kind == "text":
            if self.text is None:
                raise QueryError(
                    'the query is empty; give some words to search for, e.g. vela-search query "dog barking"'
                )
            vector_mode = "caption" if self.mode in WORD_MODES else self.mode
            check_text_query(self.text, vector_mode, self.instruction)
            if self.start_s is not None or self.end_s is not None:
                raise QueryError(
                    "a start and end choose a span of an audio clip or indexed file, not of a text"
                )
        elif self.kind == "like_segment" and (self.start_s is not None or self.end_s is not None):
            raise QueryError("a segment is searched whole: drop the start and end")
        if self.kind != "text" and self.instruction is not None:
            raise QueryError("an instruction applies to a text query in instruction mode only")
        if self.kind != "text" and (self.where or self.mode in WORD_MODES):
            raise QueryError("words mode, hybrid mode and --where filters apply to text queries")
        return CheckedQuery(self, options if options is not None else self.validate_options())

    def validate_options(self) -> CheckedOptions:
        """The checks of the options alone (k, filters, accuracy knobs, re-ranking), for any query.

        Returns:
            The options in the form the search takes them.

        Raises:
            QueryError: k, nprobe, refine or rerank out of bounds, a bad score, duration or field filter,
                an empty path filter, a non-boolean exact.
        """
        search = SearchOptions.checked(**self.search_options())
        where = tuple(parse_where(self.where))
        check_rerank(self.rerank)
        return CheckedOptions(search=search, where=where)

    def embed_item(self, clip: np.ndarray | None = None) -> EmbedItem:
        """What the model embeds for a text or audio query (``clip``: the decoded audio, for audio queries).

        Raises:
            QueryError: the request is answered from stored vectors and has nothing to embed.
        """
        from vela_search.embedding.embedder import EmbedItem

        if self.kind == "text":
            mode = "caption" if self.mode in WORD_MODES else self.mode  # hybrid embeds a caption
            return EmbedItem(mode, text=self.text, instruction=self.instruction)
        if self.kind == "audio":
            if clip is None:
                from vela_search.search.clips import load_query_clip

                clip = load_query_clip(self.audio, self.start_s, self.end_s)  # type: ignore[arg-type]
            return EmbedItem("audio", wave=clip)
        raise QueryError("a search by an indexed file or segment uses stored vectors: nothing to embed")

    def judge_reference(self, searcher: Searcher, clip: np.ndarray | None = None) -> JudgeReference:
        """What re-ranking judges the candidates against: the text as written, or the example's audio.

        ``clip`` is the decoded query clip of an audio query, when the caller has it. An indexed file
        (``like``) is read as a query by example reads it (whole up to 30 s, else its first 10 s or the
        span, at most 30 s of it); an indexed segment is read over its span.

        Raises:
            AudioDecodeError: the example cannot be decoded.
        """
        from vela_search.embedding.judge import JudgeReference
        from vela_search.search.clips import MAX_AUDIO_QUERY_S, load_query_clip

        kind = self.kind
        if kind == "text":
            instruction = self.instruction if self.mode == "instruction" else None
            return JudgeReference.for_text(self.text, instruction)  # type: ignore[arg-type]
        if kind == "audio":
            if clip is None:
                clip = load_query_clip(self.audio, self.start_s, self.end_s)  # type: ignore[arg-type]
            return JudgeReference(wave=clip)
        if kind == "like":
            end = self.end_s
            if self.start_s is not None and end is not None:
                end = min(end, self.start_s + MAX_AUDIO_QUERY_S)
            return JudgeReference(wave=load_query_clip(self.like, self.start_s, end))  # type: ignore[arg-type]
        from vela_search.audio import decode_audio

        row = searcher.segment(self.like_segment)  # type: ignore[arg-type]
        end = row.get("end_s")
        wave = decode_audio(row["path"], start_s=float(row.get("start_s") or 0.0), end_s=end)
        return JudgeReference(wave=wave)

    def search_options(self) -> dict[str, Any]:
        """Keyword arguments of the Searcher's search methods."""
        return {
            "k": self.k,
            "min_score": self.min_score,
            "path_glob": self.path_glob,
            "duration": self.duration,
            "group": self.group,
            "nprobe": self.nprobe,
            "refine": self.refine,
            "exact": self.exact,
        }


@dataclass(frozen=True)
class CheckedOptions:
    """A request's options as :meth:`QueryRequest.validate_options` checked them.

    Attributes:
        search: the vector search's options (k, filters, grouping, accuracy knobs).
        where: the field filters, parsed.
    """

    search: SearchOptions
    where: tuple[Condition, ...] = ()


@dataclass(frozen=True)
class CheckedQuery:
    """A request that passed :meth:`QueryRequest.validate`, with its options in the form the search takes.

    Made where a request enters (the command line, the HTTP routes, :func:`run_query` for Python callers);
    :func:`run_query` and the `Searcher` methods it calls take it as it is, without checking it again.

    Attributes:
        request: the request as given.
        options: its options, checked.
    """

    request: QueryRequest
    options: CheckedOptions

    def with_clip(self, clip: np.ndarray) -> CheckedQuery:
        """This audio query with its clip decoded already (the span is cut: nothing left to check)."""
        return replace(self, request=replace(self.request, audio=clip, start_s=None, end_s=None))


def run_query(
    searcher: Searcher,
    query: QueryRequest | CheckedQuery,
    *,
    vector: np.ndarray | None = None,
    clip: np.ndarray | None = None,
    on_model_thread: Callable[[Callable[[], np.ndarray]], np.ndarray] | None = None,
) -> list[Hit]:
    """Answer ``query`` with ``searcher``.

    Args:
        searcher: the index and (for text and audio queries) its embedder.
        query: the query: checked where it entered (a :class:`CheckedQuery`, taken as it is), or a
            :class:`QueryRequest`, validated here.
        vector: the query's unit vector when the caller embedded it already (e.g. in a batch with other
            queries); otherwise text and audio queries are embedded by the searcher's embedder.
        clip: the decoded clip of an audio query, when the caller decoded it already (re-ranking judges
            against it).
        on_model_thread: where re-ranking runs the judge's forward (see :meth:`Searcher.rerank`).

    Raises:
        QueryError, EmptyIndexError, AudioDecodeError: as the Searcher's methods.
    """
    checked = query if isinstance(query, CheckedQuery) else query.validate()
    request, options = checked.request, checked.options
    if request.kind == "text" and (request.where or request.mode in WORD_MODES):
        search = options.search
        return search_with_words(
            searcher,
            request.text,  # type: ignore[arg-type]
            mode=request.mode,
            where=list(options.where),
            k=search.k,
            path_glob=search.path_glob,
            duration=search.duration,
            min_score=search.min_score,
            vector=vector,
            nprobe=search.nprobe,
            refine=search.refine,
            exact=search.exact,
        )
    search = options.search
    if request.rerank:
        search = replace(search, k=max(search.k, request.rerank))  # judge the top N even when fewer show
    hits = _vector_hits(searcher, request, search, vector, clip)
    if not request.rerank:
        return hits
    reference = request.judge_reference(searcher, clip)
    hits = searcher.rerank(
        hits, reference, n=request.rerank, prompt=request.rerank_prompt, on_model_thread=on_model_thread
    )
    return hits[: request.k]


def _vector_hits(
    searcher: Searcher,
    request: QueryRequest,
    options: SearchOptions,
    vector: np.ndarray | None,
    clip: np.ndarray | None,
) -> list[Hit]:
    """The hits of a checked request by its vector: given, stored in the index, or embedded now."""
    kind, embedded_by_caller = request.kind, vector is not None
    if vector is None:
        check_not_empty(searcher.index)  # before any model work or lookup, as the Searcher's methods do
        if kind == "like":
            vector = searcher.file_vector(request.like, request.start_s, request.end_s)  # type: ignore[arg-type]
        elif kind == "like_segment":
            vector = searcher.segment_vector(request.like_segment)  # type: ignore[arg-type]
        else:
            vector = searcher.embed([request.embed_item(clip)])
    hits = searcher.search_checked(vector, options)[0]
    # Words beside the hits of a text query, and of what a server embedded (text or audio) in its batches.
    return attach_words(searcher.index, hits) if kind == "text" or embedded_by_caller else hits


def hits_from_records(records: list[HitRecord]) -> list[Hit]:
    """Hits back from their JSON records (what a server answered), for the same rendering as local hits."""
    return [Hit.from_record(r) for r in records]
