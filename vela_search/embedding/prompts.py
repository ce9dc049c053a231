"""The Vela prompts: one wording per input mode, in one place, with a version string.

Every input becomes one user turn of the backbone's chat template followed by the generation prompt; the
embedding is read at the last token of that prompt. Changing any wording here changes what the vectors mean,
so it must change :data:`PROMPT_VERSION` (part of the embedder fingerprint).
"""

from __future__ import annotations

from typing import Any, Literal

PROMPT_VERSION = "vela-prompts-1"

Mode = Literal["audio", "caption", "long", "instruction"]
MODES: tuple[str, ...] = ("audio", "caption", "long", "instruction")

INSTRUCTIONS: dict[str, str] = {
    "audio": "Summarize above audio in one word:",
    "caption": "Summarize above sentence in one word:",
    "long": "Summarize above passage in one word:",
    "instruction": "Summarize above request in one word:",
}

# Stands in for the waveform in a rendered prompt; the chat template turns it into
# ``Audio N: <|audio_bos|><|AUDIO|><|audio_eos|>`` and the processor expands <|AUDIO|> per clip.
AUDIO_SLOT = "<audio>"


def check_mode(mode: str) -> str:
    """Return ``mode`` if it is a known prompt mode, else raise ``ValueError`` listing the modes."""
    if mode not in INSTRUCTIONS:
        raise ValueError(f"unknown prompt mode {mode!r}; expected one of {', '.join(MODES)}")
    return mode


def user_content(mode: str, text: str | None = None, instruction: str | None = None) -> list[dict[str, Any]]:
    """The content of the user turn for one input, as chat-template parts.

    Args:
        mode: ``audio``, ``caption``, ``long`` or ``instruction``.
        text: The text to embed (not used for ``audio``).
        instruction: The request preceding ``text`` in ``instruction`` mode.

    Returns:
        Chat-template content parts: ``[{"type": "audio", ...}, {"type": "text", ...}]`` for audio,
        ``[{"type": "text", ...}]`` for the text modes.
    """
    check_mode(mode)
    if mode == "audio":
        return [
            {"type": "audio", "audio": AUDIO_SLOT},
            {"type": "text", "text": INSTRUCTIONS["audio"]},
        ]
    if text is None:
        raise ValueError(f"mode {mode!r} needs a text")
    if mode == "instruction":
        if not instruction or not instruction.strip():
            raise ValueError("instruction mode needs a non-empty instruction")
        body = f"{instruction.strip()}\n{text.strip()}"
    else:
        body = text.strip()
    return [{"type": "text", "text": f"{body}\n{INSTRUCTIONS[mode]}"}]
