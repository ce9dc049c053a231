"""Loading the Qwen2-Audio backbone: Hub id or local directory, device, dtype, 4/8-bit, LoRA adapter.

Version-specific transformers/peft calls live here and in :mod:`vela_search.embedding.attention`, nowhere
else, so a transformers upgrade has one place to look.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from vela_search.embedding.tiny import TINY_MODEL_ID, TINY_RECIPE_VERSION, ensure_tiny_checkpoint
from vela_search.errors import ModelLoadError

# bitsandbytes (imported by peft) warns on every CPU start that an optional kernels package is missing; the
# fallback it uses is correct, so the warning would only alarm users.
logging.getLogger("bitsandbytes").setLevel(logging.ERROR)
logger = logging.getLogger(__name__)

DEFAULT_MODEL = "Qwen/Qwen2-Audio-7B-Instruct"
Quantization = Literal["4bit", "8bit"]
DTYPES = ("auto", "bf16", "fp16", "fp32")

# LoRA goes on the language model's projections only; naming bare module names would also hit the
# audio tower, which the method keeps frozen.
LLM_LORA_TARGETS = r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)"


@dataclass
class Backbone:
    """A loaded backbone and what identifies it."""

    model: Any  # Qwen2AudioForConditionalGeneration (LoRA layers injected in place when an adapter is set)
    processor: Any  # Qwen2AudioProcessor
    model_ref: str  # "tiny@recipe-N", "<hub id>@<revision>", or a local directory
    weights_digest: str
    adapter_path: Path | None
    adapter_digest: str | None
    quantization: str | None
    device: Any  # torch.device
    dtype: Any  # torch.dtype
    is_tiny: bool

    @property
    def core(self) -> Any:
        """The ``Qwen2AudioModel`` (audio tower, projector, language model; no 156k-vocab lm_head)."""
        return self.model.model

    @property
    def language_model(self) -> Any:
        return self.core.language_model

    @property
    def hidden_size(self) -> int:
        return int(self.model.config.text_config.hidden_size)

    @property
    def max_positions(self) -> int:
        return int(self.model.config.text_config.max_position_embeddings)


def resolve_device(device: str = "auto") -> Any:
    """``auto``: the first CUDA device if there is one, else the CPU; cpu, cuda, cuda:N as given."""
    import torch

    if device == "auto":
        return torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as exc:  # torch's "Expected one of cpu, cuda, ... device type"
        raise ModelLoadError(f"unsupported device {device!r}; use auto, cpu, cuda or cuda:N") from exc
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ModelLoadError(f"device {device!r} requested but CUDA is not available on this machine")
    if resolved.type not in ("cpu", "cuda"):
        raise ModelLoadError(f"unsupported device {device!r}; use auto, cpu, cuda or cuda:N")
    return resolved


def resolve_dtype(dtype: str, device: Any) -> Any:
    """``auto`` -> bf16 on CUDA, fp32 on the CPU (CPU bf16 matmuls are slow and less exact)."""
    import torch

    table = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
    if dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if dtype not in table:
        raise ModelLoadError(f"unsupported dtype {dtype!r}; use one of {', '.join(DTYPES)}")
    return table[dtype]


def weights_digest(directory: Path) -> str:
    """A digest of a local checkpoint's weights.

    Sharded checkpoints are identified by their index file (tensor -> shard map) plus shard sizes; a single
    small weights file is hashed whole; a single large one by its safetensors header and size.
    """
    h = hashlib.sha256()
    indexes = sorted(directory.glob("*.safetensors.index.json")) + sorted(directory.glob("*.bin.index.json"))
    if indexes:
        for index in indexes:
            h.update(index.read_bytes())
            for shard in sorted(set(json.loads(index.read_text())["weight_map"].values())):
                h.update(f"{shard}:{(directory / shard).stat().st_size}".encode())
        return h.hexdigest()
    files = sorted(directory.glob("*.safetensors")) or sorted(directory.glob("*.bin"))
    if not files:
        raise ModelLoadError(f"no weights (*.safetensors or *.bin) in {directory}")
    for f in files:
        size = f.stat().st_size
        h.update(f"{f.name}:{size}".encode())
        with f.open("rb") as fh:
            h.update(fh.read() if size <= 64 << 20 else fh.read(8 + int.from_bytes(fh.read(8), "little")))
    return h.hexdigest()


def adapter_digest(directory: Path) -> str:
    """sha256 over a peft adapter's config and weights."""
    h = hashlib.sha256()
    for name in ("adapter_config.json", "adapter_model.safetensors", "adapter_model.bin"):
        path = directory / name
        if path.exists():
            h.update(name.encode() + b"\0" + path.read_bytes())
    return h.hexdigest()


