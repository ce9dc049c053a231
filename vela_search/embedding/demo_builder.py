"""Building a demonstration set from a library of clips: choose, trim, label, check the budget, write.

The source is a folder of labelled clips (the label is the name of the sub-folder a clip sits in; clips at
the top level have none) or a CSV/JSONL table of file + word rows (rows with a caption instead of a file
give text demos). :func:`build_demo_set` then

1. labels clips without a word through the model when a labeller is given (recorded as ``generated``),
2. orders clips so that labels are spread (every label once, in a seeded order, before any comes back),
   and takes the asked number of audio demos; text demos come from the source's captions, a given demo
   file, or the shipped default set, spread across their words the same way,
3. trims each clip to its loudest ``clip_seconds`` (16 kHz mono WAV beside the output),
4. checks prefix + an item of ``item_seconds`` against the model's positions (refused with the numbers),
5. writes the JSONL the embedder reads (:mod:`vela_search.embedding.demos`), audio paths relative to it.

Everything is seeded: the same source, options and seed give byte-identical files.
"""

from __future__ import annotations

import csv
import json
import os
import random
import re
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from vela_search.embedding.batching import MAX_CLIP_SECONDS, SAMPLE_RATE
from vela_search.embedding.demo_budget import DEFAULT_ITEM_SECONDS, DemoBudget, measure_demo_set
from vela_search.embedding.demos import Demo, DemoSet
from vela_search.errors import AudioDecodeError, DemoFileError

if TYPE_CHECKING:
    from vela_search.embedding.backbone import Backbone
    from vela_search.embedding.demo_labeller import GeneratedLabel

__all__ = [
    "PAPER_AUDIO_DEMOS",
    "PAPER_TEXT_DEMOS",
    "BuildResult",
    "ClipCandidate",
    "DemoSource",
    "TextCandidate",
    "build_demo_set",
    "loudest_start",
    "read_demo_source",
    "spread_by_label",
]

# The paper's mix: 100 demonstrations, 35 audio clips and 65 captions.
PAPER_AUDIO_DEMOS = 35
PAPER_TEXT_DEMOS = 65
DEFAULT_CLIP_SECONDS = 5.0
# The loudest part is looked for in a file's first ten minutes (a long recording is not decoded whole).
SEARCH_SECONDS = 600.0

FILE_COLUMNS = ("audio", "file", "filename", "path")
WORD_COLUMNS = ("word", "label", "category")
TEXT_COLUMNS = ("text", "caption")

T = TypeVar("T")
Progress = Callable[[str, int, int], None]
"""Called as ``progress(stage, done, total)``, stage ``"labelling"`` or ``"trimming"``."""


@dataclass(frozen=True)
class ClipCandidate:
    """A clip of the source and its word (None: unlabelled)."""

    path: Path
    word: str | None


@dataclass(frozen=True)
class TextCandidate:
    """A caption and its word."""

    text: str
    word: str


@dataclass
class DemoSource:
    """What a source offers: clips (labelled or not), captions, and files that could not be used."""

    location: str
    clips: list[ClipCandidate]
    texts: list[TextCandidate] = field(default_factory=list)
    problems: list[tuple[str, str]] = field(default_factory=list)

    @property
    def labels(self) -> list[str]:
        return sorted({c.word for c in self.clips if c.word is not None})


@dataclass
class BuildResult:
    """What :func:`build_demo_set` wrote and what it costs."""

    output: Path
    clip_dir: Path
    budget: DemoBudget
    records: list[dict[str, Any]]
    labels_used: list[str]
    labels_available: int
    generated: int  # audio demos whose word the model generated
    unlabelled_left_out: int
    skipped: list[tuple[str, str]]  # (clip, reason): undecodable, or no word generated

    def to_dict(self) -> dict[str, Any]:
        return {
            "output": str(self.output),
            "clip_dir": str(self.clip_dir),
            "demos": self.budget.n_demos,
            "audio": self.budget.n_audio,
            "text": self.budget.n_text,
            "labels": self.labels_used,
            "n_labels": len(self.labels_used),
            "labels_available": self.labels_available,
            "generated_words": self.generated,
            "unlabelled_left_out": self.unlabelled_left_out,
            "skipped": [{"clip": c, "reason": r} for c, r in self.skipped],
            "prefix_tokens": self.budget.prefix_tokens,
            "max_positions": self.budget.max_positions,
            "item_seconds": self.budget.item_seconds,
            "item_tokens": self.budget.item_tokens,
            "room_left": self.budget.room_left,
            "longest_clip_s": self.budget.longest_clip_s,
            "digest": self.budget.digest,
        }


