"""The embedder fingerprint: what must match for two sets of vectors to be comparable."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any


@dataclass(frozen=True)
class Fingerprint:
    """Identity of an embedder. Two embedders are compatible iff their fingerprints are equal.

    Attributes:
        model: ``tiny@recipe-N``, ``<hub id>@<revision>`` or a local checkpoint directory.
        weights: Digest of the weights (local index/file digest, or the Hub commit).
        adapter: Digest of the LoRA adapter, or None.
        prompt_version: :data:`vela_search.embedding.prompts.PROMPT_VERSION`.
        demos: Digest of the demonstration set (``none`` when there are no demos).
        dim: Embedding dimension (the LLM's hidden size).
        quantization: ``4bit``, ``8bit`` or None.
    """

    model: str
    weights: str
    adapter: str | None
    prompt_version: str
    demos: str
    dim: int
    quantization: str | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Fingerprint:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})

    def differences(self, other: Fingerprint | dict[str, Any]) -> dict[str, tuple[Any, Any]]:
        """Fields that differ, as ``{name: (self's value, other's value)}``."""
        theirs = other.to_dict() if isinstance(other, Fingerprint) else dict(other)
        mine = self.to_dict()
        return {
            k: (mine.get(k), theirs.get(k))
            for k in sorted(mine.keys() | theirs.keys())
            if mine.get(k) != theirs.get(k)
        }

    def compatible(self, other: Fingerprint | dict[str, Any]) -> bool:
        return not self.differences(other)

    def describe_differences(
        self, other: Fingerprint | dict[str, Any], *, mine: str = "this", theirs: str = "that"
    ) -> str:
        """Human-readable list of differing fields, e.g. ``adapter: this=None, index=3fa2...``."""
        return "; ".join(
            f"{name}: {mine}={_short(a)}, {theirs}={_short(b)}"
            for name, (a, b) in self.differences(other).items()
        )


def _short(value: Any) -> str:
    text = str(value)
    return text[:12] + "…" if len(text) == 64 and all(c in "0123456789abcdef" for c in text) else text