def _quantization_config(quantize: str | None, compute_dtype: Any) -> Any:
    if quantize is None:
        return None
    if quantize not in ("4bit", "8bit"):
        raise ModelLoadError(f"unsupported quantization {quantize!r}; use 4bit, 8bit or none")
    if importlib.util.find_spec("bitsandbytes") is None:
        raise ModelLoadError(
            f"--quantize {quantize} needs the bitsandbytes package, which is not installed here: "
            "`pip install bitsandbytes`, or leave out --quantize"
        )
    from transformers import BitsAndBytesConfig

    # The audio tower and projector stay in full precision: the method freezes them and they are small.
    # Full module paths: transformers 5.2x matches from the start of the name, older 5.x by substring.
    skip = ["model.audio_tower", "model.multi_modal_projector", "lm_head"]
    if quantize == "4bit":
        return BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=compute_dtype,
            llm_int8_skip_modules=skip,
        )
    return BitsAndBytesConfig(load_in_8bit=True, llm_int8_skip_modules=skip)


def load_backbone(
    model: str | os.PathLike[str] = DEFAULT_MODEL,
    *,
    revision: str | None = None,
    adapter: str | os.PathLike[str] | None = None,
    device: str = "auto",
    dtype: str = "auto",
    quantize: str | None = None,
    trainable_adapter: bool = False,
) -> Backbone:
    """Load model and processor from a Hub id, a local directory, or ``tiny``.

    Args:
        model: ``Qwen/Qwen2-Audio-7B-Instruct`` (default), a local checkpoint directory, ``tiny``, or
            ``shape:<name>`` (random weights in a real model's shapes: :mod:`vela_search.embedding.shapes`).
        revision: Hub revision (branch, tag or commit) for a Hub id.
        adapter: A peft LoRA adapter directory to apply to the language model.
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
        dtype: ``auto`` (bf16 on CUDA, fp32 on CPU), ``bf16``, ``fp16`` or ``fp32``.
        quantize: ``4bit`` (NF4) or ``8bit`` (bitsandbytes) for the language model, or None.
        trainable_adapter: Load the adapter with trainable LoRA weights (for resuming training).

    Raises:
        ModelLoadError: The model or adapter cannot be found or loaded (the message says what to do).
    """
    from transformers.utils import logging as hf_logging

    from vela_search.embedding.attention import guard_padding, register_attention

    # Our own commands show progress; transformers' per-load bars would only clutter stderr.
    hf_logging.disable_progress_bar()

    model_str = str(model)
    # `shape:<name>`: random weights in a real model's shapes, built on the device (embedding.shapes).
    is_shape = model_str.startswith("shape:")
    source = model_str if is_shape else _model_source(model_str)

    torch_device = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, torch_device)
    quant_config = _quantization_config(quantize, torch_dtype)
    attn_name = register_attention()
    net, processor = _load_model_and_processor(
        model_str,
        source,
        revision=revision,
        device=torch_device,
        dtype=torch_dtype,
        quant_config=quant_config,
    )
    if quant_config is None:
        net = net.to(torch_device)
    net.eval()
    # Only the language model uses the prefix-aware attention; the audio tower keeps its own.
    net.model.language_model.config._attn_implementation = attn_name
    guard_padding(net.model.language_model)
    processor.tokenizer.padding_side = "right"
    ref, digest = _weights_identity(model_str, source, net, revision)

    adapter_path, adapter_sha = None, None
    if adapter is not None:
        adapter_path = Path(adapter).expanduser().resolve()
        net = _apply_adapter(net, adapter_path, trainable=trainable_adapter)
        adapter_sha = adapter_digest(adapter_path)

    return Backbone(
        model=net,
        processor=processor,
        model_ref=ref,
        weights_digest=digest,
        adapter_path=adapter_path,
        adapter_digest=adapter_sha,
        quantization=quantize,
        device=torch_device,
        dtype=torch_dtype,
        is_tiny=model_str == TINY_MODEL_ID,
    )


