"""Model inputs shared by every forward over the backbone: log-mel features, expanded audio ids, embeddings.

The embedder (one vector per item) and the judge (a yes/no answer per candidate) feed the same backbone the
same way: each clip's ``<|AUDIO|>`` token is repeated once per audio token, the clip is encoded on its valid
frames only (:func:`~vela_search.embedding.audio_encoder.encode_audio`) and its outputs replace that run of
tokens in the input embeddings. These helpers are that one path.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch

from vela_search.embedding.audio_encoder import conv_lengths, encode_audio
from vela_search.embedding.batching import SAMPLE_RATE

if TYPE_CHECKING:
    import numpy as np

    from vela_search.embedding.backbone import Backbone

__all__ = ["audio_features", "expand_audio_ids", "input_embeddings"]


def audio_features(
    processor: object, waves: Sequence[np.ndarray], device: str = "cpu"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-mel features padded to 30 s and each clip's valid frames, as Qwen2-Audio's processor makes them."""
    enc = processor.feature_extractor(  # type: ignore[attr-defined]
        list(waves),
        sampling_rate=SAMPLE_RATE,
        return_attention_mask=True,
        padding="max_length",
        return_tensors="pt",
        device=device,
    )
    return enc["input_features"], enc["attention_mask"].sum(-1)


def expand_audio_ids(ids: Sequence[int], frames: torch.Tensor, audio_id: int) -> list[int]:
    """Each ``audio_id`` in ``ids`` repeated once per audio token of its clip (as the processor does)."""
    counts = iter(int(n) for n in conv_lengths(frames)[1])
    out: list[int] = []
    for token in ids:
        out.extend([token] * next(counts) if token == audio_id else [token])
    return out


def input_embeddings(
    backbone: Backbone, input_ids: torch.Tensor, features: tuple[torch.Tensor, torch.Tensor] | None
) -> torch.Tensor:
    """Token embeddings with each clip's audio-token run replaced by its encoded audio.

    Raises:
        RuntimeError: the ids hold another number of audio tokens than the clips encode to.
    """
    core = backbone.core
    embeds = core.get_input_embeddings()(input_ids)
    if features is None:
        return embeds
    audio = encode_audio(core.audio_tower, core.multi_modal_projector, features[0], features[1])
    audio_mask = (input_ids == backbone.model.config.audio_token_index).unsqueeze(-1)
    flat = torch.cat(audio).to(embeds.dtype)
    if int(audio_mask.sum()) != flat.shape[0]:
        raise RuntimeError(f"audio tokens ({int(audio_mask.sum())}) != audio features ({flat.shape[0]})")
    return embeds.masked_scatter(audio_mask, flat)
