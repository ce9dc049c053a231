"""The prompt text of every input: a shared prefix (system turn and demonstrations) and a per-mode suffix.

Both are rendered by the model's own chat template, so the prompts stay exactly those of the model (system
turn, ``Audio N:`` numbering). The prefix is everything up to the start of the item's turn; it is identical
for every input, which is what lets the embedder compute it once.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from vela_search.embedding import prompts
from vela_search.embedding.demos import DemoSet
from vela_search.errors import ModelLoadError

# Marks where a text item's body goes in a rendered suffix (never occurs in real text).
_BODY = "\x00VELA_BODY\x00"


@dataclass(frozen=True)
class PromptTemplates:
    """The rendered prefix and, per mode, the item's suffix (text modes carry a body marker)."""

    prefix: str
    suffixes: dict[str, str]

    @classmethod
    def render(cls, processor: Any, demos: DemoSet) -> PromptTemplates:
        """Render through ``processor``'s chat template behind the demonstrations ``demos``.

        Raises:
            ModelLoadError: the chat template does not use ``<|im_start|>`` turns (not Qwen2-Audio).
        """
        turns = _demo_turns(demos)

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
        prefix = common[:turn_start]
        return cls(prefix, {mode: text[len(prefix) :] for mode, text in full.items()})

    def suffix(self, mode: str, *, text: str | None = None, instruction: str | None = None) -> str:
        """The item's turn and the generation prompt, for an audio clip or a text in a text mode."""
        template = self.suffixes[mode]
        if mode == "audio":
            return template
        body = prompts.user_content(mode, text=text, instruction=instruction)[0]["text"]
        body = body[: -len(prompts.INSTRUCTIONS[mode]) - 1]
        return template.replace(_BODY, body)


def _demo_turns(demos: DemoSet) -> list[dict[str, Any]]:
    turns: list[dict[str, Any]] = []
    for demo in demos.demos:
        mode = "audio" if demo.is_audio else "caption"
        turns.append({"role": "user", "content": prompts.user_content(mode, text=demo.text)})
        turns.append({"role": "assistant", "content": demo.word})
    return turns


def _item_content(mode: str) -> list[dict[str, Any]]:
    if mode == "audio":
        return prompts.user_content("audio")
    return [{"type": "text", "text": f"{_BODY}\n{prompts.INSTRUCTIONS[mode]}"}]
