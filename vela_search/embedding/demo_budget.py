"""What a demonstration set costs: tokens per demo, the whole prefix, and what still fits behind it.

Every input is embedded behind the demo prefix, and prefix plus input must fit in the model's positions
(8,192 for Qwen2-Audio). :func:`measure_demo_set` counts with the embedder's own helpers (its rendered
prompts, :meth:`VelaEmbedder.token_count`, :attr:`VelaEmbedder.prefix_length` and
:func:`~vela_search.embedding.batching.audio_token_count`), so it agrees with the check the embedder makes
before every batch. It needs the processor only: an embedder on
:func:`~vela_search.embedding.backbone.load_backbone_without_weights` is enough.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from vela_search.embedding.batching import MAX_CLIP_SECONDS, SAMPLE_RATE, audio_token_count
from vela_search.embedding.rendering import PromptTemplates
from vela_search.errors import TokenBudgetError

if TYPE_CHECKING:
    from vela_search.embedding.embedder import VelaEmbedder

__all__ = ["DEFAULT_ITEM_SECONDS", "DemoBudget", "DemoCost", "measure_demo_set"]

# The indexer's default window: the item length a set is checked against unless told otherwise.
DEFAULT_ITEM_SECONDS = 10.0


@dataclass(frozen=True)
class DemoCost:
    """One demonstration's share of the prefix (its user and assistant turns)."""

    position: int  # 1-based, in prompt order
    kind: str  # "audio" or "text"
    word: str
    content: str  # the caption, or the audio file's path
    seconds: float | None  # audio length (None for text)
    tokens: int


@dataclass(frozen=True)
class DemoBudget:
    """The token budget of a demo set behind one model, for items of ``item_seconds``.

    ``room_left`` is what remains of the model's positions after the prefix and one audio item of
    ``item_seconds``; negative means the set does not fit. ``longest_clip_s`` is the longest audio item
    (at most 30 s, the encoder's window) that still fits behind the prefix.
    """

    source: str
    n_demos: int
    n_audio: int
    n_text: int
    costs: tuple[DemoCost, ...]
    header_tokens: int  # the system turn before the first demo
    prefix_tokens: int
    max_positions: int
    item_seconds: float
    item_tokens: int
    room_left: int
    longest_clip_s: float
    digest: str

    @property
    def fits(self) -> bool:
        return self.room_left >= 0

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["costs"] = [asdict(c) for c in self.costs]
        out["fits"] = self.fits
        return out

    def require_fit(self, fix: str) -> None:
        """Raise :class:`TokenBudgetError` naming the numbers (and ``fix``) unless the set fits."""
        if self.fits:
            return
        what = f"{self.n_demos} demos, {self.n_audio} audio"
        if self.prefix_tokens >= self.max_positions:
            raise TokenBudgetError(
                f"demo set {self.source} does not fit: its prefix ({what}) alone takes {self.prefix_tokens} "
                f"tokens, the model's limit is {self.max_positions} positions; {fix}"
            )
        total = self.prefix_tokens + self.item_tokens
        raise TokenBudgetError(
            f"demo set {self.source} does not fit: prefix {self.prefix_tokens} tokens ({what}) + a "
            f"{self.item_seconds:g} s clip {self.item_tokens} tokens = {total}"
            f" > limit {self.max_positions} positions ({-self.room_left} over); the longest clip that fits "
            f"behind it is {self.longest_clip_s:.2f} s; {fix}"
        )


def measure_demo_set(embedder: VelaEmbedder, *, item_seconds: float = DEFAULT_ITEM_SECONDS) -> DemoBudget:
    """Count the tokens of ``embedder``'s demo set and what fits behind it.

    Args:
        embedder: The embedder holding the demo set (weights are not needed).
        item_seconds: Length of the audio items the set must leave room for (at most 30 s).

    Returns:
        The budget; ``require_fit`` turns a set that does not fit into an error.

    Raises:
        ValueError: ``item_seconds`` is not in (0, 30].
        AudioDecodeError: An audio demo cannot be decoded.
    """
    from vela_search.audio import load_waveform
    from vela_search.embedding.embedder import EmbedItem

    if not 0 < item_seconds <= MAX_CLIP_SECONDS:
        raise ValueError(f"item_seconds must be in (0, {MAX_CLIP_SECONDS:g}], got {item_seconds}")
    demos = embedder.demos
    waves = [
        load_waveform(d.wave if d.wave is not None else d.audio) if d.is_audio else None for d in demos.demos
    ]

    # Split the rendered prefix at its turn starts: one system turn, then a user and an assistant turn per
    # demo. Special tokens are never merged with their neighbours, so the split is exact.
    tokenizer = embedder.backbone.processor.tokenizer
    prefix_text = PromptTemplates.render(embedder.backbone.processor, demos).prefix
    ids = tokenizer(prefix_text)["input_ids"]
    turn_start = tokenizer.convert_tokens_to_ids("<|im_start|>")
    starts = [i for i, token in enumerate(ids) if token == turn_start]
    header_turns = len(starts) - 2 * len(demos)
    user_starts = starts[header_turns::2] + [len(ids)]
    header = user_starts[0] if demos.demos else len(ids)
    costs = []
    for n, (demo, wave) in enumerate(zip(demos.demos, waves, strict=True)):
        tokens = user_starts[n + 1] - user_starts[n]
        if wave is not None:
            tokens += audio_token_count(len(wave)) - 1  # the <|AUDIO|> placeholder becomes the clip's tokens
        costs.append(
            DemoCost(
                position=n + 1,
                kind="audio" if demo.is_audio else "text",
                word=demo.word,
                content=str(demo.audio) if demo.is_audio else (demo.text or ""),
                seconds=None if wave is None else len(wave) / SAMPLE_RATE,
                tokens=tokens,
            )
        )

    prefix = embedder.prefix_length
    limit = embedder.max_positions

    def clip_tokens(n_samples: int) -> int:
        return embedder.token_count(EmbedItem("audio", wave=np.zeros(n_samples, dtype=np.float32)))

    item_tokens = clip_tokens(round(item_seconds * SAMPLE_RATE))
    return DemoBudget(
        source=demos.source,
        n_demos=len(demos),
        n_audio=demos.n_audio,
        n_text=demos.n_text,
        costs=tuple(costs),
        header_tokens=header,
        prefix_tokens=prefix,
        max_positions=limit,
        item_seconds=item_seconds,
        item_tokens=item_tokens,
        room_left=limit - prefix - item_tokens,
        longest_clip_s=_longest_fitting(clip_tokens, limit - prefix) / SAMPLE_RATE,
        digest=demos.digest if len(demos) else "none",
    )


def _longest_fitting(clip_tokens: Any, room: int) -> int:
    """The most samples (at most 30 s) whose clip takes at most ``room`` tokens; 0 if none does."""
    lo, hi = 0, int(MAX_CLIP_SECONDS * SAMPLE_RATE)
    if clip_tokens(hi) <= room:
        return hi
    while lo < hi:  # tokens grow with length: the last length that fits, by bisection
        mid = (lo + hi + 1) // 2
        if clip_tokens(mid) <= room:
            lo = mid
        else:
            hi = mid - 1
    return lo
