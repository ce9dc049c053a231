"""The HTTP API's request and response bodies (typed: FastAPI checks them and documents them at /docs).

Hits are :class:`~vela_search.search.HitRecord`, the schema ``vela-search query --json`` prints: it is
defined once, in :mod:`vela_search.search.hits`, and used here as is.
"""

from __future__ import annotations

from typing import Literal, get_type_hints

from pydantic import BaseModel, ConfigDict, Field, create_model

from vela_search.search.hits import HitRecord
from vela_search.search.request import QueryRequest
from vela_search.search.validation import DEFAULT_K

__all__ = [
    "ErrorBody",
    "HitModel",
    "IndexInfo",
    "IndexList",
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


class SearchOptions(BaseModel):
    """Options every search takes (the flags of ``vela-search query`` of the same names)."""

    model_config = ConfigDict(extra="forbid")

    index: str | None = Field(None, description="Served index name (default: the first one served).")
    k: int = Field(DEFAULT_K, description="Hits: files, or segments with `segments` (1-1000).")
    segments: bool = Field(False, description="Every matching segment instead of the best per file.")
    min_score: float | None = Field(None, description="Drop hits scoring below this.")
    where: str | None = Field(None, description="Only files whose path matches this glob.")
    min_duration: float | None = Field(None, description="Only files at least this many seconds long.")
    max_duration: float | None = Field(None, description="Only files at most this many seconds long.")

    def request_options(self) -> dict:
        return {
            "k": self.k,
            "group": not self.segments,
            "min_score": self.min_score,
            "path_glob": self.where,
            "min_duration": self.min_duration,
            "max_duration": self.max_duration,
        }


class SearchBody(SearchOptions):
    """A text query: ``{"query": "dog barking", "k": 10}``."""

    query: str = Field(..., description="What to search for.")
    mode: Literal["caption", "long", "instruction"] = Field("caption", description="How to read the text.")
    instruction: str | None = Field(None, description="The request before the text (instruction mode).")

    def to_request(self) -> QueryRequest:
        return QueryRequest(
            text=self.query, mode=self.mode, instruction=self.instruction, **self.request_options()
        )


class LikeBody(SearchOptions):
    """More like an indexed file (``path``, optional span) or one indexed segment (``segment_id``)."""

    path: str | None = Field(None, description="A file of the index (as its hits name it).")
    segment_id: int | None = Field(None, description="The segment_id of a hit.")
    start: float | None = Field(None, description="With path: span start in seconds.")
    end: float | None = Field(None, description="With path: span end in seconds.")

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


class IndexList(BaseModel):
    indexes: list[IndexInfo]
    token_required: bool


class ErrorBody(BaseModel):
    """Every error: a message meant for the user, never a traceback."""

    error: str
