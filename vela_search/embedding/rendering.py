"""The prompt text of every input: a shared prefix (system turn and demonstrations) and a per-mode suffix.

Both are rendered by the model's own chat template, so the prompts stay exactly those of the model (system
turn, ``Audio N:`` numbering). The prefix is everything up to the start of the item's turn; it is identical
for every input, which is what lets the embedder compute it once.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from vela_search.embedding import prompts
from vela_search.embedding.demos import DemoSet
from vela_search.errors import ModelLoadError

# Marks where a text item's body goes in a rendered suffix (never occurs in real text).
_BODY = "\x00VELA_BODY\x00"
# Marks where demo text number N goes in the rendered prefix.
_DEMO_TEXT = "\x00VELA_DEMO_{}\x00"

Span = tuple[int, int]


@dataclass(frozen=True)
class PromptTemplates:
    """The rendered prefix and, per mode, the item's suffix (text modes carry a body marker).

    ``prefix_user_spans`` are the character spans of user-given text in the prefix (demo texts and words):
    :func:`encode_prompt` tokenizes them as plain text, never as control tokens.
    """

    prefix: str
    suffixes: dict[str, str]
    prefix_user_spans: tuple[Span, ...] = ()

    @classmethod
    def render(cls, processor: Any, demos: DemoSet) -> PromptTemplates:
        """Render through ``processor``'s chat template behind the demonstrations ``demos``.

        Raises:
            ModelLoadError: the chat template does not use ``<|im_start|>`` turns (not Qwen2-Audio).
        """
        texts = _demo_texts(demos)
        turns = _demo_turns(demos, [_DEMO_TEXT.format(i) for i in range(len(texts))])

        def render(content: list[dict[str, Any]]) -> str:
            conversation = [*turns, {"role": "user", "content": content}]
            return processor.apply_chat_template(conversation, tokenize=False, add_generation_prompt=True)

        full = {mode: render(_item_content(mode)) for mode in prompts.MODES}
        common = os.path.commonprefix(list(full.values()))
        turn_start = common.rfind("<|im_start|>")
        if turn_start < 0:
            raise ModelLoadError(
                "the model's chat template does not use <|im_start|> turns; it is not Qwen2-Audio"
            )
        marked = common[:turn_start]
        prefix, spans = _fill(marked, {_DEMO_TEXT.format(i): t for i, t in enumerate(texts)})
        return cls(prefix, {mode: text[len(marked) :] for mode, text in full.items()}, tuple(spans))

    def suffix(self, mode: str, *, text: str | None = None, instruction: str | None = None) -> str:
        """The item's turn and the generation prompt, for an audio clip or a text in a text mode."""
        return self.suffix_and_span(mode, text=text, instruction=instruction)[0]

    def suffix_and_span(
        self, mode: str, *, text: str | None = None, instruction: str | None = None
    ) -> tuple[str, Span | None]:
        """The suffix and the character span of the user's text in it (None for audio)."""
        template = self.suffixes[mode]
        if mode == "audio":
            return template, None
        body = prompts.user_content(mode, text=text, instruction=instruction)[0]["text"]
        body = body[: -len(prompts.INSTRUCTIONS[mode]) - 1]
        start = template.index(_BODY)
        return template.replace(_BODY, body), (start, start + len(body))


def encode_prompt(tokenizer: Any, text: str, user_spans: Sequence[Span] = ()) -> list[int]:
    """Token ids of a rendered prompt in which ``user_spans`` are user text.

    The prompt's own control tokens (``<|im_start|>``, ``<|AUDIO|>``, ...) become their ids; inside user
    text the same characters are ordinary text (``split_special_tokens``): a query or caption that contains
    ``<|AUDIO|>`` or ``<|im_end|>`` can neither end its turn nor claim an audio slot. Text without such
    strings gets exactly the ids of a plain ``tokenizer(text)`` call: the prompt is cut only at control
    tokens, where the tokenizer cuts it too.
    """
    added = sorted(tokenizer.get_added_vocab(), key=len, reverse=True)
    pattern = re.compile("|".join(re.escape(t) for t in added)) if added else None
    ids: list[int] = []
    start = 0

    def plain(segment: str) -> None:
        if segment:
            ids.extend(tokenizer(segment, add_special_tokens=False, split_special_tokens=True)["input_ids"])

    for match in pattern.finditer(text) if pattern is not None else ():
        if any(a < match.end() and match.start() < b for a, b in user_spans):
            continue  # typed by the user: stays text
        plain(text[start : match.start()])
        ids.append(tokenizer.convert_tokens_to_ids(match.group()))
        start = match.end()
    plain(text[start:])
    return ids


def _fill(template: str, values: dict[str, str]) -> tuple[str, list[Span]]:
    """``template`` with each marker replaced by its value, and the spans the values occupy."""
    if not values:
        return template, []
    pattern = re.compile("|".join(re.escape(m) for m in values))
    out: list[str] = []
    spans: list[Span] = []
    length = 0
    last = 0
    for match in pattern.finditer(template):
        out.append(template[last : match.start()])
        length += match.start() - last
        value = values[match.group()]
        spans.append((length, length + len(value)))
        out.append(value)
        length += len(value)
        last = match.end()
    out.append(template[last:])
    return "".join(out), spans


def _demo_texts(demos: DemoSet) -> list[str]:
    """The user-given texts of the demos in prompt order: each text demo's text, then every demo's word."""
    texts: list[str] = []
    for demo in demos.demos:
        if not demo.is_audio:
            texts.append((demo.text or "").strip())
        texts.append(demo.word)
    return texts


def _demo_turns(demos: DemoSet, markers: list[str]) -> list[dict[str, Any]]:
    """The demos' chat turns with ``markers`` (in :func:`_demo_texts` order) in place of their texts."""
    turns: list[dict[str, Any]] = []
    marks = iter(markers)
    for demo in demos.demos:
        mode = "audio" if demo.is_audio else "caption"
        text = None if demo.is_audio else next(marks)
        turns.append({"role": "user", "content": prompts.user_content(mode, text=text)})
        turns.append({"role": "assistant", "content": next(marks)})
    return turns


def _item_content(mode: str) -> list[dict[str, Any]]:
    if mode == "audio":
        return prompts.user_content("audio")
    return [{"type": "text", "text": f"{_BODY}\n{prompts.INSTRUCTIONS[mode]}"}]
