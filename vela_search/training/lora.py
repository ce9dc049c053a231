"""LoRA on the embedder's language model: attaching it, checking what trains, saving and restoring it.

Only the LLM's q/k/v/o and MLP projections get LoRA layers
(:data:`vela_search.embedding.backbone.LLM_LORA_TARGETS`); the audio encoder, the projector, the embeddings
and every base weight stay frozen, and :func:`assert_only_lora_trainable` checks it. peft swaps the target
layers inside the embedder's own model object, so the embedder's forward path (prompts, demo prefix,
pooling) is the one that trains.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from vela_search.embedding.backbone import LLM_LORA_TARGETS

if TYPE_CHECKING:
    import torch

    from vela_search.embedding.embedder import VelaEmbedder

# Marker peft puts in the names of the LoRA weights it adds.
_LORA_MARKER = "lora_"
# Substring of the module path under which LoRA may live (the language model).
_LLM_MARKER = "language_model"


@dataclass(frozen=True)
class LoraSettings:
    """LoRA hyper-parameters (the method's defaults: r=32, alpha=8, dropout=0.05)."""

    r: int = 32
    alpha: int = 8
    dropout: float = 0.05

    def __post_init__(self) -> None:
        if self.r < 1:
            raise ValueError(f"LoRA rank must be >= 1, got {self.r}")
        if self.alpha <= 0:
            raise ValueError(f"LoRA alpha must be > 0, got {self.alpha}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"LoRA dropout must be in [0, 1), got {self.dropout}")

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "target_modules": LLM_LORA_TARGETS}


def attach_lora(
    embedder: VelaEmbedder, settings: LoraSettings, *, gradient_checkpointing: bool = False
) -> Any:
    """Put freshly initialised, trainable LoRA layers on the embedder's language model.

    For a 4/8-bit model this follows peft's k-bit recipe on the language model only: base weights frozen,
    its remaining half-precision weights (norms, embeddings) upcast to fp32 for stable gradients. The audio
    tower, projector and lm_head are left as loaded: they are frozen and text training never runs them.

    The LoRA A matrices are initialised from torch's global RNG: seed it first for a reproducible run.

    Args:
        embedder: A loaded embedder without an adapter.
        settings: Rank, alpha and dropout.
        gradient_checkpointing: Recompute each decoder layer's activations in the backward pass (less
            memory, ~30% more compute).

    Returns:
        The ``peft.PeftModel`` wrapping ``embedder.backbone.model`` (which now holds the LoRA layers).

    Raises:
        RuntimeError: Anything other than LoRA weights of the language model ended up trainable.
    """
    from peft import LoraConfig, get_peft_model

    model = embedder.backbone.model
    if embedder.backbone.adapter_path is not None:
        raise ValueError("the embedder already carries an adapter; load the base model to train a new one")
    for param in model.parameters():
        param.requires_grad_(False)
    if embedder.backbone.quantization is not None:
        _upcast_language_model(embedder.backbone.language_model)
    model.config.use_cache = False
    config = LoraConfig(
        r=settings.r,
        lora_alpha=settings.alpha,
        lora_dropout=settings.dropout,
        target_modules=LLM_LORA_TARGETS,
        bias="none",
    )
    with warnings.catch_warnings():
        # peft probes transformers' deprecated `is_gradient_checkpointing`: noise for the user.
        warnings.simplefilter("ignore", FutureWarning)
        peft_model = get_peft_model(model, config)
    if gradient_checkpointing:
        # After wrapping, so that only one set of input hooks exists and `freeze_lora` removes it.
        set_gradient_checkpointing(model, True)
    assert_only_lora_trainable(peft_model)
    return peft_model


def set_gradient_checkpointing(model: Any, on: bool) -> None:
    """Turn activation checkpointing of the decoder layers on or off (transformers 5.17 and 5.2x names).

    Non-reentrant checkpointing passes the keyword arguments (the demo prefix) through to each layer and
    needs no input that requires grad.
    """
    kwargs = {"use_reentrant": False}
    if on:
        if hasattr(model, "activation_checkpointing_enable"):
            model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    elif hasattr(model, "activation_checkpointing_disable"):
        model.activation_checkpointing_disable()
    else:
        model.gradient_checkpointing_disable()
    # transformers also hooks the input embeddings to require grad. Non-reentrant checkpointing does not
    # need that, and it would make every forward build a graph, evaluation included.
    hooked = getattr(model, "_require_grads_hooks", None) or getattr(model, "_require_grads_hook", None)
    if hooked:
        model.disable_input_require_grads()


def _upcast_language_model(language_model: torch.nn.Module) -> None:
    """fp16/bf16 parameters of the language model that are not quantized -> fp32 (peft's k-bit recipe)."""
    import torch

    for param in language_model.parameters():
        if param.dtype in (torch.float16, torch.bfloat16) and type(param).__name__ != "Params4bit":
            param.data = param.data.to(torch.float32)


def trainable_parameters(model: torch.nn.Module) -> list[tuple[str, torch.nn.Parameter]]:
    """``(name, parameter)`` for every parameter that requires grad."""
    return [(name, p) for name, p in model.named_parameters() if p.requires_grad]


def assert_only_lora_trainable(model: torch.nn.Module) -> int:
    """Check that exactly the language model's LoRA weights train.

    Returns:
        The number of trainable parameters.

    Raises:
        RuntimeError: No parameter trains, or one outside the language model's LoRA layers does (the audio
            encoder and projector must stay frozen).
    """
    trainable = trainable_parameters(model)
    if not trainable:
        raise RuntimeError("no trainable parameters: LoRA found no target module in the language model")
    wrong = [name for name, _ in trainable if _LORA_MARKER not in name or _LLM_MARKER not in name]
    if wrong:
        shown = ", ".join(wrong[:5]) + (f" and {len(wrong) - 5} more" if len(wrong) > 5 else "")
        raise RuntimeError(f"parameters outside the language model's LoRA layers would train: {shown}")
    return sum(p.numel() for _, p in trainable)


def lora_state(peft_model: Any) -> dict[str, torch.Tensor]:
    """The adapter weights, as peft saves them (CPU copies)."""
    from peft import get_peft_model_state_dict

    return {k: v.detach().cpu().clone() for k, v in get_peft_model_state_dict(peft_model).items()}


def load_lora_state(peft_model: Any, state: dict[str, torch.Tensor]) -> None:
    """Load adapter weights saved by :func:`lora_state` or ``save_pretrained``.

    Raises:
        ValueError: The saved weights do not match the model's LoRA layers.
    """
    from peft import set_peft_model_state_dict

    expected = set(lora_state(peft_model))
    if set(state) != expected:
        missing = sorted(expected - set(state))[:3]
        extra = sorted(set(state) - expected)[:3]
        raise ValueError(
            f"adapter weights do not match the LoRA layers (missing {missing}, unexpected {extra})"
        )
    set_peft_model_state_dict(peft_model, state)


@contextlib.contextmanager
def lora_frozen(params: list[torch.nn.Parameter]) -> Iterator[None]:
    """LoRA weights stop requiring grad inside the block, so forwards build no graph.

    This is how the trainer runs inference (evaluation, the demo prefix) without ``torch.no_grad()``,
    which a 4-bit bitsandbytes model must never see before it trains.
    """
    for param in params:
        param.requires_grad_(False)
    try:
        yield
    finally:
        for param in params:
            param.requires_grad_(True)


def freeze_lora(peft_model: Any) -> None:
    """After training: LoRA weights stop requiring grad and checkpointing is off (plain inference)."""
    for _, param in trainable_parameters(peft_model):
        param.requires_grad_(False)
    set_gradient_checkpointing(peft_model.base_model.model, False)
