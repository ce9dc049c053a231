"""Small synthetic benchmark datasets in the exact Clotho v2.1 and AudioCaps layouts.

The audio is generated (a distinct tone plus a little seeded noise per clip), the captions are made up, and
everything is deterministic, so end-to-end tests can check counts and orders exactly. Import from tests as
``from tests.bench.dataset_factory import make_clotho, make_audiocaps``.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import soundfile as sf

__all__ = [
    "audiocaps_captions",
    "clotho_captions",
    "clotho_file_name",
    "make_audiocaps",
    "make_clotho",
    "write_tone",
    "youtube_id",
]

_SOUNDS = (
    "a dog barks",
    "rain falls on a tin roof",
    "a car passes by",
    "birds chirp",
    "a bell rings",
    "water drips",
    "a crowd cheers",
    "wind blows hard",
    "a door creaks",
    "an engine idles",
)


def write_tone(path: Path, index: int, seconds: float = 1.0, sample_rate: int = 16_000) -> Path:
    """Write a short mono file (format from the suffix) whose content differs for every ``index``."""
    rng = np.random.default_rng(index)
    t = np.arange(int(round(seconds * sample_rate))) / sample_rate
    wave = 0.3 * np.sin(2 * np.pi * (220.0 + 55.0 * index) * t) + 0.01 * rng.standard_normal(t.size)
    path.parent.mkdir(parents=True, exist_ok=True)
    subtype = "PCM_16" if path.suffix.lower() in (".wav", ".flac") else None  # ogg/mp3: codec default
    sf.write(path, wave.astype(np.float32), sample_rate, subtype=subtype)
    return path


def clotho_file_name(index: int) -> str:
    """File name of clip ``index``; spaces and a comma, as in real Clotho names, exercise CSV quoting."""
    return f"Synthetic clip {index:03d}, take 1.wav"


def clotho_captions(index: int, n: int = 5) -> list[str]:
    """The made-up captions of Clotho clip ``index``."""
    sound = _SOUNDS[index % len(_SOUNDS)]
    return [
        f'Clip {index}: {sound}, version {k} "quoted"' if k == 0 else f"Clip {index}: {sound}, version {k}"
        for k in range(n)
    ]


def make_clotho(
    directory: str | Path,
    n_clips: int,
    seconds: float = 1.0,
    *,
    split: str = "evaluation",
    sample_rate: int = 16_000,
    audio_subdir: str | None = None,
) -> Path:
    """Write ``clotho_captions_<split>.csv`` and ``<split>/*.wav`` (5 captions per clip) into ``directory``.

    Args:
        directory: Target folder (created).
        n_clips: Number of clips.
        seconds: Duration of each clip.
        split: Split name used in the CSV and folder names.
        sample_rate: Audio sample rate.
        audio_subdir: Audio folder relative to ``directory``; default ``<split>``.

    Returns:
        ``directory`` as a Path.
    """
    root = Path(directory)
    audio_dir = root / (audio_subdir or split)
    audio_dir.mkdir(parents=True, exist_ok=True)
    with open(root / f"clotho_captions_{split}.csv", "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["file_name", *(f"caption_{k}" for k in range(1, 6))])
        for i in range(n_clips):
            writer.writerow([clotho_file_name(i), *clotho_captions(i)])
            write_tone(audio_dir / clotho_file_name(i), i, seconds, sample_rate)
    return root


def youtube_id(index: int) -> str:
    """An 11-character YouTube-like id with '_' and '-' in it, as real ids have."""
    return f"a{index:04d}_-Zq9x"


def audiocaps_captions(index: int, n: int = 5) -> list[str]:
    """The made-up captions of AudioCaps clip ``index``."""
    sound = _SOUNDS[(index + 3) % len(_SOUNDS)]
    return [f"AudioCaps clip {index}: {sound}, take {k}" for k in range(n)]


def make_audiocaps(
    directory: str | Path,
    n_clips: int,
    n_missing: int = 0,
    *,
    seconds: float = 1.0,
    split: str = "test",
    captions_per_clip: int | Sequence[int] = 5,
    sample_rate: int = 16_000,
    audio_subdir: str | None = None,
) -> Path:
    """Write ``<split>.csv`` and ``<split>/<youtube_id>.wav`` in the AudioCaps layout into ``directory``.

    Rows are interleaved (every clip's first caption, then every second one, ...) as captions of one clip
    are not contiguous in the real CSV. The last ``n_missing`` clips get no audio file.

    Args:
        directory: Target folder (created).
        n_clips: Number of clips in the CSV, including the missing ones.
        n_missing: How many of the last clips have no audio.
        seconds: Duration of each clip.
        split: CSV and folder name.
        captions_per_clip: One count for all clips, or one per clip.
        sample_rate: Audio sample rate.
        audio_subdir: Audio folder relative to ``directory``; default ``<split>``.

    Returns:
        ``directory`` as a Path.
    """
    root = Path(directory)
    audio_dir = root / (audio_subdir or split)
    audio_dir.mkdir(parents=True, exist_ok=True)
    counts = [captions_per_clip] * n_clips if isinstance(captions_per_clip, int) else list(captions_per_clip)
    if len(counts) != n_clips:
        raise ValueError("captions_per_clip must give one count per clip")
    rows = []
    audiocap_id = 100_000
    for k in range(max(counts, default=0)):
        for i in range(n_clips):
            if k < counts[i]:
                rows.append([audiocap_id, youtube_id(i), 30 + i, audiocaps_captions(i, counts[i])[k]])
                audiocap_id += 1
    with open(root / f"{split}.csv", "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["audiocap_id", "youtube_id", "start_time", "caption"])
        writer.writerows(rows)
    for i in range(n_clips - n_missing):
        write_tone(audio_dir / f"{youtube_id(i)}.wav", i, seconds, sample_rate)
    return root
