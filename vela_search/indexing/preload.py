"""Before any model loads: does the embedder a command is about to load fit the index it works on?

An index's manifest records the embedder fingerprint (model reference, adapter and demo digests,
quantization, the dtype its vectors were computed in). Everything a user can ask for on the command line
(``--model``, ``--adapter``, ``--demos``, ``--quantize``, ``--dtype``) can be compared with it from files
alone: a model name, an adapter's digest, a demo file's digest. :func:`check_before_load` does that for
``index``, ``query`` and ``serve``, so that a mismatch is refused in a second instead of after a
tens-of-seconds, many-gigabyte load. What only the loaded weights can tell (a local checkpoint's weights
digest) is still checked after the load, as before.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any

from vela_search.errors import DemoFileError, FingerprintMismatchError

__all__ = ["check_before_load", "require_index", "requested_dtype"]

_LABELS = {
    "model": "model",
    "adapter": "adapter",
    "demos": "demos",
    "quantization": "quantization",
    "dtype": "dtype",
}


def requested_dtype(dtype: str | None, device: str | None) -> str | None:
    """The dtype name (fp32, bf16, fp16) a load with these flags computes in; None when it cannot be told
    without probing the machine (``auto`` on ``--device auto``)."""
    if dtype is not None and dtype != "auto":
        return dtype
    if device is None or device == "auto":
        return None
    return "bf16" if device.startswith("cuda") else "fp32"


def _model_matches(requested: str, ref: str) -> bool:
    """Whether a ``--model`` value can name the model of a fingerprint reference (weights checked later)."""
    if requested == "tiny" or ref.startswith("tiny@"):
        return requested == "tiny" and ref.startswith("tiny@")
    if ref.startswith("shape:") or requested.startswith("shape:"):
        return requested == ref
    requested_dir = Path(requested).expanduser().is_dir()
    recorded_dir = Path(ref).is_absolute() or Path(ref).is_dir()
    if requested_dir or recorded_dir:
        # Two local checkpoints may hold the same weights: the digest, after the load, decides.
        return requested_dir and recorded_dir
    return requested == ref.rsplit("@", 1)[0]


def _demos_digest(demos: str) -> str:
    from vela_search.embedding.demos import DemoSet

    demo_set = DemoSet.load(demos)
    return demo_set.digest if len(demo_set) else "none"


def _differences(fingerprint: dict[str, Any], spec: dict[str, Any], dtype: str | None) -> dict[str, str]:
    """The fields of ``spec`` (model, adapter, demos, quantize) and ``dtype`` that contradict the record."""
    diffs: dict[str, str] = {}
    ref = str(fingerprint.get("model") or "")
    if spec.get("model") and ref and not _model_matches(str(spec["model"]), ref):
        diffs["model"] = str(spec["model"])
    if "adapter" in spec and "adapter" in fingerprint:
        adapter = spec.get("adapter")
        if adapter is None:
            digest = None
        elif Path(adapter).expanduser().is_dir():
            from vela_search.embedding.backbone import adapter_digest

            digest = adapter_digest(Path(adapter).expanduser().resolve())
        else:
            digest = fingerprint.get("adapter")  # missing: a load reports it (a rescan may need none)
        if digest != fingerprint.get("adapter"):
            diffs["adapter"] = "none" if adapter is None else str(adapter)
    if spec.get("demos") is not None and "demos" in fingerprint:
        with contextlib.suppress(DemoFileError):  # a missing file: a load reports it
            if _demos_digest(str(spec["demos"])) != fingerprint["demos"]:
                diffs["demos"] = str(spec["demos"])
    if "quantize" in spec and "quantization" in fingerprint:
        quantize = None if spec["quantize"] in (None, "none") else spec["quantize"]
        if quantize != fingerprint["quantization"]:
            diffs["quantization"] = str(quantize or "none")
    if dtype is not None and fingerprint.get("dtype") not in (None, dtype):
        diffs["dtype"] = dtype
    return diffs


def check_before_load(
    index_dir: str | os.PathLike[str],
    spec: dict[str, Any],
    *,
    dtype: str | None = None,
    writing: bool,
) -> None:
    """Refuse, before anything loads, an embedder that cannot fit the index at ``index_dir``.

    Args:
        index_dir: the index (nothing is checked when it has no manifest yet).
        spec: what the command is about to load: ``model``, ``adapter``, ``demos``, ``quantize`` (a key
            left out is not compared; ``adapter: None`` means no adapter).
        dtype: the dtype name the load computes in (see :func:`requested_dtype`); None: not compared.
            Queries may differ in dtype (the index's vectors are only compared with theirs).
        writing: the command would add vectors (``index``); else it queries.

    Raises:
        FingerprintMismatchError: naming each differing field with both values, and the fix. (A named
            adapter directory or demo file that is missing is not compared: the load reports it.)
    """
    from vela_search.store import manifest
    from vela_search.store.layout import MANIFEST

    data = manifest.read(Path(index_dir) / MANIFEST)
    if data is None:
        return
    fingerprint = data["fingerprint"]
    diffs = _differences(fingerprint, spec, dtype if writing else None)
    if not diffs:
        return
    listed = "; ".join(
        f"{_LABELS[name]} (index: {_short(fingerprint.get(name))}, asked: {value})"
        for name, value in diffs.items()
    )
    if writing:
        fix = (
            "Leave out --model/--adapter/--demos/--quantize/--dtype to use the index's own embedder, or "
            "re-embed the collection with the new one: `vela-search index --rebuild` with the new flags "
            "(same --index); the current index keeps answering queries until the rebuild completes."
        )
    else:
        fix = (
            "Its scores would be meaningless. Leave out --model/--adapter/--demos to query with the index's "
            "own embedder, or re-embed the collection with the new one: `vela-search index --rebuild` with "
            "the new flags."
        )
    raise FingerprintMismatchError(
        f"index {index_dir} was built with a different embedder: {listed}. No model was loaded. {fix}"
    )


def _short(value: Any) -> str:
    text = "none" if value is None else str(value)
    return text[:12] + "…" if len(text) == 64 and all(c in "0123456789abcdef" for c in text) else text


def require_index(index_dir: str | os.PathLike[str]) -> None:
    """Refuse a missing or unreadable index before anything loads (``serve`` opens it only after).

    Raises:
        IndexNotFoundError: no index there, naming how to build one.
        IndexFormatError: its manifest is damaged or too new.
    """
    from vela_search.store import AudioIndex

    with AudioIndex.open(index_dir, shards=False):
        pass
