"""What the embedder takes as input: :class:`EmbedItem`, and the checks an item must pass before embedding."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from vela_search.embedding import prompts
from vela_search.embedding.batching import MAX_CLIP_SECONDS, SAMPLE_RATE, pad_short_clip
from vela_search.errors import VelaError

if TYPE_CHECKING:
    from collections.abc import Sequence


@dataclass(frozen=True)
class EmbedItem:
    """One input: an audio clip (16 kHz mono) or a text in one of the text modes."""

    mode: str
    text: str | None = None
    instruction: str | None = None
    wave: np.ndarray | None = None

    @property
    def is_audio(self) -> bool:
        return self.mode == "audio"


def checked_items(items: Sequence[EmbedItem]) -> list[EmbedItem]:
    """Validate every item; clips too short for one audio token come back padded with silence."""
    out = []
    for item in items:
        validate_item(item)
        if item.is_audio:
            item = dataclasses.replace(item, wave=pad_short_clip(item.wave))  # type: ignore[arg-type]
        out.append(item)
    return out


def validate_item(item: EmbedItem) -> None:
    """Raise if the item cannot be embedded: an unknown mode, no or empty audio, audio over 30 s, no text."""
    prompts.check_mode(item.mode)
    if item.is_audio:
        if item.wave is None:
            raise ValueError("an audio item needs a waveform")
        if len(item.wave) == 0:
            raise VelaError("cannot embed an empty clip (0 samples)")
        if len(item.wave) > MAX_CLIP_SECONDS * SAMPLE_RATE + 1:
            raise VelaError(
                f"a clip of {len(item.wave) / SAMPLE_RATE:.1f} s is longer than the 30 s the audio "
                "encoder "
                "reads; cut it into windows (vela_search.audio.plan_windows) first"
            )
    elif item.text is None or not item.text.strip():
        raise VelaError("cannot embed an empty text")
