"""Query checks that need no model: k, minimum score, text and mode, path filter, a non-empty index."""

from __future__ import annotations

import math
from pathlib import PurePath
from typing import TYPE_CHECKING

import numpy as np

from vela_search.errors import EmptyIndexError, QueryError

if TYPE_CHECKING:
    from vela_search.embedding.embedder import EmbedItem, VelaEmbedder
    from vela_search.store import AudioIndex

__all__ = [
    "DEFAULT_K",
    "MAX_K",
    "MAX_NPROBE",
    "MAX_REFINE",
    "TEXT_MODES",
    "check_duration",
    "check_fits",
    "check_exact",
    "check_k",
    "check_min_score",
    "check_not_empty",
    "check_nprobe",
    "check_query_fits",
    "check_refine",
    "check_text_query",
    "normalize_glob",
    "too_long_error",
]

DEFAULT_K = 10
# Past this, a "top-k" is an export; the grouped over-fetch would read most of the metadata anyway.
MAX_K = 1000
TEXT_MODES: tuple[str, ...] = ("caption", "long", "instruction")
# Bounds of the per-query accuracy knobs of compressed indexes. nprobe past an index's list count probes
# every list; a re-rank depth of 20,000 re-scores 20,000 fp16 vectors per query (~80 ms at 4096 dims):
# the most a single query may ask of a shared server.
MAX_NPROBE = 65_536
MAX_REFINE = 20_000


def normalize_glob(path_glob: str | None) -> str | None:
    """The pattern matched against stored (absolute) paths.

    A pattern anchored at the root (``/data/birds/*``) or starting with ``*`` is used as given; any other
    one is relative and may match from any directory down: ``birds/*.flac`` becomes ``*/birds/*.flac`` and
    ``kettle.wav`` becomes ``*/kettle.wav``, so a path as the results table shows it works as a filter.

    Raises:
        QueryError: an empty pattern.
    """
    if path_glob is None:
        return None
    if not path_glob.strip():
        raise QueryError("the path filter (--where) is empty; give a glob such as '*/birds/*'")
    if path_glob.startswith(("/", "*")) or PurePath(path_glob).is_absolute():
        return path_glob
    return "*/" + path_glob.removeprefix("./")


def check_k(k: int) -> int:
    """Return ``k`` if it is an integer in ``1..MAX_K``.

    Raises:
        QueryError: otherwise, naming the bounds.
    """
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= int(k) <= MAX_K:
        raise QueryError(f"k (-k) must be an integer from 1 to {MAX_K}, got {k!r}")
    return int(k)


def _check_count(value: int | None, name: str, most: int) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not 1 <= int(value) <= most:
        raise QueryError(f"{name} must be an integer from 1 to {most}, got {value!r}")
    return int(value)


def check_nprobe(nprobe: int | None) -> int | None:
    """Return ``nprobe`` (IVF lists a compressed index probes first) if None or in ``1..MAX_NPROBE``.

    Raises:
        QueryError: otherwise, naming the bounds.
    """
    return _check_count(nprobe, "nprobe", MAX_NPROBE)


def check_refine(refine: int | None) -> int | None:
    """Return ``refine`` (candidates re-scored exactly) if None or in ``1..MAX_REFINE``.

    Raises:
        QueryError: otherwise, naming the bounds.
    """
    return _check_count(refine, "refine", MAX_REFINE)


def check_exact(exact: bool) -> bool:
    """Return ``exact`` if it is a bool.

    Raises:
        QueryError: any other value.
    """
    if not isinstance(exact, (bool, np.bool_)):
        raise QueryError(f"exact must be true or false, got {exact!r}")
    return bool(exact)


def check_min_score(min_score: float | None) -> float | None:
    """Return ``min_score`` as a float if it is None or a number in [-1, 1] (the range of a cosine).

    Raises:
        QueryError: not a number, NaN, or outside [-1, 1].
    """
    if min_score is None:
        return None
    try:
        value = float(min_score)
    except (TypeError, ValueError):
        raise QueryError(f"min_score must be a number, got {min_score!r}") from None
    if math.isnan(value):
        raise QueryError("min_score must be a number, got NaN")
    if not -1.0 <= value <= 1.0:
        raise QueryError(
            f"--min-score must be between -1 and 1 (scores are cosine similarities), got {value:g}"
        )
    return value


def check_utf8(text: str, what: str) -> None:
    """Refuse text that came from bytes which are not UTF-8 (Python keeps them as lone surrogates).

    Raises:
        QueryError: naming the first bad byte.
    """
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        raw = text[e.start : e.end].encode("utf-8", "surrogateescape")
        raise QueryError(
            f"{what} is not valid UTF-8 text (byte 0x{raw[0]:02x} at character {e.start + 1}); "
            "give it in UTF-8 (check the terminal's or the file's encoding)"
        ) from None


