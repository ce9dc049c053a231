"""Random-weight models in real shapes (``shape:<name>``), loaded through the embedder's normal path."""

from __future__ import annotations

import tempfile

import numpy as np
import pytest

from vela_search.embedding import shapes
from vela_search.embedding.embedder import EmbedItem, VelaEmbedder
from vela_search.embedding.shapes import SHAPES, get_shape, is_shape_model, shape_config
from vela_search.errors import ModelLoadError


def test_small_shape_loads_through_from_pretrained_and_embeds(tiny_model_dir):
    emb = VelaEmbedder.from_pretrained("shape:mini", demos="none", device="cpu")
    mini = SHAPES["mini"]
    assert emb.dim == mini.hidden_size
    fingerprint = emb.fingerprint
    assert (fingerprint.model, fingerprint.weights) == ("shape:mini", "random")
    config = emb.backbone.model.config
    assert config.text_config.vocab_size == mini.vocab_size > len(emb.backbone.processor.tokenizer)
    assert config.audio_config.d_model == mini.encoder_d_model

    wave = np.sin(np.linspace(0, 2000, 24_000)).astype(np.float32) * 0.3
    items = [EmbedItem("audio", wave=wave), EmbedItem("caption", text="a dog barks twice")]
    fast = emb.embed_items(items)
    np.testing.assert_allclose(fast, emb.embed_naive(items), atol=1e-4)
    np.testing.assert_allclose(np.linalg.norm(fast, axis=1), 1.0, atol=1e-5)

    again = VelaEmbedder.from_pretrained("shape:mini", demos="none", device="cpu")
    np.testing.assert_array_equal(again.embed_items(items), fast)  # seeded: same weights every build


def test_7b_shape_has_the_real_sizes(tiny_model_dir):
    import torch
    from transformers import AutoProcessor, Qwen2AudioForConditionalGeneration

    processor = AutoProcessor.from_pretrained(tiny_model_dir)
    config = shape_config(get_shape("shape:qwen2-audio-7b"), processor.tokenizer)
    text, audio = config.text_config, config.audio_config
    assert (text.hidden_size, text.num_hidden_layers, text.num_attention_heads, text.num_key_value_heads) == (
        4096,
        32,
        32,
        32,
    )
    assert (text.intermediate_size, text.vocab_size, text.max_position_embeddings) == (11008, 156032, 8192)
    assert (audio.d_model, audio.encoder_layers, audio.encoder_attention_heads, audio.encoder_ffn_dim) == (
        1280,
        32,
        20,
        5120,
    )
    assert audio.num_mel_bins == 128 and audio.max_source_positions == 1500
    assert config.audio_token_index == processor.tokenizer.convert_tokens_to_ids("<|AUDIO|>")
    with torch.device("meta"):  # sizes only: no memory, no initialisation cost
        model = Qwen2AudioForConditionalGeneration(config)
    params = sum(p.numel() for p in model.parameters())
    assert 8.3e9 < params < 8.5e9  # Qwen2-Audio-7B's 8.4B


def test_unknown_shape_is_refused(tiny_model_dir):
    assert is_shape_model("shape:mini") and not is_shape_model("tiny")
    with pytest.raises(ModelLoadError, match="shape:qwen2-audio-7b"):
        VelaEmbedder.from_pretrained("shape:qwen3-giant", demos="none", device="cpu")


def test_quantized_shape_goes_through_the_checkpoint_loader(tiny_model_dir, tmp_path, monkeypatch):
    """4-bit NF4 on a shape model: the LLM's linears become bitsandbytes layers, the audio tower stays."""
    import bitsandbytes as bnb
    import torch

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    full = VelaEmbedder.from_pretrained("shape:mini", demos="none", device="cpu")
    nf4 = VelaEmbedder.from_pretrained("shape:mini", demos="none", device="cpu", quantize="4bit")
    assert nf4.fingerprint.quantization == "4bit" and nf4.fingerprint != full.fingerprint
    core = nf4.backbone.core
    assert isinstance(core.language_model.layers[0].mlp.down_proj, bnb.nn.Linear4bit)
    assert type(core.audio_tower.layers[0].fc1) is torch.nn.Linear
    assert list(tmp_path.iterdir()) == []  # the temporary full-precision checkpoint is gone

    texts = ["a dog barks twice", "rain on a tin roof"]
    cosines = (full.embed_text(texts) * nf4.embed_text(texts)).sum(axis=1)
    assert np.all(cosines > 0.9) and np.all(cosines < 1 - 1e-4)  # the same weights, 4-bit rounded


def test_quantized_shape_needs_temporary_disk(tiny_model_dir, monkeypatch):
    from collections import namedtuple

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shapes.shutil, "disk_usage", lambda path: usage(1 << 30, 1 << 30, 1024))
    with pytest.raises(ModelLoadError, match="temporary disk.*TMPDIR"):
        VelaEmbedder.from_pretrained("shape:mini", demos="none", device="cpu", quantize="4bit")


def test_quantizing_without_bitsandbytes_says_what_to_install(tiny_model_dir, monkeypatch):
    import importlib.util

    from vela_search.embedding import backbone

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        backbone.importlib.util,
        "find_spec",
        lambda name, *a: None if name == "bitsandbytes" else real_find_spec(name, *a),
    )
    with pytest.raises(ModelLoadError, match="needs the bitsandbytes package.*pip install bitsandbytes"):
        VelaEmbedder.from_pretrained("shape:mini", demos="none", device="cpu", quantize="4bit")