def _load_model_and_processor(
    model_str: str,
    source: str | Path,
    *,
    revision: str | None,
    device: Any,
    dtype: Any,
    quant_config: Any,
) -> tuple[Any, Any]:
    """The network and processor of a shape model, a local directory or a Hub id (on ``device`` when
    quantized; otherwise moved there by the caller).

    Raises:
        ModelLoadError: the weights or processor cannot be read, with what to do about it.
    """
    from transformers import AutoProcessor, Qwen2AudioForConditionalGeneration

    # Whatever model an index's record names: weights from safetensors only (no pickle), no remote code.
    kwargs: dict[str, Any] = {"dtype": dtype, "use_safetensors": True, "trust_remote_code": False}
    if revision and not isinstance(source, Path):
        kwargs["revision"] = revision
    if quant_config is not None:
        kwargs["quantization_config"] = quant_config
        kwargs["device_map"] = {"": device}
    try:
        if model_str.startswith("shape:"):
            from vela_search.embedding.shapes import build_quantized_shape_model, build_shape_model

            if quant_config is None:
                return build_shape_model(model_str, device, dtype)
            return build_quantized_shape_model(model_str, device, dtype, quant_config)
        revision_kw = {"revision": revision} if "revision" in kwargs else {}
        if not isinstance(source, Path):
            _check_hub_reachable(source, revision)
        processor = AutoProcessor.from_pretrained(source, trust_remote_code=False, **revision_kw)
        return Qwen2AudioForConditionalGeneration.from_pretrained(source, **kwargs), processor
    except (OSError, ValueError) as exc:
        hint = (
            f"download it first (needs internet once: `hf download {source}`"
            + (", ~16 GB" if source == DEFAULT_MODEL else "")
            + ") or pass a local directory; `--model tiny` runs offline"
            if not isinstance(source, Path)
            else "check that the directory holds config.json, weights and processor files"
        )
        reason = " ".join(str(exc).split()).rstrip(".")
        raise ModelLoadError(f"could not load model {model_str!r}: {reason}. {hint}") from exc


def _weights_identity(model_str: str, source: str | Path, net: Any, revision: str | None) -> tuple[str, str]:
    """The model's reference and weights digest, as fingerprints record them."""
    if model_str.startswith("shape:"):
        return model_str, "random"
    if isinstance(source, Path):
        ref = f"tiny@recipe-{TINY_RECIPE_VERSION}" if model_str == TINY_MODEL_ID else str(source)
        return ref, weights_digest(source)
    commit = getattr(net.config, "_commit_hash", None) or revision or "main"
    return f"{source}@{commit}", commit


def _model_source(model_str: str) -> str | Path:
    """Where ``tiny``, a local checkpoint directory or a Hub id loads from (a Path for local files).

    Raises:
        ModelLoadError: neither a directory nor something shaped like a Hub id (org/name).
    """
    local = Path(model_str).expanduser()
    if model_str == TINY_MODEL_ID:
        return ensure_tiny_checkpoint()
    if local.is_dir():
        return local.resolve()
    if local.suffix or model_str.startswith((".", "/", "~")) or model_str.count("/") != 1:
        raise ModelLoadError(
            f"model {model_str!r} is neither a local checkpoint directory nor a Hub id (org/name)"
        )
    return model_str


def load_tokenizer(model: str | os.PathLike[str], *, revision: str | None = None) -> Any | None:
    """The model's tokenizer alone (no weights), from local files only; None when it cannot be read.

    For checks worth making before a slow model load; the caller must not depend on it.
    """
    from transformers import AutoTokenizer

    model_str = str(model)
    kwargs: dict[str, Any] = {"local_files_only": True}
    try:
        # Shape models tokenize with the tiny model's tokenizer (embedding.shapes).
        source = ensure_tiny_checkpoint() if model_str.startswith("shape:") else _model_source(model_str)
        if revision and not isinstance(source, Path):
            kwargs["revision"] = revision
        return AutoTokenizer.from_pretrained(source, **kwargs)
    except Exception:  # not in the local cache, unreadable, ...: the check after loading still applies
        logger.debug("no tokenizer for %s before loading the model", model_str, exc_info=True)
        return None