# ------------------------------------------------------------------------------------------ sources
def read_demo_source(
    source: str | os.PathLike[str],
    *,
    audio_dir: str | os.PathLike[str] | None = None,
    file_column: str | None = None,
    word_column: str | None = None,
) -> DemoSource:
    """Read a folder of labelled clips or a CSV/JSONL table of clips and captions.

    Args:
        source: A folder (label = the top sub-folder's name; files at the top level are unlabelled), or a
            ``.csv``/``.jsonl`` file whose rows name a file (column ``audio``, ``file``, ``filename`` or
            ``path``) and optionally its word (``word``, ``label`` or ``category``), or give a caption
            (``text``/``caption``) and its word.
        audio_dir: The folder that file names in a table are relative to (default: the table's folder).
        file_column: The table's file column, if not one of the names above.
        word_column: The table's word column, if not one of the names above.

    Raises:
        DemoFileError: The source does not exist, a table lacks a file or caption column, a row's word or
            a folder name is not one word.
    """
    from vela_search.audio import discover_audio_files

    path = Path(source)
    if path.is_dir():
        found = discover_audio_files([path])
        root = Path(os.path.abspath(path))
        clips = []
        for file in found.files:
            parts = file.relative_to(root).parts
            word = _check_word(parts[0], f"sub-folder {root / parts[0]}") if len(parts) > 1 else None
            clips.append(ClipCandidate(file, word))
        return DemoSource(str(path), clips, problems=[(str(p), r) for p, r in found.problems])
    if not path.is_file():
        raise DemoFileError(f"demo source {path} does not exist (give a folder of clips or a CSV/JSONL file)")
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".jsonl"):
        raise DemoFileError(f"demo source {path} is neither a folder nor a .csv or .jsonl file")
    rows = _read_table(path, suffix)
    base = Path(audio_dir) if audio_dir is not None else path.parent
    return _source_from_rows(path, rows, base, file_column, word_column)


def _read_table(path: Path, suffix: str) -> list[tuple[int, dict[str, Any]]]:
    text = path.read_text(encoding="utf-8-sig")
    if suffix == ".csv":
        reader = csv.DictReader(text.splitlines())
        return [(n, row) for n, row in enumerate(reader, start=2)]
    rows = []
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DemoFileError(f"{path}, line {n}: not valid JSON ({exc.msg})") from None
        if not isinstance(record, dict):
            raise DemoFileError(f"{path}, line {n}: expected a JSON object")
        rows.append((n, record))
    return rows


def _source_from_rows(
    path: Path,
    rows: list[tuple[int, dict[str, Any]]],
    base: Path,
    file_column: str | None,
    word_column: str | None,
) -> DemoSource:
    columns = {key for _, row in rows for key in row}
    file_col = _pick_column(path, columns, file_column, FILE_COLUMNS, "file")
    word_col = _pick_column(path, columns, word_column, WORD_COLUMNS, "word")
    text_col = next((c for c in TEXT_COLUMNS if c in columns), None)
    if file_col is None and text_col is None:
        raise DemoFileError(
            f"{path} has no file column ({', '.join(FILE_COLUMNS)}) and no caption column "
            f"({', '.join(TEXT_COLUMNS)}); its columns are {', '.join(sorted(columns)) or 'none'} "
            "(name yours with --file-column)"
        )
    source = DemoSource(str(path), clips=[])
    for number, row in rows:
        where = f"{path}, {'row' if path.suffix.lower() == '.csv' else 'line'} {number}"
        raw_word = str(row.get(word_col) or "").strip() if word_col else ""
        word = _check_word(raw_word, where) if raw_word else None
        name = str(row.get(file_col) or "").strip() if file_col else ""
        if name:
            file = (base / name).resolve()
            if file.is_file():
                source.clips.append(ClipCandidate(file, word))
            else:
                source.problems.append((str(file), "does not exist"))
            continue
        caption = str(row.get(text_col) or "").strip() if text_col else ""
        if caption:
            if word is None:
                raise DemoFileError(f"{where}: the caption has no word")
            source.texts.append(TextCandidate(caption, word))
    return source


