"""Which embedder built an index: a small record beside the manifest, so reruns need no model flags.

The manifest holds the embedder *fingerprint* (digests that decide whether vectors are comparable); this
module keeps what is needed to *load* that embedder again (model id or directory, adapter directory, demo
set, quantization), and the room a query has behind its prefix, in ``embedder.json`` in the index
directory, one entry per fingerprint. Entries are looked up by the fingerprint of the generation in use, so
a crashed rebuild that recorded a new embedder never changes which embedder the current generation is
reopened with.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from vela_search.embedding.embedder import VelaEmbedder

SPEC_FILE = "embedder.json"
SPEC_FORMAT = "vela-search-embedders"
_MAX_ENTRIES = 16


@dataclass(frozen=True)
class EmbedderSpec:
    """How to load an embedder again: the arguments of ``VelaEmbedder.from_pretrained``.

    Attributes:
        model: ``tiny``, a Hub id, or an absolute checkpoint directory.
        revision: the Hub revision (commit) the weights came from, for a Hub id.
        adapter: absolute LoRA adapter directory, or None.
        demos: ``default``, ``none`` or an absolute JSONL path (or the name of an in-memory demo set).
        quantize: ``4bit``, ``8bit`` or None.
    """

    model: str
    revision: str | None = None
    adapter: str | None = None
    demos: str = "default"
    quantize: str | None = None

    def describe(self) -> str:
        """One line naming what loading this spec runs: model (and revision), adapter, quantization."""
        return describe_load(asdict(self))

    @classmethod
    def from_embedder(cls, embedder: VelaEmbedder) -> EmbedderSpec:
        """The spec of a loaded embedder."""
        bb = embedder.backbone
        ref = str(bb.model_ref)
        revision = None
        if bb.is_tiny:
            model = "tiny"
        elif ref.startswith("shape:") or Path(ref).is_dir():
            model = ref
        else:
            model, _, revision = ref.partition("@")
            revision = revision or None
        demos = str(embedder.demos_spec)
        if demos not in ("default", "none") and Path(demos).is_file():
            demos = str(Path(demos).resolve())
        return cls(
            model=model,
            revision=revision,
            adapter=str(bb.adapter_path) if bb.adapter_path is not None else None,
            demos=demos,
            quantize=bb.quantization,
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EmbedderSpec:
        return cls(
            model=str(data["model"]),
            revision=data.get("revision"),
            adapter=data.get("adapter"),
            demos=str(data.get("demos") or "default"),
            quantize=data.get("quantize"),
        )


@dataclass(frozen=True)
class QueryRoom:
    """What a query must fit into: the model's positions less those its shared prefix takes.

    Recorded beside the spec so that ``vela-search query`` can refuse a text that cannot fit before it
    spends minutes loading a 7B model to find out.
    """

    prefix_tokens: int
    max_positions: int

    @property
    def tokens(self) -> int:
        """Positions left for a query after the prefix."""
        return self.max_positions - self.prefix_tokens

    @classmethod
    def from_embedder(cls, embedder: VelaEmbedder) -> QueryRoom:
        """The room of a loaded embedder (renders its prefix if it has not yet)."""
        return cls(prefix_tokens=int(embedder.prefix_length), max_positions=int(embedder.max_positions))


def _read(index_dir: Path) -> list[dict[str, Any]]:
    try:
        data = json.loads((index_dir / SPEC_FILE).read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError, UnicodeDecodeError):
        return []
    if not isinstance(data, dict) or data.get("format") != SPEC_FORMAT:
        return []
    entries = data.get("embedders")
    return [e for e in entries if isinstance(e, dict)] if isinstance(entries, list) else []


def _same(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


def describe_load(spec: dict[str, Any]) -> str:
    """One line naming the model (and revision), adapter and quantization a spec dict loads.

    Shown before every load that an index's record decides, because the record can name any model: the
    user sees whose weights run (always safetensors, never remote code; see `embedding.backbone`).
    """
    model = spec.get("model")
    if not model:
        from vela_search.embedding.backbone import DEFAULT_MODEL

        # With an adapter, from_pretrained takes the base model the adapter records.
        model = (
            f"(the base model adapter {spec['adapter']} records)" if spec.get("adapter") else DEFAULT_MODEL
        )
    text = f"model {model}"
    if spec.get("revision"):
        text += f" (revision {str(spec['revision'])[:12]})"
    text += f", adapter {spec['adapter']}" if spec.get("adapter") else ", no adapter"
    if spec.get("quantize"):
        text += f", {spec['quantize']}"
    return text


def record_spec(
    index_dir: str | os.PathLike[str],
    fingerprint: dict[str, Any],
    spec: EmbedderSpec,
    room: QueryRoom | None = None,
) -> None:
    """Remember ``spec`` (and the query ``room``, if given) for the embedder with ``fingerprint`` (atomic).

    Call it while holding the index's writer lock, so that two writers never race on the file.
    """
    index_dir = Path(index_dir)
    fingerprint = json.loads(json.dumps(fingerprint, sort_keys=True))
    entries = [e for e in _read(index_dir) if not _same(e.get("fingerprint", {}), fingerprint)]
    entry: dict[str, Any] = {
        "fingerprint": fingerprint,
        "spec": spec.to_dict(),
        "recorded_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    if room is not None:
        entry["query_room"] = asdict(room)
    entries.append(entry)
    payload = {"format": SPEC_FORMAT, "version": 1, "embedders": entries[-_MAX_ENTRIES:]}
    # Written like the index's own files (mode from the umask, as for every other file), so that whoever
    # can read the index can also query it.
    from vela_search.store import fsio
    from vela_search.store.integrity import device_errors

    with device_errors(index_dir, doing=f"recording the embedder in {SPEC_FILE}", generation=None):
        with fsio.atomic_file(index_dir / SPEC_FILE) as fh:
            fh.write((json.dumps(payload, indent=2) + "\n").encode("utf-8"))
        fsio.fsync_dir(index_dir)


def recorded_spec(index_dir: str | os.PathLike[str], fingerprint: dict[str, Any]) -> EmbedderSpec | None:
    """The spec recorded for ``fingerprint``, or None."""
    fingerprint = json.loads(json.dumps(fingerprint, sort_keys=True))
    for entry in reversed(_read(Path(index_dir))):
        if _same(entry.get("fingerprint", {}), fingerprint) and isinstance(entry.get("spec"), dict):
            with contextlib.suppress(KeyError, TypeError, ValueError):
                return EmbedderSpec.from_dict(entry["spec"])
    return None


def recorded_room(index_dir: str | os.PathLike[str], fingerprint: dict[str, Any]) -> QueryRoom | None:
    """The query room recorded for ``fingerprint``, or None (indexes written before it was recorded)."""
    fingerprint = json.loads(json.dumps(fingerprint, sort_keys=True))
    for entry in reversed(_read(Path(index_dir))):
        if _same(entry.get("fingerprint", {}), fingerprint):
            room = entry.get("query_room")
            with contextlib.suppress(KeyError, TypeError, ValueError):
                return QueryRoom(int(room["prefix_tokens"]), int(room["max_positions"]))
            return None
    return None


def current_spec(index_dir: str | os.PathLike[str], *, staged: bool = False) -> EmbedderSpec | None:
    """The spec of the index's current generation (or of its unfinished staged rebuild), or None."""
    from vela_search.store.layout import MANIFEST, STAGING_MANIFEST
    from vela_search.store.manifest import read

    data = read(Path(index_dir) / (STAGING_MANIFEST if staged else MANIFEST))
    if data is None:
        return None
    return recorded_spec(index_dir, data["fingerprint"])


