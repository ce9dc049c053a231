"""The words a sound file carries: embedded metadata and its name, as one flat ``{field: text}`` dict.

Broadcast WAV ``bext`` (description, originator, ...), iXML (project, scene, take, tape, note) and RIFF
``INFO`` are read with wavinfo; ID3 (MP3, WAV), Vorbis comments (OGG, FLAC, Opus) and MP4 tags with
mutagen; the name with :func:`vela_search.audio.ucs.name_fields`. Metadata is untrusted input: every
value is decoded leniently, stripped of control characters and cut at :data:`MAX_FIELD_CHARS`, at most
:data:`MAX_FIELDS` fields are kept, and a reader that fails (truncated chunks, binary junk) is skipped
with a warning. Reading words never raises for a file's content, so it can never fail the file's audio.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from vela_search.audio.ucs import name_fields

__all__ = [
    "MAX_FIELDS",
    "MAX_FIELD_CHARS",
    "WORDS_COLUMN",
    "FileWords",
    "add_words_column",
    "read_words",
    "words_from_json",
]

log = logging.getLogger(__name__)

MAX_FIELD_CHARS = 4096
# The segment metadata column that holds a file's words (on its first segment's row; null on the others).
WORDS_COLUMN = "words"
MAX_FIELDS = 64
_KEY = re.compile(r"[^a-z0-9]+")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f\ufffd]+")
_SPACE = re.compile(r"\s+")

# ID3 frames and MP4 atoms by the field names Vorbis comments use (the readable names).
_ID3 = {"TIT2": "title", "TPE1": "artist", "TALB": "album", "TCON": "genre", "COMM": "comment",
        "TCOM": "composer", "TPUB": "publisher", "TCOP": "copyright", "TIT1": "grouping",
        "TIT3": "subtitle", "TKEY": "key", "TENC": "encoded_by"}  # fmt: skip
_MP4 = {"\xa9nam": "title", "\xa9ART": "artist", "\xa9alb": "album", "\xa9gen": "genre",
        "\xa9cmt": "comment", "desc": "description", "ldes": "description", "\xa9wrt": "composer",
        "cprt": "copyright", "\xa9grp": "grouping", "keyw": "keywords"}  # fmt: skip
_BEXT = ("description", "originator", "originator_ref", "originator_date", "originator_time")
_IXML = ("project", "scene", "take", "tape", "family_name")


@dataclass
class FileWords:
    """The words of one file.

    Attributes:
        fields: ``{field: text}``, e.g. ``{"name": "DOOR Wood Creak Slow ACME Take 3", "category": "DOOR",
            "description": "old oak door creaks slowly"}``; field names are lower-case ``[a-z0-9_]``.
        warnings: what was cut or skipped, one line each.
    """

    fields: dict[str, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def add(self, key: str, value: Any) -> None:
        """Add a field (first value wins; list values are joined), cleaned and cut to size."""
        name = _KEY.sub("_", str(key).lower()).strip("_")[:40]
        text, length = _clean(value)
        if not name or not text or name in self.fields:
            return
        if len(self.fields) >= MAX_FIELDS:
            self.warnings.append(f"more than {MAX_FIELDS} metadata fields: {name!r} and later ones skipped")
            return
        if len(text) > MAX_FIELD_CHARS or length > MAX_FIELD_CHARS * 2:
            cut = f"metadata field {name!r} cut from {length:,} to {MAX_FIELD_CHARS:,} characters"
            self.warnings.append(cut)
            text = text[:MAX_FIELD_CHARS]
        self.fields[name] = text

    def to_json(self) -> str:
        """The fields as a JSON object (the index's ``words`` column)."""
        return json.dumps(self.fields, ensure_ascii=False, sort_keys=True)


def words_from_json(text: str | None) -> dict[str, str]:
    """The fields back from a ``words`` column value (``{}`` for None or a damaged value)."""
    if not text:
        return {}
    try:
        value = json.loads(text)
    except ValueError:
        return {}
    return {str(k): str(v) for k, v in value.items()} if isinstance(value, dict) else {}


def read_words(path: str, *, embedded: bool = True) -> FileWords:
    """Read the words of the file at ``path``: its name, and with ``embedded`` its metadata.

    Never raises for what the file holds: unreadable metadata is skipped and named in ``warnings``.
    """
    words = FileWords()
    for key, value in name_fields(path).items():
        words.add(key, value)
    if not embedded:
        return words
    lower = path.lower()
    if lower.endswith((".wav", ".wave", ".bwf", ".rf64")):
        _guarded(words, "BWF/iXML/INFO", lambda: _wav_fields(path))
    _guarded(words, "tags", lambda: _mutagen_fields(path))
    for warning in words.warnings:
        log.warning("%s: %s", path, warning)
    return words


def add_words_column(rows: list[dict[str, Any]], path: str) -> None:
    """Put the words of the file at ``path`` on the first of its segment rows (``words`` column).

    One row per file carries them, so that a long file stores them once. Dataset rows have no file to
    read: only their key's words are kept.
    """
    if not rows:
        return
    embedded = not path.startswith("dataset:")
    rows[0][WORDS_COLUMN] = read_words(path, embedded=embedded).to_json()
    for row in rows[1:]:
        row[WORDS_COLUMN] = None


def _guarded(words: FileWords, what: str, read: Any) -> None:
    try:
        fields = list(read())
    except Exception as e:  # noqa: BLE001 - hostile metadata may raise anything; the audio must not care
        words.warnings.append(f"{what} metadata skipped: {type(e).__name__}: {str(e)[:200]}")
        return
    for key, value in fields:
        words.add(key, value)


def _wav_fields(path: str) -> Iterable[tuple[str, Any]]:
    from wavinfo import WavInfoReader

    try:
        reader = WavInfoReader(path, info_encoding="utf-8", bext_encoding="utf-8")
    except UnicodeDecodeError:  # EBU 3285 says ASCII; older files use Latin-1, which always decodes
        reader = WavInfoReader(path, info_encoding="latin_1", bext_encoding="latin_1")
    out: list[tuple[str, Any]] = []
    if reader.bext is not None:
        bext = reader.bext.to_dict()
        out += [(k, bext.get(k)) for k in _BEXT]
    if reader.ixml is not None:
        ixml = reader.ixml
        out += [(k, getattr(ixml, k, None)) for k in _IXML]
        note = _ixml_text(ixml.raw_xml, "NOTE")
        out.append(("note", note))
    if reader.info is not None:
        out += [(k, v) for k, v in reader.info.to_dict().items() if isinstance(v, str)]
    return out


def _ixml_text(root: Any, tag: str) -> str | None:
    found = root.find(tag) if root is not None else None
    return found.text if found is not None else None


def _mutagen_fields(path: str) -> Iterable[tuple[str, Any]]:
    import mutagen

    audio = mutagen.File(path)
    if audio is None or audio.tags is None:
        return []
    tags = audio.tags
    out: list[tuple[str, Any]] = []
    for key, value in _tag_items(tags):
        if key.startswith("TXXX:"):
            out.append((key[5:], value))
        elif key[:4] in _ID3:
            out.append((_ID3[key[:4]], value))
        elif key in _MP4:
            out.append((_MP4[key], value))
        elif key.startswith("----:"):  # MP4 free-form atoms: ----:com.apple.iTunes:NAME
            out.append((key.rsplit(":", 1)[-1], value))
        elif not key.startswith(("APIC", "\xa9too", "covr", "PRIV", "GEOB", "MCDI")) and key.isascii():
            out.append((key, value))  # Vorbis comments: the key is the field name
    return out


def _tag_items(tags: Any) -> Iterable[tuple[str, Any]]:
    if isinstance(tags, Mapping) or hasattr(tags, "items"):
        for key, value in tags.items():
            if hasattr(value, "text"):  # an ID3 frame
                value = value.text
            yield str(key), value


def _clean(value: Any) -> tuple[str, int]:
    """The value as clean text (at most twice MAX_FIELD_CHARS of it), and its full length."""
    if value is None:
        return "", 0
    if isinstance(value, (list, tuple)):
        value = " ".join(_clean(v)[0] for v in value[:MAX_FIELDS])
    length = len(value) if isinstance(value, (str, bytes)) else 0
    if isinstance(value, bytes):
        value = value[: MAX_FIELD_CHARS * 8].decode("utf-8", errors="replace")
    elif not isinstance(value, str):
        value = str(value)
        length = len(value)
    # Only the head is cleaned, so that a 10 MB value costs no 10 MB regex pass.
    head = value[: MAX_FIELD_CHARS * 2]
    return _SPACE.sub(" ", _CONTROL.sub(" ", head)).strip(), length