def _pick_column(
    path: Path, columns: set[str], given: str | None, names: Sequence[str], kind: str
) -> str | None:
    if given is not None:
        if given not in columns:
            raise DemoFileError(f"{path} has no column {given!r} (its columns: {', '.join(sorted(columns))})")
        return given
    return next((c for c in names if c in columns), None)


def _check_word(word: str, where: str) -> str:
    word = word.strip()
    if len(word.split()) != 1:
        raise DemoFileError(f"{where}: the word {word!r} is not one word (a label must be a single word)")
    return word


# -------------------------------------------------------------------------------------- selection
def spread_by_label(items: Sequence[T], label: Callable[[T], str], rng: random.Random) -> list[T]:
    """All items, ordered so that no label comes twice before every label has come once.

    Labels are visited in a seeded order, each label's items in a seeded order, one item per label per
    round; a label whose items run out drops out of later rounds.
    """
    groups: dict[str, list[T]] = {}
    for item in items:
        groups.setdefault(label(item), []).append(item)
    names = sorted(groups)
    rng.shuffle(names)
    for name in names:
        rng.shuffle(groups[name])
    ordered: list[T] = []
    for round_ in range(max((len(g) for g in groups.values()), default=0)):
        ordered.extend(groups[name][round_] for name in names if round_ < len(groups[name]))
    return ordered


def loudest_start(wave: np.ndarray, length: int) -> int:
    """The first sample of the ``length``-sample window with the most energy (0 if the wave is shorter)."""
    if len(wave) <= length:
        return 0
    energy = np.concatenate(([0.0], np.cumsum(np.square(wave, dtype=np.float64))))
    return int(np.argmax(energy[length:] - energy[:-length]))


def _trimmed(path: Path, clip_seconds: float) -> tuple[np.ndarray, float]:
    """The loudest ``clip_seconds`` of a file (16 kHz mono) and where it starts, in seconds."""
    from vela_search.audio import decode_audio

    wave = decode_audio(path, end_s=SEARCH_SECONDS)
    length = round(clip_seconds * SAMPLE_RATE)
    start = loudest_start(wave, length)
    return wave[start : start + length], start / SAMPLE_RATE


def _interleave(audio: list[T], text: list[T]) -> list[T]:
    """Audio demos spread evenly among the text demos (neither kind bunched at one end of the prompt)."""
    total = len(audio) + len(text)
    out: list[T] = []
    a = t = 0
    for k in range(total):
        if (k + 1) * len(audio) // total > k * len(audio) // total:
            out.append(audio[a])
            a += 1
        else:
            out.append(text[t])
            t += 1
    return out


# ------------------------------------------------------------------------------------------ build
def build_demo_set(
    source: DemoSource,
    output: str | os.PathLike[str],
    backbone: Backbone,
    *,
    n_audio: int = PAPER_AUDIO_DEMOS,
    n_text: int = PAPER_TEXT_DEMOS,
    clip_seconds: float = DEFAULT_CLIP_SECONDS,
    item_seconds: float = DEFAULT_ITEM_SECONDS,
    seed: int = 0,
    text_demos: DemoSet | None = None,
    labeller: Callable[[np.ndarray], GeneratedLabel] | None = None,
    force: bool = False,
    progress: Progress | None = None,
) -> BuildResult:
    """Choose, trim and write a demo set of ``n_audio`` clips and ``n_text`` captions.

    Args:
        source: From :func:`read_demo_source`.
        output: The JSONL to write; the clips go into ``<stem>_clips/`` beside it.
        backbone: The model whose tokens are counted (weights not needed: see
            :func:`~vela_search.embedding.backbone.load_backbone_without_weights`).
        n_audio: Audio demos (the paper: 35).
        n_text: Text demos (the paper: 65).
        clip_seconds: Each clip is cut to its loudest part of this length (at most 30 s).
        item_seconds: The set must leave room for an audio item of this length.
        seed: Seeds the choice and order; the same seed gives the same files.
        text_demos: Where text demos come from; default: the source's captions, else the shipped set.
        labeller: Gives unlabelled clips a word (e.g. :meth:`ModelLabeller.label`); without one they are
            left out.
        force: Replace an existing output and clip folder.
        progress: See :data:`Progress`.

    Returns:
        What was written and its budget.

    Raises:
        DemoFileError: The output exists (without ``force``), or there are fewer usable clips or captions
            than asked (the message says how many there are).
        TokenBudgetError: The set would not fit with an item of ``item_seconds`` (nothing is written).
    """
    _check_build_settings(n_audio, n_text, clip_seconds, item_seconds)
    output = Path(output).absolute()
    clip_dir = output.with_name(f"{output.stem}_clips")
    if not force:
        for existing in (output, clip_dir):
            if existing.exists():
                raise DemoFileError(f"{existing} already exists; pass --force to replace it")
    report = progress or (lambda _stage, _done, _total: None)
    rng = random.Random(seed)

    texts = _choose_texts(source, text_demos, n_text, rng)
    pool = _ClipPool(source, clip_seconds, report)
    if labeller is not None and n_audio:
        pool.label(labeller)
    chosen = pool.choose(n_audio, rng) if n_audio else []
    records, budget = _write(output, clip_dir, backbone, chosen, texts, pool.generated, item_seconds, force)
    return BuildResult(
        output=output,
        clip_dir=clip_dir,
        budget=budget,
        records=records,
        labels_used=sorted({c.word or "" for c, _, _ in chosen}),
        labels_available=len({c.word for c in pool.labelled}),
        generated=sum(c.path in pool.generated for c, _, _ in chosen),
        unlabelled_left_out=len(pool.unlabelled),
        skipped=pool.skipped,
    )


