"""In-context demonstrations: the earlier chat turns that every Vela input is embedded behind.

A demo set is a JSONL file, one demonstration per line::

    {"text": "A dog barks while cars pass", "word": "dog"}
    {"audio": "clips/kettle.wav", "word": "kettle"}

Audio paths are relative to the JSONL file. Each demo becomes a user turn (its content plus the same
"Summarize ... in one word:" instruction as real inputs) and an assistant turn holding the word. The set's
digest (content and audio bytes) is part of the embedder fingerprint.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vela_search.errors import DemoFileError

# The project's own text-only default set (see data/demos/README.md).
DEFAULT_DEMOS_PATH = Path(__file__).resolve().parents[2] / "data" / "demos" / "default.jsonl"


@dataclass(frozen=True)
class Demo:
    """One demonstration: a caption or an audio clip, and the one word it summarises to.

    An audio demo names its file (``audio``: its bytes enter the digest); ``wave`` may carry the file's
    decoded 16 kHz samples, which are then used instead of decoding the file (e.g. where no audio decoder
    is installed).
    """

    word: str
    text: str | None = None
    audio: Path | None = None
    wave: Any = field(default=None, compare=False, repr=False)  # np.ndarray | None

    @property
    def is_audio(self) -> bool:
        return self.audio is not None


@dataclass(frozen=True)
class DemoSet:
    """An ordered, validated set of demonstrations."""

    demos: tuple[Demo, ...]
    source: str

    @classmethod
    def none(cls) -> DemoSet:
        """The empty set: inputs are embedded with the prompt alone."""
        return cls(demos=(), source="none")

    @classmethod
    def default(cls) -> DemoSet:
        """The project's shipped text-only set, ``data/demos/default.jsonl``."""
        if not DEFAULT_DEMOS_PATH.exists():
            raise DemoFileError(
                f"the default demo set {DEFAULT_DEMOS_PATH} is missing; install vela-search from a source "
                "checkout (pip install -e .) or pass --demos FILE / --demos none"
            )
        loaded = cls.from_jsonl(DEFAULT_DEMOS_PATH)
        return cls(demos=loaded.demos, source="default")

    @classmethod
    def load(cls, spec: str | Path | DemoSet | None) -> DemoSet:
        """Resolve a ``--demos`` value: ``None``/``"default"``, ``"none"``, a JSONL path, or a DemoSet."""
        if isinstance(spec, DemoSet):
            return spec
        if spec is None or str(spec) == "default":
            return cls.default()
        if str(spec) == "none":
            return cls.none()
        return cls.from_jsonl(spec)

    @classmethod
    def from_jsonl(cls, path: str | Path) -> DemoSet:
        """Read and validate a demo JSONL file.

        Raises:
            DemoFileError: The file is missing, a line is not a JSON object, a line has neither ``text``
                nor ``audio`` (or both), the word is empty or not one word, or an audio file is missing.
                The message names the file and the line number.
        """
        path = Path(path)
        if not path.is_file():
            raise DemoFileError(f"demo file {path} does not exist")
        demos: list[Demo] = []
        for number, line in enumerate(path.read_text(encoding="utf-8-sig").splitlines(), start=1):
            if not line.strip():
                continue
            demos.append(_parse_line(line, path, number))
        if not demos:
            raise DemoFileError(f"demo file {path} holds no demonstrations (use --demos none for none)")
        return cls(demos=tuple(demos), source=str(path))

    def __len__(self) -> int:
        return len(self.demos)

    @property
    def n_audio(self) -> int:
        return sum(d.is_audio for d in self.demos)

    @property
    def n_text(self) -> int:
        return len(self.demos) - self.n_audio

    @property
    def digest(self) -> str:
        """sha256 over the demos in order: texts, words and the bytes of audio files."""
        h = hashlib.sha256()
        for demo in self.demos:
            if demo.audio is not None:
                h.update(b"audio\0" + hashlib.sha256(demo.audio.read_bytes()).digest())
            else:
                h.update(b"text\0" + (demo.text or "").encode())
            h.update(b"\0word\0" + demo.word.encode() + b"\n")
        return h.hexdigest()


def _parse_line(line: str, path: Path, number: int) -> Demo:
    where = f"{path}, line {number}"
    try:
        record = json.loads(line)
    except json.JSONDecodeError as exc:
        raise DemoFileError(f"{where}: not valid JSON ({exc.msg})") from None
    if not isinstance(record, dict):
        raise DemoFileError(f"{where}: expected a JSON object with 'word' and 'text' or 'audio'")
    word = record.get("word")
    if not isinstance(word, str) or not word.strip():
        raise DemoFileError(f"{where}: 'word' is missing or empty")
    if len(word.split()) != 1:
        raise DemoFileError(f"{where}: 'word' must be one word, got {word!r}")
    has_text, has_audio = "text" in record, "audio" in record
    if has_text == has_audio:
        raise DemoFileError(f"{where}: give exactly one of 'text' or 'audio'")
    if has_text:
        text = record["text"]
        if not isinstance(text, str) or not text.strip():
            raise DemoFileError(f"{where}: 'text' is empty")
        return Demo(word=word.strip(), text=text.strip())
    audio = record["audio"]
    if not isinstance(audio, str) or not audio.strip():
        raise DemoFileError(f"{where}: 'audio' is empty")
    audio_path = (path.parent / audio).resolve()
    if not audio_path.is_file():
        raise DemoFileError(f"{where}: audio file {audio_path} does not exist")
    return Demo(word=word.strip(), audio=audio_path)
