"""Labelling clips with the embedder's own model: the one word it answers to the Vela audio prompt.

The clip is put behind the embedder's demonstrations exactly as it would be embedded ("Audio 1: <clip>"
then "Summarize above audio in one word:" and the assistant's turn), and the model *generates* the answer
with its language-model head (greedy decoding, a few tokens). The first word of the answer is the label.
This bootstraps a demo set from an unlabelled library; the words are only as good as the model (the tiny
random model's are meaningless).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from vela_search.embedding.backbone import stock_attention
from vela_search.embedding.batching import SAMPLE_RATE

if TYPE_CHECKING:
    from vela_search.embedding.embedder import VelaEmbedder

__all__ = ["GeneratedLabel", "ModelLabeller", "first_word"]

# A word: letters or digits, with inner apostrophes or hyphens ("dog", "rock'n'roll", "t-rex").
_WORD = re.compile(r"[^\W_]+(?:['\u2019-][^\W_]+)*")
# Enough for one word in any tokenizer, few enough to stay quick.
DEFAULT_MAX_NEW_TOKENS = 8


@dataclass(frozen=True)
class GeneratedLabel:
    """The model's answer for one clip, the word taken from it (None when it holds no word), and the
    generated token ids."""

    word: str | None
    answer: str
    tokens: tuple[int, ...] = ()


def first_word(answer: str) -> str | None:
    """The first word of a generated answer, lower-cased; None if it holds none."""
    match = _WORD.search(answer)
    return match.group(0).lower() if match else None


class ModelLabeller:
    """Asks the embedder's model for the one word that summarises a clip.

    Example:
        >>> emb = VelaEmbedder.from_pretrained("tiny", demos="default")  # doctest: +SKIP
        >>> ModelLabeller(emb).label(wave).word  # doctest: +SKIP
        'dog'
    """

    def __init__(self, embedder: VelaEmbedder, *, max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS) -> None:
        if max_new_tokens < 1:
            raise ValueError("max_new_tokens must be positive")
        self.embedder = embedder
        self.max_new_tokens = max_new_tokens
        self._demo_waves: list[np.ndarray] | None = None

    def label(self, wave: np.ndarray) -> GeneratedLabel:
        """Generate the answer for one 16 kHz mono clip (at most 30 s) behind the embedder's demos.

        Raises:
            TokenBudgetError: The clip does not fit behind the demonstrations.
        """
        import torch

        from vela_search.embedding.embedder import EmbedItem

        emb = self.embedder
        bb = emb.backbone
        item = EmbedItem("audio", wave=wave)
        emb.check_budget([item])
        enc = bb.processor(
            text=[emb.full_prompt(item)],
            audio=[*self._waves_of_demos(), wave],
            sampling_rate=SAMPLE_RATE,
            return_tensors="pt",
        )
        inputs = {
            "input_ids": enc["input_ids"].to(bb.device),
            "attention_mask": enc["attention_mask"].to(bb.device),
            "input_features": enc["input_features"].to(bb.device, bb.dtype),
            "feature_attention_mask": enc["feature_attention_mask"].to(bb.device),
        }
        tokenizer = bb.processor.tokenizer
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        with stock_attention(bb), torch.no_grad():
            out = bb.model.generate(
                **inputs,
                max_new_tokens=self.max_new_tokens,
                do_sample=False,
                pad_token_id=pad,
                eos_token_id=tokenizer.convert_tokens_to_ids("<|im_end|>"),
            )
        new_tokens = out[0, inputs["input_ids"].shape[1] :].tolist()
        answer = tokenizer.decode(new_tokens, skip_special_tokens=True)
        return GeneratedLabel(word=first_word(answer), answer=answer.strip(), tokens=tuple(new_tokens))

    def label_all(self, waves: Sequence[np.ndarray]) -> list[GeneratedLabel]:
        """:meth:`label` for each clip, in order."""
        return [self.label(w) for w in waves]

    def _waves_of_demos(self) -> list[np.ndarray]:
        if self._demo_waves is None:
            from vela_search.audio import load_waveform

            self._demo_waves = [
                load_waveform(d.wave if d.wave is not None else d.audio)
                for d in self.embedder.demos.demos
                if d.is_audio
            ]
        return self._demo_waves