def _check_build_settings(n_audio: int, n_text: int, clip_seconds: float, item_seconds: float) -> None:
    if n_audio < 0 or n_text < 0 or n_audio + n_text == 0:
        raise DemoFileError("a demo set needs at least one demo (--audio and --text are counts >= 0)")
    if not 0 < clip_seconds <= MAX_CLIP_SECONDS:
        raise DemoFileError(f"--clip-seconds must be in (0, 30], got {clip_seconds:g}")
    if not 0 < item_seconds <= MAX_CLIP_SECONDS:
        raise DemoFileError(f"--item-seconds must be in (0, 30], got {item_seconds:g}")


class _ClipPool:
    """The source's clips on their way to the set: labelled, unlabelled, trimmed, or skipped and why."""

    def __init__(self, source: DemoSource, clip_seconds: float, report: Progress) -> None:
        self.source = source
        self.clip_seconds = clip_seconds
        self.report = report
        self.skipped: list[tuple[str, str]] = list(source.problems)  # named by the source, not offered
        self.trimmed: dict[Path, tuple[np.ndarray, float]] = {}
        self.generated: set[Path] = set()
        self.labelled = [c for c in source.clips if c.word is not None]
        self.unlabelled = [c for c in source.clips if c.word is None]

    def label(self, labeller: Callable[[np.ndarray], GeneratedLabel]) -> None:
        """Give every unlabelled clip the labeller's word (trimmed first), or skip it with the reason."""
        unlabelled = self.unlabelled
        for done, clip in enumerate(unlabelled):
            self.report("labelling", done, len(unlabelled))
            try:
                self.trimmed[clip.path] = _trimmed(clip.path, self.clip_seconds)
            except AudioDecodeError as exc:
                self.skipped.append((str(clip.path), str(exc)))
                continue
            answer = labeller(self.trimmed[clip.path][0])
            if answer.word is None:
                self.skipped.append(
                    (str(clip.path), f"the model gave no word (it answered {answer.answer!r})")
                )
                continue
            self.labelled.append(ClipCandidate(clip.path, answer.word))
            self.generated.add(clip.path)
        self.report("labelling", len(unlabelled), len(unlabelled))
        self.unlabelled = []

    def choose(self, n_audio: int, rng: random.Random) -> list[tuple[ClipCandidate, np.ndarray, float]]:
        """``n_audio`` labelled clips spread over the labels, each trimmed to its loudest part.

        Raises:
            DemoFileError: fewer usable labelled clips than asked.
        """
        chosen: list[tuple[ClipCandidate, np.ndarray, float]] = []
        for clip in spread_by_label(self.labelled, lambda c: c.word or "", rng):
            if len(chosen) == n_audio:
                break
            self.report("trimming", len(chosen), n_audio)
            try:
                wave, start = self.trimmed.get(clip.path) or _trimmed(clip.path, self.clip_seconds)
            except AudioDecodeError as exc:
                self.skipped.append((str(clip.path), str(exc)))
                continue
            chosen.append((clip, wave, start))
        if len(chosen) < n_audio:
            hint = "; label them with --label-with-model" if self.unlabelled else ""
            raise DemoFileError(
                f"asked for {n_audio} audio demos but {self.source.location} has {len(chosen)} usable "
                f"labelled clips ({len(self.unlabelled)} without a label{hint}, {len(self.skipped)} "
                f"skipped); pass --audio {len(chosen)} or add clips"
            )
        return chosen