def _check_hub_reachable(repo_id: str, revision: str | None) -> None:
    """Fail at once, instead of after minutes of retries, when a Hub model is neither cached nor reachable."""
    import socket
    from urllib.parse import urlparse

    from huggingface_hub import constants, try_to_load_from_cache

    cached = try_to_load_from_cache(repo_id, "config.json", revision=revision)
    if isinstance(cached, str) or constants.HF_HUB_OFFLINE:
        return  # cached: load from disk; offline mode: transformers fails fast on its own
    host = urlparse(constants.ENDPOINT).hostname or "huggingface.co"
    try:
        socket.create_connection((host, 443), timeout=5).close()
    except OSError as exc:
        raise OSError(
            f"{repo_id} is not in the local Hugging Face cache and {host} cannot be reached ({exc})"
        ) from None


def _apply_adapter(net: Any, path: Path, *, trainable: bool) -> Any:
    """Inject a peft LoRA adapter into ``net`` in place and return the underlying model."""
    if not (path / "adapter_config.json").is_file():
        raise ModelLoadError(f"{path} is not a peft adapter directory (no adapter_config.json)")
    from peft import PeftModel

    try:
        wrapped = PeftModel.from_pretrained(net, str(path), is_trainable=trainable)
    except Exception as exc:  # peft raises a variety of types for mismatched adapters
        raise ModelLoadError(f"could not load adapter {path}: {exc}") from exc
    # peft swaps the target Linear layers for LoRA layers inside `net` itself; keep using `net` directly so
    # the rest of the code sees one model class with or without an adapter.
    inner = wrapped.base_model.model
    inner._vela_peft_wrapper = wrapped
    return inner


def load_backbone_without_weights(
    model: str | os.PathLike[str] = DEFAULT_MODEL, *, revision: str | None = None
) -> Backbone:
    """The backbone's processor and config with its modules on the meta device (no weights read).

    Enough for everything that only counts tokens (prompt rendering, demo prefix length, budget checks):
    it reads the config and processor files alone, so a 7B checkpoint costs a second instead of 16 GB.
    Running it raises (meta tensors hold no data).

    Raises:
        ModelLoadError: The model's config or processor cannot be found or read.
    """
    import torch
    from transformers import AutoConfig, AutoProcessor, Qwen2AudioForConditionalGeneration

    model_str = str(model)
    is_tiny = model_str == TINY_MODEL_ID
    try:
        if model_str.startswith("shape:"):
            from vela_search.embedding.shapes import get_shape, shape_config

            processor = AutoProcessor.from_pretrained(ensure_tiny_checkpoint())
            config = shape_config(get_shape(model_str), processor.tokenizer)
            ref = model_str
        else:
            source = _model_source(model_str)
            revision_kw = {"revision": revision} if revision and not isinstance(source, Path) else {}
            if not isinstance(source, Path):
                _check_hub_reachable(source, revision)
            # Never run code shipped with a checkpoint (as load_backbone).
            processor = AutoProcessor.from_pretrained(source, trust_remote_code=False, **revision_kw)
            config = AutoConfig.from_pretrained(source, trust_remote_code=False, **revision_kw)
            ref = f"tiny@recipe-{TINY_RECIPE_VERSION}" if is_tiny else str(source)
    except (OSError, ValueError) as exc:
        reason = " ".join(str(exc).split()).rstrip(".")
        raise ModelLoadError(
            f"could not read the config and processor of model {model_str!r}: {reason}. Pass a local "
            "directory, a cached Hub id, or 'tiny'"
        ) from exc
    with torch.device("meta"):
        net = Qwen2AudioForConditionalGeneration._from_config(config)
    processor.tokenizer.padding_side = "right"
    return Backbone(
        model=net.eval(),
        processor=processor,
        model_ref=ref,
        weights_digest="not-loaded",
        adapter_path=None,
        adapter_digest=None,
        quantization=None,
        device=torch.device("cpu"),
        dtype=torch.float32,
        is_tiny=is_tiny,
    )


@contextmanager
def stock_attention(backbone: Backbone) -> Iterator[None]:
    """Run the language model with transformers' own SDPA attention inside the block (for ``generate``).

    The embedding path's attention (:mod:`vela_search.embedding.attention`) serves prefill behind a shared
    prefix, not step-by-step decoding with a growing cache; generation swaps it out and puts it back after.
    """
    config = backbone.language_model.config
    saved = config._attn_implementation
    config._attn_implementation = "sdpa"
    try:
        yield
    finally:
        config._attn_implementation = saved
