"""The audio LLM as a judge: does this candidate's audio match this query? One yes/no log-odds per clip.

The loaded Qwen2-Audio (the embedder's own backbone: same weights, adapter and quantization) reads a user
turn holding the query (a text as written, or an example clip) and one candidate clip, and the judgement
is the log-probability of answering "yes" against "no" at the first answer token: the log-odds
``logsumexp(yes logits) - logsumexp(no logits)`` over the answer words' first tokens. No text is
generated and nothing is sampled, so the same model, prompt and candidates give the same scores.

It runs the way indexing does: everything before the candidate (system turn, instructions, the query) is
one prefix per request, computed once and shared in place by every candidate (the prefix attention of
:mod:`vela_search.embedding.attention`); candidates go in length-sorted, token-sized batches
(:func:`~vela_search.embedding.batching.plan_batches`), right-padded, with the valid-frame audio encoder.
Only the two answer rows of the language-model head are multiplied, not the whole vocabulary.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from vela_search.embedding.attention import PrefixKV
from vela_search.embedding.batching import (
    DEFAULT_BATCH_TOKENS,
    DEFAULT_MAX_BATCH_ITEMS,
    MAX_CLIP_SECONDS,
    SAMPLE_RATE,
    audio_token_count,
    pad_short_clip,
    plan_batches,
)
from vela_search.embedding.inputs import audio_features, expand_audio_ids, input_embeddings
from vela_search.embedding.judge_prompt import CANDIDATE, QUERY, JudgePrompt, load_judge_prompt
from vela_search.embedding.prompts import AUDIO_SLOT
from vela_search.embedding.rendering import encode_prompt
from vela_search.errors import QueryError, TokenBudgetError

if TYPE_CHECKING:
    import os

    from vela_search.embedding.backbone import Backbone
    from vela_search.embedding.embedder import VelaEmbedder

__all__ = ["AudioJudge", "JudgeReference", "combined_order", "yes_probability"]

# Marks where the query text goes in a rendered prompt (never occurs in real text).
_QUERY_MARK = "\x00VELA_QUERY\x00"
_AUDIO_TOKEN = "<|AUDIO|>"


@dataclass(frozen=True)
class JudgeReference:
    """What candidates are judged against: a text query as written, or an example clip (16 kHz mono)."""

    text: str | None = None
    wave: np.ndarray | None = None

    def __post_init__(self) -> None:
        if (self.text is None) == (self.wave is None):
            raise ValueError("a judge reference is a text or a clip, exactly one")
        if self.text is not None and not self.text.strip():
            raise QueryError("cannot judge against an empty query")

    @classmethod
    def for_text(cls, text: str, instruction: str | None = None) -> JudgeReference:
        """A text query; an instruction-mode query is its request, then its text."""
        body = text.strip() if not instruction else f"{instruction.strip()}\n{text.strip()}"
        return cls(text=body)

    @property
    def kind(self) -> str:
        return "text" if self.text is not None else "audio"


@dataclass(frozen=True)
class RenderedJudgePrompt:
    """A reference's prompt, cut before the candidate's audio: ``prefix`` is shared, ``suffix`` per clip."""

    prefix: str
    suffix: str
    query_span: tuple[int, int] | None  # where the query text sits in ``prefix``

    @property
    def full(self) -> str:
        return self.prefix + self.suffix


class AudioJudge:
    """Scores candidate clips against a query with the backbone's yes/no answer.

    Example:
        >>> judge = AudioJudge.for_embedder(emb)  # doctest: +SKIP
        >>> judge.judge(JudgeReference.for_text("rain, no thunder"), [clip_a, clip_b])  # doctest: +SKIP
        array([ 2.31, -0.87])
    """

    def __init__(
        self,
        backbone: Backbone,
        prompt: JudgePrompt | str | os.PathLike[str] | None = None,
        *,
        batch_tokens: int = DEFAULT_BATCH_TOKENS,
        max_batch_items: int = DEFAULT_MAX_BATCH_ITEMS,
    ) -> None:
        self.backbone = backbone
        self.prompt = load_judge_prompt(prompt)
        self.batch_tokens = batch_tokens
        self.max_batch_items = max_batch_items
        self.yes_ids, self.no_ids = self._answer_ids()
        self.forwards = 0  # batched candidate forwards run (for tests and benchmarks)

    @classmethod
    def for_embedder(
        cls, embedder: VelaEmbedder, prompt: JudgePrompt | str | os.PathLike[str] | None = None
    ) -> AudioJudge:
        """A judge on the embedder's loaded backbone (adapter and quantization included), same batch size."""
        return cls(
            embedder.backbone,
            prompt,
            batch_tokens=embedder.batch_tokens,
            max_batch_items=embedder.max_batch_items,
        )

    # ------------------------------------------------------------------------------------- prompts
    def render(self, reference: JudgeReference) -> RenderedJudgePrompt:
        """The reference's prompt through the model's chat template, cut before the candidate's audio."""
        template = self.prompt.template(reference.kind)
        before, rest = template.split(QUERY)
        between, after = rest.split(CANDIDATE)
        audio_part = {"type": "audio", "audio": AUDIO_SLOT}
        if reference.kind == "text":
            parts = [_text(before + _QUERY_MARK + between), audio_part, _text(after)]
        else:
            parts = [_text(before), audio_part, _text(between), audio_part, _text(after)]
        conversation = [{"role": "user", "content": [p for p in parts if p is not None]}]
        rendered = self.backbone.processor.apply_chat_template(
            conversation, tokenize=False, add_generation_prompt=True
        )
        cut = rendered.rindex(_AUDIO_TOKEN)  # the candidate's clip is the last one
        prefix, suffix = rendered[:cut], rendered[cut:]
        span = None
        if reference.text is not None:
            start = prefix.index(_QUERY_MARK)
            prefix = prefix.replace(_QUERY_MARK, reference.text)
            span = (start, start + len(reference.text))
        return RenderedJudgePrompt(prefix, suffix, span)

    def _answer_ids(self) -> tuple[list[int], list[int]]:
        """The first token of each yes word and each no word (the two sets must not meet)."""
        tokenizer = self.backbone.processor.tokenizer

        def first_tokens(words: Sequence[str]) -> list[int]:
            return sorted({tokenizer(w, add_special_tokens=False)["input_ids"][0] for w in words})

        yes, no = first_tokens(self.prompt.yes), first_tokens(self.prompt.no)
        if set(yes) & set(no):
            raise QueryError(
                "judge prompt: a yes word and a no word start with the same token; choose other words"
            )
        return yes, no

    # ---------------------------------------------------------------------------------- judging
    def judge(self, reference: JudgeReference, clips: Sequence[np.ndarray]) -> np.ndarray:
        """The yes-against-no log-odds of every clip (16 kHz mono, at most 30 s), in input order.

        Raises:
            TokenBudgetError: the query and a candidate do not fit the model's positions together.
        """
        if not clips:
            return np.zeros(0, dtype=np.float64)
        clips = [
            pad_short_clip(np.asarray(c, dtype=np.float32)[: int(MAX_CLIP_SECONDS * SAMPLE_RATE)])
            for c in clips
        ]
        rendered = self.render(reference)
        tail = len(self.backbone.processor.tokenizer(rendered.suffix)["input_ids"]) - 1
        lengths = [tail + audio_token_count(len(c)) for c in clips]
        with torch.no_grad():
            prefix = self._prefix_kv(rendered, reference)
            self._check_fits(prefix.length, max(lengths))
            out = np.zeros(len(clips), dtype=np.float64)
            for members in plan_batches(lengths, self.batch_tokens, self.max_batch_items):
                scores = self._forward_batch(rendered.suffix, [clips[i] for i in members], prefix)
                out[members] = scores
        return out

    def _check_fits(self, prefix_length: int, longest: int) -> None:
        limit = self.backbone.max_positions
        if prefix_length + longest > limit:
            raise TokenBudgetError(
                f"the judge prompt does not fit the model: query part {prefix_length} tokens + candidate "
                f"{longest} tokens > limit {limit} positions; shorten the query"
            )

    def _prefix_kv(self, rendered: RenderedJudgePrompt, reference: JudgeReference) -> PrefixKV:
        """The shared part's keys/values (system turn, instructions, the query or the example clip)."""
        bb = self.backbone
        tokenizer = bb.processor.tokenizer
        ids = encode_prompt(tokenizer, rendered.prefix, [rendered.query_span] if rendered.query_span else [])
        features = None
        if reference.wave is not None:
            features = audio_features(
                bb.processor, [pad_short_clip(reference.wave[: int(MAX_CLIP_SECONDS * SAMPLE_RATE)])]
            )
            ids = expand_audio_ids(ids, features[1], bb.model.config.audio_token_index)
            features = (features[0].to(bb.device), features[1].to(bb.device))
        self._check_fits(len(ids), 1)
        input_ids = torch.tensor([ids], dtype=torch.long, device=bb.device)
        capture = PrefixKV()
        bb.language_model(
            inputs_embeds=input_embeddings(bb, input_ids, features),
            position_ids=torch.arange(len(ids), device=bb.device).unsqueeze(0),
            use_cache=False,
            vela_capture=capture,
        )
        return capture

    def _forward_batch(self, suffix: str, clips: list[np.ndarray], prefix: PrefixKV) -> np.ndarray:
        """Log-odds of one batch of candidates behind the shared prefix."""
        bb = self.backbone
        on_gpu = bb.device.type == "cuda"
        enc = bb.processor(
            text=[suffix] * len(clips),
            audio=clips,
            sampling_rate=SAMPLE_RATE,
            return_tensors="pt",
            padding=True,
            device=str(bb.device) if on_gpu else "cpu",
        )
        input_ids = enc["input_ids"].to(bb.device)
        last = enc["attention_mask"].sum(dim=1).to(bb.device) - 1
        features = (enc["input_features"].to(bb.device), enc["feature_attention_mask"].sum(-1).to(bb.device))
        embeds = input_embeddings(bb, input_ids, features)
        positions = prefix.length + torch.arange(embeds.shape[1], device=bb.device)
        hidden = bb.language_model(
            inputs_embeds=embeds,
            position_ids=positions.unsqueeze(0).expand(embeds.shape[0], -1),
            use_cache=False,
            vela_prefix=prefix,
        ).last_hidden_state
        self.forwards += 1
        return self.log_odds(hidden[torch.arange(hidden.shape[0], device=hidden.device), last])

    def log_odds(self, hidden: torch.Tensor) -> np.ndarray:
        """Yes-against-no log-odds of final hidden states ``(n, hidden)`` (the head's answer rows only)."""
        head: Any = self.backbone.model.get_output_embeddings()
        ids = torch.tensor(self.yes_ids + self.no_ids, device=hidden.device)
        logits = hidden.float() @ head.weight[ids].float().T
        if getattr(head, "bias", None) is not None:
            logits = logits + head.bias[ids].float()
        n_yes = len(self.yes_ids)
        odds = torch.logsumexp(logits[:, :n_yes], dim=-1) - torch.logsumexp(logits[:, n_yes:], dim=-1)
        return odds.double().cpu().numpy()


def yes_probability(log_odds: float) -> float:
    """The judge's probability of "yes" (against "no"): the sigmoid of its log-odds."""
    return float(1.0 / (1.0 + np.exp(-float(log_odds))))


def combined_order(
    scores: Sequence[float], judged: Sequence[int], log_odds: Sequence[float], vector_weight: float
) -> list[int]:
    """Candidate positions in their final order: judgement and vector score combined.

    Each judged position ``judged[j]`` gets ``yes_probability(log_odds[j]) + vector_weight * scores[i]``;
    the judged positions are refilled in that value's descending order (ties: the vector order), and every
    position that was not judged stays where it was.
    """
    final = {
        i: yes_probability(x) + vector_weight * float(scores[i])
        for i, x in zip(judged, log_odds, strict=True)
    }
    ranked = sorted(judged, key=lambda i: (-final[i], i))
    order = list(range(len(scores)))
    for slot, i in zip(sorted(judged), ranked, strict=True):
        order[slot] = i
    return order


def _text(text: str) -> dict[str, str] | None:
    return {"type": "text", "text": text} if text else None
