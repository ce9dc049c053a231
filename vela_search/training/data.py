"""Triplet training data: reading, validating and splitting (anchor, positive, hard negative) rows.

Two formats, chosen by file extension:

- CSV (`.csv`, or `.tsv` tab-separated) with a header naming `sent0,sent1,hard_neg`, the layout of the
  SimCSE NLI file; other columns are ignored.
- JSON lines (`.jsonl`, `.json`; a `.json` file may also hold one JSON array) of objects with `anchor`,
  `positive` and `negative` strings; other keys are ignored.

Any other extension is read as JSON lines if its first non-blank character is `{` or `[`, else as CSV.
Malformed rows are counted per reason and skipped, so one bad row in a 275k-row file costs one row, not
the run; a file with no valid row at all is an error.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import random
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from vela_search.errors import TrainingDataError

CSV_COLUMNS = ("sent0", "sent1", "hard_neg")
JSON_KEYS = ("anchor", "positive", "negative")

# Reasons a row is skipped (the keys of the `skipped_reasons` counts).
MISSING_FIELD = "missing_field"
EMPTY_TEXT = "empty_text"
NOT_TEXT = "not_text"
EXTRA_FIELDS = "extra_fields"
BAD_JSON = "bad_json"
NOT_AN_OBJECT = "not_an_object"

_CSV_SUFFIXES = {".csv": ",", ".tsv": "\t"}
_JSON_SUFFIXES = {".jsonl", ".json", ".ndjson"}


@dataclass(frozen=True)
class Triplet:
    """One training example: `positive` should embed closer to `anchor` than `negative` does."""

    anchor: str
    positive: str
    negative: str


@dataclass
class TripletData:
    """A triplet file read and split into training and held-out rows.

    Attributes:
        train: Training rows, in file order.
        eval: Held-out rows, in file order.
        skipped: Number of malformed rows skipped.
        skipped_reasons: Skipped rows per reason (only reasons that occurred).
        source: The file read.
        digest: SHA-256 (hex) of the file's bytes, for the training record.
    """

    train: list[Triplet]
    eval: list[Triplet]
    skipped: int
    skipped_reasons: dict[str, int]
    source: Path
    digest: str

    def summary(self) -> str:
        """A one-line report of the split and of skipped rows, for logs and the CLI."""
        text = f"{self.source}: {len(self.train)} training and {len(self.eval)} held-out triplets"
        if self.skipped:
            text += f"; skipped {self.skipped} malformed row(s) ({_format_reasons(self.skipped_reasons)})"
        return text


def file_digest(path: str | Path) -> str:
    """SHA-256 hex digest of a file's bytes.

    Args:
        path: The file.

    Returns:
        64 lower-case hex characters.

    Raises:
        TrainingDataError: The file cannot be read.
    """
    sha = hashlib.sha256()
    try:
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                sha.update(chunk)
    except OSError as exc:
        raise TrainingDataError(f"cannot read training data {path}: {exc.strerror or exc}") from exc
    return sha.hexdigest()


def read_triplets(path: str | Path) -> tuple[list[Triplet], dict[str, int]]:
    """Read every valid triplet of a CSV or JSONL file.

    Text is stripped of surrounding whitespace. A UTF-8 byte-order mark is tolerated.

    Args:
        path: A `.csv`/`.tsv` file with columns `sent0,sent1,hard_neg`, or a `.jsonl`/`.json` file of
            `{"anchor", "positive", "negative"}` objects.

    Returns:
        The valid triplets in file order, and the number of skipped rows per reason (`missing_field`,
        `empty_text`, `not_text`, `extra_fields`, `bad_json`, `not_an_object`; only those that occurred).

    Raises:
        TrainingDataError: The file cannot be read or decoded, a CSV header lacks a required column, or
            no row is valid.
    """
    path = Path(path)
    return _parse(path, _read_bytes(path))


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise TrainingDataError(f"cannot read training data {path}: {exc.strerror or exc}") from exc


def _parse(path: Path, data: bytes) -> tuple[list[Triplet], dict[str, int]]:
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise TrainingDataError(
            f"training data {path} is not UTF-8 text (byte {exc.start}: {exc.reason})"
        ) from exc

    reasons: Counter[str] = Counter()
    if _is_json(path, text):
        triplets = list(_read_json(path, text, reasons))
    else:
        triplets = list(_read_csv(path, text, _CSV_SUFFIXES.get(path.suffix.lower(), ","), reasons))

    skipped = dict(sorted(reasons.items()))
    if not triplets:
        detail = f"skipped: {_format_reasons(skipped)}" if skipped else "the file holds no rows"
        raise TrainingDataError(f"training data {path} has no valid triplets ({detail})")
    return triplets, skipped


def load_triplet_data(
    path: str | Path,
    *,
    eval_fraction: float = 0.05,
    seed: int = 0,
    max_eval: int | None = None,
) -> TripletData:
    """Read a triplet file and split it into training and held-out rows.

    The split is a deterministic function of the file's rows and `seed`. Rows sharing an anchor go to the
    same side, so held-out anchors are never seen in training (the SimCSE file repeats premises). When
    `eval_fraction > 0` and there are at least two rows, at least one row is held out and at least one
    is kept for training.

    Args:
        path: The triplet file (see `read_triplets`).
        eval_fraction: Fraction of rows to hold out, in [0, 0.5].
        seed: Seed of the split.
        max_eval: Upper bound on held-out rows (None: no bound).

    Returns:
        The split data with the skip report and the file's digest.

    Raises:
        TrainingDataError: The file is unreadable or has no valid row, or `eval_fraction`/`max_eval` is
            out of range.
    """
    if not 0.0 <= eval_fraction <= 0.5:
        raise TrainingDataError(f"eval fraction must be between 0 and 0.5, got {eval_fraction}")
    if max_eval is not None and max_eval < 0:
        raise TrainingDataError(f"max eval rows must be >= 0, got {max_eval}")

    path = Path(path)
    # One read serves both parsing and the digest, so the digest describes exactly the rows used.
    data = _read_bytes(path)
    triplets, reasons = _parse(path, data)
    digest = hashlib.sha256(data).hexdigest()
    eval_idx = _split(triplets, eval_fraction, seed, max_eval)
    return TripletData(
        train=[t for i, t in enumerate(triplets) if i not in eval_idx],
        eval=[t for i, t in enumerate(triplets) if i in eval_idx],
        skipped=sum(reasons.values()),
        skipped_reasons=reasons,
        source=path,
        digest=digest,
    )


def _split(triplets: list[Triplet], fraction: float, seed: int, max_eval: int | None) -> set[int]:
    """Indices of the held-out rows."""
    n = len(triplets)
    if fraction <= 0 or n < 2 or max_eval == 0:
        return set()
    target = max(1, round(n * fraction))
    limit = n - 1 if max_eval is None else min(n - 1, max_eval)
    target = min(target, limit)
    # Groups are whole, so the held-out set may overshoot the target, but by at most a factor of two.
    upper = min(limit, 2 * target)

    groups: dict[str, list[int]] = {}
    for i, t in enumerate(triplets):
        groups.setdefault(t.anchor, []).append(i)
    # Order groups by a hash of the seed and the anchor rather than the group's position, so a row's side
    # does not move when unrelated rows are added or removed elsewhere in the file.
    rng = random.Random(seed)
    salt = rng.getrandbits(64).to_bytes(8, "little")
    order = sorted(groups, key=lambda a: hashlib.sha256(salt + a.encode("utf-8")).digest())

    chosen: set[int] = set()
    for anchor in order:
        if len(chosen) >= target:
            break
        rows = groups[anchor]
        if len(chosen) + len(rows) <= upper:
            chosen.update(rows)
    if not chosen:
        # Every anchor group is too large: hold out single rows instead.
        by_hash = sorted(range(n), key=lambda i: hashlib.sha256(salt + i.to_bytes(8, "little")).digest())
        chosen = set(by_hash[:target])
    return chosen


def _is_json(path: Path, text: str) -> bool:
    suffix = path.suffix.lower()
    if suffix in _JSON_SUFFIXES:
        return True
    if suffix in _CSV_SUFFIXES:
        return False
    return text.lstrip()[:1] in ("{", "[")


def _clean(values: list[object], reasons: Counter[str]) -> Triplet | None:
    """A triplet from three raw values, or None after counting why not."""
    if any(v is None for v in values):
        reasons[MISSING_FIELD] += 1
        return None
    if not all(isinstance(v, str) for v in values):
        reasons[NOT_TEXT] += 1
        return None
    texts = [v.strip() for v in values]  # type: ignore[union-attr]
    if not all(texts):
        reasons[EMPTY_TEXT] += 1
        return None
    return Triplet(*texts)


def _read_csv(path: Path, text: str, delimiter: str, reasons: Counter[str]) -> Iterator[Triplet]:
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    try:
        header = next(reader, None)
        if header is None:
            return
        names = [h.strip() for h in header]
        missing = [c for c in CSV_COLUMNS if c not in names]
        if missing:
            found = ", ".join(repr(n) for n in names) or "none"
            raise TrainingDataError(
                f"training data {path} lacks required column(s) {', '.join(missing)} "
                f"(expected a header {','.join(CSV_COLUMNS)}; found {found})"
            )
        cols = [names.index(c) for c in CSV_COLUMNS]
        width = len(names)
        for row in reader:
            if not row:
                continue  # blank line
            if len(row) > width:
                # An unquoted delimiter inside a text splits it across columns: the columns are shifted.
                reasons[EXTRA_FIELDS] += 1
                continue
            triplet = _clean([row[c] if c < len(row) else None for c in cols], reasons)
            if triplet is not None:
                yield triplet
    except csv.Error as exc:
        raise TrainingDataError(
            f"training data {path}, line {reader.line_num}: unreadable CSV ({exc})"
        ) from exc


def _read_json(path: Path, text: str, reasons: Counter[str]) -> Iterator[Triplet]:
    stripped = text.lstrip()
    if stripped.startswith("["):
        # A whole-file JSON array; if it does not parse, fall through to line-by-line reading.
        try:
            items = json.loads(text)
        except json.JSONDecodeError:
            items = None
        if isinstance(items, list):
            for item in items:
                triplet = _from_object(item, reasons)
                if triplet is not None:
                    yield triplet
            return
    # Split on newlines only: str.splitlines() would also split at U+2028 and similar characters that
    # JSON allows unescaped inside strings.
    for line in text.split("\n"):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError:
            reasons[BAD_JSON] += 1
            continue
        triplet = _from_object(item, reasons)
        if triplet is not None:
            yield triplet


def _from_object(item: object, reasons: Counter[str]) -> Triplet | None:
    if not isinstance(item, dict):
        reasons[NOT_AN_OBJECT] += 1
        return None
    return _clean([item.get(k) for k in JSON_KEYS], reasons)


def _format_reasons(reasons: dict[str, int]) -> str:
    return ", ".join(f"{k.replace('_', ' ')}: {v}" for k, v in sorted(reasons.items()))
