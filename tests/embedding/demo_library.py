"""Generated clip libraries for the demo-set tests: one sub-folder per word, a loud burst at a known place.

Import from tests as ``from tests.embedding.demo_library import write_library``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf

SAMPLE_RATE = 16_000
LABELS = ("dog", "rain", "bell", "engine", "bird")


def burst_start(label_index: int, clip_index: int) -> float:
    """Where (in seconds) the loud second of clip ``clip_index`` of label ``label_index`` starts."""
    return 0.25 * ((label_index + 2 * clip_index) % 7)


def write_clip(path: Path, seconds: float, burst_s: float | None, seed: int, freq: float = 300.0) -> Path:
    """Quiet noise with a loud one-second tone starting at ``burst_s`` (16 kHz mono 16-bit WAV)."""
    rng = np.random.default_rng(seed)
    wave = 0.01 * rng.standard_normal(round(seconds * SAMPLE_RATE))
    if burst_s is not None:
        start = round(burst_s * SAMPLE_RATE)
        n = min(SAMPLE_RATE, len(wave) - start)
        wave[start : start + n] += 0.5 * np.sin(2 * np.pi * freq * np.arange(n) / SAMPLE_RATE)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, wave.astype(np.float32), SAMPLE_RATE, subtype="PCM_16")
    return path


def write_library(root: Path, labels=LABELS, per_label: int = 3, seconds: float = 3.0, unlabelled: int = 0):
    """``root/<label>/<k>.wav`` clips (burst at :func:`burst_start`) plus ``unlabelled`` top-level clips."""
    for li, label in enumerate(labels):
        for k in range(per_label):
            write_clip(
                root / label / f"{k}.wav", seconds, burst_start(li, k), seed=10 * li + k, freq=200 + 60 * li
            )
    for k in range(unlabelled):
        write_clip(root / f"loose_{k}.wav", seconds, 0.5 * k, seed=1000 + k, freq=900 + 40 * k)
    return root
