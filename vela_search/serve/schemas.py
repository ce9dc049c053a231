"""The HTTP API's request and response bodies (typed: FastAPI checks them and documents them at /docs).

Hits are :class:`~vela_search.search.HitRecord`, the schema ``vela-search query --json`` prints: it is
defined once, in :mod:`vela_search.search.hits`, and used here as is.
"""

from __future__ import annotations

from typing import Annotated, Literal, get_type_hints

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    create_model,
    model_validator,
)

from vela_search.search.hits import HitRecord
from vela_search.search.request import QueryRequest
from vela_search.search.rerank import MAX_RERANK
from vela_search.search.validation import DEFAULT_K, MAX_K, MAX_NPROBE, MAX_REFINE

__all__ = [
    "ErrorBody",
    "HitModel",
    "IndexInfo",
    "IndexList",
    "MAX_QUERY_CHARS",
    "MAX_SECONDS",
    "MAX_SEGMENT_ID",
    "LikeBody",
    "SearchBody",
    "SearchOptions",
    "SearchResponse",
]


# The API's hit model is generated from the one record type, so the two can never drift apart.
HitModel = create_model(
    "Hit",
    __doc__="One hit (the same fields as `vela-search query --json`).",
    **{name: (kind, ...) for name, kind in get_type_hints(HitRecord).items()},
)


def _utf8(text: str | None) -> str | None:
    """Refuse a string that cannot be UTF-8 (a lone surrogate from a ``\\ud800`` escape)."""
    if text is not None:
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError("must be valid Unicode text (no lone surrogates)") from None
    return text


# The largest number of characters a text query may have: far more than fit the model behind any prefix,
# and checked before anything tokenizes it (the body limit bounds it too).
MAX_QUERY_CHARS = 50_000
# Seconds: any longer span or duration is no audio file's.
MAX_SECONDS = 1e7
MAX_SEGMENT_ID = 2**63 - 1

# A non-empty string that is not only spaces (JSON Schema's pattern is a search, not a full match).
_NOT_BLANK = r"\S"


def text(max_length: int) -> object:
    """A non-blank string of valid Unicode, at most ``max_length`` characters (checked in that order)."""
    return Annotated[
        str, Field(min_length=1, max_length=max_length, pattern=_NOT_BLANK), AfterValidator(_utf8)
    ]


def _json_integer(value: object) -> object:
    """JSON integers only: ``3`` and ``3.0`` (JSON Schema's integers), never ``true`` or ``"3"``."""
    if isinstance(value, (bool, str, bytes)):
        raise ValueError("must be an integer")
    return value


def _json_number(value: object) -> object:
    """JSON numbers only: never ``false`` or ``"3"`` (lax parsing would read them as 0.0 and 3.0)."""
    if isinstance(value, (bool, str, bytes)):
        raise ValueError("must be a number")
    return value


Seconds = Annotated[float, Field(ge=0, le=MAX_SECONDS, allow_inf_nan=False), BeforeValidator(_json_number)]
SegmentId = Annotated[int, Field(ge=0, le=MAX_SEGMENT_ID), BeforeValidator(_json_integer)]
HitCount = Annotated[int, Field(ge=1, le=MAX_K), BeforeValidator(_json_integer)]


class SearchOptions(BaseModel):
    """Options every search takes (the flags of ``vela-search query`` of the same names)."""

    model_config = ConfigDict(extra="forbid")

    index: text(255) | None = Field(None, description="Served index name (default: the first one served).")
    k: HitCount = Field(DEFAULT_K, description="Hits: files, or segments with `segments`.")
    segments: bool = Field(
        False, strict=True, description="Every matching segment instead of the best per file."
    )
    min_score: float | None = Field(
        None,
        strict=True,
        ge=-1,
        le=1,
        allow_inf_nan=False,
        description="Drop hits scoring below this (a cosine).",
    )
    where: text(4096) | Annotated[list[text(4096)], Field(min_length=1, max_length=32)] | None = Field(
        None,
        description="Only files whose path matches this glob; and/or field filters on the files' words "
        '(FIELD=VALUE, FIELD~WORDS; a list: all must hold), e.g. ["library=ACME", "description~rain"].',
    )
    min_duration: Seconds | None = Field(
        None, description="Only files at least this many seconds long (at most max_duration: else 400)."
    )
    max_duration: Seconds | None = Field(None, description="Only files at most this many seconds long.")
    rerank: Annotated[int, Field(ge=1, le=MAX_RERANK), BeforeValidator(_json_integer)] | None = Field(
        None,
        description="Re-rank the top N hits with the model's yes/no judgement of each candidate's "
        "audio against the query (hits then carry `judge`).",
    )

    nprobe: Annotated[int, Field(ge=1, le=MAX_NPROBE), BeforeValidator(_json_integer)] | None = Field(
        None, description="Compressed indexes: IVF lists probed first (default: the index's tuned value)."
    )
    refine: Annotated[int, Field(ge=1, le=MAX_REFINE), BeforeValidator(_json_integer)] | None = Field(
        None, description="Compressed indexes: candidates re-scored exactly (default: the tuned depth)."
    )
    exact: bool = Field(
        False, strict=True, description="Scan every stored vector instead of the compressed codes (slower)."
    )

    def request_options(self) -> dict:
        from vela_search.search.where import split_where

        path_glob, fields = split_where([self.where] if isinstance(self.where, str) else self.where)
        return {
            "where": fields,
            "nprobe": self.nprobe,
            "refine": self.refine,
            "exact": self.exact,
            "k": self.k,
            "group": not self.segments,
            "min_score": self.min_score,
            "path_glob": path_glob,
            "min_duration": self.min_duration,
            "max_duration": self.max_duration,
            "rerank": self.rerank,
        }


