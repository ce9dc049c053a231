"""The embedder an index was built with: how to load it, and refusing one whose vectors are not comparable."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from vela_search.errors import FingerprintMismatchError, ModelLoadError

if TYPE_CHECKING:
    from vela_search.embedding.embedder import VelaEmbedder
    from vela_search.indexing.spec import EmbedderSpec
    from vela_search.store import AudioIndex

__all__ = ["check_compatible", "embedder_spec", "load_index_embedder", "notice_for_model"]

_FIELD_LABELS = {
    "model": "model",
    "weights": "model weights",
    "adapter": "adapter",
    "prompt_version": "prompt version",
    "demos": "demos",
    "dim": "dimension",
    "quantization": "quantization",
}


def embedder_spec(
    index: AudioIndex,
    *,
    model: str | None = None,
    adapter: str | Path | None = None,
    demos: str | Path | None = None,
) -> EmbedderSpec:
    """Work out how to load the embedder an index was built with; given arguments override it.

    ``vela-search index`` records how it loaded the embedder (``embedder.json``, see
    :mod:`vela_search.indexing.spec`). Without that record the fingerprint still names the model (a Hub id
    with its commit, a local directory, or the tiny model) and the quantization, and the shipped default
    demo set and "none" are recognised by digest; an adapter or a custom demo file must then be given.

    Raises:
        ModelLoadError: the index needs an adapter or demo file it does not record, and none was given.
    """
    from vela_search.indexing.spec import EmbedderSpec, recorded_spec

    fp = dict(index.fingerprint)
    recorded = recorded_spec(index.root, fp)
    revision = None
    if model is None:
        if recorded is not None:
            model, revision = recorded.model, recorded.revision
        else:
            model, revision = _model_from_ref(str(fp.get("model") or ""))
        if model is None:
            raise ModelLoadError(f"index {index.root} does not record its model; pass --model")
    if adapter is None and fp.get("adapter"):
        adapter = recorded.adapter if recorded is not None else None
        if adapter is None or not Path(adapter).is_dir():
            where = f" (recorded as {adapter}, which no longer exists)" if adapter else ""
            raise ModelLoadError(
                f"index {index.root} was built with a LoRA adapter (digest {str(fp['adapter'])[:12]}…)"
                f"{where}; pass the same adapter directory with --adapter DIR"
            )
    if demos is None:
        demos = _demos_from_digest(fp.get("demos"))
        if demos is None:
            demos = recorded.demos if recorded is not None else None
            if demos is None or not Path(demos).is_file():
                where = f" (recorded as {demos!r}, which is not a file)" if demos else ""
                raise ModelLoadError(
                    f"index {index.root} was built with a custom demo set (digest "
                    f"{str(fp.get('demos'))[:12]}…){where}; pass the same file with --demos FILE"
                )
    return EmbedderSpec(
        model=str(model),
        revision=revision,
        adapter=None if adapter is None else str(adapter),
        demos=str(demos),
        quantize=fp.get("quantization"),
    )


def load_index_embedder(
    index: AudioIndex,
    *,
    model: str | None = None,
    adapter: str | Path | None = None,
    demos: str | Path | None = None,
    device: str = "auto",
    dtype: str = "auto",
    batch_tokens: int | None = None,
) -> VelaEmbedder:
    """Load the embedder of :func:`embedder_spec` (the index's own, unless overridden).

    Raises:
        ModelLoadError: the model, adapter or demos cannot be found or loaded.
    """
    from vela_search.embedding.embedder import VelaEmbedder

    spec = embedder_spec(index, model=model, adapter=adapter, demos=demos)
    _precheck(index, spec)
    return VelaEmbedder.from_pretrained(
        spec.model,
        adapter=spec.adapter,
        demos=spec.demos,
        device=device,
        dtype=dtype,
        quantize=spec.quantize,
        revision=spec.revision,
        batch_tokens=batch_tokens,
    )


def _precheck(index: AudioIndex, spec: EmbedderSpec) -> None:
    """Compare the demos and adapter digests before the (slow) model load; the rest is checked after."""
    from vela_search.embedding.backbone import adapter_digest
    from vela_search.embedding.demos import DemoSet

    fp = index.fingerprint
    demo_set = DemoSet.load(spec.demos)
    diffs = {"demos": demo_set.digest if len(demo_set) else "none"}
    if spec.adapter is not None and Path(spec.adapter).expanduser().is_dir():
        diffs["adapter"] = adapter_digest(Path(spec.adapter).expanduser().resolve())
    elif spec.adapter is None:
        diffs["adapter"] = None
    differing = {name: value for name, value in diffs.items() if name in fp and fp[name] != value}
    if differing:
        raise _mismatch_error(index, differing)


def notice_for_model(ref: str) -> str | None:
    """The notice of the embedder a fingerprint's model reference names (random-weight models have one)."""
    from vela_search.embedding.shapes import SHAPE_NOTICE, SHAPE_PREFIX
    from vela_search.embedding.tiny import TINY_NOTICE

    if ref.startswith("tiny@"):
        return TINY_NOTICE
    if ref.startswith(SHAPE_PREFIX):
        return SHAPE_NOTICE
    return None


def _model_from_ref(ref: str) -> tuple[str | None, str | None]:
    """A fingerprint's model reference as (model, revision) for ``from_pretrained``."""
    if not ref:
        return None, None
    if ref.startswith("tiny@recipe-"):
        return "tiny", None
    if ref.startswith("shape:") or Path(ref).is_dir():
        return ref, None
    if "@" in ref:
        name, revision = ref.rsplit("@", 1)
        return name, revision
    return ref, None


def _demos_from_digest(digest: Any) -> str | None:
    if digest == "none":
        return "none"
    from vela_search.embedding.demos import DemoSet
    from vela_search.errors import DemoFileError

    try:
        if digest == DemoSet.default().digest:
            return "default"
    except DemoFileError:
        pass
    return None


def check_compatible(index: AudioIndex, embedder: VelaEmbedder) -> None:
    """Refuse an embedder whose vectors are not comparable with the index's.

    Raises:
        FingerprintMismatchError: naming each differing field (model, adapter, prompt version, demos,
            ...) with both values, and the fix.
    """
    from vela_search.embedding.fingerprint import QUERY_TOLERATED_FIELDS
    from vela_search.store.manifest import normalize_fingerprint

    mine = normalize_fingerprint(embedder.fingerprint.to_dict())
    # A query may use another precision than the index (fp32 CPU against a bf16 GPU index): the vectors
    # differ only by rounding. Everything else must match.
    differing = {
        name: value
        for name, value in mine.items()
        if name not in QUERY_TOLERATED_FIELDS and index.fingerprint.get(name) != value
    }
    if not differing and int(index.dim) != int(embedder.dim):
        differing["dim"] = embedder.dim
    if differing:
        raise _mismatch_error(index, differing)


def _mismatch_error(index: AudioIndex, differing: dict[str, Any]) -> FingerprintMismatchError:
    stored = index.fingerprint
    diffs = "; ".join(
        f"{_FIELD_LABELS.get(name, name)} (index: {_short(stored.get(name))}, query: {_short(value)})"
        for name, value in differing.items()
    )
    return FingerprintMismatchError(
        f"index {index.root} was built with a different embedder than the one loaded for this query: "
        f"{diffs}. Its scores would be meaningless. Query with the index's own embedder (leave out "
        "--model/--adapter/--demos to load the one the index records, or pass the values used for "
        "`vela-search index`), or re-embed the collection with the new one: `vela-search index PATH "
        "--rebuild` with the new --model/--adapter/--demos."
    )


def _short(value: Any) -> str:
    text = "none" if value is None else str(value)
    return text[:12] + "…" if len(text) == 64 and all(c in "0123456789abcdef" for c in text) else text