def check_text_query(query: str, mode: str = "caption", instruction: str | None = None) -> str:
    """Validate a text query without a model: non-empty text, a known mode, an instruction where needed.

    Returns:
        The mode.

    Raises:
        QueryError: an empty or whitespace-only query or instruction, an unknown mode, or an instruction
            outside instruction mode.
    """
    if mode not in TEXT_MODES:
        raise QueryError(f"unknown query mode {mode!r}; use one of {', '.join(TEXT_MODES)} (or search_audio)")
    if not isinstance(query, str) or not query.strip():
        raise QueryError("the query is empty; give some words to search for")
    check_utf8(query, "the query")
    if instruction is not None:
        check_utf8(instruction, "the instruction")
    if mode == "instruction":
        if instruction is None or not instruction.strip():
            raise QueryError(
                "instruction mode needs a non-empty instruction, e.g. --instruction "
                "'find recordings with the same sound source as:'"
            )
    elif instruction is not None:
        raise QueryError(f"an instruction applies to instruction mode only, not to {mode} mode")
    return mode


def check_duration(duration: tuple[float | None, float | None]) -> tuple[float | None, float | None]:
    """Validate a file-length filter ``(min, max)`` in seconds (None: open end).

    Raises:
        QueryError: a bound that is not a number >= 0, or min above max.
    """
    try:
        low, high = duration
    except (TypeError, ValueError):
        raise QueryError(f"a duration filter is (min, max) in seconds, got {duration!r}") from None
    for name, value in (("minimum", low), ("maximum", high)):
        if value is not None and not (
            isinstance(value, (int, float)) and math.isfinite(value) and value >= 0
        ):
            raise QueryError(f"the {name} duration must be a number of seconds >= 0, got {value!r}")
    if low is not None and high is not None and low > high:
        raise QueryError(f"the minimum duration ({low:g} s) is above the maximum ({high:g} s)")
    return (None if low is None else float(low), None if high is None else float(high))


def too_long_error(
    count: int, prefix_tokens: int, max_positions: int, *, at_least: bool = False
) -> QueryError:
    """The error for a query of ``count`` tokens that does not fit behind the prefix."""
    room = max_positions - prefix_tokens
    where = f" after the {prefix_tokens}-token shared prefix (system turn, demos)" if prefix_tokens else ""
    return QueryError(
        f"the query is {'at least ' if at_least else ''}{count} tokens but at most {room} fit{where} (the "
        f"model has {max_positions} positions); shorten the query: it is never truncated"
    )


def check_fits(embedder: VelaEmbedder, item: EmbedItem) -> None:
    """Refuse a text item that does not fit behind the embedder's prefix (audio items always fit).

    Raises:
        QueryError: naming the item's token count and the room left.
    """
    if item.is_audio:
        return
    prefix = embedder.prefix_length
    count = embedder.token_count(item)
    if prefix + count > embedder.max_positions:
        raise too_long_error(count, prefix, embedder.max_positions)


# The prompt around a text may merge a token or two across each of the text's edges, so the text's own
# token count less this (per text) is a lower bound on what it takes in the prompt.
_EDGE_TOKENS = 2


def check_query_fits(
    index: AudioIndex, query: str, instruction: str | None, *, model: str, revision: str | None = None
) -> None:
    """Refuse, before any model is loaded, a text query that cannot fit behind the index's prefix.

    Uses the query room ``vela-search index`` records (prefix tokens, positions). A text with no more UTF-8
    bytes than free positions is left to the exact check after loading (a byte-level BPE token covers at
    least one byte, so such a text is rarely the problem); a longer one is counted with the model's
    tokenizer alone, read from local files. Without a record or a tokenizer this check does nothing.

    Raises:
        QueryError: the text alone takes more positions than are left after the prefix.
    """
    from vela_search.indexing.spec import recorded_room

    room = recorded_room(index.root, dict(index.fingerprint))
    texts = [query] + ([instruction] if instruction else [])
    if room is None or sum(len(t.encode("utf-8")) for t in texts) <= room.tokens:
        return
    from vela_search.embedding.backbone import load_tokenizer

    tokenizer = load_tokenizer(model, revision=revision)
    if tokenizer is None:
        return
    # split_special_tokens: user text is text, as the embedder tokenizes it.
    count = sum(
        len(tokenizer(t, add_special_tokens=False, split_special_tokens=True)["input_ids"]) - _EDGE_TOKENS
        for t in texts
    )
    if count > room.tokens:
        raise too_long_error(count, room.prefix_tokens, room.max_positions, at_least=True)


def check_not_empty(index: AudioIndex) -> None:
    """Raise :class:`EmptyIndexError` when the index holds no searchable vectors."""
    if index.num_vectors == 0:
        files = index.files()
        failed = 0
        if files.num_rows:
            failed = sum(1 for s in files["status"].to_pylist() if s == "failed")
        why = f" ({failed} file(s) failed to index; see `vela-search info`)" if failed else ""
        raise EmptyIndexError(
            f"index {index.root} holds no vectors{why}; add audio with `vela-search index PATH`"
        )
