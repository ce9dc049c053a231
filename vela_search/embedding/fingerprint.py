"""The embedder fingerprint: what must match for two sets of vectors to be comparable.

Compatibility rules (docs/format.md, "Embedder fingerprint"):

- Every field must match for vectors to be *stored* together in one index.
- ``dtype`` (the precision the model computed in) is the one field a *query* may differ in: a bf16 GPU
  index can be queried by an fp32 CPU embedder of the same model, because the query vector is compared,
  never stored, and the precision changes the vectors only by rounding noise.
- An index written before the dtype was recorded has no ``dtype`` key. It stays usable as it is: queries
  and writes of any dtype are accepted, and writes keep its fingerprint without ``dtype``
  (:func:`fingerprint_for_index`). ``vela-search index PATH --rebuild`` records the dtype.
"""

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
        dtype: Precision the model computed the vectors in: ``fp32``, ``bf16`` or ``fp16`` (the compute
            dtype of a 4/8-bit model). None only in fingerprints read from old indexes.
    """

    model: str
    weights: str
    adapter: str | None
    prompt_version: str
    demos: str
    dim: int
    quantization: str | None
    dtype: str | None = None

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


# Fields a query embedder may differ in from the index it searches (see the module docstring).
QUERY_TOLERATED_FIELDS = frozenset({"dtype"})


def fingerprint_for_index(mine: dict[str, Any], stored: dict[str, Any] | None) -> dict[str, Any]:
    """The fingerprint a writer records into an index whose fingerprint is ``stored`` (None: a new index).

    An index from before the dtype was recorded keeps its fingerprint without ``dtype``, so that it stays
    writable; every other index records (and must match) the writer's dtype.
    """
    if stored is not None and "dtype" not in stored:
        return {k: v for k, v in mine.items() if k != "dtype"}
    return dict(mine)


def dtype_name(dtype: Any) -> str:
    """``torch.float32`` -> ``fp32``, ``torch.bfloat16`` -> ``bf16``, ``torch.float16`` -> ``fp16``."""
    text = str(dtype).removeprefix("torch.")
    return {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}.get(text, text)