class SearchBody(SearchOptions):
    """A text query: ``{"query": "dog barking", "k": 10}``."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "oneOf": [
                {
                    "properties": {"mode": {"const": "instruction"}, "instruction": {"type": "string"}},
                    "required": ["mode", "instruction"],
                },
                {
                    "properties": {
                        "mode": {"enum": ["caption", "long", "words", "hybrid"]},
                        "instruction": {"type": "null"},
                    },
                },
            ]
        },
    )

    query: text(MAX_QUERY_CHARS) = Field(..., description="What to search for.")
    mode: Literal["caption", "long", "instruction", "words", "hybrid"] = Field(
        "caption",
        description="How to read the text: by sound (caption, long, instruction), by the files' words "
        "(words: BM25 over names and metadata) or both fused per file (hybrid).",
    )
    instruction: text(MAX_QUERY_CHARS) | None = Field(
        None, description="The request before the text (instruction mode only, where it is needed)."
    )

    @model_validator(mode="after")
    def _instruction_with_its_mode(self) -> SearchBody:
        if self.mode == "instruction" and self.instruction is None:
            raise ValueError("instruction mode needs an instruction, e.g. 'find the same sound source as:'")
        if self.mode != "instruction" and self.instruction is not None:
            raise ValueError(f"instruction applies to instruction mode only, not to {self.mode} mode")
        return self

    def to_request(self) -> QueryRequest:
        return QueryRequest(
            text=self.query, mode=self.mode, instruction=self.instruction, **self.request_options()
        )


class LikeBody(SearchOptions):
    """More like an indexed file (``path``, optional span) or one indexed segment (``segment_id``)."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "oneOf": [
                {"required": ["path"], "not": {"required": ["segment_id"]}},
                {
                    "required": ["segment_id"],
                    "not": {
                        "anyOf": [{"required": ["path"]}, {"required": ["start"]}, {"required": ["end"]}]
                    },
                },
            ]
        },
    )

    # Not nullable: exactly one of the two is present (the oneOf above), and null is no value of either.
    path: text(4096) = Field(None, description="A file of the index (as its hits name it).")
    segment_id: SegmentId = Field(None, description="The segment_id of a hit.")
    start: Seconds | None = Field(None, description="With path: span start in seconds.")
    end: Seconds | None = Field(None, description="With path: span end in seconds.")

    @model_validator(mode="after")
    def _one_of(self) -> LikeBody:
        if (self.path is None) == (self.segment_id is None):
            raise ValueError("give either path (a file of the index) or segment_id (from a hit)")
        if self.segment_id is not None and (self.start is not None or self.end is not None):
            raise ValueError("a segment is searched whole: drop start and end")
        return self

    def to_request(self) -> QueryRequest:
        return QueryRequest(
            like=self.path,
            like_segment=self.segment_id,
            start_s=self.start,
            end_s=self.end,
            **self.request_options(),
        )


class SearchResponse(BaseModel):
    """Hits best first, with the index generation they come from."""

    index: str
    generation: int
    hits: list[HitModel]  # type: ignore[valid-type]
    notice: str | None = Field(None, description="A warning for every hit (the tiny random model's).")
    behind: str | None = Field(
        None,
        description="Set when the index has a newer generation this server cannot answer from yet "
        "(its embedder is loading, or cannot be loaded): why, and which generation answered.",
    )
    took_ms: float


class IndexActivity(BaseModel):
    """A writer's pending work, from the index's activity.json (docs/format.md)."""

    files_waiting: int = Field(description='Files seen and not yet committed ("N files being added").')
    maintenance: list[str] = Field(description='Background work pending or running, e.g. ["merge"].')
    paused_roots: list[str] = Field(description="Watched folders that are missing: paused, nothing removed.")
    caught_up_at: float | None = Field(description="UNIX time the index last matched its folders.")
    updated_at: float
    pid: int
    host: str
    live: bool = Field(description="Whether the writer is still running (a dead writer's record is stale).")
    pending: bool = Field(description="A live writer has files waiting or maintenance pending.")


class IndexInfo(BaseModel):
    """What one served index holds."""

    name: str
    path: str
    generation: int
    vectors: int
    files: int
    failed_files: int
    shards: int
    dim: int
    embedder: dict
    notice: str | None
    behind: str | None = Field(
        None, description="Why the served generation is not the index's latest (None: it is the latest)."
    )
    activity: IndexActivity | None = Field(
        None, description="What a running writer (`index`, `index --watch`, `serve --watch`) has pending."
    )


class IndexList(BaseModel):
    indexes: list[IndexInfo]
    token_required: bool


class ErrorBody(BaseModel):
    """Every error: a message meant for the user, never a traceback."""

    error: str
