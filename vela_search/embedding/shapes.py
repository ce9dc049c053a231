"""Random-weight Qwen2-Audio models in real shapes, built on the device without any download.

``VelaEmbedder.from_pretrained("shape:qwen2-audio-7b")`` builds a ``Qwen2AudioForConditionalGeneration`` with
the architecture of ``Qwen/Qwen2-Audio-7B-Instruct`` (a 32-layer, 4096-wide LLM with a 156,032-token
vocabulary and 8,192 positions; a 32-layer, 1280-wide Whisper-large-v3-style encoder on 128 mel bins)
directly on the target device and dtype, with random weights. Its vectors mean nothing, but every matrix has
its real size, so ``vela-search bench speed`` measures a GPU's throughput for the real model before anyone
fetches 16 GB of weights.

Prompts are tokenized with the tiny checkpoint's tokenizer and processor (built offline, see
:mod:`vela_search.embedding.tiny`): its token ids are all below the real vocabulary size, so the real
embedding table accepts them, and the Whisper feature extractor has Qwen2-Audio's real settings. Text
lengths in tokens therefore differ somewhat from the real tokenizer's; audio lengths (25 tokens per second)
are exact.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from typing import Any

from vela_search.errors import ModelLoadError

__all__ = [
    "SHAPES",
    "SHAPE_NOTICE",
    "SHAPE_PREFIX",
    "ModelShape",
    "build_quantized_shape_model",
    "build_shape_model",
    "get_shape",
    "is_shape_model",
]

SHAPE_PREFIX = "shape:"
SHAPE_NOTICE = "random weights in real shapes: timings are meaningful, vectors and retrieval scores are not"
# Fixed, so two builds of one shape have the same weights (and the same vectors) on the same device.
_SEED = 0


@dataclass(frozen=True)
class ModelShape:
    """Sizes of a Qwen2-Audio model: the LLM (Qwen2) and the Whisper-style audio encoder."""

    description: str
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    vocab_size: int
    max_position_embeddings: int
    encoder_d_model: int
    encoder_layers: int
    encoder_attention_heads: int
    encoder_ffn_dim: int
    num_mel_bins: int = 128
    rope_theta: float = 10000.0
    rms_norm_eps: float = 1e-5


SHAPES: dict[str, ModelShape] = {
    # config.json of Qwen/Qwen2-Audio-7B-Instruct (text_config with Qwen2's defaults filled in).
    "qwen2-audio-7b": ModelShape(
        description="Qwen2-Audio-7B-Instruct: LLM 4096 x 32 layers, encoder 1280 x 32 layers (8.4B params)",
        hidden_size=4096,
        intermediate_size=11008,
        num_hidden_layers=32,
        num_attention_heads=32,
        num_key_value_heads=32,
        vocab_size=156032,
        max_position_embeddings=8192,
        encoder_d_model=1280,
        encoder_layers=32,
        encoder_attention_heads=20,
        encoder_ffn_dim=5120,
    ),
    # The same proportions scaled down (head size 32 instead of 128), small enough for CPU tests. The MLP
    # width is 384, not 344: bitsandbytes' CPU 4-bit kernel needs widths divisible by its 64-wide blocks.
    "mini": ModelShape(
        description="a scaled-down Qwen2-Audio for tests: LLM 128 x 2 layers, encoder 64 x 2 layers",
        hidden_size=128,
        intermediate_size=384,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        vocab_size=4096,
        max_position_embeddings=8192,
        encoder_d_model=64,
        encoder_layers=2,
        encoder_attention_heads=2,
        encoder_ffn_dim=256,
    ),
}


def is_shape_model(model: object) -> bool:
    """Whether a ``--model`` value names a random-weight shape (``shape:<name>``)."""
    return isinstance(model, str) and model.startswith(SHAPE_PREFIX)


def get_shape(model: str) -> ModelShape:
    """The shape named by ``shape:<name>`` (or a bare ``<name>``).

    Raises:
        ModelLoadError: The name is not in :data:`SHAPES` (the message lists the known ones).
    """
    name = model[len(SHAPE_PREFIX) :] if model.startswith(SHAPE_PREFIX) else model
    if name not in SHAPES:
        known = ", ".join(f"{SHAPE_PREFIX}{n}" for n in SHAPES)
        raise ModelLoadError(f"unknown model shape {model!r}; known shapes: {known}")
    return SHAPES[name]


def shape_config(shape: ModelShape, tokenizer: Any) -> Any:
    """A ``Qwen2AudioConfig`` of ``shape`` whose special token ids are those of ``tokenizer``."""
    from transformers import Qwen2AudioConfig

    if len(tokenizer) > shape.vocab_size:
        raise ModelLoadError(f"the tokenizer's {len(tokenizer)} tokens exceed the shape's {shape.vocab_size}")
    return Qwen2AudioConfig(
        audio_config={
            "model_type": "qwen2_audio_encoder",
            "d_model": shape.encoder_d_model,
            "encoder_layers": shape.encoder_layers,
            "encoder_attention_heads": shape.encoder_attention_heads,
            "encoder_ffn_dim": shape.encoder_ffn_dim,
            "num_mel_bins": shape.num_mel_bins,
            # The encoder requires exactly 3000 mel frames (30 s), i.e. 1500 source positions.
            "max_source_positions": 1500,
        },
        text_config={
            "model_type": "qwen2",
            # Larger than the tokenizer: the real embedding table's size; the extra rows are never looked up.
            "vocab_size": shape.vocab_size,
            "hidden_size": shape.hidden_size,
            "intermediate_size": shape.intermediate_size,
            "num_hidden_layers": shape.num_hidden_layers,
            "num_attention_heads": shape.num_attention_heads,
            "num_key_value_heads": shape.num_key_value_heads,
            "max_position_embeddings": shape.max_position_embeddings,
            "rope_theta": shape.rope_theta,
            "rms_norm_eps": shape.rms_norm_eps,
            "tie_word_embeddings": False,
            "pad_token_id": tokenizer.pad_token_id,
        },
        audio_token_index=tokenizer.convert_tokens_to_ids("<|AUDIO|>"),
    )


def build_shape_model(model: str, device: Any, dtype: Any) -> tuple[Any, Any]:
    """Build a random-weight ``Qwen2AudioForConditionalGeneration`` of a named shape on ``device``.

    The weights are allocated and initialised on the device in ``dtype`` (no CPU copy, no download); the
    processor is the tiny checkpoint's (built offline on first use).

    Args:
        model: ``shape:<name>``, a key of :data:`SHAPES`.
        device: A ``torch.device``.
        dtype: A ``torch.dtype`` (bf16 on CUDA; fp32 for CPU parity checks).

    Returns:
        ``(model, processor)``, the model in eval mode.

    Raises:
        ModelLoadError: Unknown shape, or the device has too little memory for it.
    """
    import torch
    from transformers import AutoProcessor, Qwen2AudioForConditionalGeneration

    from vela_search.embedding.tiny import ensure_tiny_checkpoint

    shape = get_shape(model)
    processor = AutoProcessor.from_pretrained(ensure_tiny_checkpoint())
    config = shape_config(shape, processor.tokenizer)
    devices = [device] if device.type == "cuda" else []
    try:
        # fork_rng: seeding here must not change the caller's random streams.
        with torch.random.fork_rng(devices=devices), torch.device(device):
            torch.manual_seed(_SEED)
            net = Qwen2AudioForConditionalGeneration._from_config(config, dtype=dtype)
    except torch.OutOfMemoryError as exc:
        raise ModelLoadError(
            f"{model} ({shape.description}) does not fit in {device}'s memory in {dtype}: {exc}"
        ) from exc
    return net.eval(), processor


def build_quantized_shape_model(
    model: str, device: Any, dtype: Any, quantization_config: Any
) -> tuple[Any, Any]:
    """A shape model's random weights, quantized by the same loader a real checkpoint goes through.

    The model is built as in :func:`build_shape_model`, saved to a temporary checkpoint and loaded back with
    ``from_pretrained(quantization_config=...)``: bitsandbytes quantizes it exactly as it would quantize the
    real weights, so 4-bit and 8-bit timings are measured without downloading anything. The temporary
    checkpoint needs the full-precision size on disk (~17 GB for ``shape:qwen2-audio-7b`` in bf16).

    Raises:
        ModelLoadError: Unknown shape, too little device memory, or too little temporary disk space.
    """
    import torch
    from transformers import Qwen2AudioForConditionalGeneration

    net, processor = build_shape_model(model, device, dtype)
    need = sum(t.numel() * t.element_size() for t in net.state_dict().values())
    with tempfile.TemporaryDirectory(prefix="vela-shape-") as tmp:
        free = shutil.disk_usage(tmp).free
        if free < need * 1.1:
            raise ModelLoadError(
                f"quantizing {model} needs {need / 2**30:.1f} GiB of temporary disk for its full-precision "
                f"weights, {tempfile.gettempdir()} has {free / 2**30:.1f} GiB free; "
                "set TMPDIR to a larger disk"
            )
        net.save_pretrained(tmp)
        del net
        if device.type == "cuda":
            torch.cuda.empty_cache()
        quantized = Qwen2AudioForConditionalGeneration.from_pretrained(
            tmp, dtype=dtype, quantization_config=quantization_config, device_map={"": device}
        )
    return quantized.eval(), processor
