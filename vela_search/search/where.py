"""Field filters on a file's words: ``FIELD=VALUE`` (the whole value) and ``FIELD~WORDS`` (words in it).

``library=ACME`` keeps files whose ``library`` field is exactly "ACME" (case-insensitive);
``description~rain`` keeps files whose description contains the word "rain" (several words: that phrase).
Field names are the lower-case names the metadata reader gives (``description``, ``originator``,
``category``, ``subcategory``, ``library``, ``title``, ``comment``, ``name``, ...; ``vela-search info``
lists an index's). Every condition must hold. Parsed once, where a request enters.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from vela_search.errors import QueryError

__all__ = ["Condition", "metadata_line", "parse_where", "split_where"]

_FIELD = re.compile(r"^[a-z0-9_]{1,40}$")
_LOOKS_LIKE_FIELD = re.compile(r"^\s*[A-Za-z0-9_]{1,40}\s*[=~]")
# A filter with no field name ("=x", "~rain"), but not a home-relative path glob ("~/sounds/*", "~me/x").
_MISSING_FIELD = re.compile(r"^\s*(=|~(?![^=~]*/))")
_FORMS = (
    "write FIELD=VALUE (the whole value) or FIELD~WORDS (words in it), e.g. library=ACME or "
    "description~rain; a path filter is a glob such as '*/birds/*'"
)
# Shown first under a hit, in this order; then the other fields.
_SHOWN_FIRST = ("description", "category", "subcategory", "library", "title", "comment", "originator")
_CONDITION = re.compile(r"^\s*([^=~]*?)\s*([=~])\s*(.*?)\s*$", re.S)


@dataclass(frozen=True)
class Condition:
    """One field filter: ``field``, ``op`` (``=`` or ``~``) and ``value``."""

    field: str
    op: str
    value: str

    def __str__(self) -> str:
        return f"{self.field}{self.op}{self.value}"


def parse_where(filters: Iterable[str] | None) -> list[Condition]:
    """Parse ``FIELD=VALUE`` / ``FIELD~WORDS`` filters.

    Raises:
        QueryError: a filter without ``=`` or ``~``, a bad field name or an empty value.
    """
    out = []
    for text in filters or ():
        match = _CONDITION.match(text)
        if match is None:
            raise QueryError(f"bad filter {text!r}: {_FORMS}")
        field, op, value = match.groups()
        field = field.lower()
        if not field:
            raise QueryError(f"bad filter {text!r}: no field name before {op!r}; {_FORMS}")
        if not _FIELD.match(field):
            raise QueryError(
                f"bad filter {text!r}: the field name {field!r} must be 1-40 letters, digits or underscores "
                "(e.g. description, library, category)"
            )
        if not value or (op == "~" and not re.search(r"\w", value)):
            raise QueryError(f"bad filter {text!r}: give a value after {op!r}, e.g. {field}{op}rain")
        out.append(Condition(field, op, value))
    return out


def split_where(values: Iterable[str] | None) -> tuple[str | None, tuple[str, ...]]:
    """Split ``--where`` values into the path glob (at most one) and field filters (``FIELD=``/``FIELD~``).

    A value starting with ``=`` or ``~`` (not a home-relative path such as ``~/sounds/*``) is a field
    filter missing its field name: :func:`parse_where` rejects it, naming the accepted forms.

    Raises:
        QueryError: more than one path glob.
    """

    def is_field(value: str) -> bool:
        return bool(_LOOKS_LIKE_FIELD.match(value) or _MISSING_FIELD.match(value))

    globs = [v for v in values or () if not is_field(v)]
    fields = tuple(v for v in values or () if is_field(v))
    if len(globs) > 1:
        raise QueryError(f"give one path glob, not {len(globs)} ({', '.join(map(repr, globs))})")
    return (globs[0] if globs else None), fields


def metadata_line(fields: dict[str, str], width: int = 160) -> str:
    """One line of a file's words for display: ``description: ... · category: AMB · ...`` (cut to width)."""
    order = [k for k in _SHOWN_FIRST if k in fields] + [
        k for k in fields if k not in _SHOWN_FIRST and k != "name"
    ]
    line = " · ".join(f"{k}: {fields[k]}" for k in order)
    return line if len(line) <= width else line[: width - 1] + "…"