def _choose_texts(
    source: DemoSource, text_demos: DemoSet | None, n_text: int, rng: random.Random
) -> list[TextCandidate]:
    if text_demos is not None:
        pool = [TextCandidate(d.text or "", d.word) for d in text_demos.demos if not d.is_audio]
        where = text_demos.source
    elif source.texts:
        pool, where = list(source.texts), source.location
    else:
        default = DemoSet.default()
        pool = [TextCandidate(d.text or "", d.word) for d in default.demos if not d.is_audio]
        where = "the shipped default set"
    if n_text > len(pool):
        raise DemoFileError(
            f"asked for {n_text} text demos but {where} holds {len(pool)} captions; pass --text {len(pool)} "
            "or give more captions (--text-demos FILE)"
        )
    return spread_by_label(pool, lambda t: t.word, rng)[:n_text]


def _write(
    output: Path,
    clip_dir: Path,
    backbone: Backbone,
    chosen: list[tuple[ClipCandidate, np.ndarray, float]],
    texts: list[TextCandidate],
    generated: set[Path],
    item_seconds: float,
    force: bool,
) -> tuple[list[dict[str, Any]], DemoBudget]:
    """Write clips into a staging folder, check the budget, then move clips and JSONL into place."""
    import soundfile as sf

    from vela_search.embedding.embedder import VelaEmbedder

    output.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{clip_dir.name}.", dir=output.parent))
    try:
        audio_records, audio_demos = [], []
        for n, (clip, wave, start) in enumerate(chosen):
            name = f"{n:03d}-{re.sub(r'[^0-9A-Za-z_-]+', '_', clip.word or '')[:40]}.wav"
            sf.write(staging / name, wave, SAMPLE_RATE, subtype="PCM_16")
            audio_demos.append(Demo(word=clip.word or "", audio=staging / name))
            audio_records.append(
                {
                    "audio": f"{clip_dir.name}/{name}",
                    "word": clip.word,
                    "word_from": "generated" if clip.path in generated else "given",
                    "source": str(clip.path),
                    "start_s": round(start, 3),
                    "duration_s": round(len(wave) / SAMPLE_RATE, 3),
                }
            )
        text_records = [{"text": t.text, "word": t.word} for t in texts]
        text_demos = [Demo(word=t.word, text=t.text) for t in texts]
        records = _interleave(audio_records, text_records)
        demos = DemoSet(tuple(_interleave(audio_demos, text_demos)), source=str(output))
        budget = measure_demo_set(VelaEmbedder(backbone, demos), item_seconds=item_seconds)
        budget.require_fit(_build_fix(budget, chosen))

        if force and clip_dir.exists():
            shutil.rmtree(clip_dir)
        if chosen:
            os.replace(staging, clip_dir)
        partial = output.with_name(f".{output.name}.partial")
        lines = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
        partial.write_text(lines, encoding="utf-8")
        os.replace(partial, output)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    written = DemoSet.from_jsonl(output)
    if written.digest != budget.digest:
        raise DemoFileError(f"{output} does not read back as written (digest mismatch); build it again")
    return records, budget


def _build_fix(budget: DemoBudget, chosen: list[tuple[ClipCandidate, np.ndarray, float]]) -> str:
    """How to make a built set fit: fewer audio demos (how many fit), shorter clips or items."""
    over = -budget.room_left
    audio_costs = sorted((c.tokens for c in budget.costs if c.kind == "audio"), reverse=True)
    dropped, saved = 0, 0
    while saved < over and dropped < len(audio_costs):
        saved += audio_costs[dropped]
        dropped += 1
    parts = []
    if saved >= over and chosen:
        parts.append(f"--audio {len(chosen) - dropped}")
    parts += ["a shorter --clip-seconds", "fewer --text", "a shorter --item-seconds"]
    return "try " + ", ".join(parts)
