"""The judge's prompt: what the audio LLM is asked about a query and one candidate, and how it answers.

A prompt holds two user-turn templates, one for text queries (``text``) and one for query by example
(``audio``), each with a ``{query}`` placeholder (the query text as written, or the example clip) followed
by a ``{candidate}`` placeholder (the candidate segment's audio). Everything before ``{candidate}`` is the
same for every candidate of a request, so the judge computes it once and shares it as a prefix. The
answer is read as the log-odds of the ``yes`` words against the ``no`` words at the first answer token.
``vector_weight`` sets how much the vector score counts in the final order (see
:mod:`vela_search.search.rerank`).

A prompt file is JSON with any of these keys; keys it leaves out keep the default
(:data:`DEFAULT_JUDGE_PROMPT`).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

from vela_search.errors import QueryError

__all__ = ["DEFAULT_JUDGE_PROMPT", "JudgePrompt", "load_judge_prompt"]

QUERY = "{query}"
CANDIDATE = "{candidate}"


@dataclass(frozen=True)
class JudgePrompt:
    """The judge's wording, answer words and the vector score's weight in the final order.

    Attributes:
        text: the user turn for a text query: ``{query}`` (the text, as written) then ``{candidate}``.
        audio: the user turn for query by example: ``{query}`` (the example clip) then ``{candidate}``.
        yes: answer words that mean "matches" (their first tokens are pooled).
        no: answer words that mean "does not match".
        vector_weight: weight of the cosine score beside the judge's probability (>= 0).
    """

    text: str
    audio: str
    yes: tuple[str, ...] = ("Yes", "yes")
    no: tuple[str, ...] = ("No", "no")
    vector_weight: float = 0.5

    def __post_init__(self) -> None:
        for name in ("text", "audio"):
            template = getattr(self, name)
            if not isinstance(template, str):
                raise QueryError(f"judge prompt: {name!r} must be a string")
            if template.count(QUERY) != 1 or template.count(CANDIDATE) != 1:
                raise QueryError(
                    f"judge prompt: the {name!r} template needs {QUERY} and {CANDIDATE} exactly once each"
                )
            if template.index(QUERY) > template.index(CANDIDATE):
                raise QueryError(
                    f"judge prompt: in the {name!r} template {QUERY} must come before {CANDIDATE} (what "
                    "precedes the candidate is computed once per query and shared)"
                )
        for name in ("yes", "no"):
            words = getattr(self, name)
            if not words or not all(isinstance(w, str) and w.strip() for w in words):
                raise QueryError(f"judge prompt: {name!r} must be a non-empty list of words")
        weight = self.vector_weight
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not math.isfinite(weight):
            raise QueryError("judge prompt: 'vector_weight' must be a number")
        if weight < 0:
            raise QueryError("judge prompt: 'vector_weight' must be >= 0")

    def template(self, kind: str) -> str:
        """The template for a ``text`` or ``audio`` reference."""
        return self.text if kind == "text" else self.audio

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @property
    def digest(self) -> str:
        """A short digest of the prompt (reports name the prompt a re-ranking used)."""
        raw = json.dumps(self.to_dict(), sort_keys=True).encode()
        return hashlib.sha256(raw).hexdigest()[:12]


# Why this wording: the model sees the query first and the candidate last, so its answer follows
# directly on the audio it judges; the query is quoted as written, so a question, a command or an
# exclusion ("rain, no thunder") reaches the model as the user typed it, and the prompt says that such
# forms occur and what an exclusion means, which a one-vector search cannot express. Asking for a yes/no
# answer makes the first answer token carry the whole judgement, so one forward per candidate scores it
# (no generation), deterministically. "Yes"/"yes" and "No"/"no" are pooled because the instruction-tuned
# model answers in either case.
DEFAULT_JUDGE_PROMPT = JudgePrompt(
    text=(
        "You judge search results in a sound library. Decide whether the recording matches the search "
        "query. The query may describe sounds, ask for something, or exclude sounds (for example, "
        '"rain, no thunder" means rain is heard and thunder is not).\n'
        "Query: {query}\n"
        "{candidate}"
        "Does the recording match the query? Answer yes or no."
    ),
    audio=(
        "You judge search results in a sound library. The first recording is an example; decide whether "
        "the second recording contains the same kind of sound.\n"
        "{query}"
        "{candidate}"
        "Does the second recording match the example? Answer yes or no."
    ),
)


def load_judge_prompt(source: str | os.PathLike[str] | JudgePrompt | None) -> JudgePrompt:
    """The default prompt (None), a prompt as given, or one read from a JSON file.

    Raises:
        QueryError: the file cannot be read, is not a JSON object, has unknown keys or bad values.
    """
    if source is None:
        return DEFAULT_JUDGE_PROMPT
    if isinstance(source, JudgePrompt):
        return source
    path = Path(source).expanduser()
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise QueryError(f"cannot read the judge prompt {path}: {exc}") from exc
    except json.JSONDecodeError as exc:
        raise QueryError(f"the judge prompt {path} is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise QueryError(f"the judge prompt {path} must be a JSON object")
    known = {f.name for f in fields(JudgePrompt)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise QueryError(
            f"the judge prompt {path} has unknown keys {', '.join(unknown)}; "
            f"expected {', '.join(sorted(known))}"
        )
    for key in ("yes", "no"):
        if key in data:
            value = data[key]
            data[key] = (
                (value,) if isinstance(value, str) else tuple(value) if isinstance(value, list) else value
            )
    return replace(DEFAULT_JUDGE_PROMPT, **data)
