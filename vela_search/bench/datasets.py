"""Readers of the local layouts of the official Clotho v2.1 and AudioCaps releases.

Both readers return a :class:`RetrievalDataset`: one audio path per clip, a flat list of captions and the
index of each caption's clip, which is what :func:`vela_search.bench.metrics.retrieval_metrics` takes.
Clips whose audio file cannot be found are left out and listed in ``missing``; the benchmark report
states how many. Clip order is the order of first appearance in the CSV, so ``limit(n)`` is
deterministic.

Clotho v2.1 (Zenodo record 4783391)::

    <data_dir>/clotho_captions_<split>.csv     file_name, caption_1 .. caption_5
    <data_dir>/<split>/<file_name>             the audio, as extracted from clotho_audio_<split>.7z
                                               (also searched: <data_dir>/clotho_audio_<split>/ and
                                               <data_dir>/audio/<split>/)

AudioCaps (github.com/cdjkim/audiocaps, ``dataset/<split>.csv``; audio comes from YouTube)::

    <data_dir>/<split>.csv or <data_dir>/audiocaps_<split>.csv    audiocap_id, youtube_id, start_time, caption
    audio searched, in this order, under <data_dir>/<split>/, <data_dir>/audio/<split>/, <data_dir>/audio/
    and <data_dir>/, as <stem>.<wav|flac|mp3|ogg> where the stem is, with or without a leading "Y":
    <yid>, <yid>_<start>, <yid>_<start>_<end> or <yid>_<start>.000_<end>.000 (end = start + 10 s).
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from vela_search.errors import DatasetError

__all__ = [
    "AUDIO_EXTENSIONS",
    "DATASETS",
    "DEFAULT_SPLITS",
    "PAPER_RESULTS",
    "RetrievalDataset",
    "audiocaps_audio_stems",
    "load_audiocaps",
    "load_clotho",
    "load_dataset",
]

# Matched case-insensitively; earlier extensions win when one clip exists in several formats.
AUDIO_EXTENSIONS: tuple[str, ...] = (".wav", ".flac", ".mp3", ".ogg")

DATASETS: tuple[str, ...] = ("clotho", "audiocaps")
DEFAULT_SPLITS: dict[str, str] = {"clotho": "evaluation", "audiocaps": "test"}

# Numbers reported for Vela (Qwen2-Audio-7B-Instruct, text-only training) in the Vela paper
# (arXiv 2506.14445). Only the values that could be sourced are listed; the CLI shows them beside the
# measured ones.
PAPER_RESULTS: dict[str, dict[str, float]] = {
    "audiocaps": {"t2a_R@1": 18.1},
    "clotho": {"t2a_R@1": 17.9},
}

# AudioCaps clips are 10-second YouTube segments; the end time only appears in file names.
_AUDIOCAPS_SEGMENT_S = 10


@dataclass
class RetrievalDataset:
    """Clips and captions of a retrieval benchmark.

    Attributes:
        name: Dataset name (``"clotho"`` or ``"audiocaps"``).
        split: Split name (e.g. ``"evaluation"``, ``"test"``).
        audio_paths: One path per clip.
        captions: All captions, flat.
        caption_to_audio: ``(len(captions),)`` int64 index into ``audio_paths`` of each caption's clip.
        missing: Ids (Clotho file names, AudioCaps YouTube ids) whose audio was not found; excluded.
        clip_ids: One id per clip (Clotho file name, AudioCaps YouTube id); defaults to the file names.
    """

    name: str
    split: str
    audio_paths: list[Path]
    captions: list[str]
    caption_to_audio: np.ndarray
    missing: list[str] = field(default_factory=list)
    clip_ids: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.audio_paths = [Path(p) for p in self.audio_paths]
        self.caption_to_audio = np.asarray(self.caption_to_audio, dtype=np.int64).reshape(-1)
        if not self.clip_ids:
            self.clip_ids = [p.name for p in self.audio_paths]
        if len(self.caption_to_audio) != len(self.captions):
            raise ValueError(
                f"{len(self.captions)} captions but {len(self.caption_to_audio)} caption_to_audio entries"
            )
        if len(self.clip_ids) != len(self.audio_paths):
            raise ValueError(f"{len(self.audio_paths)} clips but {len(self.clip_ids)} clip ids")
        if len(self.caption_to_audio) and (
            self.caption_to_audio.min() < 0 or self.caption_to_audio.max() >= len(self.audio_paths)
        ):
            raise ValueError("caption_to_audio refers to a clip that does not exist")

    @property
    def n_clips(self) -> int:
        """Number of clips with audio."""
        return len(self.audio_paths)

    @property
    def n_captions(self) -> int:
        """Number of captions of those clips."""
        return len(self.captions)

    def limit(self, n_clips: int) -> RetrievalDataset:
        """The first ``n_clips`` clips and all their captions (``missing`` is kept as is).

        Args:
            n_clips: How many clips to keep; at least 1. A value above ``self.n_clips`` keeps all.

        Returns:
            A new dataset; ``self`` is unchanged.

        Raises:
            ValueError: If ``n_clips`` < 1.
        """
        if n_clips < 1:
            raise ValueError(f"limit must be at least 1 clip, got {n_clips}")
        keep = self.caption_to_audio < n_clips
        return replace(
            self,
            audio_paths=list(self.audio_paths[:n_clips]),
            captions=[c for c, k in zip(self.captions, keep, strict=True) if k],
            caption_to_audio=self.caption_to_audio[keep].copy(),
            missing=list(self.missing),
            clip_ids=list(self.clip_ids[:n_clips]),
        )


def load_clotho(data_dir: str | Path, split: str = "evaluation") -> RetrievalDataset:
    """Read a Clotho v2.1 split from its official local layout.

    Args:
        data_dir: Folder holding ``clotho_captions_<split>.csv`` and the extracted ``<split>/`` audio.
        split: ``"development"``, ``"validation"`` or ``"evaluation"`` (1,045 clips x 5 captions).

    Returns:
        The dataset; clips whose audio file is absent are listed in ``missing``.

    Raises:
        DatasetError: If the CSV is absent or malformed, or no clip has audio.

    Example:
        >>> ds = load_clotho("data/clotho")  # doctest: +SKIP
        >>> ds.n_clips, ds.n_captions  # doctest: +SKIP
        (1045, 5225)
    """
    data_dir = Path(data_dir).expanduser()
    csv_path = data_dir / f"clotho_captions_{split}.csv"
    if not csv_path.is_file():
        raise DatasetError(
            f"Clotho {split} captions not found: expected {csv_path}. Put the official Clotho v2.1 files "
            f"there, or fetch them with `vela-search bench clotho --download --data-dir {data_dir}`."
        )
    header, rows = read_csv(csv_path)
    caption_cols = sorted(
        (h for h in header if re.fullmatch(r"caption_\d+", h)), key=lambda h: int(h.split("_")[1])
    )
    if "file_name" not in header or not caption_cols:
        missing_cols = [c for c in ("file_name", "caption_1") if c not in header]
        raise DatasetError(
            f"{csv_path} is not a Clotho captions file: expected columns file_name, caption_1..caption_5; "
            f"missing {', '.join(missing_cols)} (found: {', '.join(header) or 'no header'})."
        )

    clips: dict[str, list[str]] = {}
    for row in rows:
        name = (row.get("file_name") or "").strip()
        if not name:
            continue
        caps = clips.setdefault(name, [])
        caps.extend(c for c in ((row.get(col) or "").strip() for col in caption_cols) if c)
    if not clips:
        raise DatasetError(f"{csv_path} lists no clips.")

    audio_dirs = [data_dir / split, data_dir / f"clotho_audio_{split}", data_dir / "audio" / split]
    by_name, by_stem = _index_audio(audio_dirs)

    def find(name: str) -> Path | None:
        # Exact file name first; then the same stem in another format, for converted copies.
        return by_name.get(name) or by_stem.get(Path(name).stem)

    hint = (
        f" Extract clotho_audio_{split}.7z into {data_dir}, or fetch it with "
        f"`vela-search bench clotho --download --data-dir {data_dir}`."
    )
    return _assemble("clotho", split, clips, find, audio_dirs, csv_path, hint=hint)


def load_audiocaps(data_dir: str | Path, split: str = "test") -> RetrievalDataset:
    """Read an AudioCaps split: the official CSV plus audio files matched by YouTube id.

    Captions are grouped by ``youtube_id``; every caption of a clip is kept, also when a clip has other
    than 5 (the metrics handle any count). See the module docstring for the searched folders and the
    accepted file names, and :func:`audiocaps_audio_stems` for the exact stems.

    Args:
        data_dir: Folder holding ``<split>.csv`` (or ``audiocaps_<split>.csv``) and the audio.
        split: CSV split name; ``"test"`` is the retrieval benchmark.

    Returns:
        The dataset; YouTube ids without an audio file are listed in ``missing`` and excluded.

    Raises:
        DatasetError: If the CSV is absent or malformed, or no clip has audio.

    Example:
        >>> ds = load_audiocaps("data/audiocaps")  # doctest: +SKIP
        >>> ds.n_clips, len(ds.missing)  # doctest: +SKIP
    """
    data_dir = Path(data_dir).expanduser()
    candidates = [data_dir / f"{split}.csv", data_dir / f"audiocaps_{split}.csv"]
    csv_path = next((p for p in candidates if p.is_file()), None)
    if csv_path is None:
        raise DatasetError(
            f"AudioCaps {split} captions not found: expected {candidates[0]} (or {candidates[1].name}). "
            f"Fetch the CSV with `vela-search bench audiocaps --download --data-dir {data_dir}` "
            "(the audio itself is only on YouTube and must be obtained separately)."
        )
    header, rows = read_csv(csv_path)
    missing_cols = [c for c in ("youtube_id", "caption") if c not in header]
    if missing_cols:
        raise DatasetError(
            f"{csv_path} is not an AudioCaps captions file: expected columns audiocap_id, youtube_id, "
            f"start_time, caption; missing {', '.join(missing_cols)} "
            f"(found: {', '.join(header) or 'no header'})."
        )
    has_start = "start_time" in header

    clips: dict[str, list[str]] = {}
    starts: dict[str, list[str]] = {}
    for row in rows:
        yid = (row.get("youtube_id") or "").strip()
        if not yid:
            continue
        caps = clips.setdefault(yid, [])
        caption = (row.get("caption") or "").strip()
        if caption:
            caps.append(caption)
        start = (row.get("start_time") or "").strip() if has_start else ""
        if start and start not in starts.setdefault(yid, []):
            starts[yid].append(start)
    if not clips:
        raise DatasetError(f"{csv_path} lists no clips.")

    audio_dirs = [data_dir / split, data_dir / "audio" / split, data_dir / "audio", data_dir]
    dir_stems = [_index_audio([d])[1] for d in audio_dirs]

    def find(yid: str) -> Path | None:
        stems = audiocaps_audio_stems(yid, starts.get(yid, ()))
        for index in dir_stems:
            for stem in stems:
                if stem in index:
                    return index[stem]
        return None

    hint = (
        " AudioCaps audio is only on YouTube and must be obtained separately; files are matched as "
        "<youtube_id>.<wav|flac|mp3|ogg>, also Y<id>, <id>_<start>, <id>_<start>_<end> and "
        "Y<id>_<start>.000_<end>.000."
    )
    return _assemble("audiocaps", split, clips, find, audio_dirs, csv_path, hint=hint)


def audiocaps_audio_stems(youtube_id: str, start_times: Iterable[str] = ()) -> list[str]:
    """File stems accepted for one AudioCaps clip, in the order they are tried.

    Args:
        youtube_id: The clip's YouTube id.
        start_times: Its ``start_time`` values from the CSV (seconds, usually integers).

    Returns:
        ``<yid>`` and ``Y<yid>``, then for each start ``s`` (end ``e = s + 10``): ``<yid>_<s>``,
        ``<yid>_<s>_<e>``, ``<yid>_<s>.000_<e>.000``, each also with a leading ``Y``.
    """
    stems = [youtube_id, f"Y{youtube_id}"]
    for raw in start_times:
        try:
            start = float(raw)
        except ValueError:
            continue
        end = start + _AUDIOCAPS_SEGMENT_S
        plain = [
            f"{_fmt_seconds(start)}",
            f"{_fmt_seconds(start)}_{_fmt_seconds(end)}",
            f"{start:.3f}_{end:.3f}",
        ]
        if raw != _fmt_seconds(start):
            plain.insert(1, raw)  # the CSV's own spelling, e.g. "30.0"
        for suffix in plain:
            for stem in (f"{youtube_id}_{suffix}", f"Y{youtube_id}_{suffix}"):
                if stem not in stems:
                    stems.append(stem)
    return stems


def load_dataset(name: str, data_dir: str | Path, split: str | None = None) -> RetrievalDataset:
    """Read a benchmark by name.

    Args:
        name: ``"clotho"`` or ``"audiocaps"`` (case-insensitive).
        data_dir: The dataset folder.
        split: Split name; ``None`` takes the benchmark's default (see ``DEFAULT_SPLITS``).

    Returns:
        The dataset.

    Raises:
        DatasetError: For an unknown name or a missing or malformed dataset.
    """
    key = name.strip().lower()
    if key not in DATASETS:
        raise DatasetError(f"unknown dataset {name!r}: choose one of {', '.join(DATASETS)}.")
    split = split or DEFAULT_SPLITS[key]
    if key == "clotho":
        return load_clotho(data_dir, split)
    return load_audiocaps(data_dir, split)


def _fmt_seconds(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(value)


def read_csv(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    """A dataset CSV's header and rows (UTF-8, with or without BOM, or Latin-1 as older copies come).

    Raises:
        DatasetError: the file is not a CSV.
    """
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        # Older copies of the Clotho CSVs circulate re-encoded as Latin-1; every byte decodes there.
        text = raw.decode("latin-1")
    try:
        reader = csv.DictReader(io.StringIO(text, newline=""))
        header = [h.strip() for h in (reader.fieldnames or [])]
        reader.fieldnames = header
        rows = list(reader)
    except csv.Error as exc:
        raise DatasetError(f"{path} is not a readable CSV file: {exc}") from exc
    return header, rows


def _index_audio(dirs: Sequence[Path]) -> tuple[dict[str, Path], dict[str, Path]]:
    """Maps file name -> path and stem -> path over the audio files directly inside ``dirs``.

    Earlier folders win, then earlier extensions in ``AUDIO_EXTENSIONS``. Listing once beats probing
    every (clip, pattern, extension, folder) combination with a stat call.
    """
    by_name: dict[str, Path] = {}
    by_stem: dict[str, Path] = {}
    priority = {ext: i for i, ext in enumerate(AUDIO_EXTENSIONS)}
    for folder in dirs:
        if not folder.is_dir():
            continue
        files = [p for p in folder.iterdir() if p.suffix.lower() in priority and p.is_file()]
        files.sort(key=lambda p: (priority[p.suffix.lower()], p.name))
        for path in files:
            by_name.setdefault(path.name, path)
            by_stem.setdefault(path.stem, path)
    return by_name, by_stem


def _assemble(
    name: str,
    split: str,
    clips: dict[str, list[str]],
    find: Callable[[str], Path | None],
    audio_dirs: Sequence[Path],
    csv_path: Path,
    *,
    hint: str,
) -> RetrievalDataset:
    audio_paths: list[Path] = []
    clip_ids: list[str] = []
    captions: list[str] = []
    caption_to_audio: list[int] = []
    missing: list[str] = []
    for clip_id, caps in clips.items():
        if not caps:
            # A clip without any caption is no query and no answer for a2t; it is not "missing audio".
            continue
        path = find(clip_id)
        if path is None:
            missing.append(clip_id)
            continue
        index = len(audio_paths)
        audio_paths.append(path)
        clip_ids.append(clip_id)
        captions.extend(caps)
        caption_to_audio.extend([index] * len(caps))
    if not audio_paths:
        searched = ", ".join(str(d) for d in audio_dirs)
        raise DatasetError(
            f"none of the {len(missing)} clips listed in {csv_path} has an audio file; searched {searched}."
            + hint
        )
    return RetrievalDataset(
        name=name,
        split=split,
        audio_paths=audio_paths,
        captions=captions,
        caption_to_audio=np.asarray(caption_to_audio, dtype=np.int64),
        missing=missing,
        clip_ids=clip_ids,
    )