def choose_spec(
    index_dir: str | os.PathLike[str],
    *,
    model: str | None,
    adapter: str | None,
    demos: str | None,
    quantize: str | None,
    rebuild: bool = False,
) -> tuple[EmbedderSpec | None, dict[str, Any]]:
    """The ``from_pretrained`` arguments for indexing into ``index_dir`` with the given flags.

    With no model, adapter or demos flag, an existing index is reopened with the embedder it records
    (with ``rebuild``, the one of an unfinished staged rebuild if there is one). A given flag replaces the
    recorded value; ``--adapter`` alone takes the base model and demos the adapter records, and
    ``--model`` alone drops the recorded adapter (an adapter belongs to its base model).

    Returns:
        (the recorded spec that was used or None, keyword arguments for ``from_pretrained``: model,
        revision, adapter, demos, quantize).
    """
    recorded = None
    if rebuild:
        recorded = current_spec(index_dir, staged=True)
    if recorded is None:
        recorded = current_spec(index_dir)
    if recorded is None:
        return None, {
            "model": model,
            "revision": None,
            "adapter": adapter,
            "demos": demos,
            "quantize": quantize,
        }
    if model is None and adapter is None and demos is None:
        return recorded, {
            "model": recorded.model,
            "revision": recorded.revision,
            "adapter": recorded.adapter,
            "demos": recorded.demos,
            "quantize": quantize if quantize is not None else recorded.quantize,
        }
    use_model = model if model is not None else (None if adapter is not None else recorded.model)
    return recorded, {
        "model": use_model,
        "revision": recorded.revision if use_model == recorded.model else None,
        "adapter": adapter if adapter is not None else (recorded.adapter if model is None else None),
        "demos": demos if demos is not None else (None if adapter is not None else recorded.demos),
        "quantize": quantize if quantize is not None else recorded.quantize,
    }
